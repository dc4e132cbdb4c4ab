"""`csm keys status` asks a real SoftHSM2 token whether each of its KEKs can be used now: the token logs in and holds
the key object a KEK id names; a wrong PIN, an absent token or a deleted key object makes it unavailable, with a
one-line reason and no secret in it."""

from __future__ import annotations

import dataclasses
import secrets
import sqlite3
from contextlib import closing

import pytest

from softhsm_fixture import softhsm  # noqa: F401 - softhsm is a fixture

pytestmark = pytest.mark.timeout(180)


def _vault(data_dir, pkcs11_settings, kek_provider: str):
    from infra.config import Settings
    from infra.keystore.pkcs11 import kek_factories
    from infra.keystore.vault import SQLiteKeyVault

    settings = Settings(data_dir=data_dir, kek_provider=kek_provider, pkcs11=pkcs11_settings)
    return SQLiteKeyVault(data_dir, kek_provider=kek_provider, factories=kek_factories(settings))


def _status(vault) -> dict:
    return {kek.kek_id: kek for kek in vault.kek_usage_sync()}


def _row_kek(vault, key_id: str) -> str:
    with closing(sqlite3.connect(vault.path)) as conn:
        return conn.execute("SELECT kek_id FROM private_keys WHERE key_id = ?", (key_id,)).fetchone()[0]


def test_a_token_kek_is_available_while_the_token_holds_it_and_not_once_its_object_is_gone(softhsm, tmp_path):  # noqa: F811
    import pkcs11

    tenant = f"t-{secrets.token_hex(6)}"
    vault = _vault(tmp_path, softhsm.settings, "pkcs11")
    try:
        first = _row_kek(vault, vault.put_sync(tenant, b"k", algorithm="ed25519", purpose="leaf"))
        (spare,) = vault.create_keks_sync("pkcs11", tenant)
        vault.assign_keks_sync([spare])  # wraps the tenant's new keys from now on
        status = _status(vault)
        assert (status[first].available, status[first].unavailable_reason, status[first].needed) == (True, None, True)
        assert status[spare.kek_id].available is True
        session = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.label).open(rw=True)  # beside ours
        try:
            for key in session.get_objects({pkcs11.Attribute.LABEL: f"csm-kek:{tenant}",
                                            pkcs11.Attribute.ID: bytes.fromhex(spare.kek_id.split(":")[2])}):
                key.destroy()
        finally:
            session.close()
        status = _status(vault)
        assert status[first].available is True
        assert status[spare.kek_id].available is False and status[spare.kek_id].needed and\
             "is not on PKCS#11 token" in status[spare.kek_id].unavailable_reason
    finally:
        vault.close()


def test_a_token_kek_is_unavailable_when_the_pin_file_is_wrong_or_the_token_is_absent(softhsm, tmp_path):  # noqa: F811
    tenant = f"t-{secrets.token_hex(6)}"
    on_token = _vault(tmp_path, softhsm.settings, "pkcs11")
    try:
        kek_id = _row_kek(on_token, on_token.put_sync(tenant, b"k", algorithm="ed25519", purpose="leaf"))
    finally:
        on_token.close()
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("not-the-pin-1234\n")
    wrong.chmod(0o600)
    cases = {"PIN": dataclasses.replace(softhsm.settings, pin_file=wrong),
             "is not present": dataclasses.replace(softhsm.settings, token_label="csm-unplugged")}
    for expected, settings in cases.items():
        local = _vault(tmp_path, settings, "local")  # the token is not the default: the vault starts without it
        try:
            kek = _status(local)[kek_id]
            assert kek.available is False and kek.needed and expected in kek.unavailable_reason
            assert "not-the-pin-1234" not in kek.unavailable_reason and softhsm.pin not in kek.unavailable_reason
            assert "\n" not in kek.unavailable_reason
            assert {k.available for k in _status(local).values() if k.provider == "local"} == {True}
        finally:
            local.close()
