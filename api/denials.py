"""The access-denied audit hook: api/problems.py calls ``note_denial`` for every 403 of an authenticated caller."""

from __future__ import annotations

import asyncio
import logging

from litestar import Request

from commands.access_log import record_denial
from infra import telemetry

log = logging.getLogger(__name__)
PRINCIPAL_KEY = "csm.principal"  # set in the request scope by api.auth.authenticate (the /v1 guard)
_pending: set[asyncio.Task] = set()


def note_denial(request: Request, exc: Exception) -> None:
    """Append ``access.denied`` in the background: cheap for the response, and never failing it."""
    try:
        principal = request.scope.get(PRINCIPAL_KEY)
        runtime = getattr(request.app.state, "runtime", None)
        if principal is None or runtime is None:
            return
        telemetry.ACCESS_DENIED.labels(str(getattr(exc, "permission", None) or "none")).inc()
        tenant_id = (getattr(exc, "tenant_id", None) or request.path_params.get("tenant_id")
                     or request.query_params.get("tenant_id"))
        route = f"{request.method} {request.url.path}"
        task = asyncio.get_running_loop().create_task(
            record_denial(runtime.services, principal, getattr(exc, "permission", None),
                          tenant_id if isinstance(tenant_id, str) else None, route, telemetry.request_id_var.get()))
        _pending.add(task)
        task.add_done_callback(_pending.discard)
    except Exception:  # the 403 goes out regardless
        log.exception("could not schedule the access-denied event")


async def drain() -> None:
    """Wait for denials still being written (tests, shutdown)."""
    while _pending:
        await asyncio.gather(*list(_pending), return_exceptions=True)
