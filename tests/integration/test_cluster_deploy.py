"""`csm cluster deploy` to a real sshd on loopback: the keystore lands atomically, keytool opens it, the deployment
is audited with the host key seen, and no password reaches an argv, an environment, the output or the store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import csm
from commands import deployments
from commands.authz import Forbidden, Principal
from commands.runtime import CommandContext
from domain.certificate import DeployedFile
from infra import ssh
from infra.bootstrap import open_runtime
from infra.config import Settings
from sshd_fixture import keygen, known_hosts_line, ssh_node  # noqa: F401 - ssh_node is a fixture

KEYTOOL, OPENSSL = shutil.which("keytool"), shutil.which("openssl")
SPAWNED: list[tuple[list[str], dict | None]] = []  # every subprocess this process starts while RECORDING
RECORDING: list[bool] = []


def _audit(event: str, args: tuple) -> None:
    if event == "subprocess.Popen" and RECORDING:
        SPAWNED.append(([str(a) for a in args[1]] if not isinstance(args[1], (str, bytes)) else [str(args[1])],
                        args[3]))


sys.addaudithook(_audit)


def csm_run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(csm, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def cluster(tmp_path):
    """An initialised data dir with bootstrap-tls's node db-1 (and its keystore password file)."""
    data, out = tmp_path / "data", tmp_path / "tls"
    csm_run("--data-dir", str(data), "init")
    csm_run("--data-dir", str(data), "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=127.0.0.1")
    return data, out


def _deploy(data: Path, out: Path, node, remote: Path, *extra: str, code: int = 0, known_hosts=None,
            name: str = "db-1") -> str:
    return csm_run("--data-dir", str(data), "cluster", "deploy", "--node", f"{name}={node.destination}",
                   "--known-hosts", str(known_hosts or node.known_hosts), "--identity", str(node.identity),
                   "--password-file", str(out / "keystore.password"), "--remote-dir", str(remote), *extra, code=code)


def _events(data: Path, type_: str | None = None) -> list[dict]:
    lines = csm_run("--data-dir", str(data), "events", "export").splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [e for e in events if type_ is None or e["type"] == type_]


def _password(out: Path) -> str:
    return (out / "keystore.password").read_text().strip()


def test_deploy_installs_the_keystore_0600_audited_with_the_host_key(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote, password = tmp_path / "node" / "tls", _password(out)
    exports_before = len(_events(data, "certificate.private_key_exported"))
    SPAWNED.clear()
    RECORDING.append(True)
    try:
        output = _deploy(data, out, ssh_node, remote)
    finally:
        RECORDING.clear()
    assert f"host key ssh-ed25519 {ssh_node.fingerprint}" in output and "1 deployed, 0 failed" in output
    assert sorted(p.name for p in remote.iterdir()) == ["keystore.jks", "truststore.jks"]
    for name in ("keystore.jks", "truststore.jks"):
        assert stat.S_IMODE((remote / name).stat().st_mode) == 0o600
    [deployed] = _events(data, "certificate.deployed")
    payload = deployed["payload"]
    assert {k: payload[k] for k in ("node", "user", "host", "port", "format", "host_key_type",
                                    "host_key_fingerprint", "host_key_first_use", "reload_exit_status")} == {
        "node": "db-1", "user": ssh_node.user, "host": "127.0.0.1", "port": ssh_node.port, "format": "jks",
        "host_key_type": "ssh-ed25519", "host_key_fingerprint": ssh_node.fingerprint, "host_key_first_use": False,
        "reload_exit_status": None}
    assert payload["files"] == [{"path": str(remote / name), "sha256": hashlib.sha256((remote / name).read_bytes())
                                 .hexdigest()} for name in ("keystore.jks", "truststore.jks")]
    assert deployed["actor"]["principal"].startswith("cli:")
    assert len(_events(data, "certificate.private_key_exported")) == exports_before + 1  # the export is audited
    shown = json.loads(csm_run("--data-dir", str(data), "cert", "show", payload["certificate_id"], "--json"))
    assert shown["last_deployed_node"] == "db-1" and shown["last_deployed_at"] == deployed["occurred_at"]
    # the password: in no process's argv or environment, not in the output, nowhere in the data directory
    ssh_calls = [argv for argv, _ in SPAWNED if argv and argv[0] == "ssh"]
    assert len(ssh_calls) >= 3, SPAWNED  # probe, stage x2, commit: the check below is not vacuous
    for argv, env in SPAWNED:
        assert not any(password in arg for arg in argv), argv
        assert env is not None and not any(password in value for value in env.values())
    assert password not in output
    for stored in data.rglob("*"):
        if stored.is_file():
            assert password.encode() not in stored.read_bytes(), stored
    if KEYTOOL:  # the node's keystore opens with the nodes' password and holds db-1's certificate from the store
        listing = subprocess.run([KEYTOOL, "-list", "-rfc", "-keystore", remote / "keystore.jks", "-storepass",
                                  password], capture_output=True, text=True)
        assert listing.returncode == 0, listing.stderr
        assert "PrivateKeyEntry" in listing.stdout
        stored_pem = csm_run("--data-dir", str(data), "cert", "show", payload["certificate_id"], "--pem")
        assert "".join(stored_pem.split()[2:-2]) in "".join(listing.stdout.split())


def test_a_second_deployment_keeps_the_previous_keystore_for_a_rollback(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    _deploy(data, out, ssh_node, remote)
    first = (remote / "keystore.jks").read_bytes()
    _deploy(data, out, ssh_node, remote)
    assert (remote / "keystore.jks.previous").read_bytes() == first
    assert (remote / "keystore.jks").read_bytes() != first  # exported afresh (new salt), same certificate
    assert len(_events(data, "certificate.deployed")) == 2


@pytest.mark.parametrize("known", ["another key", "unknown host"])
def test_a_node_whose_host_key_is_not_known_gets_nothing_and_nothing_is_recorded(cluster, ssh_node, tmp_path,
                                                                                  known):
    data, out = cluster
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(ssh_node.port, keygen(tmp_path / "impostor").with_suffix(".pub"))
                           if known == "another key" else "")
    before = _events(data)
    output = _deploy(data, out, ssh_node, tmp_path / "node", known_hosts=known_hosts, code=1)
    assert "db-1: FAILED" in output and "Host key verification failed" in output
    assert "0 deployed, 1 failed" in output
    assert not (tmp_path / "node").exists()
    assert [e["type"] for e in _events(data)] == [e["type"] for e in before]  # not even the key's export


def test_a_suspended_tenant_deploys_nothing_and_records_nothing(cluster, ssh_node, tmp_path):
    data, out = cluster
    csm_run("--data-dir", str(data), "tenant", "suspend", "platform", "--reason", "audit")
    before = _events(data)
    output = _deploy(data, out, ssh_node, tmp_path / "node", code=1)
    assert "db-1: FAILED" in output and "tenant_suspended" in output
    assert not (tmp_path / "node").exists()
    assert [e["type"] for e in _events(data)] == [e["type"] for e in before]  # not even the key's export


def test_trust_on_first_use_only_with_the_flag_prints_and_records_the_key(cluster, ssh_node, tmp_path):
    data, out = cluster
    known_hosts = tmp_path / "new_known_hosts"
    output = _deploy(data, out, ssh_node, tmp_path / "node", "--accept-new-host-key", known_hosts=known_hosts)
    assert f"{ssh_node.fingerprint}, trusted on first use and added to {known_hosts}" in output
    assert known_hosts.read_text().split()[1:] == ssh_node.known_hosts.read_text().split()[1:]
    [deployed] = _events(data, "certificate.deployed")
    assert deployed["payload"]["host_key_first_use"] is True
    assert deployed["payload"]["host_key_fingerprint"] == ssh_node.fingerprint


def test_the_reload_command_runs_after_the_install_and_its_failure_is_reported(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    marker = tmp_path / "reloaded"
    output = _deploy(data, out, ssh_node, remote, "--reload-command", f"cat {remote}/keystore.jks > {marker}")
    assert "reload: exit 0" in output and "1 deployed, 0 failed" in output
    assert marker.read_bytes() == (remote / "keystore.jks").read_bytes()  # it ran after the rename
    output = _deploy(data, out, ssh_node, remote, "--reload-command", "echo nodetool said no >&2; exit 3", code=1)
    assert "reload: exit 3: nodetool said no" in output and "0 deployed, 1 failed" in output
    statuses = [e["payload"]["reload_exit_status"] for e in _events(data, "certificate.deployed")]
    assert statuses == [0, 3]  # the files are on the node either way: both deployments are recorded
    assert all("nodetool" not in json.dumps(e) for e in _events(data, "certificate.deployed"))


def test_a_failed_node_does_not_stop_the_others_unless_asked(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    args = ["--data-dir", str(data), "cluster", "deploy", "--node", f"db-9={ssh_node.destination}", "--node",
            f"db-1={ssh_node.destination}", "--known-hosts", str(ssh_node.known_hosts), "--identity",
            str(ssh_node.identity), "--password-file", str(out / "keystore.password"), "--remote-dir", str(remote)]
    output = csm_run(*args, "--stop-on-error", code=1)
    assert "db-9: FAILED" in output and "no valid cassandra-node certificate with common name db-9" in output
    assert "db-1: SKIPPED" in output and not remote.exists()
    output = csm_run(*args, code=1)
    assert "db-9: FAILED" in output and "db-1: deployed certificate" in output
    assert "2 node(s): 1 deployed, 1 failed" in output
    assert (remote / "keystore.jks").exists()


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")
@pytest.mark.parametrize("format_", ["pkcs12", "pem"])
def test_pkcs12_and_pem_keystores_open_with_the_password(cluster, ssh_node, tmp_path, format_):
    data, out = cluster
    remote = tmp_path / "node"
    _deploy(data, out, ssh_node, remote, "--format", format_)
    suffix = "p12" if format_ == "pkcs12" else "pem"
    assert sorted(p.name for p in remote.iterdir()) == [f"keystore.{suffix}", f"truststore.{suffix}"]
    password_arg = f"file:{out / 'keystore.password'}"
    check = ([OPENSSL, "pkcs12", "-in", remote / "keystore.p12", "-passin", password_arg, "-nokeys"]
             if format_ == "pkcs12" else [OPENSSL, "pkey", "-in", remote / "keystore.pem", "-passin", password_arg,
                                          "-noout"])
    opened = subprocess.run(check, capture_output=True, text=True)
    assert opened.returncode == 0, opened.stderr
    if format_ == "pem":
        assert "ENCRYPTED PRIVATE KEY" in (remote / "keystore.pem").read_text()


@pytest.mark.parametrize("roles, tenant", [({"ca-operator"}, None), ({"auditor"}, None),
                                           ({"tenant-admin"}, "another-tenant")])
def test_a_caller_without_cert_deploy_is_refused_before_any_export_or_connection(cluster, ssh_node, tmp_path,
                                                                                 roles, tenant):
    data, _ = cluster
    remote = tmp_path / "node"
    certificate_id = _events(data, "certificate.issued")[0]["payload"]["certificate_id"]
    before = _events(data)
    runtime = open_runtime(Settings.from_env(str(data)))
    try:
        async def deliver(record_start) -> deployments.Delivered:  # the real delivery: it writes on the node
            installed, key = ssh.install(ssh.Endpoint.parse(ssh_node.destination),
                                         ssh.SshOptions(known_hosts=ssh_node.known_hosts, identity=ssh_node.identity),
                                         str(remote), [("keystore.jks", b"not for you")])
            return deployments.Delivered(files=tuple(DeployedFile(path=f.path, sha256=f.sha256) for f in installed),
                                         host_key_type=key.key_type, host_key_fingerprint=key.fingerprint,
                                         host_key_first_use=False, reload_exit_status=None)

        principal = Principal(id="someone", auth_method="api-key", roles=frozenset(roles), tenant_id=tenant)
        command = deployments.DeployCertificate(tenant_id="platform", certificate_id=certificate_id, node="db-1",
                                                user=ssh_node.user, host="127.0.0.1", port=ssh_node.port)
        with pytest.raises(Forbidden) as refused:
            asyncio.run(deployments.deploy_certificate(command, CommandContext(principal=principal,
                                                                               correlation_id="c"),
                                                       runtime.services, deliver))
        assert refused.value.permission == "cert:deploy"
    finally:
        runtime.close()
    assert not remote.exists()
    assert len(_events(data)) == len(before)


@pytest.mark.parametrize("extra, says", [
    (["--group", "-bad"], "is not a group name"),
    (["--remote-dir", "relative/tls"], "is not an absolute path"),
    (["--remote-dir", "/opt/csm/../../etc"], "is not an absolute path"),  # recorded paths must not climb out
    (["--node", "db-1=10.0.0.1"], "NAME=user@host[:port] expected"),
])
def test_bad_options_are_refused_before_anything_is_exported_or_sent(cluster, ssh_node, tmp_path, extra, says):
    data, out = cluster
    before = _events(data)
    output = _deploy(data, out, ssh_node, tmp_path / "node", *extra, code=2)
    assert says in output
    assert not (tmp_path / "node").exists() and len(_events(data)) == len(before)
