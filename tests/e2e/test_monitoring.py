"""The monitoring pack end to end: a real Prometheus (Debian's, on a random loopback port, its own data directory,
a 1 s scrape interval) scrapes a real `csm serve` with and without the scrape token and loads
deploy/prometheus/csm-rules.yml (`for:` shortened in a copy): the target is up, every rule evaluates without error,
every alert and recording expression and every PromQL expression of the Grafana dashboard runs, and the 7-day expiry
alert fires for a certificate issued for 5 days."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_cli_serve import CSM, csm, env, free_port, stopped, wait_until_live

httpx = pytest.importorskip("httpx")
yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "csm-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "csm-dashboard.json"
TENANT = "acme"
# What Grafana substitutes before it sends a query: its rate interval, and "All" of every variable (allValue ".*")
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$instance": ".*", "$tenant": ".*", "$ca": ".*"}


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("the prometheus server is not installed (Debian package prometheus; make sysdeps installs it)")
    return found


def eventually(probe, what: str, seconds: float = 60.0):
    """``probe()`` until it returns something true (returned), failing after ``seconds`` with ``what``."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@contextmanager
def serve(tmp_path: Path, token: str | None):
    """`csm serve` with two HTTP workers (metrics summed across processes), a 1 s revocation scheduler; a tenant,
    a root and an issuing CA, and one certificate issued for 5 days. Yields (base URL, issuing CA id)."""
    data = tmp_path / "data"
    extra = {"CSM_WORKERS": "2", "CSM_REVOCATION_INTERVAL": "1"}
    if token is not None:
        (tmp_path / "scrape-token").write_text(token + "\n")
        extra["CSM_METRICS_TOKEN_FILE"] = str(tmp_path / "scrape-token")
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port)], env={**env(), **extra},
                              cwd=tmp_path, stdout=log, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(server, base)
        headers = {"Authorization": "Bearer " + csm(data, "admin", "create-token", "--name", "mon").stdout.strip()}

        def post(path: str, body: dict) -> dict:
            response = httpx.post(base + path, json=body, headers=headers, timeout=60)
            assert response.status_code in (200, 201), response.text
            return response.json()

        post("/v1/tenants", {"tenant_id": TENANT, "name": "Acme"})
        root = post("/v1/cas", {"kind": "root", "tenant_id": TENANT, "name": "Root", "algorithm": "ecdsa-p384",
                                "subject": {"common_name": "Acme Root"}})
        issuing = post("/v1/cas", {"kind": "intermediate", "tenant_id": TENANT, "parent_id": root["ca_id"],
                                   "name": "Clients", "algorithm": "ecdsa-p384", "subject": {"common_name": "Clients"}})
        post("/v1/certificates", {"ca_id": issuing["ca_id"], "tenant_id": TENANT, "profile": "cassandra-client",
                                  "algorithm": "ecdsa-p256", "subject": {"common_name": "soon"}, "validity_days": 5})
        refused = httpx.post(f"{base}/v1/auth/token", data={"grant_type": "password", "username": "nobody",
                                                             "password": "wrong", "tenant_id": TENANT}, timeout=60)
        assert refused.status_code == 401, refused.text  # a csm_logins_total series for the dashboard's panels
        yield base, issuing["ca_id"]
    finally:
        stopped(server)
        log.close()


def shortened_rules(tmp_path: Path) -> Path:
    """A copy of the rules with every ``for:`` at 1 s, so that an alert fires within the test."""
    shortened = re.sub(r"^(\s+for:) \S+$", r"\1 1s", RULES.read_text(), flags=re.MULTILINE)
    path = tmp_path / "csm-rules.yml"
    path.write_text(shortened)
    return path


@contextmanager
def start_prometheus(tmp_path: Path, target: str, token: str | None):
    """Debian's Prometheus on a free loopback port scraping ``target`` every second; yields its base URL."""
    binary = prometheus_binary()
    job = {"job_name": "csm", "static_configs": [{"targets": [target]}]}
    if token is not None:
        (tmp_path / "prometheus-token").write_text(token)
        job["authorization"] = {"type": "Bearer", "credentials_file": str(tmp_path / "prometheus-token")}
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(shortened_rules(tmp_path))], "scrape_configs": [job]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, "Prometheus to start")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.close()


def api(base: str, path: str, **params) -> dict:
    response = httpx.get(f"{base}/api/v1/{path}", params=params, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (path, params, body)
    return body["data"]


def query(base: str, expr: str) -> list[dict]:
    """An instant query that must succeed (a PromQL error fails the test); its result vector."""
    data = api(base, "query", query=expr)
    return data["result"] if data["resultType"] == "vector" else [data["result"]]


def dashboard_queries() -> list[str]:
    """Every expression of the dashboard as Grafana would send it; label_values(m, l) as the series query it is."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.fullmatch(r"label_values\((.+), *\w+\)", var["query"]["query"]).group(1))
    for name, value in GRAFANA_VARIABLES.items():
        exprs = [expr.replace(name, value) for expr in exprs]
    assert not [expr for expr in exprs if "$" in expr], "a dashboard variable the test does not substitute"
    return exprs


@pytest.mark.slow
@pytest.mark.parametrize("token", [None, "t0ken-" + "5" * 40], ids=["no-scrape-token", "scrape-token"])
def test_prometheus_scrapes_csm_evaluates_every_rule_and_dashboard_query_and_the_expiry_alert_fires(tmp_path, token):
    with serve(tmp_path, token) as (base, ca_id):
        target = base.removeprefix("http://")
        with start_prometheus(tmp_path, target, token) as prometheus:
            [scraped] = eventually(lambda: [t for t in api(prometheus, "targets")["activeTargets"]
                                            if t["health"] == "up"], "the csm target to be up")
            assert scraped["labels"]["job"] == "csm" and scraped["scrapeUrl"] == f"{base}/metrics"

            def evaluated() -> list[dict]:
                rules = [r for g in api(prometheus, "rules")["groups"] for r in g["rules"]]
                return rules if all(r["lastEvaluation"] > "2000" for r in rules) else []

            rules = eventually(evaluated, "every rule to be evaluated")
            assert len(rules) == len([r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]])
            assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
            for rule in rules:  # every expression also runs on its own, as an instant query
                query(prometheus, rule["query"])

            def expiry_alert() -> list[dict]:
                return [a for a in api(prometheus, "alerts")["alerts"]
                        if a["labels"]["alertname"] == "CsmCertificatesExpiringIn7Days" and a["state"] == "firing"]

            [alert] = eventually(expiry_alert, "CsmCertificatesExpiringIn7Days to fire")
            assert alert["labels"]["severity"] == "critical" and float(alert["value"]) == 1
            named = {key: alert["labels"].get(key) for key in ("tenant", "ca")}
            assert named == ({"tenant": TENANT, "ca": ca_id} if token else {"tenant": None, "ca": None})
            firing = {a["labels"]["alertname"] for a in api(prometheus, "alerts")["alerts"] if a["state"] == "firing"}
            assert firing <= {"CsmCertificatesExpiringIn7Days", "CsmCertificatesExpiringIn30Days"}, firing

            crl = eventually(lambda: query(prometheus, "csm_crl_next_update_timestamp_seconds"), "the CRL gauge")
            assert all(float(series["value"][1]) > time.time() + 86400 for series in crl)  # a fresh CRL: 7 days
            assert {series["metric"].get("tenant") for series in crl} == ({TENANT} if token else {None})
            readiness = {s["metric"]["check"]: s["value"][1] for s in query(prometheus, "csm_readiness_check")}
            assert readiness == {"store_writable": "1", "kek_available": "1", "hsm_available": "1"}

            answered = {expr: query(prometheus, expr) for expr in dashboard_queries()}  # each must succeed
            with_data = {expr for expr, result in answered.items() if result}
            # what a fresh server has already: the target, readiness, expiring certificates, CRLs, projections, the
            # store's commits, issuance, a refused sign-in, and the variables' values (tenant and CA with the token)
            for metric in ("up{", "csm_readiness_check{", "csm_certificates_expiring{", "csm_crl_next_update",
                           "csm_projection_lag_events{", "csm_events_appended_total{", "csm_logins_total{",
                           'csm_commands_total{command="IssueCertificate",outcome="ok"'):
                assert any(metric in expr for expr in with_data), (metric, sorted(set(answered) - with_data))
