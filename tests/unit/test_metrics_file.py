"""infra/metrics_file.py in a textfile directory others can write to: the file is replaced whole, and nothing
planted beside it (a symbolic link at a predictable temporary name) makes it write anywhere else."""

from __future__ import annotations

import os
import stat
import threading

from infra.metrics_file import write_metrics_file


def _write(path) -> None:
    write_metrics_file(path, "audit_verify", success=True, ended_at=1.0, duration=2.0,
                       counts={"events": 3, "problems": 0, "unsealed_events": 1})


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path):
    textfiles, victim = tmp_path / "textfile", tmp_path / "victim"
    textfiles.mkdir()
    victim.write_text("precious\n")
    path = textfiles / "csm_audit_verify.prom"
    # the name prometheus_client's write_to_textfile used: PATH.PID.THREAD
    os.symlink(victim, f"{path}.{os.getpid()}.{threading.current_thread().ident}")
    _write(path)
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and "csm_audit_verify_events 3.0" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter, another user, reads it


def test_the_file_is_replaced_and_nothing_is_left_beside_it(tmp_path):
    path = tmp_path / "csm_audit_verify.prom"
    path.write_text("old\n")
    _write(path)
    assert "csm_audit_verify_success 1.0" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["csm_audit_verify.prom"]
