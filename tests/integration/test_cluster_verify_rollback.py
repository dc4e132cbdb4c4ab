"""`csm cluster deploy --verify-port`, `csm cluster verify` and `csm cluster rollback` against a real sshd and real TLS
servers on loopback that serve the keystore the deployment wrote on the "node" (a local directory)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from metrics_files import assert_run, read_metrics_file
from test_cluster_deploy import _deploy, _events, _password, cluster, csm_run  # noqa: F401 - cluster is a fixture
from tls_servers import listening

from cli.cluster_rollback import SshNode
from commands import deployments
from commands.authz import Forbidden, Principal
from commands.runtime import CommandContext
from domain.certificate import VerifiedPort
from infra import ssh
from infra.bootstrap import open_runtime
from infra.config import Settings
from sshd_fixture import ssh_node  # noqa: F401 - a fixture


@contextlib.contextmanager
def node_tls(keystore: Path, password: str, *, reloads: bool) -> Iterator[int]:
    """A TLS port serving the PEM ``keystore`` (certificate, chain, encrypted key) with ``password``: read again for
    every connection (``reloads``: a node whose reload works), or once, now (a node that keeps the old one)."""
    def context() -> ssl.SSLContext | None:
        if not keystore.exists():
            return None
        made = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        made.load_cert_chain(str(keystore), password=password)
        return made

    fixed = None if reloads else context()

    def handle(connection: socket.socket) -> None:
        serving = context() if reloads else fixed
        if serving is not None:
            with serving.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)

    with listening(handle) as port:
        yield port


def _show(data: Path, certificate_id: str) -> dict:
    return json.loads(csm_run("--data-dir", str(data), "cert", "show", certificate_id, "--json"))


def _rollback(data: Path, node, *extra: str, code: int = 0) -> str:
    return csm_run("--data-dir", str(data), "cluster", "rollback", "--node", f"db-1={node.destination}",
                   "--known-hosts", str(node.known_hosts), "--identity", str(node.identity), *extra, code=code)


def _deployed_ids(data: Path) -> list[str]:
    return [e["payload"]["certificate_id"] for e in _events(data, "certificate.deployed")]


def test_deploy_then_verify_records_that_the_node_serves_the_certificate(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    with node_tls(remote / "keystore.pem", _password(out), reloads=True) as port:
        output = _deploy(data, out, ssh_node, remote, "--format", "pem", "--verify-port", str(port),
                         "--verify-within", "30", "--metrics-file", str(tmp_path / "deploy.prom"))
        [certificate_id] = _deployed_ids(data)
        assert f"verify 127.0.0.1:{port}: serves certificate {certificate_id}" in output
        assert "1 deployed, 0 failed" in output
        checked = csm_run("--data-dir", str(data), "cluster", "verify", "--node", f"db-1=127.0.0.1:{port}",
                          "--metrics-file", str(tmp_path / "verify.prom"))
    assert f"db-1: verified: certificate {certificate_id}" in checked and "1 verified, 0 not verified" in checked
    assert_run(read_metrics_file(tmp_path / "deploy.prom"), "cluster_deploy", success=True, nodes=1, nodes_failed=0)
    assert_run(read_metrics_file(tmp_path / "verify.prom"), "cluster_verify", success=True, nodes=1, nodes_failed=0)
    after_deploy, after_check = _events(data, "certificate.deployment_verified")
    assert after_deploy["payload"]["verified"] is True and after_deploy["payload"]["after"] == "deploy"
    assert after_check["payload"]["after"] == "check" and after_check["stream_id"] == f"certificate-{certificate_id}"
    [seen] = after_deploy["payload"]["ports"]
    assert seen["port"] == port and seen["matched"] is True
    assert seen["served_fingerprint"] == _show(data, certificate_id)["fingerprint"]
    shown = _show(data, certificate_id)
    assert shown["last_verified"] is True and shown["last_verified_at"] == after_check["occurred_at"]


def test_a_node_that_keeps_serving_the_old_certificate_fails_and_a_rollback_restores_it(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote, password = tmp_path / "node", _password(out)
    _deploy(data, out, ssh_node, remote, "--format", "pem")
    old_files = {name: (remote / name).read_bytes() for name in ("keystore.pem", "truststore.pem")}
    csm_run("--data-dir", str(data), "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=127.0.0.1")
    with node_tls(remote / "keystore.pem", password, reloads=False) as port:  # it never reloads
        output = _deploy(data, out, ssh_node, remote, "--format", "pem", "--verify-port", str(port),
                         "--verify-within", "2", "--metrics-file", str(tmp_path / "deploy.prom"), code=1)
        assert_run(read_metrics_file(tmp_path / "deploy.prom"), "cluster_deploy", success=False, nodes=1,
                   nodes_failed=1)
        old_id, new_id = _deployed_ids(data)
        assert old_id != new_id
        assert "db-1: NOT VERIFIED: deployed certificate" in output and "serves another certificate" in output
        assert "0 deployed, 1 failed" in output
        [failed] = _events(data, "certificate.deployment_verified")
        assert failed["payload"]["verified"] is False and failed["stream_id"] == f"certificate-{new_id}"
        assert failed["payload"]["ports"][0]["served_fingerprint"] == _show(data, old_id)["fingerprint"]
        assert _show(data, new_id)["last_verified"] is False
        checked = csm_run("--data-dir", str(data), "cluster", "verify", "--node", f"db-1=127.0.0.1:{port}",
                          "--within", "1", "--metrics-file", str(tmp_path / "verify.prom"), code=1)
        assert f"db-1: NOT VERIFIED: certificate {new_id}" in checked
        assert_run(read_metrics_file(tmp_path / "verify.prom"), "cluster_verify", success=False, nodes=1,
                   nodes_failed=1)
        new_files = {name: (remote / name).read_bytes() for name in old_files}
        output = _rollback(data, ssh_node, "--verify-port", str(port), "--verify-within", "10", "--metrics-file",
                           str(tmp_path / "rollback.prom"))
        assert f"rolled back certificate {new_id}" in output and f"restored: certificate {old_id}" in output
        assert f"verify 127.0.0.1:{port}: serves certificate {old_id}" in output
        assert "1 rolled back, 0 failed" in output
        assert_run(read_metrics_file(tmp_path / "rollback.prom"), "cluster_rollback", success=True, nodes=1,
                   nodes_failed=0)
    for name, body in old_files.items():  # byte for byte, and what was undone is kept beside
        assert (remote / name).read_bytes() == body
        assert (remote / f"{name}.rolled-back").read_bytes() == new_files[name]
        assert not (remote / f"{name}.previous").exists()
    [event] = _events(data, "certificate.deployment_rolled_back")
    payload = event["payload"]
    assert event["stream_id"] == f"certificate-{new_id}" and payload["restored_certificate_id"] == old_id
    assert payload["forced"] is False and payload["host_key_fingerprint"] == ssh_node.fingerprint
    assert {f["path"]: f["sha256"] for f in payload["files"]} == {
        str(remote / name): hashlib.sha256(body).hexdigest() for name, body in old_files.items()}
    assert _show(data, new_id)["last_rolled_back_at"] == event["occurred_at"]
    after_rollback = _events(data, "certificate.deployment_verified")[-1]
    assert after_rollback["payload"]["after"] == "rollback" and after_rollback["payload"]["verified"] is True
    assert after_rollback["stream_id"] == f"certificate-{old_id}"  # the restored certificate's
    assert _show(data, old_id)["last_deployed_node"] == "db-1"
    # the store now says db-1 holds the old certificate again; a second rollback has no .previous to go back to
    output = _rollback(data, ssh_node, "--metrics-file", str(tmp_path / "rollback.prom"), code=1)
    assert_run(read_metrics_file(tmp_path / "rollback.prom"), "cluster_rollback", success=False, nodes=1,
               nodes_failed=1)
    assert f"no_previous: node db-1 has no {remote / 'keystore.pem'}.previous" in output
    assert len(_events(data, "certificate.deployment_rolled_back")) == 1


def test_a_redeployment_of_the_same_certificate_rolls_back_to_the_earlier_one(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    _deploy(data, out, ssh_node, remote)
    first = {p.name: p.read_bytes() for p in remote.iterdir()}
    _deploy(data, out, ssh_node, remote)
    marker = tmp_path / "reloaded"
    output = _rollback(data, ssh_node, "--reload-command", f"cat {remote}/keystore.jks > {marker}")
    [certificate_id] = set(_deployed_ids(data))
    assert f"restored: certificate {certificate_id}" in output and "reload: exit 0" in output
    assert {name: (remote / name).read_bytes() for name in first} == first
    assert marker.read_bytes() == first["keystore.jks"]  # the reload ran after the files were back
    [event] = _events(data, "certificate.deployment_rolled_back")
    assert event["payload"]["reload_exit_status"] == 0 and "cat " not in json.dumps(event)


def test_a_rollback_without_previous_files_is_refused_and_changes_nothing(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    _deploy(data, out, ssh_node, remote)
    before = {p.name: p.read_bytes() for p in remote.iterdir()}
    output = _rollback(data, ssh_node, "--force", code=1)
    assert "db-1: FAILED" in output and "no_previous" in output and "0 rolled back, 1 failed" in output
    assert {p.name: p.read_bytes() for p in remote.iterdir()} == before
    assert not _events(data, "certificate.deployment_rolled_back")


def test_files_changed_by_hand_are_not_rolled_back_without_force(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    _deploy(data, out, ssh_node, remote)
    first = (remote / "keystore.jks").read_bytes()
    _deploy(data, out, ssh_node, remote)
    (remote / "keystore.jks").write_bytes(b"edited on the node")
    before = {p.name: p.read_bytes() for p in remote.iterdir()}
    output = _rollback(data, ssh_node, code=1)
    assert "files_changed" in output and f"{remote / 'keystore.jks'} on node db-1" in output
    assert {p.name: p.read_bytes() for p in remote.iterdir()} == before
    assert not _events(data, "certificate.deployment_rolled_back")
    output = _rollback(data, ssh_node, "--force")
    assert "FORCED over files changed on the node" in output
    assert (remote / "keystore.jks").read_bytes() == first
    assert (remote / "keystore.jks.rolled-back").read_bytes() == b"edited on the node"
    [event] = _events(data, "certificate.deployment_rolled_back")
    assert event["payload"]["forced"] is True


def test_a_suspended_tenant_rolls_nothing_back_and_records_nothing(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    _deploy(data, out, ssh_node, remote)
    _deploy(data, out, ssh_node, remote)
    csm_run("--data-dir", str(data), "tenant", "suspend", "platform", "--reason", "audit")
    before, files = _events(data), {p.name: p.read_bytes() for p in remote.iterdir()}
    output = _rollback(data, ssh_node, code=1)
    assert "db-1: FAILED" in output and "tenant_suspended" in output
    assert {p.name: p.read_bytes() for p in remote.iterdir()} == files
    assert len(_events(data)) == len(before)


@pytest.mark.parametrize("roles, tenant", [({"ca-operator"}, None), ({"auditor"}, None),
                                           ({"tenant-admin"}, "another-tenant")])
def test_a_caller_without_cert_deploy_is_refused_before_the_node_is_touched(cluster, ssh_node, tmp_path, roles,
                                                                            tenant):
    data, out = cluster
    remote = tmp_path / "node"
    _deploy(data, out, ssh_node, remote)
    _deploy(data, out, ssh_node, remote)
    [certificate_id] = set(_deployed_ids(data))
    before, files = _events(data), {p.name: p.read_bytes() for p in remote.iterdir()}
    SSH_CALLS.clear()
    runtime = open_runtime(Settings.from_env(str(data)))
    try:
        node = CountingNode(ssh.Endpoint.parse(ssh_node.destination),
                            ssh.SshOptions(known_hosts=ssh_node.known_hosts, identity=ssh_node.identity), None, 10)
        principal = Principal(id="someone", auth_method="api-key", roles=frozenset(roles), tenant_id=tenant)
        command = deployments.RollbackDeployment(tenant_id="platform", certificate_id=certificate_id, node="db-1",
                                                 user=ssh_node.user, host="127.0.0.1", port=ssh_node.port)
        with pytest.raises(Forbidden) as refused:
            asyncio.run(deployments.rollback_deployment(command, CommandContext(principal=principal,
                                                                                correlation_id="c"),
                                                        runtime.services, node))
        assert refused.value.permission == "cert:deploy"
        record = deployments.RecordVerification(
            tenant_id="platform", certificate_id=certificate_id, node="db-1", host="127.0.0.1", after="check",
            ports=(VerifiedPort(port=1, served_fingerprint=None, matched=False, error="refused", attempts=1),))
        if "discovery:record" not in principal.permissions or tenant is not None:
            with pytest.raises(Forbidden):
                asyncio.run(deployments.record_verification(record, CommandContext(principal=principal,
                                                                                    correlation_id="c"),
                                                            runtime.services))
    finally:
        runtime.close()
    assert SSH_CALLS == []
    assert {p.name: p.read_bytes() for p in remote.iterdir()} == files
    assert len(_events(data)) == len(before)


SSH_CALLS: list[str] = []


class CountingNode(SshNode):
    """The real port, counting its calls: a refused caller must not reach it."""

    async def inspect(self, paths):
        SSH_CALLS.append("inspect")
        return await super().inspect(paths)

    async def restore(self, files, generation):
        SSH_CALLS.append("restore")
        return await super().restore(files, generation)


def test_verify_needs_a_deployment_on_record_and_a_port(cluster, tmp_path):
    data, _ = cluster
    output = csm_run("--data-dir", str(data), "cluster", "verify", "--node", "db-1=127.0.0.1:9142", code=1)
    assert "no certificate is recorded as deployed to db-1" in output
    output = csm_run("--data-dir", str(data), "cluster", "verify", "--node", "db-1=127.0.0.1", code=2)
    assert "NAME=host:port expected" in output
    assert not _events(data, "certificate.deployment_verified")


def test_rolling_back_to_files_no_deployment_installed_restores_them_but_verifies_nothing(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    remote.mkdir()
    for name in ("keystore.jks", "truststore.jks"):  # copied there by hand before the first deployment
        (remote / name).write_bytes(f"by hand: {name}".encode())
    _deploy(data, out, ssh_node, remote)
    output = _rollback(data, ssh_node, "--verify-port", "9", code=1)
    assert "restored: files no recorded deployment installed" in output
    assert "verify: NOT VERIFIED: which certificate the restored files hold is not known" in output
    assert (remote / "keystore.jks").read_bytes() == b"by hand: keystore.jks"
    [event] = _events(data, "certificate.deployment_rolled_back")
    assert event["payload"]["restored_certificate_id"] is None
    output = csm_run("--data-dir", str(data), "cluster", "verify", "--node", "db-1=127.0.0.1:9", code=1)
    assert "db-1 holds files no recorded deployment installed (a rollback put them back" in output
    output = _rollback(data, ssh_node, code=1)
    assert "there is no recorded deployment to undo" in output
