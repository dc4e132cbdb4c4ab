"""The /v1/audit resource: the audit log (read model plus full events from the store) and chain verification."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromQuery, QueryParameter

from api.deps import Caller, MinPosition, TenantQuery, page_position, read_models_of, read_your_writes, runtime_of
from api.problems import QUERY_ERRORS, ApiProblem
from api.schemas import AuditEntry, AuditPage
from commands.authz import authorize, authorize_search, visible_tenants
from commands.runtime import rfc3339
from domain.verification import Problem, VerifyReport
from projections import audit_log

Text = Annotated[str | None, QueryParameter(required=False, max_length=255)]


def _moment(value: datetime | None) -> str | None:
    """RFC 3339 in the read model's own format (UTC, microseconds); naive times are taken as UTC."""
    if value is None:
        return None
    return rfc3339(value if value.tzinfo else value.replace(tzinfo=UTC))


def _entries(request: Request, rows: list[dict]) -> list[AuditEntry]:
    """The read model's rows, each with the full event read from the store by its position."""
    store = runtime_of(request.app.state).store
    events = {event.global_position: event for event in store.read_positions_sync([row["position"] for row in rows])}
    return [msgspec.convert({**row, "event": events.get(row["position"])}, AuditEntry) for row in rows]


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]

    @get("/events", summary="Search the audit log (cursor: the global position)", responses=QUERY_ERRORS)
    async def events(self, request: Request, principal: Caller, min_position: MinPosition = None,
                     day: Annotated[date | None, QueryParameter(
                         description="a UTC day, YYYY-MM-DD (a calendar date: 2020-02-30 is refused)")] = None,
                     since: FromQuery[datetime | None] = None, until: FromQuery[datetime | None] = None,
                     stream_id: Text = None, actor: Text = None,
                     event_type: Annotated[str | None, QueryParameter(name="type", max_length=255)] = None,
                     tenant_id: TenantQuery = None, correlation_id: Text = None,
                     cursor: Annotated[int | None, QueryParameter(ge=0, description="the previous page's "
                                                                  "next_cursor")] = None,
                     after: Annotated[int | None, QueryParameter(ge=0, description="cursor's older name")] = None,
                     limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100) -> AuditPage:
        authorize_search(principal, "audit:read", tenant_id)
        await read_your_writes(request, min_position)
        filters: dict[str, Any] = {"day": day.isoformat() if day else None, "since": _moment(since), "until": _moment(until),
                                   "stream_id": stream_id, "actor": actor, "type_": event_type,
                                   "tenant_id": tenant_id, "correlation_id": correlation_id}
        rows = await read_models_of(request.app.state).query(
            audit_log.search, visible_tenants(principal), after_position=page_position(after, cursor) or 0,
            limit=limit + 1, **filters)
        items = await asyncio.to_thread(_entries, request, rows[:limit])
        return AuditPage(items=items, next_cursor=items[-1].position if len(rows) > limit else None)

    @get("/verify", summary="Re-verify every hash chain and signed checkpoint", responses=QUERY_ERRORS)
    async def verify(self, request: Request, principal: Caller) -> VerifyReport:
        authorize(principal, "audit:verify")
        report = await asyncio.to_thread(runtime_of(request.app.state).verify)
        if report.ok:
            return report
        first = report.first_problem or Problem(kind="unknown", detail="verification failed")
        raise ApiProblem(409, "audit_chain_broken", first.detail, field="stream_id",
                         kind=first.kind, stream_id=first.stream_id,
                         version=first.version, position=first.position, report=msgspec.to_builtins(report))
