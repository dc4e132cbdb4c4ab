"""domain.chain: canonical bytes, per-stream genesis, chain hashes and RFC 6962 Merkle roots."""

from __future__ import annotations

import hashlib
import json

import pytest

from domain.chain import (HASH_HEX_LEN, canonical_bytes, chain_hash, envelope_body, genesis_hash, heads_root,
                          merkle_leaf, merkle_root)
from domain.events import Actor, EventEnvelope


def H(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return H(b"\x01" + left + right)


def envelope(**overrides) -> EventEnvelope:
    fields = dict(event_id="0190a0b0-0000-7000-8000-000000000001", stream_id="tenant-acme", stream_type="tenant",
                  version=1, global_position=7, tenant_id="acme", type="tenant.created", schema_version=1,
                  occurred_at="2025-01-01T00:00:00.000000Z", actor=Actor(principal="system", auth_method="internal"),
                  correlation_id=None, causation_id="c-1", payload={"zeta": 1, "alpha": {"y": [2, 1], "b": "é"}},
                  prev_hash=genesis_hash("acme", "tenant-acme"))
    fields.update(overrides)
    return EventEnvelope(**fields)


def keys_in_order(data: bytes) -> list[list[str]]:
    """Every object's keys, in the order they appear in the encoded bytes."""
    seen: list[list[str]] = []
    json.loads(data, object_pairs_hook=lambda pairs: seen.append([k for k, _ in pairs]) or dict(pairs))
    return seen


# canonical bytes ----------------------------------------------------------------------------

def test_canonical_bytes_are_compact_json_with_keys_sorted_at_every_level():
    value = {"b": {"z": 1, "a": [3, {"y": None, "x": True}]}, "a": "text"}
    assert canonical_bytes(value) == b'{"a":"text","b":{"a":[3,{"x":true,"y":null}],"z":1}}'


def test_canonical_bytes_do_not_depend_on_insertion_order():
    assert canonical_bytes({"a": 1, "b": {"c": 2, "d": 3}}) == canonical_bytes({"b": {"d": 3, "c": 2}, "a": 1})


def test_canonical_bytes_are_utf8_without_escaping_and_without_normalising():
    nfc, nfd = "\u00e9", "e\u0301"
    data = canonical_bytes({"k": [nfc, nfd, "\U0001f600", "\u65e5\u672c"]})
    assert data == b'{"k":["' + b'","'.join(x.encode() for x in (nfc, nfd, "\U0001f600", "\u65e5\u672c")) + b'"]}'
    assert nfc.encode() in data and nfd.encode() in data  # both spellings kept as given


def test_envelope_body_is_canonical_and_leaves_out_the_hash():
    env = envelope()
    body = envelope_body(env)
    assert body == canonical_bytes(json.loads(body))  # already canonical: sorted, compact
    assert all(keys == sorted(keys) for keys in keys_in_order(body))
    decoded = json.loads(body)
    assert "hash" not in decoded
    assert decoded["prev_hash"] == env.prev_hash and decoded["payload"] == env.payload
    assert envelope_body(env) == envelope_body(EventEnvelope(**{**_fields(env), "hash": "ab" * 48}))


def test_envelope_body_keeps_explicit_nulls_so_every_field_is_covered():
    decoded = json.loads(envelope_body(envelope(correlation_id=None, global_position=None)))
    assert decoded["correlation_id"] is None and decoded["global_position"] is None


def _fields(env: EventEnvelope) -> dict:
    return {name: getattr(env, name) for name in env.__struct_fields__}


# genesis and chain ----------------------------------------------------------------------

def test_genesis_is_per_stream_deterministic_and_specified():
    g = genesis_hash("acme", "tenant-acme")
    assert g == genesis_hash("acme", "tenant-acme")
    assert g == hashlib.sha384(b"csm/v1/genesis\x00acme\x00tenant-acme").hexdigest()
    assert len(g) == HASH_HEX_LEN
    others = {genesis_hash("acme", "tenant-globex"), genesis_hash("globex", "tenant-acme"),
              genesis_hash("acmetenant", "-acme"), genesis_hash("", "")}
    assert g not in others and len(others) == 4


def test_chain_hash_is_sha384_of_previous_hash_bytes_then_body():
    prev = genesis_hash("acme", "s")
    body = b'{"x":1}'
    assert chain_hash(prev, body) == hashlib.sha384(bytes.fromhex(prev) + body).hexdigest()
    assert chain_hash(prev, body) != chain_hash(genesis_hash("acme", "t"), body)
    assert chain_hash(prev, body) != chain_hash(prev, b'{"x":2}')


def test_a_chain_of_envelopes_links_through_prev_hash():
    prev = genesis_hash("acme", "tenant-acme")
    hashes = []
    for version in (1, 2, 3):
        env = envelope(version=version, global_position=version, prev_hash=prev)
        prev = chain_hash(prev, envelope_body(env))
        hashes.append(prev)
    assert len(set(hashes)) == 3 and all(len(h) == HASH_HEX_LEN for h in hashes)


# Merkle --------------------------------------------------------------------------------

LEAVES = [H(b"\x00" + bytes([i])) for i in range(5)]
l0, l1, l2, l3, l4 = LEAVES
HAND_COMPUTED = {  # RFC 6962 section 2.1: split at the largest power of two below n
    0: H(b""),
    1: l0,
    2: node(l0, l1),
    3: node(node(l0, l1), l2),
    4: node(node(l0, l1), node(l2, l3)),
    5: node(node(node(l0, l1), node(l2, l3)), l4),
}


@pytest.mark.parametrize("n", sorted(HAND_COMPUTED))
def test_merkle_root_matches_a_hand_computed_rfc6962_tree(n):
    assert merkle_root(LEAVES[:n]) == HAND_COMPUTED[n].hex()


def test_merkle_root_depends_on_leaf_order_and_content():
    assert merkle_root([l0, l1, l2]) != merkle_root([l1, l0, l2])
    assert merkle_root([l0, l1, l2]) != merkle_root([l0, l1, l3])
    assert merkle_root([l0, l1]) != merkle_root([l0, l1, l1])  # no duplicate-last-leaf ambiguity


def test_merkle_leaf_is_domain_separated_hash_of_the_canonical_head():
    leaf = merkle_leaf("acme", "tenant-acme", 3, "ab" * 48)
    assert leaf == H(b"\x00" + b'["acme","tenant-acme",3,"' + b"ab" * 48 + b'"]')


def test_heads_root_sorts_heads_and_commits_to_every_field():
    heads = [("b", "s", 1, "11" * 48), ("a", "s", 2, "22" * 48), ("a", "r", 5, "33" * 48)]
    expected = merkle_root([merkle_leaf(*h) for h in sorted(heads)])
    assert heads_root(heads) == expected == heads_root(list(reversed(heads)))
    for i, field in ((0, "c"), (1, "x"), (2, 9), (3, "44" * 48)):
        changed = [list(h) for h in heads]
        changed[1][i] = field
        assert heads_root([tuple(h) for h in changed]) != expected
    assert heads_root(heads[:2]) != expected  # a dropped head changes the root
