"""Orphaned vault keys: a command that stored a key and then failed to append leaves a key no event names.

The real app, SQLite store and key vault. ``sweep_orphan_keys`` finds exactly such keys (older than the cutoff),
records their deletion in the log, then deletes them; every key an event names stays and still decrypts.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_api_revocation import leaf, setup
from test_api_support import assert_problem, pki_api  # noqa: F401
from test_crl_schedule import Clock

from commands.authz import Forbidden, Principal
from commands.runtime import CommandContext
from commands.vault import SweepOrphanKeys, sweep_orphan_keys
from domain import vault
from domain.errors import DomainError, WrongExpectedVersion
from domain.events import decode_payload

PLATFORM = CommandContext(principal=Principal(id="op", auth_method="test", roles=frozenset({"platform-admin"})))


async def test_a_failed_issuance_leaves_an_orphan_that_the_sweep_records_and_deletes(pki_api, monkeypatch):
    api = pki_api
    admin, _root, inter = await setup(api)
    kept = await leaf(api, admin, inter, "kept.acme.internal")  # server-side key, named by its event
    keys = api.runtime.services.keys
    before = set(keys.key_ids("acme"))
    store = api.runtime.services.store
    append = store.append

    async def losing(request):  # every append of a certificate loses its race: the command gives up
        if request.stream_type == "certificate":
            raise WrongExpectedVersion(request.stream_id, request.expected_version, request.expected_version + 1)
        return await append(request)

    monkeypatch.setattr(store, "append", losing)
    failed = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter, "algorithm": "ecdsa-p256", "subject": {"common_name": "lost"},
        "sans": {"dns": ["lost.acme.internal"]}})
    assert_problem(failed, 409)
    monkeypatch.setattr(store, "append", append)
    (orphan,) = set(keys.key_ids("acme")) - before

    services = api.runtime.services
    clock = services.clock = Clock()
    recent = await sweep_orphan_keys(SweepOrphanKeys(dry_run=True), PLATFORM, services)
    assert recent.orphans == []  # stored less than 24 hours ago: it may belong to a command still running
    clock.advance(timedelta(days=2))
    dry = await sweep_orphan_keys(SweepOrphanKeys(dry_run=True), PLATFORM, services)
    assert [key.key_id for key in dry.orphans] == [orphan] and dry.deleted == 0
    assert dry.orphans[0].tenant_id == "acme" and dry.orphans[0].purpose == "end-entity"
    assert orphan in keys.key_ids("acme")

    swept = await sweep_orphan_keys(SweepOrphanKeys(), PLATFORM, services)
    assert [key.key_id for key in swept.orphans] == [orphan] and swept.deleted == 1
    assert set(keys.key_ids("acme")) == before  # the CA keys and the kept certificate's key stay, and decrypt
    for key_id in before:
        assert await keys.get("acme", key_id)
    (recorded,) = [decode_payload(e) for e in await store.read_stream(vault.TENANT, vault.STREAM_ID)]
    assert isinstance(recorded, vault.OrphanKeysDeleted) and recorded.key_ids == [orphan]
    assert (await sweep_orphan_keys(SweepOrphanKeys(), PLATFORM, services)).orphans == []
    export = await api.client.get(f"/v1/certificates/{kept['certificate_id']}/export", headers=admin,
                                  params={"format": "pem", "include_key": "true"})
    assert export.status_code == 200 and "PRIVATE KEY" in export.text, export.text
    verified = await api.client.get("/v1/audit/verify", headers=admin)
    assert verified.json()["ok"] is True


async def test_only_the_platform_sweeps_and_never_keys_younger_than_an_hour(pki_api):
    api = pki_api
    services = api.runtime.services
    tenant_admin = CommandContext(principal=Principal(id="ta", auth_method="test", roles=frozenset({"tenant-admin"}),
                                                      tenant_id="acme"))
    with pytest.raises(Forbidden):
        await sweep_orphan_keys(SweepOrphanKeys(dry_run=True), tenant_admin, services)
    with pytest.raises(DomainError) as refused:
        await sweep_orphan_keys(SweepOrphanKeys(older_than_hours=0), PLATFORM, services)
    assert refused.value.field == "older_than_hours"
