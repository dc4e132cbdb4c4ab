"""TOTP (RFC 6238 over RFC 4226 HOTP) and the MFA enrollment aggregate; the secret itself lives in the key vault."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Iterable
from urllib.parse import quote, urlencode

import msgspec

from domain.errors import DomainError
from domain.events import Payload, event, resumable

STREAM_TYPE = "mfa"
DIGITS = 6
PERIOD = 30
SECRET_BYTES = 20  # 160 bits, as RFC 4226 recommends for HMAC-SHA-1
WINDOW = 1  # accept the previous and next step too: clock drift


# HMAC-SHA-1 is the interoperable default every authenticator app implements. Inside HOTP it is a
# keyed PRF, where SHA-1's collision weakness does not apply (RFC 4226 appendix A); it is not a
# signature, so the "no SHA-1" certificate policy does not concern it.
def hotp(secret: bytes, counter: int, digits: int = DIGITS) -> str:
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10 ** digits).zfill(digits)


def step_at(unix_time: float, period: int = PERIOD) -> int:
    return int(unix_time // period)


def totp(secret: bytes, unix_time: float) -> str:
    return hotp(secret, step_at(unix_time))


def matching_step(secret: bytes, code: str, unix_time: float, window: int = WINDOW) -> int | None:
    """The time step whose code this is (within ``window`` steps of now), compared in constant time."""
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    now = step_at(unix_time)
    found = None
    for step in range(now - window, now + window + 1):  # every candidate is compared: no early exit
        if hmac.compare_digest(hotp(secret, step).encode(), code.encode()) and found is None:
            found = step
    return found


def b32(secret: bytes) -> str:
    return base64.b32encode(secret).decode().rstrip("=")


def provisioning_uri(secret: bytes, account: str, issuer: str) -> str:
    """The otpauth:// URI authenticator apps read from a QR code (Key Uri Format)."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode({"secret": b32(secret), "issuer": issuer, "algorithm": "SHA1", "digits": DIGITS,
                       "period": PERIOD})
    return f"otpauth://totp/{label}?{query}"


# the enrollment aggregate ------------------------------------------------------------------

@event("mfa.totp_enrollment_started")
class TotpEnrollmentStarted(Payload, frozen=True, kw_only=True):
    """``key_ref`` names the encrypted secret in the key vault (purpose "totp")."""

    subject: str
    key_ref: str


@event("mfa.totp_enabled")
class TotpEnabled(Payload, frozen=True, kw_only=True):
    subject: str
    key_ref: str
    step: int  # the confirming code's time step: it cannot log in afterwards


@event("mfa.totp_removed")
class TotpRemoved(Payload, frozen=True, kw_only=True):
    subject: str
    reason: str


class Mfa(msgspec.Struct, frozen=True, kw_only=True):
    pending_ref: str | None = None
    key_ref: str | None = None  # the confirmed secret: TOTP is on
    confirmed_step: int = -1
    version: int = 0


def stream_id(subject: str) -> str:
    return "mfa-" + hashlib.sha256(subject.encode()).hexdigest()[:32]


@resumable
def fold(payloads: Iterable[Payload], start: Mfa | None = None) -> Mfa:
    state = Mfa() if start is None else start
    for payload in payloads:
        match payload:
            case TotpEnrollmentStarted():
                state = msgspec.structs.replace(state, pending_ref=payload.key_ref)
            case TotpEnabled():
                state = msgspec.structs.replace(state, key_ref=payload.key_ref, pending_ref=None,
                                                confirmed_step=payload.step)
            case TotpRemoved():
                state = msgspec.structs.replace(state, key_ref=None, pending_ref=None)
        state = msgspec.structs.replace(state, version=state.version + 1)
    return state


def decide_start(state: Mfa, started: TotpEnrollmentStarted) -> list[Payload]:
    if state.key_ref is not None:
        raise DomainError("totp_already_enabled", "TOTP is already enabled for this account; an administrator "
                          "can reset it", field="totp")
    return [started]


def decide_confirm(state: Mfa, subject: str, key_ref: str, step: int) -> list[Payload]:
    if state.pending_ref != key_ref:
        raise DomainError("no_pending_enrollment", "start a TOTP enrollment first", field="totp")
    return [TotpEnabled(subject=subject, key_ref=key_ref, step=step)]


def decide_remove(state: Mfa, subject: str, reason: str) -> list[Payload]:
    if state.key_ref is None and state.pending_ref is None:
        return []
    return [TotpRemoved(subject=subject, reason=reason[:500] or "removed")]
