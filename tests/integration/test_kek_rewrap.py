"""KEK rotation and re-wrap through the command handlers, with the real app, store and key vault: recorded in the
system tenant's vault-keys stream without secrets, platform administrators only, CA keys still sign afterwards; and
a re-wrap process killed part-way (os._exit in a real subprocess) is finished by the next run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing

import pytest
from test_api_revocation import leaf, setup
from test_api_support import pki_api  # noqa: F401

from commands.authz import Forbidden, Principal
from commands.keks import RetireKek, RewrapKeys, RotateKek, kek_status, retire_kek, rewrap_keys, rotate_kek
from commands.runtime import CommandContext
from domain import vault
from domain.errors import DomainError, NotFound
from infra.keystore import SQLiteKeyVault

PLATFORM = CommandContext(principal=Principal(id="op", auth_method="test", roles=frozenset({"platform-admin"})))
TENANT_ADMIN = CommandContext(principal=Principal(id="ta", auth_method="test", roles=frozenset({"tenant-admin"}),
                                                  tenant_id="acme"))


async def _kek_events(services) -> list:
    events = await services.store.read_stream(vault.TENANT, vault.KEK_STREAM_ID)
    return [(event.type, event.payload) for event in events]


async def test_a_rotation_is_recorded_then_rewraps_and_the_cas_still_sign(pki_api):  # noqa: F811
    api = pki_api
    admin, _root, inter = await setup(api)
    await leaf(api, admin, inter, "before.acme.internal")
    services = api.runtime.services
    keys = services.keys
    acme_keys = keys.key_ids("acme")
    materials = {key_id: keys.get_sync("acme", key_id) for key_id in acme_keys}
    old = {kek.kek_id for kek in await kek_status(PLATFORM, services) if "acme" in kek.rows}

    done = await rotate_kek(RotateKek(tenant_id="acme"), PLATFORM, services)
    (new,) = done.rotated
    assert new.replaces == sorted(old) and done.rewrap.rewrapped == len(acme_keys) and done.rewrap.remaining == 0
    recorded = await _kek_events(services)
    assert [kind for kind, _ in recorded] == ["vault.kek_rotated", "vault.rewrap_started", "vault.rewrap_completed"]
    assert recorded[0][1] == {"provider": "local", "kek_id": new.kek_id, "tenant": "acme", "replaces": sorted(old)}
    assert recorded[1][1]["rows"] == len(acme_keys) and recorded[2][1]["rewrapped"] == len(acme_keys)
    assert recorded[2][1]["failed"] == 0 and recorded[2][1]["stopped"] is None
    text = repr(recorded)
    assert not any(key_id in text for key_id in acme_keys)  # counts and KEK ids only: no key ids, no material
    assert {key_id: keys.get_sync("acme", key_id) for key_id in acme_keys} == materials

    signed = await leaf(api, admin, inter, "after.acme.internal")  # the issuing CA's re-wrapped key signs
    assert signed["certificate_id"]
    status = {kek.kek_id: kek for kek in await kek_status(PLATFORM, services)}
    assert status[new.kek_id].current_for == ["acme"] and status[new.kek_id].rows["acme"] == len(acme_keys) + 1

    again = await rewrap_keys(RewrapKeys(tenant_id="acme"), PLATFORM, services)
    assert again.rewrapped == 0 and len(await _kek_events(services)) == 3  # nothing to do: nothing recorded


async def test_retirement_is_refused_while_referenced_then_recorded_before_the_key_is_destroyed(pki_api):  # noqa: F811
    api = pki_api
    await setup(api)
    services = api.runtime.services
    base = services.keys._default.kek_id
    with pytest.raises(DomainError) as in_use:
        await retire_kek(RetireKek(kek_id=base), PLATFORM, services)
    assert in_use.value.code == "kek_in_use" and in_use.value.status == 409
    await rotate_kek(RotateKek(rewrap=False), PLATFORM, services)  # every tenant: a new master key for all
    with pytest.raises(DomainError) as referenced:
        await retire_kek(RetireKek(kek_id=base), PLATFORM, services)
    assert referenced.value.code == "kek_referenced"
    moved = await rewrap_keys(RewrapKeys(), PLATFORM, services)
    assert moved.remaining == 0 and moved.rewrapped >= 2
    retired = await retire_kek(RetireKek(kek_id=base), PLATFORM, services)
    assert retired.provider == "local" and not services.keys._default.path.exists()
    assert (await _kek_events(services))[-1] == ("vault.kek_retired", {"provider": "local", "kek_id": base})
    for key_id in services.keys.key_ids("acme"):
        services.keys.get_sync("acme", key_id)


async def test_only_platform_administrators_and_only_known_tenants(pki_api):  # noqa: F811
    api = pki_api
    await setup(api)
    services = api.runtime.services
    for call in (rotate_kek(RotateKek(tenant_id="acme"), TENANT_ADMIN, services),
                 rewrap_keys(RewrapKeys(tenant_id="acme"), TENANT_ADMIN, services),
                 retire_kek(RetireKek(kek_id="local:" + "0" * 32), TENANT_ADMIN, services),
                 kek_status(TENANT_ADMIN, services)):
        with pytest.raises(Forbidden) as refused:
            await call
        assert refused.value.permission == "vault:kek"
    with pytest.raises(NotFound, match="tenant nope does not exist"):
        await rotate_kek(RotateKek(tenant_id="nope"), PLATFORM, services)
    with pytest.raises(DomainError) as provider:
        await rewrap_keys(RewrapKeys(to_provider="vault"), PLATFORM, services)
    assert provider.value.field == "provider"
    assert await _kek_events(services) == []


KILLED_REWRAP = textwrap.dedent("""
    import os, sys
    from infra.keystore import SQLiteKeyVault
    from infra.keystore.kek import LocalMasterKeyProvider

    class DiesAtTheFourthWrap:
        def __init__(self, inner):
            self.inner, self.provider, self.wraps = inner, inner.provider, 0
        def wrap(self, tenant_id, dek, kek_id=None):
            self.wraps += 1
            if self.wraps == 4:
                os._exit(137)  # as SIGKILL leaves things: no cleanup, no rollback but SQLite's own
            return self.inner.wrap(tenant_id, dek, kek_id)
        def __getattr__(self, name):
            return getattr(self.inner, name)

    data = sys.argv[1]
    vault = SQLiteKeyVault(data, providers=[DiesAtTheFourthWrap(LocalMasterKeyProvider(data + "/keys"))])
    targets, _, rows = vault.rewrap_plan_sync("local", None)
    vault.rewrap_sync("local", targets, rows)
""")


def test_a_rewrap_process_killed_part_way_is_finished_by_the_next_run(tmp_path):
    first = SQLiteKeyVault(tmp_path)
    keys = {first.put_sync(tenant, f"key {n}".encode(), algorithm="ed25519", purpose="leaf"): (tenant, n)
            for n in range(8) for tenant in ("acme",)}
    created = first.create_keks_sync("local", None)
    first.assign_keks_sync(created)
    first.close()
    killed = subprocess.run([sys.executable, "-c", KILLED_REWRAP, str(tmp_path)], capture_output=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert killed.returncode == 137, killed.stderr
    with closing(sqlite3.connect(tmp_path / "keys.db")) as conn:
        under = [kek for (kek,) in conn.execute("SELECT kek_id FROM private_keys")]
    assert under.count(created[0].kek_id) == 3  # three rows committed before the process died in the fourth
    again = SQLiteKeyVault(tmp_path)
    try:
        targets, _, rows = again.rewrap_plan_sync("local", None)
        assert rows == 5
        counts = again.rewrap_sync("local", targets, rows)
        assert (counts.rewrapped, counts.remaining) == (5, 0)
        assert all(again.get_sync(tenant, key_id) == f"key {n}".encode() for key_id, (tenant, n) in keys.items())
    finally:
        again.close()
