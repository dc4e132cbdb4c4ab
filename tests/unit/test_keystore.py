"""The key vault: round trips under each KEK provider, tenant isolation, binding, and tamper refusal."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import DomainError, NotFound
from infra.keystore import HybridKemProvider, LocalMasterKeyProvider, SQLiteKeyVault
from infra.keystore.kek import KekUnavailable, UnwrapFailed, bind

PROVIDERS = ["local", "hybrid"]
KEY = b"-----BEGIN PRIVATE KEY-----\nnot really a key, but bytes the vault must not care about\n"


@pytest.fixture(params=PROVIDERS)
def vault(request, tmp_path):
    v = SQLiteKeyVault(tmp_path, kek_provider=request.param)
    yield v
    v.close()


def _update(vault: SQLiteKeyVault, sql: str, *args) -> None:
    with closing(sqlite3.connect(vault.path)) as conn:
        conn.execute(sql, args)
        conn.commit()


def _row(vault: SQLiteKeyVault, key_id: str) -> tuple:
    with closing(sqlite3.connect(vault.path)) as conn:
        return conn.execute("SELECT tenant_id, algorithm, purpose, kek_provider, kek_id, wrapped_dek, nonce, "
                            "ciphertext FROM private_keys WHERE key_id = ?", (key_id,)).fetchone()


def _corrupt(vault, tenant_id, key_id) -> DomainError:
    with pytest.raises(DomainError) as caught:
        vault.get_sync(tenant_id, key_id)
    assert caught.value.code == "key_material_corrupt" and caught.value.field == "key_id"
    assert caught.value.status == 500
    return caught.value


async def test_put_then_get_round_trips_and_stores_no_plaintext(vault):
    key_id = await vault.put("acme", KEY, algorithm="ec-p256", purpose="leaf")
    assert key_id.startswith("key_") and len(key_id) == 36 and int(key_id[4:], 16) >= 0
    assert await vault.get("acme", key_id) == KEY
    tenant, algorithm, purpose, provider, kek_id, wrapped, nonce, ciphertext = _row(vault, key_id)
    assert (tenant, algorithm, purpose, provider) == ("acme", "ec-p256", "leaf", vault.kek_provider)
    assert kek_id.startswith(f"{vault.kek_provider}:") and len(nonce) == 12
    assert len(ciphertext) == len(KEY) + 16 and KEY not in ciphertext
    assert vault.path.read_bytes().find(b"not really a key") == -1


async def test_every_put_uses_a_fresh_key_id_nonce_and_data_key(vault):
    ids = [await vault.put("acme", KEY, algorithm="rsa-4096", purpose="ca") for _ in range(5)]
    assert len(set(ids)) == 5
    rows = [_row(vault, key_id) for key_id in ids]
    for column in (5, 6, 7):  # wrapped_dek, nonce, ciphertext
        assert len({row[column] for row in rows}) == 5
    assert [await vault.get("acme", key_id) for key_id in ids] == [KEY] * 5
    assert vault.key_ids("acme") == sorted(ids, key=ids.index) and vault.key_ids("globex") == []


async def test_many_concurrent_puts_and_gets_do_not_interfere(vault):
    materials = [KEY + bytes([i]) * i for i in range(40)]
    ids = await asyncio.gather(*(vault.put(f"t-{i % 3}", m, algorithm="ed25519", purpose="leaf")
                                 for i, m in enumerate(materials)))
    got = await asyncio.gather(*(vault.get(f"t-{i % 3}", key_id) for i, key_id in enumerate(ids)))
    assert got == materials


async def test_another_tenants_key_reads_exactly_like_a_missing_one(vault):
    key_id = await vault.put("acme", KEY, algorithm="ec-p256", purpose="leaf")
    errors = []
    for tenant, wanted in (("globex", key_id), ("acme", "key_" + "0" * 32), ("acme", "../etc"), ("acme", "")):
        with pytest.raises(NotFound) as caught:
            await vault.get(tenant, wanted)
        errors.append(caught.value)
    assert {(e.code, e.field, e.status) for e in errors} == {("key_not_found", "key_id", 404)}
    assert errors[0].detail == f"key {key_id} does not exist"
    assert str(errors[1]) == f"key key_{'0' * 32} does not exist"


@pytest.mark.parametrize("change", ["tenant", "algorithm", "purpose", "key_id"])
async def test_a_ciphertext_moved_to_another_row_or_tenant_does_not_decrypt(vault, change):
    key_id = await vault.put("acme", KEY, algorithm="ec-p256", purpose="leaf")
    if change == "tenant":  # the row re-labelled as another tenant's: the tenant KEK and both AADs differ
        _update(vault, "UPDATE private_keys SET tenant_id = 'globex' WHERE key_id = ?", key_id)
        _corrupt(vault, "globex", key_id)
    elif change == "key_id":  # the whole row under another id: the content AAD binds the id
        other = "key_" + "ab" * 16
        _update(vault, "UPDATE private_keys SET key_id = ? WHERE key_id = ?", other, key_id)
        _corrupt(vault, "acme", other)
    else:
        _update(vault, f"UPDATE private_keys SET {change} = 'rsa-2048' WHERE key_id = ?", key_id)
        _corrupt(vault, "acme", key_id)


@pytest.mark.parametrize("columns", [("ciphertext", "nonce"), ("wrapped_dek",), ("wrapped_dek", "nonce", "ciphertext")])
@pytest.mark.parametrize("across", ["rows", "tenants"])
async def test_swapping_encrypted_columns_between_rows_is_refused(vault, columns, across):
    a = await vault.put("acme", KEY, algorithm="ec-p256", purpose="leaf")
    b = await vault.put("acme" if across == "rows" else "globex", b"another key", algorithm="ec-p256",
                        purpose="leaf")
    names = ["tenant_id", "algorithm", "purpose", "kek_provider", "kek_id", "wrapped_dek", "nonce", "ciphertext"]
    row_b = dict(zip(names, _row(vault, b), strict=True))
    for column in columns:
        _update(vault, f"UPDATE private_keys SET {column} = ? WHERE key_id = ?", row_b[column], a)
    error = _corrupt(vault, "acme", a)
    assert b"another key" not in str(error).encode()


async def test_switching_the_provider_keeps_rows_of_the_old_one_readable(tmp_path):
    first = SQLiteKeyVault(tmp_path, kek_provider="local")
    old = await first.put("acme", KEY, algorithm="ec-p384", purpose="leaf")
    first.close()
    second = SQLiteKeyVault(tmp_path, kek_provider="hybrid")
    new = await second.put("acme", b"post-quantum era", algorithm="ml-dsa-65", purpose="ca")
    assert [_row(second, k)[3] for k in (old, new)] == ["local", "hybrid"]
    assert await second.get("acme", old) == KEY and await second.get("acme", new) == b"post-quantum era"
    second.close()
    third = SQLiteKeyVault(tmp_path, kek_provider="local")  # and back again
    assert await third.get("acme", new) == b"post-quantum era"
    third.close()


async def test_a_row_whose_kek_is_not_configured_is_unavailable_not_corrupt(tmp_path):
    vault = SQLiteKeyVault(tmp_path, kek_provider="local")
    key_id = await vault.put("acme", KEY, algorithm="ec-p256", purpose="leaf")
    for provider, kek_id in (("pkcs11", "token:1"), ("hybrid", "hybrid:00"), ("local", "local:" + "0" * 32)):
        _update(vault, "UPDATE private_keys SET kek_provider = ?, kek_id = ? WHERE key_id = ?",
                provider, kek_id, key_id)
        with pytest.raises(DomainError) as caught:
            await vault.get("acme", key_id)
        assert caught.value.code == "kek_unavailable" and caught.value.status == 503
    assert not (tmp_path / "keys" / "kek-hybrid-mlkem768-x25519.key").exists()  # reading never creates a KEK
    vault.close()


async def test_the_vault_refuses_bad_arguments_and_use_after_close(tmp_path):
    with pytest.raises(ValueError, match="kek_provider must be one of"):
        SQLiteKeyVault(tmp_path, kek_provider="rot13")
    vault = SQLiteKeyVault(tmp_path)
    for tenant, material, algorithm in (("", KEY, "ec-p256"), ("acme", b"", "ec-p256"), ("acme", KEY, "")):
        with pytest.raises(ValueError):
            await vault.put(tenant, material, algorithm=algorithm, purpose="leaf")
    key_id = await vault.put("acme", KEY, algorithm="ec-p256", purpose="leaf")
    vault.close()
    vault.close()
    with pytest.raises(RuntimeError, match="closed"):
        await vault.get("acme", key_id)
    with pytest.raises(RuntimeError, match="closed"):
        await vault.put("acme", KEY, algorithm="ec-p256", purpose="leaf")


class _RecordingProvider:
    """A stand-in for a PKCS#11 token: the seam is the Protocol, so a third provider needs no vault changes."""

    provider = "pkcs11"

    def __init__(self, inner: LocalMasterKeyProvider) -> None:
        self.inner, self.calls = inner, []

    def wrap(self, tenant_id, dek):
        self.calls.append(("wrap", tenant_id))
        kek_id, wrapped = self.inner.wrap(tenant_id, dek)
        return "token:" + kek_id, wrapped

    def unwrap(self, tenant_id, kek_id, wrapped):
        self.calls.append(("unwrap", tenant_id))
        return self.inner.unwrap(tenant_id, kek_id.removeprefix("token:"), wrapped)


async def test_a_further_provider_plugs_in_by_name(tmp_path):
    token = _RecordingProvider(LocalMasterKeyProvider(tmp_path / "token"))
    vault = SQLiteKeyVault(tmp_path, kek_provider="pkcs11", providers=[token])
    key_id = await vault.put("acme", KEY, algorithm="ec-p256", purpose="ca")
    assert _row(vault, key_id)[3:5][0] == "pkcs11" and await vault.get("acme", key_id) == KEY
    assert token.calls == [("wrap", "acme"), ("unwrap", "acme")]
    vault.close()


# the providers on their own ------------------------------------------------------------------

@pytest.fixture(params=PROVIDERS)
def provider(request, tmp_path):
    return (LocalMasterKeyProvider if request.param == "local" else HybridKemProvider)(tmp_path / "keys")


def test_a_provider_unwraps_only_for_the_tenant_it_wrapped_for(provider):
    dek = bytearray(range(32))
    kek_id, wrapped = provider.wrap("acme", dek)
    assert provider.unwrap("acme", kek_id, wrapped) == dek
    assert bytes(dek) not in wrapped
    with pytest.raises(UnwrapFailed):
        provider.unwrap("acme2", kek_id, wrapped)
    with pytest.raises(UnwrapFailed):
        provider.unwrap("acme", kek_id, wrapped[:-1])
    with pytest.raises(KekUnavailable):
        provider.unwrap("acme", kek_id + "0", wrapped)


def test_a_provider_reopened_from_its_files_unwraps_what_it_wrapped(tmp_path):
    for kind in (LocalMasterKeyProvider, HybridKemProvider):
        kek_id, wrapped = kind(tmp_path).wrap("acme", b"k" * 32)
        reopened = kind(tmp_path, create=False)
        assert reopened.kek_id == kek_id and reopened.unwrap("acme", kek_id, wrapped) == b"k" * 32
        other = kind(tmp_path / "elsewhere")
        assert other.kek_id != kek_id
        with pytest.raises(KekUnavailable):
            other.unwrap("acme", kek_id, wrapped)


def test_the_hybrid_wrap_refuses_a_low_order_x25519_point(tmp_path):
    hybrid = HybridKemProvider(tmp_path)
    kek_id, wrapped = hybrid.wrap("acme", b"k" * 32)
    at = 1 + HybridKemProvider.CT_M
    with pytest.raises(UnwrapFailed, match="invalid"):
        hybrid.unwrap("acme", kek_id, wrapped[:at] + bytes(32) + wrapped[at + 32:])


def test_associated_data_fields_cannot_run_into_each_other():
    assert bind("ab", "c") != bind("a", "bc") and bind("a\0", "b") != bind("a", "\0b")


# any single-byte change to the stored secrets is refused ----------------------------------------

@pytest.fixture(scope="module")
def tamper_vault(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tamper")
    local = SQLiteKeyVault(directory, kek_provider="local")
    rows = [local.put_sync("acme", KEY, algorithm="ec-p256", purpose="leaf")]
    local.close()
    hybrid = SQLiteKeyVault(directory, kek_provider="hybrid")
    rows.append(hybrid.put_sync("acme", KEY, algorithm="ml-dsa-65", purpose="ca"))
    yield hybrid, rows
    hybrid.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.integers(0, 1), column=st.sampled_from(["nonce", "ciphertext", "wrapped_dek"]),
       position=st.integers(0, 10_000), mask=st.integers(1, 255))
def test_any_single_byte_flip_is_refused(tamper_vault, row, column, position, mask):
    vault, rows = tamper_vault
    key_id = rows[row]
    with closing(sqlite3.connect(vault.path)) as conn:
        original = conn.execute(f"SELECT {column} FROM private_keys WHERE key_id = ?", (key_id,)).fetchone()[0]
        flipped = bytearray(original)
        flipped[position % len(flipped)] ^= mask
        conn.execute(f"UPDATE private_keys SET {column} = ? WHERE key_id = ?", (bytes(flipped), key_id))
        conn.commit()
        try:
            _corrupt(vault, "acme", key_id)
        finally:
            conn.execute(f"UPDATE private_keys SET {column} = ? WHERE key_id = ?", (original, key_id))
            conn.commit()
    assert vault.get_sync("acme", key_id) == KEY
