"""Connections to syslog collectors: TLS (RFC 5425, the collector verified), plain TCP (RFC 6587) and UDP (RFC 5426).

A TCP send returns only once the collector's TCP stack has acknowledged every byte (the socket's unacknowledged
send queue, ``TIOCOUTQ``, is empty and no error is pending): what the forwarder's checkpoint may then record.
Syslog has no application-level acknowledgement: bytes a collector's kernel acknowledged but the collector never
read (it was killed) are not detected here; the forwarder resends its last batch after every reconnection for that.
RELP (infra/siem/relp.py) has: it opens its connections with ``open_stream`` here.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import socket
import ssl
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from domain.siem import FRAMINGS

SCHEMES = {"tcp+tls": 6514, "tcp": 514, "udp": 514, "relp+tls": None, "relp": None}  # RELP has no registered port
ENCRYPTED = ("tcp+tls", "relp+tls")
ACKNOWLEDGED = ("relp", "relp+tls")  # RELP: the collector answers each message
CONNECT_TIMEOUT = 10.0
ACK_TIMEOUT = 30.0  # a collector that acknowledges nothing for this long is taken for gone: reconnect, resend
SETTLE_SECONDS = 1.0  # how long a TLS 1.3 connection waits for the collector's verdict on our certificate


class DeliveryError(Exception):
    """The collector could not be reached, was not trusted, or did not take what was sent; ``acknowledged``: how
    many of the messages given to ``send`` the collector confirmed before that (RELP; always 0 otherwise)."""

    def __init__(self, message: str, acknowledged: int = 0) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged


@dataclass(frozen=True)
class Destination:
    """Where to send: ``tcp+tls://host:6514``, ``tcp://host:514`` (plaintext), ``udp://host:514``, or RELP:
    ``relp+tls://host:port``, ``relp://host:port`` (plaintext; RELP has no default port)."""

    url: str
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Destination:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"{url!r}: the scheme is tcp+tls://, tcp://, udp://, relp+tls:// or relp://")
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(f"{url!r}: give host and port only, e.g. tcp+tls://siem.example.net:6514")
        try:
            port = parts.port or SCHEMES[parts.scheme]
        except ValueError as exc:
            raise ValueError(f"{url!r}: {exc}") from None
        if port is None:
            raise ValueError(f"{url!r}: give the collector's RELP port, e.g. {parts.scheme}://siem.example.net:2514")
        return cls(url=url, scheme=parts.scheme, host=parts.hostname, port=port)

    @property
    def encrypted(self) -> bool:
        return self.scheme in ENCRYPTED

    @property
    def acknowledged(self) -> bool:
        """The collector confirms each message it took (RELP), not only its TCP stack the bytes."""
        return self.scheme in ACKNOWLEDGED


def tls_context(ca_file: Path | None = None, cert_file: Path | None = None,
                key_file: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2 or later; the collector's certificate verified against ``ca_file`` (else the system's trust store)
    and its name against the host; ``cert_file``/``key_file``: our client certificate, for mutual TLS."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context


def unacknowledged(sock: socket.socket) -> int | None:
    """Bytes sent but not yet acknowledged by the peer (Linux ``SIOCOUTQ``), or None where it cannot be told."""
    buffer = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buffer, True)
    except (OSError, AttributeError):
        return None
    return buffer[0]


class StreamConnection:
    """A TCP or TLS connection; frames octet-counted (RFC 6587, the framing RFC 5425 requires), or LF-terminated
    for collectors that know only that."""

    def __init__(self, sock: socket.socket, ack_timeout: float, framing: str = "octet-counting") -> None:
        self.sock, self.ack_timeout, self.frame = sock, ack_timeout, FRAMINGS[framing]
        self.description = "TCP"
        if isinstance(sock, ssl.SSLSocket):
            self.description = f"{sock.version()} {(sock.cipher() or ('?',))[0]}"

    def _peer_closed(self) -> bool:
        """A collector sends nothing: a readable socket means it closed (or, on TLS 1.3, sent session tickets)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(4096)
        except (ssl.SSLWantReadError, BlockingIOError):
            return False  # only TLS handshake messages
        except OSError:
            return True
        finally:
            self.sock.settimeout(self.ack_timeout)
        return data == b""

    def send(self, messages: list[str]) -> None:
        """Send ``messages``; return once the collector's TCP acknowledged all of them (DeliveryError otherwise)."""
        if self._peer_closed():
            raise DeliveryError("the collector closed the connection")
        try:
            self.sock.sendall(b"".join(self.frame(message) for message in messages))
        except OSError as exc:
            raise DeliveryError(f"sending failed: {exc}") from exc
        self._wait_acknowledged(time.monotonic() + self.ack_timeout)

    def _wait_acknowledged(self, deadline: float) -> None:
        pause = 0.001
        while True:
            pending = unacknowledged(self.sock)
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # after the queue: a reset empties it
            if error:
                raise DeliveryError(f"the connection failed: {os.strerror(error)}")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise DeliveryError(f"the collector acknowledged nothing for {self.ack_timeout:g}s")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class DatagramConnection:
    """UDP: one message per datagram, unframed; nothing is acknowledged, so what is lost is lost."""

    description = "UDP"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, messages: list[str]) -> None:
        try:
            for message in messages:
                self.sock.send(message.encode("utf-8"))
        except OSError as exc:  # e.g. ECONNREFUSED: an ICMP port unreachable for an earlier datagram
            raise DeliveryError(f"sending failed: {exc}") from exc

    def close(self) -> None:
        self.sock.close()


def connect(destination: Destination, context: ssl.SSLContext | None, *, framing: str = "octet-counting",
            timeout: float = CONNECT_TIMEOUT, ack_timeout: float = ACK_TIMEOUT) -> StreamConnection | DatagramConnection:
    """A syslog connection to ``destination`` (TLS with ``context``; its handshake verifies the collector); RELP
    destinations connect through infra/siem/relp.py."""
    where = f"{destination.host}:{destination.port}"
    if destination.scheme == "udp":
        try:
            family, kind, proto, _, address = socket.getaddrinfo(destination.host, destination.port,
                                                                 type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.connect(address)
        except OSError as exc:
            raise DeliveryError(f"{where}: {exc}") from exc
        return DatagramConnection(sock)
    sock = open_stream(destination, context, timeout=timeout, ack_timeout=ack_timeout)
    return StreamConnection(sock, ack_timeout, framing)


def open_stream(destination: Destination, context: ssl.SSLContext | None, *, timeout: float = CONNECT_TIMEOUT,
                ack_timeout: float = ACK_TIMEOUT) -> socket.socket:
    """A TCP connection to ``destination``, TLS when it is encrypted (the collector verified, the client's
    certificate accepted); reads and writes time out after ``ack_timeout``."""
    where = f"{destination.host}:{destination.port}"
    try:
        raw = socket.create_connection((destination.host, destination.port), timeout=timeout)
    except OSError as exc:
        raise DeliveryError(f"cannot connect to {where}: {exc}") from exc
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if not destination.encrypted:
        raw.settimeout(ack_timeout)
        return raw
    if context is None:
        raw.close()
        raise ValueError(f"a {destination.scheme} destination needs a TLS context")
    sock = context.wrap_socket(raw, server_hostname=destination.host, do_handshake_on_connect=False)
    try:  # the TLS socket owns the descriptor now (``raw`` is detached)
        sock.do_handshake()
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise DeliveryError(f"TLS: {where} is not trusted, nothing was sent: {exc.verify_message or exc} "
                            "(check --ca-file, and that the collector's certificate names this host)") from exc
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise DeliveryError(f"TLS handshake with {where} failed, nothing was sent: {exc}") from exc
    _settle(sock, where)
    sock.settimeout(ack_timeout)
    return sock


def _settle(sock: ssl.SSLSocket, where: str) -> None:
    """TLS 1.3 ends the client's handshake before the collector has checked the client's certificate: wait (at most
    SETTLE_SECONDS) for its verdict, session tickets or an alert, so that a refused client sends nothing."""
    if sock.version() != "TLSv1.3":
        return
    deadline = time.monotonic() + SETTLE_SECONDS
    sock.setblocking(False)
    try:
        while (left := deadline - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
            try:
                if sock.recv(4096) == b"":
                    raise DeliveryError(f"TLS: {where} closed the connection after the handshake, nothing was sent "
                                        "(does it require a client certificate: --cert-file?)")
            except ssl.SSLWantReadError:
                return  # session tickets: it took our certificate (or asked for none)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise DeliveryError(f"TLS: {where} refused this client, nothing was sent: {exc} "
                                    "(does it require a client certificate: --cert-file?)") from exc
    except DeliveryError:
        sock.close()
        raise
