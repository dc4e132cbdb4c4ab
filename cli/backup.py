"""`csm backup` and `csm restore`: a consistent online copy of a data directory, with a hashed manifest.

The databases are copied with SQLite's online backup API (one consistent snapshot each,
while the server keeps writing). The order matters: the read models first, then the webhook
delivery log (``webhooks.db``), then the audit witness, then the event log, so that none of
them is ever ahead of the log it describes. A witness ahead of the log would read as a
truncated tail; a dispatcher checkpoint ahead of it would skip the notifications of events
written after the restore up to that position (one behind it only dispatches again, and the
delivery log ignores a delivery it already holds). The private-key vault (``keys.db``)
follows the log, because a key is stored before the event that names it: copied later, it
holds every key the copied log refers to (and perhaps a few orphans). The artifact store
(``artifacts.db``: published CRLs) follows the log for the same reason: a CRL is stored
before the ``ca.crl_published`` event that names it. The key files come last: a vault row is
written only under a KEK already on disk, and KEK files are never replaced. Every file is
written 0600, every directory 0700, and ``manifest.json`` holds their SHA-256.

The ACME server's two working files are left out, on purpose. ``acme-nonces.db`` holds the nonces handed out in
the last hour, each deleted when used: restoring it would bring back nonces used since the backup (a replay the
nonce exists to stop), and losing it costs a client one ``badNonce`` answer, after which it uses the fresh nonce
that answer carries (RFC 8555 6.5). ``acme-validations.db`` holds results a validation job wrote that the
validator has not appended yet (seconds' worth): the log copied here still has each such challenge started and
unanswered, so after a restore the ACME read model lists it and the validator sends it to a job again; it is
validated anew (and fails if the client stopped serving its answer: the client orders again). A restore with
``--force`` leaves the directory's own two files in place: its nonces were never used, and a result there is
recorded only for a challenge the restored log has started and still awaiting that same result. With Redis
(``CSM_REDIS_URL``; ``CSM_JOBS=redis`` for the results) neither file is used: both live in Redis, outside the backup
for the same reasons.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import click

from cli.audit import print_report, verify_data_dir
from cli.common import require_initialised
from cli.errors import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, CliError
from domain.verification import VerifyReport
from infra.audit.keys import PUBLIC_FILE
from infra.config import Settings
from infra.data_lock import DataDirUnavailable, exclusive
from infra.private_files import sync_directory

MANIFEST = "manifest.json"
FORMAT = "csm-backup"
FORMAT_VERSION = 1
REQUIRED = ("events.db", f"keys/{PUBLIC_FILE}")
KEY_VAULT_DB = "keys.db"  # optional: data directories from before the key vault have none
ARTIFACTS_DB = "artifacts.db"  # optional: data directories from before CRL publication have none
WEBHOOKS_DB = "webhooks.db"  # optional: the delivery log and dispatcher checkpoint, absent from older backups
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _copy_private(src: Path, dst: Path) -> str:
    """Copy ``src`` to a new 0600 file ``dst`` (fsynced); return the SHA-256 of what was written."""
    _private_dir(dst.parent)
    digest = hashlib.sha256()
    fd = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as out, src.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _sqlite_backup(src: Path, dst: Path) -> None:
    """One consistent snapshot of a live SQLite database into a new 0600 single-file database."""
    os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    source = sqlite3.connect(src, timeout=30)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)  # all pages in one step: a single read transaction, so one snapshot
        target.execute("PRAGMA journal_mode = DELETE")  # a self-contained file: no -wal beside it
        result = target.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise CliError(f"the copy of {src.name} fails SQLite's check: {result}")
    finally:
        target.close()
        source.close()


def _key_files(keys_dir: Path) -> list[Path]:
    # ".<name>.<random>.tmp" is a key file still being created (published by link): not ours to copy
    return sorted(path for path in keys_dir.rglob("*")
                  if path.is_file() and not (path.name.startswith(".") and path.name.endswith(".tmp")))


@click.command()
@click.argument("dest_dir", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def backup(settings: Settings, dest_dir: Path) -> None:
    """Copy the data directory into DEST_DIR (new or empty) while the service keeps running."""
    require_initialised(settings)
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise CliError(f"{dest_dir} is not empty; back up into a new directory", EXIT_USAGE)
    if dest_dir.resolve() == settings.data_dir or settings.data_dir in dest_dir.resolve().parents:
        raise CliError("the backup directory must be outside the data directory", EXIT_USAGE)
    _private_dir(dest_dir)
    started = time.perf_counter()
    written: list[str] = []
    if settings.views_db.exists():  # 1. read models: never ahead of the log copied after them
        _sqlite_backup(settings.views_db, dest_dir / "views.db")
        written.append("views.db")
    if settings.webhooks_db.exists():  # 1b. the webhook dispatcher's checkpoint: never ahead of the log either
        _sqlite_backup(settings.webhooks_db, dest_dir / WEBHOOKS_DB)
        written.append(WEBHOOKS_DB)
    if settings.witness_file.exists():  # 2. the witness: never ahead of the log copied after it
        _copy_private(settings.witness_file, dest_dir / settings.witness_file.name)
        written.append(settings.witness_file.name)
    _sqlite_backup(settings.events_db, dest_dir / "events.db")  # 3. the log
    written.append("events.db")
    if (settings.data_dir / KEY_VAULT_DB).exists():  # 4. the private-key vault: never behind the log
        _sqlite_backup(settings.data_dir / KEY_VAULT_DB, dest_dir / KEY_VAULT_DB)
        written.append(KEY_VAULT_DB)
    if (settings.data_dir / ARTIFACTS_DB).exists():  # 4b. published CRLs: never behind the log either
        _sqlite_backup(settings.data_dir / ARTIFACTS_DB, dest_dir / ARTIFACTS_DB)
        written.append(ARTIFACTS_DB)
    for path in _key_files(settings.keys_dir):  # 5. audit keys and KEKs (master.key, the hybrid KEM pair)
        relative = path.relative_to(settings.data_dir).as_posix()
        _copy_private(path, dest_dir / relative)
        written.append(relative)
    conn = sqlite3.connect(dest_dir / "events.db")
    try:
        has_log = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()
        # With CSM_STORE=cassandra the log is in the cluster (nodetool snapshot, docs/operations.md §7) and
        # events.db holds only the credential verifiers.
        head, count = (conn.execute("SELECT coalesce(max(position), 0), count(*) FROM events").fetchone()
                       if has_log else (0, 0))
    finally:
        conn.close()
    files = {name: {"sha256": sha256_file(dest_dir / name), "bytes": (dest_dir / name).stat().st_size}
             for name in written}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "source": str(settings.data_dir), "head_position": head, "events": count, "files": files}
    fd = os.open(dest_dir / MANIFEST, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    for directory in {dest_dir, *((dest_dir / name).parent for name in written)}:
        sync_directory(directory)
    click.echo(f"backed up {count:,} events (head position {head:,}) and {len(written)} files to {dest_dir} "
               f"in {time.perf_counter() - started:.2f} s")
    if settings.store == "cassandra":
        click.echo("the event log is in Cassandra: snapshot it with nodetool (docs/operations.md, section 7)")


# restore ---------------------------------------------------------------------------------

def _load_manifest(src_dir: Path) -> dict:
    path = src_dir / MANIFEST
    if not path.is_file():
        raise CliError(f"{src_dir} is not a csm backup: it has no {MANIFEST}", EXIT_USAGE)
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}", EXIT_PROBLEM) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CliError(f"{path} is not a csm backup manifest", EXIT_PROBLEM)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CliError(f"{path} has format version {manifest.get('format_version')}; this csm reads "
                       f"{FORMAT_VERSION}", EXIT_PROBLEM)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CliError(f"{path} lists no files", EXIT_PROBLEM)
    for name, entry in files.items():
        parts = PurePosixPath(name).parts
        if (not parts or PurePosixPath(name).is_absolute() or ".." in parts or name == MANIFEST
                or not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)):
            raise CliError(f"{path} has an invalid entry {name!r}", EXIT_PROBLEM)
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise CliError(f"{path} lacks {', '.join(missing)}: not a complete backup", EXIT_PROBLEM)
    return manifest


def _check_manifest(src_dir: Path, files: dict) -> None:
    problems = []
    for name, entry in sorted(files.items()):
        path = src_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 does not match the manifest")
    if problems:
        raise CliError(f"the backup in {src_dir} fails its manifest: {'; '.join(problems)}", EXIT_PROBLEM)


def _events_in(events_db: Path) -> int:
    if not events_db.exists():
        return 0
    conn = sqlite3.connect(f"file:{events_db}?mode=ro", uri=True, timeout=30)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone():
            return 0
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def _lost_since_backup(aside_db: Path, restored_db: Path) -> list[tuple[str, dict]]:
    """The events the moved-aside log holds after the restored log's head, as (type, payload), when it continues
    the same log (it holds the restored head's hash at that position); [] when it does not, or cannot be read."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{restored_db}?mode=ro", uri=True)) as restored, \
                contextlib.closing(sqlite3.connect(f"file:{aside_db}?mode=ro", uri=True)) as before:
            head = restored.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
            same = head and before.execute("SELECT hash FROM events WHERE position = ?", (head[0],)).fetchone()
            if not same or same[0] != head[1]:
                return []
            rows = before.execute("SELECT type, body FROM events WHERE position > ? ORDER BY position", (head[0],))
            return [(kind, json.loads(body).get("payload") or {}) for kind, body in rows]
    except (sqlite3.Error, ValueError):
        return []


def _report_lost(lost: list[tuple[str, dict]], aside: Path) -> None:
    """Say what the restore left behind in the moved-aside log: above all revocations, which relying parties must
    keep seeing (they are listed in ``lost-revocations.jsonl`` there), and the CRLs published since."""
    revoked = [payload for kind, payload in lost if kind == "ca.certificate_revoked"]
    crl_numbers = [payload.get("crl_number", 0) for kind, payload in lost if kind == "ca.crl_published"]
    click.echo(f"warning: the log moved aside holds {len(lost):,} event(s) written after this backup, which the "
               f"restored data directory does not have ({len(revoked)} revocation(s), "
               f"{sum(kind == 'certificate.issued' for kind, _ in lost)} issuance(s))")
    if revoked:
        listing = aside / "lost-revocations.jsonl"
        listing.write_text("".join(json.dumps(payload, sort_keys=True) + "\n" for payload in revoked))
        click.echo(f"  revoke these again (they are in {listing}); certificates issued after the backup are unknown "
                   "here, and OCSP answers them unknown:")
        for payload in revoked[:20]:
            what = (f"csm cert revoke {payload['certificate_id']} --reason {payload.get('reason', 'unspecified')}"
                    if payload.get("certificate_id") else f"csm ca revoke {payload.get('subject_ca_id')} --tenant T")
            click.echo(f"    {what}")
        if len(revoked) > 20:
            click.echo(f"    … {len(revoked) - 20} more in {listing.name}")
    if crl_numbers:
        click.echo(f"  CRLs up to number {max(crl_numbers)} were published after the backup; the next CRLs are "
                   "numbered above them (CRL numbers follow the clock), and list only the revocations above until "
                   "they are revoked again")


def _replaced_names(settings: Settings) -> list[str]:
    names = []
    for db in ("events.db", "views.db", KEY_VAULT_DB, ARTIFACTS_DB, WEBHOOKS_DB):
        names += [db, f"{db}-wal", f"{db}-shm", f"{db}-journal"]
    return [*names, settings.witness_file.name, settings.keys_dir.name]


def _restore_into(settings: Settings, src_dir: Path, manifest: dict, force: bool) -> VerifyReport:
    """Copy the backup into a staging directory, move the current files aside, put the copies in place, verify."""
    files: dict = manifest["files"]
    reason = ""
    try:
        existing = _events_in(settings.events_db)
    except sqlite3.Error as exc:
        existing, reason = -1, str(exc)
    if existing and not force:
        held = f"{existing:,} events" if existing > 0 else f"an unreadable events.db ({reason})"
        raise CliError(f"{settings.data_dir} already holds {held}; restoring would replace them. Use --force "
                       "(the current files are moved aside, not deleted)", EXIT_USAGE)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    staging = settings.data_dir / f".restore-{stamp}"
    _private_dir(staging)
    try:
        for name, entry in sorted(files.items()):  # copy, and check what was copied, before touching anything
            if _copy_private(src_dir / name, staging / name) != entry["sha256"]:
                raise CliError(f"{name} changed while it was being copied from {src_dir}", EXIT_PROBLEM)
        aside = settings.data_dir / f".pre-restore-{stamp}"
        moved = []
        for name in _replaced_names(settings):
            if (settings.data_dir / name).exists():
                _private_dir(aside)
                os.replace(settings.data_dir / name, aside / name)
                moved.append(name)
        for entry in sorted(staging.iterdir()):
            os.replace(entry, settings.data_dir / entry.name)
        sync_directory(settings.data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    click.echo(f"restored {len(files)} files ({manifest.get('events', '?')} events, head position "
               f"{manifest.get('head_position', '?')}, backed up {manifest.get('created_at', '?')}) "
               f"into {settings.data_dir}")
    if moved:
        click.echo(f"the previous files were moved to {aside}")
        if lost := _lost_since_backup(aside / settings.events_db.name, settings.events_db):
            _report_lost(lost, aside)
    if WEBHOOKS_DB not in files:
        click.echo(f"note: this backup has no {WEBHOOKS_DB} (made by an older csm): the webhook dispatcher starts "
                   "again from the beginning of the log and sends past notifications again (receivers "
                   "deduplicate on the event id)")
    return verify_data_dir(settings)


@click.command()
@click.argument("src_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a data directory that already holds events "
              "(its files are moved aside into .pre-restore-<time>/, not deleted).")
@click.pass_obj
def restore(settings: Settings, src_dir: Path, force: bool) -> None:
    """Restore a backup from SRC_DIR into the data directory, then verify the audit trail.

    Stop the server first: restore refuses while csm serve, csm projector, csm worker, csm backup or
    any other csm command runs on the data directory. Exit status 0: restored and verified; 1: the
    backup fails its manifest or the restored trail does not verify; 2: refused (the data directory
    holds events and --force was not given, or a running process uses it) or unreadable.
    """
    manifest = _load_manifest(src_dir)
    files: dict = manifest["files"]
    _check_manifest(src_dir, files)
    _private_dir(settings.data_dir)
    try:
        with exclusive(settings.data_dir):  # refused while a server, projector, job worker or any csm command uses it
            report = _restore_into(settings, src_dir, manifest, force)
    except DataDirUnavailable as exc:
        raise CliError(f"{exc}; nothing was restored", EXIT_USAGE) from None
    print_report(report)
    raise click.exceptions.Exit(EXIT_OK if report.ok else EXIT_PROBLEM)
