"""Settings, read from the environment in one place (``CSM_*``)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CSM_{name}", default)


PUBLIC_URL_FILE = "public-url"  # in the data directory: the base URL `csm serve` last put into certificates
LDAP_USER_FILTER = "(&(objectClass=inetOrgPerson)(uid={username}))"  # AD: (sAMAccountName={username})
LDAP_GROUP_FILTER = "(member={dn})"  # AD with nested groups: (member:1.2.840.113556.1.4.1941:={dn})


@dataclass(frozen=True, slots=True)
class LdapSettings:
    """The directory (LDAP or Active Directory) users may sign in against; infra/ldap.py uses it.

    ``user_filter`` and ``group_filter`` hold ``{username}`` / ``{dn}`` placeholders that the
    adapter fills with RFC 4515-escaped values. ``group_filter`` "memberOf" (or no ``group_base``)
    reads the user's memberOf attribute instead of searching groups. The service account's
    password is read from ``bind_password_file`` by the adapter, so it never sits in settings.
    """

    url: str  # one or more space-separated ldaps:// (or ldap:// with starttls) URLs, tried in order
    starttls: bool = False
    ca_file: Path | None = None  # None: the system trust store
    bind_dn: str | None = None  # None: anonymous search
    bind_password_file: Path | None = None
    user_base: str = ""
    user_filter: str = LDAP_USER_FILTER
    group_base: str | None = None
    group_filter: str = LDAP_GROUP_FILTER
    disabled_filter: str | None = None  # AD: (userAccountControl:1.2.840.113556.1.4.803:=2)
    role_map: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group DN or CN -> roles
    tenant: str | None = None  # the tenant directory users act in; None: platform-wide
    timeout: float = 5.0

    @classmethod
    def from_env(cls) -> LdapSettings | None:
        url = _env("LDAP_URL", "").strip()
        if not url:
            return None

        def optional(name: str) -> str | None:
            return _env(name, "").strip() or None

        ca_file, password_file = optional("LDAP_CA_FILE"), optional("LDAP_BIND_PASSWORD_FILE")
        return cls(
            url=url,
            starttls=_env("LDAP_STARTTLS", "false").strip().lower() in {"1", "true", "yes", "on"},
            ca_file=Path(ca_file) if ca_file else None,
            bind_dn=optional("LDAP_BIND_DN"),
            bind_password_file=Path(password_file) if password_file else None,
            user_base=_env("LDAP_USER_BASE", ""),
            user_filter=optional("LDAP_USER_FILTER") or LDAP_USER_FILTER,
            group_base=optional("LDAP_GROUP_BASE"),
            group_filter=optional("LDAP_GROUP_FILTER") or LDAP_GROUP_FILTER,
            disabled_filter=optional("LDAP_DISABLED_FILTER"),
            role_map=parse_role_map(_env("LDAP_ROLE_MAP", "")),
            tenant=optional("LDAP_TENANT"),
            timeout=float(_env("LDAP_TIMEOUT", "5")),
        )


def parse_role_map(text: str) -> dict[str, tuple[str, ...]]:
    """``{"group": "role" | ["role", ...]}`` as JSON, or ``group=role,role;group=role``.

    A group is a DN or a bare CN. DNs contain "=", so the roles follow the *last* "=".
    """
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("CSM_LDAP_ROLE_MAP: a JSON object of group -> role(s) expected")
        pairs = [(str(group), [roles] if isinstance(roles, str) else list(roles)) for group, roles in raw.items()]
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in text.split(";"))):
            group, sep, roles = item.rpartition("=")
            if not sep or not group.strip():
                raise ValueError(f"CSM_LDAP_ROLE_MAP: {item!r} is not group=role[,role]")
            pairs.append((group, roles.split(",")))
    mapping: dict[str, tuple[str, ...]] = {}
    for group, roles in pairs:
        cleaned = tuple(role.strip() for role in roles if str(role).strip())
        if not cleaned:
            raise ValueError(f"CSM_LDAP_ROLE_MAP: group {group!r} maps to no role")
        mapping[group.strip()] = cleaned
    return mapping


def _flag(name: str, default: str = "false") -> bool:
    return _env(name, default).strip().lower() in {"1", "true", "yes", "on"}


def _optional_path(name: str) -> Path | None:
    value = _env(name, "").strip()
    return Path(value) if value else None


KEK_PROVIDERS = ("local", "hybrid", "pkcs11")


@dataclass(frozen=True, slots=True)
class Pkcs11Settings:
    """The PKCS#11 token that holds the tenants' key-encryption keys (infra/keystore/pkcs11.py).

    Read when ``CSM_PKCS11_MODULE`` or ``CSM_PKCS11_TOKEN_LABEL`` is set; needed by ``CSM_KEK_PROVIDER=pkcs11``
    and by any data directory holding rows a token wrapped. The user PIN comes from ``pin_file`` (mode 0600,
    first line) or, failing that, ``CSM_PKCS11_PIN``; it never appears in a repr or a message.
    """

    module: Path | None  # the vendor's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
    token_label: str
    pin_file: Path | None = None
    pin: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> Pkcs11Settings | None:
        module, label = _env("PKCS11_MODULE", "").strip(), _env("PKCS11_TOKEN_LABEL", "").strip()
        if not module and not label:
            return None
        return cls(module=Path(module) if module else None, token_label=label,
                   pin_file=_optional_path("PKCS11_PIN_FILE"), pin=_env("PKCS11_PIN", "") or None)


STORES = ("sqlite", "cassandra")
# Where http-01 validation may connect by default: the private ranges (RFC 1918, RFC 4193), as a CA inside the
# operator's network validates its own nodes. Never link-local (cloud metadata at 169.254.169.254), whatever is set.
ACME_DEFAULT_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
BUSES = ("local", "kafka")
PROJECTORS = ("inline", "external")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The Kafka bus (``CSM_BUS=kafka``): the outbox relay's topic and the projectors' consumer group."""

    bootstrap_servers: str = "127.0.0.1:9092"  # comma-separated host:port
    topic: str = "csm.events"
    partitions: int = 1  # projectors need the global order: more partitions only spread SIEM consumers
    replication_factor: int = 1
    group_id: str = "csm-projector"
    client_id: str = "csm"
    ce_source: str = "urn:csm"  # base of the CloudEvents source attribute
    idempotent_producer: bool = True
    ssl_ca_file: Path | None = None  # set: TLS to the brokers
    ssl_cert_file: Path | None = None  # with ssl_key_file: a client certificate (mutual TLS)
    ssl_key_file: Path | None = None

    @classmethod
    def from_env(cls) -> KafkaSettings:
        return cls(
            bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            topic=_env("KAFKA_TOPIC", "csm.events"),
            partitions=int(_env("KAFKA_PARTITIONS", "1")),
            replication_factor=int(_env("KAFKA_REPLICATION_FACTOR", "1")),
            group_id=_env("KAFKA_GROUP_ID", "csm-projector"),
            client_id=_env("KAFKA_CLIENT_ID", "csm"),
            ce_source=_env("KAFKA_CE_SOURCE", "urn:csm"),
            idempotent_producer=_flag("KAFKA_IDEMPOTENT_PRODUCER", "true"),
            ssl_ca_file=_optional_path("KAFKA_SSL_CA_FILE"),
            ssl_cert_file=_optional_path("KAFKA_SSL_CERT_FILE"),
            ssl_key_file=_optional_path("KAFKA_SSL_KEY_FILE"),
        )


@dataclass(frozen=True, slots=True)
class CassandraSettings:
    """The Cassandra event store (``CSM_STORE=cassandra``): contact points, keyspace, TLS, auth, consistency.

    ``replication`` is the keyspace's replication map as JSON, e.g.
    ``{"class": "NetworkTopologyStrategy", "dc1": 3}``; the password is read from a file.
    """

    contact_points: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "csm"
    local_dc: str | None = None
    replication: str = '{"class": "SimpleStrategy", "replication_factor": 1}'
    username: str | None = None
    password_file: Path | None = None
    ssl_ca_file: Path | None = None  # set: TLS to the cluster, the node certificates checked against it
    ssl_cert_file: Path | None = None  # with ssl_key_file: a client certificate (require_client_auth)
    ssl_key_file: Path | None = None
    ssl_check_hostname: bool = True
    consistency: str = "LOCAL_QUORUM"
    serial_consistency: str = "LOCAL_SERIAL"  # SERIAL across data centres
    request_timeout: float = 12.0
    auto_migrate: bool = True  # off: only `csm db migrate` changes the schema (run it once per upgrade)

    @classmethod
    def from_env(cls) -> CassandraSettings:
        return cls(
            contact_points=tuple(h.strip() for h in _env("CASSANDRA_CONTACT_POINTS", "127.0.0.1").split(",")
                                 if h.strip()),
            port=int(_env("CASSANDRA_PORT", "9042")),
            keyspace=_env("CASSANDRA_KEYSPACE", "csm"),
            local_dc=_env("CASSANDRA_LOCAL_DC", "").strip() or None,
            replication=_env("CASSANDRA_REPLICATION", '{"class": "SimpleStrategy", "replication_factor": 1}'),
            username=_env("CASSANDRA_USERNAME", "").strip() or None,
            password_file=_optional_path("CASSANDRA_PASSWORD_FILE"),
            ssl_ca_file=_optional_path("CASSANDRA_SSL_CA_FILE"),
            ssl_cert_file=_optional_path("CASSANDRA_SSL_CERT_FILE"),
            ssl_key_file=_optional_path("CASSANDRA_SSL_KEY_FILE"),
            ssl_check_hostname=_flag("CASSANDRA_SSL_CHECK_HOSTNAME", "true"),
            consistency=_env("CASSANDRA_CONSISTENCY", "LOCAL_QUORUM").strip().upper(),
            serial_consistency=_env("CASSANDRA_SERIAL_CONSISTENCY", "LOCAL_SERIAL").strip().upper(),
            request_timeout=float(_env("CASSANDRA_REQUEST_TIMEOUT", "12")),
            auto_migrate=_flag("CASSANDRA_AUTO_MIGRATE", "true"),
        )


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


ACME_AUTHORIZATION_LIFETIME_BOUNDS = (1, 720)  # hours: an hour to 30 days


def parse_acme_authorization_lifetime(text: str) -> int:
    """``CSM_ACME_AUTHORIZATION_LIFETIME_HOURS``: whole hours from 1 to 720 (30 days). Shorter leaves a client no
    time to answer and a job no time to come back; longer keeps a proof of control (and an unanswered challenge)
    valid long after it says anything about the node."""
    low, high = ACME_AUTHORIZATION_LIFETIME_BOUNDS
    try:
        hours = int(text.strip())
    except ValueError:
        raise ValueError(f"CSM_ACME_AUTHORIZATION_LIFETIME_HOURS: {text!r} is not a whole number of hours") from None
    if not low <= hours <= high:
        raise ValueError(f"CSM_ACME_AUTHORIZATION_LIFETIME_HOURS: {hours} is outside {low}..{high} "
                         "(an hour to 30 days)")
    return hours


def parse_workers(text: str) -> int:
    """``CSM_WORKERS``: "auto" is one per CPU (at most 16); otherwise a whole number from 1 to 64."""
    if text.strip().lower() == "auto":
        return max(1, min(os.cpu_count() or 1, 16))
    try:
        workers = int(text)
    except ValueError:
        raise ValueError(f"CSM_WORKERS: {text!r} is not a number of processes or 'auto'") from None
    if not 1 <= workers <= 64:
        raise ValueError(f"CSM_WORKERS: {workers} is outside 1..64")
    return workers


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
            data_dir=Path(data_dir or _env("DATA_DIR", ".csm-data")).resolve(),
            host=_env("HOST", "127.0.0.1"),
            port=int(_env("PORT", "8000")),
            log_level=_env("LOG_LEVEL", "INFO"),
            checkpoint_interval=float(_env("CHECKPOINT_INTERVAL", "5")),
            max_body_bytes=int(_env("MAX_BODY_BYTES", "1048576")),
            ready_max_lag=int(_env("READY_MAX_LAG", "10000")),
            read_your_writes_timeout=float(_env("READ_YOUR_WRITES_TIMEOUT", "5")),
            poll_interval=float(_env("POLL_INTERVAL", "0.5")),
            kek_provider=_env("KEK_PROVIDER", "local").strip().lower(),
            pkcs11=Pkcs11Settings.from_env(),
            public_url=_env("PUBLIC_URL", "") or None,
            redis_url=_env("REDIS_URL", "") or None,
            rate_limit_per_principal=_env("RATE_LIMIT_PER_PRINCIPAL", "600/minute"),
            rate_limit_per_address=_env("RATE_LIMIT_PER_ADDRESS", "1200/minute"),
            rate_limit_login_per_address=_env("RATE_LIMIT_LOGIN_PER_ADDRESS", "20/minute"),
            rate_limit_login_per_username=_env("RATE_LIMIT_LOGIN_PER_USERNAME", "5/minute"),
            cors_origins=tuple(o.strip() for o in _env("CORS_ORIGINS", "").split(",") if o.strip()),
            crl_validity_hours=int(_env("CRL_VALIDITY_HOURS", "168")),
            renewal_interval=float(_env("RENEWAL_INTERVAL", "300")),
            revocation_interval=float(_env("REVOCATION_INTERVAL", "60")),
            workers=parse_workers(_env("WORKERS", "auto")),
            rsa_key_pool=int(_env("RSA_KEY_POOL", "4")),
            expiry_warning_days=tuple(sorted({int(d) for d in _env("EXPIRY_WARNING_DAYS", "30,7,1").split(",")
                                              if d.strip()}, reverse=True)),
            renewal_retry_hours=int(_env("RENEWAL_RETRY_HOURS", "24")),
            ldap=LdapSettings.from_env(),
            jwt_algorithm=_env("JWT_ALGORITHM", "RS256"),
            access_token_ttl=int(_env("ACCESS_TOKEN_TTL", "900")),
            refresh_token_ttl=int(_env("REFRESH_TOKEN_TTL", "43200")),
            login_max_failures=int(_env("LOGIN_MAX_FAILURES", "5")),
            login_lockout_seconds=float(_env("LOGIN_LOCKOUT_SECONDS", "900")),
            login_backoff_base=float(_env("LOGIN_BACKOFF_BASE", "1")),
            mfa_required_roles=tuple(r.strip() for r in _env(
                "MFA_REQUIRED_ROLES", "platform-admin,tenant-admin,ca-operator").split(",") if r.strip()),
            argon2=_env("ARGON2", ""),
            store=_env("STORE", "sqlite").strip().lower(),
            bus=_env("BUS", "local").strip().lower(),
            kafka=KafkaSettings.from_env() if _env("BUS", "local").strip().lower() == "kafka" else None,
            cassandra=(CassandraSettings.from_env() if _env("STORE", "sqlite").strip().lower() == "cassandra"
                       else None),
            projector=_env("PROJECTOR", "inline").strip().lower(),
            jobs=_env("JOBS", "in-process"),
            job_worker_threads=int(_env("JOB_WORKER_THREADS", "2")),
            webhook_max_attempts=int(_env("WEBHOOK_MAX_ATTEMPTS", "8")),
            webhook_min_backoff=float(_env("WEBHOOK_MIN_BACKOFF", "5")),
            webhook_max_backoff=float(_env("WEBHOOK_MAX_BACKOFF", "3600")),
            webhook_timeout=float(_env("WEBHOOK_TIMEOUT", "10")),
            webhook_allow_loopback_http=_env("WEBHOOK_ALLOW_LOOPBACK_HTTP", "false").strip().lower()
            in {"1", "true", "yes", "on"},
            metrics_token_file=_optional_path("METRICS_TOKEN_FILE"),
            acme_http01_port=int(_env("ACME_HTTP01_PORT", "80")),
            acme_tls_alpn_port=int(_env("ACME_TLS_ALPN_PORT", "443")),
            acme_validation_networks=tuple(n.strip() for n in _env(
                "ACME_VALIDATION_NETWORKS", ",".join(ACME_DEFAULT_NETWORKS)).split(",") if n.strip()),
            acme_hosts_file=_optional_path("ACME_HOSTS_FILE"),
            acme_validation_timeout=float(_env("ACME_VALIDATION_TIMEOUT", "5")),
            acme_base_url=_env("ACME_BASE_URL", "").strip().rstrip("/") or None,
            acme_dns_resolvers=tuple(r.strip() for r in _env("ACME_DNS_RESOLVERS", "").split(",") if r.strip()),
            acme_authorization_lifetime_hours=parse_acme_authorization_lifetime(
                _env("ACME_AUTHORIZATION_LIFETIME_HOURS", "168")),
            tls_cert_file=_optional_path("TLS_CERT_FILE"),
            tls_key_file=_optional_path("TLS_KEY_FILE"),
        )
