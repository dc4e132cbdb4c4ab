"""Schemathesis over the whole published API: no 5xx, and every response conforms to /schema.

The app runs under uvicorn in a thread of its own (Schemathesis calls it synchronously); the
schema is the one the app serves. Every operation runs twice, with a platform-admin token and
with a tenant-scoped tenant-admin token, on a few real objects so that paths can hit something.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hypothesis
import msgspec
import pytest
import requests
import schemathesis
from litestar.serialization import encode_json
from schemathesis.specs.openapi.checks import (ignored_auth, missing_required_header, negative_data_rejection,
                                               positive_data_acceptance, unsupported_method)
from test_api_support import running_api

from api.app import create_app
from infra.config import Settings

MAX_EXAMPLES = {"platform-admin": 15, "tenant-admin": 5}  # per operation; the tenant pass re-checks scoping
LIMITS_OFF = {"rate_limit_per_address": "", "rate_limit_per_principal": "", "rate_limit_login_per_address": "",
              "rate_limit_login_per_username": ""}
# Excluded, each with the reason; nothing else is.
EXCLUDED = {
    "/v1/events/stream": "an SSE stream never ends, so no response body can be read to validate it; "
                         "tests/integration/test_api_events.py covers it",
}
# Built-in checks left out, and why.
EXCLUDED_CHECKS = [
    # A tenant-scoped caller and a platform caller see the same route answer 403 / 404 for a missing
    # permission; Schemathesis' auth probe would have to know which. The authorization matrix covers it.
    ignored_auth,
    # Litestar answers methods a path does not serve with 405 and an Allow header; the probe
    # sends bodies for GET routes and expects 405 where the router has already matched (it gets 404/400).
    unsupported_method,
    # Optional headers (Idempotency-Key, Last-Event-ID) are optional: leaving them out is valid.
    missing_required_header,
    # Schema-valid requests that business rules refuse (policy, name syntax, a platform caller that must name
    # its tenant, a min_position not written yet): 400/422 by design, which this check counts as a failure.
    positive_data_acceptance,
    # Litestar reads the text "null" as an absent optional query parameter and ignores unknown query
    # parameters; bodies are strict (tests/unit/test_request_limits.py, tests/integration/test_hardening.py).
    negative_data_rejection,
]

_SCHEMA_APP = create_app(Settings(data_dir=Path("/nonexistent")))  # builds routes only: nothing is opened
# The document exactly as GET /schema/openapi.json serves it (defaults such as structs encoded to JSON).
schema = schemathesis.openapi.from_dict(msgspec.json.decode(encode_json(_SCHEMA_APP.openapi_schema.to_schema())))
for _path in EXCLUDED:
    schema = schema.exclude(path=_path)


@dataclass
class Live:
    base_url: str
    tokens: dict[str, dict[str, str]]


def _serve(tmp: Path, ready: threading.Event, stop: threading.Event, out: dict) -> None:
    async def main() -> None:
        async with running_api(tmp, max_body_bytes=1 << 20, **LIMITS_OFF) as api:
            admin = await api.admin()
            await api.create_tenant(admin, "acme")
            root = await api.client.post("/v1/cas", headers=admin, json={
                "kind": "root", "tenant_id": "acme", "name": "Root", "algorithm": "ecdsa-p384",
                "subject": {"common_name": "acme root"}})
            assert root.status_code == 201, root.text
            out["tokens"] = {"platform-admin": admin,
                             "tenant-admin": await api.token("tenant-admin", tenant_id="acme")}
            out["base_url"] = api.base_url
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    try:
        asyncio.run(main())
    except BaseException as exc:  # surfaced by the fixture instead of hanging it
        out["error"] = exc
        ready.set()


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    ready, stop, out = threading.Event(), threading.Event(), {}
    thread = threading.Thread(target=_serve, args=(tmp_path_factory.mktemp("schemathesis"), ready, stop, out),
                              daemon=True)
    thread.start()
    assert ready.wait(60), "the API did not start"
    if "error" in out:
        raise out["error"]
    try:
        yield Live(out["base_url"], out["tokens"])
    finally:
        stop.set()
        thread.join(30)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def _settings(caller: str) -> hypothesis.settings:
    return hypothesis.settings(max_examples=MAX_EXAMPLES[caller], deadline=None, database=None, derandomize=True,
                               suppress_health_check=list(hypothesis.HealthCheck))


def _check(case, live: Live, session: requests.Session, caller: str) -> None:
    case.call_and_validate(base_url=live.base_url, session=session, headers=live.tokens[caller],
                           excluded_checks=EXCLUDED_CHECKS, timeout=30)


@pytest.mark.slow
@schema.parametrize()
@_settings("platform-admin")
def test_the_api_conforms_to_its_schema(case, live, session):
    _check(case, live, session, "platform-admin")


@pytest.mark.slow
@schema.parametrize()
@_settings("tenant-admin")
def test_the_api_conforms_to_its_schema_for_a_tenant_scoped_caller(case, live, session):
    _check(case, live, session, "tenant-admin")
