"""Webhooks end to end: a real receiver on loopback checks every signature, fails the first attempts, then accepts.

The service runs under uvicorn with the in-process dramatiq worker (and, in the Redis variant,
a real redis-server); backoff is made small through settings. Waits are bounded polls of the
delivery log, never timing assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from metrics_files import lint, samples
from prometheus_client import REGISTRY
from redis_fixture import start_redis, stop
from test_api_support import assert_problem, running_api
from test_crash import free_port

from domain import webhook
from infra.webhooks.log import DeliveryLog

FAST = {"webhook_allow_loopback_http": True, "webhook_min_backoff": 0.02, "webhook_max_backoff": 0.1,
        "webhook_max_attempts": 4, "max_body_bytes": 1 << 20}


def head_of(data_dir: Path, *, but_checkpoints: bool = False) -> int:
    """The log's last position; ``but_checkpoints``: of its last event that is not an audit checkpoint (the
    checkpointer's last one, at shutdown, may land after the dispatcher's last pass: nothing to notify)."""
    import sqlite3
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'events.db'}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT max(position) FROM events" + (
            " WHERE type != 'audit.checkpoint'" if but_checkpoints else "")).fetchone()[0]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signed: bool
    answered: int


@dataclass
class Receiver:
    """An HTTP endpoint that verifies X-CSM-Signature, answers 500 to the first ``fail_first`` requests, then 204."""

    fail_first: int = 0
    script: list[str] = field(default_factory=list)  # per request: "redirect", "slow" (beyond the timeout), "ok"
    secrets: list[bytes] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    released: threading.Event = field(default_factory=threading.Event)  # set when the receiver closes

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        header = headers.get("x-csm-signature", "")
        signed = any(webhook.verify(s, header, body, int(time.time())) for s in self.secrets)
        failing = len(self.received) < self.fail_first
        status = 401 if not signed else 500 if failing else 204
        step = self.script[len(self.received)] if len(self.received) < len(self.script) else "ok"
        status = 302 if step == "redirect" and signed else status
        self.received.append(Received(headers, body, signed, status))
        if step == "slow":  # no answer before the receiver closes: beyond any per-request timeout the service has
            self.released.wait(120)
        return status


@contextlib.contextmanager
def receiver(fail_first: int = 0, script: list[str] | None = None) -> Iterator[Receiver]:
    state = Receiver(fail_first=fail_first, script=script or [])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = state.handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            if status == 302:
                self.send_header("Location", state.url + "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/csm"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()


async def setup_tenant(api, admin, tenant_id: str) -> str:
    """A tenant with a root and an issuing CA; returns the issuing CA's id."""
    await api.create_tenant(admin, tenant_id)
    ids = []
    for kind, name in (("root", "Root"), ("intermediate", "Issuing")):
        body = {"kind": kind, "tenant_id": tenant_id, "name": name, "algorithm": "ecdsa-p384",
                "subject": {"common_name": f"{tenant_id} {name}"}}
        if ids:
            body["parent_id"] = ids[-1]
        response = await api.client.post("/v1/cas", headers=admin, json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["ca_id"])
    return ids[-1]


async def issue(api, headers, tenant_id: str, ca_id: str, name: str) -> str:
    response = await api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": tenant_id, "ca_id": ca_id, "algorithm": "ecdsa-p256", "subject": {"common_name": name},
        "sans": {"dns": [name]}})
    assert response.status_code == 201, response.text
    return response.json()["certificate_id"]


async def revoke(api, headers, certificate_id: str) -> None:
    response = await api.client.post(f"/v1/certificates/{certificate_id}/revoke", headers=headers,
                                     json={"reason": "key_compromise"})
    assert response.status_code == 200, response.text


async def subscribe(api, headers, tenant_id: str, url: str, **extra) -> dict:
    response = await api.client.post("/v1/webhooks", headers=headers,
                                     json={"tenant_id": tenant_id, "url": url, **extra})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["secret"].startswith("whsec_")
    return created


async def deliveries(api, headers, tenant_id: str, webhook_id: str, *, count: int = 1,
                     final: bool = True, within: float = 60.0) -> list[dict]:
    """Poll the delivery log until ``count`` deliveries exist (and are final): a bounded wait, not a timing check."""
    deadline = time.monotonic() + within
    while True:
        response = await api.client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=headers,
                                        params={"tenant_id": tenant_id})
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        done = len(items) >= count and (not final or all(i["status"] != "pending" for i in items))
        if done or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.05)


async def _signed_retried_delivered(api) -> None:
    admin = await api.admin()
    issuing = await setup_tenant(api, admin, "acme")
    with receiver(fail_first=2) as hook:
        created = await subscribe(api, admin, "acme", hook.url, event_types=["certificate.revoked"])
        hook.secrets.append(created["secret"].encode())
        certificate = await issue(api, admin, "acme", issuing, "db1.acme.internal")
        await revoke(api, admin, certificate)
        [delivery] = await deliveries(api, admin, "acme", created["webhook_id"])
        assert delivery["status"] == "delivered", delivery
        assert delivery["attempts"] == 3 and delivery["last_status_code"] == 204
        assert [r.answered for r in hook.received] == [500, 500, 204]
        assert all(r.signed for r in hook.received), "every attempt is signed with the subscription's secret"
        assert {r.headers["x-csm-delivery"] for r in hook.received} == {delivery["delivery_id"]}
        assert {r.body for r in hook.received} == {hook.received[0].body}, "a retry sends the same document"
        document = json.loads(hook.received[0].body)
        assert document["type"] == "certificate.revoked" == hook.received[0].headers["x-csm-event"]
        assert document["subject"] == certificate and document["tenant"] == "acme"
        assert document["id"] == delivery["event_id"] and document["data"]["reason"] == "key_compromise"
        assert created["secret"] not in json.dumps(await _all_events(api)), "the secret never enters an event"


async def _all_events(api) -> list[dict]:
    events = await api.runtime.store.read_all(0, 100_000)
    return [{"type": e.type, "payload": e.payload} for e in events]


async def test_webhook_arrives_signed_and_is_retried_until_delivered(tmp_path):
    async with running_api(tmp_path, **FAST) as api:
        await _signed_retried_delivered(api)


async def test_webhooks_on_the_redis_broker(tmp_path):
    process, url = start_redis(tmp_path)
    try:
        async with running_api(tmp_path, jobs="redis", redis_url=url, **FAST) as api:
            await _signed_retried_delivered(api)
    finally:
        stop(process)


async def test_final_failure_is_recorded_and_becomes_an_event(tmp_path):
    async with running_api(tmp_path, **{**FAST, "webhook_max_attempts": 2}) as api:
        admin = await api.admin()
        issuing = await setup_tenant(api, admin, "acme")
        reported = REGISTRY.get_sample_value("csm_webhook_deliveries_failed_total") or 0
        with receiver(fail_first=100) as hook:
            created = await subscribe(api, admin, "acme", hook.url)
            hook.secrets.append(created["secret"].encode())
            await revoke(api, admin, await issue(api, admin, "acme", issuing, "db2.acme.internal"))
            [delivery] = await deliveries(api, admin, "acme", created["webhook_id"])
            assert delivery["status"] == "failed" and delivery["attempts"] == 2, delivery
            assert delivery["last_status_code"] == 500 and delivery["last_error"] == "HTTP 500"
            assert len(hook.received) == 2
            deadline = time.monotonic() + 30
            while not (failed := [e for e in await _all_events(api) if e["type"] == "webhook.delivery_failed"]):
                assert time.monotonic() < deadline, "no webhook.delivery_failed event"
                await asyncio.sleep(0.05)
            assert failed[0]["payload"]["delivery_id"] == delivery["delivery_id"]
            assert failed[0]["payload"]["attempts"] == 2 and failed[0]["payload"]["status_code"] == 500
            # counted once the dispatcher has marked the failure reported, just after its event is appended
        while REGISTRY.get_sample_value("csm_webhook_deliveries_failed_total") != reported + 1:
            assert time.monotonic() < deadline, "the failed delivery was not counted"
            await asyncio.sleep(0.02)


async def test_rotated_secret_signs_later_deliveries(tmp_path):
    async with running_api(tmp_path, **FAST) as api:
        admin = await api.admin()
        issuing = await setup_tenant(api, admin, "acme")
        with receiver() as hook:
            created = await subscribe(api, admin, "acme", hook.url)
            old = created["secret"].encode()
            rotated = await api.client.post(f"/v1/webhooks/{created['webhook_id']}/rotate-secret", headers=admin,
                                            params={"tenant_id": "acme"})
            assert rotated.status_code == 200, rotated.text
            new = rotated.json()["secret"].encode()
            assert new != old and new.startswith(b"whsec_")
            hook.secrets.append(new)
            await revoke(api, admin, await issue(api, admin, "acme", issuing, "db3.acme.internal"))
            [delivery] = await deliveries(api, admin, "acme", created["webhook_id"])
            assert delivery["status"] == "delivered", delivery
            [request] = hook.received
            assert request.signed
            assert not webhook.verify(old, request.headers["x-csm-signature"], request.body, int(time.time()))


@pytest.mark.parametrize("url, rule", [
    ("ftp://hooks.example.com/x", "url_scheme"),
    ("http://hooks.example.com/x", "url_scheme"),
    ("https://user:secret@hooks.example.com/x", "url_credentials"),
    ("https:///no-host", "invalid_url"),
    ("not a url", "invalid_url"),
    ("https://" + "a" * 2030, "invalid_url"),  # was 201, then every delivery raised in the idna codec
    ("https://169.254.169.254/latest/meta-data/", "url_host"),  # the cloud metadata service
    ("https://127.0.0.1:9/x", "url_host"),
])
async def test_bad_url_is_a_problem_naming_url(tmp_path, url, rule):
    async with running_api(tmp_path) as api:  # loopback http not allowed here
        admin = await api.admin()
        await api.create_tenant(admin, "acme")
        response = await api.client.post("/v1/webhooks", headers=admin, json={"tenant_id": "acme", "url": url})
        assert_problem(response, 400, rule, field="url")
        loopback = await api.client.post("/v1/webhooks", headers=admin,
                                         json={"tenant_id": "acme", "url": "http://127.0.0.1:9/x"})
        assert_problem(loopback, 400, "url_scheme", field="url")
        unknown = await api.client.post("/v1/webhooks", headers=admin, json={
            "tenant_id": "acme", "url": "https://hooks.example.com/x", "event_types": ["tenant.created"]})
        assert_problem(unknown, 400, "unknown_event_type", field="event_types")


async def test_internal_receivers_are_accepted_but_link_local_addresses_never(tmp_path):
    async with running_api(tmp_path, **FAST) as api:  # loopback webhooks allowed, as in tests and development
        admin = await api.admin()
        await api.create_tenant(admin, "acme")
        private = await subscribe(api, admin, "acme", "https://10.1.2.3:8443/hooks")
        await subscribe(api, admin, "acme", "https://127.0.0.1:9/hooks")
        for url in ("https://169.254.169.254/latest/meta-data/", "https://[fe80::1]/x", "https://[::ffff:a9fe:a9fe]/"):
            created = await api.client.post("/v1/webhooks", headers=admin, json={"tenant_id": "acme", "url": url})
            assert_problem(created, 400, "url_host", field="url")
            changed = await api.client.patch(f"/v1/webhooks/{private['webhook_id']}", headers=admin,
                                             params={"tenant_id": "acme"}, json={"url": url})
            assert_problem(changed, 400, "url_host", field="url")


async def test_a_host_the_delivery_cannot_encode_is_refused_when_saved(tmp_path):
    """IDNA 2003 (the standard library) maps ☃ to xn--n3h, IDNA 2008 (the HTTP client) refuses it: was 201, then
    every delivery attempt failed in the client. Checked as the delivery encodes, on create and on update."""
    async with running_api(tmp_path) as api:
        admin = await api.admin()
        await api.create_tenant(admin, "acme")
        created = await api.client.post("/v1/webhooks", headers=admin,
                                        json={"tenant_id": "acme", "url": "https://☃.example/hooks"})
        problem = assert_problem(created, 400, "invalid_url", field="url")
        assert "IDNA 2008" in problem["detail"]
        accepted = await subscribe(api, admin, "acme", "https://bücher.example/hooks")  # valid in IDNA 2008
        changed = await api.client.patch(f"/v1/webhooks/{accepted['webhook_id']}", headers=admin,
                                         params={"tenant_id": "acme"}, json={"url": "https://ｆｕｌｌ.example/"})
        assert_problem(changed, 400, "invalid_url", field="url")


async def test_tenants_never_see_or_receive_each_others_webhooks(tmp_path):
    async with running_api(tmp_path, **FAST) as api:
        admin = await api.admin()
        issuing = {t: await setup_tenant(api, admin, t) for t in ("alpha", "beta")}
        alpha = await api.token("tenant-admin", tenant_id="alpha")
        beta = await api.token("tenant-admin", tenant_id="beta")
        with receiver() as hook_a, receiver() as hook_b:
            a = await subscribe(api, alpha, "alpha", hook_a.url)
            b = await subscribe(api, beta, "beta", hook_b.url)
            hook_a.secrets.append(a["secret"].encode())
            hook_b.secrets.append(b["secret"].encode())
            listed = await api.client.get("/v1/webhooks", headers=beta, params={"min_position": b["global_position"]})
            assert [item["webhook_id"] for item in listed.json()["items"]] == [b["webhook_id"]]
            assert_problem(await api.client.get(f"/v1/webhooks/{a['webhook_id']}", headers=beta), 404)
            assert_problem(await api.client.delete(f"/v1/webhooks/{a['webhook_id']}", headers=beta), 404)
            assert_problem(await api.client.get(f"/v1/webhooks/{a['webhook_id']}/deliveries", headers=beta), 404)
            assert_problem(await api.client.get("/v1/webhooks", headers=beta, params={"tenant_id": "alpha"}), 403)
            await revoke(api, admin, await issue(api, admin, "beta", issuing["beta"], "db.beta.internal"))
            [delivered] = await deliveries(api, beta, "beta", b["webhook_id"])
            assert delivered["status"] == "delivered"
            await revoke(api, admin, await issue(api, admin, "alpha", issuing["alpha"], "db.alpha.internal"))
            [delivered] = await deliveries(api, alpha, "alpha", a["webhook_id"])
            assert delivered["status"] == "delivered"
            assert [json.loads(r.body)["tenant"] for r in hook_a.received] == ["alpha"]
            assert [json.loads(r.body)["tenant"] for r in hook_b.received] == ["beta"]
            still = await api.client.get(f"/v1/webhooks/{a['webhook_id']}", headers=alpha)
            assert still.status_code == 200 and still.json()["status"] == "active"


async def test_deleted_or_disabled_webhooks_get_nothing_and_a_restart_sends_nothing_twice(tmp_path):
    settings = {**FAST}
    with receiver() as hook:
        async with running_api(tmp_path, **settings) as api:
            admin = await api.admin()
            issuing = await setup_tenant(api, admin, "acme")
            kept = await subscribe(api, admin, "acme", hook.url)
            gone = await subscribe(api, admin, "acme", hook.url)
            off = await subscribe(api, admin, "acme", hook.url)
            hook.secrets += [kept["secret"].encode(), gone["secret"].encode(), off["secret"].encode()]
            deleted = await api.client.delete(f"/v1/webhooks/{gone['webhook_id']}", headers=admin,
                                              params={"tenant_id": "acme"})
            assert deleted.status_code == 200, deleted.text
            disabled = await api.client.patch(f"/v1/webhooks/{off['webhook_id']}", headers=admin,
                                              params={"tenant_id": "acme"}, json={"enabled": False})
            assert disabled.status_code == 200, disabled.text
            await revoke(api, admin, await issue(api, admin, "acme", issuing, "r1.acme.internal"))
            [first] = await deliveries(api, admin, "acme", kept["webhook_id"])
            assert first["status"] == "delivered"
        assert len(hook.received) == 1
        # the stopped dispatcher has passed over every event, notified or not
        assert DeliveryLog(tmp_path / "data" / "webhooks.db").checkpoint() >= head_of(tmp_path / "data",
                                                                                     but_checkpoints=True)
        async with running_api(tmp_path, **settings) as api:  # the same data dir: the dispatcher resumes
            admin = await api.admin()
            await revoke(api, admin, await issue(api, admin, "acme", issuing, "r2.acme.internal"))
            items = await deliveries(api, admin, "acme", kept["webhook_id"], count=2)
            assert [i["status"] for i in items] == ["delivered", "delivered"]
            assert len({i["event_id"] for i in items}) == 2
        assert len(hook.received) == 2, "the restart dispatched nothing that was dispatched before"
        assert len({r.headers["x-csm-delivery"] for r in hook.received}) == 2


async def test_events_before_any_subscription_are_passed_over_and_the_first_one_gets_only_later_events(tmp_path):
    """With no subscription anywhere the dispatcher moves its checkpoint on without reading the events; a
    subscription made afterwards is notified of what follows it, never of what came before."""
    with receiver() as hook:
        async with running_api(tmp_path, **FAST) as api:
            admin = await api.admin()
            issuing = await setup_tenant(api, admin, "acme")
            before = await issue(api, admin, "acme", issuing, "early.acme.internal")
            deadline = time.monotonic() + 30
            while api.runtime.webhooks.deliveries.checkpoint() < head_of(tmp_path / "data") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert api.runtime.webhooks.deliveries.checkpoint() >= head_of(tmp_path / "data")
            created = await subscribe(api, admin, "acme", hook.url)
            hook.secrets.append(created["secret"].encode())
            await revoke(api, admin, before)
            [delivery] = await deliveries(api, admin, "acme", created["webhook_id"])
            assert delivery["status"] == "delivered" and delivery["event_type"] == "certificate.revoked"
        assert [r.headers["x-csm-event"] for r in hook.received] == ["certificate.revoked"]


async def test_a_renewal_is_notified(tmp_path):
    async with running_api(tmp_path, **FAST) as api:
        admin = await api.admin()
        issuing = await setup_tenant(api, admin, "acme")
        with receiver() as hook:
            created = await subscribe(api, admin, "acme", hook.url,
                                      event_types=["certificate.renewed", "certificate.renewal_failed"])
            hook.secrets.append(created["secret"].encode())
            old = await issue(api, admin, "acme", issuing, "renew.acme.internal")
            renewed = await api.client.post(f"/v1/certificates/{old}/renew", headers=admin,
                                            json={"tenant_id": "acme"})
            assert renewed.status_code == 201, renewed.text
            [delivery] = await deliveries(api, admin, "acme", created["webhook_id"])
            assert delivery["status"] == "delivered" and delivery["event_type"] == "certificate.renewed"
            [request] = hook.received
            document = json.loads(request.body)
            assert request.signed and document["type"] == "certificate.renewed" and document["subject"] == old
            assert document["data"]["new_certificate_id"] == renewed.json()["certificate_id"]


def _job_attempts(port: int) -> dict[str, float]:
    """The worker's /metrics (open: no scrape token configured), as attempts per outcome of the webhooks actor."""
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    lint(answer.text)
    values = samples(answer.text)
    attempts = {dict(labels)["outcome"]: value for (name, labels), value in values.items()
                if name == "csm_jobs_total" and dict(labels) | {"outcome": ""} == {
                    "queue": "webhooks", "actor": "webhooks.deliver", "outcome": ""}}
    assert values[("csm_job_seconds_count", frozenset({("queue", "webhooks")}))] == sum(attempts.values())
    return attempts


async def test_a_separate_csm_worker_process_delivers_from_redis(tmp_path):
    process, url = start_redis(tmp_path)
    metrics_port = free_port()
    env = {**os.environ, "CSM_JOBS": "redis", "CSM_REDIS_URL": url, "CSM_WEBHOOK_MAX_ATTEMPTS": "4",
           "CSM_WEBHOOK_MIN_BACKOFF": "0.02", "CSM_WEBHOOK_MAX_BACKOFF": "0.1",
           "CSM_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",  # the worker delivers: to the loopback receiver only so
           "CSM_METRICS_PORT": str(metrics_port)}
    worker = None
    try:
        async with running_api(tmp_path, jobs="redis", redis_url=url, job_worker_threads=0, **FAST) as api:
            worker = subprocess.Popen([str(Path(sys.executable).parent / "csm"), "--data-dir", str(tmp_path / "data"),
                                       "worker", "--threads", "2"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
            await _signed_retried_delivered(api)
            attempts = await asyncio.to_thread(_job_attempts, metrics_port)
            assert attempts == {"retried": 2, "ok": 1}  # two answers of 500, then delivered: counted by the worker
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err.decode()
        stop(process)


async def test_redirects_are_not_followed_and_timeouts_are_retried(tmp_path):
    # the slow answer never comes, so the timeout need not be short to pass: the answers that do come must come within
    # it, also on a loaded machine (at 0.5 s, an "ok" that took longer made a fourth attempt)
    async with running_api(tmp_path, **FAST, webhook_timeout=5.0) as api:
        admin = await api.admin()
        issuing = await setup_tenant(api, admin, "acme")
        with receiver(script=["redirect", "slow", "ok"]) as hook:
            created = await subscribe(api, admin, "acme", hook.url)
            hook.secrets.append(created["secret"].encode())
            await revoke(api, admin, await issue(api, admin, "acme", issuing, "r.acme.internal"))
            [delivery] = await deliveries(api, admin, "acme", created["webhook_id"])
            assert delivery["status"] == "delivered" and delivery["attempts"] == 3, delivery
            assert [r.answered for r in hook.received] == [302, 204, 204]
            assert all(r.signed for r in hook.received)
            assert [r.headers["x-csm-attempt"] for r in hook.received] == ["1", "2", "3"]
            assert len({r.headers["x-csm-delivery"] for r in hook.received}) == 1, "the redirect was not followed"


async def test_a_pending_delivery_survives_a_restart_of_the_in_process_broker(tmp_path):
    with receiver(fail_first=1) as hook:
        async with running_api(tmp_path, **{**FAST, "webhook_min_backoff": 600, "webhook_max_backoff": 600}) as api:
            admin = await api.admin()
            issuing = await setup_tenant(api, admin, "acme")
            created = await subscribe(api, admin, "acme", hook.url)
            hook.secrets.append(created["secret"].encode())
            await revoke(api, admin, await issue(api, admin, "acme", issuing, "p.acme.internal"))
            deadline = time.monotonic() + 60
            while not (items := await deliveries(api, admin, "acme", created["webhook_id"], final=False,
                                                 within=0)) or items[0]["attempts"] < 1:
                assert time.monotonic() < deadline, items
                await asyncio.sleep(0.05)
            assert items[0]["status"] == "pending", "the retry waits ten minutes: the server stops before it"
        async with running_api(tmp_path, **FAST) as api:  # the in-memory queue died with the first server
            admin = await api.admin()
            [delivery] = await deliveries(api, admin, "acme", created["webhook_id"])
            assert delivery["status"] == "delivered" and delivery["attempts"] == 2, delivery
            assert delivery["delivery_id"] == items[0]["delivery_id"]
        assert [r.answered for r in hook.received] == [500, 204]
