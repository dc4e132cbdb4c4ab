"""Audit verification: re-derive every chain and checkpoint from raw rows and name what is wrong.

Pure: it is fed rows ``(position, tenant_id, stream_id, version, body, hash)`` in position
order, trusts nothing but the bytes and the audit public keys, and reports the first broken
link (stream, version, position, what) plus every further problem up to a limit.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature

from domain.audit import LEDGER_STREAM, LEDGER_TENANT, CheckpointRecorded, checkpoint_statement
from domain.chain import chain_hash, genesis_hash, heads_root

MAX_PROBLEMS = 100


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    detail: str
    position: int | None = None
    tenant_id: str | None = None
    stream_id: str | None = None
    version: int | None = None


class VerifyReport(msgspec.Struct, kw_only=True):
    ok: bool
    events: int
    streams: int
    checkpoints: int
    last_position: int
    sealed_position: int
    unsealed_events: int
    trust_anchor: str
    witness: str = ""  # where the witness came from ("" for a verifier given none to say)
    first_problem: Problem | None
    problems: list[Problem]


class _Fields(msgspec.Struct):
    tenant_id: str
    stream_id: str
    version: int
    global_position: int | None
    prev_hash: str
    type: str


class _CheckpointEvent(msgspec.Struct):
    payload: CheckpointRecorded


class _KeysEvent(msgspec.Struct):
    payload: dict[str, Any]


_fields = msgspec.json.Decoder(_Fields)
_checkpoint = msgspec.json.Decoder(_CheckpointEvent)
_keys = msgspec.json.Decoder(_KeysEvent)


def _at(position: int, tenant_id: str, stream_id: str, version: int) -> dict[str, Any]:
    """Where a problem is: built only when there is one."""
    return {"position": position, "tenant_id": tenant_id, "stream_id": stream_id, "version": version}


class ChainVerifier:
    """Feed rows with :meth:`feed`, then :meth:`finish`.

    ``trusted_keys`` maps key id to a cryptography public key; every checkpoint must carry a
    valid signature by each. Without it the keys registered in the ledger are used and the
    report says so. ``witness`` is what was recorded outside the store (high-water position,
    last checkpoint) to detect a truncated tail; None: no witness was found, which a store with events
    reports as a problem (whoever can cut the log's tail can delete the witness beside it).
    """

    def __init__(self, trusted_keys: dict[str, Any] | None = None, witness: dict | None = None,
                 load_public_key=None, *, trust_anchor: str | None = None, witness_source: str = "") -> None:
        self.trusted = trusted_keys
        self.trust_anchor = trust_anchor or ("configured audit keys" if trusted_keys
                                             else "keys registered in the ledger (no anchor)")
        self.witness_found = witness is not None
        self.witness = witness or {}
        self.witness_source = witness_source
        self._load_public_key = load_public_key
        self.heads: dict[tuple[str, str], tuple[int, str]] = {}
        self.pending: list[tuple[int, tuple[str, str], int, str]] = []
        self.problems: list[Problem] = []
        self.events = 0
        self.expected_position = 1
        self.checkpoints = 0
        self.last_sequence = 0
        self.sealed_to = 0
        self.last_position = 0
        self.keys_seen = False

    def _problem(self, kind: str, detail: str, **where: Any) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(kind=kind, detail=detail, **where))

    def feed(self, rows: Iterable[tuple]) -> None:
        # The hot loop of `csm audit verify`: every check below runs for every row, but the
        # location of a problem is only built when there is one, and the witness is read once.
        heads, pending, problem, decode = self.heads, self.pending, self._problem, _fields.decode
        witness_cp = self.witness.get("checkpoint") or {}
        witness_position = witness_cp.get("position")
        for position, tenant_id, stream_id, version, body, stored_hash in rows:
            self.events += 1
            self.last_position = position
            expected_position = self.expected_position
            if position != expected_position:
                if position > expected_position:  # the gap is the problem, not the row after it
                    problem("missing_events", f"global positions {expected_position}..{position - 1} are missing",
                            position=expected_position)
                else:
                    problem("position_out_of_order", f"position {position} follows {expected_position - 1}",
                            **_at(position, tenant_id, stream_id, version))
            self.expected_position = position + 1
            key = (tenant_id, stream_id)
            if not isinstance(body, bytes):  # a hand-edited row may come back as TEXT
                body = str(body).encode()
            try:
                f = decode(body)
            except ValueError as exc:  # msgspec.DecodeError, or bytes that are not UTF-8
                problem("undecodable_event", f"event body is not a valid envelope: {exc}",
                        **_at(position, tenant_id, stream_id, version))
                heads[key] = (version, stored_hash)
                continue
            if (f.global_position != position or f.version != version or f.stream_id != stream_id
                    or f.tenant_id != tenant_id):
                problem("row_does_not_match_body",
                        f"stored columns say {tenant_id}/{stream_id} v{version} @{position}, the hashed body says "
                        f"{f.tenant_id}/{f.stream_id} v{f.version} @{f.global_position}",
                        **_at(position, tenant_id, stream_id, version))
            head = heads.get(key)
            if head is None:
                expected_version, expected_prev = 1, genesis_hash(tenant_id, stream_id)
            else:
                expected_version, expected_prev = head[0] + 1, head[1]
            if f.version != expected_version:
                problem("version_gap", f"expected version {expected_version}, found {f.version}: an event was "
                        "deleted, inserted or reordered", **_at(position, tenant_id, stream_id, version))
            if f.prev_hash != expected_prev:
                problem("broken_link", "prev_hash does not equal the hash of the stream's previous event",
                        **_at(position, tenant_id, stream_id, version))
            try:
                edited = chain_hash(f.prev_hash, body) != stored_hash
            except ValueError:  # prev_hash is not even hex
                edited = True
            if edited:
                problem("hash_mismatch", "the event's bytes do not hash to its stored hash: it was edited",
                        **_at(position, tenant_id, stream_id, version))
            heads[key] = (f.version, stored_hash)
            if stream_id == LEDGER_STREAM and tenant_id == LEDGER_TENANT:
                where = _at(position, tenant_id, stream_id, version)
                try:
                    self._ledger_event(f, body, stored_hash, where)
                except (ValueError, KeyError, TypeError) as exc:  # an edited ledger event may not decode
                    problem("undecodable_event", f"audit ledger event cannot be read: {exc}", **where)
            else:
                pending.append((position, key, f.version, stored_hash))
            if position == witness_position and witness_cp.get("hash") != stored_hash:
                problem("witness_mismatch", "the checkpoint recorded by the witness has a different hash here",
                        **_at(position, tenant_id, stream_id, version))

    def _ledger_event(self, f: _Fields, body: bytes, stored_hash: str, where: dict) -> None:
        if f.type == "audit.keys_registered":
            self.keys_seen = True
            keys = _keys.decode(body).payload.get("keys", [])
            registered = {k["key_id"]: k for k in keys}
            if self.trusted is None and self._load_public_key is not None:
                self.trusted = {kid: self._load_public_key(k["public_key_pem"]) for kid, k in registered.items()}
            elif self.trusted is not None and set(registered) != set(self.trusted):
                self._problem("untrusted_audit_keys", "the ledger registers keys other than the configured audit "
                              f"keys: {sorted(registered)}", **where)
        elif f.type == "audit.checkpoint":
            self._checkpoint(_checkpoint.decode(body).payload, f.prev_hash, where)

    def _checkpoint(self, cp: CheckpointRecorded, prev_ledger_hash: str, where: dict) -> None:
        problem = self._problem
        label = f"checkpoint {cp.sequence}"
        if cp.sequence != self.last_sequence + 1:
            problem("checkpoint_sequence", f"{label} follows checkpoint {self.last_sequence}", **where)
        if cp.from_position != self.sealed_to or not cp.from_position < cp.to_position < where["position"]:
            problem("checkpoint_range", f"{label} covers ({cp.from_position}, {cp.to_position}], expected to start "
                    f"at {self.sealed_to} and end before its own position", **where)
        window = [entry for entry in self.pending if entry[0] <= cp.to_position]
        self.pending[:] = [entry for entry in self.pending if entry[0] > cp.to_position]  # feed() holds this list
        actual = {key: (version, h) for _, key, version, h in window}
        committed = {(h.tenant_id, h.stream_id): (h.version, h.hash) for h in cp.heads}
        for key in sorted(committed.keys() | actual.keys()):
            want, have = committed.get(key), actual.get(key)
            if want == have:
                continue
            if have is None:
                detail = (f"{label} commits to {key[1]} at version {want[0]}, but the store has no event of that "
                          "stream in its range: events or the whole stream were deleted")
            elif want is None:
                detail = f"{key[1]} was written in {label}'s range but the checkpoint does not commit to it"
            else:
                detail = (f"{label} commits to {key[1]} at version {want[0]} hash {want[1][:16]}…, "
                          f"the store has version {have[0]} hash {have[1][:16]}…")
            problem("checkpoint_heads", detail, position=where["position"], tenant_id=key[0], stream_id=key[1],
                    version=want[0] if want else have[0])
        root = heads_root([(h.tenant_id, h.stream_id, h.version, h.hash) for h in cp.heads])
        if root != cp.merkle_root:
            problem("checkpoint_root", f"{label}'s Merkle root does not match its heads", **where)
        if prev_ledger_hash != cp.prev_ledger_hash:
            problem("checkpoint_link", f"{label} names a different previous ledger hash", **where)
        statement = checkpoint_statement(cp.sequence, cp.from_position, cp.to_position, cp.merkle_root,
                                         cp.prev_ledger_hash)
        for key_id, public_key in (self.trusted or {}).items():
            signature = cp.signatures.get(key_id)
            try:
                if signature is None:
                    raise InvalidSignature
                public_key.verify(base64.b64decode(signature), statement)
            except (InvalidSignature, ValueError, TypeError):
                problem("checkpoint_signature", f"{label} lacks a valid signature by audit key {key_id}", **where)
        if not self.trusted:
            problem("no_audit_keys", f"{label} cannot be checked: no audit keys are known", **where)
        self.checkpoints += 1
        self.last_sequence = cp.sequence
        self.sealed_to = cp.to_position

    def finish(self) -> VerifyReport:
        high_water = self.witness.get("high_water", 0)
        if high_water > self.last_position:
            self._problem("truncated", f"the store ends at position {self.last_position}, but the witness saw "
                          f"position {high_water}: the tail was removed", position=self.last_position + 1)
        witness_cp = self.witness.get("checkpoint")
        if witness_cp and witness_cp.get("position", 0) > self.last_position:
            self._problem("truncated", f"the witness recorded a checkpoint at position {witness_cp['position']}, "
                          "which the store no longer has", position=witness_cp["position"])
        if self.events and not self.keys_seen:
            self._problem("ledger_missing", "the audit ledger's key registration is missing")
        if self.events and not self.witness_found:
            self._problem("witness_missing", "no audit witness was found, so a removed tail of the log cannot be "
                          "detected: verify against a copy of the witness kept outside the data directory")
        return VerifyReport(
            ok=not self.problems, events=self.events, streams=len(self.heads), checkpoints=self.checkpoints,
            last_position=self.last_position, sealed_position=self.sealed_to, unsealed_events=len(self.pending),
            trust_anchor=self.trust_anchor, witness=self.witness_source, first_problem=self.problems[0] if self.problems else None,
            problems=self.problems)
