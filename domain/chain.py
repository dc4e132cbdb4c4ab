"""Hash chains and Merkle roots: the arithmetic of the tamper-evident audit trail.

An event's canonical body is its envelope without ``hash``, encoded as compact JSON with
keys sorted at every level (msgspec ``order="sorted"``). Its hash is
``SHA-384(prev_hash_bytes || body)``; the first event of a stream chains from
:func:`genesis_hash`. Checkpoints commit to stream heads with an RFC 6962-style Merkle tree
over SHA-384. ``docs/events.md`` specifies all of this for independent verifiers.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from domain.events import EventEnvelope

HASH_HEX_LEN = 96  # SHA-384, hex
_canonical = msgspec.json.Encoder(order="sorted")


def canonical_bytes(value: Any) -> bytes:
    """Compact JSON, keys sorted at every level, UTF-8, no insignificant whitespace."""
    return _canonical.encode(value)


def envelope_body(envelope: EventEnvelope) -> bytes:
    """The bytes that are hashed and stored: the envelope without its ``hash``."""
    if envelope.hash:
        envelope = msgspec.structs.replace(envelope, hash="")
    return _canonical.encode(envelope)


def genesis_hash(tenant_id: str, stream_id: str) -> str:
    """The per-stream value the first event chains from."""
    material = b"csm/v1/genesis\x00" + tenant_id.encode() + b"\x00" + stream_id.encode()
    return hashlib.sha384(material).hexdigest()


def chain_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha384(bytes.fromhex(prev_hash) + body).hexdigest()


def merkle_leaf(tenant_id: str, stream_id: str, version: int, head_hash: str) -> bytes:
    return hashlib.sha384(b"\x00" + canonical_bytes([tenant_id, stream_id, version, head_hash])).digest()


def merkle_root(leaves: list[bytes]) -> str:
    """RFC 6962 Merkle tree hash over pre-hashed leaves (split at the largest power of two)."""
    if not leaves:
        return hashlib.sha384(b"").hexdigest()
    return _mth(leaves).hex()


def _mth(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha384(b"\x01" + _mth(leaves[:split]) + _mth(leaves[split:])).digest()


def heads_root(heads: list[tuple[str, str, int, str]]) -> str:
    """Merkle root over stream heads ``(tenant_id, stream_id, version, hash)``, sorted."""
    return merkle_root([merkle_leaf(*head) for head in sorted(heads)])
