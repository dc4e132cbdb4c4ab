"""The RELP client (infra/siem/relp.py) and the forwarder's checkpoint over it, against a scripted RELP peer on a
loopback socket: the answers rsyslogd never gives on demand (refusals, answers stopping part-way, bad frames)."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from siem_parsers import parse_syslog

from commands.authz import SYSTEM
from commands.runtime import CommandContext
from commands.tenants import CreateTenant, create_tenant
from domain.relp import FrameDecoder, encode_frame
from domain.siem import SD_ID
from infra.siem import forwarder as fw
from infra.siem import relp
from infra.siem.transport import DeliveryError, Destination

OFFERS = b"200 OK\nrelp_version=0\nrelp_software=scripted\ncommands=syslog"


class Peer:
    """Accepts connections one after the other; on each, answers ``open`` with ``open_answer`` and the first
    ``accept`` syslog messages with 200, then does ``then`` ("close", "500", "garbage"). Keeps every message."""

    def __init__(self, accept: list[int | None], then: str = "close", open_answer: bytes = OFFERS) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accept, self.then, self.open_answer = list(accept), then, open_answer
        self.messages: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for limit in self.accept:
            connection, _ = self.listener.accept()
            with connection:
                self._session(connection, limit)

    def _session(self, connection: socket.socket, limit: int | None) -> None:
        decoder, answered = FrameDecoder(max_data=1 << 20), 0
        while chunk := connection.recv(65536):
            for frame in decoder.feed(chunk):
                if frame.command == "open":
                    connection.sendall(encode_frame(frame.txnr, "rsp", self.open_answer))
                elif frame.command == "close":
                    connection.sendall(encode_frame(frame.txnr, "rsp") + encode_frame(0, "serverclose"))
                    return
                elif limit is None or answered < limit:
                    self.messages.append(frame.data)
                    answered += 1
                    connection.sendall(encode_frame(frame.txnr, "rsp", b"200 OK"))
                else:
                    if self.then == "500":
                        connection.sendall(encode_frame(frame.txnr, "rsp", b"500 queue full"))
                    elif self.then == "garbage":  # one more answer, and junk after it in the same segment
                        self.messages.append(frame.data)
                        connection.sendall(encode_frame(frame.txnr, "rsp", b"200 OK") + b"HTTP/1.1 400 Bad Request\r\n")
                    self._linger(connection)
                    return

    @staticmethod
    def _linger(connection: socket.socket) -> None:
        """Close our side only, and read until the client closes: unread bytes would make our close a reset,
        which could overtake what we sent."""
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(10)
        try:
            while connection.recv(65536):
                pass
        except OSError:
            pass

    def url(self) -> str:
        return f"relp://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(("then", "reason", "answered"), [("close", "closed the connection", 5),
                                                          ("500", "refused message 6", 5),
                                                          ("garbage", "not a RELP frame", 6)])
def test_send_reports_how_many_messages_the_collector_answered(then, reason, answered):
    peer = Peer([5], then)
    connection = relp.connect(Destination.parse(peer.url()), None, window=4, ack_timeout=10)
    assert connection.description == "RELP over TCP"
    with pytest.raises(DeliveryError, match=reason) as failure:
        connection.send([f"message {n}" for n in range(20)])
    assert failure.value.acknowledged == answered
    assert peer.messages == [b"message %d" % n for n in range(answered)]
    with pytest.raises(DeliveryError, match="failed earlier"):
        connection.send(["again"])  # a failed session is never reused
    connection.close()
    peer.close()


def test_a_whole_batch_is_answered_and_the_session_closes_cleanly():
    peer = Peer([None])
    connection = relp.connect(Destination.parse(peer.url()), None, window=8)
    connection.send([f"m{n}" for n in range(100)])
    connection.send(["after"])
    assert connection.window.acknowledged == 101
    connection.close()
    peer.thread.join(5)
    assert connection.window.responses["close"].ok and len(peer.messages) == 101
    peer.close()


@pytest.mark.parametrize(("answer", "reason"), [
    (b"500 error 4 on connect", "refused the session: 500"),
    (b"200 OK\nrelp_version=0\ncommands=eventlog", "does not accept the syslog command"),
])
def test_a_session_the_collector_does_not_offer_is_refused(answer, reason):
    peer = Peer([0], open_answer=answer)
    with pytest.raises(DeliveryError, match=f"RELP session refused: .*{reason}"):
        relp.connect(Destination.parse(peer.url()), None)
    peer.close()


def test_relp_destinations():
    assert Destination.parse("relp+tls://siem.example.net:2514").encrypted
    plain = Destination.parse("relp://127.0.0.1:2514")
    assert plain.acknowledged and not plain.encrypted and plain.port == 2514
    with pytest.raises(ValueError, match="RELP port"):
        Destination.parse("relp://siem.example.net")


async def test_the_checkpoint_passes_only_answered_events_and_a_retry_resends_nothing_earlier(runtime, tmp_path):
    for n in range(8):
        await create_tenant(CreateTenant(tenant_id=f"tenant{n}", name=f"Tenant {n}"), CommandContext(principal=SYSTEM),
                            runtime.services)
    events = runtime.store.read_all_sync(0, 1000)
    assert len(events) > 8
    peer = Peer([6, None])  # the first session answers 6 messages, then the collector goes away
    destination = Destination.parse(peer.url())
    checkpoints = fw.Checkpoints(tmp_path / "cp.json")
    options = fw.ForwardOptions(once=True, status_interval=3600)
    lines: list[str] = []
    run = fw.forward(runtime.store, [(destination, fw.connector_for(destination, None))], checkpoints, options,
                     threading.Event(), lines.append)
    assert isinstance(run[0].error, DeliveryError) and "6 of this batch" in lines[-2], lines
    saved = json.loads((tmp_path / "cp.json").read_text())["destinations"][destination.url]["position"]
    assert saved == events[5].global_position  # past the six answered, not past the seventh it had sent

    run = fw.forward(runtime.store, [(destination, fw.connector_for(destination, None))], checkpoints, options,
                     threading.Event(), lines.append)
    checkpoints.close()
    assert run[0].error is None, lines
    positions = [int(parse_syslog(m.decode()).sd[SD_ID]["position"]) for m in peer.messages]
    assert positions == [e.global_position for e in events]  # each once: the answered six were not resent
    peer.close()


class ChattyPeer:
    """Accepts ``open`` and then answers no syslog message: it sends a hint frame (TXNR 0, not serverclose) every
    tenth of a second instead, for as long as the client stays connected."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            decoder = FrameDecoder(max_data=1 << 20)
            for frame in decoder.feed(connection.recv(65536)):
                connection.sendall(encode_frame(frame.txnr, "rsp", OFFERS))
            try:
                while not self.stop.wait(0.1):
                    connection.sendall(encode_frame(0, "nop"))
            except OSError:
                pass  # the client gave up and closed

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


def test_a_collector_that_keeps_sending_hints_but_never_answers_times_out():
    peer = ChattyPeer()
    connection = relp.connect(Destination.parse(f"relp://127.0.0.1:{peer.port}"), None, ack_timeout=1)
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            connection.send(["never answered"])
        except DeliveryError as exc:
            outcome.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sender.join(60)  # a hang, not a time measure: the answer is due within ack_timeout of the last answer
    peer.close()
    assert not sender.is_alive(), "send() waits for ever on a collector that sends bytes but no answer"
    assert outcome and "answered nothing" in str(outcome[0]) and outcome[0].acknowledged == 0
    connection.close()
