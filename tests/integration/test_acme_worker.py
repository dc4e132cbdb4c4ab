"""ACME validation by a separate `csm worker` on Redis: the server (no job threads of its own) only sends the
challenge to the ``acme`` queue; the worker process connects, and the server records what it found, also when the
worker runs on a data directory of its own (another machine): the result comes back through Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from acme_support import Responder, acme_world, csr_der, http01, order_one, poll, registered
from prometheus_client import REGISTRY
from redis_fixture import start_redis, stop

from domain import jose

CSM = str(Path(sys.executable).parent / "csm")


@pytest.mark.parametrize("worker_dir", ["shared", "own"])
async def test_csm_worker_validates_challenges_from_redis(tmp_path, worker_dir):
    process, url = start_redis(tmp_path)
    worker = None
    try:
        async with acme_world(tmp_path, jobs="redis", redis_url=url, job_worker_threads=0) as world:
            settings = world.api.runtime.settings
            counted = REGISTRY.get_sample_value("csm_acme_validations_total", {"outcome": "valid"}) or 0
            responder = Responder(world.http01_port)
            try:
                client = await registered(world)
                order_url, authz_url = await order_one(client, "node1.acme.test")
                challenge = http01(await client.post(authz_url, None))
                responder.answers[challenge["token"]] = jose.key_authorization(challenge["token"],
                                                                               jose.thumbprint(client.jwk))
                assert (await client.post(challenge["url"], {})).json()["status"] == "processing"
                await asyncio.sleep(1.0)
                assert responder.requests == [], "the server validates nothing itself (0 job threads)"
                assert (await client.post(authz_url, None)).json()["status"] == "pending"

                env = {**os.environ, "CSM_JOBS": "redis", "CSM_REDIS_URL": url,
                       "CSM_ACME_HTTP01_PORT": str(world.http01_port), "CSM_ACME_VALIDATION_NETWORKS": "127.0.0.0/8",
                       "CSM_ACME_HOSTS_FILE": str(settings.acme_hosts_file)}
                data_dir = settings.data_dir if worker_dir == "shared" else tmp_path / "worker-data"
                if worker_dir == "own":
                    subprocess.run([CSM, "--data-dir", str(data_dir), "init"], env=env, check=True,
                                   stdout=subprocess.DEVNULL)
                worker = subprocess.Popen([CSM, "--data-dir",
                                           str(data_dir), "worker", "--threads", "2"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                assert (await poll(client, authz_url, seconds=60))["status"] == "valid"
                assert len(responder.requests) == 1
                order = await poll(client, order_url, done=("ready", "invalid"))
                der, _ = csr_der("node1.acme.test")
                done = await client.post(order["finalize"], {"csr": jose.b64url_encode(der)})
                assert done.status_code == 200 and done.json()["status"] == "valid", done.text
                validated = [e for e in await world.api.runtime.store.read_all(0, 100_000)
                             if e.type == "acme.challenge_validated"]
                assert validated[0].payload["address"] == "127.0.0.1"
                # recorded by the server's validator (whoever validated): what CsmAcmeValidationsFailing reads
                assert REGISTRY.get_sample_value("csm_acme_validations_total", {"outcome": "valid"}) == counted + 1
            finally:
                responder.close()
    finally:
        try:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                _, err = worker.communicate(timeout=60)
                assert worker.returncode == 0, err.decode()
        finally:
            stop(process)  # also when the worker failed: no redis-server left behind
