"""commands.runtime.rfc3339: the one way event and read-model timestamps are written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, strategies as st

from commands.runtime import rfc3339

# Offsets whole minutes within a day, as RFC 3339 allows; astimezone(UTC) must stay inside datetime's range.
_OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes)))
_MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_OFFSETS)


@given(_MOMENTS)
def test_a_timestamp_reads_back_as_the_same_instant_in_fixed_width_utc(moment):
    text = rfc3339(moment)
    assert len(text) == 27 and text.endswith("Z") and text[4] == "-" and text[10] == "T"
    assert datetime.fromisoformat(text) == moment


@given(_MOMENTS, _MOMENTS)
def test_timestamps_sort_as_their_instants_do(a, b):
    assert (rfc3339(a) < rfc3339(b)) == (a < b)


def test_years_below_1000_keep_four_digits():
    assert rfc3339(datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "0005-01-02T03:04:05.000006Z"
