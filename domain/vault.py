"""Vault keys that no event names (orphans), and the event that records their deletion.

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

import msgspec

from domain.events import SYSTEM_TENANT, Payload, event

STREAM_ID = "vault-sweeps"
STREAM_TYPE = "vault"
TENANT = SYSTEM_TENANT


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
