"""A superseded CRL stored as the difference from the CRL that replaced it (``infra/artifacts.py``).

Every revocation publishes a CRL listing every revocation so far, so a CA's CRLs grow one entry at
a time and their total size grows with the square of its revocations (3,000 revocations left
245 MB of CRLs). Consecutive CRLs share almost every entry. ``encode(newer, older)`` keeps of
``older`` only what ``newer`` lacks: its bytes before and after the entries (header, extensions,
signature), the entries ``newer`` does not list, and runs of entries to copy from ``newer``;
``decode(newer, delta)`` gives ``older`` back, byte for byte: ``encode`` checks that before it returns, and
the artifact store checks every read against the SHA-256 that names it, so a wrong delta is a detected
corruption, never a wrong CRL.

The format (msgpack): ``[1, head, tail, ops]``, each op either ``[index, count]`` (that many
entries of ``newer`` from ``index``) or bytes (entries written out).
"""

from __future__ import annotations

import msgspec

from infra.crypto import der

FORMAT = 1
_TIMES = (0x17, 0x18)  # UTCTime, GeneralizedTime

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(tuple[int, bytes, bytes, list[tuple[int, int] | bytes]])


def split(crl: bytes) -> tuple[bytes, list[bytes], bytes] | None:
    """A DER CRL as (the bytes before its entries, its revokedCertificates entries, the bytes after); None when
    ``crl`` is not a CRL with entries (nothing to share)."""
    try:
        tag, start, end = der.read_header(crl, 0)
        if tag != der.SEQUENCE or end != len(crl):
            return None
        tag, offset, tbs_end = der.read_header(crl, start)  # TBSCertList
        if tag != der.SEQUENCE:
            return None
        tag, _, after = der.read_header(crl, offset)
        if tag == der.INTEGER:  # version (v2)
            offset = after
        for expected in ((der.SEQUENCE,), (der.SEQUENCE,), _TIMES):  # signature, issuer, thisUpdate
            tag, _, after = der.read_header(crl, offset)
            if tag not in expected:
                return None
            offset = after
        if offset < tbs_end and crl[offset] in _TIMES:  # nextUpdate
            offset = der.read_header(crl, offset)[2]
        if offset >= tbs_end or crl[offset] != der.SEQUENCE:
            return None  # no revokedCertificates
        _, first, last = der.read_header(crl, offset)
        if last > tbs_end:
            return None
        return crl[:first], _entries(crl, first, last), crl[last:]
    except ValueError:
        return None


def _entries(crl: bytes, at: int, last: int) -> list[bytes]:
    """The SEQUENCEs from ``at`` to ``last``; entries are under 256 bytes, so their lengths are read inline (the
    general reader for the rest). Raises ValueError unless they fill the span exactly."""
    entries = []
    append = entries.append
    while at < last:
        if crl[at] != der.SEQUENCE:
            raise ValueError("an entry is not a SEQUENCE")
        length = crl[at + 1]
        if length < 0x80:
            end = at + 2 + length
        elif length == 0x81 and at + 2 < last and crl[at + 2] >= 0x80:
            end = at + 3 + crl[at + 2]
        else:
            end = der.read_header(crl, at)[2]
        if end > last:
            raise ValueError("an entry runs past the list")
        append(crl[at:end])
        at = end
    return entries


def encode(newer: bytes, older: bytes) -> bytes | None:
    """``older`` as a delta from ``newer``; None when either is not a CRL with entries."""
    split_newer, split_older = split(newer), split(older)
    if split_newer is None or split_older is None:
        return None
    index = {entry: i for i, entry in enumerate(split_newer[1])}
    head, entries, tail = split_older
    ops: list[list[int] | bytes] = []
    written: list[bytes] = []
    run_start = run_count = 0
    for entry in entries:
        found = index.get(entry)
        if found is not None and run_count and found == run_start + run_count:
            run_count += 1
            continue
        if run_count:
            ops.append([run_start, run_count])
            run_count = 0
        if found is None:
            written.append(entry)
            continue
        if written:
            ops.append(b"".join(written))
            written = []
        run_start, run_count = found, 1
    if run_count:
        ops.append([run_start, run_count])
    if written:
        ops.append(b"".join(written))
    delta = _encoder.encode((FORMAT, head, tail, ops))
    if _apply(split_newer[1], *_decoder.decode(delta)) != older:
        raise RuntimeError("a CRL delta does not give its CRL back")  # a bug here: the caller keeps it whole
    return delta


def decode(newer: bytes, delta: bytes) -> bytes:
    """The CRL ``encode(newer, older)`` described. Raises ValueError for a delta that does not fit ``newer``."""
    try:
        version, head, tail, ops = _decoder.decode(delta)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a CRL delta: {exc}") from exc
    if version != FORMAT:
        raise ValueError(f"CRL delta format {version} is not known here")
    parts = split(newer)
    if parts is None:
        raise ValueError("the CRL a delta refers to has no entries")
    return _apply(parts[1], version, head, tail, ops)


def _apply(entries: list[bytes], version: int, head: bytes, tail: bytes, ops: list) -> bytes:
    out = [head]
    for op in ops:
        if isinstance(op, bytes):
            out.append(op)
            continue
        start, count = op
        if start < 0 or count < 1 or start + count > len(entries):
            raise ValueError("a CRL delta copies entries its base does not have")
        out.extend(entries[start:start + count])
    out.append(tail)
    return b"".join(out)
