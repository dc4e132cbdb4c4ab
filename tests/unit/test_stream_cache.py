"""commands.runtime.StreamCache: folded states kept per stream, and resumed with only the events appended since."""

from __future__ import annotations

import dataclasses

import pytest

from commands.authz import SYSTEM
from commands.runtime import CommandContext, StreamCache, load
from commands.tenants import (CreateTenant, RenameTenant, SuspendTenant, active_tenant, create_tenant, rename_tenant,
                              suspend_tenant)
from domain import tenant
from domain.errors import DomainError

ADMIN = CommandContext(principal=SYSTEM)


class CountingFold:
    """tenant.fold, counting how many events it has folded in all; resumable unless told otherwise."""

    def __init__(self, resumable: bool = True) -> None:
        self.folded = 0
        if resumable:
            self.resumable = True

    def __call__(self, payloads, start=None):
        payloads = list(payloads)
        self.folded += len(payloads)
        return tenant.fold(payloads, start=start)


@pytest.fixture
async def services(runtime):
    await create_tenant(CreateTenant(tenant_id="acme", name="Acme"), ADMIN, runtime.services)
    return runtime.services


async def test_a_kept_state_is_resumed_with_only_the_new_events_and_sees_them(services):
    fold = CountingFold()
    first = await load(services, "acme", tenant.stream_id("acme"), fold)
    again = await load(services, "acme", tenant.stream_id("acme"), fold)
    assert again is first and fold.folded == 1  # the second load read nothing new and folded nothing
    await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Corp"), ADMIN, services)
    renamed = await load(services, "acme", tenant.stream_id("acme"), fold)
    assert renamed.name == "Acme Corp" and renamed.version == 2 and fold.folded == 2  # only the rename
    # an append made elsewhere (another process: here another cache over the same store) is seen too
    elsewhere = dataclasses.replace(services, streams=StreamCache())
    await suspend_tenant(SuspendTenant(tenant_id="acme", reason="audit"), ADMIN, elsewhere)
    with pytest.raises(DomainError) as refused:
        await active_tenant(services, "acme")
    assert refused.value.code == "tenant_suspended"


async def test_a_long_stream_is_kept_however_many_events_it_has(services):
    fold = CountingFold()
    for n in range(40):
        await rename_tenant(RenameTenant(tenant_id="acme", name=f"Acme {n}"), ADMIN, services)
        state = await load(services, "acme", tenant.stream_id("acme"), fold)
        assert (state.name, state.version) == (f"Acme {n}", n + 2)
    assert fold.folded == 41  # each event once: the creation, then each rename as it came


async def test_each_fold_of_a_stream_is_kept_apart_at_its_own_version(services):
    counting, other = CountingFold(), CountingFold()
    await load(services, "acme", tenant.stream_id("acme"), counting)
    await load(services, "acme", tenant.stream_id("acme"), other)
    await load(services, "acme", tenant.stream_id("acme"), counting)
    assert (counting.folded, other.folded) == (1, 1)
    await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Corp"), ADMIN, services)
    assert (await load(services, "acme", tenant.stream_id("acme"), counting)).name == "Acme Corp"
    await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Inc"), ADMIN, services)
    # `other` was kept at version 1: it resumes with both renames, `counting` with the second only
    assert (await load(services, "acme", tenant.stream_id("acme"), other)).name == "Acme Inc"
    assert (await load(services, "acme", tenant.stream_id("acme"), counting)).name == "Acme Inc"
    assert (counting.folded, other.folded) == (3, 3)


async def test_a_function_that_cannot_resume_is_given_the_whole_stream_every_time(services):
    fold = CountingFold(resumable=False)
    await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Corp"), ADMIN, services)
    for _ in range(2):
        assert (await load(services, "acme", tenant.stream_id("acme"), fold)).name == "Acme Corp"
    assert fold.folded == 4  # both events, both times
    assert not any(fold in states for states in services.streams._streams.values())  # nor is it kept


async def test_a_missing_stream_is_folded_empty_and_not_kept(services):
    fold = CountingFold()
    missing = await load(services, "acme", tenant.stream_id("globex"), fold)
    assert missing.status == "absent"
    assert ("acme", tenant.stream_id("globex")) not in services.streams._streams


async def test_an_evicted_stream_takes_its_states_with_it(services):
    await create_tenant(CreateTenant(tenant_id="globex", name="Globex"), ADMIN, services)
    services.streams = cache = StreamCache(max_streams=1)
    fold = CountingFold()
    await load(services, "acme", tenant.stream_id("acme"), fold)
    await load(services, "globex", tenant.stream_id("globex"), fold)  # evicts acme
    assert list(cache._streams) == [("globex", tenant.stream_id("globex"))]
    await load(services, "acme", tenant.stream_id("acme"), fold)
    assert fold.folded == 3


async def test_a_state_from_a_slower_concurrent_load_does_not_replace_a_newer_one(services):
    fold = CountingFold()
    cache = services.streams
    key = ("acme", tenant.stream_id("acme"))
    await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Corp"), ADMIN, services)
    newer = await load(services, "acme", tenant.stream_id("acme"), fold)
    cache._keep(key, fold, 1, tenant.fold([]))  # what a load that read before the rename would keep
    assert cache._streams[key][fold] == (2, newer)


async def test_a_new_closure_for_every_load_does_not_grow_the_cache(services):
    def closure(n):
        def fold(payloads, start=None):
            return n, tenant.fold(payloads, start=start[1] if start else None)
        fold.resumable = True
        return fold

    for n in range(50):
        seen, state = await load(services, "acme", tenant.stream_id("acme"), closure(n))
        assert seen == n and state.name == "Acme"  # each closure is its own fold, never another's
    (states,) = services.streams._streams.values()
    assert len(states) <= 8
