"""The ACME authorization aggregate (RFC 8555 7.1.4, 7.5): one identifier's authorization and its challenges
(http-01, tls-alpn-01, dns-01: domain/acme_challenges.py), its events and fold, its status, and the decisions on a
client starting a challenge, the validator's result, expiry and deactivation. A challenge has no life apart from
its authorization."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.acme_problems import AcmeProblem
from domain.events import Payload, event, resumable

AUTHZ_STREAM_TYPE = "acme_authorization"


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


def authz_stream_id(authz_id: str) -> str:
    return f"acme-authz-{authz_id}"


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
