"""Real TLS servers on 127.0.0.1 for discovery tests: what a Cassandra node's TLS listener looks like to a scanner.

Each serves one certificate (and chain) from files in a thread, with Python's ``ssl`` (the system OpenSSL), until the
``with`` block ends; options make it require a client certificate (``require_client_auth``) or stop at TLS 1.2. Also a
listener that answers in something other than TLS, and a port nothing listens on.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _serve(listener: socket.socket, handle, stop: threading.Event) -> threading.Thread:
    listener.settimeout(0.1)

    def loop() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(5)
            with contextlib.suppress(OSError, ssl.SSLError), connection:
                handle(connection)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def listening(handle) -> Iterator[int]:
    """A listener on 127.0.0.1 whose connections ``handle`` takes; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    thread = _serve(listener, handle, stop)
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@contextlib.contextmanager
def tls_server(certfile: Path, keyfile: Path, *, client_ca: str | None = None,
               max_version: ssl.TLSVersion | None = None) -> Iterator[int]:
    """A TLS listener serving ``certfile`` (leaf first, then its chain); with ``client_ca`` (PEM) it requires a client
    certificate from it, as Cassandra's ``require_client_auth: true`` does."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if max_version is not None:
        context.maximum_version = max_version
    context.load_cert_chain(str(certfile), str(keyfile))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca)

    def handle(connection: socket.socket) -> None:
        with context.wrap_socket(connection, server_side=True) as tls:
            tls.recv(1)

    with listening(handle) as port:
        yield port


@contextlib.contextmanager
def plain_server() -> Iterator[int]:
    """A listener that answers like an HTTP server, not TLS (a Cassandra port with encryption off says other
    bytes, but a scan sees the same: no TLS)."""
    def handle(connection: socket.socket) -> None:
        connection.recv(1024)
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    with listening(handle) as port:
        yield port


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def self_signed(directory: Path, name: str = "stray") -> tuple[Path, Path, x509.Certificate]:
    """A self-signed certificate and key no CA of the service issued: (certfile, keyfile, certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.elsewhere.example")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
                   .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    return write_identity(directory, name, certificate.public_bytes(serialization.Encoding.PEM).decode(),
                          key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()) + (certificate,)


def write_identity(directory: Path, name: str, chain_pem: str, key_pem: str) -> tuple[Path, Path]:
    certfile, keyfile = directory / f"{name}.crt.pem", directory / f"{name}.key.pem"
    certfile.write_text(chain_pem)
    keyfile.write_text(key_pem)
    keyfile.chmod(0o600)
    return certfile, keyfile
