"""Shared fixtures: small and generic. Append new fixtures; do not remove others'."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import hypothesis
import pytest

from infra.bootstrap import Runtime, initialise
from infra.config import Settings

# Hypothesis' per-example deadline (200 ms) is a timing assertion: under make test's load (two workers per CPU, beside
# servers and subprocesses) an example that runs SQLite or a signature can take longer, and the test then fails for
# no fault of the code (the query-plan property test did, at 447 ms). The house rule is that tests never assert a
# timing, so no example has a deadline; a test that sets its own settings keeps them.
hypothesis.settings.register_profile("csm", deadline=None)
hypothesis.settings.load_profile("csm")


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


@pytest.fixture(scope="module")
def bench() -> SimpleNamespace:
    """The bench package's modules (a directory of the repository, not an installed package)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
        from bench import __main__ as cli
        from bench import issuance, phases, report, wrkbench
        yield SimpleNamespace(cli=cli, issuance=issuance, phases=phases, report=report, wrkbench=wrkbench)


@pytest.fixture
async def services(runtime):
    """The runtime's command services with two tenants, acme and globex, made by the platform (SYSTEM)."""
    from commands.authz import SYSTEM
    from commands.runtime import CommandContext
    from commands.tenants import CreateTenant, create_tenant

    for tenant_id in ("acme", "globex"):
        await create_tenant(CreateTenant(tenant_id=tenant_id, name=tenant_id.title()),
                            CommandContext(principal=SYSTEM), runtime.services)
    return runtime.services
