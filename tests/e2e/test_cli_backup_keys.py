"""`csm backup` / `csm restore` carry the private-key vault and its KEKs: restored keys still decrypt."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from domain.errors import DomainError
from infra.keystore import SQLiteKeyVault
from infra.keystore.kek import HYBRID_KEY_FILE, MASTER_KEY_FILE, KekUnavailable

CONSOLE_SCRIPT = Path(sys.executable).parent / "csm"
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]
KEK_FILES = [f"keys/{MASTER_KEY_FILE}", f"keys/{HYBRID_KEY_FILE}"]


def csm(data_dir: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}
    run = subprocess.run([*CSM, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=120,
                         env=env, cwd=data_dir.parent)
    assert run.returncode == expect, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    return run


def _material(n: int) -> bytes:
    return f"-----BEGIN PRIVATE KEY-----\nkey number {n}\n".encode()


@pytest.fixture
def source(tmp_path):
    """An initialised data dir whose vault holds keys wrapped under both providers; left open (online)."""
    data = tmp_path / "source"
    csm(data, "init")
    csm(data, "tenant", "create", "acme", "--name", "Acme")
    stored = {}
    local = SQLiteKeyVault(data, kek_provider="local")
    for n in range(3):
        stored[local.put_sync("acme", _material(n), algorithm="ec-p256", purpose="leaf")] = ("acme", _material(n))
    local.close()
    hybrid = SQLiteKeyVault(data, kek_provider="hybrid")
    for n in range(3, 6):
        tenant = "acme" if n % 2 else "globex"
        stored[hybrid.put_sync(tenant, _material(n), algorithm="ml-dsa-65", purpose="ca")] = (tenant, _material(n))
    yield data, stored, hybrid  # still open: the backup is taken while the vault's WAL holds the last rows
    hybrid.close()


def test_backup_and_restore_keep_every_key_decryptable(source, tmp_path):
    data, stored, _open_vault = source
    assert (data / "keys.db-wal").exists()
    backup = tmp_path / "backup"
    csm(data, "backup", str(backup))
    manifest = json.loads((backup / "manifest.json").read_text())
    assert {"keys.db", *KEK_FILES} <= set(manifest["files"])
    for name in ("keys.db", *KEK_FILES):
        assert stat.S_IMODE((backup / name).stat().st_mode) == 0o600, name
    assert not (backup / "keys.db-wal").exists()
    with closing(sqlite3.connect(backup / "keys.db")) as conn:
        assert conn.execute("SELECT count(*) FROM private_keys").fetchone()[0] == len(stored)

    target = tmp_path / "restored"
    assert "OK" in csm(target, "restore", str(backup)).stdout
    for name in ("keys.db", *KEK_FILES):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600, name
    for provider in ("local", "hybrid"):
        vault = SQLiteKeyVault(target, kek_provider=provider)
        assert {key_id: (tenant, vault.get_sync(tenant, key_id)) for key_id, (tenant, _) in stored.items()} == stored
        vault.close()


def test_the_vault_needs_the_kek_files_that_travel_with_it(source, tmp_path):
    """Without its KEKs a copied vault is ciphertext only; and a swapped KEK file fails the manifest."""
    data, stored, _open_vault = source
    backup = tmp_path / "backup"
    csm(data, "backup", str(backup))
    bare = tmp_path / "bare"
    bare.mkdir(mode=0o700)
    (bare / "keys.db").write_bytes((backup / "keys.db").read_bytes())
    (bare / "keys.db").chmod(0o600)
    with pytest.raises(KekUnavailable, match="No new key file is made"):
        SQLiteKeyVault(bare)  # a new master key would hide that the copy is ciphertext only
    assert not (bare / "keys" / MASTER_KEY_FILE).exists()
    vault = SQLiteKeyVault(bare, require_default=False)
    for key_id, (tenant, _) in stored.items():
        with pytest.raises(DomainError) as caught:
            vault.get_sync(tenant, key_id)
        assert caught.value.code == "kek_unavailable"
    vault.close()

    (backup / KEK_FILES[0]).write_bytes(bytes(32))  # a different master key, same size
    run = csm(tmp_path / "restored", "restore", str(backup), expect=1)
    assert "fails its manifest" in run.stderr and MASTER_KEY_FILE in run.stderr
    assert not (tmp_path / "restored" / "keys.db").exists()


def test_a_forced_restore_moves_the_current_vault_aside(source, tmp_path):
    data, stored, _open_vault = source
    backup = tmp_path / "backup"
    csm(data, "backup", str(backup))
    target = tmp_path / "other"
    csm(target, "init")
    csm(target, "tenant", "create", "other", "--name", "Other")
    own = SQLiteKeyVault(target)
    own_key = own.put_sync("other", b"the target's own key", algorithm="ed25519", purpose="leaf")
    own.close()
    assert "OK" in csm(target, "restore", "--force", str(backup)).stdout
    aside = next(p for p in target.iterdir() if p.name.startswith(".pre-restore-"))
    assert (aside / "keys.db").exists() and (aside / "keys" / MASTER_KEY_FILE).exists()
    moved = SQLiteKeyVault(aside)
    assert moved.get_sync("other", own_key) == b"the target's own key"  # kept, with the KEK that opens it
    moved.close()
    restored = SQLiteKeyVault(target)
    assert restored.key_ids("other") == [] and len(restored.key_ids("acme")) == 5
    restored.close()


def test_a_data_dir_without_a_vault_still_backs_up_and_restores(tmp_path):
    data = tmp_path / "old"
    csm(data, "init")
    for name in ("keys.db", "keys.db-wal", "keys.db-shm", f"keys/{MASTER_KEY_FILE}"):  # as before the vault existed
        (data / name).unlink(missing_ok=True)
    backup = tmp_path / "backup"
    csm(data, "backup", str(backup))
    assert "keys.db" not in json.loads((backup / "manifest.json").read_text())["files"]
    assert "OK" in csm(tmp_path / "restored", "restore", str(backup)).stdout
