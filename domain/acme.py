"""The ACME aggregates (RFC 8555): external account binding keys, accounts, account keys, orders, authorizations.

Each is a hash-chained stream. An account's id is its first key's RFC 7638 thumbprint, and stays its id after a key
change (RFC 8555 7.3.5), so its certificates' ownership tags stay true. Each key an account signs with is claimed by
a stream of its own (``acme-key-<thumbprint>``, created at version 0), so the store refuses one key to two accounts;
a key an account gave up stays claimed by it (it opens no other account). An authorization holds its challenges
(http-01, tls-alpn-01, dns-01: domain/acme_challenges.py): a challenge has no life apart from its authorization. The EAB key's HMAC secret is in the key vault, named here
by ``secret_ref`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.errors import DomainError, NotFound
from domain.events import Payload, event, resumable
from domain.acme_challenges import CHALLENGE_TYPES, DNS_01, HTTP_01, TLS_ALPN_01  # noqa: F401 - re-exported
from domain.acme_networks import IpNetwork, parse_networks, validation_address_problem  # noqa: F401 - re-exported
from domain.names import parse_network, pattern_problem

EAB_STREAM_TYPE = "acme_eab_key"
ACCOUNT_STREAM_TYPE = "acme_account"
KEY_STREAM_TYPE = "acme_account_key"
ORDER_STREAM_TYPE = "acme_order"
AUTHZ_STREAM_TYPE = "acme_authorization"
MAX_PATTERNS = 64


class AcmeProblem(DomainError):
    """A refusal that ACME clients read: ``acme_type`` is its ``urn:ietf:params:acme:error:`` type."""

    def __init__(self, acme_type: str, detail: str, *, field: str, status: int = 400) -> None:
        super().__init__(acme_type, detail, field=field)
        self.acme_type = acme_type
        self.status = status


# events ------------------------------------------------------------------------------------
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


@event("acme.account_created")
class AccountCreated(Payload, frozen=True, kw_only=True):
    account_id: str  # the RFC 7638 thumbprint of jwk
    jwk: dict[str, str]  # the public key only
    contact: list[str]
    eab_key_id: str


@event("acme.account_key_changed")
class AccountKeyChanged(Payload, frozen=True, kw_only=True):
    old_thumbprint: str
    new_thumbprint: str
    jwk: dict[str, str]  # the new public key only


@event("acme.account_key_bound")
class AccountKeyBound(Payload, frozen=True, kw_only=True):
    account_id: str  # the account this key signs for (in the key's own stream, acme-key-<thumbprint>)


@event("acme.account_deactivated")
class AccountDeactivated(Payload, frozen=True, kw_only=True):
    pass


@event("acme.order_created")
class OrderCreated(Payload, frozen=True, kw_only=True):
    order_id: str
    account_id: str
    identifiers: list[str]  # DNS names
    authorization_ids: list[str]  # the DNS names' (in their order), then the IP addresses'
    expires: str
    not_after: str | None = None  # the certificate's requested end (RFC 3339 UTC), within the profile's maximum
    ip_identifiers: list[str] = []  # IP addresses (RFC 8738), compressed text form; absent from older events


@event("acme.order_issued")
class OrderIssued(Payload, frozen=True, kw_only=True):
    certificate_id: str
    csr_sha256: str


class Challenge(msgspec.Struct, frozen=True, kw_only=True):
    challenge_id: str
    challenge_type: str  # http-01 | tls-alpn-01 | dns-01
    token: str  # public: the client serves it


@event("acme.authorization_created")
class AuthorizationCreated(Payload, frozen=True, kw_only=True):
    authz_id: str
    order_id: str
    account_id: str
    identifier: str  # as ordered: a wildcard keeps its "*." (the authorization proves the name below it)
    expires: str
    challenges: list[Challenge]  # the client answers one of them
    identifier_type: str = "dns"  # "dns" or "ip" (RFC 8738: an address, compressed text form)


@event("acme.authorization_expired")
class AuthorizationExpired(Payload, frozen=True, kw_only=True):
    """The authorization expired while its started challenge awaited validation: no result is recorded after it,
    and the validator sends it no more."""

    challenge_id: str
    detail: str


@event("acme.authorization_deactivated")
class AuthorizationDeactivated(Payload, frozen=True, kw_only=True):
    reason: str  # "client": its account asked (RFC 8555 7.5.2); "account_deactivated": its account was (7.3.6)


@event("acme.challenge_started")
class ChallengeStarted(Payload, frozen=True, kw_only=True):
    challenge_id: str


@event("acme.challenge_validated")
class ChallengeValidated(Payload, frozen=True, kw_only=True):
    challenge_id: str
    address: str  # the address the key authorization was fetched from (dns-01: the resolver that answered)


@event("acme.challenge_failed")
class ChallengeFailed(Payload, frozen=True, kw_only=True):
    challenge_id: str
    error_type: str  # an ACME error type: connection, unauthorized, dns, rejectedIdentifier, incorrectResponse
    detail: str


# states -------------------------------------------------------------------------------------
class EabKey(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "absent"  # absent | active | bound | revoked
    created: EabKeyCreated | None = None
    account_id: str | None = None


class Account(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "absent"  # absent | valid | deactivated
    created: AccountCreated | None = None
    key_thumbprint: str = ""  # the RFC 7638 thumbprint of the key that signs for it now
    jwk: dict[str, str] | None = None  # that key


class KeyInUse(AcmeProblem):
    """keyChange to a key another account has (RFC 8555 7.3.5: 409, Location that account)."""

    def __init__(self, account_id: str) -> None:
        super().__init__("malformed", "the new key is already the key of another account", field="payload.jwk",
                         status=409)
        self.account_id = account_id


class Order(msgspec.Struct, frozen=True, kw_only=True):
    created: OrderCreated | None = None
    certificate_id: str | None = None


class Authorization(msgspec.Struct, frozen=True, kw_only=True):
    """One authorization and its challenges: the first the client starts decides it (``started``)."""

    created: AuthorizationCreated | None = None
    challenge_status: str = "pending"  # of the started challenge: pending | processing | valid | invalid
    started: str | None = None  # the challenge id the client answered
    error: ChallengeFailed | None = None
    deactivated: bool = False
    expired: bool = False  # recorded expired while processing (acme.authorization_expired)

    def challenge(self, challenge_id: str) -> Challenge | None:
        return next((c for c in self.created.challenges if c.challenge_id == challenge_id), None)

    def status_of(self, challenge_id: str) -> str:
        """A challenge's status: the started one's is the authorization's; the others stay pending."""
        return self.challenge_status if challenge_id == self.started else "pending"


def eab_stream_id(key_id: str) -> str:
    return f"acme-eab-{key_id}"


def account_stream_id(account_id: str) -> str:
    return f"acme-account-{account_id}"


def key_stream_id(thumbprint: str) -> str:
    return f"acme-key-{thumbprint}"


def order_stream_id(order_id: str) -> str:
    return f"acme-order-{order_id}"


def authz_stream_id(authz_id: str) -> str:
    return f"acme-authz-{authz_id}"


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


@resumable
def fold_account(payloads: Iterable[Payload], start: Account | None = None) -> Account:
    state = start or Account()
    for payload in payloads:
        match payload:
            case AccountCreated():
                state = Account(status="valid", created=payload, key_thumbprint=payload.account_id, jwk=payload.jwk)
            case AccountKeyChanged():
                state = msgspec.structs.replace(state, key_thumbprint=payload.new_thumbprint, jwk=payload.jwk)
            case AccountDeactivated():
                state = msgspec.structs.replace(state, status="deactivated")
    return state


@resumable
def fold_key(payloads: Iterable[Payload], start: str | None = None) -> str | None:
    """The account a key is claimed by (None: no account has claimed it)."""
    state = start
    for payload in payloads:
        if isinstance(payload, AccountKeyBound):
            state = payload.account_id
    return state


@resumable
def fold_order(payloads: Iterable[Payload], start: Order | None = None) -> Order:
    state = start or Order()
    for payload in payloads:
        match payload:
            case OrderCreated():
                state = Order(created=payload)
            case OrderIssued():
                state = msgspec.structs.replace(state, certificate_id=payload.certificate_id)
    return state


@resumable
def fold_authz(payloads: Iterable[Payload], start: Authorization | None = None) -> Authorization:
    state = start or Authorization()
    for payload in payloads:
        match payload:
            case AuthorizationCreated():
                state = Authorization(created=payload)
            case ChallengeStarted():
                state = msgspec.structs.replace(state, challenge_status="processing", started=payload.challenge_id)
            case ChallengeValidated():
                state = msgspec.structs.replace(state, challenge_status="valid")
            case ChallengeFailed():
                state = msgspec.structs.replace(state, challenge_status="invalid", error=payload)
            case AuthorizationDeactivated():
                state = msgspec.structs.replace(state, deactivated=True)
            case AuthorizationExpired():
                # the started challenge is invalid: the server did not validate it in time
                failure = ChallengeFailed(challenge_id=payload.challenge_id, error_type="serverInternal",
                                          detail=payload.detail)
                state = msgspec.structs.replace(state, challenge_status="invalid", error=failure, expired=True)
    return state


# rules ----------------------------------------------------------------------------------------
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


def decide_claim_key(owner: str | None, account_id: str) -> list[Payload]:
    """A key signs for one account: claimed once; a claim by another account is ``KeyInUse``."""
    if owner == account_id:
        return []
    if owner is not None:
        raise KeyInUse(owner)
    return [AccountKeyBound(account_id=account_id)]


def decide_change_key(state: Account, old_thumbprint: str | None, new_thumbprint: str,
                      new_jwk: dict[str, str]) -> list[Payload]:
    """RFC 8555 7.3.5: ``oldKey`` is the account's key now, and the new key is another one."""
    if state.status != "valid":
        raise AcmeProblem("unauthorized", f"the account is {state.status}", field="protected.kid", status=403)
    if state.key_thumbprint == new_thumbprint:
        raise AcmeProblem("malformed", "the new key is the account's key already", field="payload.jwk")
    if old_thumbprint != state.key_thumbprint:
        raise AcmeProblem("malformed", "oldKey is not the account's key", field="payload.oldKey")
    return [AccountKeyChanged(old_thumbprint=old_thumbprint, new_thumbprint=new_thumbprint, jwk=new_jwk)]


def order_status(order: Order, authorizations: Iterable[Authorization], now: datetime) -> str:
    """RFC 8555 7.1.6: valid once issued; invalid if an authorization failed or was deactivated, or the order expired; ready when every
    authorization is valid; pending otherwise (finalizing happens within one request: no "processing")."""
    if order.certificate_id is not None:
        return "valid"
    statuses = [("deactivated" if authz.deactivated else authz.challenge_status) for authz in authorizations]
    if "invalid" in statuses or "deactivated" in statuses or datetime.fromisoformat(order.created.expires) <= now:
        return "invalid"
    return "ready" if all(s == "valid" for s in statuses) else "pending"


def authz_status(authz: Authorization, now: datetime) -> str:
    if authz.deactivated:
        return "deactivated"
    if authz.expired:
        return "expired"
    if authz.challenge_status == "valid":
        return "valid"
    if authz.challenge_status == "invalid":
        return "invalid"
    return "expired" if datetime.fromisoformat(authz.created.expires) <= now else "pending"


def decide_start_challenge(state: Authorization, challenge_id: str, now: datetime) -> list[Payload]:
    """A client's POST to a challenge: the first one started makes the authorization processing (once); a POST
    to it or to another afterwards changes nothing."""
    if state.challenge(challenge_id) is None:
        raise AcmeProblem("malformed", f"no challenge {challenge_id} here", field="challenge_id", status=404)
    if state.deactivated:
        raise AcmeProblem("malformed", "the authorization is deactivated", field="challenge_id", status=400)
    if state.challenge_status != "pending":
        return []
    if authz_status(state, now) == "expired":
        raise AcmeProblem("malformed", "the authorization has expired", field="challenge_id", status=400)
    return [ChallengeStarted(challenge_id=challenge_id)]


def _past_expiry(state: Authorization, now: datetime) -> bool:
    return datetime.fromisoformat(state.created.expires) <= now


def _expired(state: Authorization) -> AuthorizationExpired:
    return AuthorizationExpired(challenge_id=state.started, detail=f"the authorization expired at "
                                f"{state.created.expires} before its {state.challenge(state.started).challenge_type} "
                                "validation was recorded: order again")


def decide_challenge_result(state: Authorization, result: ChallengeValidated | ChallengeFailed,
                            now: datetime) -> list[Payload]:
    """The validator's answer, recorded only for a challenge still processing (a retried job records nothing),
    and only before the authorization expires: after, it expires instead (a late answer proves nothing)."""
    if state.challenge_status != "processing" or result.challenge_id != state.started or state.deactivated:
        return []
    return [_expired(state)] if _past_expiry(state, now) else [result]


def decide_expire(state: Authorization, now: datetime) -> list[Payload]:
    """A processing challenge whose authorization has expired (no worker answered in time): it ends, once."""
    if state.challenge_status != "processing" or state.deactivated or not _past_expiry(state, now):
        return []
    return [_expired(state)]


def decide_deactivate_authz(state: Authorization, now: datetime, reason: str) -> list[Payload]:
    """RFC 8555 7.5.2: a pending or valid authorization becomes deactivated (once). When its account is deactivated
    (``reason`` "account_deactivated") only a pending one is, and nothing is refused."""
    status = authz_status(state, now)
    if status == "deactivated":
        return []
    allowed = ("pending",) if reason == "account_deactivated" else ("pending", "valid")
    if status not in allowed:
        if reason == "account_deactivated":
            return []
        raise AcmeProblem("malformed", f"the authorization is {status}: only a pending or valid one is deactivated",
                          field="status")
    return [AuthorizationDeactivated(reason=reason)]


def decide_issued(state: Order, issued: OrderIssued) -> list[Payload]:
    if state.certificate_id is not None:
        return []
    return [issued]
