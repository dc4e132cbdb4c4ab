#!/usr/bin/env python3
"""Reference verifier for a Cassandra Security Manager events.db, written from docs/events.md.

Standard library only (sqlite3, hashlib, json, base64): it deliberately imports nothing of
the project, so that it checks the specification rather than the service's own code.

    python3 tools/verify_chain.py DATA/events.db [--witness FILE] [--anchor FILE] [--json]

Re-verifies every stream's hash chain, the global positions, and every checkpoint's range,
heads and Merkle root (docs/events.md sections 3-7). Signatures are NOT verified: the
standard library has no Ed25519 or ML-DSA; it checks that each checkpoint carries a
signature for every audit key, and that each key id matches its public key. Use
``csm audit verify`` for the signatures.

A database in a directory this process cannot write (a backup on read-only media) is read with
SQLite's immutable mode (``mode=ro&immutable=1``: no locks, no ``-shm``), which a WAL-mode file
there needs. That is only correct while nothing writes the file, so it is refused, in one line, while
a ``-wal`` or ``-journal`` beside it holds data or a csm process holds ``run/data-dir.lock``; the
lock is held exclusively (read-only descriptor) while the file is read.

Exit status: 0 the store verifies, 1 problems were found, 2 the store cannot be read.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no flock, so no lock to look at
    fcntl = None

LEDGER = ("_system", "audit-ledger")
ENVELOPE_FIELDS = {
    "event_id": str, "stream_id": str, "stream_type": str, "version": int, "global_position": int,
    "tenant_id": str, "type": str, "schema_version": int, "occurred_at": str, "actor": dict,
    "correlation_id": (str, type(None)), "causation_id": (str, type(None)), "payload": dict, "prev_hash": str,
}
MAX_PROBLEMS = 100


# docs/events.md section 3: canonical JSON ------------------------------------------------------

def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# section 4: the chain ------------------------------------------------------------------------------

def genesis(tenant_id: str, stream_id: str) -> str:
    return hashlib.sha384(b"csm/v1/genesis\x00" + tenant_id.encode() + b"\x00" + stream_id.encode()).hexdigest()


def event_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha384(bytes.fromhex(prev_hash) + body).hexdigest()


# section 6.3: the Merkle tree ----------------------------------------------------------------------

def leaf(tenant_id: str, stream_id: str, version: int, head_hash: str) -> bytes:
    return hashlib.sha384(b"\x00" + canonical([tenant_id, stream_id, version, head_hash])).digest()


def tree_hash(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha384(b"\x01" + tree_hash(leaves[:k]) + tree_hash(leaves[k:])).digest()


def merkle_root(heads: list[tuple[str, str, int, str]]) -> str:
    if not heads:
        return hashlib.sha384(b"").hexdigest()
    return tree_hash([leaf(*head) for head in sorted(heads)]).hex()


# section 6.1: key ids ------------------------------------------------------------------------------

def spki_key_id(algorithm: str, pem: str) -> str:
    lines = [line.strip() for line in pem.strip().splitlines()]
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN") or not lines[-1].startswith("-----END"):
        raise ValueError("not a PEM block")
    der = base64.b64decode("".join(lines[1:-1]), validate=True)
    return f"{algorithm}:{hashlib.sha256(der).hexdigest()[:16]}"


# section 7: verification ---------------------------------------------------------------------------

class Verifier:
    def __init__(self, witness: dict | None, anchor: list[dict] | None) -> None:
        self.witness = witness or {}
        self.witness_found = witness is not None
        self.anchor_ids = {entry["key_id"] for entry in anchor} if anchor is not None else None
        self.key_ids: set[str] | None = set(self.anchor_ids) if self.anchor_ids is not None else None
        self.heads: dict[tuple[str, str], tuple[int, str]] = {}
        self.window: dict[tuple[str, str], tuple[int, str, int]] = {}  # unsealed: key -> (version, hash, position)
        self.unsealed: list[tuple[int, tuple[str, str], int, str]] = []
        self.problems: list[dict] = []
        self.events = 0
        self.expected_position = 1
        self.last_position = 0
        self.checkpoints = 0
        self.last_sequence = 0
        self.sealed_to = 0
        self.keys_seen = False

    def problem(self, kind: str, detail: str, position=None, tenant_id=None, stream_id=None, version=None):
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append({"kind": kind, "detail": detail, "position": position, "tenant_id": tenant_id,
                                  "stream_id": stream_id, "version": version})

    def row(self, position, tenant_id, stream_id, version, body, stored_hash) -> None:
        self.events += 1
        self.last_position = position
        where = {"position": position, "tenant_id": tenant_id, "stream_id": stream_id, "version": version}
        # 1. contiguous positions
        if position > self.expected_position:
            self.problem("missing_events", f"positions {self.expected_position}..{position - 1} are missing",
                         position=self.expected_position)
        elif position < self.expected_position:
            self.problem("position_out_of_order", f"position {position} follows {self.expected_position - 1}",
                         **where)
        self.expected_position = position + 1
        key = (tenant_id, stream_id)
        if isinstance(body, str):
            body = body.encode("utf-8")
        # 2. the body is an envelope
        try:
            envelope = json.loads(body.decode("utf-8"))
            if not isinstance(envelope, dict):
                raise ValueError("not a JSON object")
            for name, kind in ENVELOPE_FIELDS.items():
                if name not in envelope:
                    raise ValueError(f"field {name!r} is missing")
                if not isinstance(envelope[name], kind) or (kind is int and isinstance(envelope[name], bool)):
                    raise ValueError(f"field {name!r} has the wrong type")
            if "hash" in envelope:
                raise ValueError("the body contains 'hash'")
        except (ValueError, UnicodeDecodeError) as exc:
            self.problem("undecodable_event", f"body is not a valid envelope: {exc}", **where)
            self.heads[key] = (version, stored_hash)
            return
        # 3. the row's columns are the body's
        if (envelope["tenant_id"], envelope["stream_id"], envelope["version"], envelope["global_position"]) != \
                (tenant_id, stream_id, version, position):
            self.problem("row_does_not_match_body", "the row's columns differ from the hashed body", **where)
        # 4, 5. the chain
        head = self.heads.get(key)
        expected_version, expected_prev = (head[0] + 1, head[1]) if head else (1, genesis(tenant_id, stream_id))
        if envelope["version"] != expected_version:
            self.problem("version_gap", f"expected version {expected_version}, found {envelope['version']}", **where)
        if envelope["prev_hash"] != expected_prev:
            self.problem("broken_link", "prev_hash is not the hash of the stream's previous event", **where)
        # 6. the hash of the stored bytes
        try:
            recomputed = event_hash(envelope["prev_hash"], body)
        except ValueError:
            recomputed = None
        if recomputed != stored_hash:
            self.problem("hash_mismatch", "the stored bytes do not hash to the stored hash", **where)
        self.heads[key] = (envelope["version"], stored_hash)
        # 7. the ledger
        if key == LEDGER:
            try:
                if envelope["type"] == "audit.keys_registered":
                    self.keys_registered(envelope["payload"], where)
                elif envelope["type"] == "audit.checkpoint":
                    self.checkpoint(envelope["payload"], envelope["prev_hash"], where)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.problem("undecodable_event", f"ledger payload cannot be read: {exc!r}", **where)
        else:
            self.unsealed.append((position, key, envelope["version"], stored_hash))
        # 8. the witness's checkpoint
        recorded = self.witness.get("checkpoint")
        if recorded and recorded.get("position") == position and recorded.get("hash") != stored_hash:
            self.problem("witness_mismatch", "the witness recorded another hash for this checkpoint", **where)

    def keys_registered(self, payload: dict, where: dict) -> None:
        self.keys_seen = True
        registered = set()
        for key in payload["keys"]:
            registered.add(key["key_id"])
            if spki_key_id(key["algorithm"], key["public_key_pem"]) != key["key_id"]:
                self.problem("untrusted_audit_keys", f"key id {key['key_id']} does not match its public key", **where)
        if self.anchor_ids is None:
            self.key_ids = registered
        elif registered != self.anchor_ids:
            self.problem("untrusted_audit_keys", f"the ledger registers {sorted(registered)}, the anchor has "
                         f"{sorted(self.anchor_ids)}", **where)

    def checkpoint(self, cp: dict, own_prev_hash: str, where: dict) -> None:
        label = f"checkpoint {cp['sequence']}"
        if cp["sequence"] != self.last_sequence + 1:
            self.problem("checkpoint_sequence", f"{label} follows checkpoint {self.last_sequence}", **where)
        if cp["from_position"] != self.sealed_to or not cp["from_position"] < cp["to_position"] < where["position"]:
            self.problem("checkpoint_range", f"{label} covers ({cp['from_position']}, {cp['to_position']}]", **where)
        window = [entry for entry in self.unsealed if entry[0] <= cp["to_position"]]
        self.unsealed = [entry for entry in self.unsealed if entry[0] > cp["to_position"]]
        actual = {key: (version, digest) for _, key, version, digest in window}  # the last one wins
        heads = [(h[0], h[1], h[2], h[3]) for h in cp["heads"]]
        committed = {(t, s): (v, h) for t, s, v, h in heads}
        for key in sorted(committed.keys() | actual.keys()):
            if committed.get(key) != actual.get(key):
                have = actual.get(key)
                self.problem("checkpoint_heads", f"{label} commits to {committed.get(key)} for {key[1]}, the store "
                             f"has {have}", position=where["position"], tenant_id=key[0], stream_id=key[1],
                             version=(committed.get(key) or have)[0])
        if merkle_root(heads) != cp["merkle_root"]:
            self.problem("checkpoint_root", f"{label}'s Merkle root is not the root of its heads", **where)
        if cp["prev_ledger_hash"] != own_prev_hash:
            self.problem("checkpoint_link", f"{label} names a different previous ledger hash", **where)
        if not self.key_ids:
            self.problem("no_audit_keys", f"{label}: no audit keys are known", **where)
        for key_id in sorted(self.key_ids or ()):
            signature = cp["signatures"].get(key_id)
            try:
                valid_base64 = signature is not None and len(base64.b64decode(signature, validate=True)) > 0
            except ValueError:
                valid_base64 = False
            if not valid_base64:
                self.problem("checkpoint_signature", f"{label} has no signature by {key_id}", **where)
        self.checkpoints += 1
        self.last_sequence = cp["sequence"]
        self.sealed_to = cp["to_position"]

    def finish(self) -> dict:
        high_water = self.witness.get("high_water", 0)
        if high_water > self.last_position:
            self.problem("truncated", f"the store ends at {self.last_position}, the witness saw {high_water}",
                         position=self.last_position + 1)
        recorded = self.witness.get("checkpoint")
        if recorded and recorded.get("position", 0) > self.last_position:
            self.problem("truncated", f"the witness's checkpoint at {recorded['position']} is gone",
                         position=recorded["position"])
        if self.events and not self.keys_seen:
            self.problem("ledger_missing", "the ledger's key registration is missing")
        if self.events and not self.witness_found:
            self.problem("witness_missing", "no witness file: a removed tail cannot be detected (--witness FILE)")
        return {"ok": not self.problems, "events": self.events, "streams": len(self.heads),
                "checkpoints": self.checkpoints, "last_position": self.last_position,
                "sealed_position": self.sealed_to, "unsealed_events": len(self.unsealed),
                "signatures_verified": False, "problems": self.problems}


def read_json(path: Path | None, default):
    if path is None or not path.exists():
        return default
    return json.loads(path.read_text())


# docs/events.md section 6.5: the witness file ---------------------------------------------------

WITNESS_SLOT = 512


def read_witness(path: Path) -> dict | None:
    """The valid slot with the highest ``seq`` (its ``sha256`` is over its canonical JSON without that
    member), or a file of the earlier format (one object). None without a file; ValueError if nothing in it is
    valid."""
    if not path.exists():
        return None
    data = path.read_bytes()
    best_seq, best = -1, None
    for start in (0, WITNESS_SLOT):
        try:
            record = json.loads(data[start:start + WITNESS_SLOT].rstrip(b"\x00"))
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if "seq" not in record and "sha256" not in record:
            if start == 0 and best is None:
                best_seq, best = 0, record
            continue
        claimed = record.pop("sha256", None)
        if (isinstance(record.get("seq"), int) and claimed == hashlib.sha256(canonical(record)).hexdigest()
                and record["seq"] > best_seq):
            best_seq, best = record.pop("seq"), record
    if best is None:
        raise ValueError(f"{path} holds no valid witness record")
    return best


# reading a store this process cannot write ------------------------------------------------------

def writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def journal_with_data(events_db: Path) -> str | None:
    """Why ``events_db`` cannot be read as immutable because of a journal beside it, or None."""
    for suffix in ("-wal", "-journal"):
        side = events_db.with_name(events_db.name + suffix)
        size = side.stat().st_size if side.exists() else 0
        if size:
            return (f"{side} holds {size:,} bytes not yet in {events_db.name}: immutable mode (this process cannot "
                    f"write {events_db.parent}) would ignore them, and a process may still be writing there. Copy the "
                    "directory somewhere writable and verify the copy")
    return None


@contextlib.contextmanager
def unused(data_dir: Path):
    """Hold ``run/data-dir.lock`` exclusively while the block reads; ValueError if a csm process holds it."""
    lock = data_dir / "run" / "data-dir.lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # none: no csm process has used this directory (each creates it first)
        fd = None
    try:
        if fd is not None and fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ValueError(f"{data_dir} is in use by a running csm process (it holds {lock}): immutable mode "
                                 "is only correct while nothing writes the file. Verify a `csm backup` copy") from None
        yield
    finally:
        if fd is not None:
            os.close(fd)


def open_events(events_db: Path, immutable: bool) -> sqlite3.Connection:
    uri = f"{events_db.resolve().as_uri()}?mode=ro{'&immutable=1' if immutable else ''}"
    return sqlite3.connect(uri, uri=True)


def verify_file(events_db: Path, witness: dict | None, anchor: list[dict] | None) -> Verifier:
    data_dir = events_db.resolve().parent
    immutable = not writable(data_dir)
    if immutable and (refusal := journal_with_data(events_db)):
        raise ValueError(refusal)
    with unused(data_dir) if immutable else contextlib.nullcontext():
        conn = open_events(events_db, immutable)
        try:
            verifier = Verifier(witness, anchor)
            for row in conn.execute("SELECT position, tenant_id, stream_id, version, body, hash FROM events "
                                    "ORDER BY position"):
                verifier.row(*row)
        finally:
            conn.close()
    return verifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("events_db", type=Path)
    parser.add_argument("--witness", type=Path, help="audit-witness.json (default: beside the database)")
    parser.add_argument("--anchor", type=Path, help="audit-keys.pub.json (default: keys/ beside the database)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    data_dir = args.events_db.resolve().parent
    try:
        witness = read_witness(args.witness or data_dir / "audit-witness.json")
        anchor = read_json(args.anchor or data_dir / "keys" / "audit-keys.pub.json", None)
        if not args.events_db.exists():
            raise OSError(f"{args.events_db} does not exist")
        verifier = verify_file(args.events_db, witness, anchor)
    except (OSError, ValueError, sqlite3.Error) as exc:
        print(f"cannot verify {args.events_db}: {exc}", file=sys.stderr)
        return 2
    report = verifier.finish()
    report["trust_anchor"] = "anchor file" if anchor is not None else "keys registered in the ledger (no anchor)"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'OK' if report['ok'] else 'FAILED'}: {report['events']} events, {report['streams']} streams, "
              f"{report['checkpoints']} checkpoints, sealed to {report['sealed_position']} of "
              f"{report['last_position']} ({report['unsealed_events']} unsealed); trust: {report['trust_anchor']}; "
              "signatures present but not verified (no Ed25519/ML-DSA in the standard library)")
        for p in report["problems"]:
            where = " ".join(part for part in (
                f"@{p['position']}" if p["position"] is not None else "",
                f"{p['tenant_id']}/{p['stream_id']}" if p["stream_id"] is not None else "",
                f"v{p['version']}" if p["version"] is not None else "") if part)
            print(f"  {p['kind']}: {p['detail']} {where}".rstrip())
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
