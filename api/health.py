"""The /health resource: liveness, and readiness (store writable, read models not too far behind, any rebuilding)."""

from __future__ import annotations

from litestar import Controller, Request, get

from api.deps import read_models_of, runtime_of
from api.problems import ApiProblem, documented
from api.schemas import Liveness, Readiness


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="The process is up")
    async def live(self) -> Liveness:
        return Liveness(status="live")

    @get("/ready", summary="The store accepts writes and the read models are within the lag bound",
         responses=documented(503))
    async def ready(self, request: Request) -> Readiness:
        runtime = runtime_of(request.app.state)
        head = await runtime.store.head_position()
        position = runtime.runner.position
        rebuilding = runtime.runner.rebuilding
        if rebuilding:  # as the checkpoints now say (an HTTP worker learns of a finished rebuild no other way)
            rebuilding = await read_models_of(request.app.state).inline(runtime.runner.guard.look)
        report = Readiness(status="ready", store_writable=runtime.store.writable(), head_position=head,
                           projection_position=position, lag=max(head - position, 0),
                           max_lag=runtime.settings.ready_max_lag, rebuilding=sorted(rebuilding))
        if not report.store_writable or report.lag > report.max_lag:
            reason = "the event store is not writable" if not report.store_writable else "the read models lag"
            raise ApiProblem(503, "not_ready", reason, field="store_writable" if not report.store_writable else "lag",
                             headers={"Retry-After": "5"},
                             store_writable=report.store_writable, lag=report.lag, max_lag=report.max_lag)
        return report
