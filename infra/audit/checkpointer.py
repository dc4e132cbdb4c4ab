"""Writes signed checkpoints to the audit ledger: on a timer, after many events, and on shutdown."""

from __future__ import annotations

import asyncio
import logging

from commands.ids import uuid7
from commands.ports import AppendRequest, NewEvent
from commands.runtime import Clock, rfc3339
from domain.audit import (LEDGER_STREAM, LEDGER_STREAM_TYPE, LEDGER_TENANT, AuditKeysRegistered,
                          CheckpointRecorded, StreamHead, checkpoint_statement)
from domain.chain import heads_root
from domain.errors import WrongExpectedVersion
from domain.events import Actor, Payload, decode_payload, to_payload_dict
from infra import telemetry
from infra.audit.keys import AuditSigner
from infra.eventstore.sqlite import SQLiteEventStore

log = logging.getLogger(__name__)
SYSTEM_ACTOR = Actor(principal="system:audit", auth_method="internal")


class Checkpointer:
    def __init__(self, store: SQLiteEventStore, signer: AuditSigner, clock: Clock, *, interval: float = 5.0,
                 max_window: int = 50_000) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock
        self.interval = interval
        self.max_window = max_window

    def _append(self, payload: Payload, expected_version: int) -> None:
        event = NewEvent(event_id=uuid7(), type=payload.event_type, schema_version=payload.schema_version,
                         occurred_at=rfc3339(self.clock.now()), actor=SYSTEM_ACTOR, correlation_id=None,
                         causation_id=None, payload=to_payload_dict(payload))
        self.store.append_blocking(AppendRequest(tenant_id=LEDGER_TENANT, stream_id=LEDGER_STREAM,
                                                 stream_type=LEDGER_STREAM_TYPE, expected_version=expected_version,
                                                 events=[event]))

    def register_keys(self) -> None:
        """Open the ledger with the audit public keys (once, at init)."""
        if self.store.stream_version_sync(LEDGER_TENANT, LEDGER_STREAM) == 0:
            try:
                self._append(AuditKeysRegistered(keys=self.signer.public_keys()), 0)
            except WrongExpectedVersion:
                pass

    def checkpoint(self) -> CheckpointRecorded | None:
        """Seal everything written since the last checkpoint (at most ``max_window`` events)."""
        version, prev, sequence, sealed_to = self._last_checkpoint()
        heads: dict[tuple[str, str], tuple[int, str]] = {}
        to_position = sealed_to
        limit = sealed_to + self.max_window
        while to_position < limit:
            rows = self.store.read_raw(to_position, min(10_000, limit - to_position))
            if not rows:
                break
            for row in rows:
                if row.stream_id != LEDGER_STREAM or row.tenant_id != LEDGER_TENANT:
                    heads[(row.tenant_id, row.stream_id)] = (row.version, row.hash)
            to_position = rows[-1].position
        if not heads:
            return None
        head_list = [StreamHead(t, s, v, h) for (t, s), (v, h) in sorted(heads.items())]
        root = heads_root([(h.tenant_id, h.stream_id, h.version, h.hash) for h in head_list])
        statement = checkpoint_statement(sequence + 1, sealed_to, to_position, root, prev)
        payload = CheckpointRecorded(sequence=sequence + 1, from_position=sealed_to, to_position=to_position,
                                     heads=head_list, merkle_root=root, prev_ledger_hash=prev,
                                     signed_at=rfc3339(self.clock.now()), signatures=self.signer.sign(statement))
        try:
            self._append(payload, version)
        except WrongExpectedVersion:  # another process sealed first; the next run picks up from there
            return None
        return payload

    def _last_checkpoint(self) -> tuple[int, str, int, int]:
        """The ledger's version and head hash, and the last checkpoint's sequence and end (0, 0 if none).

        Reads the ledger from its end, a few events at a time: every checkpoint lists the heads it
        sealed, so the whole ledger grows with the log and reading it all on every timer tick would
        cost more and more.
        """
        version = self.store.stream_version_sync(LEDGER_TENANT, LEDGER_STREAM)
        if version == 0:
            raise RuntimeError("the audit ledger has no key registration; run `csm init`")
        prev, window, upper = None, 4, version
        while upper >= 1:
            lower = max(1, upper - window + 1)
            envelopes = [e for e in self.store.read_stream_sync(LEDGER_TENANT, LEDGER_STREAM, lower)
                         if e.version <= upper]
            if prev is None:
                if not envelopes or envelopes[-1].version != version:
                    raise RuntimeError("the audit ledger changed while it was read; retry")
                prev = envelopes[-1].hash
            for envelope in reversed(envelopes):
                if envelope.type == "audit.checkpoint":
                    last = decode_payload(envelope)
                    return version, prev, last.sequence, last.to_position
            upper, window = lower - 1, window * 4
        return version, prev, 0, 0

    def seal_all(self) -> int:
        """Checkpoint until nothing is left unsealed. Returns checkpoints written."""
        written = 0
        while self.checkpoint() is not None:
            written += 1
        return written

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if await asyncio.to_thread(self.seal_all):
                    telemetry.CHECKPOINTS.labels("sealed").inc()
            except asyncio.CancelledError:
                raise
            except Exception:
                telemetry.CHECKPOINTS.labels("failed").inc()
                log.exception("checkpoint failed; will retry")
