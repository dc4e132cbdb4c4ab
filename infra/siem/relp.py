"""A RELP client: domain/relp.py's frames over transport.py's TCP or TLS connection, a window of transactions.

Each syslog message is a transaction the collector answers (``rsp 200``) once it took the message: ``send``
returns when every message has been answered, or raises DeliveryError saying how many leading ones were, so the
forwarder's checkpoint moves past those only. Up to ``window`` messages are outstanding at once. A connection
that failed (a refusal, a protocol error, a timeout, a closed socket) is dropped, never reused.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

from domain.relp import FrameDecoder, ProtocolError, Window, check_open_response, encode_offers, open_offers
from infra.siem.transport import ACK_TIMEOUT, CONNECT_TIMEOUT, DeliveryError, Destination, open_stream

WINDOW = 128  # librelp's default: enough to keep a link busy, small enough to resend cheaply
CLOSE_TIMEOUT = 2.0
READ_BYTES = 65536


class RelpConnection:
    """One RELP session on a connected socket; ``open`` exchanges the offers first."""

    def __init__(self, sock: socket.socket, ack_timeout: float = ACK_TIMEOUT, window: int = WINDOW) -> None:
        self.sock, self.ack_timeout = sock, ack_timeout
        self.window, self.decoder = Window(window), FrameDecoder()
        self.broken = False
        self.description = "RELP over TCP"
        if isinstance(sock, ssl.SSLSocket):
            self.description = f"RELP over {sock.version()} {(sock.cipher() or ('?',))[0]}"

    @classmethod
    def open(cls, sock: socket.socket, *, software: str = "csm", ack_timeout: float = ACK_TIMEOUT,
             window: int = WINDOW) -> RelpConnection:
        """The session, once the collector accepted ``open`` and offers the ``syslog`` command."""
        connection = cls(sock, ack_timeout, window)
        try:
            connection._write(connection.window.send("open", encode_offers(open_offers(software))))
            connection._await(lambda: not connection.window.outstanding)
            check_open_response(connection.window.responses["open"])
        except (DeliveryError, ProtocolError) as exc:
            connection.broken = True
            connection.close()
            raise DeliveryError(f"RELP session refused: {exc}") from exc
        return connection

    def send(self, messages: list[str]) -> None:
        """Send ``messages``; return once the collector answered 200 to each (DeliveryError otherwise, with
        ``acknowledged``: how many leading messages it did answer 200)."""
        if self.broken:
            raise DeliveryError("the RELP session failed earlier")
        start = self.window.acknowledged
        try:
            for message in messages:
                self._read(block=False)  # take the answers already there
                self._await(lambda: not self.window.full)
                self._write(self.window.send("syslog", message.encode("utf-8")))
            self._await(lambda: not self.window.outstanding)
        except (DeliveryError, ProtocolError) as exc:
            self.broken = True
            raise DeliveryError(str(exc), acknowledged=self.window.acknowledged - start) from exc

    def _write(self, frame: bytes) -> None:
        try:
            self.sock.sendall(frame)
        except TimeoutError:
            raise DeliveryError(f"the collector took nothing for {self.ack_timeout:g}s") from None
        except OSError as exc:
            raise DeliveryError(f"sending failed: {exc}") from exc

    def _await(self, done) -> None:
        """Read until ``done()``; the collector must answer a transaction within ack_timeout of its last answer
        (bytes that answer nothing, hint frames say, do not count: a collector trickling them is not waited on
        for ever)."""
        deadline, outstanding = time.monotonic() + self.ack_timeout, self.window.outstanding
        try:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryError(f"the collector answered nothing for {self.ack_timeout:g}s "
                                        f"({self.window.outstanding} message(s) outstanding)")
                self.sock.settimeout(remaining)
                self._read(block=True)
                if self.window.outstanding < outstanding:  # an answer: the next one has ack_timeout again
                    deadline, outstanding = time.monotonic() + self.ack_timeout, self.window.outstanding
        finally:
            self.sock.settimeout(self.ack_timeout)

    def _read(self, *, block: bool) -> None:
        """Read what arrived (``block``: wait up to ack_timeout for something) and match its frames."""
        if not block:
            self.sock.setblocking(False)
        try:
            data = self.sock.recv(READ_BYTES)
        except (ssl.SSLWantReadError, BlockingIOError):
            return  # nothing yet (or only a TLS record's start, or session tickets)
        except TimeoutError:
            raise DeliveryError(f"the collector answered nothing for {self.ack_timeout:g}s "
                                f"({self.window.outstanding} message(s) outstanding)") from None
        except OSError as exc:
            raise DeliveryError(f"the connection failed: {exc}") from exc
        finally:
            if not block:
                self.sock.settimeout(self.ack_timeout)
        if not data:
            raise DeliveryError(f"the collector closed the connection ({self.window.outstanding} message(s) "
                                "unanswered)")
        try:
            frames = self.decoder.feed(data)
        except ProtocolError as exc:
            for frame in exc.frames:  # answers before the fault still count
                self.window.receive(frame)
            raise
        for frame in frames:
            self.window.receive(frame)

    def close(self) -> None:
        """End the session (``close``, its answer awaited briefly) and the connection."""
        try:
            if not self.broken and not self.window.outstanding:
                self.sock.settimeout(CLOSE_TIMEOUT)
                self.ack_timeout = CLOSE_TIMEOUT
                self._write(self.window.send("close"))
                deadline = time.monotonic() + CLOSE_TIMEOUT
                while "close" not in self.window.responses and time.monotonic() < deadline:
                    self._read(block=True)
        except (DeliveryError, ProtocolError):
            pass  # it is going away anyway
        finally:
            self.broken = True
            with contextlib.suppress(OSError):
                self.sock.close()


def connect(destination: Destination, context: ssl.SSLContext | None, *, software: str = "csm",
            window: int = WINDOW, timeout: float = CONNECT_TIMEOUT, ack_timeout: float = ACK_TIMEOUT) -> RelpConnection:
    """A RELP session with ``destination`` (relp:// or relp+tls://, the latter verified with ``context``)."""
    sock = open_stream(destination, context, timeout=timeout, ack_timeout=ack_timeout)
    return RelpConnection.open(sock, software=software, ack_timeout=ack_timeout, window=window)
