"""The key vault's files on disk: private modes, refusal of unsafe key files, restarts and racing processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest
from process_race import start_together

from infra.keystore import HybridKemProvider, LocalMasterKeyProvider, SQLiteKeyVault
from infra.keystore.kek import HYBRID_KEY_FILE, MASTER_KEY_FILE, KekUnavailable

KEY = b"private key bytes"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("provider", ["local", "hybrid"])
async def test_every_file_the_vault_writes_is_private(tmp_path, provider):
    old_umask = os.umask(0o022)  # a typical, permissive umask must not leak through
    try:
        vault = SQLiteKeyVault(tmp_path / "data", kek_provider=provider)
        await vault.put("acme", KEY, algorithm="ec-p256", purpose="leaf")
        data = tmp_path / "data"
        key_file = data / "keys" / (MASTER_KEY_FILE if provider == "local" else HYBRID_KEY_FILE)
        assert mode(data / "keys") == 0o700 and mode(key_file) == 0o600
        assert key_file.stat().st_size == (32 if provider == "local" else 96)
        open_files = [data / "keys.db", data / "keys.db-wal", data / "keys.db-shm"]
        assert [mode(p) for p in open_files] == [0o600] * 3  # WAL and SHM exist while the vault is open
        with closing(sqlite3.connect(data / "keys.db")) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert not [p for p in (data / "keys").iterdir() if p.name.endswith(".tmp")]
        vault.close()
    finally:
        os.umask(old_umask)


@pytest.mark.parametrize("kind", [LocalMasterKeyProvider, HybridKemProvider])
@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused_with_a_clear_error(tmp_path, kind, loose):
    SQLiteKeyVault(tmp_path, kek_provider=kind.provider).close()
    path = kind(tmp_path / "keys").path
    path.chmod(loose)
    with pytest.raises(KekUnavailable, match=rf"mode 0{loose:o}: group/other may access it.*chmod 600"):
        kind(tmp_path / "keys")
    with pytest.raises(KekUnavailable, match="group/other"):  # the vault refuses to start
        SQLiteKeyVault(tmp_path, kek_provider=kind.provider)


def test_a_loose_keys_db_is_refused(tmp_path):
    SQLiteKeyVault(tmp_path).close()
    (tmp_path / "keys.db").chmod(0o644)
    with pytest.raises(KekUnavailable, match="keys.db has mode 0644"):
        SQLiteKeyVault(tmp_path)


def test_damaged_symlinked_or_missing_key_files_are_refused(tmp_path):
    keys = tmp_path / "keys"
    LocalMasterKeyProvider(keys)
    master = keys / MASTER_KEY_FILE
    with master.open("ab") as handle:
        handle.write(b"!")
    with pytest.raises(KekUnavailable, match="holds 33 bytes, not the 32"):
        LocalMasterKeyProvider(keys)
    master.unlink()
    elsewhere = tmp_path / "elsewhere.key"
    fd = os.open(elsewhere, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    master.symlink_to(elsewhere)
    with pytest.raises(KekUnavailable, match="cannot open"):
        LocalMasterKeyProvider(keys)
    master.unlink()
    with pytest.raises(KekUnavailable, match="cannot open"):
        HybridKemProvider(keys, create=False)
    assert not (keys / HYBRID_KEY_FILE).exists()


async def test_keys_survive_a_restart(tmp_path):
    vault = SQLiteKeyVault(tmp_path, kek_provider="hybrid")
    key_id = await vault.put("acme", KEY, algorithm="ml-dsa-65", purpose="ca")
    vault.close()
    master_before = (tmp_path / "keys" / HYBRID_KEY_FILE).read_bytes()
    reopened = SQLiteKeyVault(tmp_path, kek_provider="hybrid")
    assert await reopened.get("acme", key_id) == KEY
    assert (tmp_path / "keys" / HYBRID_KEY_FILE).read_bytes() == master_before  # loaded, not regenerated
    reopened.close()


def _open_and_store(data_dir: str, provider: str, start, results) -> None:
    start.wait()
    vault = SQLiteKeyVault(data_dir, kek_provider=provider)
    results.put((vault.put_sync("acme", KEY + os.getpid().to_bytes(4, "big"), algorithm="ed25519", purpose="leaf"),
                 os.getpid()))
    vault.close()


@pytest.mark.parametrize("provider", ["local", "hybrid"])
def test_processes_starting_at_once_agree_on_one_kek(tmp_path, provider):
    stored = start_together(multiprocessing.get_context("spawn"), _open_and_store, (str(tmp_path), provider), 6)
    vault = SQLiteKeyVault(tmp_path, kek_provider=provider)
    for key_id, pid in stored:  # every key, whichever process wrote it, opens under the one KEK on disk
        assert vault.get_sync("acme", key_id) == KEY + pid.to_bytes(4, "big")
    vault.close()
