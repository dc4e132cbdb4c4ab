"""The ServiceAccount aggregate: a non-human principal in a tenant (or platform-wide) that holds API keys."""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Payload, event, resumable

STREAM_TYPE = "service_account"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@event("service_account.created")
class ServiceAccountCreated(Payload, frozen=True, kw_only=True):
    name: str
    tenant_id: str | None
    description: str


@event("service_account.disabled")
class ServiceAccountDisabled(Payload, frozen=True, kw_only=True):
    reason: str


class ServiceAccount(msgspec.Struct, frozen=True, kw_only=True):
    name: str = ""
    tenant_id: str | None = None
    status: str = "absent"  # absent | active | disabled
    version: int = 0


def stream_id(name: str) -> str:
    return f"serviceaccount-{name}"


def subject(tenant_id: str | None, name: str) -> str:
    return f"sa:{tenant_id or '_system'}:{name}"


def slug(label: str) -> str:
    """A valid account name derived from a free-form label ("CI pipeline" -> "ci-pipeline")."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", label.strip().lower()).strip("-._")[:64].rstrip("-._")
    return cleaned or "default"


@resumable
def fold(payloads: Iterable[Payload], start: ServiceAccount | None = None) -> ServiceAccount:
    state = ServiceAccount() if start is None else start
    for payload in payloads:
        match payload:
            case ServiceAccountCreated():
                state = ServiceAccount(name=payload.name, tenant_id=payload.tenant_id, status="active",
                                       version=state.version)
            case ServiceAccountDisabled():
                state = msgspec.structs.replace(state, status="disabled")
        state = msgspec.structs.replace(state, version=state.version + 1)
    return state


def decide_create(state: ServiceAccount, created: ServiceAccountCreated, *, reuse: bool = False) -> list[Payload]:
    if state.status != "absent":
        if reuse and state.status == "active":
            return []
        raise AlreadyExists("service_account_exists", f"service account {created.name} exists", field="name")
    if not NAME_RE.fullmatch(created.name):
        raise DomainError("invalid_name", "name must be 1-64 characters: lower-case letters, digits, '.', '_', '-'",
                          field="name")
    if len(created.description) > 500 or not created.description.isprintable():
        raise DomainError("invalid_description", "description must be at most 500 printable characters",
                          field="description")
    return [created]


def decide_disable(state: ServiceAccount, reason: str) -> list[Payload]:
    if state.status == "absent":
        raise NotFound("service_account_not_found", "no such service account", field="name")
    return [] if state.status == "disabled" else [ServiceAccountDisabled(reason=reason[:500] or "disabled")]


def require_active(state: ServiceAccount) -> None:
    if state.status == "absent":
        raise NotFound("service_account_not_found", "no such service account", field="service_account")
    if state.status != "active":
        raise DomainError("service_account_disabled", "the service account is disabled", field="service_account")
