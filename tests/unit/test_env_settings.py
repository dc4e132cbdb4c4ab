"""Reading CSM_* variables (infra/env.py, infra/config.py): a number that cannot be used is refused naming the
variable and the rule, by the settings and by the CLI (exit 2, no traceback); what can be used is read exactly."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra import env
from infra.config import Settings

CSM = Path(sys.executable).with_name("csm")


@given(st.integers(min_value=-10**6, max_value=10**6), st.integers(min_value=-100, max_value=100),
       st.integers(min_value=0, max_value=200))
def test_a_whole_number_is_read_exactly_or_refused_with_its_bounds(value, low, span):
    high = low + span
    os.environ["CSM_TEST_WHOLE"] = f" {value} "
    try:
        if low <= value <= high:
            assert env.whole("TEST_WHOLE", 0, low=low, high=high) == value
        else:
            with pytest.raises(ValueError, match=r"^CSM_TEST_WHOLE: .* must be at (least|most) "):
                env.whole("TEST_WHOLE", 0, low=low, high=high)
    finally:
        del os.environ["CSM_TEST_WHOLE"]


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12))
def test_any_text_is_a_number_or_a_named_refusal(text):
    os.environ["CSM_TEST_TEXT"] = text
    try:
        for read in (lambda: env.whole("TEST_TEXT", 7, low=None), lambda: env.decimal("TEST_TEXT", 7.0, low=None)):
            try:
                value = read()
            except ValueError as exc:
                assert str(exc).startswith("CSM_TEST_TEXT: ")
            else:
                assert math.isfinite(value)
    finally:
        del os.environ["CSM_TEST_TEXT"]


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("CSM_PORT", "eighty", "CSM_PORT: 'eighty' is not a whole number"),
    ("CSM_PORT", "70000", "CSM_PORT: 70000 must be at most 65535"),
    ("CSM_POLL_INTERVAL", "0", "CSM_POLL_INTERVAL: 0 must be more than 0"),
    ("CSM_WEBHOOK_TIMEOUT", "nan", "CSM_WEBHOOK_TIMEOUT: 'nan' is not a finite number"),
    ("CSM_CHECKPOINT_INTERVAL", "-5", "CSM_CHECKPOINT_INTERVAL: -5 must be more than 0"),
    ("CSM_LOGIN_MAX_FAILURES", "0", "CSM_LOGIN_MAX_FAILURES: 0 must be at least 1"),
    ("CSM_EXPIRY_WARNING_DAYS", "30,seven", "CSM_EXPIRY_WARNING_DAYS: 'seven' is not a whole number"),
    ("CSM_EXPIRY_WARNING_DAYS", "30,0", "CSM_EXPIRY_WARNING_DAYS: 0 must be at least 1"),
    ("CSM_MAX_BODY_BYTES", "1.5", "CSM_MAX_BODY_BYTES: '1.5' is not a whole number"),
    ("CSM_WORKERS", "many", "CSM_WORKERS: 'many' is not a whole number"),
    ("CSM_WORKERS", "0", "CSM_WORKERS: 0 must be at least 1"),
    ("CSM_WORKERS", "65", "CSM_WORKERS: 65 must be at most 64"),
])
def test_a_setting_that_cannot_be_used_is_refused_naming_it(monkeypatch, tmp_path, variable, value, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as refused:
        Settings.from_env(tmp_path)
    assert str(refused.value) == says


def test_settings_within_their_bounds_are_read(monkeypatch, tmp_path):
    for variable, value in {"CSM_PORT": "0", "CSM_POLL_INTERVAL": "0.05", "CSM_JOB_WORKER_THREADS": "0",
                            "CSM_EXPIRY_WARNING_DAYS": "1, 30,7,30", "CSM_WEBHOOK_MIN_BACKOFF": "0.02",
                            "CSM_LOGIN_BACKOFF_BASE": "0", "CSM_RSA_KEY_POOL": "0", "CSM_WORKERS": "64"}.items():
        monkeypatch.setenv(variable, value)
    settings = Settings.from_env(tmp_path)
    assert (settings.port, settings.poll_interval, settings.job_worker_threads) == (0, 0.05, 0)
    assert settings.expiry_warning_days == (30, 7, 1)
    assert (settings.webhook_min_backoff, settings.login_backoff_base, settings.rsa_key_pool) == (0.02, 0.0, 0)
    assert settings.workers == 64


@pytest.mark.parametrize("value", ["auto", " AUTO ", ""])
def test_workers_are_one_per_cpu_when_auto_or_unset(monkeypatch, tmp_path, value):
    monkeypatch.setenv("CSM_WORKERS", value)
    assert Settings.from_env(tmp_path).workers == max(1, min(os.cpu_count() or 1, 16))


def test_the_cli_refuses_a_malformed_number_with_its_name_and_no_traceback(tmp_path):
    run = subprocess.run([str(CSM), "--data-dir", str(tmp_path / "data"), "version"],
                         env={**os.environ, "CSM_PORT": "eighty"}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "CSM_PORT: 'eighty' is not a whole number" in run.stderr
    assert "Traceback" not in run.stderr
