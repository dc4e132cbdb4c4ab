"""The ServiceAccount aggregate's decisions: keys recorded on the account, a disable naming them, enabling none."""

from __future__ import annotations

import pytest

from domain import service_account as sa
from domain.errors import DomainError, NotFound
from domain.events import Actor, EventEnvelope, decode_payload

CREATED = sa.ServiceAccountCreated(name="ci", tenant_id=None, description="")


def folded(*payloads) -> sa.ServiceAccount:
    return sa.fold([CREATED, *payloads])


def test_a_key_is_recorded_on_an_active_account_only():
    assert sa.decide_issue_key(folded(), "k1") == [sa.ServiceAccountKeyIssued(token_id="k1")]
    disabled = folded(sa.ServiceAccountDisabled(reason="leaked", keys=[]))
    with pytest.raises(DomainError) as refused:
        sa.decide_issue_key(disabled, "k2")
    assert (refused.value.code, refused.value.field) == ("service_account_disabled", "service_account")
    with pytest.raises(NotFound):
        sa.decide_issue_key(sa.ServiceAccount(), "k3")


def test_a_disable_names_every_key_recorded_and_those_listed_elsewhere_once():
    state = folded(sa.ServiceAccountKeyIssued(token_id="k2"), sa.ServiceAccountKeyIssued(token_id="k1"))
    [disabled] = sa.decide_disable(state, " leaked in a CI log ", other_keys=["k0", "k1"])
    assert disabled == sa.ServiceAccountDisabled(reason="leaked in a CI log", keys=["k0", "k1", "k2"])
    after = sa.fold([disabled], start=state)
    assert (after.status, after.keys, after.disabled_keys) == ("disabled", (), ("k0", "k1", "k2"))
    assert sa.decide_disable(after, "again") == []  # nothing new to record


@pytest.mark.parametrize("reason", ["", "   ", "a\nb", "x" * 501])
def test_a_disable_and_an_enable_need_a_printable_reason(reason):
    for decide, state in ((sa.decide_disable, folded()),
                          (sa.decide_enable, folded(sa.ServiceAccountDisabled(reason="r", keys=[])))):
        with pytest.raises(DomainError) as refused:
            decide(state, reason)
        assert (refused.value.code, refused.value.field) == ("invalid_reason", "reason")


def test_enabling_brings_no_key_back_and_a_later_disable_names_only_newer_keys():
    state = folded(sa.ServiceAccountKeyIssued(token_id="old"), sa.ServiceAccountDisabled(reason="r", keys=["old"]))
    assert sa.decide_enable(folded(), "was never disabled") == []
    [enabled] = sa.decide_enable(state, "rotated")
    state = sa.fold([enabled, sa.ServiceAccountKeyIssued(token_id="new")], start=state)
    assert (state.status, state.keys, state.disabled_keys) == ("active", ("new",), ())
    assert sa.decide_disable(state, "again")[0].keys == ["new"]
    with pytest.raises(NotFound):
        sa.decide_enable(sa.ServiceAccount(), "r")


def test_a_version_1_disable_reads_as_naming_no_keys():
    envelope = EventEnvelope(event_id="e", stream_id="serviceaccount-ci", stream_type=sa.STREAM_TYPE, version=2,
                             global_position=2, tenant_id="_system", type="service_account.disabled",
                             schema_version=1, occurred_at="2026-01-01T00:00:00.000000Z",
                             actor=Actor(principal="system", auth_method="internal"), correlation_id=None,
                             causation_id=None, payload={"reason": "old"}, prev_hash="", hash="")
    assert decode_payload(envelope) == sa.ServiceAccountDisabled(reason="old", keys=[])
