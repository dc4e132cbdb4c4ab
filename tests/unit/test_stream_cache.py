"""commands.runtime.StreamCache: streams read on from where they were, folds kept until the stream grows."""

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
    """tenant.fold, counting how many events it has folded in all."""

    def __init__(self) -> None:
        self.folded = 0

    def __call__(self, payloads):
        payloads = list(payloads)
        self.folded += len(payloads)
        return tenant.fold(payloads)


@pytest.fixture
async def services(runtime):
    await create_tenant(CreateTenant(tenant_id="acme", name="Acme"), ADMIN, runtime.services)
    return runtime.services


async def test_a_fold_is_kept_until_the_stream_grows_and_then_sees_the_new_event(services):
    fold = CountingFold()
    first = await load(services, "acme", tenant.stream_id("acme"), fold)
    again = await load(services, "acme", tenant.stream_id("acme"), fold)
    assert again is first and fold.folded == 1  # the second load read nothing new and folded nothing
    await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Corp"), ADMIN, services)
    renamed = await load(services, "acme", tenant.stream_id("acme"), fold)
    assert renamed.name == "Acme Corp" and renamed.version == 2 and fold.folded == 3
    # an append made elsewhere (another process: here another cache over the same store) is seen too
    elsewhere = dataclasses.replace(services, streams=StreamCache())
    await suspend_tenant(SuspendTenant(tenant_id="acme", reason="audit"), ADMIN, elsewhere)
    with pytest.raises(DomainError) as refused:
        await active_tenant(services, "acme")
    assert refused.value.code == "tenant_suspended"


async def test_each_fold_of_a_stream_is_kept_apart(services):
    counting, other = CountingFold(), CountingFold()
    await load(services, "acme", tenant.stream_id("acme"), counting)
    await load(services, "acme", tenant.stream_id("acme"), other)
    await load(services, "acme", tenant.stream_id("acme"), counting)
    assert (counting.folded, other.folded) == (1, 1)


async def test_streams_the_cache_does_not_keep_are_folded_every_time(services):
    services.streams = StreamCache(max_events=1)  # a one-event stream fits; two do not
    fold = CountingFold()
    await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Corp"), ADMIN, services)
    for _ in range(2):
        assert (await load(services, "acme", tenant.stream_id("acme"), fold)).name == "Acme Corp"
    assert fold.folded == 4  # both events, both times
    missing = await load(services, "acme", tenant.stream_id("globex"), fold)
    assert missing.status == "absent"


async def test_an_evicted_stream_takes_its_folds_with_it(services):
    await create_tenant(CreateTenant(tenant_id="globex", name="Globex"), ADMIN, services)
    services.streams = cache = StreamCache(max_streams=1)
    fold = CountingFold()
    await load(services, "acme", tenant.stream_id("acme"), fold)
    await load(services, "globex", tenant.stream_id("globex"), fold)  # evicts acme
    assert list(cache._folds) == [("globex", tenant.stream_id("globex"))]
    await load(services, "acme", tenant.stream_id("acme"), fold)
    assert fold.folded == 3


async def test_a_new_closure_for_every_load_does_not_grow_the_cache(services):
    for n in range(50):
        seen, state = await load(services, "acme", tenant.stream_id("acme"), lambda p, n=n: (n, tenant.fold(p)))
        assert seen == n and state.name == "Acme"  # each closure is its own fold, never another's
    (_, states), = services.streams._folds.values()
    assert len(states) <= 8
