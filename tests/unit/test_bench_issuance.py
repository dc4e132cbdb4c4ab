"""Smoke test of the issuance benchmark phases (bench/issuance.py) with tiny counts: structure, never timings."""

from __future__ import annotations

import json


def run_phase(bench, capsys, argv: list[str]) -> dict:
    bench.issuance.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_server_side_phase_issues_and_counts(bench, capsys, tmp_path):
    result = run_phase(bench, capsys, ["issue-server", "--algorithm", "ecdsa-p256", "--sequential", "2",
                                       "--concurrent", "3", "--concurrency", "2", "--dir", str(tmp_path / "d")])
    assert result["phase"] == "issue-server"
    assert (result["algorithm"], result["family"], result["ca_algorithm"]) == ("ecdsa-p256", "ecdsa", "ecdsa-p384")
    assert result["sequential"]["n"] == 2 and result["sequential"]["concurrency"] == 1
    assert result["concurrent"]["n"] == 3 and result["concurrent"]["concurrency"] == 2
    assert result["issued"] == 1 + 2 + 3  # one warm-up
    assert result["certificate_issued_events"] == 6
    assert result["vault_keys"] == 6 + 2  # every server-side key, and the root's and intermediate's
    assert result["verified"] is True
    for key in ("per_minute", "per_second", "cpu_ms_per_issuance", "latency_ms_p50", "latency_ms_p95",
                "latency_ms_p99", "latency_ms_max"):
        assert key in result["sequential"] and key in result["concurrent"]


def test_families_are_signed_by_their_own_hierarchy(bench, capsys, tmp_path):
    result = run_phase(bench, capsys, ["issue-server", "--algorithm", "hybrid-p256-ml-dsa-44", "--sequential", "1",
                                       "--concurrent", "1", "--dir", str(tmp_path / "d")])
    assert result["ca_algorithm"] == "hybrid-p384-ml-dsa-65"
    assert result["certificate_issued_events"] == 3 and result["verified"] is True


def test_csr_phase_issues_distinct_csrs(bench, capsys, tmp_path):
    result = run_phase(bench, capsys, ["issue-csr", "--requests", "4", "--concurrency", "3",
                                       "--dir", str(tmp_path / "d")])
    assert result["phase"] == "issue-csr" and result["concurrency"] == 3
    assert result["n"] == 4 and result["issued"] == 5
    assert result["certificate_issued_events"] == 5
    assert result["vault_keys"] == 2  # the CAs' keys only: a CSR's key stays with its requester
    assert len(set(bench.issuance.make_csrs(0, 3))) == 3


def test_plan_covers_every_family_and_the_csr_concurrencies(bench):
    steps = bench.issuance.plan()
    algorithms = [s["args"][2] for s in steps if s["args"][0] == "issue-server"]
    assert algorithms[0] == "rsa-4096" and len(algorithms) == 10
    assert [s["args"][-1] for s in steps if s["args"][0] == "issue-csr"] == ["1", "32", "256"]
    assert [s["args"][:3] for s in steps if s["args"][0] == "revoke"] == [["revoke", "--requests", "3000"]]
    assert all("issuance" in s["label"] and s["module"] == "bench.issuance" for s in steps)  # --only issuance


def test_revocation_phase_revokes_every_certificate_and_reports_each_block(bench, capsys, tmp_path):
    result = run_phase(bench, capsys, ["revoke", "--requests", "5", "--block", "2", "--dir", str(tmp_path / "d")])
    assert result["phase"] == "revoke" and result["revoked"] == 5 and result["verified"] is True
    assert [b["revoked"] for b in result["blocks"]] == [2, 4, 5] and [b["n"] for b in result["blocks"]] == [2, 2, 1]
    assert result["revocations"]["n"] == 5 and result["issuance_after"]["n"] == 200
    assert result["certificate_issued_events"] == 5 + 200
    # every revocation: the CA's entry, a CRL, the certificate's own event; five setup events besides
    assert result["events"] == 5 + 3 * 5 + 205
    result.update(label="r", command="python -m bench.issuance revoke …")
    step = {"label": "revocation", "module": "bench.issuance", "dir": "scratch",
            "args": ["revoke", "--requests", "3", "--block", "2"]}
    ran = bench.cli.run_phase(step, tmp_path / "e", tmp_path)  # as `python -m bench` runs it, in a process
    assert ran["revoked"] == 3 and "ms each up to 3" in capsys.readouterr().out
    text = "\n".join(bench.report.revocation_section(result))
    assert "### Revocation as a CA's revoked list grows" in text and "| 4 | 2 |" in text
    headline = "\n".join(bench.report.headline({"issuance": {"phases": [result]}}))
    assert "Revoking 5 certificates of one CA one at a time" in headline and "over the last 1" in headline


def test_report_renders_goals_and_keeps_the_store_section(bench, capsys, tmp_path):
    server = run_phase(bench, capsys, ["issue-server", "--algorithm", "ecdsa-p256", "--sequential", "1",
                                       "--concurrent", "1", "--dir", str(tmp_path / "a")])
    rsa = {**server, "algorithm": "rsa-4096", "family": "rsa"}
    csr = run_phase(bench, capsys, ["issue-csr", "--requests", "1", "--concurrency", "1",
                                    "--dir", str(tmp_path / "b")])
    for phase, label in ((server, "s"), (rsa, "r"), (csr, "c")):
        phase.update(label=label, command="python -m bench.issuance …")
    machine = {"date": "D2", "git_commit": "abc"}
    store = {"events": 1000, "command": "python -m bench", "machine": {"date": "D1"}, "micro": [],
             "phases": [{"phase": "replay", "label": "replay", "events": 1, "seconds": 1.0, "events_per_second": 1.0,
                         "command": "x"}], "issuance": None}
    previous = tmp_path / "latest.json"
    previous.write_text(json.dumps(store))
    now = {"events": 200_000, "command": "python -m bench --only issuance", "machine": machine, "phases": [],
           "micro": [], "issuance": {"command": "python -m bench --only issuance", "machine": machine,
                                     "phases": [server, rsa, csr]}}
    merged = bench.cli.carry_over(now, previous)
    assert merged["phases"] == store["phases"] and merged["machine"]["date"] == "D1"
    assert merged["issuance"]["phases"] == [server, rsa, csr]
    text = bench.report.render(merged, None)
    assert "## Results (1,000 events)" in text and "## Issuance" in text
    assert "p95 < 2,000 ms" in text and "> 100/min" in text
    assert "issuance figures by `python -m bench --only issuance` on D2" in text
