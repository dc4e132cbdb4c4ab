"""infra/ssh.py against a real sshd on loopback: atomic installs, host key checking, identity and agent."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from domain.deployment import MAX_KEEP
from infra.ssh import (Endpoint, HostKey, SshError, SshOptions, child_environment, inspect, install, probe,
                       restore_generation, run)
from sshd_fixture import keygen, known_hosts_line, ssh_node  # noqa: F401 - ssh_node is a fixture


def _endpoint(node) -> Endpoint:
    return Endpoint.parse(node.destination)


def _options(node, **changes) -> SshOptions:
    return SshOptions(**{"known_hosts": node.known_hosts, "identity": node.identity, **changes})


def test_install_puts_every_file_in_place_0600_and_reports_the_host_key(ssh_node):
    remote = ssh_node.workdir / "remote" / "tls"
    files = [("keystore.jks", b"keystore bytes"), ("truststore.jks", b"truststore bytes")]
    installed, host_key = install(_endpoint(ssh_node), _options(ssh_node), str(remote), files)
    assert [(f.path, f.sha256) for f in installed] == [
        (str(remote / name), hashlib.sha256(data).hexdigest()) for name, data in files]
    for name, data in files:
        assert (remote / name).read_bytes() == data
        assert stat.S_IMODE((remote / name).stat().st_mode) == 0o600
    assert (host_key.key_type, host_key.fingerprint, host_key.first_use) == ("ssh-ed25519", ssh_node.fingerprint,
                                                                             False)
    assert sorted(p.name for p in remote.iterdir()) == ["keystore.jks", "truststore.jks"]  # no temporaries left


def test_a_second_install_keeps_the_previous_file_for_a_rollback(ssh_node):
    remote = ssh_node.workdir / "remote"
    install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.jks", b"first")])
    install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.jks", b"second")])
    assert (remote / "keystore.jks").read_bytes() == b"second"
    assert (remote / "keystore.jks.previous").read_bytes() == b"first"
    assert sorted(p.name for p in remote.iterdir()) == ["keystore.jks", "keystore.jks.previous"]


def test_a_group_makes_the_files_0640_and_group_owned(ssh_node):
    remote = ssh_node.workdir / "remote"
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout.strip()
    install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.p12", b"k")], group=group)
    info = (remote / "keystore.p12").stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert info.st_gid == os.getgid()


@pytest.mark.parametrize("known", ["another key", "no key"])
def test_a_host_key_that_is_not_the_known_one_is_refused_and_nothing_is_written(ssh_node, tmp_path, known):
    known_hosts = tmp_path / "known_hosts"
    if known == "another key":
        known_hosts.write_text(known_hosts_line(ssh_node.port, keygen(tmp_path / "impostor").with_suffix(".pub")))
    else:
        known_hosts.write_text("")
    before = known_hosts.read_text()
    remote = ssh_node.workdir / "remote"
    with pytest.raises(SshError) as refused:
        install(_endpoint(ssh_node), _options(ssh_node, known_hosts=known_hosts), str(remote), [("keystore.jks", b"k")])
    assert refused.value.stage == "connect"
    assert "Host key verification failed" in str(refused.value)
    assert not remote.exists()
    assert known_hosts.read_text() == before  # strict checking adds nothing


def test_trust_on_first_use_only_when_asked_records_the_key_it_saw(ssh_node, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    options = _options(ssh_node, known_hosts=known_hosts, accept_new_host_key=True)
    _, first = install(_endpoint(ssh_node), options, str(ssh_node.workdir / "remote"), [("a.pem", b"a")])
    assert (first.fingerprint, first.first_use) == (ssh_node.fingerprint, True)
    assert known_hosts.read_text().split()[1:] == ssh_node.known_hosts.read_text().split()[1:]
    _, again = install(_endpoint(ssh_node), options, str(ssh_node.workdir / "remote"), [("a.pem", b"b")])
    assert (again.fingerprint, again.first_use) == (ssh_node.fingerprint, False)


def test_a_failed_stage_leaves_the_installed_file_alone(ssh_node):
    remote = ssh_node.workdir / "remote"
    install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.jks", b"good")])
    (remote / "blocker").write_text("a file where a directory is wanted")
    with pytest.raises(SshError) as failed:
        install(_endpoint(ssh_node), _options(ssh_node), str(remote / "blocker" / "sub"), [("keystore.jks", b"x")])
    assert failed.value.stage == "stage"
    assert (remote / "keystore.jks").read_bytes() == b"good"
    assert sorted(p.name for p in remote.iterdir()) == ["blocker", "keystore.jks"]


def test_a_later_file_failing_to_stage_renames_none_and_removes_the_staged_ones(ssh_node):
    remote = ssh_node.workdir / "remote"
    install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.jks", b"old")])
    with pytest.raises(ValueError):  # the second name is refused after the first file was staged
        install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.jks", b"new"), ("../x", b"x")])
    assert (remote / "keystore.jks").read_bytes() == b"old"
    assert sorted(p.name for p in remote.iterdir()) == ["keystore.jks"]


def test_the_ssh_agent_authenticates_when_no_identity_file_is_given(ssh_node, tmp_path, monkeypatch):
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        with pytest.raises(SshError):  # the agent is empty: no key, no login (and no password prompt)
            run(_endpoint(ssh_node), _options(ssh_node, identity=None), "true")
        subprocess.run(["ssh-add", "-q", str(ssh_node.identity)], check=True, env={**os.environ})
        assert run(_endpoint(ssh_node), _options(ssh_node, identity=None), "echo via-agent").stdout == b"via-agent\n"
    finally:
        agent.terminate()
        agent.wait(10)


def test_the_remote_command_exit_status_and_stderr_come_back(ssh_node):
    done = run(_endpoint(ssh_node), _options(ssh_node), "echo oops >&2; exit 3")
    assert (done.returncode, done.stderr) == (3, "oops")
    assert done.host_key is not None and done.host_key.fingerprint == ssh_node.fingerprint


def test_no_password_variable_reaches_the_ssh_process(monkeypatch):
    monkeypatch.setenv("CSM_EXPORT_PASSWORD", "a-secret-password")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    environment = child_environment()
    assert "CSM_EXPORT_PASSWORD" not in environment and "a-secret-password" not in environment.values()
    assert environment["SSH_AUTH_SOCK"] == "/tmp/agent.sock"


def test_a_host_key_other_than_the_probed_one_stops_the_install_before_any_rename(ssh_node):
    remote = ssh_node.workdir / "remote"
    probed = probe(_endpoint(ssh_node), _options(ssh_node))
    assert probed == HostKey("ssh-ed25519", ssh_node.fingerprint, False)
    with pytest.raises(SshError, match="host key changed between connections"):
        install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.jks", b"k")],
                host_key=HostKey("ssh-ed25519", "SHA256:someone-else", False))
    assert list(remote.iterdir()) == []  # the staged file was removed, nothing renamed


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_inspect_reports_each_file_and_its_previous_hash_or_none(ssh_node):
    remote = ssh_node.workdir / "remote"
    install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.jks", b"first")])
    install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.jks", b"second"),
                                                                    ("truststore.jks", b"trust")])
    seen, key = inspect(_endpoint(ssh_node), _options(ssh_node), [str(remote / "keystore.jks"),
                                                                  str(remote / "truststore.jks"),
                                                                  str(remote / "absent.jks")])
    none = (None,) * (MAX_KEEP - 1)
    assert seen == [(str(remote / "keystore.jks"), _sha(b"second"), (_sha(b"first"), *none)),
                    (str(remote / "truststore.jks"), _sha(b"trust"), (None, *none)),
                    (str(remote / "absent.jks"), None, (None, *none))]
    assert key.fingerprint == ssh_node.fingerprint


def test_restore_puts_previous_back_and_keeps_the_undone_file(ssh_node):
    remote = ssh_node.workdir / "remote"
    for data in (b"first", b"second"):
        install(_endpoint(ssh_node), _options(ssh_node), str(remote), [("keystore.jks", data)])
    path = str(remote / "keystore.jks")
    restore_generation(_endpoint(ssh_node), _options(ssh_node), [(path, _sha(b"second"), _sha(b"first"))])
    assert (remote / "keystore.jks").read_bytes() == b"first"
    assert (remote / "keystore.jks.rolled-back").read_bytes() == b"second"
    assert sorted(p.name for p in remote.iterdir()) == ["keystore.jks", "keystore.jks.rolled-back"]


def test_a_file_changed_after_the_inspection_stops_the_restore_before_anything_moves(ssh_node):
    remote = ssh_node.workdir / "remote"
    for name in ("keystore.jks", "truststore.jks"):
        for data in (b"first", b"second"):
            install(_endpoint(ssh_node), _options(ssh_node), str(remote), [(name, data)])
    (remote / "truststore.jks").write_bytes(b"changed meanwhile")
    seen = [(str(remote / name), _sha(b"second"), _sha(b"first")) for name in ("keystore.jks", "truststore.jks")]
    with pytest.raises(SshError, match="changed since they were inspected"):
        restore_generation(_endpoint(ssh_node), _options(ssh_node), seen)
    assert (remote / "keystore.jks").read_bytes() == b"second"  # the first file, unchanged, was not moved either
    assert (remote / "keystore.jks.previous").read_bytes() == b"first"
    assert not list(remote.glob("*.rolled-back"))


@pytest.mark.parametrize("path", ["relative/keystore.jks", "/etc/tls/key store.jks", "/etc/tls/$(reboot)"])
def test_paths_that_are_not_plain_absolute_file_names_are_refused_before_connecting(path):
    options = SshOptions(known_hosts=Path("/nonexistent"))
    with pytest.raises(ValueError, match="not an absolute path"):
        inspect(Endpoint("u", "127.0.0.1", 1), options, [path])
    with pytest.raises(ValueError, match="not an absolute path"):
        restore_generation(Endpoint("u", "127.0.0.1", 1), options, [(path, None, "0" * 64)])
