"""commands/compromise_sweep.py: which blocked keys a pass of the revocation scheduler sweeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commands.compromise_sweep import FULL_PASS, RACE_WINDOW, due
from domain import compromised_keys
from domain.compromised_keys import KeyCompromiseRecorded

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def reported(key: str, ago: timedelta) -> KeyCompromiseRecorded:
    return KeyCompromiseRecorded(public_key_sha256=key, reason="key_compromise", reported_at=NOW - ago,
                                 invalidity_date=None, certificate_id=key[:8], ca_id="issuing")


def test_a_pass_sweeps_new_and_recent_keys_and_a_share_of_those_swept_an_hour_ago_oldest_first():
    keys = [f"{n:064x}" for n in range(10)]
    state = compromised_keys.fold([reported(key, timedelta(days=2)) for key in keys]
                                  + [reported("f" * 64, RACE_WINDOW - timedelta(minutes=1))])
    assert [r.public_key_sha256 for r in due(state, {}, "t", NOW)] == [*keys, "f" * 64]  # none swept yet
    swept = {("t", key): NOW - timedelta(minutes=10 * n) for n, key in enumerate(keys)} | {("t", "f" * 64): NOW}
    # reported within the race window: every pass; of those swept 60-90 minutes ago 15% of 11 keys, oldest first
    assert [r.public_key_sha256 for r in due(state, swept, "t", NOW, share=0.15)] == ["f" * 64, keys[9], keys[8]]
    assert [r.public_key_sha256 for r in due(state, swept, "t", NOW, share=0.01)] == ["f" * 64, keys[9]]  # one
    assert [r.public_key_sha256 for r in due(state, swept, "t", NOW)] == ["f" * 64, *keys[9:5:-1]]
    recent = {("t", key): NOW - FULL_PASS + timedelta(seconds=1) for key in keys} | {("t", "f" * 64): NOW}
    assert [r.public_key_sha256 for r in due(state, recent, "t", NOW)] == ["f" * 64]
