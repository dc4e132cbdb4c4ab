"""The monitoring pack (deploy/prometheus, deploy/grafana): promtool checks and unit-tests the rules; every alert
has a severity, a runbook section in docs/operations.md and a unit test; rules and dashboard name only metrics the
server exports; the dashboard's JSON has the structure Grafana loads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "csm-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "csm-dashboard.json"
RULE_TESTS = sorted((Path(__file__).parent / "monitoring").glob("*_test.yml"))
METRIC = re.compile(r"\bcsm_[a-z0-9_]+")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian package prometheus; make sysdeps installs it)")
    return found


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard_exprs(dashboard: dict) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its query variables."""
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [var["query"]["query"] for var in dashboard["templating"]["list"] if var["type"] == "query"]
    return exprs


def slug(heading: str) -> str:
    """A Markdown heading's anchor as GitHub makes it (lower case, punctuation dropped, spaces to hyphens)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def exported_metrics() -> set[str]:
    """Sample names the service can export: the kept metrics of infra.telemetry, the ones api/metrics.py computes,
    the projector's counters (infra/metrics_server.py) and those the CLI's batch commands write to their metrics
    files (infra/metrics_file.py)."""
    from prometheus_client import REGISTRY

    import api.metrics  # noqa: F401 - registers nothing, but names the computed gauges below
    import infra.telemetry  # noqa: F401 - registers the kept metrics
    from infra.metrics_file import metric_names
    from infra.metrics_server import PROJECTOR_COUNTERS

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names = {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes.get(family.type, [""])}
    computed = {name for source in ("api/metrics.py", "infra/telemetry.py")
                for name in re.findall(r'GaugeMetricFamily\("(csm_[a-z_]+)"', (ROOT / source).read_text())}
    return names | set(computed) | metric_names() | {name + "_total" for name, _, _ in PROJECTOR_COUNTERS}


def test_promtool_checks_the_rules():
    run = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(rules())} rules found" in run.stdout


@pytest.mark.parametrize("cases", RULE_TESTS, ids=lambda path: path.name)
def test_every_alert_fires_and_resolves_as_its_promtool_unit_tests_say(cases):
    run = subprocess.run([promtool(), "test", "rules", cases.name], capture_output=True, text=True, timeout=240,
                         cwd=cases.parent)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_severity_a_runbook_section_and_a_unit_test():
    anchors = {slug(line.lstrip("#")) for line in (ROOT / "docs" / "operations.md").read_text().splitlines()
               if line.startswith("#")}
    tested = {case.get("alertname") for path in RULE_TESTS for test in yaml.safe_load(path.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        runbook = alert["annotations"]["runbook_url"]
        assert runbook.startswith("docs/operations.md#") and runbook.split("#")[1] in anchors, (name, runbook)
        assert alert["annotations"]["summary"], name
        assert name in tested, f"{name} has no promtool case where it fires"


def test_rules_and_dashboard_name_only_metrics_the_server_exports():
    exported = exported_metrics()
    named = {m for rule in rules() for m in METRIC.findall(rule["expr"])}
    named |= {m for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())) for m in METRIC.findall(expr)}
    assert named - exported == set()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = {m for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())) for m in re.findall(r"\bcsm:[\w:]+", expr)}
    assert used <= recorded


def test_the_dashboard_is_grafana_json_with_ids_positions_targets_and_variables():
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 39 and board["uid"] and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("tenant", "ca"):
        assert variables[name]["query"]["query"].startswith("label_values(") and variables[name]["includeAll"]
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys() and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"].strip() and target["datasource"]["uid"] == "${DS_PROMETHEUS}"
                   for target in panel["targets"]), panel["title"]
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for topic in ("issued", "latency", "5xx", "expiring", "crl", "lag", "commits", "token requests", "denials", "acme",
                  "webhook"):
        assert topic in titles, topic


def test_compose_runs_prometheus_with_these_rules_and_grafana_with_this_dashboard():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]  # not started by a plain `up`
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert any(volume.startswith("./deploy/grafana/csm-dashboard.json:") for volume in grafana["volumes"])
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert all((RULES.parent / name).exists() for name in config["rule_files"])
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs == {"csm": ["api:8000"], "csm-projector": ["projector:9100"], "csm-worker": ["worker:9100"]}
    for name in ("projector", "worker"):  # each serves /metrics on the port its job scrapes, inside the network
        command = services[name]["command"]
        assert command[command.index("--metrics-port") + 1] == "9100" and "--metrics-host" in command
        assert "ports" not in services[name]
    assert any(port.endswith(":8000") for port in services["api"]["ports"])


def test_promtool_checks_the_compose_prometheus_config_and_its_rules():
    config = RULES.parent / "prometheus.yml"
    run = subprocess.run([promtool(), "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
