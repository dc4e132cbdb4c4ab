"""The ACME settings read from the environment: the authorization lifetime's bounds, and a bad value stopping the
CLI with the setting named (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import ACME_AUTHORIZATION_LIFETIME_BOUNDS, Settings, read_acme_authorization_lifetime

CSM = Path(sys.executable).parent / "csm"


@pytest.mark.parametrize("text, hours", [("1", 1), (" 24 ", 24), ("168", 168), ("720", 720), ("", 168)])
def test_the_authorization_lifetime_is_whole_hours_from_one_to_thirty_days(monkeypatch, text, hours):
    monkeypatch.setenv("CSM_ACME_AUTHORIZATION_LIFETIME_HOURS", text)
    assert read_acme_authorization_lifetime() == hours  # empty: the default, as for every CSM_* number
    assert ACME_AUTHORIZATION_LIFETIME_BOUNDS == (1, 720)


@pytest.mark.parametrize("text, says", [("0", "0 must be at least 1"), ("721", "721 must be at most 720"),
                                        ("-5", "-5 must be at least 1"), ("7d", "'7d' is not a whole number"),
                                        ("1.5", "'1.5' is not a whole number")])
def test_an_authorization_lifetime_out_of_bounds_is_refused_naming_the_setting(monkeypatch, text, says):
    monkeypatch.setenv("CSM_ACME_AUTHORIZATION_LIFETIME_HOURS", text)
    with pytest.raises(ValueError) as refused:
        read_acme_authorization_lifetime()
    assert str(refused.value) == f"CSM_ACME_AUTHORIZATION_LIFETIME_HOURS: {says}"


def test_the_authorization_lifetime_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("CSM_ACME_AUTHORIZATION_LIFETIME_HOURS", raising=False)
    assert Settings.from_env().acme_authorization_lifetime_hours == 168  # seven days, as before the setting
    monkeypatch.setenv("CSM_ACME_AUTHORIZATION_LIFETIME_HOURS", "36")
    assert Settings.from_env().acme_authorization_lifetime_hours == 36


def test_the_cli_refuses_a_bad_lifetime_with_its_name_and_no_traceback(tmp_path):
    env = {**os.environ, "CSM_ACME_AUTHORIZATION_LIFETIME_HOURS": "1000"}
    run = subprocess.run([str(CSM), "--data-dir", str(tmp_path / "data"), "version"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: CSM_ACME_AUTHORIZATION_LIFETIME_HOURS: 1000 must be at most 720"
    assert not (tmp_path / "data").exists()
