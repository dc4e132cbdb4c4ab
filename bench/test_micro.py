"""Micro-benchmarks of the per-event hot paths, with pytest-benchmark.

Run: ``.venv/bin/pytest bench/test_micro.py --benchmark-only`` (``python -m bench`` does, and
puts the figures in docs/benchmarks.md). These time code, they assert nothing about time.
"""

from __future__ import annotations

import msgspec
import pytest

from commands.ids import uuid7
from domain.chain import chain_hash, envelope_body, genesis_hash, heads_root
from domain.events import Actor, EventEnvelope
from domain.verification import ChainVerifier

ROWS = 1000
ACTOR = Actor(principal="bench:writer", auth_method="internal")
_decoder = msgspec.json.Decoder(EventEnvelope)


def envelope(tenant_id: str, stream_id: str, version: int, position: int, prev_hash: str) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid7(), stream_id=stream_id, stream_type="tenant", version=version, global_position=position,
        tenant_id=tenant_id, type="tenant.renamed", schema_version=1, occurred_at="2026-01-01T00:00:00.000000Z",
        actor=ACTOR, correlation_id=uuid7(), causation_id=None,
        payload={"old_name": f"Tenant {tenant_id} r{version - 1}", "new_name": f"Tenant {tenant_id} r{version}"},
        prev_hash=prev_hash)


@pytest.fixture(scope="module")
def rows() -> list[tuple]:
    """ROWS raw rows (position, tenant, stream, version, body, hash) over 100 chained streams."""
    heads: dict[str, tuple[int, str]] = {}
    out = []
    for position in range(1, ROWS + 1):
        stream = f"tenant-bench-{position % 100:03d}"
        version, prev = heads.get(stream, (0, genesis_hash("bench", stream)))
        body = envelope_body(envelope("bench", stream, version + 1, position, prev))
        digest = chain_hash(prev, body)
        heads[stream] = (version + 1, digest)
        out.append((position, "bench", stream, version + 1, body, digest))
    return out


def test_encode_canonical_body(benchmark):
    env = envelope("bench", "tenant-bench", 7, 1234, genesis_hash("bench", "tenant-bench"))
    benchmark(envelope_body, env)


def test_chain_hash(benchmark, rows):
    body = rows[0][4]
    benchmark(chain_hash, genesis_hash("bench", rows[0][2]), body)


def test_decode_envelope(benchmark, rows):
    body = rows[0][4]
    benchmark(lambda: msgspec.structs.replace(_decoder.decode(body), hash=rows[0][5]))


def test_verifier_feed_1000_rows(benchmark, rows):
    def feed():
        verifier = ChainVerifier(None, {})
        verifier.feed(rows)
        return verifier

    verifier = benchmark(feed)
    assert not verifier.problems


def test_merkle_root_1000_heads(benchmark, rows):
    heads = [("bench", stream, version, digest) for _, _, stream, version, _, digest in rows]
    benchmark(heads_root, heads)


def test_uuid7(benchmark):
    benchmark(uuid7)
