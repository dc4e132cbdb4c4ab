"""Tenant quotas at the moment of a command: what the read models count, plus the reservations in flight.

A command that adds a CA or a certificate to a tenant with a quota on it asks ``reserve`` first. The count comes
from the read models once they have reached the log's head (``TenantUsage``); to it the ledger adds the
reservations still in flight and those already appended past the position the count includes, checks, and holds
the new one, in one step (``QuotaLedger.take``), so no two commands can both take the last unit. The ledger is
the process's own, except in an HTTP worker of a multi-worker server, whose commands take their reservations in
the primary process's ledger over its link (infra/primary_link.py): every worker's commands count against each
other's. A command this would refuse while others are in flight first waits for those to land or fail
(bounded), then counts again: an in-flight command whose event the read models have already counted, but which
has not yet learnt where it landed, would otherwise be counted twice, and its unit refused to the next command.
Commands of a separate process (the CLI) are seen once they have appended, so at most the one in flight there
at the same moment can pass a quota beside the server's.

Tenants without a quota on what a command adds pay nothing: no count, no reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

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
    nothing. ``on_landed``: set by a ledger that must hear of it (one held by another process).
    """

    adding: tenant.Usage
    day: str  # the UTC date its issuance counts on
    position: int | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set once it landed or was released
    key: str | None = None  # what another process's ledger knows it by
    on_landed: Callable[[Reservation], None] | None = None

    def landed(self, result: CommandResult) -> None:
        """The command's result: where its event was appended (a replay, or no change, appended nothing)."""
        self.land(0 if result.replayed or result.global_position is None else result.global_position)

    def land(self, position: int) -> None:
        self.position = position
        self.settled.set()
        if self.on_landed is not None:
            self.on_landed(self)


class Ledger(Protocol):
    """Where reservations are held: this process's ``QuotaLedger``, or, in an HTTP worker of a multi-worker
    server, the primary process's, through its link (infra/primary_link.py), so that the workers' commands
    are counted against each other's."""

    async def take(self, tenant_id: str, reservation: Reservation, counted: CountedUsage, bounds: tenant.Quotas,
                   now: datetime) -> None: ...

    async def settle(self, tenant_id: str, seconds: float) -> bool: ...

    def release(self, tenant_id: str, reservation: Reservation) -> None: ...


class StaleCount(Exception):
    """A count older than one the ledger has already dropped reservations for: count again (see QuotaLedger)."""


@dataclass(slots=True)
class QuotaLedger:
    """The reservations per tenant: in flight, or appended but not yet in the read models' counts.

    A reservation is dropped once a count includes its position. Counts made in one process reach its ledger in
    the order they were made, each at least as far along the log as the one before; counts from other processes
    (HTTP workers, through the primary's link) may arrive late, behind reservations already dropped, and would
    then miss them: such a count is refused (``StaleCount``), and the command counts again.
    """

    _held: dict[str, list[Reservation]] = field(default_factory=dict)
    _dropped_to: dict[str, int] = field(default_factory=dict)  # per tenant: counts must include this position

    async def take(self, tenant_id: str, reservation: Reservation, counted: CountedUsage, bounds: tenant.Quotas,
                   now: datetime) -> None:
        """Hold ``reservation`` unless ``counted`` plus what is held would pass a quota (``QuotaExceeded``).

        No ``await`` in here: nothing else counts against the ledger between the check and the hold.
        """
        if min(counted.cas_position, counted.certificates_position) < self._dropped_to.get(tenant_id, 0):
            raise StaleCount(tenant_id)
        usage = counted.usage + self.pending(tenant_id, counted, reservation.day)
        tenant.check_quotas(bounds, usage, reservation.adding, now)
        self._held.setdefault(tenant_id, []).append(reservation)

    def pending(self, tenant_id: str, counted: CountedUsage, day: str) -> tenant.Usage:
        """What the reservations add to ``counted``; drops those both of its counts already include."""
        held = self._held.get(tenant_id)
        if not held:
            return tenant.Usage()
        counted_by = min(counted.cas_position, counted.certificates_position)
        before = len(held)
        held[:] = [r for r in held if r.position is None or r.position > counted_by]
        if len(held) < before:
            self._dropped_to[tenant_id] = max(self._dropped_to.get(tenant_id, 0), counted_by)
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

    async def settle(self, tenant_id: str, seconds: float) -> bool:
        """Wait (at most ``seconds``) for the tenant's reservations now in flight to land or be released; False
        if there are none, or they did not."""
        reservations = self.in_flight(tenant_id)
        if not reservations:
            return False
        try:
            async with asyncio.timeout(max(seconds, 0.0)):
                for reservation in reservations:
                    await reservation.settled.wait()
        except TimeoutError:
            return False
        return True

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
        try:
            await ledger.take(state.tenant_id, reservation, counted, bounds, now)
            break
        except StaleCount:
            continue  # another process's count dropped reservations this one does not include: count again
        except QuotaExceeded:
            # Those in flight may be counted twice (the read models counted them, they do not know it yet), or
            # may fail and free their unit: once they settle, the next count is exact.
            if not await ledger.settle(state.tenant_id, deadline - asyncio.get_running_loop().time()):
                raise
    try:
        yield reservation
    finally:
        if not reservation.position:  # in flight still (it raised) or appended nothing
            ledger.release(state.tenant_id, reservation)
