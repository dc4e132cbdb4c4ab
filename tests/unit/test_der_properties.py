"""Properties of the strict DER reader/writer: exact round trips, and ValueError (only) for everything malformed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from infra.crypto import der

# Single-octet tags: primitive ones have bit 6 clear, constructed ones set; 0x1f low bits means a multi-octet tag.
_low_tags = st.integers(0, 0xFF).filter(lambda t: t & 0x1F != 0x1F)
primitive_tags = _low_tags.filter(lambda t: not t & 0x20)
constructed_tags = _low_tags.filter(lambda t: bool(t & 0x20))

primitive = st.builds(der.TLV, primitive_tags, st.binary(max_size=300))
trees = st.recursive(
    primitive,
    lambda inner: st.builds(lambda tag, kids: (tag, kids), constructed_tags, st.lists(inner, max_size=5)),
    max_leaves=20,
)


def encode_tree(tree) -> bytes:
    if isinstance(tree, der.TLV):
        return tree.encode()
    tag, kids = tree
    return der.encode_tlv(tag, b"".join(encode_tree(k) for k in kids))


def decode_tree(element: der.TLV):
    if not element.constructed:
        return element
    return element.tag, [decode_tree(child) for child in der.children(element)]


def walk(element: der.TLV) -> None:
    """Visit every element below a constructed one, as the X.509 code does."""
    if element.constructed:
        for child in der.iter_children(element):
            walk(child)


@given(trees)
def test_encode_then_decode_is_identity(tree):
    encoded = encode_tree(tree)
    assert decode_tree(der.parse(encoded)) == tree
    assert der.parse(encoded).encode() == encoded


@given(st.integers(0, 2**32 - 1))
def test_lengths_round_trip_in_minimal_form(length):
    encoded = der.encode_length(length)
    assert der._read_length(encoded, 0) == (length, len(encoded))
    assert len(encoded) == 1 if length < 0x80 else encoded[1] != 0


@given(trees, st.data())
def test_every_truncation_is_refused(tree, data):
    encoded = encode_tree(tree)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(ValueError):
        walk(der.parse(encoded[:cut]))


@given(trees, st.binary(min_size=1, max_size=20))
def test_trailing_bytes_are_refused(tree, garbage):
    with pytest.raises(ValueError, match="trailing"):
        der.parse(encode_tree(tree) + garbage)


@hsettings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_parse_canonically_or_raise_value_error(data):
    try:
        element = der.parse(data)
        walk(element)
    except ValueError:
        return
    # Anything accepted is DER: it re-encodes to exactly the input.
    assert element.encode() == data


@given(trees, st.data())
def test_corruption_raises_value_error_and_nothing_else(tree, data):
    encoded = bytearray(encode_tree(tree))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    try:
        walk(der.parse(bytes(encoded)))
    except ValueError:
        pass


@pytest.mark.parametrize("data, reason", [
    (bytes.fromhex("3080020101" "0000"), "indefinite"),
    (bytes.fromhex("04810501020304" "05"), "non-minimal"),
    (bytes.fromhex("0482000301" "0203"), "non-minimal"),
    (bytes.fromhex("0485" "0100000000"), "too large"),
    (bytes.fromhex("1f0100"), "high-tag"),
    (bytes.fromhex("3003" "0201"), "truncated"),
    (b"", "truncated"),
])
def test_non_der_encodings_are_refused(data, reason):
    with pytest.raises(ValueError, match=reason):
        walk(der.parse(data))


def test_children_of_a_primitive_is_refused():
    with pytest.raises(ValueError, match="not constructed"):
        der.children(der.parse(bytes.fromhex("020101")))


# Under arcs 0 and 1 the second arc is below 40; under 2 it is unbounded (2.999 is a real example).
_first_two = st.tuples(st.integers(0, 1), st.integers(0, 39)) | st.tuples(st.just(2), st.integers(0, 2**40))
oids = st.tuples(_first_two, st.lists(st.integers(0, 2**64), max_size=8)).map(
    lambda t: ".".join(str(a) for a in [*t[0], *t[1]]))


@given(oids)
def test_oids_round_trip(dotted):
    assert der.decode_oid(der.parse(der.encode_oid(dotted))) == dotted


def test_known_oid_encoding():
    # ML-DSA-65, as RFC 9881 and OpenSSL encode it.
    assert der.encode_oid("2.16.840.1.101.3.4.3.18").hex() == "0609608648016503040312"


@given(st.binary(max_size=40))
def test_oid_decoding_refuses_with_value_error_only(body):
    try:
        dotted = der.decode_oid(der.TLV(der.OID, body))
    except ValueError:
        return
    assert der.encode_oid(dotted) == der.encode_tlv(der.OID, body)


@given(st.binary(max_size=100))
def test_bit_strings_round_trip(payload):
    assert der.decode_bit_string(der.parse(der.encode_bit_string(payload))) == payload


@pytest.mark.parametrize("tlv", [der.TLV(der.BIT_STRING, b""), der.TLV(der.BIT_STRING, b"\x03\xff"),
                                 der.TLV(der.OCTET_STRING, b"\x00")])
def test_bit_strings_with_unused_bits_or_wrong_tag_are_refused(tlv):
    with pytest.raises(ValueError):
        der.decode_bit_string(tlv)
