"""The bundle's contact-point parser (infra/export/connection.py): what it accepts it returns exactly, anything else
is refused by name, never with another exception."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import DomainError
from infra.export.connection import DEFAULT_PORT, MAX_CONTACT_POINTS, contact_points

# LDH labels; '--' in positions 3-4 is reserved for A-labels (RFC 5890), which the parser rightly refuses otherwise
labels = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True).filter(lambda label: label[2:4] != "--")
hosts = st.one_of(st.lists(labels, min_size=1, max_size=4).map(".".join),
                  st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
ports = st.none() | st.integers(1, 65535)


def written(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


@given(st.lists(st.tuples(hosts, ports), max_size=MAX_CONTACT_POINTS))
def test_what_is_written_comes_back(points):
    text = " , ".join(written(h, p) for h, p in points)
    assert contact_points(text) == [(h, DEFAULT_PORT if p is None else p) for h, p in points]


@given(st.text(max_size=80))
def test_anything_else_is_a_named_refusal_or_a_list(text):
    try:
        parsed = contact_points(text)
    except DomainError as exc:
        assert exc.field == "contact_points" and exc.code in ("invalid_contact_point", "too_many_contact_points")
        return
    for host, port in parsed:
        assert 1 <= port <= 65535 and host


@pytest.mark.parametrize("text", ["a b", "host:0", "host:65536", "host:", "[::1", "::1:9042", "-bad.example",
                                  "host:90x"])
def test_malformed_items_are_refused(text):
    with pytest.raises(DomainError) as refused:
        contact_points(text)
    assert refused.value.code == "invalid_contact_point" and text.strip() in refused.value.detail


def test_bounds_and_defaults():
    assert contact_points(None) == contact_points("") == contact_points(" , ") == []
    assert contact_points("[::1]:9142") == [("::1", 9142)] and ipaddress.ip_address("::1")
    with pytest.raises(DomainError, match="at most"):
        contact_points(",".join(f"h{i}.example" for i in range(MAX_CONTACT_POINTS + 1)))
