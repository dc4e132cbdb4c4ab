"""The Kafka record of an event: key, CloudEvents headers, and a body that re-verifies (no broker needed)."""

from __future__ import annotations

import msgspec
import pytest

from domain.chain import chain_hash, envelope_body, genesis_hash
from domain.events import Actor, EventEnvelope
from infra.bus.messages import ce_source, from_record, header, to_record


def envelope() -> EventEnvelope:
    unsigned = EventEnvelope(
        event_id="01936f4e-7c00-7a3b-8f2e-5b1d0c9a4e21", stream_id="tenant-acme", stream_type="tenant", version=1,
        global_position=2, tenant_id="acme", type="tenant.created", schema_version=1,
        occurred_at="2026-01-15T09:30:00.000000Z", actor=Actor(principal="system", auth_method="internal"),
        correlation_id="req-7f3a", causation_id=None, payload={"name": "Acme \u00e9"},
        prev_hash=genesis_hash("acme", "tenant-acme"))
    return msgspec.structs.replace(unsigned, hash=chain_hash(unsigned.prev_hash, envelope_body(unsigned)))


def test_a_record_carries_the_stream_key_cloudevents_headers_and_the_verifiable_envelope():
    event = envelope()
    record = to_record(event, "urn:csm:prod/")
    assert record.key == b"tenant-acme"
    assert dict(record.headers) == {
        "ce_specversion": b"1.0", "ce_id": event.event_id.encode(), "ce_type": b"tenant.created",
        "ce_source": b"urn:csm:prod/tenants/acme/streams/tenant-acme", "ce_time": b"2026-01-15T09:30:00.000000Z",
        "ce_subject": b"tenant-acme", "content-type": b"application/json", "csm_tenant_id": b"acme",
        "csm_type": b"tenant.created", "csm_stream_version": b"1", "csm_global_position": b"2"}
    decoded = from_record(record.value)
    assert decoded == event
    assert decoded.hash == chain_hash(decoded.prev_hash, envelope_body(decoded))
    body = msgspec.json.decode(record.value)
    assert list(body) == sorted(body) and body["hash"] == event.hash  # canonical order, hash included
    assert header(record.headers, "ce_type") == "tenant.created" and header(record.headers, "nope") is None
    assert ce_source("urn:csm", event) == "urn:csm/tenants/acme/streams/tenant-acme"


def test_a_foreign_record_is_refused():
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        from_record(b'{"hello": "world"}')
