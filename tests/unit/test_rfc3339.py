"""commands.runtime.rfc3339: the one way event and read-model timestamps are written; and validity_time, how a
moment is compared with the X.509 times (whole seconds) the certificates read model keeps as the events carry them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
from hypothesis import given, strategies as st

from commands.runtime import rfc3339
from projections.certificates import validity_time

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


_VALIDITY = st.datetimes(min_value=datetime(1950, 1, 2), max_value=datetime(9998, 12, 30),
                         timezones=st.just(UTC)).map(lambda moment: moment.replace(microsecond=0))


@st.composite
def _validity_and_moment(draw):
    """An X.509 time, and a moment anywhere, or within two seconds of it (where the formats used to disagree)."""
    validity = draw(_VALIDITY)
    near = validity + timedelta(microseconds=draw(st.integers(-2_000_000, 2_000_000)))
    moment = draw(st.one_of(st.just(near), _MOMENTS.filter(lambda m: m.year >= 1950 and m.year <= 9998)))
    return validity, moment.astimezone(draw(_OFFSETS))


@given(_validity_and_moment())
def test_a_validity_column_compares_with_a_moment_as_their_instants_do(pair):
    validity, moment = pair
    stored = msgspec.to_builtins(validity)  # as a certificate.issued event carries not_after, and the row keeps it
    assert (stored > validity_time(moment)) == (validity > moment)
    assert (stored <= validity_time(moment)) == (validity <= moment)
    assert (stored >= validity_time(moment, up=True)) == (validity >= moment)
    assert (stored < validity_time(moment, up=True)) == (validity < moment)


def test_a_validity_time_is_the_x509_format():
    moment = datetime(2027, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert validity_time(moment) == "2027-01-01T00:00:00Z" == msgspec.to_builtins(moment.replace(microsecond=0))
    assert validity_time(moment, up=True) == "2027-01-01T00:00:01Z"
    assert validity_time(moment.replace(microsecond=0), up=True) == "2027-01-01T00:00:00Z"
