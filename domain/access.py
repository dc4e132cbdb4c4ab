"""Access events that belong to no account: denials (403) and signing-key rotations."""

from __future__ import annotations

from domain.events import Payload, event

DENIAL_STREAM_TYPE = "access"
SIGNING_STREAM_TYPE = "signing_keys"
SIGNING_STREAM_ID = "signing-keys"


@event("access.denied")
class AccessDenied(Payload, frozen=True, kw_only=True):
    """An authenticated principal was refused a permission (the actor is the principal)."""

    principal: str
    permission: str | None
    tenant_id: str | None  # the tenant the request concerned, when known
    route: str  # "METHOD /path"


@event("auth.signing_key_rotated")
class SigningKeyRotated(Payload, frozen=True, kw_only=True):
    """A new token-signing key signs from now on; ``public_jwk`` is its public half.

    ``key_ops`` is a JSON array; events recorded before that was fixed hold its Python repr as a string.
    """

    kid: str
    algorithm: str
    previous_kid: str | None
    public_jwk: dict[str, str | list[str]]


def denial_stream_id(event_id: str) -> str:
    return f"denied-{event_id}"
