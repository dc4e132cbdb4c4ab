"""Identifiers: UUIDv7 (time-ordered) generation for events and objects, and the certificate id's format."""

from __future__ import annotations

import os
import time
import uuid
from typing import Annotated

import msgspec

CertificateId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{40}$", description="the serial number, 40 hex digits")]


def uuid7() -> str:
    """An RFC 9562 UUIDv7: 48-bit Unix milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))
