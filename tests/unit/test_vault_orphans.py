"""domain.vault: a key is an orphan exactly when it is older than the cutoff and no string in any payload equals
its id, wherever the string sits (a value at any depth, a list item, a mapping key)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, strategies as st

from domain.vault import StoredKey, orphans

CUTOFF = datetime(2026, 12, 6, tzinfo=UTC)
IDS = [f"key_{i:032x}" for i in range(8)]

_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.sampled_from(IDS))
_payloads = st.recursive(_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=6), st.sampled_from(IDS)), inner,
                                                 max_size=4)), max_leaves=20)


def _named(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set(value) | set().union(*map(_named, value.values()))
    if isinstance(value, list):
        return set().union(*map(_named, value))
    return set()


@given(st.lists(_payloads, max_size=6), st.lists(st.integers(-3, 3), min_size=len(IDS), max_size=len(IDS)))
def test_a_key_is_an_orphan_exactly_when_it_is_old_enough_and_nothing_names_it(payloads, ages_hours):
    stored = [StoredKey(key_id=key_id, tenant_id="acme", purpose="end-entity",
                        created_at=CUTOFF + timedelta(hours=hours)) for key_id, hours in zip(IDS, ages_hours)]
    named = set().union(*map(_named, payloads))
    found = orphans(stored, payloads, CUTOFF)
    assert {key.key_id for key in found} == {key.key_id for key in stored
                                             if key.created_at < CUTOFF and key.key_id not in named}
    assert found == sorted(found, key=lambda key: (key.created_at, key.key_id))


def test_a_key_named_only_deep_inside_a_payload_or_as_a_mapping_key_stays():
    old = [StoredKey(key_id=key_id, tenant_id="t", purpose="ca", created_at=CUTOFF - timedelta(days=1))
           for key_id in IDS[:3]]
    payloads = [{"certificate": {"key_ref": IDS[0]}}, {"refs": [[{IDS[1]: 1}]]}]
    assert [key.key_id for key in orphans(old, payloads, CUTOFF)] == [IDS[2]]
