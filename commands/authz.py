"""Who may do what: the one permission table, and the check every handler calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain.errors import DomainError
from domain.events import Actor

PERMISSIONS: dict[str, str] = {
    "tenant:create": "create tenants",
    "tenant:read": "read tenants",
    "tenant:update": "rename tenants and set their certificate policy",
    "tenant:suspend": "suspend and resume tenants",
    "audit:read": "read the audit log",
    "audit:verify": "verify hash chains and checkpoints",
    "events:stream": "subscribe to the event stream",
    "token:issue": "issue and revoke API tokens",
    "projection:admin": "inspect and rebuild projections",
    "ca:create": "create root and intermediate CAs, import offline roots",
    "ca:read": "read CAs, their certificates and chains",
    "ca:manage": "cross-certify, roll over, disable, enable and revoke CAs",
    "profile:read": "read certificate profiles",
    "profile:manage": "create, update and retire certificate profiles",
    "cert:issue": "issue certificates",
    "cert:read": "search and read certificates, export them without keys",
    "cert:revoke": "revoke certificates (on the CRL and in OCSP answers at once)",
    "key:export": "export a certificate's private key (audited)",
    "key:unblock": "lift a compromised-key block reported in error (audited, with a reason; revokes nothing back)",
    "cert:deploy": "install a certificate and its private key on a node over SSH (with key:export; audited)",
    "user:manage": "create users, grant and revoke their roles, reset passwords, disable them",
    "user:read": "list and read users and service accounts",
    "serviceaccount:manage": "create, disable and enable service accounts, issue and revoke their API keys",
    "webhook:read": "list webhook subscriptions and their delivery logs",
    "webhook:manage": "subscribe, update and delete webhooks, rotate their signing secrets",
    "vault:sweep": "delete vault keys that no event names (orphans of commands that failed)",
    "vault:kek": "rotate key-encryption keys, re-wrap data keys under them, list and retire them",
    "discovery:record": "record certificates found on the network (what endpoints served when scanned)",
    "acme:manage": "create, list and revoke ACME external account binding keys (the HMAC key shown once)",
}

# Who holds what. Least privilege: a role gets a permission only when its job needs it, and the
# permissions that move trust (user and token management, private-key export, tenant lifecycle)
# sit with the admin roles alone. docs/security.md prints this table (a test keeps it in step).
_READ = frozenset({"tenant:read", "ca:read", "profile:read", "cert:read"})
ROLES: dict[str, frozenset[str]] = {
    # everything, platform-wide: tenant lifecycle, quotas, projections, tokens
    "platform-admin": frozenset(PERMISSIONS),
    # runs one tenant: its policy, users and service accounts (granting no more than it holds), CAs,
    # profiles, certificates, audit trail; exports keys and deploys them to nodes (audited)
    "tenant-admin": _READ | {"tenant:update", "audit:read", "events:stream", "ca:create", "ca:manage",
                             "profile:manage", "cert:issue", "cert:revoke", "key:export", "cert:deploy", "user:read",
                             "user:manage", "serviceaccount:manage", "webhook:read", "webhook:manage",
                             "discovery:record", "acme:manage", "key:unblock"},
    # runs a tenant's CAs and issuance, and checks that what it renewed was deployed (discovery); no policy, no
    # users or tokens, no private-key export
    "ca-operator": _READ | {"ca:create", "ca:manage", "profile:manage", "cert:issue", "cert:revoke",
                            "discovery:record"},
    # service accounts (CI/CD, ACME-like automation): issue and read certificates, nothing else
    "issuer": frozenset({"cert:issue", "cert:read"}),
    # self-service: issue (within the tenant policy's allowed names) and read; keys stay with the developer (CSR)
    "developer": _READ | {"cert:issue"},
    # read-only everything, plus the audit log, chain verification and the event stream
    "auditor": _READ | {"audit:read", "audit:verify", "events:stream", "user:read", "webhook:read"},
    "viewer": _READ,
}

# Roles no one can be granted: they are given to principals the service authenticates itself. An ACME account
# (its requests signed with its key, api/acme.py) issues and revokes within its tenant; commands/acme.py checks first
# that the order or certificate is the account's own.
INTERNAL_ROLES: dict[str, frozenset[str]] = {"acme-account": frozenset({"cert:issue", "cert:revoke"})}

# Permissions no tenant-scoped principal can ever use: every check of them is at platform scope (a tenant-scoped
# token is refused whatever its roles). Granting a role to a tenant's user or key therefore grants none of them,
# and the no-escalation rule (``check_grantable``) leaves them out: a tenant-admin may make a tenant auditor.
PLATFORM_ONLY = frozenset({"tenant:create", "tenant:suspend", "audit:verify", "projection:admin", "vault:sweep",
                           "vault:kek"})


class Forbidden(DomainError):
    status = 403

    def __init__(self, permission: str, detail: str, field: str | None = None) -> None:
        super().__init__("forbidden", detail, field=field)
        self.permission = permission


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``tenant_id`` None means platform-wide scope; ``expires_at``, when its credential
    stops being valid (None: it has no expiry of its own); ``session_id``, the session its access token belongs
    to (None: an API key, the CLI)."""

    id: str
    auth_method: str
    roles: frozenset[str]
    tenant_id: str | None = None
    expires_at: datetime | None = None
    session_id: str | None = None
    session_epoch: int | None = None  # a local user's: the sessions epoch its session's token was issued in
    permissions: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        granted = frozenset().union(*(ROLES.get(role) or INTERNAL_ROLES.get(role, frozenset())
                                       for role in self.roles))
        object.__setattr__(self, "permissions", granted)

    def actor(self) -> Actor:
        return Actor(principal=self.id, auth_method=self.auth_method)


SYSTEM = Principal(id="system", auth_method="internal", roles=frozenset({"platform-admin"}))


def holds(principal: Principal, permission: str) -> None:
    """Raise Forbidden unless one of ``principal``'s roles grants ``permission`` (in whatever tenant)."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    if permission not in principal.permissions:
        raise Forbidden(permission, f"this principal lacks the permission {permission}")


def check_grantable(principal: Principal, role: str, *, tenant_id: str | None, permission: str,
                    field: str = "roles") -> None:
    """No escalation: a principal grants only roles whose permissions it holds itself, counting only those the
    grantee can use (``tenant_id``: the grantee's tenant; None: platform-wide). ``permission`` and ``field`` name the
    refusal: the permission being exercised and the input naming the role."""
    usable = ROLES.get(role, frozenset()) - (PLATFORM_ONLY if tenant_id is not None else frozenset())
    if not usable <= principal.permissions:
        raise Forbidden(permission, f"granting {role} needs every permission that role carries", field=field)


def authorize(principal: Principal, permission: str, tenant_id: str | None = None) -> None:
    """Raise Forbidden unless ``principal`` holds ``permission`` for ``tenant_id``."""
    holds(principal, permission)
    if principal.tenant_id is not None and tenant_id != principal.tenant_id:
        raise Forbidden(permission, "this principal may act only within its own tenant", field="tenant_id")


def authorize_search(principal: Principal, permission: str, tenant_id: str | None) -> None:
    """For a list or search of ``tenant_id``'s items (None: every tenant the principal sees): Forbidden unless
    ``principal`` holds ``permission`` there. A tenant-scoped principal naming another tenant is refused, not
    answered with an empty list: the store layer's confinement (``visible_tenants``) stays the guarantee."""
    authorize(principal, permission, tenant_id if tenant_id is not None else principal.tenant_id)


def visible_tenants(principal: Principal) -> str | None:
    """The tenant a principal's queries are confined to, or None for platform scope."""
    return principal.tenant_id
