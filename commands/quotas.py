"""Tenant quotas at the moment of a command: what the read models count, plus what this process has in flight.

A command that adds a CA or a certificate to a tenant with a quota on it asks ``reserve`` first. The count comes
from the read models once they have reached the log's head (``TenantUsage``); to it are added this process's
reservations still in flight and those already appended past the position the count includes. Counting and
reserving happen with no ``await`` between them, so in one process no two commands can both take the last unit.
A command this would refuse while others of this process are in flight first waits for those to land or fail
(bounded), then counts again: an in-flight command whose event the read models have already counted, but which
has not yet learnt where it landed, would otherwise be counted twice, and its unit refused to the next command.
Commands in other processes (the other HTTP worker, the CLI) are seen once they have appended, so at most the
ones in flight there at the same moment can pass a quota together: an overshoot bounded by that concurrency.

Tenants without a quota on what a command adds pay nothing: no count, no reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from commands.ports import CountedUsage
from domain import tenant
from domain.errors import QuotaExceeded, UsageUnknown

if TYPE_CHECKING:  # commands.runtime keeps a QuotaLedger in Services
    from commands.runtime import CommandResult, Services

SETTLE_SECONDS = 5.0  # at most this long, a command that would be refused waits for this process's in-flight ones


@dataclass(eq=False, slots=True)
class Reservation:
    """What one command adds to its tenant's usage, until the read models count it themselves.

    ``position``: where the command's event landed in the log; None while it is in flight, 0 if it appended
    nothing.
    """

    adding: tenant.Usage
    day: str  # the UTC date its issuance counts on
    position: int | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set once it landed or was released

    def landed(self, result: CommandResult) -> None:
        """The command's result: where its event was appended (a replay, or no change, appended nothing)."""
        self.position = 0 if result.replayed or result.global_position is None else result.global_position
        self.settled.set()


@dataclass(slots=True)
class QuotaLedger:
    """This process's reservations per tenant: in flight, or appended but not yet in the read models' counts."""

    _held: dict[str, list[Reservation]] = field(default_factory=dict)

    def pending(self, tenant_id: str, counted: CountedUsage, day: str) -> tenant.Usage:
        """What the reservations add to ``counted``; drops those both of its counts already include."""
        held = self._held.get(tenant_id)
        if not held:
            return tenant.Usage()
        counted_by = min(counted.cas_position, counted.certificates_position)
        held[:] = [r for r in held if r.position is None or r.position > counted_by]
        cas = certificates = today = 0
        for r in held:
            if r.position is None or r.position > counted.cas_position:
                cas += r.adding.cas
            if r.position is None or r.position > counted.certificates_position:
                certificates += r.adding.certificates
                today += r.adding.issuances_today if r.day == day else 0
        return tenant.Usage(cas=cas, certificates=certificates, issuances_today=today)

    def in_flight(self, tenant_id: str) -> list[Reservation]:
        """The tenant's reservations whose command has not yet landed nor been released."""
        return [r for r in self._held.get(tenant_id, ()) if r.position is None]

    def add(self, tenant_id: str, reservation: Reservation) -> None:
        self._held.setdefault(tenant_id, []).append(reservation)

    def release(self, tenant_id: str, reservation: Reservation) -> None:
        """Forget a reservation whose command appended nothing (refused, failed, or a replay)."""
        reservation.settled.set()
        held = self._held.get(tenant_id)
        if held is not None:
            with contextlib.suppress(ValueError):
                held.remove(reservation)
            if not held:
                del self._held[tenant_id]


@contextlib.asynccontextmanager
async def reserve(services: Services, state: tenant.Tenant, adding: tenant.Usage) -> AsyncIterator[Reservation]:
    """Refuse (``QuotaExceeded``) if ``adding`` would take the tenant past a quota, else hold it while the block runs.

    The block calls ``landed`` with the position its event was appended at; a block that raises, or never calls
    it, holds nothing afterwards.
    """
    now = services.clock.now()
    reservation = Reservation(adding=adding, day=tenant.day_start(now).date().isoformat())
    bounds = tenant.bounding(state.quotas, adding)
    if bounds == tenant.Quotas():  # nothing this adds is bounded: nothing to count
        yield reservation
        return
    if services.usage is None:
        raise UsageUnknown("this process cannot count the tenant's usage, and the tenant has a quota on what "
                           "this command adds")
    ledger = services.quota_ledger
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    while True:
        counted = await services.usage.count(state.tenant_id, now, bounds)
        # From here to add(): no await, so no other command of this process counts or reserves in between.
        usage = counted.usage + ledger.pending(state.tenant_id, counted, reservation.day)
        try:
            tenant.check_quotas(bounds, usage, adding, now)
            break
        except QuotaExceeded:
            # Those in flight may be counted twice (the read models counted them, they do not know it yet), or
            # may fail and free their unit: once they settle, the next count is exact for this process.
            if not await _settled(ledger.in_flight(state.tenant_id), deadline):
                raise
    ledger.add(state.tenant_id, reservation)
    try:
        yield reservation
    finally:
        if not reservation.position:  # in flight still (it raised) or appended nothing
            ledger.release(state.tenant_id, reservation)


async def _settled(reservations: list[Reservation], deadline: float) -> bool:
    """Wait (until the loop's clock reads ``deadline``) for these reservations to land or be released; False if
    there are none, or they did not."""
    if not reservations:
        return False
    try:
        async with asyncio.timeout_at(deadline):
            for reservation in reservations:
                await reservation.settled.wait()
    except TimeoutError:
        return False
    return True
