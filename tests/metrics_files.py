"""Reading what the processes expose without an API: the .prom files the CLI's --metrics-file writes (node_exporter's
textfile format), with prometheus_client's own parser and, where it is installed, `promtool check metrics`
(Prometheus's linter for exposition text); and scrapes of `csm projector` / `csm worker` --metrics-port."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def lint(text: str) -> None:
    """`promtool check metrics` finds nothing wrong with the exposition ``text`` (skipped where promtool is missing)."""
    promtool = shutil.which("promtool")
    if promtool is not None:
        run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels) -> value, of an exposition text."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def read_metrics_file(path: Path) -> dict[str, float]:
    """Sample name -> value; the file is checked by promtool first when it is on the PATH."""
    text = path.read_text()
    lint(text)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")], "a temporary file was left"
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def assert_run(values: dict[str, float], command: str, *, success: bool, **counts: int) -> None:
    """A run of ``command`` that ended just now, with that outcome and those counts."""
    prefix = f"csm_{command}_"
    assert values[prefix + "success"] == int(success), values
    assert time.time() - 600 < values[prefix + "last_run_timestamp_seconds"] <= time.time(), values
    assert values[prefix + "duration_seconds"] >= 0
    for name, value in counts.items():
        assert values[prefix + name] == value, (name, values)
