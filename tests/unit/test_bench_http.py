"""The HTTP benchmark's report (bench/report.py) from a synthetic result: structure and verdicts, never timings."""

from __future__ import annotations


import pytest


@pytest.fixture(scope="module")
def report(bench):
    assert bench.wrkbench.PLAN[0]["args"] == ["http"]
    return bench.report


def wrk_run(rps: float, p95: float, connections: int, ok: int) -> dict:
    return {"ok": ok, "requests": ok, "requests_per_second": rps, "connections": connections, "threads": 2,
            "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}, "wrapped": False,
            "latency_ms": {"p50": p95 / 2, "p90": p95 * 0.9, "p95": p95, "p99": p95 * 1.2, "max": p95 * 2,
                           "mean": p95 / 2},
            "load_before": 1.5, "server_cpu_seconds": ok * 0.005, "command": "wrk -t 2 …"}


def synthetic(events: int) -> dict:
    machine = {"date": "2026-11-23 14:00 UTC", "git_commit": "abc1234", "load_average": "1 / 1 / 1", "nproc": 2,
               "cpu_model": "test CPU"}
    issuance = [{"connections": c, "csm": wrk_run(200, 300, c, 1000), "cfssl": wrk_run(800, 100, c, 4000),
                 "cfssl_db": wrk_run(100, 600, c, 500), "ratio": 0.25, "ratio_db": 2.0} for c in (32, 256)]
    reads = [{**wrk_run(900, 1200.0, 1000, 9000), "label": "GET /v1/certificates/{id}"}]
    http = {"command": "python -m bench", "machine": machine, "duration_s": 20, "csrs": 40000, "nofile": 20000,
            "issuance": issuance, "reads": reads, "verify_ok": True, "verify": {"ok": True, "events": 3000},
            "ok_201": 2001, "certificate_issued_events": events, "certificates_listed": events,
            "csm_process": {"max_rss_kib": 120 * 1024}, "cfssl_process": {"max_rss_kib": 30 * 1024},
            "cfssl_db_certificates": 1001, "cfssl_db_ok": 1001}
    return {"events": 1000, "command": "python -m bench", "machine": machine, "phases": [], "micro": [],
            "issuance": None, "http": http}


def test_http_section_reports_ratio_reads_and_the_log_check(report):
    text = report.render(synthetic(events=2001 + 100), baseline=None)
    assert "## Headline figures" in text
    assert "ratio ours/cfssl **0.25** (goal ≥ 1.0: **not met**)" in text
    assert "| 32 | csm serve | 1,000 | **200** |" in text and "| 256 | cfssl serve | 4,000 | **800** |" in text
    assert "p95 **1,200.0 ms**" in text and "requirement p95 < 100 ms: **not met**" in text
    assert ": consistent." in text and "cfssl's certificate database held 1,001 certificates" in text
    assert "| 32 | cfssl serve -db-config (SQLite certdb) | 500 | **100** |" in text and "the ratio is **2.00**" in text
    assert "csm serve 120 MiB; cfssl serve 30 MiB" in text


def test_more_events_than_answers_plus_connections_is_flagged(report):
    text = report.render(synthetic(events=2001 + 32 + 256 + 1), baseline=None)
    assert "**inconsistent**" in text


def test_the_tenant_with_quotas_is_shown_beside_the_one_without_and_counts_in_the_log_check(report):
    result = synthetic(events=2001 + 500 + 100)
    http = result["http"]
    http["quota_issuance"] = {**wrk_run(150, 400, 32, 500), "quotas": {"max_certificates": 1_000_000}}
    http["ok_201"] += 500
    text = report.render(result, baseline=None)
    assert "### A tenant with quotas" in text and "`max_certificates` 1,000,000" in text
    assert "| without quotas (above) | 1,000 | **200** |" in text and "| with quotas | 500 | **150** |" in text
    assert ": consistent." in text and "- issuance for the tenant with quotas: `wrk -t 2 …`" in text
    http["ok_201"] -= 500  # its answers are not in the count: the log holds 500 more than answers plus bound
    assert "**inconsistent**" in report.render(result, baseline=None)
