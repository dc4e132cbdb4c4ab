"""api/bodies.py decode: any bytes decode to a JSON value or raise msgspec.DecodeError, however deeply nested."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.bodies import TOO_DEEP, decode


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize(("open_", "close", "inner"), [(b"[", b"]", b""), (b'{"a":', b"}", b"1")])
def test_a_body_nested_too_deeply_is_a_decode_error(depth, open_, close, inner):
    with pytest.raises(msgspec.DecodeError, match=TOO_DEEP):
        decode(open_ * depth + inner + close * depth)


def test_ordinary_nesting_still_decodes():
    value = decode(b"[" * 50 + b"]" * 50)
    for _ in range(49):
        value = value[0]
    assert value == []
    assert decode(b'{"tenant_id": "acme"}') == {"tenant_id": "acme"}


@given(depth=st.integers(0, 20_000), body=st.binary(max_size=32))
def test_any_body_decodes_or_is_a_decode_error(depth, body):
    try:
        decode(b"[" * depth + body + b"]" * depth)
    except msgspec.DecodeError:
        pass


def test_strict_decoding_of_a_body_nested_too_deeply_is_malformed_not_a_recursion_error():
    import pytest
    from litestar.exceptions import SerializationException

    from api.bodies import decode_strictly

    with pytest.raises(SerializationException, match="nested too deeply"):
        decode_strictly(b"[" * 5_000 + b"]" * 5_000, list)
