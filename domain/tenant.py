"""The Tenant aggregate: its events, its state, and the rules that decide its commands."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta

import msgspec

from domain.errors import AlreadyExists, DomainError, NotFound, QuotaExceeded
from domain.events import Payload, event, resumable
from domain.tenant_policy import TenantPolicy, validate_tenant_policy
from domain.violations import raise_for

STREAM_TYPE = "tenant"
TENANT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")
MAX_NAME = 200


class Quotas(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits on what a tenant may hold; ``None`` means unlimited."""

    max_cas: int | None = None
    max_certificates: int | None = None
    max_issuances_per_day: int | None = None


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """What a tenant's quotas are measured against (or, as a command's ``adding``, what it would add).

    ``cas``: CAs not revoked (pending, active or disabled). ``certificates``: live certificates, issued and
    neither revoked, expired nor superseded by their renewal. ``issuances_today``: certificates issued since
    the last UTC midnight, renewals included.
    """

    cas: int = 0
    certificates: int = 0
    issuances_today: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(cas=self.cas + other.cas, certificates=self.certificates + other.certificates,
                     issuances_today=self.issuances_today + other.issuances_today)


NEW_CA = Usage(cas=1)
NEW_CERTIFICATE = Usage(certificates=1, issuances_today=1)
RENEWAL = Usage(issuances_today=1)  # the successor takes the place of the certificate it renews


@event("tenant.created")
class TenantCreated(Payload, frozen=True, kw_only=True):
    tenant_id: str
    name: str
    quotas: Quotas


@event("tenant.renamed")
class TenantRenamed(Payload, frozen=True, kw_only=True):
    old_name: str
    new_name: str


@event("tenant.quotas_set")
class TenantQuotasSet(Payload, frozen=True, kw_only=True):
    quotas: Quotas


@event("tenant.policy_set")
class TenantPolicySet(Payload, frozen=True, kw_only=True):
    """What the tenant's certificates may say: algorithms, names, validity (checked at every issuance)."""

    policy: TenantPolicy


@event("tenant.suspended")
class TenantSuspended(Payload, frozen=True, kw_only=True):
    reason: str


@event("tenant.resumed")
class TenantResumed(Payload, frozen=True, kw_only=True):
    reason: str


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's state, folded from its events. ``version`` 0 means it does not exist."""

    tenant_id: str = ""
    name: str = ""
    status: str = "absent"  # absent | active | suspended
    quotas: Quotas = Quotas()
    policy: TenantPolicy = TenantPolicy()
    version: int = 0


def stream_id(tenant_id: str) -> str:
    return f"tenant-{tenant_id}"


def evolve(state: Tenant, payload: Payload) -> Tenant:
    replace = msgspec.structs.replace
    match payload:
        case TenantCreated():
            state = Tenant(tenant_id=payload.tenant_id, name=payload.name, status="active", quotas=payload.quotas)
        case TenantRenamed():
            state = replace(state, name=payload.new_name)
        case TenantQuotasSet():
            state = replace(state, quotas=payload.quotas)
        case TenantPolicySet():
            state = replace(state, policy=payload.policy)
        case TenantSuspended():
            state = replace(state, status="suspended")
        case TenantResumed():
            state = replace(state, status="active")
    return replace(state, version=state.version + 1)


@resumable
def fold(payloads: Iterable[Payload], start: Tenant | None = None) -> Tenant:
    state = Tenant() if start is None else start
    for payload in payloads:
        state = evolve(state, payload)
    return state


def validate_tenant_id(tenant_id: str) -> None:
    if not TENANT_ID_RE.fullmatch(tenant_id):  # match() lets "$" accept a trailing newline
        raise DomainError(
            "invalid_tenant_id",
            "tenant_id must be 3-63 characters: lower-case letters, digits and '-', "
            "starting with a letter and not ending with '-'",
            field="tenant_id",
        )


def validate_name(name: str, field: str = "name") -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise DomainError("invalid_name", f"name must be 1-{MAX_NAME} printable characters", field=field)
    return name


def validate_quotas(quotas: Quotas) -> None:
    for field in quotas.__struct_fields__:
        value = getattr(quotas, field)
        if value is not None and not 0 <= value <= 10**9:
            raise DomainError("invalid_quota", "a quota is a whole number from 0 to 10^9", field=f"quotas.{field}")


def day_start(now: datetime) -> datetime:
    """The UTC midnight that began ``now``'s day: the day a per-day quota counts."""
    return datetime.combine(now.astimezone(UTC).date(), time(), UTC)


def bounding(quotas: Quotas, adding: Usage) -> Quotas:
    """The quotas that bound what ``adding`` adds; the others are None (unlimited): nothing to count for them."""
    return Quotas(max_cas=quotas.max_cas if adding.cas > 0 else None,
                  max_certificates=quotas.max_certificates if adding.certificates > 0 else None,
                  max_issuances_per_day=quotas.max_issuances_per_day if adding.issuances_today > 0 else None)


def check_quotas(quotas: Quotas, usage: Usage, adding: Usage, now: datetime) -> None:
    """Refuse (``QuotaExceeded``) if ``usage`` plus ``adding`` would pass a quota that bounds what is added.

    A quota only stops what would grow past it: lowering one below what a tenant already holds takes nothing
    away, and a command that adds nothing bounded by a quota is never refused by it.
    """
    if adding.cas and quotas.max_cas is not None and usage.cas + adding.cas > quotas.max_cas:
        raise QuotaExceeded("max_cas", f"the tenant holds {usage.cas} of its {quotas.max_cas} CAs: revoke one, "
                            "or ask a platform administrator to raise max_cas")
    if (adding.certificates and quotas.max_certificates is not None
            and usage.certificates + adding.certificates > quotas.max_certificates):
        raise QuotaExceeded("max_certificates", f"the tenant holds {usage.certificates} of its "
                            f"{quotas.max_certificates} live certificates: revoke one, let one expire, or ask a "
                            "platform administrator to raise max_certificates")
    limit = quotas.max_issuances_per_day
    if adding.issuances_today and limit is not None and usage.issuances_today + adding.issuances_today > limit:
        tomorrow = day_start(now) + timedelta(days=1)
        raise QuotaExceeded("max_issuances_per_day", f"the tenant has issued {usage.issuances_today} of its "
                            f"{limit} certificates for today (UTC); the count starts again at "
                            f"{tomorrow.isoformat()}", status=429,
                            retry_after_seconds=max(1, int((tomorrow - now).total_seconds()) + 1))


def _require(state: Tenant, tenant_id: str) -> None:
    if state.status == "absent":
        raise NotFound("tenant_not_found", f"tenant {tenant_id} does not exist", field="tenant_id")


def decide_create(state: Tenant, tenant_id: str, name: str, quotas: Quotas) -> list[Payload]:
    validate_tenant_id(tenant_id)
    name = validate_name(name)
    validate_quotas(quotas)
    if state.status != "absent":
        raise AlreadyExists("tenant_exists", f"tenant {tenant_id} already exists", field="tenant_id")
    return [TenantCreated(tenant_id=tenant_id, name=name, quotas=quotas)]


def decide_rename(state: Tenant, tenant_id: str, name: str) -> list[Payload]:
    _require(state, tenant_id)
    name = validate_name(name)
    if name == state.name:
        return []
    return [TenantRenamed(old_name=state.name, new_name=name)]


def decide_set_quotas(state: Tenant, tenant_id: str, quotas: Quotas) -> list[Payload]:
    _require(state, tenant_id)
    validate_quotas(quotas)
    if quotas == state.quotas:
        return []
    return [TenantQuotasSet(quotas=quotas)]


def decide_suspend(state: Tenant, tenant_id: str, reason: str) -> list[Payload]:
    _require(state, tenant_id)
    reason = validate_name(reason, field="reason")
    if state.status == "suspended":
        raise DomainError("tenant_suspended", f"tenant {tenant_id} is already suspended", field="tenant_id")
    return [TenantSuspended(reason=reason)]


def decide_resume(state: Tenant, tenant_id: str, reason: str) -> list[Payload]:
    _require(state, tenant_id)
    reason = validate_name(reason, field="reason")
    if state.status != "suspended":
        raise DomainError("tenant_not_suspended", f"tenant {tenant_id} is not suspended", field="tenant_id")
    return [TenantResumed(reason=reason)]


def decide_set_policy(state: Tenant, tenant_id: str, policy: TenantPolicy) -> list[Payload]:
    _require(state, tenant_id)
    raise_for(validate_tenant_policy(policy))
    if policy == state.policy:
        return []
    return [TenantPolicySet(policy=policy)]
