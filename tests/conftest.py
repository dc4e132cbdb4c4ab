"""Shared fixtures: small and generic. Append new fixtures; do not remove others'."""

from __future__ import annotations

import pytest

from infra.bootstrap import Runtime, initialise
from infra.config import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for a fresh, private data directory."""
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def runtime(settings) -> Runtime:
    """An initialised data directory (audit keys, ledger, read models), open; closed afterwards."""
    rt = initialise(settings)
    yield rt
    rt.close()
