"""The PKCS#11 KEK provider against a real SoftHSM2 token: wrap format, key attributes, isolation, refusals."""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.keystore.kek import KekUnavailable, UnwrapFailed
from softhsm_fixture import PIN, softhsm, token_session  # noqa: F401 - softhsm is a fixture

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def provider(softhsm):  # noqa: F811
    from infra.keystore.pkcs11 import Pkcs11KekProvider

    opened = Pkcs11KekProvider(softhsm.settings)
    yield opened
    opened.close()


def _tenant() -> str:
    return f"t-{secrets.token_hex(6)}"  # the token outlives a test: a fresh tenant is a fresh key


def _keys(softhsm, label: str) -> list:  # noqa: F811
    import pkcs11

    session = token_session(softhsm)
    try:
        return [(bytes(key[pkcs11.Attribute.ID]), {a: key[a] for a in _attribute_names()})
                for key in session.get_objects({pkcs11.Attribute.LABEL: label})]
    finally:
        session.close()


def _attribute_names():  # noqa: N802
    import pkcs11

    a = pkcs11.Attribute
    return (a.TOKEN, a.PRIVATE, a.SENSITIVE, a.ALWAYS_SENSITIVE, a.EXTRACTABLE, a.NEVER_EXTRACTABLE, a.MODIFIABLE,
            a.ENCRYPT, a.DECRYPT, a.WRAP, a.UNWRAP, a.VALUE_LEN, a.KEY_TYPE)


def test_a_data_key_round_trips_under_the_tenants_key_on_the_token(provider, softhsm):  # noqa: F811
    tenant, dek = _tenant(), secrets.token_bytes(32)
    kek_id, wrapped = provider.wrap(tenant, bytearray(dek))
    assert provider.unwrap(tenant, kek_id, wrapped) == dek
    assert len(wrapped) == 61 and wrapped[:1] == b"\x01" and dek not in wrapped
    name, serial, key_hex, label = kek_id.split(":", 3)
    assert (name, serial, label) == ("pkcs11", provider.serial, f"csm-kek:{tenant}") and len(key_hex) == 32
    assert [key_id.hex() for key_id, _ in _keys(softhsm, label)] == [key_hex]
    again_id, again = provider.wrap(tenant, dek)  # the same key, a fresh nonce
    assert again_id == kek_id and again[1:13] != wrapped[1:13]


def test_the_tenant_key_is_a_sensitive_never_extractable_token_object(provider, softhsm):  # noqa: F811
    import pkcs11

    tenant = _tenant()
    provider.wrap(tenant, bytes(32))
    [(_, attributes)] = _keys(softhsm, f"csm-kek:{tenant}")
    a = pkcs11.Attribute
    assert attributes[a.KEY_TYPE] == pkcs11.KeyType.AES and attributes[a.VALUE_LEN] == 32
    assert all(attributes[flag] for flag in (a.TOKEN, a.PRIVATE, a.SENSITIVE, a.ALWAYS_SENSITIVE,
                                             a.NEVER_EXTRACTABLE, a.ENCRYPT, a.DECRYPT))
    assert not any(attributes[flag] for flag in (a.EXTRACTABLE, a.MODIFIABLE, a.WRAP, a.UNWRAP))
    session = token_session(softhsm)
    try:
        key = session.get_key(label=f"csm-kek:{tenant}")
        with pytest.raises(pkcs11.AttributeSensitive):
            key[a.VALUE]
    finally:
        session.close()
    session = token_session(softhsm)  # a session without the provider's login sees no private object
    provider.close()
    try:
        assert list(session.get_objects({a.LABEL: f"csm-kek:{tenant}"})) == []
    finally:
        session.close()


def test_a_tenants_wrapped_key_does_not_unwrap_for_another_tenant(provider):
    acme, globex = _tenant(), _tenant()
    kek_id, wrapped = provider.wrap(acme, bytes(range(32)))
    globex_id, _ = provider.wrap(globex, bytes(32))
    with pytest.raises(UnwrapFailed, match="another tenant"):  # the row names acme's key
        provider.unwrap(globex, kek_id, wrapped)
    with pytest.raises(UnwrapFailed, match="authentication"):  # relabelled to globex's key: the tag fails
        provider.unwrap(globex, globex_id, wrapped)
    forged = ":".join(kek_id.split(":", 3)[:3]) + f":csm-kek:{globex}"  # acme's key id under globex's label: not on the token
    with pytest.raises(KekUnavailable, match="is not on PKCS#11 token"):
        provider.unwrap(globex, forged, wrapped)
    assert provider.unwrap(acme, kek_id, wrapped) == bytes(range(32))


@pytest.mark.parametrize("position", [0, 1, 12, 13, 44, 60])  # version, nonce, ciphertext, tag
def test_a_tampered_wrapped_key_is_refused(provider, position):
    tenant = _tenant()
    kek_id, wrapped = provider.wrap(tenant, secrets.token_bytes(32))
    flipped = bytearray(wrapped)
    flipped[position] ^= 0x01
    with pytest.raises(UnwrapFailed):
        provider.unwrap(tenant, kek_id, bytes(flipped))
    with pytest.raises(UnwrapFailed, match="length"):
        provider.unwrap(tenant, kek_id, wrapped[:-1])
    provider.unwrap(tenant, kek_id, wrapped)  # the session and the token are fine afterwards


def test_a_row_of_another_token_or_key_names_what_is_missing(provider):
    tenant = _tenant()
    kek_id, wrapped = provider.wrap(tenant, bytes(32))
    name, serial, key_hex, label = kek_id.split(":", 3)
    with pytest.raises(KekUnavailable, match=f"wrapped on token serial 0000; the configured token .* is serial {serial}"):
        provider.unwrap(tenant, f"{name}:0000:{key_hex}:{label}", wrapped)
    with pytest.raises(KekUnavailable, match="is not on PKCS#11 token"):
        provider.unwrap(tenant, f"{name}:{serial}:{'00' * 16}:{label}", wrapped)
    with pytest.raises(KekUnavailable, match="names no valid key id"):
        provider.unwrap(tenant, f"{name}:{serial}:zz:{label}", wrapped)


def _refusal(settings_) -> str:
    from infra.keystore.pkcs11 import Pkcs11KekProvider

    with pytest.raises(KekUnavailable) as caught:
        Pkcs11KekProvider(settings_)
    message = str(caught.value)
    assert "\n" not in message and PIN not in message and "wrong-pin" not in message
    return message


def test_a_wrong_pin_a_missing_token_or_module_is_one_clear_line_without_the_pin(softhsm, tmp_path):  # noqa: F811
    spare = dataclasses.replace(softhsm.settings, token_label=softhsm.spare, pin_file=None, pin="wrong-pin")
    assert _refusal(spare).endswith("the user PIN is incorrect (CSM_PKCS11_PIN_FILE or CSM_PKCS11_PIN)")
    assert "is not present" in _refusal(dataclasses.replace(softhsm.settings, token_label="no-such-token"))
    missing = tmp_path / "libnothing.so"
    assert _refusal(dataclasses.replace(softhsm.settings, module=missing)) == (
        f"PKCS#11 module {missing} does not exist (CSM_PKCS11_MODULE)")
    not_a_library = tmp_path / "libjunk.so"
    not_a_library.write_bytes(b"not an ELF file")
    assert "cannot reach it" in _refusal(dataclasses.replace(softhsm.settings, module=not_a_library))
    assert "needs the token's user PIN" in _refusal(dataclasses.replace(softhsm.settings, pin_file=None))
    both = dataclasses.replace(softhsm.settings, pin="wrong-pin")
    assert "not both" in _refusal(both)
    assert "CSM_PKCS11_MODULE" in _refusal(dataclasses.replace(softhsm.settings, module=None))


def test_a_pin_file_others_can_read_is_refused(softhsm, tmp_path):  # noqa: F811
    loose = tmp_path / "pin"
    loose.write_text(PIN)
    loose.chmod(0o640)
    assert "has mode 0640" in _refusal(dataclasses.replace(softhsm.settings, pin_file=loose))
    loose.chmod(0o600)
    from infra.keystore.pkcs11 import Pkcs11KekProvider

    Pkcs11KekProvider(dataclasses.replace(softhsm.settings, pin_file=loose)).close()


def test_the_pin_from_the_environment_setting_logs_in_too(softhsm):  # noqa: F811
    from infra.keystore.pkcs11 import Pkcs11KekProvider

    opened = Pkcs11KekProvider(dataclasses.replace(softhsm.settings, pin_file=None, pin=PIN))
    try:
        tenant = _tenant()
        assert opened.unwrap(tenant, *opened.wrap(tenant, bytes(32))) == bytes(32)
    finally:
        opened.close()


def test_providers_of_one_process_share_the_login_and_closing_one_keeps_the_other(softhsm):  # noqa: F811
    from infra.keystore.pkcs11 import Pkcs11KekProvider

    first, second = Pkcs11KekProvider(softhsm.settings), Pkcs11KekProvider(softhsm.settings)
    tenant = _tenant()
    kek_id, wrapped = first.wrap(tenant, bytes(32))
    first.close()  # PKCS#11 logs every session out when the logged-in one closes: the shared login stays open
    assert second.unwrap(tenant, kek_id, wrapped) == bytes(32)
    assert "not the one this process logged in with" in _refusal(
        dataclasses.replace(softhsm.settings, pin_file=None, pin="wrong-pin"))
    second.close()
    with pytest.raises(KekUnavailable, match="closed"):
        second.wrap(tenant, bytes(32))


def test_threads_wrap_and_unwrap_at_once_and_create_each_tenant_key_once(softhsm):  # noqa: F811
    from infra.keystore.pkcs11 import Pkcs11KekProvider

    opened = Pkcs11KekProvider(softhsm.settings)
    tenants = [_tenant() for _ in range(4)]
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for round_ in range(15):
                tenant, dek = tenants[(worker + round_) % len(tenants)], os.urandom(32)
                kek_id, wrapped = opened.wrap(tenant, dek)
                assert opened.unwrap(tenant, kek_id, wrapped) == dek
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failures == []
        assert [len(_keys(softhsm, f"csm-kek:{tenant}")) for tenant in tenants] == [1, 1, 1, 1]
    finally:
        opened.close()


@pytest.fixture(scope="module")
def shared_provider(softhsm):  # noqa: F811
    from infra.keystore.pkcs11 import Pkcs11KekProvider

    opened = Pkcs11KekProvider(softhsm.settings)
    yield opened
    opened.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dek=st.binary(min_size=32, max_size=32),
       tenant=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
       other=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40))
def test_any_data_key_round_trips_for_any_tenant_and_for_no_other(shared_provider, dek, tenant, other):
    kek_id, wrapped = shared_provider.wrap(tenant, dek)
    assert shared_provider.unwrap(tenant, kek_id, wrapped) == dek
    if other != tenant:
        with pytest.raises(UnwrapFailed):
            shared_provider.unwrap(other, kek_id, wrapped)


# the vault with the token among its providers ---------------------------------------------------

def _vault(data_dir, softhsm, kek_provider: str):  # noqa: F811
    from infra.config import Settings
    from infra.keystore.pkcs11 import kek_factories
    from infra.keystore.vault import SQLiteKeyVault

    settings_ = Settings(data_dir=data_dir, kek_provider=kek_provider, pkcs11=softhsm.settings)
    return SQLiteKeyVault(data_dir, kek_provider=kek_provider, factories=kek_factories(settings_))


def test_rows_stay_readable_when_the_default_moves_between_local_and_the_token(softhsm, tmp_path):  # noqa: F811
    tenant, material = _tenant(), b"-----BEGIN PRIVATE KEY-----\nbytes\n"
    local = _vault(tmp_path, softhsm, "local")
    old = local.put_sync(tenant, material, algorithm="ec-p256", purpose="leaf")
    local.close()
    token = _vault(tmp_path, softhsm, "pkcs11")
    new = token.put_sync(tenant, material, algorithm="ec-p384", purpose="leaf")
    assert token.get_sync(tenant, old) == material and token.get_sync(tenant, new) == material
    token.close()
    back = _vault(tmp_path, softhsm, "local")  # the token opens on first use, for the row that names it
    try:
        assert back.get_sync(tenant, new) == material and back.get_sync(tenant, old) == material
    finally:
        back.close()


def test_a_token_row_without_the_token_configured_is_unavailable_not_corrupt(softhsm, tmp_path):  # noqa: F811
    from infra.config import Settings
    from infra.keystore.pkcs11 import kek_factories
    from infra.keystore.vault import SQLiteKeyVault

    tenant = _tenant()
    token = _vault(tmp_path, softhsm, "pkcs11")
    key_id = token.put_sync(tenant, b"material", algorithm="ec-p256", purpose="leaf")
    token.close()
    bare = SQLiteKeyVault(tmp_path, factories=kek_factories(Settings(data_dir=tmp_path)))
    try:
        with pytest.raises(Exception) as caught:
            bare.get_sync(tenant, key_id)
        assert caught.value.code == "kek_unavailable" and caught.value.status == 503
        assert "needs CSM_PKCS11_MODULE and CSM_PKCS11_TOKEN_LABEL" in caught.value.detail
    finally:
        bare.close()


async def test_the_vaults_worker_threads_use_the_token_at_once(softhsm, tmp_path):  # noqa: F811
    import asyncio

    vault = _vault(tmp_path, softhsm, "pkcs11")
    tenants = [_tenant() for _ in range(3)]
    try:
        async def one(n: int) -> None:
            tenant, material = tenants[n % 3], f"key material {n}".encode()
            key_id = await vault.put(tenant, material, algorithm="ec-p256", purpose="leaf")
            assert await vault.get(tenant, key_id) == material

        await asyncio.gather(*(one(n) for n in range(48)))  # asyncio.to_thread: the default executor's threads
        assert [len(vault.key_ids(tenant)) for tenant in tenants] == [16, 16, 16]
    finally:
        vault.close()


# python-pkcs11's search finaliser re-raises SessionHandleInvalid from __del__ on the dropped session
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_session_the_token_dropped_is_replaced_by_logging_in_again(provider, caplog):
    tenant = _tenant()
    kek_id, wrapped = provider.wrap(tenant, bytes(range(32)))
    provider._shared()._held.session.close()  # as a token restart does: the handle is gone, the user logged out
    assert provider.unwrap(tenant, kek_id, wrapped) == bytes(range(32))
    assert "logging in again" in caplog.text and PIN not in caplog.text
    provider._shared()._held.session.close()
    provider.check()  # readiness logs in again too
    again_id, again = provider.wrap(tenant, bytes(32))
    assert again_id == kek_id and provider.unwrap(tenant, again_id, again) == bytes(32)
