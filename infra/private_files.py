"""Writing files that may hold secrets (keys, keystores, passwords): exactly the mode asked, never half-written."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import secrets
from pathlib import Path


def write_file(path: Path, data: bytes | bytearray, *, mode: int = 0o600, replace: bool = True) -> None:
    """Write ``data`` to ``path`` with exactly ``mode`` (0600 by default: owner only), whatever was there before.

    The bytes go to a new temporary file beside ``path`` (O_EXCL: nothing already there is reused or followed;
    ``fchmod``: neither the umask nor an old file's mode decides), fsynced, then put in place: ``os.replace``
    when ``replace`` (an existing file, whatever its mode, or a symlink, is replaced, not written through), else
    ``os.link``, which raises FileExistsError if ``path`` exists. A reader sees the old file or the whole new one.
    Opening an existing file with O_TRUNC keeps that file's mode: a private key written so into a 0644 file
    stays readable by everyone.

    Something at ``path`` that is not a regular file (a symlink such as /dev/stdout, a device, a FIFO) is refused
    (OSError EINVAL) rather than replaced.
    """
    with contextlib.suppress(FileNotFoundError):
        if replace and not stat.S_ISREG(os.lstat(path).st_mode):
            raise OSError(errno.EINVAL, "not a regular file: refusing to replace it", str(path))
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(os.dup(fd), "wb", buffering=0) as handle:
            handle.write(data)
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
        sync_directory(path.parent)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def sync_directory(directory: Path) -> None:
    """Names created or replaced in ``directory`` survive a crash too (best effort: not every file system can
    open a directory)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
