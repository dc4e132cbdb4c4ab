"""Recording what endpoints served when scanned (``domain.discovery``): one stream per scan, in the tenant's scope.

The scan itself is I/O (``infra.discovery``) and runs where the scanner is, never inside the API: the server does not
connect to hosts a request names. Only recording is a command.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from commands.authz import authorize
from commands.runtime import CommandContext, CommandResult, Services, load, run
from commands.tenants import TenantId, allowed_while_suspended
from domain import discovery, tenant
from domain.discovery import Observation
from domain.errors import NotFound

ScanId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=discovery.SCAN_ID.pattern,
                                     description="the scanner's id for this scan: recording it again records nothing")]


class RecordObservations(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    scan_id: ScanId
    observations: list[Observation]


class ObservationsRecordedResult(msgspec.Struct, frozen=True, kw_only=True):
    scan_id: str
    observations: int
    events: int  # parts the scan was recorded in (0: it had been recorded already)
    result: CommandResult  # of the scan's stream: its version and the log position to read the listing at

    @property
    def replayed(self) -> bool:
        return self.result.replayed


@allowed_while_suspended("records what nodes serve: it signs, adds and hands out nothing, and a suspended tenant's "
                         "nodes are worth watching all the more")
async def record_observations(cmd: RecordObservations, ctx: CommandContext,
                              services: Services) -> ObservationsRecordedResult:
    """Append a scan's observations to its own stream; a retry of the same scan (same id and observations) appends
    nothing, another scan under a used id is refused (``scan_exists``)."""
    authorize(ctx.principal, "discovery:record", cmd.tenant_id)
    state = await load(services, cmd.tenant_id, tenant.stream_id(cmd.tenant_id), tenant.fold)
    if state.status == "absent":
        raise NotFound("tenant_not_found", f"tenant {cmd.tenant_id} does not exist", field="tenant_id")
    events, now = [], services.clock.now()

    def decide(scan: discovery.Scan) -> list:
        events[:] = discovery.decide_record(scan, cmd.scan_id, cmd.observations, now)
        return events

    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=discovery.stream_id(cmd.scan_id),
                       stream_type=discovery.STREAM_TYPE, fold=discovery.fold, decide=decide)
    return ObservationsRecordedResult(scan_id=cmd.scan_id, observations=len(cmd.observations),
                                      events=len(events) if result.changed and not result.replayed else 0,
                                      result=result)
