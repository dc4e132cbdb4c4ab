"""The server's settings (``Settings``), read from the environment (``CSM_*``), and the checks across them.

The settings of the services it connects to (LDAP, PKCS#11, Kafka, Cassandra) are in infra/service_settings.py;
reading one variable, with the error that names it, in infra/env.py."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from infra.env import decimal, env, flag, optional_path, whole, wholes
from infra.service_settings import CassandraSettings, KafkaSettings, LdapSettings, Pkcs11Settings

PUBLIC_URL_FILE = "public-url"  # in the data directory: the base URL `csm serve` last put into certificates
KEK_PROVIDERS = ("local", "hybrid", "pkcs11")
STORES = ("sqlite", "cassandra")
# Where http-01 validation may connect by default: the private ranges (RFC 1918, RFC 4193), as a CA inside the
# operator's network validates its own nodes. Never link-local (cloud metadata at 169.254.169.254), whatever is set.
ACME_DEFAULT_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
BUSES = ("local", "kafka")
PROJECTORS = ("inline", "external")


def validate_distributed(settings: Settings) -> None:
    """Refuse a store / bus / jobs combination that cannot work, naming the setting (``ValueError``)."""
    if settings.store not in STORES:
        raise ValueError(f"CSM_STORE must be one of {', '.join(STORES)}, not {settings.store!r}")
    if settings.bus not in BUSES:
        raise ValueError(f"CSM_BUS must be one of {', '.join(BUSES)}, not {settings.bus!r}")
    if settings.projector not in PROJECTORS:
        raise ValueError(f"CSM_PROJECTOR must be one of {', '.join(PROJECTORS)}, not {settings.projector!r}")
    if settings.bus == "kafka":
        kafka = settings.kafka
        if kafka is None or not kafka.bootstrap_servers.strip():
            raise ValueError("CSM_BUS=kafka needs CSM_KAFKA_BOOTSTRAP_SERVERS")
        if kafka.partitions < 1:
            raise ValueError(f"CSM_KAFKA_PARTITIONS must be at least 1, not {kafka.partitions}")
        if kafka.replication_factor < 1:
            raise ValueError(f"CSM_KAFKA_REPLICATION_FACTOR must be at least 1, not {kafka.replication_factor}")
        if bool(kafka.ssl_cert_file) != bool(kafka.ssl_key_file):
            raise ValueError("CSM_KAFKA_SSL_CERT_FILE and CSM_KAFKA_SSL_KEY_FILE go together")
    if settings.store == "cassandra":
        cassandra = settings.cassandra
        if cassandra is None or not cassandra.contact_points:
            raise ValueError("CSM_STORE=cassandra needs CSM_CASSANDRA_CONTACT_POINTS")
        if cassandra.consistency not in ("LOCAL_QUORUM", "QUORUM", "EACH_QUORUM", "ALL"):
            raise ValueError("CSM_CASSANDRA_CONSISTENCY must be LOCAL_QUORUM, QUORUM, EACH_QUORUM or ALL "
                             f"(a weaker level could lose an acknowledged event), not {cassandra.consistency!r}")
        if cassandra.serial_consistency not in ("SERIAL", "LOCAL_SERIAL"):
            raise ValueError("CSM_CASSANDRA_SERIAL_CONSISTENCY must be SERIAL or LOCAL_SERIAL, "
                             f"not {cassandra.serial_consistency!r}")
        if not cassandra.keyspace.replace("_", "").isalnum() or not cassandra.keyspace[:1].isalpha():
            raise ValueError(f"CSM_CASSANDRA_KEYSPACE must be a letter then letters, digits or _, "
                             f"not {cassandra.keyspace!r}")
        try:
            replication = json.loads(cassandra.replication)
        except ValueError:
            replication = None
        if not isinstance(replication, dict) or "class" not in replication:
            raise ValueError('CSM_CASSANDRA_REPLICATION must be a JSON object with "class", e.g. '
                             '{"class": "NetworkTopologyStrategy", "dc1": 3}')
        if cassandra.username and not cassandra.password_file:
            raise ValueError("CSM_CASSANDRA_USERNAME needs CSM_CASSANDRA_PASSWORD_FILE")
        if bool(cassandra.ssl_cert_file) != bool(cassandra.ssl_key_file):
            raise ValueError("CSM_CASSANDRA_SSL_CERT_FILE and CSM_CASSANDRA_SSL_KEY_FILE go together")


MIN_METRICS_TOKEN = 32


def read_metrics_token(settings: Settings) -> str | None:
    """The /metrics scrape token, from ``CSM_METRICS_TOKEN_FILE`` (None when unset); ``ValueError`` names the setting.

    A file, as Prometheus keeps its side (``authorization.credentials_file``), so the token is in no environment.
    """
    path = settings.metrics_token_file
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"CSM_METRICS_TOKEN_FILE: cannot read {path} ({exc})") from None
    if len(token) < MIN_METRICS_TOKEN or not all("\x21" <= c <= "\x7e" for c in token):
        raise ValueError(f"CSM_METRICS_TOKEN_FILE: {path} must hold one token of at least {MIN_METRICS_TOKEN} "
                         "printable characters, no spaces (e.g. `openssl rand -hex 32`)")
    return token


# CSM_ACME_AUTHORIZATION_LIFETIME_HOURS: an hour to 30 days. Shorter leaves a client no time to answer and a job no
# time to come back; longer keeps a proof of control (and an unanswered challenge) valid long after it says anything
# about the node.
ACME_AUTHORIZATION_LIFETIME_BOUNDS = (1, 720)


def read_acme_authorization_lifetime() -> int:
    """``CSM_ACME_AUTHORIZATION_LIFETIME_HOURS``: whole hours within ACME_AUTHORIZATION_LIFETIME_BOUNDS; seven days
    by default."""
    low, high = ACME_AUTHORIZATION_LIFETIME_BOUNDS
    return whole("ACME_AUTHORIZATION_LIFETIME_HOURS", 168, low=low, high=high)


def read_workers() -> int:
    """``CSM_WORKERS``: "auto" (the default) is one per CPU (at most 16); otherwise a whole number from 1 to 64."""
    auto = max(1, min(os.cpu_count() or 1, 16))
    if env("WORKERS", "").strip().lower() == "auto":
        return auto
    return whole("WORKERS", auto, low=1, high=64)


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    checkpoint_interval: float = 5.0
    max_body_bytes: int = 1_048_576
    ready_max_lag: int = 10_000
    read_your_writes_timeout: float = 5.0
    poll_interval: float = 0.5
    kek_provider: str = "local"  # local | hybrid | pkcs11: who wraps the data keys of new private keys
    pkcs11: Pkcs11Settings | None = None  # CSM_PKCS11_*: the token of CSM_KEK_PROVIDER=pkcs11
    public_url: str | None = None  # base of CRL/OCSP/CA-issuer URLs in certificates; default http://host:port
    public_url_recorded: bool = False  # public_url is what `csm serve` recorded (PUBLIC_URL_FILE), not the env's
    # Rate limits, "<count>/<second|minute|hour>" ("" turns one off); shared through Redis when redis_url is set.
    redis_url: str | None = None
    rate_limit_per_principal: str = "600/minute"
    rate_limit_per_address: str = "1200/minute"
    rate_limit_login_per_address: str = "20/minute"  # POST /v1/auth/token: slows credential stuffing
    rate_limit_login_per_username: str = "5/minute"
    cors_origins: tuple[str, ...] = ()  # CORS stays off unless origins are listed (exact "https://host[:port]")
    crl_validity_hours: int = 168  # a CRL's nextUpdate - thisUpdate; republished when a third is left
    # Renewal scheduler (infra/renewal_scheduler.py): seconds between passes, expiry warning thresholds (days),
    # and how long it leaves a certificate alone after a failed renewal.
    renewal_interval: float = 300.0
    # Revocation scheduler (infra/revocation_scheduler.py): seconds between passes (CRLs due, OCSP responders, and
    # csm_crl_next_update_timestamp_seconds)
    revocation_interval: float = 60.0
    # HTTP worker processes of `csm serve` (api/workers.py); 1: one process does everything (the tests' default);
    # CSM_WORKERS: a number, or "auto" (the default) for one per CPU.
    workers: int = 1
    rsa_key_pool: int = 0  # RSA keys kept ready per size asked for, by `csm serve` (infra/crypto/keypool.py); env default 4
    expiry_warning_days: tuple[int, ...] = (30, 7, 1)
    renewal_retry_hours: int = 24
    ldap: LdapSettings | None = None  # CSM_LDAP_*: directory sign-in, off unless CSM_LDAP_URL is set
    # Identity: token signing, lifetimes, brute-force protection, MFA, password hashing.
    jwt_algorithm: str = "RS256"  # RS256 | ES384: the algorithm of new signing keys (both are verified)
    access_token_ttl: int = 900  # seconds
    refresh_token_ttl: int = 43_200  # seconds, from the login: a refresh family's absolute lifetime
    login_max_failures: int = 5  # consecutive failures that lock an account name
    login_lockout_seconds: float = 900.0
    login_backoff_base: float = 1.0  # wait after the n-th failure: base * 2**(n-1) seconds, at most 60
    mfa_required_roles: tuple[str, ...] = ("platform-admin", "tenant-admin", "ca-operator")
    argon2: str = ""  # "t=2,m=19456,p=1" (the default); raise for more cost per guess
    # Distributed mode (docs/operations.md), each chosen independently: the event store (sqlite | cassandra)
    # and the bus projectors follow (local: the store's own log | kafka: the outbox relay's topic).
    store: str = "sqlite"
    bus: str = "local"
    kafka: KafkaSettings | None = None  # CSM_KAFKA_*: read when CSM_BUS=kafka
    cassandra: CassandraSettings | None = None  # CSM_CASSANDRA_*: read when CSM_STORE=cassandra
    projector: str = "inline"  # inline: this process runs the projections (and relay) | external: `csm projector`
    # Background jobs (infra/jobs.py): "in-process" (dramatiq's in-memory broker, worker threads in this process)
    # or "redis" (dramatiq's Redis broker at redis_url; `csm worker` processes consume it too).
    jobs: str = "in-process"
    job_worker_threads: int = 2  # this process's worker threads; 0: enqueue only (a `csm worker` consumes)
    # Webhooks (docs/notifications.md): attempts per notification, exponential backoff between them, timeout.
    webhook_max_attempts: int = 8
    webhook_min_backoff: float = 5.0  # seconds before the second attempt; doubling (with jitter) after that
    webhook_max_backoff: float = 3600.0  # seconds: the longest wait between two attempts
    webhook_timeout: float = 10.0  # seconds per request (connect + response)
    webhook_allow_loopback_http: bool = False  # loopback receivers (http or https): tests and development only
    # /metrics (api/metrics.py): with a scrape token file, scrapes must present the token and see per-tenant and
    # per-CA series; without one, /metrics stays open and names no tenant or CA.
    metrics_token_file: Path | None = None
    # ACME (api/acme.py, infra/acme): the ports http-01 and tls-alpn-01 validation connect to, the networks it may connect into
    # (never link-local, carrier-grade NAT or another special-purpose block: domain/acme_networks.py; loopback only
    # when listed), an optional hosts file read before the system resolver, the
    # per-validation timeout, and the base URL the directory names (default: the URL the request came in on).
    acme_http01_port: int = 80
    acme_tls_alpn_port: int = 443  # where tls-alpn-01 validation connects
    acme_validation_networks: tuple[str, ...] = ACME_DEFAULT_NETWORKS
    acme_hosts_file: Path | None = None
    acme_validation_timeout: float = 5.0
    acme_base_url: str | None = None
    # dns-01 (infra/acme/dns01.py): the resolvers its TXT queries go to, "host:port" ("[v6]:port"; port 53 if left
    # out). None listed: dns-01 is not offered, and so no wildcard name either.
    acme_dns_resolvers: tuple[str, ...] = ()
    # How long an order and its pending authorizations live (RFC 8555 "expires"), hours: a challenge not validated
    # by then expires (commands/acme.py). Bounds: ACME_AUTHORIZATION_LIFETIME_BOUNDS.
    acme_authorization_lifetime_hours: int = 168
    # TLS for `csm serve` (uvicorn's own): both files or neither. ACME clients want the directory over HTTPS.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @property
    def acme_nonces_db(self) -> Path:
        return self.data_dir / "acme-nonces.db"

    @property
    def acme_results_db(self) -> Path:
        """ACME validation results, from the job that validated to the process that records them."""
        return self.data_dir / "acme-validations.db"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def with_recorded_public_url(self) -> Settings:
        """Without CSM_PUBLIC_URL, the base URL the last `csm serve` of this data directory put into certificates,
        so that certificates and CAs made by the CLI name the same CRL, OCSP and CA-issuer URLs as the server's."""
        if self.public_url is not None:
            return self
        try:
            recorded = (self.data_dir / PUBLIC_URL_FILE).read_text().strip()
        except OSError:
            return self
        return dataclasses.replace(self, public_url=recorded, public_url_recorded=True) if recorded else self

    def record_public_url(self) -> None:
        """What `csm serve` does once it listens: note its base URL for the CLI (``with_recorded_public_url``)."""
        path = self.data_dir / PUBLIC_URL_FILE
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(self.base_url + "\n")
        temporary.replace(path)

    @property
    def events_db(self) -> Path:
        return self.data_dir / "events.db"

    @property
    def views_db(self) -> Path:
        return self.data_dir / "views.db"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def signing_keys_dir(self) -> Path:
        return self.keys_dir / "jwt"

    @property
    def webhooks_db(self) -> Path:
        return self.data_dir / "webhooks.db"

    @property
    def outbox_db(self) -> Path:
        return self.data_dir / "outbox.db"

    @property
    def witness_file(self) -> Path:
        return self.data_dir / "audit-witness.json"

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None) -> Settings:
        return cls(
            data_dir=Path(data_dir or env("DATA_DIR", ".csm-data")).resolve(),
            host=env("HOST", "127.0.0.1"),
            port=whole("PORT", 8000, high=65535),
            log_level=env("LOG_LEVEL", "INFO"),
            checkpoint_interval=decimal("CHECKPOINT_INTERVAL", 5.0, above=True),
            max_body_bytes=whole("MAX_BODY_BYTES", 1_048_576, low=1024, high=1 << 30),
            ready_max_lag=whole("READY_MAX_LAG", 10_000),
            read_your_writes_timeout=decimal("READ_YOUR_WRITES_TIMEOUT", 5.0, high=300),
            poll_interval=decimal("POLL_INTERVAL", 0.5, above=True),
            kek_provider=env("KEK_PROVIDER", "local").strip().lower(),
            pkcs11=Pkcs11Settings.from_env(),
            public_url=env("PUBLIC_URL", "") or None,
            redis_url=env("REDIS_URL", "") or None,
            rate_limit_per_principal=env("RATE_LIMIT_PER_PRINCIPAL", "600/minute"),
            rate_limit_per_address=env("RATE_LIMIT_PER_ADDRESS", "1200/minute"),
            rate_limit_login_per_address=env("RATE_LIMIT_LOGIN_PER_ADDRESS", "20/minute"),
            rate_limit_login_per_username=env("RATE_LIMIT_LOGIN_PER_USERNAME", "5/minute"),
            cors_origins=tuple(o.strip() for o in env("CORS_ORIGINS", "").split(",") if o.strip()),
            crl_validity_hours=whole("CRL_VALIDITY_HOURS", 168, low=1, high=24 * 366),
            renewal_interval=decimal("RENEWAL_INTERVAL", 300.0, above=True),
            revocation_interval=decimal("REVOCATION_INTERVAL", 60.0, above=True),
            workers=read_workers(),
            rsa_key_pool=whole("RSA_KEY_POOL", 4, high=1024),
            expiry_warning_days=tuple(sorted(set(wholes("EXPIRY_WARNING_DAYS", "30,7,1", low=1, high=3650)), reverse=True)),
            renewal_retry_hours=whole("RENEWAL_RETRY_HOURS", 24, low=1),
            ldap=LdapSettings.from_env(),
            jwt_algorithm=env("JWT_ALGORITHM", "RS256"),
            access_token_ttl=whole("ACCESS_TOKEN_TTL", 900, low=1, high=86_400),
            refresh_token_ttl=whole("REFRESH_TOKEN_TTL", 43_200, low=1),
            login_max_failures=whole("LOGIN_MAX_FAILURES", 5, low=1),
            login_lockout_seconds=decimal("LOGIN_LOCKOUT_SECONDS", 900.0),
            login_backoff_base=decimal("LOGIN_BACKOFF_BASE", 1.0),
            mfa_required_roles=tuple(r.strip() for r in env(
                "MFA_REQUIRED_ROLES", "platform-admin,tenant-admin,ca-operator").split(",") if r.strip()),
            argon2=env("ARGON2", ""),
            store=env("STORE", "sqlite").strip().lower(),
            bus=env("BUS", "local").strip().lower(),
            kafka=KafkaSettings.from_env() if env("BUS", "local").strip().lower() == "kafka" else None,
            cassandra=(CassandraSettings.from_env() if env("STORE", "sqlite").strip().lower() == "cassandra"
                       else None),
            projector=env("PROJECTOR", "inline").strip().lower(),
            jobs=env("JOBS", "in-process"),
            job_worker_threads=whole("JOB_WORKER_THREADS", 2, high=64),
            webhook_max_attempts=whole("WEBHOOK_MAX_ATTEMPTS", 8, low=1, high=100),
            webhook_min_backoff=decimal("WEBHOOK_MIN_BACKOFF", 5.0),
            webhook_max_backoff=decimal("WEBHOOK_MAX_BACKOFF", 3600.0),
            webhook_timeout=decimal("WEBHOOK_TIMEOUT", 10.0, above=True, high=300),
            webhook_allow_loopback_http=flag("WEBHOOK_ALLOW_LOOPBACK_HTTP"),
            metrics_token_file=optional_path("METRICS_TOKEN_FILE"),
            acme_http01_port=whole("ACME_HTTP01_PORT", 80, low=1, high=65535),
            acme_tls_alpn_port=whole("ACME_TLS_ALPN_PORT", 443, low=1, high=65535),
            acme_validation_networks=tuple(n.strip() for n in env(
                "ACME_VALIDATION_NETWORKS", ",".join(ACME_DEFAULT_NETWORKS)).split(",") if n.strip()),
            acme_hosts_file=optional_path("ACME_HOSTS_FILE"),
            acme_validation_timeout=decimal("ACME_VALIDATION_TIMEOUT", 5.0, above=True, high=300),
            acme_base_url=env("ACME_BASE_URL", "").strip().rstrip("/") or None,
            acme_dns_resolvers=tuple(r.strip() for r in env("ACME_DNS_RESOLVERS", "").split(",") if r.strip()),
            acme_authorization_lifetime_hours=read_acme_authorization_lifetime(),
            tls_cert_file=optional_path("TLS_CERT_FILE"),
            tls_key_file=optional_path("TLS_KEY_FILE"),
        )
