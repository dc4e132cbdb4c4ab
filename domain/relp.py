"""RELP (the Reliable Event Logging Protocol, rsyslog's imrelp) without I/O: frames, offers, responses, the window.

A frame is ``TXNR SP COMMAND SP DATALEN [SP DATA] LF`` (TXNR and DATALEN 1-9 digits, COMMAND 1-32 letters, the
SP and DATA present only when DATALEN > 0). ``FrameDecoder`` takes bytes as they arrive and returns whole frames,
or raises ``ProtocolError`` as soon as the bytes cannot begin a valid frame (never waits for more of an invalid
one). ``Window`` is a client session's bookkeeping: transaction numbers, and which syslog commands the server
acknowledged (``rsp`` with code 200, in the order they were sent, as the protocol requires).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

MAX_NUMBER = 999_999_999  # TXNR and DATALEN: at most 9 digits; TXNR wraps from here to 1
MAX_COMMAND = 32
MAX_RESPONSE_DATA = 64 * 1024  # a server's rsp (offers, a human-readable text) is short; refuse a longer frame
RELP_VERSION = "0"  # what rsyslog and librelp speak
HINT_TXNR = 0  # server hints (``serverclose``) carry TXNR 0 and are never answered

_HEADER = re.compile(rb"(\d{1,9}) ([A-Za-z]{1,32}) (\d{1,9})")
# every prefix of a valid header: what may still become one when more bytes arrive
_HEADER_PREFIX = re.compile(rb"\d{0,9}|\d{1,9} [A-Za-z]{0,32}|\d{1,9} [A-Za-z]{1,32} \d{0,9}")
_LONGEST_HEADER = 9 + 1 + MAX_COMMAND + 1 + 9


class ProtocolError(Exception):
    """Bytes that are not RELP, or a peer that broke the protocol: the connection must be dropped. ``frames``: the
    whole frames that came before the fault in the same bytes (their answers still count)."""

    def __init__(self, message: str, frames: list[Frame] | None = None) -> None:
        super().__init__(message)
        self.frames = frames or []


@dataclass(frozen=True)
class Frame:
    txnr: int
    command: str
    data: bytes = b""


@dataclass(frozen=True)
class Response:
    """The data of an ``rsp`` frame: ``CODE SP TEXT [LF BODY]``."""

    code: int
    text: str
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.code == 200


def encode_frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    """One frame's bytes; ValueError for a TXNR, command or length the protocol cannot carry."""
    if not 0 <= txnr <= MAX_NUMBER:
        raise ValueError(f"TXNR {txnr} is outside 0..{MAX_NUMBER}")
    if not (command.isascii() and command.isalpha() and len(command) <= MAX_COMMAND):
        raise ValueError(f"command {command!r} is not 1 to {MAX_COMMAND} ASCII letters")
    if len(data) > MAX_NUMBER:
        raise ValueError(f"{len(data)} data bytes: RELP carries at most {MAX_NUMBER}")
    header = b"%d %s %d" % (txnr, command.encode("ascii"), len(data))
    return header + (b" " + data if data else b"") + b"\n"


class FrameDecoder:
    """Frames out of a byte stream; ``max_data`` bounds DATALEN (a longer frame is an error before it is read)."""

    def __init__(self, max_data: int = MAX_RESPONSE_DATA) -> None:
        self.max_data = max_data
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """The frames ``data`` completes (none, one or several); ProtocolError when the stream cannot be RELP."""
        self._buffer += data
        frames: list[Frame] = []
        try:
            while (frame := self._next()) is not None:
                frames.append(frame)
        except ProtocolError as exc:
            exc.frames = frames
            raise
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buffer)

    def _next(self) -> Frame | None:
        buffer = self._buffer
        header = _HEADER.match(buffer)
        if header is None or header.end() == len(buffer):  # the header may still grow: is it a valid start?
            head = bytes(buffer[:_LONGEST_HEADER + 1])
            if _HEADER_PREFIX.fullmatch(head) is None:
                raise ProtocolError(f"not a RELP frame: {head[:60]!r}")
            return None
        txnr, command, length = int(header[1]), header[2].decode("ascii"), int(header[3])
        if length > self.max_data:
            raise ProtocolError(f"a {command!r} frame of {length} bytes (at most {self.max_data} accepted)")
        start = header.end()
        if length == 0:
            if buffer[start] != 0x0A:
                raise ProtocolError(f"frame {txnr} {command!r}: no LF after DATALEN 0")
            del buffer[:start + 1]
            return Frame(txnr, command)
        if buffer[start] != 0x20:
            raise ProtocolError(f"frame {txnr} {command!r}: no space after DATALEN")
        end = start + 1 + length
        if len(buffer) <= end:
            return None
        if buffer[end] != 0x0A:
            raise ProtocolError(f"frame {txnr} {command!r}: its {length} data bytes are not followed by LF")
        frame = Frame(txnr, command, bytes(buffer[start + 1:end]))
        del buffer[:end + 1]
        return frame


def parse_response(data: bytes) -> Response:
    """An ``rsp`` frame's data, strictly: three digits, a space, a text of at most 80 bytes up to LF, the body."""
    match = re.fullmatch(rb"(\d{3}) ([^\n]{0,80})(?:\n(.*))?", data, re.DOTALL)
    if match is None:
        raise ProtocolError(f"not a RELP response: {data[:90]!r}")
    text = match[2].decode("utf-8", "replace")
    return Response(int(match[1]), text, match[3] or b"")


def encode_offers(offers: dict[str, list[str]]) -> bytes:
    """``name=value,value`` lines, LF-separated (the data of ``open`` and of its ``rsp``)."""
    for name, values in offers.items():
        if not name or len(name) > 32 or any(c in name for c in "=\n") or \
                any(not value or len(value) > 255 or any(c in value for c in ",\n") for value in values):
            raise ValueError(f"offer {name!r}: {values!r} cannot be encoded")
    return "\n".join(f"{name}={','.join(values)}" for name, values in offers.items()).encode("utf-8")


def parse_offers(body: bytes) -> dict[str, list[str]]:
    """Offers as the server sent them: each line ``name[=value[,value...]]``; empty values are dropped."""
    offers: dict[str, list[str]] = {}
    for line in body.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        name, _, values = line.partition("=")
        offers[name] = [value for value in values.split(",") if value]
    return offers


def open_offers(software: str) -> dict[str, list[str]]:
    """What a syslog client offers: the protocol version, who it is (``software``: name[,version[,url]]), the
    ``syslog`` command."""
    return {"relp_version": [RELP_VERSION], "relp_software": software.split(","), "commands": ["syslog"]}


def check_open_response(response: Response) -> None:
    """The server's answer to ``open``: 200, a protocol version, and ``syslog`` among its commands."""
    if not response.ok:
        raise ProtocolError(f"the collector refused the session: {response.code} {response.text}")
    offers = parse_offers(response.body)
    if not offers.get("relp_version"):
        raise ProtocolError("the collector's open response names no relp_version")
    if "syslog" not in offers.get("commands", []):
        raise ProtocolError("the collector does not accept the syslog command (commands="
                            f"{','.join(offers.get('commands', []))})")


def next_txnr(txnr: int) -> int:
    return 1 if txnr >= MAX_NUMBER else txnr + 1


class Window:
    """A client session's transactions: ``send`` numbers a command, ``receive`` matches the server's frames to
    them. ``acknowledged`` counts the syslog commands answered 200; an error response, a response out of order or
    to nothing outstanding, or a ``serverclose`` hint raises ProtocolError (the session is over)."""

    def __init__(self, size: int = 128) -> None:
        if size < 1:
            raise ValueError("the window holds at least one transaction")
        self.size = size
        self._txnr = 0
        self._outstanding: deque[tuple[int, str]] = deque()
        self.acknowledged = 0
        self.responses: dict[str, Response] = {}  # the last response to each non-syslog command (open, close)

    @property
    def full(self) -> bool:
        return len(self._outstanding) >= self.size

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    def send(self, command: str, data: bytes = b"") -> bytes:
        """The next command's frame, numbered and recorded as outstanding."""
        if self.full:
            raise ProtocolError(f"the window of {self.size} transactions is full")
        txnr = next_txnr(self._txnr)
        frame = encode_frame(txnr, command, data)
        self._txnr = txnr
        self._outstanding.append((txnr, command))
        return frame

    def receive(self, frame: Frame) -> None:
        if frame.txnr == HINT_TXNR:
            if frame.command == "serverclose":
                raise ProtocolError("the collector closed the session (serverclose)")
            return  # another hint: nothing to answer, nothing acknowledged
        if frame.command != "rsp":
            raise ProtocolError(f"the collector sent a {frame.command!r} command (TXNR {frame.txnr})")
        if not self._outstanding or self._outstanding[0][0] != frame.txnr:
            expected = self._outstanding[0][0] if self._outstanding else "none"
            raise ProtocolError(f"a response to TXNR {frame.txnr}, expected {expected}")
        _, command = self._outstanding.popleft()
        if command == "close" and not frame.data:  # librelp answers ``close`` with an empty rsp
            self.responses[command] = Response(200, "")
            return
        response = parse_response(frame.data)
        if command == "syslog":
            if not response.ok:
                raise ProtocolError(f"the collector refused message {self.acknowledged + 1}: "
                                    f"{response.code} {response.text}")
            self.acknowledged += 1
        else:
            self.responses[command] = response
