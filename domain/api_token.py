"""The ApiToken aggregate: a service account's API key (`csm_<id>_<secret>`); its verifier stays out of events."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Payload, event, resumable, upcaster

STREAM_TYPE = "api_token"


@event("api_token.issued", schema_version=2)
class ApiTokenIssued(Payload, frozen=True, kw_only=True):
    """Version 2 names the service account that holds the key (version 1 tokens had none)."""

    token_id: str
    name: str
    roles: list[str]
    scope_tenant_id: str | None
    expires_at: str | None
    service_account: str | None


@upcaster("api_token.issued", 1)
def _v1_had_no_service_account(data: dict) -> dict:
    return {**data, "service_account": None}


@event("api_token.revoked")
class ApiTokenRevoked(Payload, frozen=True, kw_only=True):
    reason: str


class ApiToken(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str = ""
    status: str = "absent"  # absent | active | revoked
    expires_at: str | None = None  # as issued (RFC 3339); None: it does not expire
    service_account: str | None = None
    version: int = 0


def stream_id(token_id: str) -> str:
    return f"apitoken-{token_id}"


@resumable
def fold(payloads: Iterable[Payload], start: ApiToken | None = None) -> ApiToken:
    state = ApiToken() if start is None else start
    for payload in payloads:
        match payload:
            case ApiTokenIssued():
                state = ApiToken(token_id=payload.token_id, status="active", expires_at=payload.expires_at,
                                 service_account=payload.service_account, version=state.version)
            case ApiTokenRevoked():
                state = msgspec.structs.replace(state, status="revoked")
        state = msgspec.structs.replace(state, version=state.version + 1)
    return state


def decide_issue(state: ApiToken, issued: ApiTokenIssued, known_roles: frozenset[str]) -> list[Payload]:
    if state.status != "absent":
        raise AlreadyExists("token_exists", "a token with this id exists", field="token_id")
    if not issued.name.strip() or len(issued.name) > 200 or not issued.name.isprintable():
        raise DomainError("invalid_name", "name must be 1-200 printable characters", field="name")
    if not issued.roles:
        raise DomainError("no_roles", "a token needs at least one role", field="roles")
    for role in issued.roles:
        if role not in known_roles:
            raise DomainError("unknown_role", f"unknown role {role!r}", field="roles")
    return [issued]


def decide_revoke(state: ApiToken, reason: str) -> list[Payload]:
    if state.status == "absent":
        raise NotFound("token_not_found", "no such token", field="token_id")
    if state.status == "revoked":
        return []
    return [ApiTokenRevoked(reason=reason[:500] or "revoked")]
