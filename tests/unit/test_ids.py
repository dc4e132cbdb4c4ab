"""commands.ids.uuid7: RFC 9562 version 7 identifiers that sort by creation time."""

from __future__ import annotations

import time
import uuid

from commands.ids import uuid7


def millis(value: str) -> int:
    return uuid.UUID(value).int >> 80


def test_version_and_variant():
    for _ in range(200):
        u = uuid.UUID(uuid7())
        assert u.version == 7
        assert u.variant == uuid.RFC_4122


def test_canonical_text_form():
    value = uuid7()
    assert value == str(uuid.UUID(value)) and len(value) == 36 and value[14] == "7"


def test_timestamp_is_unix_milliseconds_now():
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= millis(value) <= after


def test_ids_from_later_milliseconds_sort_later_as_text_and_as_integers():
    earlier = uuid7()
    time.sleep(0.003)
    later = uuid7()
    assert earlier < later
    assert uuid.UUID(earlier).int < uuid.UUID(later).int


def test_timestamps_never_go_backwards_in_a_burst():
    stamps = [millis(uuid7()) for _ in range(2000)]
    assert stamps == sorted(stamps)


def test_random_bits_make_ids_unique():
    ids = [uuid7() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
