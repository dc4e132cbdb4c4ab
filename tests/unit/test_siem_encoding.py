"""The SIEM encodings (domain/siem.py): escaping, severity, syslog framing, and, for any event, one well-formed line
that an independent reader (tests/siem_parsers.py) reads back to the same key fields."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from siem_parsers import parse_cef, parse_leef, parse_syslog, split_octet_counted

from domain import siem
from domain.events import Actor, EventEnvelope


def envelope(**changes) -> EventEnvelope:
    fields = dict(event_id="01937b2e-9f7c-7cc0-8d7e-4b1f0a2e6c11", stream_id="certificate-3f2a", stream_type="certificate",
                  version=3, global_position=42, tenant_id="acme", type="certificate.issued", schema_version=1,
                  occurred_at="2026-12-07T10:05:33.123456+00:00", actor=Actor(principal="alice", auth_method="password"),
                  correlation_id="c-1", causation_id=None, payload={"serial": "3f2a"}, prev_hash="00" * 48,
                  hash="ab" * 48)
    return EventEnvelope(**{**fields, **changes})


def cleaned(value):
    """What JSON text reads back as: strings with what JSON leaves unescaped (DEL, C1 controls, line and paragraph
    separators) replaced; C0 controls are escaped by JSON, so they come back."""
    if isinstance(value, str):
        return "".join(ch if ord(ch) < 0x20 else siem.clean(ch) for ch in value)
    if isinstance(value, list):
        return [cleaned(v) for v in value]
    if isinstance(value, dict):
        return {cleaned(k): cleaned(v) for k, v in value.items()}
    return value


def in_cef(text: str) -> str:
    """What a CEF extension value reads back as: line breaks escaped (so kept), other controls replaced."""
    return "".join(ch if ch in "\r\n" else siem.clean(ch) for ch in siem.trim(text))


def one_line(text: str) -> None:
    """No line break, nor any control character but the tab (LEEF's attribute delimiter)."""
    assert not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") and ch != "\t" for ch in text), \
        repr(text[:200])


# examples ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("event_type", "payload", "level"), [
    ("certificate.issued", {}, 2),
    ("key.compromise_recorded", {}, 10),
    ("ca.revoked", {}, 9),
    ("access.denied", {}, 7),
    ("certificate.revoked", {"reason": "key_compromise"}, 8),
    ("certificate.revoked", {"reason": "superseded"}, 5),
    ("ca.key_rolled_over", {"compromised": True}, 9),
    ("session.revoked", {"reason": "refresh_token_reuse"}, 8),
    ("service_account.disabled", {"reason": "key leaked", "keys": []}, 6),
    ("some.future_type", {}, siem.DEFAULT_SEVERITY),
])
def test_severity_per_event_type(event_type, payload, level):
    assert siem.severity(envelope(type=event_type, payload=payload)) == level


def test_syslog_header_fields_and_pri():
    line = siem.message(envelope(type="access.denied"), "rfc5424-json", hostname="ca1.example.net", procid="77")
    parsed = parse_syslog(line)
    assert (parsed.facility, parsed.severity) == (siem.FACILITIES["authpriv"], 4)  # high: warning
    assert line.startswith(f"<{10 * 8 + 4}>1 2026-12-07T10:05:33.123456Z ca1.example.net csm 77 access.denied [")
    assert parsed.sd[siem.SD_ID] == {"event_id": envelope().event_id, "position": "42", "hash": "ab" * 48,
                                     "tenant": "acme", "type": "access.denied", "stream": "certificate-3f2a",
                                     "version": "3"}
    assert json.loads(parsed.msg)["type"] == "access.denied"
    low = parse_syslog(siem.message(envelope(), "cef", facility=siem.FACILITIES["local4"]))
    assert low.msg.startswith("CEF:0|") and \
        parse_syslog(siem.message(envelope(), "cef", cef_version=1)).msg.startswith("CEF:1|")
    assert (low.facility, low.severity, low.hostname) == (20, 6, "-")


def test_msgid_is_the_type_cut_to_32_characters():
    parsed = parse_syslog(siem.message(envelope(type="certificate.deployment_rolled_back"), "leef"))
    assert parsed.msgid == "certificate.deployment_rolled_ba"
    assert parsed.sd[siem.SD_ID]["type"] == "certificate.deployment_rolled_back"


def test_cef_escapes_header_and_extension_differently():
    record = siem.cef(envelope(type="x|y\\z", actor=Actor(principal="a=b|c\\d\ne", auth_method="pwd")))
    assert record.startswith("CEF:0|CSM|Cassandra Security Manager|0|x\\|y\\\\z|x\\|y\\\\z|3|")
    assert " suser=a\\=b|c\\\\d\\ne " in record
    header, fields = parse_cef(record)
    assert header[4] == "x|y\\z" and fields["suser"] == "a=b|c\\d\ne"


def test_cef_fields():
    header, fields = parse_cef(siem.cef(envelope(), version=1, product_version="1.2", hostname="h"))
    assert header == ["CEF:1", "CSM", "Cassandra Security Manager", "1.2", "certificate.issued",
                      "certificate issued", "2"]
    assert fields["rt"] == "1796637933123" and fields["dvchost"] == "h"
    assert (fields["externalId"], fields["act"], fields["cat"], fields["suser"]) == \
        (envelope().event_id, "certificate.issued", "certificate", "alice")
    assert (fields["cs1Label"], fields["cs1"], fields["cn1Label"], fields["cn1"]) == \
        ("tenant", "acme", "globalPosition", "42")
    assert json.loads(fields["cs6"]) == {"serial": "3f2a"}
    with pytest.raises(ValueError):
        siem.cef(envelope(), version=2)


def test_leef_fields():
    header, attributes = parse_leef(siem.leef(envelope(), product_version="1.2"))
    assert header == ["LEEF:2.0", "CSM", "Cassandra Security Manager", "1.2", "certificate.issued", "x09"]
    assert attributes["devTime"] == "2026-12-07T10:05:33.123+00:00"
    assert (attributes["sev"], attributes["usrName"], attributes["eventId"], attributes["position"]) == \
        ("2", "alice", envelope().event_id, "42")
    assert json.loads(attributes["payload"]) == {"serial": "3f2a"}


def test_large_payload_is_cut_with_a_marker():
    big = envelope(payload={"pem": "A" * 50_000})
    for fmt in siem.FORMATS:
        line = siem.message(big, fmt, max_bytes=4096)
        assert len(line.encode()) <= 4096 and "...[truncated from 50010 bytes]" in line, fmt
    body = json.loads(parse_syslog(siem.message(big, "rfc5424-json", max_bytes=4096)).msg)
    assert body["payload_truncated"] == 50010 and body["payload"]["json_prefix"].startswith('{"pem":"AAA')
    assert body["hash"] == "ab" * 48


def test_octet_counting():
    framed = siem.octet_counted("héllo") + siem.octet_counted("") + siem.octet_counted("a b")
    assert framed == "6 héllo".encode() + b"0 " + b"3 a b"
    assert split_octet_counted(framed) == ["héllo", "", "a b"]
    assert siem.FRAMINGS["newline"]("héllo") == "héllo\n".encode()


def test_unknown_format_refused():
    with pytest.raises(ValueError):
        siem.message(envelope(), "gelf")


# properties -------------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
huge_text = st.builds(lambda ch, n: ch * n, st.characters(), st.integers(0, 40_000))
payloads = st.dictionaries(st.text(max_size=10), json_values | huge_text, max_size=5)
short_text = st.text(max_size=32)
envelopes = st.builds(
    lambda tenant, principal, method, event_type, payload, position, when: envelope(
        tenant_id=tenant, actor=Actor(principal=principal, auth_method=method), type=event_type, payload=payload,
        global_position=position, occurred_at=when),
    short_text, short_text, short_text, st.from_regex(r"[a-z_]{1,12}\.[a-z_]{1,24}", fullmatch=True), payloads,
    st.integers(1, 2**53), st.sampled_from(["2026-12-07T10:05:33.123456+00:00", "2026-01-01T00:00:00Z", "junk"]))
PROPERTY = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(envelopes, st.integers(4096, 20_000))
def test_any_event_is_one_line_of_bounded_size_read_back(event, max_bytes):
    for fmt in siem.FORMATS:
        line = siem.message(event, fmt, hostname="h", max_bytes=max_bytes)
        one_line(line)
        assert len(line.encode()) <= max_bytes
        parsed = parse_syslog(line)
        sd = parsed.sd[siem.SD_ID]
        assert (sd["event_id"], sd["position"], sd["tenant"], sd["type"]) == \
            (event.event_id, str(event.global_position), siem.bound(event.tenant_id), event.type)
        assert parsed.msgid == event.type[:32]
        assert parsed.severity == siem.syslog_severity(siem.severity(event))
        truncated = "...[truncated from " in line
        if fmt == "cef":
            header, fields = parse_cef(parsed.msg)
            assert (header[4], header[6]) == (event.type, str(siem.severity(event)))
            assert (fields["externalId"], fields["cs1"], fields["suser"], fields["cn1"]) == \
                (event.event_id, in_cef(event.tenant_id), in_cef(event.actor.principal),
                 str(event.global_position))
            if not truncated:
                assert json.loads(fields["cs6"]) == cleaned(event.payload)
        elif fmt == "leef":
            header, attributes = parse_leef(parsed.msg)
            assert (header[4], attributes["eventId"], attributes["tenant"], attributes["position"]) == \
                (event.type, event.event_id, siem.bound(event.tenant_id), str(event.global_position))
            if not truncated:
                assert json.loads(attributes["payload"]) == cleaned(event.payload)
        else:
            body = json.loads(parsed.msg)
            assert (body["event_id"], body["tenant_id"], body["global_position"], body["hash"]) == \
                (event.event_id, cleaned(event.tenant_id), event.global_position, event.hash)
            if "payload_truncated" not in body:
                assert body["payload"] == cleaned(event.payload)


@PROPERTY
@given(st.text(), st.text(), st.text(), payloads)
def test_any_fields_at_all_never_crash_and_stay_on_one_line(tenant, principal, event_type, payload):
    event = envelope(tenant_id=tenant, actor=Actor(principal=principal, auth_method=principal), type=event_type,
                     stream_id=tenant, correlation_id=principal, payload=payload, occurred_at=principal)
    for fmt in siem.FORMATS:
        line = siem.message(event, fmt, hostname=principal, procid=tenant, sd_id=principal, max_bytes=1024)
        one_line(line)
        parse_syslog(line)
        one_line(siem.record(event, fmt))
    framed = b"".join(siem.octet_counted(siem.message(event, fmt)) for fmt in siem.FORMATS)
    assert [parse_syslog(m).sd for m in split_octet_counted(framed)]
