"""The /health resource: liveness, and readiness (store writable, KEK and CA-key token reachable, read models not too
far behind)."""

from __future__ import annotations

import asyncio
import logging

from litestar import Controller, Request, get

from api.deps import read_models_of, runtime_of
from api.problems import ApiProblem, documented
from api.schemas import Liveness, Readiness
from domain.errors import DomainError
from infra.keystore.kek import KekError
from projections import cas as ca_model
from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)


async def kek_available(keys) -> bool:
    """Whether the vault's default KEK provider answers (a PKCS#11 token); the reason goes to the log only."""
    if keys is None:
        return True
    try:
        await asyncio.to_thread(keys.check)
    except KekError as exc:
        log.error("readiness: the key-encryption key provider is unavailable: %s", exc)
        return False
    return True


async def hsm_available(request: Request) -> bool:
    """Whether the PKCS#11 token answers, asked only when a CA in service keeps its key there (a token configured for
    nothing else must not make the service unready); the reason goes to the log only."""
    crypto = runtime_of(request.app.state).services.crypto
    tokens = getattr(crypto, "tokens", None)
    if tokens is None or tokens.settings is None:
        return True
    try:
        if not await read_models_of(request.app.state).inline(ca_model.any_on_token):
            return True
    except ProjectionRebuilding:  # the CA read model is being rebuilt: ask the token, as if a CA used it
        pass
    try:
        await asyncio.to_thread(tokens.check)
    except DomainError as exc:
        log.error("readiness: the PKCS#11 token holding CA keys is unavailable: %s", exc.detail)
        return False
    return True


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="The process is up")
    async def live(self) -> Liveness:
        return Liveness(status="live")

    @get("/ready", summary="The store accepts writes, the KEK answers and the read models are within the lag bound",
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
                           max_lag=runtime.settings.ready_max_lag, kek_available=await kek_available(runtime.keys),
                           hsm_available=await hsm_available(request), rebuilding=sorted(rebuilding))
        failed = next(((field, reason) for field, reason, ok in (
            ("store_writable", "the event store is not writable", report.store_writable),
            ("kek_available", "the key-encryption key provider (CSM_KEK_PROVIDER) does not answer",
             report.kek_available),
            ("hsm_available", "the PKCS#11 token that holds CA keys does not answer", report.hsm_available),
            ("lag", "the read models lag", report.lag <= report.max_lag)) if not ok), None)
        if failed is not None:
            raise ApiProblem(503, "not_ready", failed[1], field=failed[0], headers={"Retry-After": "5"},
                             store_writable=report.store_writable, kek_available=report.kek_available,
                             hsm_available=report.hsm_available, lag=report.lag, max_lag=report.max_lag)
        return report
