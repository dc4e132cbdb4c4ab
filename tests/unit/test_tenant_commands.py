"""commands.tenants through commands.runtime: authorisation first, idempotency, no-ops, races."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from commands.authz import SYSTEM, Forbidden, Principal
from commands.runtime import MAX_ATTEMPTS, CommandContext, StreamCache, StreamLocks
from commands.tenants import (CreateTenant, RenameTenant, ResumeTenant, SetTenantQuotas, SuspendTenant,
                              create_tenant, rename_tenant, resume_tenant, set_tenant_quotas, suspend_tenant)
from domain.errors import Contention, DomainError, IdempotencyKeyReused
from domain.tenant import Quotas

ADMIN = CommandContext(principal=SYSTEM)


def ctx(*roles: str, tenant_id: str | None = None, key: str | None = None) -> CommandContext:
    return CommandContext(principal=Principal(id="p-1", auth_method="token", roles=frozenset(roles),
                                              tenant_id=tenant_id), idempotency_key=key)


async def test_refusals_are_decided_before_anything_is_written(services):
    head = await services.store.head_position()
    attempts = [
        (create_tenant, CreateTenant(tenant_id="initech", name="I"), ctx("viewer")),
        (create_tenant, CreateTenant(tenant_id="initech", name="I"), ctx("tenant-admin", tenant_id="initech")),
        (rename_tenant, RenameTenant(tenant_id="globex", name="G"), ctx("tenant-admin", tenant_id="acme")),
        (set_tenant_quotas, SetTenantQuotas(tenant_id="acme", quotas=Quotas()), ctx("tenant-admin", tenant_id="acme")),
        (suspend_tenant, SuspendTenant(tenant_id="acme", reason="r"), ctx("tenant-admin", tenant_id="acme")),
        (resume_tenant, ResumeTenant(tenant_id="acme", reason="r"), ctx("auditor")),
    ]
    for handler, command, context in attempts:
        with pytest.raises(Forbidden):
            await handler(command, context, services)
    assert await services.store.head_position() == head


async def test_a_tenant_admin_updates_its_own_tenant(services):
    result = await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Corp"),
                                 ctx("tenant-admin", tenant_id="acme"), services)
    assert (result.stream_id, result.version, result.changed) == ("tenant-acme", 2, True)
    assert result.global_position == await services.store.head_position()
    [_, renamed] = await services.store.read_stream("acme", "tenant-acme")
    assert renamed.type == "tenant.renamed" and renamed.actor.principal == "p-1"


async def test_domain_refusals_surface_with_code_and_field(services):
    with pytest.raises(DomainError) as caught:
        await create_tenant(CreateTenant(tenant_id="acme", name="Again"), ADMIN, services)
    assert (caught.value.code, caught.value.field) == ("tenant_exists", "tenant_id")
    with pytest.raises(DomainError) as caught:
        await rename_tenant(RenameTenant(tenant_id="nobody", name="N"), ADMIN, services)
    assert (caught.value.code, caught.value.status) == ("tenant_not_found", 404)


async def test_a_decision_with_no_events_changes_nothing(services):
    head = await services.store.head_position()
    result = await rename_tenant(RenameTenant(tenant_id="acme", name="Acme"), ADMIN, services)
    assert (result.version, result.global_position, result.changed) == (1, None, False)
    assert await services.store.head_position() == head


async def test_an_idempotency_key_replays_the_first_result(services):
    first = await create_tenant(CreateTenant(tenant_id="initech", name="Initech"), ctx("platform-admin", key="k1"),
                                services)
    head = await services.store.head_position()
    again = await create_tenant(CreateTenant(tenant_id="initech", name="Initech"), ctx("platform-admin", key="k1"),
                                services)
    assert again.replayed and (again.stream_id, again.version, again.global_position) == (
        first.stream_id, first.version, first.global_position)
    assert await services.store.head_position() == head
    with pytest.raises(IdempotencyKeyReused) as caught:
        await create_tenant(CreateTenant(tenant_id="initech", name="Other"), ctx("platform-admin", key="k1"), services)
    assert caught.value.field == "Idempotency-Key"


async def test_the_same_key_from_another_principal_is_another_request(services):
    other = CommandContext(principal=Principal(id="p-2", auth_method="token", roles=frozenset({"platform-admin"})),
                           idempotency_key="k1")
    await create_tenant(CreateTenant(tenant_id="initech", name="Initech"), ctx("platform-admin", key="k1"), services)
    with pytest.raises(DomainError, match="already exists"):
        await create_tenant(CreateTenant(tenant_id="initech", name="Initech"), other, services)


async def test_concurrent_duplicate_requests_with_one_key_write_once(services):
    head = await services.store.head_position()
    results = await asyncio.gather(*(
        create_tenant(CreateTenant(tenant_id="umbrella", name="Umbrella"), ctx("platform-admin", key="dup"), services)
        for _ in range(10)))
    assert len({(r.version, r.global_position) for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert await services.store.head_position() == head + 1


async def test_racing_commands_on_one_aggregate_all_land_by_retrying(services):
    names = [f"Acme {i}" for i in range(MAX_ATTEMPTS)]  # each loss means another racer won: all land
    results = await asyncio.gather(*(rename_tenant(RenameTenant(tenant_id="acme", name=n), ADMIN, elsewhere(services))
                                     for n in names))
    assert sorted(r.version for r in results) == list(range(2, MAX_ATTEMPTS + 2))
    events = await services.store.read_stream("acme", "tenant-acme")
    assert [e.version for e in events] == list(range(1, MAX_ATTEMPTS + 2))
    assert sorted(e.payload["new_name"] for e in events[1:]) == sorted(names)


def elsewhere(services):
    """The same store as another process sees it: its own stream cache, and its own turns on each stream."""
    return dataclasses.replace(services, streams=StreamCache(), locks=StreamLocks())


async def test_racing_commands_of_one_process_take_turns_and_all_land(services):
    outcomes = await asyncio.gather(*(rename_tenant(RenameTenant(tenant_id="acme", name=f"A {i}"), ADMIN, services)
                                      for i in range(3 * MAX_ATTEMPTS)))
    assert sorted(r.version for r in outcomes) == list(range(2, 3 * MAX_ATTEMPTS + 2))


class AlwaysBeaten:
    """The store as a racer sees it when another process wins every round: before each of its appends, a rival's
    rename lands first (a real one, through the handler), so its append conflicts, every time."""

    def __init__(self, services) -> None:
        self.services, self.rivals = services, 0

    def __getattr__(self, name):
        return getattr(self.services.store, name)

    async def append(self, request):
        self.rivals += 1
        await rename_tenant(RenameTenant(tenant_id="acme", name=f"rival {self.rivals}"), ADMIN,
                            elsewhere(self.services))
        return await self.services.store.append(request)


async def test_beyond_the_retry_bound_losers_are_told_of_contention_and_nothing_is_lost(services):
    beaten = AlwaysBeaten(services)
    loser = rename_tenant(RenameTenant(tenant_id="acme", name="never"), ADMIN,
                          dataclasses.replace(elsewhere(services), store=beaten))
    outcomes = await asyncio.gather(loser, *(rename_tenant(RenameTenant(tenant_id="acme", name=f"A {i}"), ADMIN,
                                                           elsewhere(services))  # each racer its own process
                                             for i in range(3 * MAX_ATTEMPTS)), return_exceptions=True)
    assert isinstance(outcomes[0], Contention) and beaten.rivals == MAX_ATTEMPTS  # lost every one of its rounds
    landed = [o for o in outcomes if not isinstance(o, BaseException)]
    assert all(isinstance(o, Contention) and (o.code, o.status, o.field) == ("contention", 409, "tenant_id")
               for o in outcomes if o not in landed)  # the other racers may lose eight in a row too
    assert len({r.version for r in landed}) == len(landed)  # each landed at its own version
    events = await services.store.read_stream("acme", "tenant-acme")
    assert [e.version for e in events] == list(range(1, len(landed) + MAX_ATTEMPTS + 2))  # no gap, nothing lost
    names = [e.payload["new_name"] for e in events[1:]]
    assert "never" not in names and sum(n.startswith("rival ") for n in names) == MAX_ATTEMPTS
