"""A server whose certificates read model was built by another version of its projector: it serves at once.

The rebuild runs in the background (held here by taking the lock every rebuild takes). Meanwhile commands are
accepted, the other read models answer, a read of certificates answers 503 projection-rebuilding, a quota that
needs their counts fails closed, readiness and metrics say what is rebuilding; once swapped in, every read answers,
including about what was issued during the rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3

from test_api_revocation import leaf, setup
from test_api_support import assert_problem, running_api

from projections.certificates import CertificatesProjector
from projections.views_db import EMPTIED, rebuild_lock_path


def take_rebuild_lock(views):
    """The lock every rebuild takes (projections.rebuild._rebuild_lock), held until the returned file is closed."""
    lock = open(rebuild_lock_path(views), "a")  # noqa: SIM115 (released by closing it)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def built_by_older_code(views) -> None:
    """As if the certificates projector's version had changed since these tables were built."""
    with contextlib.closing(sqlite3.connect(views)) as conn:
        conn.execute("UPDATE projection_checkpoints SET version = ? WHERE name = 'certificates'",
                     (CertificatesProjector.version - 1,))
        conn.commit()


async def test_a_changed_read_model_is_rebuilt_while_the_server_serves(tmp_path):
    options = {"max_body_bytes": 1 << 20}
    async with running_api(tmp_path, **options) as api:
        admin, _root, inter = await setup(api)
        before = await leaf(api, admin, inter, "before.acme.internal")
        token = await api.token("platform-admin")
        written = await api.runtime.store.head_position()
    views = tmp_path / "data" / "views.db"
    built_by_older_code(views)

    lock = take_rebuild_lock(views)
    try:
        async with running_api(tmp_path, **options) as api:
            assert api.runtime.runner.rebuilding == {"certificates"}
            ready = await api.client.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["rebuilding"] == ["certificates"], ready.text
            assert ready.json()["projection_position"] >= written  # the others are current, not held back at 0

            for path, params in ((f"/v1/certificates/{before['certificate_id']}", {}),
                                 ("/v1/certificates", {"tenant_id": "acme"})):
                refused = await api.client.get(path, headers=token, params=params)
                body = assert_problem(refused, 503, "projection-rebuilding", field="read_model")
                assert body["projections"] == ["certificates"] and "being rebuilt" in body["detail"]
                assert refused.headers["retry-after"] == "5"
            # the CA read model answers; a command is accepted and written
            assert (await api.client.get(f"/v1/cas/{inter}", headers=token)).status_code == 200
            during = await issue(api, token, inter, "during.acme.internal")
            assert during.status_code == 201, during.text
            during = during.json()
            # a quota counted on the certificates read model cannot be checked: refused, not guessed
            quotas = await api.client.put("/v1/tenants/acme/quotas", headers=token, json={"max_certificates": 10})
            assert quotas.status_code == 200, quotas.text
            body = assert_problem(await issue(api, token, inter, "q.acme.internal"), 503, "usage_unknown",
                                  field="tenant_id")
            assert "being rebuilt" in body["detail"]
            metrics = (await api.client.get("/metrics")).text
            assert 'csm_projection_rebuilding{projection="certificates"} 1.0' in metrics
            assert 'csm_projection_rebuilding{projection="cas"} 0.0' in metrics
            assert version_of(views) == EMPTIED

            lock.close()  # the rebuild runs now, while the server serves
            for _ in range(200):
                ready = (await api.client.get("/health/ready")).json()
                if not ready["rebuilding"]:
                    break
                await asyncio.sleep(0.05)
            assert ready["rebuilding"] == [] and version_of(views) == CertificatesProjector.version
            listed = await api.client.get("/v1/certificates", headers=token, params={"tenant_id": "acme"})
            assert listed.status_code == 200, listed.text
            assert {row["common_name"] for row in listed.json()["items"]} == {"before.acme.internal",
                                                                             "during.acme.internal"}
            row = await api.client.get(f"/v1/certificates/{during['certificate_id']}", headers=token)
            assert row.status_code == 200 and row.json()["status"] == "issued", row.text
            # counted again: the quota passes
            assert (await issue(api, token, inter, "q.acme.internal")).status_code == 201
            metrics = (await api.client.get("/metrics")).text
            assert 'csm_projection_rebuilding{projection="certificates"} 0.0' in metrics
    finally:
        lock.close()


def issue(api, headers, ca_id, name):
    return api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": "acme", "ca_id": ca_id, "algorithm": "ecdsa-p256", "subject": {"common_name": name},
        "sans": {"dns": [name]}})


def version_of(views) -> int:
    with contextlib.closing(sqlite3.connect(views)) as conn:
        return conn.execute("SELECT version FROM projection_checkpoints WHERE name = 'certificates'").fetchone()[0]


async def test_a_server_stopped_while_its_rebuild_waits_stops_and_the_next_start_rebuilds(tmp_path):
    async with running_api(tmp_path) as api:
        admin = await api.admin()
        await api.create_tenant(admin, "acme")
    views = tmp_path / "data" / "views.db"
    built_by_older_code(views)
    lock = take_rebuild_lock(views)
    try:
        async with running_api(tmp_path) as api:
            assert api.runtime.runner.rebuilding == {"certificates"}
        assert version_of(views) == EMPTIED  # stopped (promptly: its rebuild was waiting) before it rebuilt
    finally:
        lock.close()
    async with running_api(tmp_path) as api:
        for _ in range(200):
            if not api.runtime.runner.rebuilding:
                break
            await asyncio.sleep(0.05)
        assert version_of(views) == CertificatesProjector.version
        listed = await api.client.get("/v1/certificates", headers=admin, params={"tenant_id": "acme"})
        assert listed.status_code == 200 and listed.json()["items"] == [], listed.text
