"""`csm events forward --to relp://` and `relp+tls://` against a real RELP collector (rsyslogd with imrelp,
rsyslog_fixture.py): delivery in order, TLS and mutual TLS, and a collector killed (SIGKILL) with messages its kernel
took but it never read: none is lost, none it had confirmed is sent again."""

from __future__ import annotations

import json
import time

import pytest
from rsyslog_fixture import (  # noqa: F401
    relp_collector,
    relp_mtls_collector,
    relp_tls_collector,
    syslog_pki,
    unread_bytes,
)
from siem_parsers import parse_syslog
from test_siem_forward import add_tenants, checkpoint, forward_once, positions, start_forwarder, stop_forwarder, stored

from domain.siem import SD_ID

pytestmark = pytest.mark.slow


def relp_url(collector, scheme: str = "relp") -> str:
    return f"{scheme}://127.0.0.1:{collector.port}"


def wait_until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.05)


def saved_position(settings, url: str) -> int | None:
    try:
        return checkpoint(settings, url)
    except (FileNotFoundError, KeyError, ValueError):
        return None


async def test_relp_delivers_every_event_in_order(runtime, relp_collector, settings):
    await add_tenants(runtime, "acme", "globex", rename=True)
    events = stored(runtime)
    url = relp_url(relp_collector)
    result = forward_once(settings, url, "--format", "rfc5424-json")
    assert result.returncode == 0, result.stderr
    assert "plaintext RELP" in result.stderr and "use relp+tls://" in result.stderr
    assert "connected (RELP over TCP)" in result.stderr
    lines = relp_collector.wait_for(lambda got: len(got) >= len(events))
    assert positions(lines) == [e.global_position for e in events]
    for line, event in zip(lines, events, strict=True):
        message = parse_syslog(line)
        assert message.sd[SD_ID]["event_id"] == event.event_id
        assert json.loads(message.msg)["hash"] == event.hash
    assert checkpoint(settings, url) == events[-1].global_position


async def test_relp_over_tls_verifies_the_collector(runtime, relp_tls_collector, syslog_pki, settings):
    events = stored(runtime)
    url = relp_url(relp_tls_collector, "relp+tls")
    untrusted = forward_once(settings, url, "--ca-file", str(syslog_pki.other_ca))
    assert untrusted.returncode == 1 and "is not trusted, nothing was sent" in untrusted.stderr
    result = forward_once(settings, url, "--ca-file", str(syslog_pki.ca))
    assert result.returncode == 0, result.stderr
    assert "connected (RELP over TLSv1." in result.stderr and "WARNING" not in result.stderr
    lines = relp_tls_collector.wait_for(lambda got: len(got) >= len(events))
    assert positions(lines) == [e.global_position for e in events]


async def test_relp_over_mutual_tls(runtime, relp_mtls_collector, syslog_pki, settings):
    events = stored(runtime)
    url = relp_url(relp_mtls_collector, "relp+tls")
    anonymous = forward_once(settings, url, "--ca-file", str(syslog_pki.ca))
    assert anonymous.returncode == 1 and "nothing was sent" in anonymous.stderr, anonymous.stderr
    assert relp_mtls_collector.lines() == [] and saved_position(settings, url) is None
    result = forward_once(settings, url, "--ca-file", str(syslog_pki.ca), "--cert-file",
                          str(syslog_pki.client_cert), "--key-file", str(syslog_pki.client_key))
    assert result.returncode == 0, result.stderr
    lines = relp_mtls_collector.wait_for(lambda got: len(got) >= len(events))
    assert positions(lines) == [e.global_position for e in events]


async def test_a_collector_killed_with_messages_in_flight_loses_none(runtime, relp_collector, settings):
    """The case plain syslog over TCP cannot cover: the collector's kernel acknowledged the bytes, the collector
    never read them, and it dies. Over RELP nothing unanswered was checkpointed, so all of it is sent again."""
    await add_tenants(runtime, *(f"before{n}" for n in range(3)))
    first = [e.global_position for e in stored(runtime)]
    url = relp_url(relp_collector)
    forwarder = start_forwarder(settings, url)
    try:
        relp_collector.wait_for(lambda got: set(positions(got)) >= set(first))
        wait_until(lambda: saved_position(settings, url) == first[-1], "the checkpoint of what was answered")
        relp_collector.pause()  # from here on it reads nothing, answers nothing; its kernel still takes bytes
        await add_tenants(runtime, *(f"during{n}" for n in range(5)))
        wait_until(lambda: unread_bytes(relp_collector.port) > 0, "messages sent to the paused collector")
        assert saved_position(settings, url) == first[-1]  # sent, taken by its kernel, unanswered: not passed
        relp_collector.kill()
        assert positions(relp_collector.lines()) == first  # they were lost with it
        wait_until(lambda: f"will resend from position {first[-1]}" in forwarder.log.read_text(),
                   "the forwarder noticing the collector died")
        await add_tenants(runtime, "after")
        relp_collector.start()
        every = [e.global_position for e in stored(runtime)]
        lines = relp_collector.wait_for(lambda got: set(positions(got)) >= set(every), timeout=90)
        wait_until(lambda: saved_position(settings, url) == every[-1], "the checkpoint at the head")
    finally:
        log = stop_forwarder(forwarder)
    assert positions(lines) == every, log  # every event once, in log order: no gap, and no answered one resent
    assert log.count("connected (RELP over TCP)") >= 2


def test_relp_usage_errors(settings, runtime):
    no_port = forward_once(settings, "relp://127.0.0.1")
    assert no_port.returncode == 2 and "RELP port" in no_port.stderr
    plain_with_ca = forward_once(settings, "relp://127.0.0.1:1", "--ca-file", __file__)
    assert plain_with_ca.returncode == 2 and "TLS destinations only" in plain_with_ca.stderr
