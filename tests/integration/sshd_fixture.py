"""A real OpenSSH server on a random loopback port, as the current user, for the tests that deploy to nodes.

Its own host key, an authorized_keys holding one generated client key, and an sshd_config that
allows nothing but that key (no password, no PAM). ``known_hosts`` holds the host key as
``[127.0.0.1]:PORT``, exactly what an operator gives ``csm cluster deploy --known-hosts``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from ldap_fixture import free_port
from redis_fixture import stop

SKIP_SSHD = "sshd is not installed (Debian package openssh-server; `make sysdeps` installs it)"
SKIP_CLIENT = "the OpenSSH client (ssh, ssh-keygen) is not installed (Debian package openssh-client)"
PRIVSEP_DIR = Path("/run/sshd")  # sshd started as root chroots its pre-auth child here; systemd makes it at boot


@dataclass(frozen=True)
class SshNode:
    port: int
    user: str
    known_hosts: Path  # the server's host key, for 127.0.0.1:port
    identity: Path  # the client's private key (authorized on the server)
    identity_public: Path
    fingerprint: str  # the host key's, SHA256:...
    workdir: Path

    @property
    def destination(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"


def sshd_binary() -> str | None:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def keygen(path: Path, comment: str = "csm-test") -> Path:
    """A new ed25519 key pair at ``path`` (and ``path``.pub), no passphrase."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


def fingerprint(public_key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(public_key)], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


def known_hosts_line(port: int, public_key: Path) -> str:
    key_type, key = public_key.read_text().split()[:2]
    return f"[127.0.0.1]:{port} {key_type} {key}\n"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            return conn.recv(8).startswith(b"SSH-2.0")
    except OSError:
        return False


def _config(workdir: Path, port: int, user: str) -> Path:
    config = workdir / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {workdir / 'host_key'}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile {workdir / 'sshd.pid'}\n"
        f"AllowUsers {user}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        "AllowAgentForwarding no\nAllowTcpForwarding no\nX11Forwarding no\nPrintMotd no\nMaxStartups 50\n")
    return config


def start_sshd(workdir: Path) -> tuple[subprocess.Popen, SshNode]:
    """Start sshd -D on a free loopback port; (process, node). Skips when sshd or ssh-keygen is missing."""
    binary = sshd_binary()
    if binary is None:
        pytest.skip(SKIP_SSHD)
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip(SKIP_CLIENT)
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    user = getpass.getuser()
    host_key = keygen(workdir / "host_key", "csm-test-host")
    identity = keygen(workdir / "client_key")
    (workdir / "authorized_keys").write_text(Path(f"{identity}.pub").read_text())
    for _ in range(3):  # the free port may be taken between probing and binding: try another
        port = free_port("127.0.0.1")
        log = open(workdir / "sshd.log", "ab")
        process = subprocess.Popen([binary, "-D", "-e", "-f", str(_config(workdir, port, user))],
                                   stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(port):
                known_hosts = workdir / "known_hosts"
                known_hosts.write_text(known_hosts_line(port, Path(f"{host_key}.pub")))
                return process, SshNode(port=port, user=user, known_hosts=known_hosts, identity=identity,
                                        identity_public=Path(f"{identity}.pub"),
                                        fingerprint=fingerprint(Path(f"{host_key}.pub")), workdir=workdir)
            time.sleep(0.05)
        stop(process)
    raise RuntimeError(f"sshd did not start; see {workdir / 'sshd.log'}")


@pytest.fixture
def ssh_node(tmp_path):
    """A fresh sshd on loopback that accepts ``identity`` for the current user; stopped afterwards."""
    workdir = tmp_path / "sshd"
    workdir.mkdir()
    process, node = start_sshd(workdir)
    try:
        yield node
    finally:
        stop(process)
