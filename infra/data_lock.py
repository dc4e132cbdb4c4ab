"""Who is using a data directory: the lock every serving process holds while it runs, and the one restore needs.

``csm serve`` (its supervisor, primary and HTTP workers, or its one process), ``csm projector``,
``csm worker`` and ``csm backup`` each hold a shared ``flock`` on ``<data>/run/data-dir.lock``
for their lifetime, and every other CLI command that opens the data directory for as long as it
runs (``shared``); ``csm restore`` takes it exclusively, without waiting, before it moves a
file. An flock belongs to an open file, so the kernel drops it when its process ends, however
it ends: a crashed server leaves no stale lock behind, and a live one cannot be missed. A
multi-worker server of a version before this lock is still seen by its primary's socket.

Taking the lock means creating and opening the lock file for writing. Where this process cannot
(a read-only directory, another user's files), every command is refused with DataDirUnwritable,
which names the lock, the directory and what to do. Except ``csm audit verify`` on a directory this
process cannot write at all (``writable``: a backup on read-only media): nothing can restore into it
either, so it takes no shared lock; it reads the store with SQLite's immutable mode instead, which is
only correct while nothing writes the file, so ``unused`` first makes sure that no csm process holds
the lock (and holds it exclusively, through a read-only descriptor, while it reads).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

RUN_DIR = "run"
LOCK_FILE = "data-dir.lock"
PRIMARY_SOCKET = "primary.sock"
_held: list[int] = []  # this process's shared locks: never closed, the kernel releases them at exit


class DataDirUnavailable(Exception):
    """The data directory's lock cannot be taken; the message says why and what to do."""


class DataDirBusy(DataDirUnavailable):
    """The lock is held the other way: a restore is running (for a server), or a server runs (for a restore)."""


class DataDirUnwritable(DataDirUnavailable):
    """The lock file cannot be created or opened for writing: the directory is read-only to this process."""


def lock_path(data_dir: Path) -> Path:
    return Path(data_dir) / RUN_DIR / LOCK_FILE


def _open(data_dir: Path) -> int:
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        (Path(data_dir) / RUN_DIR).mkdir(exist_ok=True, mode=0o700)
        return os.open(lock_path(data_dir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # read-only (EACCES, EROFS), or the path is not a file: the OS text alone names neither
        raise DataDirUnwritable(
            f"cannot write the data-directory lock {lock_path(data_dir)} ({exc.strerror or exc}): csm commands "
            f"hold it while they use {data_dir}. Run csm as a user who may write there, or make it writable (csm "
            "audit verify needs neither where it cannot write the directory itself)") from None


def _try_lock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _share(data_dir: Path) -> int:
    """An open file holding a shared lock on ``data_dir``; DataDirBusy while a restore replaces its files."""
    fd = _open(data_dir)
    if not _try_lock(fd, fcntl.LOCK_SH):
        os.close(fd)
        raise DataDirBusy(f"a restore into {data_dir} is running (or a read-only csm audit verify of it); start "
                          "again once it has finished")
    return fd


def hold_while_running(data_dir: Path) -> None:
    """Hold a shared lock on ``data_dir`` until this process ends; DataDirBusy while a restore replaces its files."""
    _held.append(_share(data_dir))


@contextlib.contextmanager
def shared(data_dir: Path) -> Iterator[None]:
    """Hold a shared lock on ``data_dir`` for a block (a one-off CLI command); DataDirBusy at once during a restore,
    DataDirUnwritable where the lock file cannot be written."""
    fd = _share(data_dir)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir`` alone (restore); DataDirBusy at once if any process named above is using it."""
    fd = _open(data_dir)
    try:
        if not _try_lock(fd, fcntl.LOCK_EX) or primary_answers(data_dir):
            pids = holders(lock_path(data_dir))
            held_by = f" (pid {', '.join(map(str, pids))})" if pids else ""
            raise DataDirBusy(f"{data_dir} is in use by a running csm process{held_by}: csm serve, csm projector, "
                              "csm worker, csm backup and every other csm command using it hold it while they run. "
                              "Stop them first")
        yield
    finally:
        os.close(fd)  # releases the lock


def writable(data_dir: Path) -> bool:
    """Whether this process may create files in ``data_dir``, by its effective ids and capabilities (root without
    CAP_DAC_OVERRIDE may not write another's 0555 directory; nobody may write on a read-only mount)."""
    return os.access(data_dir, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


@contextlib.contextmanager
def unused(data_dir: Path) -> Iterator[None]:
    """Make sure no csm process uses ``data_dir`` (which this process cannot write), and keep it so for a block.

    DataDirBusy at once if one holds the lock or a primary answers. Where the lock file can be read, it is held
    exclusively for the block (flock needs no write access), so no csm process starts on it meanwhile. Where it is
    missing (a ``csm backup`` copy has none), no csm process has it open: each creates it first. Where it exists
    but cannot be opened, /proc/locks says who holds it.
    """
    path = lock_path(data_dir)
    try:
        fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # missing (no holder), or not readable by this process
        fd = None
    try:
        in_use = not _locked_alone(fd, path) if fd is not None else bool(holders(path))
        if in_use or primary_answers(data_dir):
            pids = holders(path)
            held_by = f" (pid {', '.join(map(str, pids))})" if pids else ""
            raise DataDirBusy(f"{data_dir} is in use by a running csm process{held_by}, and this process cannot "
                              "write it: reading it read-only (SQLite's immutable mode) is only correct while "
                              "nothing writes it. Verify a `csm backup` copy, or run as a user who may write there")
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _locked_alone(fd: int, path: Path) -> bool:
    """Take the exclusive lock on ``fd``; where flock is not supported there (some network file systems), whether
    /proc/locks names no holder."""
    try:
        return _try_lock(fd, fcntl.LOCK_EX)
    except OSError:
        return not holders(path)


def primary_answers(data_dir: Path) -> bool:
    """Whether a multi-worker server's primary answers on its socket (a stale socket file refuses the connection)."""
    path = Path(data_dir) / RUN_DIR / PRIMARY_SOCKET
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def holders(path: Path) -> list[int]:
    """The processes holding an flock on ``path``, from Linux's /proc/locks; [] where it cannot be read."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    for line in lines:
        fields = line.split()
        if "FLOCK" in fields and device in fields:
            with contextlib.suppress(ValueError, IndexError):
                pids.add(int(fields[fields.index(device) - 1]))
    return sorted(pids - {os.getpid()})
