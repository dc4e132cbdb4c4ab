"""A deployment whose process dies between its two final renames, made for real over a loopback sshd: its start is
recorded (``certificate.deployment_started``), its completion never, and the node holds the new keystore beside the
old truststore. Shared by the CLI's and the UI's tests of how an unfinished deployment is reported."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cli.common import command_context
from commands import deployments
from domain.certificate import DeployedFile
from infra import ssh
from infra.bootstrap import open_runtime
from infra.config import Settings


def deploy_stopped_halfway(data_dir: Path, node, *, tenant_id: str, name: str, certificate_id: str, remote: Path,
                           keep: int) -> None:
    """Deploy ``certificate_id`` to ``node`` (an sshd_fixture node) as ``name``, dying after the first rename."""
    endpoint = ssh.Endpoint.parse(node.destination)
    options = ssh.SshOptions(known_hosts=node.known_hosts, identity=node.identity)

    async def crashes_halfway(record_start) -> deployments.Delivered:
        staged = ssh.stage(endpoint, options, str(remote), [("keystore.jks", b"new keystore"),
                                                            ("truststore.jks", b"new truststore")])
        await record_start(deployments.Staging(
            files=tuple(DeployedFile(path=f.path, sha256=f.sha256) for f in staged.files),
            host_key_type=staged.host_key.key_type, host_key_fingerprint=staged.host_key.fingerprint))
        ssh.commit(endpoint, options, ssh.Staged(moves=staged.moves[:1], files=staged.files[:1],
                                                 host_key=staged.host_key), keep=keep)
        raise RuntimeError("the process died between the renames")

    runtime = open_runtime(Settings.from_env(str(data_dir)))
    try:
        command = deployments.DeployCertificate(tenant_id=tenant_id, certificate_id=certificate_id, node=name,
                                                user=node.user, host="127.0.0.1", port=node.port)
        # in a thread of its own: a caller may hold an event loop in this one (Playwright's sync API does)
        with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="died between the renames"):
            pool.submit(asyncio.run, deployments.deploy_certificate(command, command_context(), runtime.services,
                                                                    crashes_halfway)).result()
    finally:
        runtime.close()
