"""The forwarder's parts (infra/siem): destinations, the checkpoint file, backoff, UDP, and the loop over a real store
with a real loopback receiver."""

from __future__ import annotations

import json
import socket
import stat
import threading

import pytest
from siem_parsers import parse_syslog, split_octet_counted

from domain.siem import SD_ID
from infra.siem import forwarder as fw
from infra.siem.transport import DeliveryError, Destination, connect


def test_destinations():
    assert Destination.parse("tcp+tls://siem.example.net") == \
        Destination("tcp+tls://siem.example.net", "tcp+tls", "siem.example.net", 6514)
    assert Destination.parse("udp://[::1]:5514").port == 5514 and Destination.parse("tcp://h").port == 514
    for bad in ("http://h", "tcp+tls://", "tcp://h/path", "tcp://u:p@h", "tcp://h:99999", "h:514"):
        with pytest.raises(ValueError):
            Destination.parse(bad)


def test_checkpoint_file_is_private_exclusive_and_durable(tmp_path):
    path = tmp_path / "cp" / "forward.json"
    checkpoints = fw.Checkpoints(path)
    assert checkpoints.load("tcp://a") is None
    checkpoints.save("tcp://a", 7)
    checkpoints.save("udp://b", 3)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(fw.CheckpointBusy):
        fw.Checkpoints(path)
    checkpoints.close()
    again = fw.Checkpoints(path)
    assert (again.load("tcp://a"), again.load("udp://b")) == (7, 3)
    again.close()
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        fw.Checkpoints(path)


def test_backoff_grows_to_its_ceiling_and_resets():
    backoff = fw.Backoff()
    delays = [backoff.next() for _ in range(12)]
    assert all(fw.BACKOFF_FIRST <= d <= fw.BACKOFF_MAX for d in delays)
    backoff.reset()
    assert backoff.next() <= fw.BACKOFF_FIRST * 2


def test_udp_sends_one_unframed_message_a_datagram():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        connection = connect(Destination.parse(f"udp://127.0.0.1:{receiver.getsockname()[1]}"), None)
        connection.send(["<86>1 - - csm - x - one", "two"])
        assert [receiver.recv(65535) for _ in range(2)] == [b"<86>1 - - csm - x - one", b"two"]
        connection.close()


def test_nothing_listening_is_a_delivery_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeliveryError, match="cannot connect"):
        connect(Destination.parse(f"tcp://127.0.0.1:{port}"), None)


def _receiver() -> tuple[socket.socket, threading.Thread, list[bytes]]:
    """A TCP listener on loopback that keeps what its one connection sends."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            while chunk := connection.recv(65536):
                received.append(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread, received


async def test_forward_once_sends_filtered_events_and_checkpoints_the_head(runtime, services, tmp_path):
    listener, receiving, received = _receiver()
    destination = Destination.parse(f"tcp://127.0.0.1:{listener.getsockname()[1]}")
    checkpoints = fw.Checkpoints(tmp_path / "cp.json")
    options = fw.ForwardOptions(fmt="rfc5424-json", tenant="acme", once=True, status_interval=3600)
    lines: list[str] = []
    forwarders = fw.forward(runtime.store, [(destination, fw.connector_for(destination, None))], checkpoints,
                            options, threading.Event(), lines.append)
    checkpoints.close()
    receiving.join(10)  # the forwarder closed its connection: the receiver has read everything
    listener.close()
    assert forwarders[0].error is None, lines
    head = runtime.store.head_position_sync()
    acme = [e for e in runtime.store.read_all_sync(0, 1000) if e.tenant_id == "acme"]
    messages = [parse_syslog(m) for m in split_octet_counted(b"".join(received))]
    assert [m.sd[SD_ID]["event_id"] for m in messages] == [e.event_id for e in acme] and acme
    assert json.loads((tmp_path / "cp.json").read_text())["destinations"][destination.url]["position"] == head
    assert any(f"position {head} of {head} (lag 0), sent {len(acme)}" in line for line in lines), lines


def test_start_at_the_head_and_a_checkpoint_past_the_head(runtime, tmp_path):
    destination = Destination.parse("udp://127.0.0.1:9")
    checkpoints = fw.Checkpoints(tmp_path / "cp.json")
    head = runtime.store.head_position_sync()
    lines: list[str] = []
    options = fw.ForwardOptions(start="head", once=True, status_interval=3600)
    forwarders = fw.forward(runtime.store, [(destination, fw.connector_for(destination, None))], checkpoints,
                            options, threading.Event(), lines.append)
    assert forwarders[0].error is None and f"after position {head}" in lines[0]
    checkpoints.save(destination.url, head + 5)
    forwarders = fw.forward(runtime.store, [(destination, fw.connector_for(destination, None))], checkpoints,
                            options, threading.Event(), lines.append)
    assert isinstance(forwarders[0].error, fw.CheckpointAhead) and "restored from a backup" in lines[-1]
    checkpoints.close()
