"""An event as a Kafka record: key, CloudEvents headers and the JSON body SIEMs read (docs/events.md §11).

Pure mapping, no I/O: the relay encodes with :func:`to_record`, consumers decode with
:func:`from_record`. The body is the full envelope, ``hash`` included, in the canonical
encoding, so a consumer can re-check the hash exactly as a verifier of the store does.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from domain.events import EventEnvelope

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(EventEnvelope)


class Record(NamedTuple):
    """What the producer sends: partition key, value bytes, headers (name, bytes)."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def ce_source(base: str, envelope: EventEnvelope) -> str:
    """The CloudEvents ``source``: the service instance, tenant and stream that produced the event."""
    return f"{base.rstrip('/')}/tenants/{envelope.tenant_id}/streams/{envelope.stream_id}"


def to_record(envelope: EventEnvelope, source: str) -> Record:
    """Key = stream id (per-stream order within a partition); tenant and type also in headers."""
    headers = [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", envelope.event_id),
        ("ce_type", envelope.type),
        ("ce_source", ce_source(source, envelope)),
        ("ce_time", envelope.occurred_at),
        ("ce_subject", envelope.stream_id),
        ("content-type", CONTENT_TYPE),
        ("csm_tenant_id", envelope.tenant_id),
        ("csm_type", envelope.type),
        ("csm_stream_version", str(envelope.version)),
        ("csm_global_position", str(envelope.global_position)),
    ]
    return Record(key=envelope.stream_id.encode(), value=_encoder.encode(envelope),
                  headers=[(name, value.encode()) for name, value in headers])


def from_record(value: bytes) -> EventEnvelope:
    """The envelope a record carries (raises ``msgspec.DecodeError`` / ``ValidationError`` if it is not one)."""
    return _decoder.decode(value)


def header(headers: list[tuple[str, bytes]] | tuple, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode()
    return None
