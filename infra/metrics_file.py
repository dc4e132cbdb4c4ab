"""Metrics files of the CLI's batch commands, for node_exporter's textfile collector: one ``.prom`` file per
command, replaced atomically (written beside it, then renamed over it) so a scrape never reads half of one. The
temporary file has a random name and is created exclusively (O_EXCL: a link planted in a shared textfile directory
is never followed), mode 0644 whatever the umask (node_exporter reads it as another user).

A batch job has no process left to scrape once it ends; the file keeps its last run: when it ran, whether it
succeeded, how long it took and what it counted. The alerting rules (deploy/prometheus/csm-rules.yml) read them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest

# command -> what it counts (each one a gauge csm_<command>_<count>), beside the run's time, outcome and duration
COUNTS: dict[str, dict[str, str]] = {
    "audit_verify": {"events": "Events whose hash chain was verified",
                     "problems": "Problems found (broken links, bad checkpoints, a cut tail)",
                     "unsealed_events": "Events not yet sealed by a signed checkpoint"},
    "cluster_deploy": {"nodes": "Nodes the run was given", "nodes_failed": "Nodes that failed (or were skipped)"},
    "cluster_verify": {"nodes": "Nodes the run was given", "nodes_failed": "Nodes that did not verify"},
    "cluster_rollback": {"nodes": "Nodes the run was given",
                         "nodes_failed": "Nodes not rolled back (refused, failed or skipped), or not verified"},
}
RUN = {"last_run_timestamp_seconds": "When the last run ended (Unix time)",
       "success": "1 if the last run succeeded (exit status 0), else 0",
       "duration_seconds": "How long the last run took"}


def metric_names() -> set[str]:
    """Every metric a metrics file may hold (the monitoring tests check the rules name only these or the server's)."""
    return {f"csm_{command}_{name}" for command, counts in COUNTS.items() for name in (*RUN, *counts)}


def write_metrics_file(path: Path, command: str, *, success: bool, ended_at: float, duration: float,
                       counts: dict[str, int]) -> None:
    """Replace ``path`` with the run's metrics; ``counts`` names only what ``COUNTS[command]`` declares."""
    registry = CollectorRegistry(auto_describe=True)
    values = {"last_run_timestamp_seconds": ended_at, "success": int(success), "duration_seconds": duration}
    helps = {**RUN, **COUNTS[command]}
    for name, value in {**values, **counts}.items():
        Gauge(f"csm_{command}_{name}", helps[name], registry=registry).set(value)
    body = generate_latest(registry)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as out:
            os.fchmod(out.fileno(), 0o644)
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
