"""A deployment whose process dies between its two final renames, made for real over a loopback sshd: its start is
recorded (``certificate.deployment_started``), its completion never, nor any failure (a process that dies writes
nothing more), and the node holds the new keystore beside the old truststore. Shared by the CLI's and the UI's tests
of how an unfinished deployment is reported.

The deployment runs in a child Python process that ends itself with ``os._exit`` right after the first rename, as a
killed one would: no exception is raised in it, so nothing in the command handler gets to record anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KILLED = 70  # the child's exit status once it has died halfway


def deploy_stopped_halfway(data_dir: Path, node, *, tenant_id: str, name: str, certificate_id: str, remote: Path,
                           keep: int) -> None:
    """Deploy ``certificate_id`` to ``node`` (an sshd_fixture node) as ``name``, dying after the first rename."""
    arguments = {"data_dir": str(data_dir), "destination": node.destination, "known_hosts": str(node.known_hosts),
                 "identity": str(node.identity), "user": node.user, "port": node.port, "tenant_id": tenant_id,
                 "name": name, "certificate_id": certificate_id, "remote": str(remote), "keep": keep}
    done = subprocess.run([sys.executable, __file__, json.dumps(arguments)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)
    assert done.returncode == KILLED, done.stderr


def _die_halfway(arguments: dict) -> None:
    from cli.common import command_context
    from commands import deployments
    from domain.certificate import DeployedFile
    from infra import ssh
    from infra.bootstrap import open_runtime
    from infra.config import Settings

    endpoint = ssh.Endpoint.parse(arguments["destination"])
    options = ssh.SshOptions(known_hosts=Path(arguments["known_hosts"]), identity=Path(arguments["identity"]))

    async def dies_halfway(record_start) -> deployments.Delivered:
        staged = ssh.stage(endpoint, options, arguments["remote"], [("keystore.jks", b"new keystore"),
                                                                    ("truststore.jks", b"new truststore")])
        await record_start(deployments.Staging(
            files=tuple(DeployedFile(path=f.path, sha256=f.sha256) for f in staged.files),
            host_key_type=staged.host_key.key_type, host_key_fingerprint=staged.host_key.fingerprint))
        ssh.commit(endpoint, options, ssh.Staged(moves=staged.moves[:1], files=staged.files[:1],
                                                 host_key=staged.host_key), keep=arguments["keep"])
        os._exit(KILLED)  # killed between the renames: no exception, no cleanup, nothing more recorded

    runtime = open_runtime(Settings.from_env(arguments["data_dir"]))
    command = deployments.DeployCertificate(tenant_id=arguments["tenant_id"], certificate_id=arguments["certificate_id"],
                                            node=arguments["name"], user=arguments["user"], host="127.0.0.1",
                                            port=arguments["port"], keep=arguments["keep"])
    asyncio.run(deployments.deploy_certificate(command, command_context(), runtime.services, dies_halfway))
    runtime.close()
    sys.exit("the deployment did not stop halfway")


if __name__ == "__main__":
    _die_halfway(json.loads(sys.argv[1]))
