"""The SIEM forwarder: tails the event log and sends each event to a syslog collector, at least once, in order.

One thread per destination reads the log after its checkpoint, encodes the events that pass the filters
(domain/siem.py), sends them as one batch and, once the collector's TCP acknowledged it, records the batch's last
position in the checkpoint file (private, 0600; replaced atomically). A failure closes the connection, waits
(exponential backoff with jitter) and sends again from the start of the last batch the collector acknowledged:
events around a reconnection may arrive twice, never not at all; a restart resumes after the checkpoint. The
collector de-duplicates on the event id.

Over RELP (infra/siem/relp.py) the collector itself answers each message: the checkpoint moves past an event only
once it did (also part-way through a failed batch), and a reconnection resends from there, nothing earlier.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from domain.events import EventEnvelope
from domain.siem import FACILITIES, message
from infra.private_files import write_file
from infra.siem import relp
from infra.siem.transport import DeliveryError, Destination, connect

BATCH = 500
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


class LogSource(Protocol):
    """What the forwarder needs of the event store."""

    def read_all_sync(self, after_position: int, limit: int = 1000) -> list[EventEnvelope]: ...

    def head_position_sync(self) -> int: ...


class CheckpointBusy(Exception):
    """Another forwarder holds this checkpoint file."""


class CheckpointAhead(Exception):
    """A destination's checkpoint is past the log's head."""


class Checkpoints:
    """Each destination's last acknowledged position, in one JSON file (mode 0600), held by one process at a time
    (an exclusive lock on ``<file>.lock``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise CheckpointBusy(f"another forwarder is using {path}; give this one its own --checkpoint") from None
        self._mutex = threading.Lock()
        self._positions: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as exc:
            raise ValueError(f"the checkpoint file {self.path} cannot be read ({exc}); fix or remove it") from exc
        return dict(data.get("destinations", {}))

    def load(self, url: str) -> int | None:
        entry = self._positions.get(url)
        return None if entry is None else int(entry["position"])

    def save(self, url: str, position: int) -> None:
        with self._mutex:
            self._positions[url] = {"position": position, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime())}
            body = json.dumps({"version": 1, "destinations": self._positions}, indent=1, sort_keys=True)
            write_file(self.path, body.encode() + b"\n", mode=0o600)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


@dataclass(frozen=True)
class ForwardOptions:
    """What is sent, and how: format, filters, syslog header fields, batching."""

    fmt: str = "rfc5424-json"
    cef_version: int = 0
    tenant: str | None = None
    type_prefixes: tuple[str, ...] = ()
    hostname: str = "-"
    facility: int = FACILITIES["authpriv"]
    max_bytes: int = 8192
    product_version: str = ""
    start: str = "beginning"  # where a destination without a checkpoint starts: "beginning" or "head"
    batch: int = BATCH
    poll_interval: float = 0.5
    status_interval: float = 60.0
    once: bool = False  # stop at the head (and at the first failure) instead of following the log

    def wanted(self, envelope: EventEnvelope) -> bool:
        """The event passes the tenant and type filters."""
        if self.tenant is not None and envelope.tenant_id != self.tenant:
            return False
        return not self.type_prefixes or envelope.type.startswith(self.type_prefixes)

    def encode(self, envelope: EventEnvelope) -> str:
        return message(envelope, self.fmt, product_version=self.product_version, hostname=self.hostname,
                       facility=self.facility, procid=str(os.getpid()), max_bytes=self.max_bytes,
                       cef_version=self.cef_version)


@dataclass
class Stats:
    """A destination's counters, for the status lines."""

    sent: int = 0
    failures: int = 0
    connections: int = 0
    position: int = 0


class Backoff:
    """Exponential backoff with full jitter, from BACKOFF_FIRST to BACKOFF_MAX seconds."""

    def __init__(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        self.attempt += 1
        return random.uniform(BACKOFF_FIRST, min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** self.attempt))

    def reset(self) -> None:
        self.attempt = 0


class Forwarder:
    """Forwards the log to one destination until ``stop`` is set (or, with ``once``, to the head)."""

    def __init__(self, store: LogSource, destination: Destination, connector: Callable[[], Any],
                 checkpoints: Checkpoints, options: ForwardOptions, stop: threading.Event,
                 report: Callable[[str], None]) -> None:
        self.store, self.destination, self.connector = store, destination, connector
        self.checkpoints, self.options, self.stop, self.report = checkpoints, options, stop, report
        self.stats = Stats()
        self.connection: Any = None
        self.error: Exception | None = None  # why it stopped early: a failed delivery (``once``), or a crash

    def run_guarded(self) -> None:
        """``run``; an unexpected error is reported, kept in ``error`` and stops every forwarder."""
        try:
            self.run()
        except Exception as exc:  # a store that cannot be read, a checkpoint that cannot be written
            self.error = exc
            self.report(f"{self.destination.url}: stopped: {type(exc).__name__}: {exc}")
            self.stop.set()

    def _start_position(self) -> int:
        saved, head = self.checkpoints.load(self.destination.url), self.store.head_position_sync()
        if saved is None:
            return head if self.options.start == "head" else 0
        if saved > head:  # waiting there would skip, silently, every event written until the log reached it
            raise CheckpointAhead(f"the checkpoint is at position {saved} but the log ends at {head} (restored from "
                                  "a backup, or another data directory's checkpoint?); remove this destination "
                                  "from the checkpoint file to send from --start again")
        return saved

    def run(self) -> None:
        position = replay_from = self.stats.position = self._start_position()
        self.report(f"{self.destination.url}: forwarding {self.options.fmt} after position {position}")
        backoff, status_at = Backoff(), time.monotonic() + self.options.status_interval
        try:
            while not self.stop.is_set():
                if time.monotonic() >= status_at:
                    self._status()
                    status_at = time.monotonic() + self.options.status_interval
                events = self.store.read_all_sync(position, self.options.batch)
                if not events:
                    if self.options.once:
                        return
                    self.stop.wait(self.options.poll_interval)
                    continue
                wanted = [e for e in events if self.options.wanted(e)]
                try:
                    sent = self._deliver(wanted)
                except DeliveryError as exc:
                    if exc.acknowledged:  # RELP: the collector confirmed these before the failure
                        replay_from = self._advance(wanted[exc.acknowledged - 1].global_position)
                        self.stats.sent += exc.acknowledged
                    self._failed(exc)
                    if self.options.once:
                        self.error = exc
                        return
                    self.stop.wait(backoff.next())
                    position = replay_from  # resend what the collector acknowledged last, in case it never read it
                    continue
                backoff.reset()
                if sent and not self.destination.acknowledged:
                    replay_from = position
                position = self._advance(events[-1].global_position)
                if self.destination.acknowledged:
                    replay_from = position  # confirmed by the collector itself: never sent again
        finally:
            self._disconnect()
            self._status()

    def _advance(self, position: int) -> int:
        """Record ``position`` as delivered (the checkpoint file) and return it."""
        self.stats.position = position
        self.checkpoints.save(self.destination.url, position)
        return position

    def _deliver(self, events: list[EventEnvelope]) -> int:
        """Send ``events`` (connecting first if need be); how many were sent."""
        if not events:
            return 0
        if self.connection is None:
            self.connection = self.connector()
            self.stats.connections += 1
            self.report(f"{self.destination.url}: connected ({self.connection.description})")
        self.connection.send([self.options.encode(envelope) for envelope in events])
        self.stats.sent += len(events)
        return len(events)

    def _failed(self, exc: DeliveryError) -> None:
        self.stats.failures += 1
        if self.destination.acknowledged:
            self.report(f"{self.destination.url}: {exc}; will resend from position {self.stats.position} "
                        f"(what the collector confirmed: {exc.acknowledged} of this batch)")
        else:
            self.report(f"{self.destination.url}: {exc}; will resend from the last acknowledged batch")
        self._disconnect()

    def _disconnect(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _status(self) -> None:
        head = self.store.head_position_sync()
        self.report(f"{self.destination.url}: position {self.stats.position} of {head} "
                    f"(lag {max(head - self.stats.position, 0)}), sent {self.stats.sent}, "
                    f"connections {self.stats.connections}, failures {self.stats.failures}")


def forward(store: LogSource, destinations: Iterable[tuple[Destination, Callable[[], Any]]],
            checkpoints: Checkpoints, options: ForwardOptions, stop: threading.Event,
            report: Callable[[str], None]) -> list[Forwarder]:
    """Run one forwarder thread per destination until ``stop`` is set (or, ``once``, all reached the head)."""
    forwarders = [Forwarder(store, destination, connector, checkpoints, options, stop, report)
                  for destination, connector in destinations]
    threads = [threading.Thread(target=f.run_guarded, name=f"siem {f.destination.url}", daemon=True) for f in forwarders]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)  # short joins: the main thread keeps taking signals
    return forwarders


def connector_for(destination: Destination, context: Any, framing: str = "octet-counting",
                  software: str = "csm") -> Callable[[], Any]:
    """A function that opens a new connection to ``destination`` (a RELP session for relp:// and relp+tls://)."""
    if destination.acknowledged:
        return lambda: relp.connect(destination, context, software=software)
    return lambda: connect(destination, context, framing=framing)
