"""The audit witness file: the highest position ever committed and the last checkpoint, kept outside the store.

Cutting off the tail of the log leaves every remaining chain valid; the witness is what shows it
(docs/events.md 6.5). The store's writer raises it after every commit, so it is written in place:

- the file holds two **slots** of ``SLOT`` bytes, each one JSON line (padded with spaces) with a
  sequence number and a SHA-256 over its own content;
- an update overwrites the older slot (``pwrite`` on a descriptor kept open), so a write torn by a
  crash, or read half-done by a verifier, spoils only that slot: the other still holds the witness
  as it was one commit before;
- the witness is the valid slot with the higher sequence number.

Replacing the file (write a copy, rename it) after every commit cost about 180 µs, 120 µs of it CPU,
on this machine's ext4; a slot costs a read and a write on an open file. A file written by an earlier
version (one JSON object) is still read, and its first update writes the second slot, leaving the
old object in place until the update after (the file grows past it with zeros, which a reader ignores).

Writing is best effort: failing to write the witness loses no data, and is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SLOT = 512  # bytes per slot: a witness is about 250
_open: dict[Path, tuple[int, int]] = {}  # path -> (descriptor, inode) of the file as this process opened it
_lock = threading.Lock()  # one writer thread per store, but a process may hold several stores


def _digest(content: dict) -> str:
    """SHA-256 of the canonical JSON (docs/events.md section 3) of a slot's content."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()


def _slot_bytes(seq: int, witness: dict) -> bytes:
    content = {"seq": seq, **witness}
    line = json.dumps({**content, "sha256": _digest(content)}, sort_keys=True, separators=(",", ":")).encode()
    if len(line) > SLOT - 1:
        raise ValueError(f"witness of {len(line)} bytes does not fit a {SLOT}-byte slot")
    return line.ljust(SLOT - 1) + b"\n"


def parse(data: bytes) -> tuple[int, dict]:
    """(sequence number, witness) from a witness file's bytes: the valid slot with the higher sequence number,
    or a whole file in the earlier one-object format (sequence 0). (-1, {}) when nothing in it is valid."""
    best: tuple[int, dict] = (-1, {})
    for start in (0, SLOT):
        try:
            record = json.loads(data[start:start + SLOT].rstrip(b"\x00"))  # zeros: a file extended by a write
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if "seq" not in record and "sha256" not in record:  # the earlier format: one object, no slots
            if start == 0 and best[0] < 0:
                best = (0, {k: v for k, v in record.items() if k in ("high_water", "checkpoint")})
            continue
        claimed = record.pop("sha256", None)
        if isinstance(record.get("seq"), int) and claimed == _digest(record) and record["seq"] > best[0]:
            best = (record.pop("seq"), record)
    return best


def read_witness(path: Path) -> dict:
    """The witness ({} if there is none, or nothing in the file is valid)."""
    return find_witness(path) or {}


def find_witness(path: Path) -> dict | None:
    """The witness; None if the file is missing, unreadable, or holds no valid slot."""
    try:
        seq, witness = parse(path.read_bytes())
    except OSError:
        return None
    return witness if seq >= 0 else None


def _descriptor(path: Path) -> int:
    """This process's descriptor for ``path``, opened again if the file was replaced or removed (a restore)."""
    known = _open.get(path)
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        inode = None
    if known is not None and known[1] == inode:
        return known[0]
    if known is not None:
        os.close(known[0])
        del _open[path]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    _open[path] = (fd, os.fstat(fd).st_ino)
    return fd


def write_witness(path: Path, rows: list[tuple]) -> None:
    """Raise the witness's high-water mark to the last of ``rows`` (``_EVENT_COLUMNS`` tuples), note checkpoints.

    Read first, so that updates by another process on the same file (the CLI appending while the server
    runs, a second Cassandra-backed instance) are kept: the high-water mark only ever rises.
    """
    try:
        with _lock:
            fd = _descriptor(path)
            seq, witness = parse(os.pread(fd, 2 * SLOT, 0))
            witness["high_water"] = max(witness.get("high_water", 0), rows[-1][0])
            for row in rows:
                if row[5] == "audit.checkpoint":
                    witness["checkpoint"] = {"position": row[0], "version": row[3], "hash": row[8]}
            seq += 1
            os.pwrite(fd, _slot_bytes(seq, witness), (seq % 2) * SLOT)
    except (OSError, ValueError) as exc:
        log.warning("could not update audit witness", extra={"error": repr(exc)})


def release_witness(path: Path) -> None:
    """Close this process's descriptor for ``path`` (the store writing it has closed)."""
    with _lock:
        known = _open.pop(path, None)
        if known is not None:
            os.close(known[0])
