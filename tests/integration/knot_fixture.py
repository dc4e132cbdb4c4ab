"""A real authoritative DNS server, Knot DNS (Debian's knot), on a random loopback port with its own directories:
one zone that takes RFC 2136 dynamic updates signed with a TSIG key. dns-01 clients (lego --dns rfc2136, certbot
--dns-rfc2136) write their TXT records into it; the ACME server's dns-01 validation asks it."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
from redis_fixture import stop

SKIP_REASON = "knotd is not installed (Debian package knot; `make sysdeps` installs it)"
ZONE = "acme.test"
KEY_NAME = "csm-test."
ALGORITHM = "hmac-sha256"


def knotd_binary() -> str | None:
    found = shutil.which("knotd")
    if found:
        return found
    return "/usr/sbin/knotd" if os.access("/usr/sbin/knotd", os.X_OK) else None


@dataclass
class Knot:
    port: int
    zone: str
    secret: str  # the TSIG key, base64
    process: subprocess.Popen
    log: Path

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _update(self, build) -> None:
        keyring = dns.tsigkeyring.from_text({KEY_NAME: self.secret})
        update = dns.update.UpdateMessage(self.zone + ".", keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)
        build(update)
        response = dns.query.tcp(update, "127.0.0.1", port=self.port, timeout=5)
        assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())

    def set_txt(self, name: str, *values: str) -> None:
        """Replace the TXT records at ``name`` (relative to the zone or absolute) with ``values`` (RFC 2136)."""
        self._update(lambda u: u.replace(name, 60, "TXT", *(f'"{v}"' for v in values)))

    def add(self, name: str, rdtype: str, value: str) -> None:
        self._update(lambda u: u.add(name, 60, rdtype, value))

    def soa_answers(self) -> bool:
        try:
            response = dns.query.udp(dns.message.make_query(self.zone + ".", "SOA"), "127.0.0.1", port=self.port,
                                     timeout=0.5)
        except (OSError, dns.exception.Timeout):
            return False
        return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


def _free_port() -> int:
    with socket.socket() as probe:  # knotd binds UDP and TCP: a TCP port free now, its UDP twin most likely too
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_config(workdir: Path, port: int, secret: str) -> Path:
    for sub in ("run", "db", "zones"):
        (workdir / sub).mkdir(exist_ok=True)
    (workdir / "zones" / f"{ZONE}.zone").write_text(
        f"$ORIGIN {ZONE}.\n$TTL 60\n@ SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n@ NS ns.{ZONE}.\n"
        "ns A 127.0.0.1\n")
    config = workdir / "knot.conf"
    config.write_text(f"""server:
    rundir: "{workdir / 'run'}"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{workdir / 'db'}"
key:
  - id: {KEY_NAME}
    algorithm: {ALGORITHM}
    secret: {secret}
acl:
  - id: update
    key: {KEY_NAME}
    action: update
template:
  - id: default
    storage: "{workdir / 'zones'}"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: {ZONE}
    acl: update
""")
    return config


def start_knot(workdir: Path) -> Knot:
    """knotd in the foreground on 127.0.0.1 and a random port, zone ``acme.test``; skips when knot is missing."""
    binary = knotd_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    log = workdir / "knot.log"
    for _ in range(3):  # the free port may be taken between probing and binding: try another
        port = _free_port()
        config = _write_config(workdir, port, secret)
        with log.open("ab") as out:
            process = subprocess.Popen([binary, "-c", str(config)], stdout=out, stderr=out)
        knot = Knot(port=port, zone=ZONE, secret=secret, process=process, log=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            if knot.soa_answers():
                return knot
            time.sleep(0.05)
        stop(process)
    raise RuntimeError(f"knotd did not start; see {log}:\n{log.read_text()[-2000:]}")


@pytest.fixture
def knot(tmp_path):
    """A fresh knotd serving ``acme.test`` (dynamic updates with the TSIG key ``csm-test.``), stopped afterwards."""
    workdir = tmp_path / "knot"
    workdir.mkdir()
    server = start_knot(workdir)
    try:
        yield server
    finally:
        stop(server.process)
