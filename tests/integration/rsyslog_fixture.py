"""A real syslog collector: Debian's rsyslogd on a random loopback port, with its own config and work dir.

It listens with imtcp, plain or TLS (the gtls stream driver of rsyslog-gnutls; its certificate from a CA the test
makes; ``client_auth`` requires a client certificate from that CA), reads octet-counted frames (RFC 6587) and writes
each message as received (``%rawmsg%``) to a file. Skips when rsyslogd or its TLS driver is missing.

With ``relp=True`` it listens with imrelp instead (rsyslog-relp), and its main queue is ``direct``: a message is
in the file before imrelp answers it, so what the forwarder saw confirmed survives a SIGKILL of the collector. TLS
goes through librelp: its OpenSSL driver for server authentication only (its GnuTLS driver always requires a client
certificate), its GnuTLS driver with ``client_auth``, which permits the test client's certificate by name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SKIP_REASON = "rsyslogd is not installed (Debian package rsyslog; `make sysdeps` installs it)"
GTLS_SKIP_REASON = "rsyslog's TLS driver lmnsd_gtls is not installed (Debian package rsyslog-gnutls)"
RELP_SKIP_REASON = "rsyslog's RELP input imrelp is not installed (Debian package rsyslog-relp; `make sysdeps`)"
RELP_TLS_SKIP_REASON = ("this librelp was built without {lib} (imrelp tls=\"on\" with a server certificate only "
                        "needs librelp's OpenSSL driver: its GnuTLS one requires a client certificate)")
MODULE_DIRS = [Path("/usr/lib/x86_64-linux-gnu/rsyslog"), Path("/usr/lib/aarch64-linux-gnu/rsyslog"),
               Path("/usr/lib/rsyslog")]


def rsyslogd_binary() -> str | None:
    found = shutil.which("rsyslogd")
    if found:
        return found
    return "/usr/sbin/rsyslogd" if os.access("/usr/sbin/rsyslogd", os.X_OK) else None


def has_gtls() -> bool:
    return any((d / "lmnsd_gtls.so").exists() for d in MODULE_DIRS)


def has_imrelp() -> bool:
    return any((d / "imrelp.so").exists() for d in MODULE_DIRS)


def relp_tls_libraries() -> set[str]:
    """The TLS libraries librelp links (Debian's: both): imrelp can listen with tls="on" through these."""
    found = set()
    for path in (path for d in MODULE_DIRS for path in d.parent.glob("librelp.so*")):
        data = path.read_bytes()
        found |= {name for name, symbol in (("gnutls", b"gnutls_init"), ("openssl", b"SSL_CTX_new")) if symbol in data}
    return found


def unread_bytes(port: int) -> int:
    """Bytes the kernel took for the listener on ``port`` (its accepted connections) that no process read yet:
    the receive queues of /proc/net/tcp (IPv4 loopback here)."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.rsplit(":", 1)[1], 16) == port and state == "01":  # ESTABLISHED
            total += int(queues.split(":")[1], 16)
    return total


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# a CA and certificates -------------------------------------------------------------------------------------
@dataclass
class Pki:
    """Files: ``ca`` (PEM), the collector's ``server_cert``/``server_key`` (SAN IP 127.0.0.1 and collector.test),
    a client's ``client_cert``/``client_key``, and ``other_ca``: a CA that signed none of them."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key, ca_cert, common_name: str, usage, sans) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key=None, key_path: Path | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("Test syslog CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, "collector.test", ExtendedKeyUsageOID.SERVER_AUTH,
                                    [x509.DNSName("collector.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key, client_cert = _leaf(ca_key, ca_cert, "csm-forwarder", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _, other_cert = _ca("Some other CA")
    pki = Pki(*(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key",
                                        "other-ca.pem")))
    _write(pki.ca, ca_cert)
    _write(pki.server_cert, server_cert, server_key, pki.server_key)
    _write(pki.client_cert, client_cert, client_key, pki.client_key)
    _write(pki.other_ca, other_cert)
    return pki


# the collector ---------------------------------------------------------------------------------------------
class Collector:
    """One rsyslogd; ``stop`` and ``start`` again keep its port, config and output file."""

    def __init__(self, workdir: Path, pki: Pki | None, *, client_auth: bool = False, relp: bool = False) -> None:
        self.binary = rsyslogd_binary()
        if self.binary is None:
            pytest.skip(SKIP_REASON)
        if relp and not has_imrelp():
            pytest.skip(RELP_SKIP_REASON)
        if pki is not None and not relp and not has_gtls():
            pytest.skip(GTLS_SKIP_REASON)
        self.tls_library = "gnutls" if client_auth else "openssl"  # both of librelp's drivers get exercised
        if pki is not None and relp and self.tls_library not in relp_tls_libraries():
            pytest.skip(RELP_TLS_SKIP_REASON.format(lib=self.tls_library))
        self.workdir, self.pki, self.client_auth, self.relp = workdir, pki, client_auth, relp
        (workdir / "spool").mkdir(parents=True, exist_ok=True)
        self.out = workdir / "received.log"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    def _relp_config(self) -> list[str]:
        tls = ""
        if self.pki is not None:
            tls = (f' tls="on" tls.caCert="{self.pki.ca}" tls.myCert="{self.pki.server_cert}"'
                   f' tls.myPrivKey="{self.pki.server_key}"')
            if self.client_auth:
                tls += ' tls.authMode="name" tls.permittedPeer=["csm-forwarder"]'
        library = f' tls.tlslib="{self.tls_library}"' if self.pki is not None else ""
        return ['main_queue(queue.type="direct")',  # answered only once written (see the module's docstring)
                f'module(load="imrelp"{library})',
                f'input(type="imrelp" address="127.0.0.1" port="{self.port}" maxDataSize="64k"{tls})']

    def _config(self) -> str:
        tls = ""
        driver = ""
        if self.pki is not None:
            tls = (f' defaultNetstreamDriverCAFile="{self.pki.ca}" defaultNetstreamDriverCertFile='
                   f'"{self.pki.server_cert}" defaultNetstreamDriverKeyFile="{self.pki.server_key}"')
            mode = "x509/certvalid" if self.client_auth else "anon"
            driver = f' streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="{mode}"'
        if self.relp:
            tls, inputs = "", self._relp_config()
        else:
            inputs = [f'module(load="imtcp"{driver})', f'input(type="imtcp" address="127.0.0.1" port="{self.port}")']
        return "\n".join([
            f'global(workDirectory="{self.workdir / "spool"}" maxMessageSize="64k"'
            f' parser.escapeControlCharactersOnReceive="off"{tls})',
            *inputs,
            'template(name="raw" type="string" string="%rawmsg%\\n")',
            f'action(type="omfile" file="{self.out}" template="raw" flushOnTXEnd="on" asyncWriting="off")',
            ""])

    def start(self) -> None:
        conf = self.workdir / "rsyslog.conf"
        conf.write_text(self._config())
        log = open(self.workdir / "rsyslogd.log", "ab")  # noqa: SIM115 (the child holds it)
        self.process = subprocess.Popen([self.binary, "-n", "-f", str(conf), "-i", str(self.workdir / "pid")],
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {(self.workdir / 'rsyslogd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"rsyslogd did not listen; see {self.workdir / 'rsyslogd.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # were it paused
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: it reads and answers nothing (its kernel still takes bytes) until killed or continued."""
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: gone at once, with whatever it had not yet read or written."""
        self.process.kill()
        self.process.wait()
        self.process = None
        (self.workdir / "pid").unlink(missing_ok=True)

    def lines(self) -> list[str]:
        try:
            data = self.out.read_bytes()
        except FileNotFoundError:
            return []
        return [line for line in data.decode("utf-8").split("\n") if line]

    def wait_for(self, predicate, timeout: float = 30.0) -> list[str]:
        """The received lines once ``predicate(lines)`` holds (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"the collector has {len(lines)} line(s); the condition never held; "
                                     f"log: {(self.workdir / 'rsyslogd.log').read_text()[-2000:]}")
            time.sleep(0.05)


@pytest.fixture
def syslog_pki(tmp_path) -> Pki:
    return make_pki(tmp_path / "pki")


@contextlib.contextmanager
def _running(tmp_path, name: str, pki: Pki | None, **options):
    """A started Collector in ``tmp_path / name``, stopped afterwards (also when it did not start)."""
    collector = Collector(tmp_path / name, pki, **options)
    try:
        collector.start()
        yield collector
    finally:
        collector.stop()


@pytest.fixture
def tls_collector(tmp_path, syslog_pki):
    """rsyslogd with TLS (server authentication only)."""
    with _running(tmp_path, "rsyslog-tls", syslog_pki) as collector:
        yield collector


@pytest.fixture
def mtls_collector(tmp_path, syslog_pki):
    """rsyslogd with TLS that requires a client certificate from the test CA."""
    with _running(tmp_path, "rsyslog-mtls", syslog_pki, client_auth=True) as collector:
        yield collector


@pytest.fixture
def tcp_collector(tmp_path):
    """rsyslogd on plaintext TCP."""
    with _running(tmp_path, "rsyslog-tcp", None) as collector:
        yield collector


@pytest.fixture
def relp_collector(tmp_path):
    """rsyslogd with imrelp, plaintext."""
    with _running(tmp_path, "rsyslog-relp", None, relp=True) as collector:
        yield collector


@pytest.fixture
def relp_tls_collector(tmp_path, syslog_pki):
    """rsyslogd with imrelp over TLS (server authentication only)."""
    with _running(tmp_path, "rsyslog-relp-tls", syslog_pki, relp=True) as collector:
        yield collector


@pytest.fixture
def relp_mtls_collector(tmp_path, syslog_pki):
    """rsyslogd with imrelp over TLS that permits only the test client's certificate (by its name)."""
    with _running(tmp_path, "rsyslog-relp-mtls", syslog_pki, client_auth=True, relp=True) as collector:
        yield collector
