"""TOTP against the RFC 4226 and RFC 6238 test vectors, the window, and the otpauth URI."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import totp

RFC_SECRET = b"12345678901234567890"


@pytest.mark.parametrize("counter, code", list(enumerate(
    ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"])))
def test_hotp_matches_rfc_4226_appendix_d(counter, code):
    assert totp.hotp(RFC_SECRET, counter) == code


@pytest.mark.parametrize("unix_time, code", [(59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
                                             (1234567890, "89005924"), (2000000000, "69279037"),
                                             (20000000000, "65353130")])
def test_totp_matches_rfc_6238_appendix_b_sha1(unix_time, code):
    assert totp.hotp(RFC_SECRET, totp.step_at(unix_time), digits=8) == code
    assert totp.totp(RFC_SECRET, unix_time) == code[-6:]


def test_codes_within_one_step_of_now_match_and_name_their_step():
    now = 1_700_000_000.0
    step = totp.step_at(now)
    for delta in (-1, 0, 1):
        assert totp.matching_step(RFC_SECRET, totp.hotp(RFC_SECRET, step + delta), now) == step + delta
    for delta in (-2, 2, 10):
        assert totp.matching_step(RFC_SECRET, totp.hotp(RFC_SECRET, step + delta), now) is None


@given(st.text(max_size=12))
def test_anything_but_a_current_code_is_refused(text):
    now = 1_700_000_000.0
    current = {totp.hotp(RFC_SECRET, totp.step_at(now) + d) for d in (-1, 0, 1)}
    assert (totp.matching_step(RFC_SECRET, text, now) is not None) == (text in current)


def test_the_provisioning_uri_is_what_authenticator_apps_read():
    uri = totp.provisioning_uri(RFC_SECRET, "alice@example.com", "CSM")
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp" and parsed.path == "/CSM:alice@example.com"
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    assert query == {"secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "issuer": "CSM", "algorithm": "SHA1",
                     "digits": "6", "period": "30"}


def test_enrollment_needs_confirmation_and_is_refused_twice():
    started = totp.TotpEnrollmentStarted(subject="user:_system:a", key_ref="key_1")
    state = totp.fold(totp.decide_start(totp.Mfa(), started))
    assert state.pending_ref == "key_1" and state.key_ref is None
    with pytest.raises(Exception, match="start a TOTP enrollment first"):
        totp.decide_confirm(state, "user:_system:a", "key_other", 5)
    enabled = totp.fold([started, *totp.decide_confirm(state, "user:_system:a", "key_1", 5)])
    assert enabled.key_ref == "key_1" and enabled.confirmed_step == 5 and enabled.pending_ref is None
    with pytest.raises(Exception, match="already enabled"):
        totp.decide_start(enabled, started)
    assert totp.fold([started, totp.TotpEnabled(subject="s", key_ref="key_1", step=5),
                      *totp.decide_remove(enabled, "s", "lost")]).key_ref is None
