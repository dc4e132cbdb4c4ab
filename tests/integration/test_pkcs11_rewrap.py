"""Moving keys to a real SoftHSM2 token and rotating its tenant keys: local -> pkcs11 migration, a new key on the
token per rotation, retirement refused while referenced and then destroying the token object, and a re-wrap
stopped (the token failing at the adapter boundary) or killed (a real subprocess) part-way, then finished."""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domain.vault import KekInUse
from infra.keystore.kek import KekUnavailable
from softhsm_fixture import softhsm, token_session  # noqa: F401 - softhsm is a fixture

pytestmark = pytest.mark.timeout(180)


def _tenant() -> str:
    return f"t-{secrets.token_hex(6)}"  # the token outlives a test: a fresh tenant is a fresh key


def _vault(data_dir, softhsm, kek_provider: str, providers=()):  # noqa: F811
    from infra.config import Settings
    from infra.keystore.pkcs11 import kek_factories
    from infra.keystore.vault import SQLiteKeyVault

    settings_ = Settings(data_dir=data_dir, kek_provider=kek_provider, pkcs11=softhsm.settings)
    return SQLiteKeyVault(data_dir, kek_provider=kek_provider, providers=providers,
                          factories=kek_factories(settings_))


def _token_keys(softhsm, tenant: str) -> list[str]:  # noqa: F811
    """The CKA_IDs (hex) of the tenant's keys on the token, sorted."""
    import pkcs11

    session = token_session(softhsm)
    try:
        return sorted(bytes(key[pkcs11.Attribute.ID]).hex()
                      for key in session.get_objects({pkcs11.Attribute.LABEL: f"csm-kek:{tenant}"}))
    finally:
        session.close()


def _put_ec_keys(vault, tenant: str, count: int) -> dict[str, bytes]:
    out = {}
    for _ in range(count):
        pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        out[vault.put_sync(tenant, pem, algorithm="ecdsa-p384", purpose="ca")] = pem
    return out


def _decrypt_and_sign(vault, tenant: str, keys: dict[str, bytes]) -> None:
    for key_id, pem in keys.items():
        got = vault.get_sync(tenant, key_id)
        assert got == pem
        private = serialization.load_pem_private_key(got, None)
        signature = private.sign(b"crl", ec.ECDSA(hashes.SHA384()))
        private.public_key().verify(signature, b"crl", ec.ECDSA(hashes.SHA384()))


def _wraps(vault) -> dict[str, tuple]:
    with closing(sqlite3.connect(vault.path)) as conn:
        return {row[0]: row[1:] for row in conn.execute(
            "SELECT key_id, kek_provider, kek_id, nonce, ciphertext FROM private_keys")}


def _rewrap(vault, tenant=None, provider="pkcs11"):
    targets, _plan, rows = vault.rewrap_plan_sync(provider, tenant)
    return vault.rewrap_sync(provider, targets, rows)


def test_keys_move_from_the_master_key_to_the_token_and_the_master_key_can_then_be_retired(softhsm, tmp_path):  # noqa: F811
    tenant = _tenant()
    local = _vault(tmp_path, softhsm, "local")
    keys = _put_ec_keys(local, tenant, 4)
    master = local._default.kek_id
    before = _wraps(local)
    local.close()

    token = _vault(tmp_path, softhsm, "pkcs11")  # CSM_KEK_PROVIDER=pkcs11 now, then the re-wrap
    try:
        _decrypt_and_sign(token, tenant, keys)  # before: the rows are still the master key's
        counts = _rewrap(token, tenant)
        assert (counts.rewrapped, counts.remaining, counts.failed) == (4, 0, [])
        assert counts.from_kek_ids == [master]
        (on_token,) = _token_keys(softhsm, tenant)
        assert counts.to_kek_ids[0].startswith("pkcs11:") and counts.to_kek_ids[0].split(":")[2] == on_token
        after = _wraps(token)
        assert all(after[k][:2] == ("pkcs11", counts.to_kek_ids[0]) and after[k][2:] == before[k][2:] for k in keys)
        _decrypt_and_sign(token, tenant, keys)
        token.mark_kek_retired_sync(master)  # no row names it, and the default is the token now
        token.destroy_kek_sync(master)
        assert not (tmp_path / "keys" / "master.key").exists()
        usage = {kek.kek_id: kek for kek in token.kek_usage_sync()}
        assert usage[master].retired_at is not None and usage[counts.to_kek_ids[0]].rows == {tenant: 4}
    finally:
        token.close()


def test_rotation_makes_a_new_key_on_the_token_and_retires_the_old_one_once_nothing_names_it(softhsm, tmp_path):  # noqa: F811
    tenant = _tenant()
    vault = _vault(tmp_path, softhsm, "pkcs11")
    try:
        keys = _put_ec_keys(vault, tenant, 3)
        (old_id,) = _token_keys(softhsm, tenant)
        old = _wraps(vault)[next(iter(keys))][1]
        with pytest.raises(KekInUse) as in_use:  # it wraps the tenant's new keys
            vault.mark_kek_retired_sync(old)
        assert in_use.value.code == "kek_in_use"
        assert {kek.kek_id: kek.current_for for kek in vault.kek_usage_sync()}[old] == [tenant]

        (new,) = vault.create_keks_sync("pkcs11", tenant)
        vault.assign_keks_sync([new])
        _serial_old, _serial_new = old.split(":")[1], new.kek_id.split(":")[1]
        assert _serial_old == _serial_new and new.kek_id.endswith(f":csm-kek:{tenant}") and new.replaces == [old]
        assert sorted([old_id, new.kek_id.split(":")[2]]) == _token_keys(softhsm, tenant)
        fresh = vault.put_sync(tenant, b"after rotation", algorithm="ed25519", purpose="leaf")
        assert _wraps(vault)[fresh][1] == new.kek_id
        with pytest.raises(KekInUse) as referenced:
            vault.mark_kek_retired_sync(old)
        assert referenced.value.code == "kek_referenced"

        counts = _rewrap(vault, tenant)
        assert (counts.rewrapped, counts.remaining) == (3, 0) and counts.to_kek_ids == [new.kek_id]
        vault.mark_kek_retired_sync(old)
        vault.destroy_kek_sync(old)
        assert _token_keys(softhsm, tenant) == [new.kek_id.split(":")[2]]  # the old object is gone from the token
        _decrypt_and_sign(vault, tenant, keys)
        assert vault.get_sync(tenant, fresh) == b"after rotation"
    finally:
        vault.close()


class FailsAt:
    """The token provider, failing its ``at``-th wrap as a token that stops answering does."""

    def __init__(self, inner, at: int) -> None:
        self.inner, self.at, self.wraps, self.provider = inner, at, 0, inner.provider

    def wrap(self, tenant_id, dek, kek_id=None):
        self.wraps += 1
        if self.wraps == self.at:
            raise KekUnavailable("PKCS#11 token 'csm-test': cannot wrap (DeviceRemoved)")
        return self.inner.wrap(tenant_id, dek, kek_id)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_rewrap_the_token_stops_part_way_is_finished_by_the_next_run(softhsm, tmp_path):  # noqa: F811
    from infra.keystore.pkcs11 import Pkcs11KekProvider

    tenant = _tenant()
    local = _vault(tmp_path, softhsm, "local")
    keys = _put_ec_keys(local, tenant, 5)
    local.close()
    inner = Pkcs11KekProvider(softhsm.settings)
    failing = _vault(tmp_path, softhsm, "pkcs11", providers=[FailsAt(inner, at=3)])
    try:
        counts = _rewrap(failing, tenant)
        assert counts.rewrapped == 2 and counts.remaining == 3 and "DeviceRemoved" in counts.stopped
        _decrypt_and_sign(failing, tenant, keys)  # rows under either KEK: all readable
    finally:
        failing.close()
        inner.close()
    again = _vault(tmp_path, softhsm, "pkcs11")
    try:
        counts = _rewrap(again, tenant)
        assert (counts.rewrapped, counts.remaining) == (3, 0)
        assert {row[0] for row in _wraps(again).values()} == {"pkcs11"}
        _decrypt_and_sign(again, tenant, keys)
    finally:
        again.close()


KILLED = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from infra.config import Settings
    from infra.service_settings import Pkcs11Settings
    from infra.keystore.pkcs11 import Pkcs11KekProvider, kek_factories
    from infra.keystore.vault import SQLiteKeyVault

    class DiesAtTheThirdWrap:
        def __init__(self, inner):
            self.inner, self.provider, self.wraps = inner, inner.provider, 0
        def wrap(self, tenant_id, dek, kek_id=None):
            self.wraps += 1
            if self.wraps == 3:
                os._exit(137)  # killed while the token holds a session and a row is half done
            return self.inner.wrap(tenant_id, dek, kek_id)
        def __getattr__(self, name):
            return getattr(self.inner, name)

    data, module, label, pin_file, tenant = sys.argv[1:]
    token = Pkcs11Settings(module=Path(module), token_label=label, pin_file=Path(pin_file))
    vault = SQLiteKeyVault(data, kek_provider="pkcs11", providers=[DiesAtTheThirdWrap(Pkcs11KekProvider(token))])
    targets, _, rows = vault.rewrap_plan_sync("pkcs11", tenant)
    vault.rewrap_sync("pkcs11", targets, rows)
""")


def test_a_migration_to_the_token_killed_part_way_is_finished_by_the_next_run(softhsm, tmp_path):  # noqa: F811
    tenant = _tenant()
    local = _vault(tmp_path, softhsm, "local")
    keys = _put_ec_keys(local, tenant, 6)
    local.close()
    killed = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path), str(softhsm.module), softhsm.label,
                             str(softhsm.pin_file), tenant], capture_output=True, timeout=120,
                            env={**os.environ, **softhsm.env, "PYTHONPATH": os.getcwd()})
    assert killed.returncode == 137, killed.stderr
    again = _vault(tmp_path, softhsm, "pkcs11")
    try:
        assert sorted(row[0] for row in _wraps(again).values()) == ["local"] * 4 + ["pkcs11"] * 2
        _decrypt_and_sign(again, tenant, keys)
        counts = _rewrap(again, tenant)
        assert (counts.rewrapped, counts.remaining, counts.failed) == (4, 0, [])
        _decrypt_and_sign(again, tenant, keys)
    finally:
        again.close()


def test_rotating_a_tenant_that_has_no_key_on_the_token_yet_makes_just_one(softhsm, tmp_path):  # noqa: F811
    tenant = _tenant()
    vault = _vault(tmp_path, softhsm, "pkcs11")
    try:
        (new,) = vault.create_keks_sync("pkcs11", tenant)
        assert new.replaces == [] and _token_keys(softhsm, tenant) == [new.kek_id.split(":")[2]]
        vault.assign_keks_sync([new])
        key_id = vault.put_sync(tenant, b"k", algorithm="ed25519", purpose="leaf")
        assert _wraps(vault)[key_id][1] == new.kek_id and vault.get_sync(tenant, key_id) == b"k"
        assert {kek.kek_id: kek.current_for for kek in vault.kek_usage_sync()}[new.kek_id] == [tenant]
    finally:
        vault.close()


def test_a_token_key_a_rotation_made_but_never_assigned_can_be_retired(softhsm, tmp_path):  # noqa: F811
    tenant = _tenant()
    vault = _vault(tmp_path, softhsm, "pkcs11")
    try:
        vault.put_sync(tenant, b"k", algorithm="ed25519", purpose="leaf")
        (first,) = _token_keys(softhsm, tenant)
        (made,) = vault.create_keks_sync("pkcs11", tenant)  # and then the process died: never assigned
        current = vault._default.existing_kek_id(tenant)
        if current == made.kek_id:  # its random CKA_ID sorts first: it is the tenant's first key now
            with pytest.raises(KekInUse):
                vault.mark_kek_retired_sync(made.kek_id)
            return
        vault.mark_kek_retired_sync(made.kek_id)
        vault.destroy_kek_sync(made.kek_id)
        assert _token_keys(softhsm, tenant) == [first]
    finally:
        vault.close()
