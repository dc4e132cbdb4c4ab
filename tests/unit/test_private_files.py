"""infra/private_files.write_file: the mode asked, also over an existing file; never half-written; no symlink followed."""

from __future__ import annotations

import os
import stat

import pytest

from infra.private_files import write_file


def mode_of(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_written_over_an_existing_world_readable_file_is_0600(tmp_path):
    path = tmp_path / "client.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_file(path, b"-----BEGIN PRIVATE KEY-----\n")
    assert path.read_bytes() == b"-----BEGIN PRIVATE KEY-----\n" and mode_of(path) == 0o600
    write_file(path, b"certificate", mode=0o644)  # and back, for what holds no secret
    assert path.read_bytes() == b"certificate" and mode_of(path) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client.key"]  # no temporary file left behind


def test_the_mode_is_exact_whatever_the_umask(tmp_path):
    previous = os.umask(0o277)  # would leave a 0600 file unwritable: 0400
    try:
        write_file(tmp_path / "a", b"x")
        write_file(tmp_path / "b", b"x", mode=0o644)
    finally:
        os.umask(previous)
    assert (mode_of(tmp_path / "a"), mode_of(tmp_path / "b")) == (0o600, 0o644)


def test_create_only_refuses_an_existing_file_and_leaves_it_alone(tmp_path):
    path = tmp_path / "root.key"
    write_file(path, b"first", replace=False)
    with pytest.raises(FileExistsError):
        write_file(path, b"second", replace=False)
    assert path.read_bytes() == b"first" and mode_of(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root.key"]


def test_a_symlink_is_refused_not_followed_or_replaced(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    target.chmod(0o644)
    link = tmp_path / "out.pem"
    link.symlink_to(target)
    with pytest.raises(OSError, match="not a regular file"):
        write_file(link, b"secret")
    assert link.is_symlink() and target.read_bytes() == b"untouched" and mode_of(target) == 0o644
