"""domain/compromised_keys.py and its command side: a tenant's record of compromised keys, and the refusal it makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands import compromised_keys as commands
from commands.authz import SYSTEM, Forbidden, Principal
from commands.runtime import CommandContext
from domain import compromised_keys
from domain.compromised_keys import KeyCompromiseLifted, KeyCompromiseRecorded, KeyCompromiseReportRepeated
from domain.errors import DomainError

T0 = datetime(2026, 12, 1, tzinfo=UTC)
ADMIN = CommandContext(principal=SYSTEM)

keys = st.sampled_from([f"{n:064x}" for n in range(6)])  # few keys: reports of the same key are common
reports = st.builds(lambda key, n, by_ca: KeyCompromiseRecorded(
    public_key_sha256=key, reason="ca_compromise" if by_ca else "key_compromise", reported_at=T0 + timedelta(minutes=n),
    invalidity_date=None, certificate_id=None if by_ca else f"{n:040x}", ca_id=None if by_ca else "issuing",
    subject_ca_id="sub" if by_ca else None), keys, st.integers(0, 10_000), st.booleans())
report_lists = st.lists(reports, max_size=12)


def first_of_each(items: list[KeyCompromiseRecorded]) -> dict[str, KeyCompromiseRecorded]:
    found: dict[str, KeyCompromiseRecorded] = {}
    for item in items:
        found.setdefault(item.public_key_sha256, item)
    return found


@given(report_lists)
def test_the_fold_keeps_the_first_report_of_every_key(items):
    state = compromised_keys.fold(items)
    assert state.keys == first_of_each(items)
    assert state.version == len(items)


@given(report_lists, report_lists)
def test_the_fold_resumes_from_a_kept_state_without_changing_it(earlier, later):
    kept = compromised_keys.fold(earlier)
    before = dict(kept.keys)
    assert compromised_keys.fold(later, start=kept) == compromised_keys.fold(earlier + later)
    assert kept.keys == before and kept.version == len(earlier)


@given(report_lists, report_lists)
def test_a_decision_records_exactly_the_reports_from_new_sources_and_is_idempotent(recorded, asked):
    """A key not blocked is recorded with its first report; a blocked one again only from a source that has not
    reported it since its block began (another certificate or CA), so that a lift can see it was reported again."""
    state = compromised_keys.fold(recorded)
    decided = compromised_keys.decide_record(state, asked)
    known = {(k, s) for k, found in state.sources.items() for s in found}
    expected, seen = [], set(known)
    for report in asked:
        where = (report.public_key_sha256, compromised_keys.source(report))
        if where not in seen:
            seen.add(where)
            expected.append(report)
    assert decided == expected
    after = compromised_keys.fold(decided, start=state)
    assert compromised_keys.decide_record(after, asked) == []  # a retry records nothing
    assert after.keys.keys() == state.keys.keys() | {r.public_key_sha256 for r in asked}
    assert all(after.keys[k] is state.keys[k] for k in state.keys)  # the first report stays the one listed


@given(report_lists, keys, st.sampled_from(["csr", "reuse_key", "certificate_pem"]))
def test_only_a_recorded_key_is_refused_and_the_refusal_names_the_field(items, key, field):
    state = compromised_keys.fold(items)
    if key not in state.keys:
        compromised_keys.check_not_compromised(state, key, field)
        return
    with pytest.raises(DomainError) as refused:
        compromised_keys.check_not_compromised(state, key, field)
    assert (refused.value.code, refused.value.field, refused.value.status) == ("key_compromised", field, 422)
    assert key in refused.value.detail


@given(report_lists, report_lists, st.data())
def test_a_report_of_keys_all_known_records_only_that_it_was_made_and_changes_no_state(recorded, asked, data):
    """A report's decision is the record's when it blocks anything; else (every key known from its source: some of
    those recorded, reported again) one key.compromise_report_repeated naming its keys (hashes only), which the fold
    counts as a version and nothing more."""
    state = compromised_keys.fold(recorded)
    if compromised_keys.decide_record(state, asked) or not asked:  # something to block, or nothing named
        assert compromised_keys.decide_report(state, asked) == compromised_keys.decide_record(state, asked)
    if not recorded:
        return
    asked = data.draw(st.lists(st.sampled_from(recorded), min_size=1))  # every one known from its source
    [repeated] = decided = compromised_keys.decide_report(state, asked)
    assert isinstance(repeated, KeyCompromiseReportRepeated)
    assert repeated.public_keys_sha256 == tuple(dict.fromkeys(r.public_key_sha256 for r in asked))
    assert (repeated.certificate_id, repeated.subject_ca_id) == (asked[0].certificate_id, asked[0].subject_ca_id)
    after = compromised_keys.fold(decided, start=state)
    assert msgspec.structs.replace(after, version=state.version) == state and after.version == state.version + 1
    assert {f.name for f in msgspec.structs.fields(KeyCompromiseReportRepeated)} == {
        "public_keys_sha256", "reported_at", "invalidity_date", "certificate_id", "ca_id", "subject_ca_id"}


def test_the_event_carries_the_hash_and_where_it_was_reported_never_more():
    names = {f.name for f in msgspec.structs.fields(KeyCompromiseRecorded)}
    assert names == {"public_key_sha256", "reason", "reported_at", "invalidity_date", "certificate_id", "ca_id",
                     "subject_ca_id", "through", "alternative_of"}  # a hybrid's ML-DSA half: the classical key's hash


async def test_a_recorded_key_is_refused_in_its_tenant_only_and_recording_again_appends_nothing(services):
    key = "ab" * 32
    report = KeyCompromiseRecorded(public_key_sha256=key, reason="key_compromise", reported_at=T0,
                                   invalidity_date=None, certificate_id="01" * 20, ca_id="issuing")
    command = commands.ListCompromisedKeys(tenant_id="acme")  # any struct: it only fingerprints the request
    first = await commands.record(services, ADMIN, command, "acme", [report])
    assert (first.changed, first.version) == (True, 1)
    again = await commands.record(services, ADMIN, command, "acme", [report, report])
    assert (again.changed, again.version) == (False, 1)
    with pytest.raises(DomainError) as refused:
        await commands.refuse_if_compromised(services, "acme", key, "csr")
    assert (refused.value.code, refused.value.field) == ("key_compromised", "csr")
    await commands.refuse_if_compromised(services, "globex", key, "csr")  # another tenant's key: its own to report
    await commands.refuse_if_compromised(services, "acme", "cd" * 32, "csr")
    listed = await commands.list_compromised_keys(command, ADMIN, services)
    assert [(item.public_key_sha256, item.certificate_id) for item in listed.items] == [(key, "01" * 20)]
    assert (await commands.list_compromised_keys(commands.ListCompromisedKeys(tenant_id="globex"), ADMIN,
                                                 services)).items == []


async def test_listing_needs_cert_read_in_the_tenant(services):
    viewer = CommandContext(principal=Principal(id="v", auth_method="api_key", roles=frozenset({"viewer"}),
                                                tenant_id="globex"))
    with pytest.raises(Forbidden):
        await commands.list_compromised_keys(commands.ListCompromisedKeys(tenant_id="acme"), viewer, services)
    assert (await commands.list_compromised_keys(commands.ListCompromisedKeys(tenant_id="globex"), viewer,
                                                 services)).items == []


lifts = st.builds(lambda key, n: KeyCompromiseLifted(public_key_sha256=key, reason="reported in error",
                                                     lifted_at=T0 + timedelta(minutes=n), reported_at=T0),
                  keys, st.integers(0, 10_000))
histories = st.lists(st.one_of(reports, lifts), max_size=16)


def blocked_after(items) -> dict[str, KeyCompromiseRecorded]:
    """The model: a report blocks a key not blocked (the first kept), a lift unblocks a blocked one."""
    found: dict[str, KeyCompromiseRecorded] = {}
    for item in items:
        if isinstance(item, KeyCompromiseRecorded):
            found.setdefault(item.public_key_sha256, item)
        else:
            found.pop(item.public_key_sha256, None)
    return found


@given(histories, histories)
def test_with_lifts_the_fold_follows_the_model_and_resumes_from_a_kept_state(earlier, later):
    kept = compromised_keys.fold(earlier)
    assert kept.keys == blocked_after(earlier) and not kept.keys.keys() & kept.lifted.keys()
    before = (dict(kept.keys), dict(kept.lifted))
    assert compromised_keys.fold(later, start=kept) == compromised_keys.fold(earlier + later)
    assert (kept.keys, kept.lifted) == before


def test_a_lift_unblocks_the_key_and_its_hybrid_half_and_a_new_report_blocks_it_again():
    classical, ml_dsa, other = "aa" * 32, "bb" * 32, "cc" * 32
    report = KeyCompromiseRecorded(public_key_sha256=classical, reason="key_compromise", reported_at=T0,
                                   invalidity_date=None, certificate_id="01" * 20, ca_id="issuing")
    half = msgspec.structs.replace(report, public_key_sha256=ml_dsa, alternative_of=classical)
    unrelated = msgspec.structs.replace(report, public_key_sha256=other, certificate_id="02" * 20)
    state = compromised_keys.fold([report, half, unrelated])
    for asked in (classical, ml_dsa):  # either half lifts both: they were one report of one certificate
        lifted = compromised_keys.decide_lift(state, asked, reason="wrong certificate named", now=T0)
        assert sorted(e.public_key_sha256 for e in lifted) == [classical, ml_dsa]
        assert all(e.reason == "wrong certificate named" and e.reported_at == T0 for e in lifted)
    after = compromised_keys.fold(lifted, start=state)
    assert list(after.keys) == [other] and sorted(after.lifted) == [classical, ml_dsa]
    compromised_keys.check_not_compromised(after, ml_dsa, "csr")
    for key, code in ((classical, "compromise_already_lifted"), ("dd" * 32, "key_not_compromised")):
        with pytest.raises(DomainError) as refused:
            compromised_keys.decide_lift(after, key, reason="again", now=T0)
        assert (refused.value.code, refused.value.status, refused.value.field) == (code, 409, "public_key_sha256")
    again = compromised_keys.fold(compromised_keys.decide_record(after, [report]), start=after)
    assert classical in again.keys and classical not in again.lifted


def test_a_key_a_compromise_rollover_rolled_away_from_stays_blocked():
    rolled = KeyCompromiseRecorded(public_key_sha256="aa" * 32, reason="key_compromise", reported_at=T0,
                                   invalidity_date=None, subject_ca_id="root", through="rollover")
    with pytest.raises(DomainError) as refused:
        compromised_keys.decide_lift(compromised_keys.fold([rolled]), "aa" * 32, reason="oops", now=T0)
    assert (refused.value.code, refused.value.status) == ("compromise_rollover_final", 409)


async def test_lifting_needs_key_unblock_which_tenant_admins_hold_and_operators_do_not(services):
    key = "ab" * 32
    report = KeyCompromiseRecorded(public_key_sha256=key, reason="key_compromise", reported_at=T0,
                                   invalidity_date=None, certificate_id="01" * 20, ca_id="issuing")
    await commands.record(services, ADMIN, commands.ListCompromisedKeys(tenant_id="acme"), "acme", [report])
    lift = msgspec.convert({"tenant_id": "acme", "public_key_sha256": key, "reason": "reported in error"},
                           commands.LiftKeyCompromise)

    def as_role(role: str, tenant: str = "acme") -> CommandContext:
        return CommandContext(principal=Principal(id=role, auth_method="api_key", roles=frozenset({role}),
                                                  tenant_id=tenant))
    for refused in (as_role("ca-operator"), as_role("viewer"), as_role("tenant-admin", "globex")):
        with pytest.raises(Forbidden):
            await commands.lift_key_compromise(lift, refused, services)
    done = await commands.lift_key_compromise(lift, as_role("tenant-admin"), services)
    assert done.public_keys_sha256 == (key,) and done.result.changed
    await commands.refuse_if_compromised(services, "acme", key, "csr")  # certifiable again
    listed = await commands.list_compromised_keys(commands.ListCompromisedKeys(tenant_id="acme"), ADMIN, services)
    assert listed.items == [] and [(x.public_key_sha256, x.reason) for x in listed.lifted] == [
        (key, "reported in error")]
    [event] = [e for e in await services.store.read_stream("acme", "compromised-keys")
               if e.type == "key.compromise_lifted"]
    assert (event.actor.principal, event.payload["reason"]) == ("tenant-admin", "reported in error")  # audited
    with pytest.raises(msgspec.ValidationError):  # a reason is mandatory
        msgspec.convert({"tenant_id": "acme", "public_key_sha256": key, "reason": ""}, commands.LiftKeyCompromise)


def test_a_root_key_reported_before_its_compromise_rollover_stays_blocked_for_good():
    """The usual order: the root's key is reported (csm ca compromise, through "report"), then the root rolls over
    in compromise mode. The rollover's own report must still make the block final, although it is not the first."""
    classical, ml_dsa = "aa" * 32, "bb" * 32
    reported = KeyCompromiseRecorded(public_key_sha256=classical, reason="key_compromise", reported_at=T0,
                                     invalidity_date=None, subject_ca_id="root", through="report")
    state = compromised_keys.fold([reported, msgspec.structs.replace(reported, public_key_sha256=ml_dsa,
                                                                      alternative_of=classical)])
    rollover = msgspec.structs.replace(reported, through="rollover", reported_at=T0 + timedelta(hours=1))
    halves = [rollover, msgspec.structs.replace(rollover, public_key_sha256=ml_dsa, alternative_of=classical)]
    state = compromised_keys.fold(compromised_keys.decide_record(state, halves), start=state)
    assert state.keys[classical] == reported  # the first report is still the one listed
    for asked in (classical, ml_dsa):
        with pytest.raises(DomainError) as refused:
            compromised_keys.decide_lift(state, asked, reason="reported in error", now=T0)
        assert (refused.value.code, refused.value.status) == ("compromise_rollover_final", 409)
    assert compromised_keys.decide_record(state, halves) == []  # a retry of the rollover records nothing more


async def test_a_replayed_lift_answers_the_keys_the_first_one_lifted(services):
    classical, ml_dsa, other = "aa" * 32, "bb" * 32, "cc" * 32
    report = KeyCompromiseRecorded(public_key_sha256=classical, reason="key_compromise", reported_at=T0,
                                   invalidity_date=None, certificate_id="01" * 20, ca_id="issuing")
    half = msgspec.structs.replace(report, public_key_sha256=ml_dsa, alternative_of=classical)
    unrelated = msgspec.structs.replace(report, public_key_sha256=other, certificate_id="02" * 20)
    await commands.record(services, ADMIN, commands.ListCompromisedKeys(tenant_id="acme"), "acme",
                          [report, half, unrelated])
    keyed = CommandContext(principal=SYSTEM, idempotency_key="lift-1")

    def lift(key: str) -> commands.LiftKeyCompromise:
        return msgspec.convert({"tenant_id": "acme", "public_key_sha256": key, "reason": "reported in error"},
                               commands.LiftKeyCompromise)
    first = await commands.lift_key_compromise(lift(ml_dsa), keyed, services)
    await commands.lift_key_compromise(lift(other), ADMIN, services)  # another lift appended after it
    again = await commands.lift_key_compromise(lift(ml_dsa), keyed, services)
    assert again.replayed and not first.replayed
    assert again.public_keys_sha256 == first.public_keys_sha256 == tuple(sorted([classical, ml_dsa]))


def test_a_lift_racing_a_second_report_of_the_key_is_refused_unless_every_report_is_lifted():
    """The admin read one report (in error) and lifts; meanwhile another certificate of the same key was revoked
    key_compromise for real. That report must leave a trace the lift sees, not be dropped as a repeat."""
    key = "aa" * 32
    wrong = KeyCompromiseRecorded(public_key_sha256=key, reason="key_compromise", reported_at=T0,
                                  invalidity_date=None, certificate_id="01" * 20, ca_id="issuing")
    state = compromised_keys.fold([wrong])
    genuine = msgspec.structs.replace(wrong, certificate_id="02" * 20, reported_at=T0 + timedelta(minutes=1))
    again = compromised_keys.decide_record(state, [genuine, wrong])
    assert again == [genuine]  # a new source is recorded; the same source again is not
    state = compromised_keys.fold(again, start=state)
    assert state.keys[key] == wrong and compromised_keys.decide_record(state, [genuine, wrong]) == []
    with pytest.raises(DomainError) as refused:
        compromised_keys.decide_lift(state, key, reason="reported in error", now=T0)
    assert (refused.value.code, refused.value.status) == ("compromise_reported_again", 409)
    lifted = compromised_keys.decide_lift(state, key, reason="both in error", now=T0, every_report=True)
    after = compromised_keys.fold(lifted, start=state)
    assert key not in after.keys
    blocked = compromised_keys.fold(compromised_keys.decide_record(after, [wrong]), start=after)
    assert key in blocked.keys  # a new report after the lift blocks again, counted afresh
    assert compromised_keys.decide_lift(blocked, key, reason="again in error", now=T0)


def test_a_hybrids_two_halves_count_as_one_blocked_key_and_a_lone_ml_dsa_key_as_one():
    def report(key: str, alternative_of: str | None = None) -> KeyCompromiseRecorded:
        return KeyCompromiseRecorded(public_key_sha256=key, reason="key_compromise", reported_at=T0,
                                     invalidity_date=None, certificate_id="c1", ca_id="issuing",
                                     alternative_of=alternative_of)

    classical, ml_dsa, alone = "a" * 64, "b" * 64, "c" * 64
    hybrid = compromised_keys.fold([report(classical), report(ml_dsa, alternative_of=classical)])
    assert len(hybrid.keys) == 2 and compromised_keys.blocked_count(hybrid) == 1
    assert compromised_keys.blocked_count(compromised_keys.fold([report(alone)], start=hybrid)) == 2
    assert compromised_keys.blocked_count(compromised_keys.fold([])) == 0
