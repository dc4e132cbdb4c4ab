"""The Litestar application factory: controllers, auth, problem+json errors, OpenAPI, and the runtime's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, MediaType, Response, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api.acme import acme_router
from api.acme_eab import EabKeyController
from api.acme_support import RefusalNonces
from api.audit import AuditController
from api.bodies import JsonBodyRequest
from api.ca_queries import CaQueryController
from api.cas import CaController
from api.certificates import CertificateController
from api.deployments import DeploymentController
from api.profiles import AlgorithmController, ProfileController
from api.sign_in import (JwksController, SessionsController, TokenController, TokenRevocationController,
                         TotpController)
from api.auth import authenticate, bearer_guard, caller
from api.deps import ReadModels
from api.events import EventStreamController
from api.hardening import (StrictStructSchemaPlugin, correct_options_allow, cors_config,
                           refuse_unknown_query_parameters, tighten_parameters)
from api.health import HealthController
from api.identity import ServiceAccountController, UserController
from api.metrics import MetricsController, scrape_token_digest
from api.middleware import RequestContext
from api.pki_public import public_pki
from api.problems import EXCEPTION_HANDLERS, FieldError, problem_response
from api.ratelimit import LinkedBackend, RateLimits
from api.revocations import RevocationController
from api.tenants import TenantController
from api.webhooks import WebhookController
from api.webui import ui_routes
from infra.bootstrap import initialise, open_runtime
from infra.config import Settings
from infra.primary_link_client import LinkClient

API_VERSION = "0.1.0"


def _lifespan(settings: Settings, link: LinkClient | None):
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if link is None:
            runtime = await asyncio.to_thread(initialise, settings, rebuild="background")
        else:  # a worker of a multi-worker server: the primary has initialised the data directory
            runtime = await asyncio.to_thread(open_runtime, settings, link)
        app.state.runtime = runtime
        app.state.read_models = ReadModels(runtime)
        await runtime.start()
        try:
            yield
        finally:
            app.state.read_models.close()
            await runtime.stop()  # cancels the tails, writes a final checkpoint, closes the store

    return lifespan


def _openapi() -> OpenAPIConfig:
    bearer = SecurityScheme(type="http", scheme="bearer", bearer_format="JWT or csm_<key id>_<secret>",
                            description="an access token from POST /v1/auth/token, or a service account's API key "
                                        "(`csm admin create-token`)")
    return OpenAPIConfig(title="Cassandra Security Manager", version=API_VERSION, path="/schema",
                         render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"])],
                         components=Components(security_schemes={"bearer": bearer}))


async def _html_not_found_as_problem(response: Response) -> Response:
    """The OpenAPI router answers unknown /schema/* paths with HTML; every error here is problem+json.

    Async on purpose: Litestar runs a synchronous after_request hook on a thread, a hop on every request.
    """
    if response.status_code == 404 and response.media_type == MediaType.HTML:
        return problem_response(None, 404, "not_found", "no such resource", field="path",
                                errors=[FieldError("path", "not_found", "no such resource")])
    return response


def create_app(settings: Settings | None = None, link: LinkClient | None = None) -> Litestar:
    """Build the app; nothing is opened until the lifespan starts.

    ``link``: this app is an HTTP worker of a multi-worker server (api/workers.py); it appends, and
    counts rate limits (unless Redis holds them), through the primary process.
    """
    settings = settings or Settings.from_env()
    backend = LinkedBackend(link) if link is not None and not settings.redis_url else None
    limits = RateLimits(settings, backend)  # per address before routing; per principal once authenticated
    v1 = Router("/v1", route_handlers=[TenantController, AuditController, EventStreamController, CaController,
                                      CaQueryController, CertificateController, ProfileController, AlgorithmController,
                                      UserController, ServiceAccountController, TotpController, SessionsController,
                                      RevocationController, WebhookController, EabKeyController,
                                      DeploymentController],
                guards=[bearer_guard(limits.principal(authenticate))],  # before any body is read
                dependencies={"principal": Provide(caller, sync_to_thread=False)}, security=[{"bearer": []}])
    app = Litestar(
        # public_pki (CRLs, OCSP) is outside v1 on purpose: relying parties have no token.
        route_handlers=[HealthController, MetricsController, TokenController, TokenRevocationController, JwksController,
                        v1, public_pki,
                        acme_router,  # ACME: signed by account keys (JWS), no token
                        *ui_routes()],  # the browser UI: static files, a client of v1
        lifespan=[_lifespan(settings, link)],
        on_shutdown=[limits.close],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=refuse_unknown_query_parameters,  # a misspelt filter or cursor is a 400, not ignored
        after_request=_html_not_found_as_problem,
        openapi_config=_openapi(),
        request_max_body_size=settings.max_body_bytes,
        request_class=JsonBodyRequest,  # bodies decoded strictly ("30" is not a number); too deep is malformed
        logging_config=None,
        cors_config=cors_config(settings),  # off unless CSM_CORS_ORIGINS lists origins
        plugins=[StrictStructSchemaPlugin()],
        debug=False,
    )
    # Litestar's own middleware runs only for matched routes; wrapping its ASGI handler gives
    # 404s and 405s the same request id, headers, span, metrics and access log.
    app.asgi_handler = RequestContext(limits.middleware(RefusalNonces(app.asgi_handler)))
    app.state.settings = settings
    app.state.metrics_token_digest = scrape_token_digest(settings)  # a missing or weak token file stops startup
    correct_options_allow(app)
    tighten_parameters(app)
    return app
