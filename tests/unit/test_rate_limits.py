"""api.ratelimit: rate parsing, the GCRA decision, the memory backend on a hand-driven clock, sign-in usernames."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from api.ratelimit import Decision, MemoryBackend, Rate, RateLimits, _username_of, gcra, parse_rate
from infra.config import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("text, rate", [
    ("600/minute", Rate(600, 60)), ("10/s", Rate(10, 1)), ("5 / 15min", Rate(5, 900)), ("1/day", Rate(1, 86400)),
    ("100/Hour", Rate(100, 3600)), ("", None), ("off", None), ("  ", None)])
def test_rates_parse(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["600", "0/minute", "ten/minute", "5/fortnight", "-1/s", "5/minute/extra"])
def test_bad_rates_name_the_setting(text):
    with pytest.raises(ValueError, match="CSM_RATE_LIMIT_PER_ADDRESS"):
        parse_rate(text, "CSM_RATE_LIMIT_PER_ADDRESS")


def test_settings_with_a_bad_rate_refuse_to_start(tmp_path):
    with pytest.raises(ValueError, match="CSM_RATE_LIMIT_PER_PRINCIPAL"):
        RateLimits(Settings(data_dir=tmp_path, rate_limit_per_principal="lots"))


def test_gcra_allows_a_burst_of_the_limit_then_refuses_until_one_interval_passes():
    rate, now, tat = Rate(3, 60), 0.0, None
    remaining = []
    for _ in range(3):
        decision, tat = gcra(tat, now, rate)
        assert decision.allowed
        remaining.append(decision.remaining)
    assert remaining == [2, 1, 0]
    refused, stored = gcra(tat, now, rate)
    assert (refused.allowed, refused.remaining, stored) == (False, 0, None)
    assert refused.retry_after == pytest.approx(20.0)  # one interval: 60 s / 3
    assert refused.reset_after == pytest.approx(60.0)
    assert not gcra(tat, 19.9, rate)[0].allowed
    again, _ = gcra(tat, 20.0, rate)
    assert again.allowed and again.remaining == 0


@given(now=st.floats(min_value=0, max_value=1e7, allow_nan=False), limit=st.integers(1, 1000),
       period=st.sampled_from([1, 60, 3600, 86400]))
@example(now=0.999, limit=1, period=1)  # refused by 1e-16 s when the check compared absolute times
@example(now=6000.0, limit=2, period=3600)
def test_a_first_request_always_leaves_limit_minus_one_whatever_the_clock_reads(now, limit, period):
    # (now + interval) - now is not exactly interval in floating point: 2/hour at a monotonic clock of
    # about 6,000 s once reported 0 requests left after the first
    decision, _ = gcra(None, now, Rate(limit, period))
    assert decision.allowed and decision.remaining == limit - 1


def test_a_full_bucket_is_the_same_as_no_bucket():
    rate = Rate(2, 10)
    _, tat = gcra(None, 0.0, rate)
    later, _ = gcra(tat, 100.0, rate)
    fresh, _ = gcra(None, 100.0, rate)
    assert later == fresh


async def test_memory_backend_keeps_one_bucket_per_key():
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    rate = Rate(2, 60)
    assert [(await backend.hit("a", rate)).allowed for _ in range(3)] == [True, True, False]
    assert (await backend.hit("b", rate)).allowed
    clock.now += 30  # one interval
    assert (await backend.hit("a", rate)).allowed
    assert not (await backend.hit("a", rate)).allowed


async def test_memory_backend_forgets_full_buckets_first_when_it_reaches_its_size():
    clock = Clock()
    backend = MemoryBackend(clock=clock, max_keys=3)
    rate = Rate(1, 60)
    await backend.hit("old", rate)
    clock.now += 61  # "old" is full again
    await backend.hit("x", rate)
    await backend.hit("y", rate)
    await backend.hit("z", rate)  # at the bound: "old" goes, the live ones stay
    assert not (await backend.hit("x", rate)).allowed
    assert not (await backend.hit("y", rate)).allowed
    assert len(backend._tats) <= 3


def test_decision_headers():
    allowed = Decision(True, 600, 599, 0.1, 0.0, Rate(600, 60))
    assert allowed.headers() == {"RateLimit-Limit": "600", "RateLimit-Remaining": "599", "RateLimit-Reset": "1",
                                 "RateLimit-Policy": "600;w=60"}
    refused = Decision(False, 5, 0, 60.0, 0.2, Rate(5, 60))
    assert refused.headers()["Retry-After"] == "1"  # never 0: a client would retry at once


@pytest.mark.parametrize("body, content_type, username", [
    (b'{"grant_type": "password", "username": " Alice "}', "application/json", "alice"),
    (b"grant_type=password&username=Bob&password=x", "application/x-www-form-urlencoded", "bob"),
    (b"grant_type=password&username=Bob", "", "bob"),
    (b'{"username": 5}', "application/json", None),
    (b"[1, 2]", "application/json", None),
    (b"not json", "application/json", None),
    (b"grant_type=refresh_token", "application/x-www-form-urlencoded", None),
    (b'{"username": "   "}', "application/json", None),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", None),  # was a RecursionError outside every handler
    (b'{"username": ' * 5_000 + b'"x"' + b"}" * 5_000, "application/json; charset=utf-8", None),
    (b"\xff\xfe{", "application/json", None),
])
def test_the_sign_in_username_is_found_in_json_and_forms(body, content_type, username):
    assert _username_of(body, content_type) == username


@given(now=st.floats(min_value=0, max_value=1e7, allow_nan=False), limit=st.integers(1, 50),
       period=st.sampled_from([1, 60, 3600]))
def test_a_full_burst_is_allowed_and_the_next_request_refused_at_any_clock(now, limit, period):
    rate, tat = Rate(limit, period), None
    for n in range(limit):
        decision, tat = gcra(tat, now, rate)
        assert decision.allowed and decision.remaining == limit - 1 - n, (n, decision)
    refused, _ = gcra(tat, now, rate)
    assert not refused.allowed and refused.retry_after > 0


_JSON_BITS = st.sampled_from([b"[", b"]", b"{", b"}", b'"username"', b":", b",", b'"a"', b"1", b"\\", b"\xff"])


@given(body=st.one_of(st.binary(max_size=64), st.lists(_JSON_BITS, max_size=64).map(b"".join),
                      st.integers(0, 50_000).map(lambda depth: b"[" * depth + b"]" * depth)),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "", "text/plain"]))
def test_peeking_at_a_sign_in_body_never_raises(body, content_type):
    """The peek runs in the rate limiter, before (and outside) the app's problem handlers: it must not raise."""
    username = _username_of(body, content_type)
    assert username is None or (isinstance(username, str) and 0 < len(username) <= 256)
