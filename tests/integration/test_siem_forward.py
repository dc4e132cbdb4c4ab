"""`csm events forward` and `csm events export --format` against a real syslog collector (rsyslogd, rsyslog_fixture.py):
order, parse-back, TLS verification, mutual TLS, a collector restart, a forwarder restart, filters."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from rsyslog_fixture import mtls_collector, syslog_pki, tcp_collector, tls_collector  # noqa: F401
from siem_parsers import parse_cef, parse_leef, parse_syslog
from tls_servers import tls_server

from commands.authz import SYSTEM
from commands.runtime import CommandContext
from commands.tenants import CreateTenant, RenameTenant, create_tenant, rename_tenant
from domain.siem import SD_ID
from infra.siem.transport import DeliveryError, Destination, connect, tls_context

CONSOLE_SCRIPT = Path(sys.executable).with_name("csm")
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]
pytestmark = pytest.mark.slow


async def add_tenants(runtime, *names: str, rename: bool = False) -> None:
    ctx = CommandContext(principal=SYSTEM)
    for name in names:
        await create_tenant(CreateTenant(tenant_id=name, name=name.title()), ctx, runtime.services)
        if rename:
            await rename_tenant(RenameTenant(tenant_id=name, name=f"{name.title()} Ltd"), ctx, runtime.services)


def stored(runtime) -> list:
    return runtime.store.read_all_sync(0, 100_000)


def csm(settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CSM, "--data-dir", str(settings.data_dir), *args], capture_output=True, text=True,
                          timeout=timeout)


def forward_once(settings, url: str, *args: str) -> subprocess.CompletedProcess:
    return csm(settings, "events", "forward", "--to", url, "--once", *args)


def start_forwarder(settings, url: str, *args: str) -> subprocess.Popen:
    """A long-running forwarder; its log lines go to ``process.log`` (a file, read while it runs)."""
    log = settings.data_dir.parent / f"forwarder-{time.monotonic_ns()}.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([*CSM, "--data-dir", str(settings.data_dir), "events", "forward", "--to", url,
                                    "--status-interval", "1", *args], stdout=handle, stderr=subprocess.STDOUT)
    process.log = log
    return process


def wait_for_log(process: subprocess.Popen, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, process.log.read_text()
        time.sleep(0.05)


def stop_forwarder(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    err = process.log.read_text()
    assert process.returncode == 0, err
    assert err.rstrip().endswith("stopped"), err
    return err


def positions(lines: list[str]) -> list[int]:
    return [int(parse_syslog(line).sd[SD_ID]["position"]) for line in lines]


def checkpoint(settings, url: str, name: str = "siem-forward.json") -> int:
    return json.loads((settings.data_dir / name).read_text())["destinations"][url]["position"]


def tls_url(collector) -> str:
    return f"tcp+tls://127.0.0.1:{collector.port}"


async def test_tls_delivers_every_event_in_order_and_resumes_from_the_checkpoint(runtime, tls_collector, syslog_pki,
                                                                               settings):
    await add_tenants(runtime, "acme", "globex", rename=True)
    events = stored(runtime)
    url = tls_url(tls_collector)
    result = forward_once(settings, url, "--ca-file", str(syslog_pki.ca))
    assert result.returncode == 0, result.stderr
    lines = tls_collector.wait_for(lambda got: len(got) >= len(events))
    assert positions(lines) == [e.global_position for e in events]
    for line, event in zip(lines, events, strict=True):
        message = parse_syslog(line)
        assert (message.app_name, message.msgid) == ("csm", event.type[:32])
        assert message.sd[SD_ID]["event_id"] == event.event_id and message.sd[SD_ID]["hash"] == event.hash
        body = json.loads(message.msg)
        assert (body["event_id"], body["payload"], body["hash"]) == (event.event_id, event.payload, event.hash)
    path = settings.data_dir / "siem-forward.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert checkpoint(settings, url) == events[-1].global_position

    assert forward_once(settings, url, "--ca-file", str(syslog_pki.ca)).returncode == 0  # nothing new
    await add_tenants(runtime, "initech")
    newer = stored(runtime)[len(events):]
    assert forward_once(settings, url, "--ca-file", str(syslog_pki.ca)).returncode == 0
    lines = tls_collector.wait_for(lambda got: len(got) >= len(events) + len(newer))
    assert positions(lines) == [e.global_position for e in events + newer]


async def test_collector_restart_loses_nothing_and_forwarder_restart_resumes(runtime, tls_collector, syslog_pki,
                                                                           settings):
    await add_tenants(runtime, *(f"before{n}" for n in range(5)))
    url = tls_url(tls_collector)
    forwarder = start_forwarder(settings, url, "--ca-file", str(syslog_pki.ca))
    try:
        early = [e.global_position for e in stored(runtime)]
        tls_collector.wait_for(lambda got: set(positions(got)) >= set(early))
        await add_tenants(runtime, "late")  # a batch of its own: the last one acknowledged before the restart
        first = [e.global_position for e in stored(runtime)]
        tls_collector.wait_for(lambda got: set(positions(got)) >= set(first))
        tls_collector.stop()
        await add_tenants(runtime, *(f"during{n}" for n in range(5)))
        wait_for_log(forwarder, "will resend from the last acknowledged batch")  # it noticed, and backs off
        tls_collector.start()
        second = [e.global_position for e in stored(runtime)][len(first):]
        lines = tls_collector.wait_for(lambda got: set(positions(got)) >= set(first + second), timeout=60)
    finally:
        err = stop_forwarder(forwarder)
    got = positions(lines)
    assert list(dict.fromkeys(got)) == first + second  # first arrivals: every event, in log order
    counts = Counter(got)
    assert all(counts[p] == 1 for p in second), counts  # none of what was appended meanwhile is duplicated
    repeated = [p for p in first if counts[p] > 1]
    assert repeated == first[len(first) - len(repeated):]  # duplicates: only the tail sent just before the restart
    assert not set(repeated) & set(early)
    assert "will resend from the last acknowledged batch" in err and "connected (TLS" in err
    assert checkpoint(settings, url) == second[-1]

    await add_tenants(runtime, "after")
    third = [e.global_position for e in stored(runtime)][len(first + second):]
    forwarder = start_forwarder(settings, url, "--ca-file", str(syslog_pki.ca))
    try:
        lines = tls_collector.wait_for(lambda got: set(positions(got)) >= set(third))
    finally:
        stop_forwarder(forwarder)
    assert positions(lines) == got + third  # resumed after the checkpoint: nothing sent again


async def test_an_untrusted_collector_gets_nothing(runtime, tls_collector, syslog_pki, settings):
    url = tls_url(tls_collector)
    refused = forward_once(settings, url, "--ca-file", str(syslog_pki.other_ca))
    assert refused.returncode == 1
    assert "is not trusted, nothing was sent" in refused.stderr and "--ca-file" in refused.stderr
    wrong_name = forward_once(settings, f"tcp+tls://localhost:{tls_collector.port}", "--ca-file", str(syslog_pki.ca))
    assert wrong_name.returncode == 1 and "Hostname mismatch" in wrong_name.stderr
    time.sleep(0.5)
    assert tls_collector.lines() == []
    assert not (settings.data_dir / "siem-forward.json").exists()


async def test_mutual_tls(runtime, mtls_collector, syslog_pki, settings):
    url = tls_url(mtls_collector)
    events = stored(runtime)
    anonymous = forward_once(settings, url, "--ca-file", str(syslog_pki.ca))
    assert anonymous.returncode == 1, anonymous.stderr
    assert mtls_collector.lines() == []
    result = forward_once(settings, url, "--ca-file", str(syslog_pki.ca), "--cert-file", str(syslog_pki.client_cert),
                          "--key-file", str(syslog_pki.client_key))
    assert result.returncode == 0, result.stderr
    lines = mtls_collector.wait_for(lambda got: len(got) >= len(events))
    assert positions(lines) == [e.global_position for e in events]


async def test_cef_and_leef_over_plain_tcp_parse_back(runtime, tcp_collector, settings):
    await add_tenants(runtime, "acme")
    events = stored(runtime)
    url = f"tcp://127.0.0.1:{tcp_collector.port}"
    result = forward_once(settings, url, "--format", "cef", "--hostname", "ca1.example.net")
    assert result.returncode == 0 and "WARNING" in result.stderr and "plaintext TCP" in result.stderr
    lines = tcp_collector.wait_for(lambda got: len(got) >= len(events))
    for line, event in zip(lines, events, strict=True):
        message = parse_syslog(line)
        header, fields = parse_cef(message.msg)
        assert (message.hostname, header[0], header[4]) == ("ca1.example.net", "CEF:0", event.type)
        assert (fields["externalId"], fields["cs1"], fields["cn1"], fields["cs3"], fields["dvchost"]) == \
            (event.event_id, event.tenant_id, str(event.global_position), event.hash, "ca1.example.net")
        assert json.loads(fields["cs6"]) == event.payload
    leef = forward_once(settings, url, "--format", "leef", "--framing", "newline",
                        "--checkpoint", str(settings.data_dir / "leef.json"))
    assert leef.returncode == 0, leef.stderr
    lines = tcp_collector.wait_for(lambda got: len(got) >= 2 * len(events))[len(events):]
    for line, event in zip(lines, events, strict=True):
        header, attributes = parse_leef(parse_syslog(line).msg)
        assert (header[4], attributes["eventId"], attributes["position"]) == \
            (event.type, event.event_id, str(event.global_position))
        assert json.loads(attributes["payload"]) == event.payload


async def test_tenant_and_type_filters(runtime, tcp_collector, settings):
    await add_tenants(runtime, "acme", "globex", rename=True)
    events = stored(runtime)
    url = f"tcp://127.0.0.1:{tcp_collector.port}"
    result = forward_once(settings, url, "--tenant", "acme", "--types", "tenant.renamed,tenant.created")
    assert result.returncode == 0, result.stderr
    wanted = [e for e in events if e.tenant_id == "acme" and e.type in ("tenant.renamed", "tenant.created")]
    assert len(wanted) == 2
    lines = tcp_collector.wait_for(lambda got: len(got) >= len(wanted))
    time.sleep(0.3)
    assert positions(tcp_collector.lines()) == [e.global_position for e in wanted]
    assert checkpoint(settings, url) == events[-1].global_position  # filtered-out events are passed, not pending


async def test_export_formats(runtime, settings):
    await add_tenants(runtime, "acme")
    events = stored(runtime)
    cef = csm(settings, "events", "export", "--format", "cef", "--cef-version", "1")
    assert cef.returncode == 0, cef.stderr
    records = [parse_cef(line) for line in cef.stdout.splitlines()]
    assert [fields["externalId"] for _, fields in records] == [e.event_id for e in events]
    assert {header[0] for header, _ in records} == {"CEF:1"}
    syslog = csm(settings, "events", "export", "--format", "rfc5424-json")
    assert positions(syslog.stdout.splitlines()) == [e.global_position for e in events]
    leef = csm(settings, "events", "export", "--format", "leef")
    assert [parse_leef(line)[1]["eventId"] for line in leef.stdout.splitlines()] == [e.event_id for e in events]


def test_usage_errors(settings, runtime):
    assert forward_once(settings, "http://x").returncode == 2
    missing_cert = forward_once(settings, "tcp+tls://127.0.0.1:1", "--key-file", __file__)
    assert missing_cert.returncode == 2 and "--key-file needs --cert-file" in missing_cert.stderr
    plain_with_ca = forward_once(settings, "tcp://127.0.0.1:1", "--ca-file", __file__)
    assert plain_with_ca.returncode == 2 and "TLS destinations only" in plain_with_ca.stderr


def test_a_tls13_collector_that_refuses_the_client_certificate_gets_nothing(syslog_pki):
    """Under TLS 1.3 the client's handshake ends before the server checked its certificate: the connection waits
    for the verdict (here Python's ssl server, which requires a client certificate from the test CA)."""
    client_ca = syslog_pki.ca.read_text()
    with tls_server(syslog_pki.server_cert, syslog_pki.server_key, client_ca=client_ca) as port:
        destination = Destination.parse(f"tcp+tls://127.0.0.1:{port}")
        with pytest.raises(DeliveryError, match="refused this client, nothing was sent"):
            connect(destination, tls_context(syslog_pki.ca))
        connection = connect(destination, tls_context(syslog_pki.ca, syslog_pki.client_cert, syslog_pki.client_key))
        assert connection.description.startswith("TLSv1.3")
        connection.close()
