"""Distributed mode end to end: the API on the Kafka bus (Tansu) with Redis jobs; the store stays SQLite.

Certificates are issued and revoked through the HTTP API; every event reaches the topic
(relay), comes back through the consumer group into the read models, and the read models
agree with the store. A second test runs the compose topology's split: the API with
``CSM_PROJECTOR=external`` and a separate ``csm projector`` process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from metrics_files import lint, samples
from test_cli_serve import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from kafka_fixture import kafka_bootstrap  # noqa: E402,F401
from redis_fixture import redis_url  # noqa: E402,F401
from test_api_support import running_api  # noqa: E402

pytest.importorskip("aiokafka", reason="aiokafka is not installed (the 'distributed' extra)")
pytest.importorskip("dramatiq", reason="dramatiq is not installed (the 'distributed' extra)")

from aiokafka import AIOKafkaConsumer  # noqa: E402

from commands.ids import uuid7  # noqa: E402
from infra.bus.messages import from_record, header  # noqa: E402
from infra.service_settings import KafkaSettings  # noqa: E402

pytestmark = pytest.mark.slow
WAIT = 90.0  # a bound on convergence, never a timing assertion
CSM = str(Path(sys.executable).with_name("csm"))


def kafka_settings(servers: str) -> KafkaSettings:
    # Tansu's memory storage has no InitProducerId: the idempotent producer is off against it.
    return KafkaSettings(bootstrap_servers=servers, topic=f"csm-events-{uuid7()[-12:]}", idempotent_producer=False,
                         group_id=f"projector-{uuid7()[-12:]}")


async def issue_and_revoke(api) -> tuple[list[str], list[str]]:
    """A tenant, a root and an issuing CA, six leaves, two of them revoked; (issued ids, revoked ids)."""
    admin = await api.admin()
    await api.create_tenant(admin, "acme")

    async def post(path: str, body: dict) -> dict:
        response = await api.client.post(path, headers=admin, json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    subject = {"common_name": "Acme Root", "organization": "Acme"}
    root = await post("/v1/cas", {"kind": "root", "tenant_id": "acme", "name": "Root", "algorithm": "ecdsa-p384",
                                  "subject": subject})
    inter = await post("/v1/cas", {"kind": "intermediate", "tenant_id": "acme", "name": "Issuing",
                                   "algorithm": "ecdsa-p384", "parent_id": root["ca_id"],
                                   "subject": {**subject, "common_name": "Acme Issuing"}})
    issued = []
    for n in range(6):
        name = f"node{n}.db.acme.test"
        leaf = await post("/v1/certificates", {"tenant_id": "acme", "ca_id": inter["ca_id"], "algorithm": "ecdsa-p256",
                                               "subject": {"common_name": name}, "sans": {"dns": [name]}})
        issued.append(leaf["certificate_id"])
    # Revocation finds the certificate through the read model: read its own write first (min_position).
    async with asyncio.timeout(WAIT):  # a loaded machine may need more than one bounded wait
        while (await api.client.get(f"/v1/certificates/{issued[-1]}", headers=admin,
                                    params={"min_position": leaf["global_position"]})).status_code != 200:
            await asyncio.sleep(0.05)
    for certificate_id in issued[:2]:
        await post(f"/v1/certificates/{certificate_id}/revoke", {"reason": "key_compromise"})
    return issued, issued[:2]


async def converged(api, issued: list[str], revoked: list[str]) -> None:
    """Wait until the read models have applied the whole log, then check what they say."""
    admin = await api.admin()
    head = await api.runtime.store.head_position()
    async with asyncio.timeout(WAIT):
        while not await api.runtime.runner.wait_for(head, 1.0):
            await asyncio.sleep(0.05)
    page = (await api.client.get("/v1/certificates", headers=admin, params={"tenant_id": "acme", "limit": 500,
                                                                             "min_position": head})).json()
    status = {item["certificate_id"]: item["status"] for item in page["items"]}
    assert set(issued) <= status.keys()
    assert {cid for cid in issued if status[cid] == "revoked"} == set(revoked)
    for row in api.runtime.runner.status():
        assert row["position"] >= head, row


async def topic_positions(settings: KafkaSettings, count: int) -> list[int]:
    consumer = AIOKafkaConsumer(settings.topic, bootstrap_servers=settings.bootstrap_servers,
                                group_id=f"siem-{uuid7()}", auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    positions: list[int] = []
    try:
        async with asyncio.timeout(WAIT):
            while len(set(positions)) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        envelope = from_record(record.value)
                        assert header(record.headers, "ce_id") == envelope.event_id
                        positions.append(envelope.global_position)
    finally:
        await consumer.stop()
    return positions


async def test_issue_and_revoke_on_the_kafka_bus_with_redis_jobs(tmp_path, kafka_bootstrap, redis_url):  # noqa: F811
    kafka = kafka_settings(kafka_bootstrap)
    async with running_api(tmp_path, bus="kafka", kafka=kafka, jobs="redis", redis_url=redis_url,
                           max_body_bytes=1 << 20) as api:
        assert type(api.runtime.jobs.broker).__name__ == "RedisBroker"
        issued, revoked = await issue_and_revoke(api)
        await converged(api, issued, revoked)
        head = await api.runtime.store.head_position()
    positions = await topic_positions(kafka, head)
    assert sorted(set(positions)) == list(range(1, len(set(positions)) + 1))
    assert set(range(1, head + 1)) <= set(positions)


async def scraped_projector(port: int, token: str) -> dict:
    """The projector's /metrics: refused without the scrape token, lint-free with it."""
    url = f"http://127.0.0.1:{port}/metrics"
    refused = await asyncio.to_thread(httpx.get, url, timeout=10)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    wrong = await asyncio.to_thread(httpx.get, url, headers={"Authorization": f"Bearer {token[:-1]}x"}, timeout=10)
    assert wrong.status_code == 401
    assert (await asyncio.to_thread(httpx.get, url.replace("/metrics", "/"), timeout=10)).status_code == 404
    answer = await asyncio.to_thread(httpx.get, url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    lint(answer.text)
    return samples(answer.text)


def per_projection(values: dict, name: str) -> dict[str, float]:
    return {dict(labels)["projection"]: value for (sample, labels), value in values.items() if sample == name}


async def test_the_api_follows_a_separate_projector_process(tmp_path, kafka_bootstrap, redis_url):  # noqa: F811
    kafka = kafka_settings(kafka_bootstrap)
    token, metrics_port = "t" * 40, free_port()
    (tmp_path / "scrape-token").write_text(token + "\n")
    env = {**os.environ, "CSM_DATA_DIR": str(tmp_path / "data"), "CSM_BUS": "kafka", "CSM_JOBS": "redis",
           "CSM_REDIS_URL": redis_url, "CSM_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CSM_KAFKA_TOPIC": kafka.topic,
           "CSM_KAFKA_GROUP_ID": kafka.group_id, "CSM_KAFKA_IDEMPOTENT_PRODUCER": "false", "CSM_POLL_INTERVAL": "0.05",
           "CSM_METRICS_TOKEN_FILE": str(tmp_path / "scrape-token")}
    async with running_api(tmp_path, bus="kafka", kafka=kafka, jobs="redis", redis_url=redis_url,
                           projector="external", max_body_bytes=1 << 20) as api:
        process = subprocess.Popen([CSM, "projector", "--metrics-port", str(metrics_port)], env=env,
                                   stdout=subprocess.DEVNULL,
                                   stderr=open(tmp_path / "projector.log", "wb"))  # noqa: SIM115
        try:
            issued, revoked = await issue_and_revoke(api)
            await converged(api, issued, revoked)
            healthy = await asyncio.to_thread(subprocess.run, [CSM, "projector", "--heartbeat-max-age", "60"],
                                              env=env)
            assert healthy.returncode == 0
            values = await scraped_projector(metrics_port, token)
            head = await api.runtime.store.head_position()
            positions = per_projection(values, "csm_projection_position")
            assert "certificates" in positions and 0 < min(positions.values()) <= max(positions.values()) <= head
            assert per_projection(values, "csm_projection_lag_events").keys() == positions.keys()
            assert set(per_projection(values, "csm_projection_rebuilding").values()) == {0}
            applied = values[("csm_projector_events_applied_total", frozenset())]
            assert applied >= min(positions.values()) and values[("csm_projector_batches_total", frozenset())] >= 1
            assert ("csm_projector_batch_failures_total", frozenset()) in values
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)
        assert process.returncode == 0, (tmp_path / "projector.log").read_text()
        assert f"metrics: http://127.0.0.1:{metrics_port}/metrics (bearer token)" in (tmp_path / "projector.log").read_text()
