"""Vault keys that no event names (orphans), KEK rotation and re-wrapping, and the events that record them.

A command puts a server-generated private key, or a webhook or TOTP secret, in the key vault before it appends
the event that names it, so that no event ever names a lost key. A command that then fails to append (it lost
its race too often, its process died) leaves a key that no event names: an orphan, which nothing can ever read
again through the service, yet which stays in the vault. ``orphans`` picks them out; only keys stored before a
cutoff qualify, so that a command still between its put and its append keeps its key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import re

import msgspec

from domain.errors import DomainError
from domain.events import SYSTEM_TENANT, Payload, event

STREAM_ID = "vault-sweeps"
KEK_STREAM_ID = "vault-keks"  # rotations, re-wraps and retirements of key-encryption keys: every tenant's
STREAM_TYPE = "vault"
TENANT = SYSTEM_TENANT
PROVIDERS = ("local", "hybrid", "pkcs11")
TOKEN_LABEL_PREFIX = "csm-kek:"
_FILE_KEK = re.compile(r"(local|hybrid):[0-9a-f]{32}")
_TOKEN_KEK = re.compile(r"pkcs11:([^:\s]{1,64}):((?:[0-9a-f]{2}){1,64}):csm-kek:(.+)", re.DOTALL)


class StoredKey(msgspec.Struct, frozen=True, kw_only=True):
    """What the vault says of a key it holds: never the material."""

    key_id: str
    tenant_id: str
    purpose: str
    created_at: datetime


@event("vault.orphans_deleted")
class OrphanKeysDeleted(Payload, frozen=True, kw_only=True):
    """Keys stored before ``stored_before`` that no event named, deleted from the vault after this was recorded."""

    key_ids: list[str]
    stored_before: datetime
    events_read: int


def strings_in(value: Any) -> Iterator[str]:
    """Every string anywhere in an event payload: its values, nested at any depth, and its keys."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def drop_named(candidates: dict[str, StoredKey], payloads: Iterable[Any]) -> None:
    """Take out of ``candidates`` (by key id) every key that a payload names: any string in it equal to the id."""
    for payload in payloads:
        if not candidates:
            return
        for text in strings_in(payload):
            candidates.pop(text, None)


def oldest_first(keys: Iterable[StoredKey]) -> list[StoredKey]:
    return sorted(keys, key=lambda key: (key.created_at, key.key_id))


def orphans(stored: Iterable[StoredKey], payloads: Iterable[Any], stored_before: datetime) -> list[StoredKey]:
    """The keys stored before ``stored_before`` that no payload names, oldest first."""
    candidates = {key.key_id: key for key in stored if key.created_at < stored_before}
    drop_named(candidates, payloads)
    return oldest_first(candidates.values())


# key-encryption keys ---------------------------------------------------------------------------

class KekInUse(DomainError):
    """A KEK cannot be retired (it wraps new keys, or rows name it), or is not retired yet."""

    status = 409

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail, field="kek_id")


class KekRef(msgspec.Struct, frozen=True, kw_only=True):
    """What a ``kek_id`` says: its provider, and for a token key, the token serial, CKA_ID and tenant."""

    provider: str
    kek_id: str
    serial: str | None = None
    key_id: str | None = None  # hex
    tenant: str | None = None


def parse_kek_id(text: str) -> KekRef:
    """``local:<32 hex>``, ``hybrid:<32 hex>`` or ``pkcs11:<serial>:<CKA_ID hex>:csm-kek:<tenant>``; anything
    else is refused (``invalid_kek_id``, field ``kek_id``)."""
    if not isinstance(text, str) or len(text) > 512:
        raise DomainError("invalid_kek_id", "a KEK id is a string of at most 512 characters", field="kek_id")
    if _FILE_KEK.fullmatch(text):
        return KekRef(provider=text.split(":", 1)[0], kek_id=text)
    token = _TOKEN_KEK.fullmatch(text)
    if token and token[3].isprintable():
        return KekRef(provider="pkcs11", kek_id=text, serial=token[1], key_id=token[2], tenant=token[3])
    raise DomainError("invalid_kek_id", f"{text[:80]!r} is not a KEK id: local:<32 hex>, hybrid:<32 hex> or "
                      "pkcs11:<token serial>:<key id hex>:csm-kek:<tenant>", field="kek_id")


def format_kek_id(ref: KekRef) -> str:
    """The ``kek_id`` of a reference's parts (the inverse of ``parse_kek_id``)."""
    if ref.provider == "pkcs11":
        return f"pkcs11:{ref.serial}:{ref.key_id}:{TOKEN_LABEL_PREFIX}{ref.tenant}"
    return ref.kek_id


class NewKek(msgspec.Struct, frozen=True, kw_only=True):
    """A KEK version rotation made: for one tenant, or (``tenant`` None) every tenant of a key-file provider."""

    provider: str
    kek_id: str
    tenant: str | None
    replaces: list[str]  # the KEKs that wrapped the scope's new keys until now


class KekUsage(msgspec.Struct, frozen=True, kw_only=True):
    """One KEK as the vault sees it: rows it wraps (per tenant), whom it wraps new keys for, retired or not."""

    provider: str
    kek_id: str
    rows: dict[str, int]  # tenant -> rows whose data key it wraps
    current_for: list[str]  # tenants ("*": every tenant without a KEK of its own) whose new keys it wraps
    retired_at: datetime | None = None
    available: bool | None = None  # usable right now (its file, or its object on a token that logs in); None: retired
    unavailable_reason: str | None = None  # why not, one line: never a PIN or key material

    @property
    def needed(self) -> bool:
        """Whether it must be usable: it wraps someone's new keys or still wraps stored rows."""
        return self.retired_at is None and bool(self.current_for or any(self.rows.values()))


class RewrapCounts(msgspec.Struct, frozen=True, kw_only=True):
    """What a re-wrap did. ``failed`` lists key ids (never material) whose old KEK could not unwrap them."""

    to_kek_ids: list[str]
    from_kek_ids: list[str]
    rewrapped: int = 0
    changed: int = 0  # changed or deleted by someone else between read and update: left as they were
    failed: list[str] = msgspec.field(default_factory=list)
    remaining: int = 0  # rows of the scope not under the target KEK when the run ended
    stopped: str | None = None  # why the run ended early (the target KEK did not answer), or None


@event("vault.kek_rotated")
class KekRotated(Payload, frozen=True, kw_only=True):
    """A new KEK version now wraps new data keys of ``tenant`` (None: every tenant) for ``provider``."""

    provider: str
    kek_id: str
    tenant: str | None
    replaces: list[str]


@event("vault.rewrap_started")
class RewrapStarted(Payload, frozen=True, kw_only=True):
    """A re-wrap of ``tenant``'s rows (None: every tenant's) under ``provider``'s current KEKs began."""

    provider: str
    tenant: str | None
    to_kek_ids: list[str]
    from_kek_ids: list[str]
    rows: int  # rows not under their target KEK when it began


@event("vault.rewrap_completed")
class RewrapCompleted(Payload, frozen=True, kw_only=True):
    """The re-wrap ended: counts only (the key ids that failed are in the command's answer, not here)."""

    provider: str
    tenant: str | None
    to_kek_ids: list[str]
    from_kek_ids: list[str]
    rewrapped: int
    changed: int
    failed: int
    remaining: int
    stopped: str | None


@event("vault.kek_retired")
class KekRetired(Payload, frozen=True, kw_only=True):
    """No row names the KEK and it wraps no new key: it is destroyed (file deleted, token object destroyed)."""

    provider: str
    kek_id: str
