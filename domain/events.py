"""The event envelope, the payload registry and upcasters.

Payloads are msgspec Structs registered under an explicit, stable type name (never a Python
import path), so renaming a class never breaks a stored event. Old ``schema_version``s are
upcast at read time; stored events are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

SYSTEM_TENANT = "_system"


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who caused an event: a principal id and how it authenticated."""

    principal: str
    auth_method: str


class EventEnvelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One recorded event. ``hash`` is empty (and so omitted) in the canonical body."""

    event_id: str
    stream_id: str
    stream_type: str
    version: int
    global_position: int | None
    tenant_id: str
    type: str
    schema_version: int
    occurred_at: str
    actor: Actor
    correlation_id: str | None
    causation_id: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str = ""


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event payload. Subclasses are registered with :func:`event`."""

    event_type: ClassVar[str]
    schema_version: ClassVar[int]


_REGISTRY: dict[str, type[Payload]] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def event(type_name: str, schema_version: int = 1) -> Callable[[type[Payload]], type[Payload]]:
    """Register a payload class under a stable type name and its current schema version."""

    def register(cls: type[Payload]) -> type[Payload]:
        if type_name in _REGISTRY and _REGISTRY[type_name] is not cls:
            raise ValueError(f"event type {type_name!r} registered twice")
        cls.event_type = type_name
        cls.schema_version = schema_version
        _REGISTRY[type_name] = cls
        return cls

    return register


def resumable(fold: Callable) -> Callable:
    """Marks an aggregate's fold that continues from a state it made: ``fold(later, start=fold(earlier))`` equals
    ``fold(earlier + later)``, and ``start`` is left as it was. The command side keeps such states and folds only
    the events appended since (``commands.runtime.StreamCache``)."""
    fold.resumable = True  # type: ignore[attr-defined]
    return fold


def upcaster(type_name: str, from_version: int) -> Callable[[Callable], Callable]:
    """Register a function that turns a ``from_version`` payload into ``from_version + 1``."""

    def register(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable:
        _UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


def payload_class(type_name: str) -> type[Payload]:
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise LookupError(f"unknown event type {type_name!r}") from None


def known_event_types() -> list[str]:
    return sorted(_REGISTRY)


def to_payload_dict(payload: Payload) -> dict[str, Any]:
    """The payload as plain JSON-compatible builtins, as it is stored."""
    return msgspec.to_builtins(payload, order="deterministic")  # sets in a stable order: same bytes everywhere


def decode_payload(envelope: EventEnvelope) -> Payload:
    """The typed payload of a recorded event, upcast to the current schema version."""
    cls = payload_class(envelope.type)
    data = envelope.payload
    version = envelope.schema_version
    while version < cls.schema_version:
        step = _UPCASTERS.get((envelope.type, version))
        if step is None:
            raise LookupError(f"no upcaster for {envelope.type} v{version}")
        data = step(data)
        version += 1
    return msgspec.convert(data, cls)
