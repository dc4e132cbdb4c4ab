"""A minimal, strict DER TLV reader and writer: enough to cut and re-encode X.509 structures."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

SEQUENCE = 0x30
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTF8_STRING = 0x0C
BOOLEAN = 0x01
# Four length octets (4 GiB) is far beyond any certificate; the cap keeps a hostile length cheap to refuse.
_MAX_LENGTH_OCTETS = 4


@dataclass(frozen=True, slots=True)
class TLV:
    """One DER element: a single-octet tag and its content octets."""

    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def encode(self) -> bytes:
        return encode_tlv(self.tag, self.value)


def encode_length(length: int) -> bytes:
    if length < 0:
        raise ValueError("negative length")
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(body) > _MAX_LENGTH_OCTETS:
        raise ValueError("length too large")
    return bytes([0x80 | len(body)]) + body


def encode_tlv(tag: int, value: bytes) -> bytes:
    _check_tag(tag)
    return bytes([tag]) + encode_length(len(value)) + bytes(value)


def _check_tag(tag: int) -> None:
    if not 0 <= tag <= 0xFF:
        raise ValueError(f"tag {tag} is not one octet")
    # High-tag-number form (low five bits all set) never occurs in X.509; refusing it keeps the reader small.
    if tag & 0x1F == 0x1F:
        raise ValueError("high-tag-number form is not supported")


def read_tlv(data: bytes, offset: int = 0) -> tuple[TLV, int]:
    """Read one element at ``offset``; return it and the offset just past it."""
    tag, start, end = read_header(data, offset)
    return TLV(tag, bytes(data[start:end])), end


def read_header(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """The tag of the element at ``offset``, where its content starts, and the offset just past it (no copy)."""
    if offset >= len(data):
        raise ValueError("truncated: no tag")
    tag = data[offset]
    _check_tag(tag)
    length, start = _read_length(data, offset + 1)
    end = start + length
    if end > len(data):
        raise ValueError("truncated: content shorter than its length")
    return tag, start, end


def _read_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise ValueError("truncated: no length")
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if count == 0:
        raise ValueError("indefinite length is not DER")
    if count > _MAX_LENGTH_OCTETS:
        raise ValueError("length too large")
    body = data[offset + 1:offset + 1 + count]
    if len(body) != count:
        raise ValueError("truncated: length octets")
    if body[0] == 0:
        raise ValueError("non-minimal length: leading zero octet")
    length = int.from_bytes(body, "big")
    if length < 0x80:
        raise ValueError("non-minimal length: long form for a short length")
    return length, offset + 1 + count


def parse(data: bytes) -> TLV:
    """Parse exactly one element; trailing bytes are refused."""
    element, end = read_tlv(data)
    if end != len(data):
        raise ValueError(f"{len(data) - end} trailing bytes")
    return element


def iter_children(element: TLV) -> Iterator[TLV]:
    """The elements inside a constructed element, which must fill it exactly."""
    if not element.constructed:
        raise ValueError(f"tag 0x{element.tag:02x} is not constructed")
    offset = 0
    while offset < len(element.value):
        child, offset = read_tlv(element.value, offset)
        yield child


def children(element: TLV) -> list[TLV]:
    return list(iter_children(element))


def sequence(*parts: bytes) -> bytes:
    """A SEQUENCE of already-encoded elements."""
    return encode_tlv(SEQUENCE, b"".join(parts))


def encode_oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER element from its dotted form."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39) or min(arcs) < 0:
        raise ValueError(f"invalid OID {dotted!r}")
    body = _base128(arcs[0] * 40 + arcs[1]) + b"".join(_base128(a) for a in arcs[2:])
    return encode_tlv(OID, body)


def _base128(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def decode_oid(element: TLV) -> str:
    if element.tag != OID or not element.value:
        raise ValueError("not an OBJECT IDENTIFIER")
    arcs: list[int] = []
    n = 0
    for i, octet in enumerate(element.value):
        if n == 0 and octet == 0x80:
            raise ValueError("non-minimal OID arc")
        n = (n << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(n)
            n = 0
        elif i == len(element.value) - 1:
            raise ValueError("truncated OID arc")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def encode_bit_string(data: bytes) -> bytes:
    """A BIT STRING of whole octets (no unused bits), as signatures are."""
    return encode_tlv(BIT_STRING, b"\x00" + bytes(data))


def decode_bit_string(element: TLV) -> bytes:
    if element.tag != BIT_STRING or not element.value or element.value[0] != 0:
        raise ValueError("not an octet-aligned BIT STRING")
    return element.value[1:]
