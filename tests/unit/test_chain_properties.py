"""Properties of the hash chain: canonical bytes, Merkle roots, and real stores that always verify."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from commands.ids import uuid7
from commands.ports import AppendRequest, NewEvent
from domain.audit import LEDGER_STREAM, LEDGER_TENANT
from domain.chain import canonical_bytes, chain_hash, envelope_body, genesis_hash, merkle_root
from domain.events import Actor
from infra.bootstrap import initialise, verify_store
from infra.config import Settings

# JSON-safe values as payloads carry them: no floats (they have no canonical form here)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
payloads = st.dictionaries(st.text(max_size=12), json_values, max_size=5)
names = st.text(min_size=1, max_size=12)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.randoms(use_true_random=False))
def test_canonical_bytes_ignore_insertion_order(value, rnd):
    items = list(value.items())
    rnd.shuffle(items)
    assert canonical_bytes(dict(items)) == canonical_bytes(value)


@given(st.lists(st.binary(min_size=48, max_size=48), min_size=1, max_size=20, unique=True), st.data())
def test_changing_any_leaf_changes_the_merkle_root(leaves, data):
    i = data.draw(st.integers(0, len(leaves) - 1))
    changed = list(leaves)
    changed[i] = bytes([leaves[i][0] ^ 1]) + leaves[i][1:]
    assert merkle_root(changed) != merkle_root(leaves)
    if len(leaves) > 1:
        assert merkle_root(leaves[:-1]) != merkle_root(leaves)


@given(st.lists(st.tuples(names, names), min_size=2, max_size=8, unique=True))
def test_every_stream_has_its_own_genesis(keys):
    # stream keys never hold NUL (tenant ids are validated), the separator in the genesis material
    keys = [k for k in keys if "\x00" not in k[0] + k[1]]
    assert len({genesis_hash(*key) for key in keys}) == len(keys)


# real stores -------------------------------------------------------------------------------

streams = st.lists(st.tuples(names, names), min_size=1, max_size=6, unique=True).filter(
    lambda keys: (LEDGER_TENANT, LEDGER_STREAM) not in keys)
# A history is a list of steps; each step appends concurrently to some streams, then maybe seals.
steps = st.lists(st.tuples(st.lists(st.tuples(st.integers(0, 5), st.lists(payloads, min_size=1, max_size=3)),
                                    min_size=1, max_size=4),
                           st.booleans()), min_size=1, max_size=6)


async def _append_history(runtime, keys, history) -> dict:
    written: dict[tuple[str, str], list[dict]] = {key: [] for key in keys}
    actor = Actor(principal="prop", auth_method="test")
    for appends, seal in history:
        requests = {}
        for index, batch in appends:  # one append per stream per step, so the expected versions hold
            key = keys[index % len(keys)]
            requests.setdefault(key, batch)
        await asyncio.gather(*(
            runtime.store.append(AppendRequest(
                tenant_id=key[0], stream_id=key[1], stream_type="prop", expected_version=len(written[key]),
                events=[NewEvent(event_id=uuid7(), type="prop.happened", schema_version=1,
                                 occurred_at="2025-01-01T00:00:00.000000Z", actor=actor, correlation_id=None,
                                 causation_id=None, payload=p) for p in batch]))
            for key, batch in requests.items()))
        for key, batch in requests.items():
            written[key].extend(batch)
        if seal:
            runtime.checkpointer.seal_all()
    return written


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=streams, history=steps, final_seal=st.booleans())
def test_any_history_written_through_the_store_verifies(keys, history, final_seal):
    with tempfile.TemporaryDirectory(prefix="csm-prop-") as directory:
        settings = Settings(data_dir=Path(directory) / "data")
        runtime = initialise(settings)
        try:
            written = asyncio.run(_append_history(runtime, keys, history))
            if final_seal:
                runtime.checkpointer.seal_all()
            report = verify_store(settings, runtime.store)
            assert report.ok, report.problems
            total = sum(len(events) for events in written.values())
            assert report.events == total + 1 + report.checkpoints  # + the key registration
            if final_seal:
                assert report.unsealed_events == 0 and report.sealed_position == report.last_position - 1
            for (tenant_id, stream_id), payloads_written in written.items():
                recorded = runtime.store.read_stream_sync(tenant_id, stream_id)
                assert [e.payload for e in recorded] == payloads_written
                prev = genesis_hash(tenant_id, stream_id)
                for envelope in recorded:
                    assert envelope.prev_hash == prev
                    prev = chain_hash(prev, envelope_body(envelope))
                    assert envelope.hash == prev
        finally:
            runtime.close()
