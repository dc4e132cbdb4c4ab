"""The metrics the alerting rules read (deploy/prometheus/csm-rules.yml), as a scrape of /metrics shows them: the
readiness checks, the CRL nextUpdate per CA (one unlabelled series without the scrape token), sign-ins by outcome,
access denials by permission, audit checkpoint runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

from prometheus_client import REGISTRY
from test_api_revocation import crl_of, setup
from test_api_support import api, pki_api, running_api  # noqa: F401
from test_crl_schedule import caught_up

from infra.audit.checkpointer import Checkpointer

TOKEN = "m" * 40


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of ``name`` in a scrape, by their label text ("" for none)."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            found[head.removeprefix(name)] = float(value)
    return found


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_readiness_checks_are_gauges_and_a_store_that_cannot_write_shows_as_0(api):
    scraped = samples((await api.client.get("/metrics")).text, "csm_readiness_check")
    assert scraped == {'{check="store_writable"}': 1, '{check="kek_available"}': 1, '{check="hsm_available"}': 1}
    api.runtime.store.last_commit_error = "OSError('disk full')"  # what a failed group commit leaves behind
    try:
        scraped = samples((await api.client.get("/metrics")).text, "csm_readiness_check")
        assert scraped['{check="store_writable"}'] == 0 and scraped['{check="kek_available"}'] == 1
    finally:
        api.runtime.store.last_commit_error = None


async def test_the_crl_gauge_is_each_cas_next_update_with_the_token_and_the_earliest_without(pki_api):
    api = pki_api
    _admin, root, inter = await setup(api)
    crls = {ca_id: await crl_of(api, ca_id) for ca_id in (root, inter)}
    await caught_up(api)
    failures = count("csm_crl_publication_failures_total")
    await api.runtime.revocation_scheduler().run_once()
    assert count("csm_crl_publication_failures_total") == failures
    anonymous = (await api.client.get("/metrics")).text
    [(labels, earliest)] = samples(anonymous, "csm_crl_next_update_timestamp_seconds").items()
    assert labels == "" and "tenant=" not in anonymous and root not in anonymous
    assert earliest <= min(crl.next_update_utc.timestamp() for crl in crls.values())  # other tests' CAs count too

    api.app.state.metrics_token_digest = hashlib.sha256(TOKEN.encode()).digest()  # as CSM_METRICS_TOKEN_FILE sets it
    scraped = (await api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    per_ca = samples(scraped, "csm_crl_next_update_timestamp_seconds")
    for ca_id, crl in crls.items():
        assert per_ca[f'{{ca="{ca_id}",tenant="acme"}}'] == crl.next_update_utc.timestamp()


async def test_sign_ins_are_counted_by_grant_and_outcome_and_denials_by_permission(api):
    refused, other = (count("csm_logins_total", grant="password", outcome="invalid_grant"),
                      count("csm_logins_total", grant="other", outcome="unsupported_grant_type"))
    response = await api.client.post("/v1/auth/token", data={"grant_type": "password", "username": "nobody",
                                                             "password": "wrong"})
    assert response.status_code == 401, response.text
    response = await api.client.post("/v1/auth/token", data={"grant_type": "x" * 200})  # not a label of its own
    assert response.status_code == 400, response.text
    assert count("csm_logins_total", grant="password", outcome="invalid_grant") == refused + 1
    assert count("csm_logins_total", grant="other", outcome="unsupported_grant_type") == other + 1

    await api.create_tenant(await api.admin(), "acme")
    denied = count("csm_access_denied_total", permission="tenant:create")
    viewer = await api.token("viewer", tenant_id="acme")
    response = await api.client.post("/v1/tenants", json={"tenant_id": "globex", "name": "Globex"}, headers=viewer)
    assert response.status_code == 403, response.text
    assert count("csm_access_denied_total", permission="tenant:create") == denied + 1
    assert "csm_access_denied_total" in (await api.client.get("/metrics")).text


class UnreadableKey:
    """An audit signer whose key cannot be read (as a damaged keys/ directory would leave it)."""

    def sign(self, statement: bytes) -> list:
        raise OSError("the audit signing key is unreadable")


async def test_checkpoint_runs_are_counted_sealed_and_failed(tmp_path):
    """What CsmAuditCheckpointsFailing reads: the timer's runs that sealed something, and those that failed."""
    async with running_api(tmp_path, checkpoint_interval=3600) as api:  # the server's own timer stays out of it
        own = api.runtime.checkpointer
        sealed, failed = (count("csm_audit_checkpoints_total", outcome="sealed"),
                          count("csm_audit_checkpoints_total", outcome="failed"))
        await api.create_tenant(await api.admin(), "acme")  # something to seal
        for signer, outcome, before in ((UnreadableKey(), "failed", failed), (own.signer, "sealed", sealed)):
            timer = asyncio.create_task(Checkpointer(own.store, signer, own.clock, interval=0.05).run())
            try:
                await wait_for(lambda: count("csm_audit_checkpoints_total", outcome=outcome) > before)  # noqa: B023
            finally:
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer


async def wait_for(probe, seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not probe():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
