"""KEK rotation, re-wrap and retirement in the key vault, under the local and hybrid providers (real files, real
SQLite): the keys never change, only their wraps; a run that stops part-way is finished by the next."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from hypothesis import given
from hypothesis import strategies as st
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.errors import DomainError
from domain.vault import KekInUse, KekRef, format_kek_id, parse_kek_id
from infra.keystore import SQLiteKeyVault
from infra.keystore.kek import KekUnavailable, LocalMasterKeyProvider
from infra.keystore.vault import content_aad

PROVIDERS = ["local", "hybrid"]


def _ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.fixture(params=PROVIDERS)
def vault(request, tmp_path):
    opened = SQLiteKeyVault(tmp_path, kek_provider=request.param)
    yield opened
    opened.close()


def _rows(vault) -> dict[str, tuple]:
    """key id -> (tenant, provider, kek id, wrapped data key, nonce, ciphertext)."""
    with closing(sqlite3.connect(vault.path)) as conn:
        return {row[0]: row[1:] for row in conn.execute(
            "SELECT key_id, tenant_id, kek_provider, kek_id, wrapped_dek, nonce, ciphertext FROM private_keys")}


def _stored(vault, tenants=("acme", "globex"), each=3) -> dict[str, tuple[str, bytes]]:
    keys = {}
    for tenant in tenants:
        for _ in range(each):
            material = _ec_pem()
            keys[vault.put_sync(tenant, material, algorithm="ecdsa-p256", purpose="leaf")] = (tenant, material)
    return keys


def _all_decrypt_and_sign(vault, keys) -> None:
    for key_id, (tenant, material) in keys.items():
        got = vault.get_sync(tenant, key_id)
        assert got == material
        private = serialization.load_pem_private_key(got, None)
        private.public_key().verify(private.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256()))


def _rotate(vault, tenant):
    created = vault.create_keks_sync(vault.kek_provider, tenant)
    vault.assign_keks_sync(created)
    return created


def _rewrap(vault, tenant=None, provider=None):
    targets, _plan, rows = vault.rewrap_plan_sync(provider or vault.kek_provider, tenant)
    return vault.rewrap_sync(provider or vault.kek_provider, targets, rows)


def test_rotating_a_tenant_wraps_its_new_keys_under_the_new_kek_and_rewrap_moves_only_the_wrap(vault):
    keys = _stored(vault)
    before = _rows(vault)
    (new,) = _rotate(vault, "acme")
    old = before[next(iter(keys))][2]
    assert new.tenant == "acme" and new.replaces == [old] and new.kek_id != old
    assert new.kek_id.startswith(f"{vault.kek_provider}:")
    fresh = vault.put_sync("acme", b"new", algorithm="ed25519", purpose="leaf")
    assert _rows(vault)[fresh][2] == new.kek_id  # new keys: the new KEK at once
    other = vault.put_sync("globex", b"g", algorithm="ed25519", purpose="leaf")
    assert _rows(vault)[other][2] == old
    _all_decrypt_and_sign(vault, keys)  # old rows: still under the old KEK, still readable

    counts = _rewrap(vault, "acme")
    assert (counts.rewrapped, counts.changed, counts.failed, counts.remaining) == (3, 0, [], 0)
    assert counts.to_kek_ids == [new.kek_id] and counts.from_kek_ids == [old]
    after = _rows(vault)
    for key_id, (tenant, *_rest) in keys.items():
        assert after[key_id][4:] == before[key_id][4:]  # the nonce and the ciphertext under the data key: untouched
        assert after[key_id][2] == (new.kek_id if tenant == "acme" else old)
        assert (after[key_id][3] != before[key_id][3]) == (tenant == "acme")
    _all_decrypt_and_sign(vault, keys)
    assert _rewrap(vault, "acme").rewrapped == 0  # nothing left: running again does nothing


def test_rotating_every_tenant_supersedes_tenant_kek_and_the_base_can_then_be_retired(vault, tmp_path):
    keys = _stored(vault)
    base = vault._default.kek_id
    (own,) = _rotate(vault, "acme")
    (every,) = _rotate(vault, None)
    assert every.tenant is None and sorted(every.replaces) == sorted([base, own.kek_id])
    counts = _rewrap(vault)
    assert counts.rewrapped == 6 and counts.to_kek_ids == [every.kek_id] and counts.remaining == 0
    usage = {kek.kek_id: kek for kek in vault.kek_usage_sync()}
    assert usage[every.kek_id].current_for == ["*", "acme"] and usage[every.kek_id].rows == {"acme": 3, "globex": 3}
    assert usage[base].current_for == [] and usage[base].rows == {}
    for retired in (base, own.kek_id):
        vault.mark_kek_retired_sync(retired)
        vault.destroy_kek_sync(retired)
    assert not vault._default.path.exists() and not vault._default.version_path(own.kek_id).exists()
    assert {kek.kek_id for kek in vault.kek_usage_sync() if kek.retired_at} == {base, own.kek_id}
    _all_decrypt_and_sign(vault, keys)
    vault.close()
    reopened = SQLiteKeyVault(tmp_path, kek_provider=vault.kek_provider)  # the retired base file is not re-created
    try:
        assert not reopened._default.path.exists() and reopened._default.kek_id is None
        fresh = reopened.put_sync("initech", b"x", algorithm="ed25519", purpose="leaf")
        assert _rows(reopened)[fresh][2] == every.kek_id and reopened.get_sync("initech", fresh) == b"x"
        _all_decrypt_and_sign(reopened, keys)
    finally:
        reopened.close()


def test_retiring_is_refused_while_the_kek_wraps_new_keys_or_any_row_names_it(vault):
    keys = _stored(vault, tenants=("acme",))
    base = vault._default.kek_id
    with pytest.raises(KekInUse) as in_use:
        vault.mark_kek_retired_sync(base)
    assert (in_use.value.code, in_use.value.status, in_use.value.field) == ("kek_in_use", 409, "kek_id")
    (every,) = _rotate(vault, None)
    with pytest.raises(KekInUse) as referenced:
        vault.mark_kek_retired_sync(base)
    assert referenced.value.code == "kek_referenced" and "3 stored keys" in referenced.value.detail
    with pytest.raises(KekInUse, match="not retired"):
        vault.destroy_kek_sync(base)
    assert vault._default.path.exists()
    _rewrap(vault)
    vault.mark_kek_retired_sync(base)
    vault.mark_kek_retired_sync(base)  # again: already retired, nothing to refuse
    vault.destroy_kek_sync(base)
    vault.destroy_kek_sync(base)  # the file is gone already: nothing to do
    _all_decrypt_and_sign(vault, keys)
    with pytest.raises(DomainError, match="not a KEK id"):
        vault.mark_kek_retired_sync("local:../../etc/passwd")


def test_a_put_is_never_written_under_a_retired_kek(vault):
    with closing(sqlite3.connect(vault.path)) as conn:  # as if retired between the put's wrap and its insert
        conn.execute("INSERT INTO retired_keks VALUES (?, ?, ?)", (vault._default.kek_id, vault.kek_provider, "x"))
        conn.commit()
    with pytest.raises(DomainError) as caught:
        vault.put_sync("acme", b"k", algorithm="ed25519", purpose="leaf")
    assert caught.value.code == "kek_unavailable" and "retired" in caught.value.detail
    assert _rows(vault) == {}


class FailingAt:
    """A provider that fails its ``at``-th wrap (the adapter boundary): as a token that stops answering
    (KekUnavailable), or as a process killed between the wrap and the row's update (``crash``)."""

    def __init__(self, inner, at: int, error: BaseException) -> None:
        self.inner, self.at, self.error, self.wraps = inner, at, error, 0
        self.provider = inner.provider

    def wrap(self, tenant_id, dek, kek_id=None):
        self.wraps += 1
        if self.wraps == self.at:
            raise self.error
        return self.inner.wrap(tenant_id, dek, kek_id)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Crash(BaseException):
    """Stands for the process dying: nothing catches it."""


@pytest.mark.parametrize("error", [KekUnavailable("the token does not answer"), Crash()])
def test_a_rewrap_that_stops_part_way_is_finished_by_running_it_again(tmp_path, error):
    first = SQLiteKeyVault(tmp_path)
    keys = _stored(first, each=4)
    before = _rows(first)
    (every,) = _rotate(first, None)
    first.close()
    failing = FailingAt(LocalMasterKeyProvider(tmp_path / "keys"), at=5, error=error)
    broken = SQLiteKeyVault(tmp_path, providers=[failing])
    if isinstance(error, Crash):
        with pytest.raises(Crash):
            _rewrap(broken)
    else:
        counts = _rewrap(broken)
        assert counts.stopped == "the token does not answer" and counts.rewrapped == 4 and counts.remaining == 4
    broken.close()
    middle = _rows(SQLiteKeyVault(tmp_path))
    assert sorted(row[2] for row in middle.values()) == sorted([every.kek_id] * 4 + [before[k][2] for k in keys][:4])
    again = SQLiteKeyVault(tmp_path)
    try:
        counts = _rewrap(again)
        assert (counts.rewrapped, counts.remaining, counts.failed) == (4, 0, [])
        after = _rows(again)
        assert all(after[k][2] == every.kek_id and after[k][4:] == before[k][4:] for k in keys)
        _all_decrypt_and_sign(again, keys)
    finally:
        again.close()


def test_a_row_changed_or_unreadable_during_a_rewrap_is_left_as_it_is(tmp_path):
    vault = SQLiteKeyVault(tmp_path)
    keys = _stored(vault, tenants=("acme",), each=3)
    first, second, third = sorted(keys)
    _rotate(vault, None)
    with closing(sqlite3.connect(vault.path)) as conn:  # an unreadable wrap: the old KEK refuses it
        wrapped = conn.execute("SELECT wrapped_dek FROM private_keys WHERE key_id = ?", (third,)).fetchone()[0]
        conn.execute("UPDATE private_keys SET wrapped_dek = ? WHERE key_id = ?", (bytes(len(wrapped)), third))
        conn.commit()
    inner = vault._default

    class Racing:  # someone deletes the second row while its data key is being wrapped
        provider = inner.provider

        def wrap(self, tenant_id, dek, kek_id=None):
            with closing(sqlite3.connect(vault.path)) as conn:
                conn.execute("DELETE FROM private_keys WHERE key_id = ?", (second,))
                conn.commit()
            return inner.wrap(tenant_id, dek, kek_id)

        def __getattr__(self, name):
            return getattr(inner, name)

    vault._providers["local"] = vault._default = Racing()
    counts = _rewrap(vault)
    assert (counts.rewrapped, counts.changed, counts.failed, counts.remaining) == (1, 1, [third], 1)
    assert vault.get_sync("acme", first) == keys[first][1]
    vault.close()


# the KEK id's grammar -----------------------------------------------------------------------

_hex = st.binary(min_size=1, max_size=64).map(bytes.hex)
_refs = st.one_of(
    st.builds(lambda p, h: KekRef(provider=p, kek_id=f"{p}:{h}"), st.sampled_from(["local", "hybrid"]),
              st.binary(min_size=16, max_size=16).map(bytes.hex)),
    st.builds(lambda serial, key, tenant: KekRef(provider="pkcs11", kek_id="", serial=serial, key_id=key,
                                                 tenant=tenant),
              st.text(st.characters(blacklist_characters=":", blacklist_categories=("Z", "C")), min_size=1,
                      max_size=64), _hex, st.text(st.characters(blacklist_categories=("C", "Zl", "Zp")), min_size=1,
                                                  max_size=60).filter(str.isprintable)))


@given(_refs)
def test_every_kek_id_the_providers_write_parses_back_to_its_parts(ref):
    text = format_kek_id(ref)
    parsed = parse_kek_id(text)
    assert parsed.kek_id == text and format_kek_id(parsed) == text and parsed.provider == ref.provider
    assert (parsed.serial, parsed.key_id, parsed.tenant) == (ref.serial, ref.key_id, ref.tenant)


@given(st.text(max_size=600))
def test_any_other_text_is_refused_by_name_never_with_another_error(text):
    try:
        parsed = parse_kek_id(text)
    except DomainError as exc:
        assert exc.code == "invalid_kek_id" and exc.field == "kek_id"
    else:
        assert parsed.kek_id == text and format_kek_id(parsed) == text


@pytest.fixture(scope="module")
def local_provider(tmp_path_factory):
    return LocalMasterKeyProvider(tmp_path_factory.mktemp("keys"))


@given(st.text(max_size=80))
def test_a_version_file_is_named_only_by_a_kek_id_of_its_provider(local_provider, suffix):
    try:
        path = local_provider.version_path(f"local:{suffix}")
    except KekUnavailable:
        return
    assert path.parent == local_provider.keys_dir / "kek" and path.name == f"local-{suffix}.key" and len(suffix) == 32


def test_a_key_file_made_by_a_rotation_that_died_before_assigning_it_is_listed_and_can_be_retired(vault):
    orphan = vault._default.create_kek(None)  # made, never recorded nor assigned
    usage = {kek.kek_id: kek for kek in vault.kek_usage_sync()}
    assert usage[orphan].rows == {} and usage[orphan].current_for == []
    vault.mark_kek_retired_sync(orphan)
    vault.destroy_kek_sync(orphan)
    assert not vault._default.version_path(orphan).exists()
    assert [kek.kek_id for kek in vault.kek_usage_sync() if kek.retired_at] == [orphan]


def test_status_says_whether_each_kek_can_be_used_now_from_its_file_on_disk(vault):
    _stored(vault, tenants=("acme",), each=2)
    base = vault._default.kek_id
    (own,) = _rotate(vault, "acme")
    fresh = vault.put_sync("acme", b"under the new KEK", algorithm="ed25519", purpose="leaf")  # own is now cached
    orphan = vault._default.create_kek(None)
    vault.mark_kek_retired_sync(orphan)
    vault.destroy_kek_sync(orphan)
    usage = {kek.kek_id: kek for kek in vault.kek_usage_sync()}
    assert [(usage[k].available, usage[k].unavailable_reason) for k in (base, own.kek_id)] == [(True, None)] * 2
    assert usage[orphan].available is None and not usage[orphan].needed  # retired: not checked

    vault._default.version_path(own.kek_id).unlink()  # the process still holds it: status asks the disk
    vault._default.path.chmod(0o644)
    usage = {kek.kek_id: kek for kek in vault.kek_usage_sync()}
    gone, loose = usage[own.kek_id], usage[base]
    assert gone.available is False and gone.needed and "cannot open key file" in gone.unavailable_reason
    assert str(vault._default.version_path(own.kek_id)) in gone.unavailable_reason
    assert loose.available is False and "has mode 0644" in loose.unavailable_reason and "\n" not in loose.unavailable_reason
    vault._default.path.chmod(0o600)
    assert vault.get_sync("acme", fresh) == b"under the new KEK"  # nothing was dropped from the process


def test_a_key_stored_under_the_old_kek_during_the_rewrap_is_moved_by_its_next_pass(tmp_path):
    """A process that chose the KEK just before the rotation stores its key after the run's cursor passed."""
    vault = SQLiteKeyVault(tmp_path)
    keys = _stored(vault, tenants=("acme",), each=3)
    old = vault._default.kek_id
    (new,) = _rotate(vault, None)
    inner, late = vault._default, "key_" + "0" * 31 + "1"  # sorts before every other key id: behind the cursor

    def store_late() -> None:
        dek = AESGCM.generate_key(256)
        kek_id, wrapped = inner.wrap("acme", dek, old)
        aad = content_aad("acme", late, "ed25519", "leaf")
        with closing(sqlite3.connect(vault.path)) as conn:
            conn.execute("INSERT INTO private_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (late, "acme", "ed25519", "leaf", "local", kek_id, wrapped, bytes(12),
                          AESGCM(dek).encrypt(bytes(12), b"late key", aad), "2026-01-01T00:00:00.000000Z"))
            conn.commit()

    class Concurrent:
        provider, calls = inner.provider, 0

        def wrap(self, tenant_id, dek, kek_id=None):
            Concurrent.calls += 1
            if Concurrent.calls == 2:
                store_late()
            return inner.wrap(tenant_id, dek, kek_id)

        def __getattr__(self, name):
            return getattr(inner, name)

    vault._providers["local"] = vault._default = Concurrent()
    counts = _rewrap(vault)
    assert (counts.rewrapped, counts.remaining) == (4, 0)
    assert _rows(vault)[late][2] == new.kek_id and vault.get_sync("acme", late) == b"late key"
    _all_decrypt_and_sign(vault, keys)
    vault.close()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_deleted_key_file_that_stored_keys_need_refuses_the_start_and_is_not_replaced(tmp_path, provider):
    vault = SQLiteKeyVault(tmp_path, kek_provider=provider)
    keys = _stored(vault, tenants=("acme",), each=2)
    lost, base = vault._default.kek_id, vault._default.path
    saved = base.read_bytes()
    vault.close()
    base.unlink()
    with pytest.raises(KekUnavailable) as refused:
        SQLiteKeyVault(tmp_path, kek_provider=provider)
    message = str(refused.value)
    assert "\n" not in message and lost in message and "2 stored keys" in message and str(base) in message
    assert "restore" in message and "csm restore" in message and "No new key file is made" in message
    assert not base.exists()  # a new key would hide the loss: it could unwrap none of the rows

    base.write_bytes(saved)  # restored from the backup: the service starts, and the keys read
    base.chmod(0o600)
    vault = SQLiteKeyVault(tmp_path, kek_provider=provider)
    try:
        _all_decrypt_and_sign(vault, keys)
    finally:
        vault.close()


def test_a_key_file_is_still_made_where_keys_db_names_none_of_its_keks(tmp_path):
    fresh = SQLiteKeyVault(tmp_path / "new")  # a brand-new data directory
    fresh.close()
    assert (tmp_path / "new" / "keys" / "master.key").exists()
    (tmp_path / "new" / "keys" / "master.key").unlink()  # keys.db exists, but no row or assignment names the KEK
    SQLiteKeyVault(tmp_path / "new").close()
    assert (tmp_path / "new" / "keys" / "master.key").exists()
    hybrid = SQLiteKeyVault(tmp_path / "moved", kek_provider="hybrid")  # rows under hybrid only: local is made
    _stored(hybrid, tenants=("acme",), each=1)
    hybrid.close()
    SQLiteKeyVault(tmp_path / "moved").close()
    assert (tmp_path / "moved" / "keys" / "master.key").exists()


def test_status_opens_without_the_default_kek_and_says_why_it_is_unavailable(tmp_path):
    vault = SQLiteKeyVault(tmp_path)
    key_id = vault.put_sync("acme", b"material", algorithm="ed25519", purpose="leaf")
    lost = vault._default.kek_id
    vault.close()
    (tmp_path / "keys" / "master.key").unlink()
    status = SQLiteKeyVault(tmp_path, require_default=False)
    try:
        assert "restore" in status.default_unavailable and lost in status.default_unavailable
        (kek,) = status.kek_usage_sync()
        assert (kek.kek_id, kek.rows, kek.available, kek.needed) == (lost, {"acme": 1}, False, True)
        assert kek.unavailable_reason == status.default_unavailable
        with pytest.raises(DomainError, match="kek_unavailable|cannot be stored"):
            status.put_sync("acme", b"new", algorithm="ed25519", purpose="leaf")
        with pytest.raises(DomainError, match="cannot be unwrapped"):
            status.get_sync("acme", key_id)
        with pytest.raises(KekUnavailable):
            status.check()
    finally:
        status.close()
    assert not (tmp_path / "keys" / "master.key").exists()


def test_the_refusal_names_the_keks_under_most_rows_and_counts_the_rest(tmp_path):
    vault = SQLiteKeyVault(tmp_path)
    _stored(vault, tenants=("t0",), each=1)  # under master.key
    for n, tenant in enumerate(("t1", "t2", "t3", "t4"), start=2):
        _rotate(vault, tenant)
        _stored(vault, tenants=(tenant,), each=n)
    busiest = [kek.kek_id for kek in sorted(vault.kek_usage_sync(), key=lambda k: -sum(k.rows.values()))][:3]
    vault.close()
    (tmp_path / "keys" / "master.key").unlink()
    for version in (tmp_path / "keys" / "kek").iterdir():
        version.unlink()
    with pytest.raises(KekUnavailable) as refused:
        SQLiteKeyVault(tmp_path)
    message = str(refused.value)
    assert "keys.db names 5 local KEKs" in message and "15 stored keys" in message and "and 2 more" in message
    assert all(kek_id in message for kek_id in busiest) and len(message) < 1200
