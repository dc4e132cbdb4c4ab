"""``verify_store``: every row of an event store through the chain verifier, against the trust anchor and the witness.

Apart from the composition root (infra/bootstrap.py, whose ``Runtime.verify`` calls it) because `csm audit verify`,
`csm backup` and `csm restore` verify a store opened read-only, without the rest of the service.
"""

from __future__ import annotations

from pathlib import Path

from domain.verification import ChainVerifier, VerifyReport
from infra.audit.keys import anchor_keys, load_public_key, trusted_keys
from infra.audit.witness import find_witness
from infra.config import Settings
from infra.eventstore.sqlite import SQLiteEventStore


def verify_store(settings: Settings, store: SQLiteEventStore, progress=None, *, witness_file: Path | None = None,
                 anchor_file: Path | None = None) -> VerifyReport:
    """Walk every row of the store through the verifier against the trust anchor and the witness: the data
    directory's own, or copies kept elsewhere (``anchor_file``, ``witness_file``), which whoever can edit the data
    directory cannot change. Raises ValueError for an anchor file that is not one."""
    witness_path = witness_file or settings.witness_file
    anchor = anchor_keys(anchor_file) if anchor_file is not None else trusted_keys(settings.keys_dir)
    verifier = ChainVerifier(anchor, find_witness(witness_path), load_public_key=load_public_key,
                             trust_anchor=f"anchor file {anchor_file}" if anchor_file is not None else None,
                             witness_source=str(witness_path))
    head = store.head_position_sync()
    position = 0
    while rows := store.read_raw(position, 20_000):
        verifier.feed(rows)
        position = rows[-1].position
        if progress:
            progress(position, max(head, position))
    return verifier.finish()
