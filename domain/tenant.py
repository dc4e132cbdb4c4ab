"""The Tenant aggregate: its events, its state, and the rules that decide its commands."""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Payload, event, resumable
from domain.policy import TenantPolicy, raise_for, validate_tenant_policy

STREAM_TYPE = "tenant"
TENANT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")
MAX_NAME = 200


class Quotas(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits on what a tenant may hold; ``None`` means unlimited."""

    max_cas: int | None = None
    max_certificates: int | None = None
    max_issuances_per_day: int | None = None


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
