"""Shared fixtures for the API tests: the real app under uvicorn on a random loopback port, and tokens.

Imported by each test_api_*.py module (``from test_api_support import api``); it holds no tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from litestar import Litestar

from api.app import create_app
from api.server import build_server
from commands.authz import SYSTEM
from commands.runtime import CommandContext
from commands.tokens import IssueApiToken, issue_api_token
from infra.bootstrap import Runtime
from infra.config import Settings

PROBLEM = "application/problem+json"
# Every refusal names its field and rule: what in the request was refused (400-422), the resource it conflicts
# with (409), what is limited (429), or what is unavailable (503). Only a 500 has none: nothing was refused.
NAMED_REFUSALS = (400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 429, 503)


class Clock:
    """A clock the test moves (``offset``); the app reads it through ``services.clock``."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Api:
    app: Litestar
    client: httpx.AsyncClient
    base_url: str

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    async def token(self, *roles: str, tenant_id: str | None = None) -> dict[str, str]:
        """Authorization headers for a fresh token, usable once the read model has it."""
        issued = await issue_api_token(IssueApiToken(name="test", roles=list(roles), tenant_id=tenant_id),
                                       CommandContext(principal=SYSTEM), self.runtime.services, self.runtime.vault)
        assert await self.runtime.runner.wait_for(issued.result.global_position, 10)
        return {"Authorization": f"Bearer {issued.token}"}

    async def admin(self) -> dict[str, str]:
        return await self.token("platform-admin")

    async def create_tenant(self, headers: dict[str, str], tenant_id: str, **extra) -> dict:
        response = await self.client.post("/v1/tenants", json={"tenant_id": tenant_id, "name": tenant_id.title()},
                                          headers={**headers, **extra})
        assert response.status_code == 201, response.text
        return response.json()


def assert_problem(response: httpx.Response, status: int, code: str | None = None, field: str | None = None) -> dict:
    """The response is an RFC 9457 problem with the given status (and type suffix, and field)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers["content-type"]
    body = response.json()
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= body.keys(), body
    assert body["status"] == status and body["type"].startswith("https://csm.dev/problems/")
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["instance"] == response.request.url.path
    if code is not None:
        assert body["type"].endswith("/" + code), body["type"]
    if status in NAMED_REFUSALS:  # a refusal names what it refused, and the rule
        assert body.get("field") and body.get("errors"), body
        assert any(error["field"] == body["field"] and error["rule"] for error in body["errors"]), body
    if field is not None:
        assert body["field"] == field, body
        assert any(error["field"] == field for error in body["errors"]), body
    return body


@contextlib.asynccontextmanager
async def running_api(tmp_path, **overrides):
    """The app under uvicorn on a random port, with an httpx client; stopped afterwards."""
    options = {"port": 0, "checkpoint_interval": 0.2, "poll_interval": 0.05, "max_body_bytes": 4096,
               "read_your_writes_timeout": 10.0, **overrides}  # a bound, not a delay: returns once caught up
    settings = Settings(data_dir=tmp_path / "data", **options)
    app = create_app(settings)
    server = build_server(settings, app)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped the server
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            yield Api(app=app, client=client, base_url=base_url)
    finally:
        server.should_exit = True
        await _stopped(task)


@pytest.fixture
async def api(tmp_path):
    async with running_api(tmp_path) as running:
        yield running


@pytest.fixture
async def pki_api(tmp_path):
    """The API with a body limit that fits post-quantum CSRs and certificates (as the default settings do)."""
    async with running_api(tmp_path, max_body_bytes=1 << 20) as running:
        yield running


async def _stopped(task: asyncio.Task) -> None:
    """Wait for the server to stop; if it has not within 30 s, print every task and thread and fail (a hung
    shutdown says nothing by itself: this is how the swallowed cancellation in infra/eventstore/wakeups.py
    was found)."""
    try:
        await asyncio.wait_for(asyncio.shield(task), 30)
    except TimeoutError:
        import faulthandler
        import sys
        for t in asyncio.all_tasks():
            print("TASK", t, file=sys.stderr)
            t.print_stack(file=sys.stderr)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise


@contextlib.contextmanager
def dying_at(store, event_type: str, why: str):
    """Within it, the store refuses any append whose first event is ``event_type`` with a ConnectionError (the API
    answers 500), as a process that died at that commit point leaves things; the real append afterwards."""
    append = store.append

    async def dies(request):
        if request.events[0].type == event_type:
            raise ConnectionError(why)
        return await append(request)

    store.append = dies
    try:
        yield
    finally:
        store.append = append


# What the server's background jobs append on their own at any time: the revocation scheduler's CRLs and the audit
# checkpointer's seals (every CSM_CHECKPOINT_INTERVAL).
BACKGROUND_EVENTS = frozenset({"ca.crl_published", "audit.checkpoint"})


async def written_since(api, head: int) -> set[str]:
    """The types of the events appended after ``head`` other than the background jobs' (``BACKGROUND_EVENTS``): what
    a request wrote, for tests that a refused one wrote nothing."""
    return {e.type for e in await api.runtime.store.read_all(head, 100_000)} - BACKGROUND_EVENTS
