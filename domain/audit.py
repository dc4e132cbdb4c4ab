"""The audit ledger: signed checkpoints that commit to every stream head.

The ledger is one stream in the system tenant. Each checkpoint lists the heads of every
stream written in ``(from_position, to_position]`` and their Merkle root, and is signed
(Ed25519 and ML-DSA-65) over :func:`checkpoint_statement`, which also binds the previous
ledger hash, so checkpoints form a signed chain of their own.
"""

from __future__ import annotations

import msgspec

from domain.chain import canonical_bytes
from domain.events import SYSTEM_TENANT, Payload, event

LEDGER_STREAM = "audit-ledger"
LEDGER_STREAM_TYPE = "audit_ledger"
LEDGER_TENANT = SYSTEM_TENANT


class StreamHead(msgspec.Struct, frozen=True, array_like=True):
    tenant_id: str
    stream_id: str
    version: int
    hash: str


class AuditKey(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    algorithm: str  # "ed25519" | "ml-dsa-65"
    public_key_pem: str


@event("audit.keys_registered")
class AuditKeysRegistered(Payload, frozen=True, kw_only=True):
    keys: list[AuditKey]


@event("audit.checkpoint")
class CheckpointRecorded(Payload, frozen=True, kw_only=True):
    sequence: int
    from_position: int
    to_position: int
    heads: list[StreamHead]
    merkle_root: str
    prev_ledger_hash: str
    signed_at: str
    signatures: dict[str, str]  # key_id -> base64 signature over checkpoint_statement


def checkpoint_statement(
    sequence: int, from_position: int, to_position: int, merkle_root: str, prev_ledger_hash: str
) -> bytes:
    """The exact bytes every audit key signs for a checkpoint."""
    return canonical_bytes(
        {
            "domain": "csm/v1/checkpoint",
            "sequence": sequence,
            "from_position": from_position,
            "to_position": to_position,
            "merkle_root": merkle_root,
            "prev_ledger_hash": prev_ledger_hash,
        }
    )
