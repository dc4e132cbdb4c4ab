"""Denied access (403) as audit events: one small stream per denial, so a burst never contends."""

from __future__ import annotations

import logging

from commands.authz import Principal
from commands.ids import uuid7
from commands.runtime import CommandContext, CommandResult, Services, run
from domain.access import DENIAL_STREAM_TYPE, AccessDenied, denial_stream_id
from domain.events import SYSTEM_TENANT

log = logging.getLogger(__name__)


async def record_denial(services: Services, principal: Principal, permission: str | None, tenant_id: str | None,
                        route: str, correlation_id: str | None = None) -> CommandResult | None:
    """Append ``access.denied``; never raises (a failed audit write is logged, the 403 stands regardless)."""
    denied = AccessDenied(principal=principal.id, permission=permission, tenant_id=tenant_id, route=route[:300])
    scope = principal.tenant_id or tenant_id or SYSTEM_TENANT
    try:
        return await run(services, CommandContext(principal=principal, correlation_id=correlation_id), denied,
                         tenant_id=scope, stream_id=denial_stream_id(uuid7()), stream_type=DENIAL_STREAM_TYPE,
                         fold=lambda payloads: None, decide=lambda _: [denied], presume_new=True)
    except Exception:
        log.exception("could not record an access denial", extra={"principal": principal.id, "route": route})
        return None
