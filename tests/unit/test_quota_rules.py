"""domain.tenant's quota rules and commands.quotas' ledger: what is refused, what it names, what is counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from commands.ports import CountedUsage
from commands.quotas import QuotaLedger, Reservation, StaleCount
from commands.runtime import CommandResult
from domain import tenant
from domain.errors import QuotaExceeded
from domain.tenant import NEW_CA, NEW_CERTIFICATE, RENEWAL, Quotas, Usage

NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
quota = st.none() | st.integers(0, 50)
count = st.integers(0, 60)
usages = st.builds(Usage, cas=count, certificates=count, issuances_today=count)
addings = st.sampled_from([NEW_CA, NEW_CERTIFICATE, RENEWAL, Usage()])


@given(st.builds(Quotas, max_cas=quota, max_certificates=quota, max_issuances_per_day=quota), usages, addings)
def test_a_command_is_refused_exactly_when_it_would_pass_a_quota_on_what_it_adds(quotas, usage, adding):
    over = [name for name, limit, held, added in (
        ("max_cas", quotas.max_cas, usage.cas, adding.cas),
        ("max_certificates", quotas.max_certificates, usage.certificates, adding.certificates),
        ("max_issuances_per_day", quotas.max_issuances_per_day, usage.issuances_today, adding.issuances_today))
        if added and limit is not None and held + added > limit]
    try:
        tenant.check_quotas(quotas, usage, adding, NOON)
    except QuotaExceeded as refusal:
        assert over and refusal.field == f"quotas.{over[0]}" and refusal.code == "quota_exceeded"
    else:
        assert not over
    if tenant.bounding(quotas, adding) == Quotas():  # nothing to count: nothing can be refused
        assert not over
    else:  # checked against the bounding quotas alone, the answer is the same
        try:
            tenant.check_quotas(tenant.bounding(quotas, adding), usage, adding, NOON)
        except QuotaExceeded as refusal:
            assert over and refusal.field == f"quotas.{over[0]}"
        else:
            assert not over


def test_holding_more_than_a_lowered_quota_refuses_only_what_would_add_to_it():
    quotas = Quotas(max_certificates=2)
    held = Usage(certificates=5, issuances_today=9)
    with pytest.raises(QuotaExceeded):
        tenant.check_quotas(quotas, held, NEW_CERTIFICATE, NOON)
    tenant.check_quotas(quotas, held, RENEWAL, NOON)  # a renewal replaces a certificate
    tenant.check_quotas(quotas, held, NEW_CA, NOON)


def test_a_per_day_refusal_is_429_until_the_next_utc_midnight():
    quotas = Quotas(max_issuances_per_day=3)
    late = datetime(2026, 12, 6, 23, 59, 30, tzinfo=UTC)
    with pytest.raises(QuotaExceeded) as caught:
        tenant.check_quotas(quotas, Usage(issuances_today=3), RENEWAL, late)
    refusal = caught.value
    assert (refusal.status, refusal.field) == (429, "quotas.max_issuances_per_day")
    assert refusal.retry_after_seconds == 31 and "2026-12-07T00:00:00+00:00" in refusal.detail
    with pytest.raises(QuotaExceeded) as held:
        tenant.check_quotas(Quotas(max_cas=1), Usage(cas=1), NEW_CA, late)
    assert held.value.status == 409 and not hasattr(held.value, "retry_after_seconds")


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
       st.integers(-14 * 60, 14 * 60))
def test_the_day_starts_at_utc_midnight_whatever_the_offset_of_now(moment, offset_minutes):
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    start = tenant.day_start(local)
    assert start.tzinfo == UTC and start <= moment < start + timedelta(days=1)
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)


def counted(usage: Usage, cas_position: int, certificates_position: int) -> CountedUsage:
    return CountedUsage(usage=usage, cas_position=cas_position, certificates_position=certificates_position)


def landed(reservation: Reservation, position: int) -> None:
    reservation.landed(CommandResult(stream_id="s", version=1, global_position=position))


async def test_the_ledger_counts_in_flight_and_unprojected_reservations_once():
    ledger = QuotaLedger()
    in_flight = Reservation(adding=NEW_CERTIFICATE, day="2026-12-06")
    appended = Reservation(adding=NEW_CERTIFICATE, day="2026-12-06")
    yesterday = Reservation(adding=NEW_CERTIFICATE, day="2026-12-05")
    new_ca = Reservation(adding=NEW_CA, day="2026-12-06")
    for reservation in (in_flight, appended, yesterday, new_ca):
        await ledger.take("acme", reservation, counted(Usage(), 0, 0), Quotas(), NOON)
    landed(appended, 10)
    landed(yesterday, 11)
    landed(new_ca, 12)
    # the certificates read model stands at 10 (it counts `appended`), the CAs read model at 11
    assert ledger.pending("acme", counted(Usage(), 11, 10), "2026-12-06") == Usage(cas=1, certificates=2,
                                                                                   issuances_today=1)
    # once both counts include position 12, only the one in flight is left
    assert ledger.pending("acme", counted(Usage(), 12, 12), "2026-12-06") == Usage(certificates=1,
                                                                                   issuances_today=1)
    assert ledger.in_flight("acme") == [in_flight]
    assert appended.settled.is_set() and not in_flight.settled.is_set()
    ledger.release("acme", in_flight)
    assert in_flight.settled.is_set() and ledger.in_flight("acme") == []
    assert ledger.pending("acme", counted(Usage(), 12, 12), "2026-12-06") == Usage()
    assert ledger.pending("globex", counted(Usage(), 0, 0), "2026-12-06") == Usage()


async def test_a_count_behind_reservations_already_dropped_is_refused_as_stale():
    """Counts from HTTP workers reach the primary's ledger late: one that misses what another count let go of
    would undercount, so the command counts again."""
    ledger = QuotaLedger()
    first = Reservation(adding=NEW_CERTIFICATE, day="2026-12-06")
    await ledger.take("acme", first, counted(Usage(), 5, 5), Quotas(max_certificates=2), NOON)
    landed(first, 8)
    # a count that includes position 8 lets the reservation go...
    await ledger.take("acme", Reservation(adding=NEW_CERTIFICATE, day="2026-12-06"),
                      counted(Usage(certificates=1), 9, 9), Quotas(max_certificates=3), NOON)
    # ...so a count made before it, which does not include it, cannot be checked against what is left
    late = Reservation(adding=NEW_CERTIFICATE, day="2026-12-06")
    with pytest.raises(StaleCount):
        await ledger.take("acme", late, counted(Usage(), 7, 7), Quotas(max_certificates=2), NOON)
    assert len(ledger.in_flight("acme")) == 1  # only the second one is held
    # counted again, at or past 9: checked, and refused, against the quota of 2 (1 counted + 1 in flight)
    with pytest.raises(QuotaExceeded):
        await ledger.take("acme", late, counted(Usage(certificates=1), 9, 9), Quotas(max_certificates=2), NOON)
    await ledger.take("globex", late, counted(Usage(), 0, 0), Quotas(max_certificates=1), NOON)  # per tenant


def test_a_replay_or_a_no_op_lands_nowhere():
    reservation = Reservation(adding=NEW_CERTIFICATE, day="2026-12-06")
    reservation.landed(CommandResult(stream_id="s", version=1, global_position=7, replayed=True))
    assert reservation.position == 0
    reservation.landed(CommandResult(stream_id="s", version=1, global_position=None, changed=False))
    assert reservation.position == 0


@given(st.integers(1, 6), st.lists(st.tuples(st.sampled_from(["count", "deliver", "land", "fail", "project"]),
                                             st.integers(0, 2), st.integers(0, 30)), max_size=120))
# worker 1 counts before the first certificate lands; worker 2 counts after, and its take lets the certificate's
# reservation go; worker 1's take arrives last, with its count from before: refused as stale, or one too many
@example(1, [("count", 1, 0), ("count", 0, 0), ("deliver", 0, 0), ("land", 0, 0), ("project", 0, 0),
             ("count", 2, 0), ("deliver", 2, 0), ("deliver", 1, 0), ("land", 0, 0)])
@settings(max_examples=300)
def test_workers_whose_counts_and_messages_arrive_late_never_pass_a_quota_together(limit, schedule):
    """The primary's ledger, driven as HTTP workers drive it over their links: each worker counts on the read models
    at their position, its take reaches the ledger later (in order per worker), and its landings and failures
    later still. Whatever the interleaving, the certificates appended never exceed the quota."""
    import asyncio

    async def play() -> None:
        ledger, bounds = QuotaLedger(), Quotas(max_certificates=limit)
        landed: list[int] = []  # positions of appended certificates: the log
        projected = 0  # where the read models stand
        queued: dict[int, list] = {0: [], 1: [], 2: []}  # per worker: counts made, takes not yet delivered
        held: list[Reservation] = []  # taken, in flight
        for op, worker, pick in schedule:
            if op == "count":
                at = projected
                queued[worker].append(CountedUsage(usage=Usage(certificates=sum(1 for p in landed if p <= at)),
                                                   cas_position=at, certificates_position=at))
            elif op == "deliver" and queued[worker]:
                reservation = Reservation(adding=NEW_CERTIFICATE, day="2026-12-06")
                try:
                    await ledger.take("acme", reservation, queued[worker].pop(0), bounds, NOON)
                except (QuotaExceeded, StaleCount):
                    continue
                held.append(reservation)
            elif op in ("land", "fail") and held:
                reservation = held.pop(pick % len(held))
                if op == "land":
                    landed.append(len(landed) + 1)  # the log holds these certificates only: positions 1, 2, ...
                    reservation.land(landed[-1])
                else:
                    ledger.release("acme", reservation)
            elif op == "project":
                projected = len(landed)
            assert len(landed) <= limit, (len(landed), limit)

    asyncio.run(play())
