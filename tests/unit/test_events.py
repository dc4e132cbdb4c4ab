"""domain.events: the payload registry and read-time upcasting of old schema versions."""

from __future__ import annotations

import msgspec
import pytest

from domain.chain import envelope_body
from domain.events import (Actor, EventEnvelope, Payload, decode_payload, event, known_event_types, payload_class,
                           to_payload_dict, upcaster)


# Test-only payload types, registered once under names no production type uses.
@event("test.widget_made", schema_version=3)
class WidgetMade(Payload, frozen=True, kw_only=True):
    widget_id: str
    colour: str
    size_mm: int


@upcaster("test.widget_made", 1)
def _widget_v1_to_v2(data: dict) -> dict:  # v1 had "color" and size in cm
    data = dict(data)
    data["colour"] = data.pop("color")
    return data


@upcaster("test.widget_made", 2)
def _widget_v2_to_v3(data: dict) -> dict:
    return {**{k: v for k, v in data.items() if k != "size_cm"}, "size_mm": data["size_cm"] * 10}


@event("test.gadget_made", schema_version=2)
class GadgetMade(Payload, frozen=True, kw_only=True):
    name: str


def recorded(type_: str, schema_version: int, payload: dict) -> EventEnvelope:
    return EventEnvelope(event_id="e-1", stream_id="widget-1", stream_type="widget", version=1, global_position=1,
                         tenant_id="acme", type=type_, schema_version=schema_version,
                         occurred_at="2025-01-01T00:00:00.000000Z", actor=Actor(principal="p", auth_method="test"),
                         correlation_id=None, causation_id=None, payload=payload, prev_hash="00" * 48)


def test_registration_sets_the_stable_type_name_and_schema_version():
    assert (WidgetMade.event_type, WidgetMade.schema_version) == ("test.widget_made", 3)
    assert payload_class("test.widget_made") is WidgetMade
    assert "test.widget_made" in known_event_types() and known_event_types() == sorted(known_event_types())


def test_current_version_decodes_without_upcasting():
    env = recorded("test.widget_made", 3, {"widget_id": "w", "colour": "red", "size_mm": 5})
    assert decode_payload(env) == WidgetMade(widget_id="w", colour="red", size_mm=5)


def test_old_versions_are_upcast_step_by_step_at_read_time():
    v1 = recorded("test.widget_made", 1, {"widget_id": "w", "color": "blue", "size_cm": 4})
    v2 = recorded("test.widget_made", 2, {"widget_id": "w", "colour": "blue", "size_cm": 4})
    expected = WidgetMade(widget_id="w", colour="blue", size_mm=40)
    assert decode_payload(v1) == expected
    assert decode_payload(v2) == expected


def test_upcasting_never_rewrites_the_recorded_event():
    v1 = recorded("test.widget_made", 1, {"widget_id": "w", "color": "blue", "size_cm": 4})
    body = envelope_body(v1)
    decode_payload(v1)
    assert v1.payload == {"widget_id": "w", "color": "blue", "size_cm": 4} and v1.schema_version == 1
    assert envelope_body(v1) == body


def test_a_missing_upcaster_is_an_error_naming_type_and_version():
    with pytest.raises(LookupError, match=r"test\.gadget_made v1"):
        decode_payload(recorded("test.gadget_made", 1, {"name": "g"}))


def test_an_unknown_event_type_is_an_error():
    with pytest.raises(LookupError, match="test.never_registered"):
        decode_payload(recorded("test.never_registered", 1, {}))


def test_an_upcast_payload_that_does_not_fit_is_refused():
    with pytest.raises(msgspec.ValidationError):
        decode_payload(recorded("test.widget_made", 2, {"widget_id": "w", "colour": "blue", "size_cm": "big"}))


def test_a_type_name_cannot_be_claimed_by_two_classes():
    with pytest.raises(ValueError, match="registered twice"):
        @event("test.widget_made")
        class Impostor(Payload, frozen=True, kw_only=True):
            pass


def test_to_payload_dict_is_plain_builtins():
    data = to_payload_dict(WidgetMade(widget_id="w", colour="c", size_mm=1))
    assert data == {"widget_id": "w", "colour": "c", "size_mm": 1} and type(data) is dict
