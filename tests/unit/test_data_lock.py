"""infra/data_lock.py: a process's hold on a data directory lasts exactly as long as the process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from infra.data_lock import DataDirBusy, exclusive, hold_while_running, lock_path, primary_answers

HOLDER = "import sys, time; from infra.data_lock import hold_while_running; hold_while_running(sys.argv[1]); " \
         "print('held', flush=True); time.sleep(120)"


def test_a_holder_refuses_a_restore_until_it_dies_even_by_sigkill(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusy, match=f"pid {holder.pid}"), exclusive(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    with exclusive(tmp_path):  # no stale lock after a crash
        assert lock_path(tmp_path).exists()


def test_holders_share_and_a_restore_excludes_them(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        hold_while_running(tmp_path / "other")  # another directory is not affected
        with exclusive(tmp_path / "third"):
            pass
    finally:
        holder.kill()
        holder.wait(30)
    with exclusive(tmp_path):
        assert subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path)], capture_output=True, text=True,
                              timeout=60).returncode == 1  # a server cannot start while a restore runs


def test_a_primary_socket_counts_only_while_it_answers(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert not primary_answers(tmp_path)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(run / "primary.sock"))
    listener.listen(1)
    try:
        assert primary_answers(tmp_path)
        with pytest.raises(DataDirBusy), exclusive(tmp_path):
            pass
    finally:
        listener.close()
    time.sleep(0.01)
    assert not primary_answers(tmp_path)  # the file is left behind, stale: a connection is refused
    with exclusive(tmp_path):
        pass
