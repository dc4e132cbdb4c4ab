"""The ACME external account binding key aggregate (RFC 8555 7.3.4): its events, its fold, the name patterns it
allows, and the decisions to create, revoke and bind one. A key binds one account, once. The HMAC secret is in
the key vault, named here by ``secret_ref`` only."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from domain.acme_problems import AcmeProblem
from domain.errors import DomainError, NotFound
from domain.events import Payload, event, resumable
from domain.names import parse_network, pattern_problem

EAB_STREAM_TYPE = "acme_eab_key"
MAX_PATTERNS = 64


@event("acme.eab_key_created")
class EabKeyCreated(Payload, frozen=True, kw_only=True):
    key_id: str
    ca_id: str
    profile: str
    allowed_names: list[str]  # patterns ("node1.example", "*.example", ".example"); empty: the tenant policy's
    description: str
    secret_ref: str  # the HMAC key's id in the key vault (purpose "acme-eab"); never the key


@event("acme.eab_key_bound")
class EabKeyBound(Payload, frozen=True, kw_only=True):
    account_id: str


@event("acme.eab_key_revoked")
class EabKeyRevoked(Payload, frozen=True, kw_only=True):
    reason: str


class EabKey(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "absent"  # absent | active | bound | revoked
    created: EabKeyCreated | None = None
    account_id: str | None = None


def eab_stream_id(key_id: str) -> str:
    return f"acme-eab-{key_id}"


@resumable
def fold_eab(payloads: Iterable[Payload], start: EabKey | None = None) -> EabKey:
    state = start or EabKey()
    for payload in payloads:
        match payload:
            case EabKeyCreated():
                state = EabKey(status="active", created=payload)
            case EabKeyBound():
                state = msgspec.structs.replace(state, status="bound", account_id=payload.account_id)
            case EabKeyRevoked():
                state = msgspec.structs.replace(state, status="revoked")
    return state


def check_allowed_names(patterns: Iterable[str]) -> list[str]:
    """An EAB key's name patterns, each a DNS name, ``*.suffix`` or ``.suffix`` (as the tenant policy's), or an IP
    network (``10.0.0.0/24``, an address alone: its /32 or /128) for IP identifiers (RFC 8738). A key that lists
    patterns but no network orders no IP address."""
    cleaned = list(dict.fromkeys(p.strip().lower() for p in patterns))
    if len(cleaned) > MAX_PATTERNS:
        raise DomainError("too_many_patterns", f"at most {MAX_PATTERNS} name patterns", field="allowed_names")
    for index, pattern in enumerate(cleaned):
        if any(c in pattern for c in ":/") or pattern.replace(".", "").isdigit():  # meant as an address or network
            network = parse_network(pattern)
            if network is None:
                raise DomainError("invalid_pattern", f"{pattern!r} is not an IP network (address/prefix, host bits "
                                  "zero)", field=f"allowed_names[{index}]")
            cleaned[index] = str(network)
        elif problem := pattern_problem(pattern):
            raise DomainError("invalid_pattern", f"{pattern!r}: {problem}", field=f"allowed_names[{index}]")
    return list(dict.fromkeys(cleaned))


def decide_create_eab(state: EabKey, created: EabKeyCreated) -> list[Payload]:
    if state.status != "absent":
        return []
    return [created]


def decide_revoke_eab(state: EabKey, key_id: str, reason: str) -> list[Payload]:
    if state.status == "absent":
        raise NotFound("eab_key_not_found", f"no EAB key {key_id}", field="key_id")
    if state.status == "revoked":
        return []
    return [EabKeyRevoked(reason=reason)]


def usable_eab(state: EabKey, key_id: str) -> EabKeyCreated:
    """The EAB key behind a newAccount: it must exist, not be revoked, and not be bound to an account yet."""
    if state.created is None:
        raise AcmeProblem("unauthorized", f"no external account key {key_id}", field="externalAccountBinding.kid",
                          status=403)
    if state.status == "revoked":
        raise AcmeProblem("unauthorized", f"external account key {key_id} is revoked",
                          field="externalAccountBinding.kid", status=403)
    if state.status == "bound":
        raise AcmeProblem("unauthorized", f"external account key {key_id} is already bound to an account",
                          field="externalAccountBinding.kid", status=403)
    return state.created


def decide_bind_eab(state: EabKey, key_id: str, account_id: str) -> list[Payload]:
    if state.status == "bound" and state.account_id == account_id:
        return []
    usable_eab(state, key_id)
    return [EabKeyBound(account_id=account_id)]
