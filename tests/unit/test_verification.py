"""domain.verification.ChainVerifier over a real store's rows: batching, checkpoints, the witness."""

from __future__ import annotations

import msgspec
import pytest

from commands.authz import SYSTEM
from commands.runtime import CommandContext
from commands.tenants import CreateTenant, RenameTenant, create_tenant, rename_tenant
from domain.verification import ChainVerifier
from infra.audit.keys import load_public_key, trusted_keys
from infra.audit.witness import read_witness
from infra.bootstrap import verify_store

CTX = CommandContext(principal=SYSTEM)


@pytest.fixture
async def history(runtime):
    """Three checkpoints with events of several streams between them, and one unsealed event."""
    s = runtime.services
    for round_ in range(3):
        for tenant_id in ("acme", "globex"):
            if round_ == 0:
                await create_tenant(CreateTenant(tenant_id=tenant_id, name=tenant_id), CTX, s)
            else:
                await rename_tenant(RenameTenant(tenant_id=tenant_id, name=f"{tenant_id} {round_}"), CTX, s)
        assert runtime.checkpointer.seal_all() == 1
    await rename_tenant(RenameTenant(tenant_id="acme", name="unsealed"), CTX, s)
    return runtime


def verify_in_batches(runtime, size: int):
    verifier = ChainVerifier(trusted_keys(runtime.settings.keys_dir), read_witness(runtime.settings.witness_file),
                             load_public_key=load_public_key, witness_source=str(runtime.settings.witness_file))
    rows = runtime.store.read_raw(0)
    for start in range(0, len(rows), size):
        verifier.feed(rows[start:start + size])
    return verifier.finish()


async def test_several_checkpoints_in_one_feed_verify(history):
    report = verify_store(history.settings, history.store)
    assert report.ok, report.problems
    assert (report.checkpoints, report.unsealed_events, report.streams) == (3, 1, 3)
    assert report.sealed_position == report.last_position - 2  # the last checkpoint, then one event


@pytest.mark.parametrize("size", [1, 2, 3, 5, 1000])
async def test_the_report_does_not_depend_on_how_rows_are_batched(history, size):
    expected = msgspec.to_builtins(verify_store(history.settings, history.store))
    assert msgspec.to_builtins(verify_in_batches(history, size)) == expected


async def test_without_a_trust_anchor_the_ledger_keys_are_used_and_said_so(history):
    verifier = ChainVerifier(None, {}, load_public_key=load_public_key)
    verifier.feed(history.store.read_raw(0))
    report = verifier.finish()
    assert report.ok and report.trust_anchor == "keys registered in the ledger (no anchor)"


async def test_a_missing_key_registration_is_a_problem(history):
    verifier = ChainVerifier(trusted_keys(history.settings.keys_dir), {}, load_public_key=load_public_key)
    verifier.feed(history.store.read_raw(1))
    assert {p.kind for p in verifier.finish().problems} >= {"missing_events", "ledger_missing"}


async def test_a_large_backlog_is_sealed_in_consecutive_windows(runtime):
    runtime.checkpointer.max_window = 3
    for i in range(10):
        await create_tenant(CreateTenant(tenant_id=f"t{i:02d}", name=f"T{i}"), CTX, runtime.services)
    assert runtime.checkpointer.seal_all() >= 4
    assert runtime.checkpointer.checkpoint() is None  # nothing left
    report = verify_store(runtime.settings, runtime.store)
    assert report.ok, report.problems
    assert report.unsealed_events == 0 and report.checkpoints >= 4
