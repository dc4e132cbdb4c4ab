"""Settings of the services the server connects to, each read from its ``CSM_*`` variables: the directory users sign
in against (LDAP or Active Directory), the PKCS#11 token, the Kafka bus and the Cassandra event store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from infra.env import decimal, env, flag, optional_path, whole

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
        url = env("LDAP_URL", "").strip()
        if not url:
            return None

        def optional(name: str) -> str | None:
            return env(name, "").strip() or None

        ca_file, password_file = optional("LDAP_CA_FILE"), optional("LDAP_BIND_PASSWORD_FILE")
        return cls(
            url=url,
            starttls=flag("LDAP_STARTTLS"),
            ca_file=Path(ca_file) if ca_file else None,
            bind_dn=optional("LDAP_BIND_DN"),
            bind_password_file=Path(password_file) if password_file else None,
            user_base=env("LDAP_USER_BASE", ""),
            user_filter=optional("LDAP_USER_FILTER") or LDAP_USER_FILTER,
            group_base=optional("LDAP_GROUP_BASE"),
            group_filter=optional("LDAP_GROUP_FILTER") or LDAP_GROUP_FILTER,
            disabled_filter=optional("LDAP_DISABLED_FILTER"),
            role_map=parse_role_map(env("LDAP_ROLE_MAP", "")),
            tenant=optional("LDAP_TENANT"),
            timeout=decimal("LDAP_TIMEOUT", 5.0, above=True, high=300),
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
        module, label = env("PKCS11_MODULE", "").strip(), env("PKCS11_TOKEN_LABEL", "").strip()
        if not module and not label:
            return None
        return cls(module=Path(module) if module else None, token_label=label,
                   pin_file=optional_path("PKCS11_PIN_FILE"), pin=env("PKCS11_PIN", "") or None)


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
            bootstrap_servers=env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            topic=env("KAFKA_TOPIC", "csm.events"),
            partitions=whole("KAFKA_PARTITIONS", 1, low=1, high=10_000),
            replication_factor=whole("KAFKA_REPLICATION_FACTOR", 1, low=1, high=100),
            group_id=env("KAFKA_GROUP_ID", "csm-projector"),
            client_id=env("KAFKA_CLIENT_ID", "csm"),
            ce_source=env("KAFKA_CE_SOURCE", "urn:csm"),
            idempotent_producer=flag("KAFKA_IDEMPOTENT_PRODUCER", "true"),
            ssl_ca_file=optional_path("KAFKA_SSL_CA_FILE"),
            ssl_cert_file=optional_path("KAFKA_SSL_CERT_FILE"),
            ssl_key_file=optional_path("KAFKA_SSL_KEY_FILE"),
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
            contact_points=tuple(h.strip() for h in env("CASSANDRA_CONTACT_POINTS", "127.0.0.1").split(",")
                                 if h.strip()),
            port=whole("CASSANDRA_PORT", 9042, low=1, high=65535),
            keyspace=env("CASSANDRA_KEYSPACE", "csm"),
            local_dc=env("CASSANDRA_LOCAL_DC", "").strip() or None,
            replication=env("CASSANDRA_REPLICATION", '{"class": "SimpleStrategy", "replication_factor": 1}'),
            username=env("CASSANDRA_USERNAME", "").strip() or None,
            password_file=optional_path("CASSANDRA_PASSWORD_FILE"),
            ssl_ca_file=optional_path("CASSANDRA_SSL_CA_FILE"),
            ssl_cert_file=optional_path("CASSANDRA_SSL_CERT_FILE"),
            ssl_key_file=optional_path("CASSANDRA_SSL_KEY_FILE"),
            ssl_check_hostname=flag("CASSANDRA_SSL_CHECK_HOSTNAME", "true"),
            consistency=env("CASSANDRA_CONSISTENCY", "LOCAL_QUORUM").strip().upper(),
            serial_consistency=env("CASSANDRA_SERIAL_CONSISTENCY", "LOCAL_SERIAL").strip().upper(),
            request_timeout=decimal("CASSANDRA_REQUEST_TIMEOUT", 12.0, above=True, high=3600),
            auto_migrate=flag("CASSANDRA_AUTO_MIGRATE", "true"),
        )
