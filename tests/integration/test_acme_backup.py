"""`csm backup` leaves the ACME server's nonces and pending validation results out (cli/backup.py says why): after
a restore, a nonce handed out before the backup is refused (``badNonce``, with a fresh one), and a challenge started
before the backup and not yet validated is validated again by the restored server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from acme_support import acme_world, poll, registered, restarted, started_challenge

from domain import acme_authz

CONSOLE_SCRIPT = Path(sys.executable).parent / "csm"
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


def csm(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}
    run = subprocess.run([*CSM, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=120,
                         env=env, cwd=data_dir.parent)
    assert run.returncode == 0, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    return run


async def test_a_restore_without_nonces_and_results_refuses_old_nonces_and_validates_again(tmp_path):
    source, backup, target = tmp_path / "source", tmp_path / "backup", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    async with acme_world(source, job_worker_threads=0) as world:  # nothing validates here
        client = await registered(world)
        authz_url, challenge = await started_challenge(client, "node1.acme.test")
        spare_nonce = (await client.http.head(client.directory["newNonce"])).headers["Replay-Nonce"]
        # a job's result not yet recorded when the backup is taken: the validator's loop stopped, it stays there
        runtime = world.api.runtime
        [task] = [t for t in runtime.tasks if t.get_name() == "acme-validator"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        authz_id = authz_url.rsplit("/", 1)[-1]
        runtime.acme_validator.results.put(world.tenant, authz_id, acme_authz.ChallengeFailed(
            challenge_id=challenge["url"].rsplit("/", 1)[-1], error_type="connection", detail="pending at backup"))
        await world.api.runtime.runner.wait_for(await world.api.runtime.store.head_position(), 10)
        csm(source / "data", "backup", str(backup))
    files = json.loads((backup / "manifest.json").read_text())["files"]
    assert "events.db" in files and not {"acme-nonces.db", "acme-validations.db"} & set(files)
    assert not (backup / "acme-nonces.db").exists() and not (backup / "acme-validations.db").exists()
    csm(target / "data", "restore", str(backup))

    async with restarted(world, target, client, challenge) as again:
        authz_url = again.url(authz_url)
        refused = await again.client.post(authz_url, None, nonce=spare_nonce)
        assert refused.status_code == 400 and refused.json()["type"].endswith(":badNonce"), refused.text
        assert refused.headers["Replay-Nonce"] != spare_nonce  # the client retries with this one
        # validated anew (the result pending at the backup was not restored, so it is not what decides)
        assert (await poll(again.client, authz_url))["status"] == "valid"
        assert len(again.responder.requests) == 1
