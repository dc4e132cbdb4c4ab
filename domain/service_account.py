"""The ServiceAccount aggregate: a non-human principal in a tenant (or platform-wide) that holds API keys.

Its stream records each key as the key is issued (``service_account.key_issued``, appended at the version the issuer
read), so a disable and a key's issuance cannot pass each other: whichever appends second read a stream the first
has changed, and decides again on what is there. A disable names every key recorded before it (they are revoked with
it); a key cannot be recorded after it. Enabling brings none of those keys back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Payload, event, resumable, upcaster

STREAM_TYPE = "service_account"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@event("service_account.created")
class ServiceAccountCreated(Payload, frozen=True, kw_only=True):
    name: str
    tenant_id: str | None
    description: str


@event("service_account.key_issued")
class ServiceAccountKeyIssued(Payload, frozen=True, kw_only=True):
    """A key of the account (its id: the secret's verifier is in the credential vault, never here)."""

    token_id: str


@event("service_account.disabled", schema_version=2)
class ServiceAccountDisabled(Payload, frozen=True, kw_only=True):
    """Version 2 names the keys revoked with the account (version 1 named none: no command disabled accounts)."""

    reason: str
    keys: list[str] = []


@upcaster("service_account.disabled", 1)
def _v1_named_no_keys(data: dict) -> dict:
    return {**data, "keys": []}


@event("service_account.enabled")
class ServiceAccountEnabled(Payload, frozen=True, kw_only=True):
    reason: str


class ServiceAccount(msgspec.Struct, frozen=True, kw_only=True):
    name: str = ""
    tenant_id: str | None = None
    status: str = "absent"  # absent | active | disabled
    keys: tuple[str, ...] = ()  # recorded since it was created or last enabled: a disable revokes them
    disabled_keys: tuple[str, ...] = ()  # those its disable (while it is disabled) named and revoked
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
            case ServiceAccountKeyIssued():
                state = msgspec.structs.replace(state, keys=(*state.keys, payload.token_id))
            case ServiceAccountDisabled():
                state = msgspec.structs.replace(state, status="disabled", keys=(), disabled_keys=tuple(payload.keys))
            case ServiceAccountEnabled():
                state = msgspec.structs.replace(state, status="active", disabled_keys=())
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


def decide_issue_key(state: ServiceAccount, token_id: str) -> list[Payload]:
    """Record a key about to be issued; refused once the account is disabled (or if it does not exist)."""
    require_active(state)
    return [ServiceAccountKeyIssued(token_id=token_id)]


def decide_disable(state: ServiceAccount, reason: str, other_keys: Iterable[str] = ()) -> list[Payload]:
    """Disable the account, naming the keys revoked with it: those its stream recorded, and ``other_keys`` (keys the
    read models list for it that predate the stream's record of keys). Disabling a disabled account changes nothing."""
    if state.status == "absent":
        raise NotFound("service_account_not_found", "no such service account", field="name")
    if state.status == "disabled":
        return []
    _check_reason(reason)
    keys = sorted(set(state.keys) | set(other_keys))
    return [ServiceAccountDisabled(reason=reason.strip(), keys=keys)]


def decide_enable(state: ServiceAccount, reason: str) -> list[Payload]:
    """Let the account be issued keys again; the keys revoked when it was disabled stay revoked."""
    if state.status == "absent":
        raise NotFound("service_account_not_found", "no such service account", field="name")
    if state.status == "active":
        return []
    _check_reason(reason)
    return [ServiceAccountEnabled(reason=reason.strip())]


def _check_reason(reason: str) -> None:
    if not reason.strip() or len(reason) > 500 or not reason.isprintable():
        raise DomainError("invalid_reason", "a reason is 1-500 printable characters, not only blanks", field="reason")


def require_active(state: ServiceAccount) -> None:
    if state.status == "absent":
        raise NotFound("service_account_not_found", "no such service account", field="service_account")
    if state.status != "active":
        raise DomainError("service_account_disabled", "the service account is disabled", field="service_account")
