"""An auditor verifies a `csm backup` copy on read-only media: `csm audit verify` and tools/verify_chain.py read it
with SQLite's immutable mode, and refuse, in one line, where that would be wrong (a -wal with data, a live server).

Tests run as root, whom permissions do not stop, so the reader is a child without capabilities (``setpriv``): root
without CAP_DAC_OVERRIDE cannot write a 0555 directory, as on a read-only mount. The ordinary-user case runs the
reader as ``nobody`` on a world-readable copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import pytest

from infra.data_lock import shared

ROOT = Path(__file__).resolve().parents[2]
VERIFY_CHAIN = [sys.executable, "-I", str(ROOT / "tools" / "verify_chain.py")]
CONSOLE_SCRIPT = Path(sys.executable).parent / "csm"
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]
SETPRIV = shutil.which("setpriv")
NO_CAPS = ["--inh-caps=-all", "--bounding-set=-all"]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CSM_")} | {"HOME": "/"}


def run(args: list[str], *, reader: list[str] = (), expect: int | None = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([*reader, *args], capture_output=True, text=True, timeout=120, env=env(), cwd="/")
    if expect is not None:
        assert done.returncode == expect, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def csm(data_dir: Path, *args: str, reader: list[str] = (), expect: int | None = 0) -> subprocess.CompletedProcess:
    return run([*CSM, "--data-dir", str(data_dir), *args], reader=reader, expect=expect)


def cannot_write(reader: list[str], directory: Path) -> bool:
    return run([*reader, "sh", "-c", f"touch {directory}/probe"], expect=None).returncode != 0


@pytest.fixture
def root_reader() -> list[str]:
    """Root without capabilities (0555 stops it), or this ordinary user as it is."""
    if os.geteuid() != 0:
        return []
    if SETPRIV is None:
        pytest.skip("setpriv (util-linux) is not installed: root cannot be made to respect a read-only directory")
    return [SETPRIV, *NO_CAPS]


@pytest.fixture
def workdir() -> Path:
    """A directory others may traverse (pytest's tmp_path is 0700), for the copies an ordinary user reads."""
    path = Path(tempfile.mkdtemp(prefix="csm-ro-"))
    path.chmod(0o755)
    yield path
    for directory, _, _ in os.walk(path):
        os.chmod(directory, 0o755)
    shutil.rmtree(path)


@pytest.fixture
def source(workdir) -> Path:
    data = workdir / "source"
    csm(data, "init")
    for tenant in ("acme", "globex"):
        csm(data, "tenant", "create", tenant, "--name", tenant.title())
    csm(data, "audit", "checkpoint")
    csm(data, "tenant", "suspend", "globex", "--reason", "unsealed when copied")
    return data


def cold_copy(source: Path, dest: Path) -> Path:
    """The data directory copied file by file while nothing runs: events.db in WAL mode, run/data-dir.lock too."""
    shutil.copytree(source, dest)
    with closing(sqlite3.connect(f"file:{dest / 'events.db'}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    return dest


def backup_copy(source: Path, dest: Path) -> Path:
    csm(source, "backup", str(dest))
    return dest


def make_read_only(directory: Path, *, world: bool = False) -> None:
    for path in sorted(directory.rglob("*"), reverse=True) + [directory]:
        path.chmod((0o555 if world else 0o500) if path.is_dir() else (0o444 if world else 0o400))


def digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def nobody_reader() -> list[str]:
    if SETPRIV is None and os.geteuid() == 0:
        pytest.skip("setpriv (util-linux) is not installed: cannot run the reader as an ordinary user")
    if os.geteuid() != 0:
        return []
    return [SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", *NO_CAPS]


@pytest.mark.parametrize("copy", [backup_copy, cold_copy], ids=["csm-backup", "cold-copy-wal-mode"])
def test_a_read_only_copy_verifies_with_csm_and_the_stdlib_verifier_and_is_left_unchanged(
        source, workdir, root_reader, copy):
    data = copy(source, workdir / "copy")
    outside = workdir / "kept-elsewhere"
    outside.mkdir()
    witness, anchor = outside / "audit-witness.json", outside / "audit-keys.pub.json"
    shutil.copy(data / "audit-witness.json", witness)
    shutil.copy(data / "keys" / "audit-keys.pub.json", anchor)
    make_read_only(data)
    before = digests(data)
    assert cannot_write(root_reader, data), "the reader can still write the copy: the test would prove nothing"

    verified = csm(data, "audit", "verify", "-q", reader=root_reader)
    assert "result:           OK" in verified.stdout and verified.stderr == ""
    outside_run = csm(data, "audit", "verify", "-q", "--witness", str(witness), "--anchor", str(anchor),
                      reader=root_reader)
    assert f"anchor file {anchor}" in outside_run.stdout and f"witness:          {witness}" in outside_run.stdout
    assert "result:           OK" in outside_run.stdout
    reference = run([*VERIFY_CHAIN, str(data / "events.db"), "--witness", str(witness), "--anchor", str(anchor)],
                    reader=root_reader)
    assert reference.stdout.startswith("OK: ") and reference.stderr == ""

    assert digests(data) == before  # not a byte changed, nothing added (no lock, no -shm)


def test_an_ordinary_user_verifies_a_read_only_backup(source, workdir):
    reader = nobody_reader()
    data = backup_copy(source, workdir / "copy")
    cold = cold_copy(source, workdir / "cold")
    for directory in (data, cold):
        make_read_only(directory, world=True)
        assert cannot_write(reader, directory)
        assert "result:           OK" in csm(directory, "audit", "verify", "-q", reader=reader).stdout
        assert run([*VERIFY_CHAIN, str(directory / "events.db")], reader=reader).stdout.startswith("OK: ")


def flip_a_byte(events_db: Path) -> int:
    """Change one byte of the body of the event that names Acme; return its position."""
    with closing(sqlite3.connect(events_db)) as conn:
        position, body = conn.execute("SELECT position, body FROM events WHERE stream_id = 'tenant-acme' "
                                      "ORDER BY position LIMIT 1").fetchone()
        body = bytes(body) if isinstance(body, bytes) else body.encode()
        at = body.index(b"Acme") + 2
        conn.execute("UPDATE events SET body = ? WHERE position = ?",
                     (body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1:], position))
        conn.commit()
    return position


def test_a_tampered_read_only_copy_fails_verification(source, workdir, root_reader):
    data = backup_copy(source, workdir / "copy")
    position = flip_a_byte(data / "events.db")
    make_read_only(data)

    verified = csm(data, "audit", "verify", "-q", reader=root_reader, expect=1)
    assert "result:           FAILED" in verified.stdout
    assert "kind:      hash_mismatch" in verified.stdout and f"position:  {position}" in verified.stdout
    reference = run([*VERIFY_CHAIN, str(data / "events.db")], reader=root_reader, expect=1)
    assert reference.stdout.startswith("FAILED: ") and f"hash_mismatch: " in reference.stdout
    assert f"@{position} " in reference.stdout


def with_wal_content(data: Path) -> int:
    """Leave events.db-wal holding committed pages, as a copy taken under a running server may: write in WAL mode
    without a checkpoint, keep the -wal as it was before the connection closed (closing checkpoints and removes it)."""
    wal = data / "events.db-wal"
    conn = sqlite3.connect(data / "events.db")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE scratch (x)")
    conn.commit()
    kept = wal.read_bytes()
    conn.close()
    wal.write_bytes(kept)
    return len(kept)


def test_a_read_only_copy_with_a_wal_holding_data_is_refused_in_one_line(source, workdir, root_reader):
    data = cold_copy(source, workdir / "copy")
    size = with_wal_content(data)
    assert size > 0
    make_read_only(data)

    for args in ([*CSM, "--data-dir", str(data), "audit", "verify", "-q"], [*VERIFY_CHAIN, str(data / "events.db")]):
        refused = run(args, reader=root_reader, expect=2)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and refused.stdout == "", refused.stderr
        assert f"{data / 'events.db-wal'} holds {size:,} bytes" in lines[0]
        assert "immutable mode" in lines[0] and "Copy the directory somewhere writable and verify the copy" in lines[0]


def test_a_read_only_directory_a_live_csm_process_holds_is_refused_in_one_line(source, workdir, root_reader):
    """The directory a server writes, seen by a reader who may not write it: immutable mode would read pages being
    written without SQLite's locks, so the verification is refused. The server's lock is taken as it takes it."""
    make_read_only(source)
    try:
        with shared(source):  # as `csm serve` holds it (data_lock.hold_while_running)
            for args, names in (([*CSM, "--data-dir", str(source), "audit", "verify", "-q"], f"(pid {os.getpid()})"),
                                ([*VERIFY_CHAIN, str(source / "events.db")], str(source / "run" / "data-dir.lock"))):
                refused = run(args, reader=root_reader, expect=2)
                lines = refused.stderr.strip().splitlines()
                assert len(lines) == 1 and "is in use by a running csm process" in lines[0], refused.stderr
                assert names in lines[0] and "Verify a `csm backup` copy" in lines[0]
        # released: the same directory verifies
        assert "result:           OK" in csm(source, "audit", "verify", "-q", reader=root_reader).stdout
    finally:
        for directory, _, _ in os.walk(source):
            os.chmod(directory, 0o700)


def test_verifying_a_backup_in_place_leaves_it_restorable(source, workdir):
    """A verification changes nothing: before, it switched the copy's events.db to WAL mode (two header bytes), and
    the backup then failed its own manifest on restore."""
    data = backup_copy(source, workdir / "copy")
    before = (data / "events.db").read_bytes()
    assert "result:           OK" in csm(data, "audit", "verify", "-q").stdout
    assert (data / "events.db").read_bytes() == before
    restored = csm(workdir / "restored", "restore", str(data))
    assert "OK" in restored.stdout
