"""Smoke test of the store benchmark's certificate dataset and its checked rebuilds (bench/phases.py) at tiny sizes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

EVENTS, TENANTS = 2_000, 3


def run_phase(bench, capsys, argv: list[str]) -> dict:
    bench.phases.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dataset(bench, tmp_path_factory) -> tuple[Path, dict]:
    """A certificate dataset of EVENTS events, sealed every 1,000, and what its phase reported."""
    data, out = tmp_path_factory.mktemp("certificates"), io.StringIO()
    with contextlib.redirect_stdout(out):  # capsys is per test; this fixture serves the module
        bench.phases.main(["certificate-dataset", "--dir", str(data), "--events", str(EVENTS), "--writers", "32",
                              "--tenants", str(TENANTS), "--pem-pool", "12", "--seal-every", "1000"])
    return data, json.loads(out.getvalue().strip().splitlines()[-1])


def test_dataset_writes_a_certificate_history(dataset):
    _, result = dataset
    tally = result["certificates"]
    assert result["phase"] == "certificate-dataset"
    assert result["setup_events"] == 3 * TENANTS and result["events"] + result["setup_events"] == EVENTS
    assert result["appends"] == result["events"]  # one event per append, as the commands append them
    assert (tally["tenants"], tally["cas"], result["pem_pool"]) == (TENANTS, 2 * TENANTS, 12)
    assert tally["issued"] > EVENTS // 2
    assert 0.04 < tally["revoked"] / tally["issued"] < 0.16 and 0.04 < tally["renewed"] / tally["issued"] < 0.16
    assert 0 < tally["crls"] <= tally["revoked"]
    events = tally["issued"] - tally["renewed"] + 2 * tally["revoked"] + tally["crls"] + 3 * tally["renewed"]
    assert events == result["events"]
    assert result["seal"]["checkpoints"] == 2  # every 1,000 events


def test_dataset_is_a_sound_log(bench, capsys, dataset):
    data, result = dataset
    verified = run_phase(bench, capsys, ["verify", "--dir", str(data)])
    assert verified["ok"] is True and verified["events"] >= EVENTS and verified["checkpoints"] == 2
    counts = bench.phases._event_counts(data / "events.db")
    assert counts["certificate.issued"] == result["certificates"]["issued"]
    assert counts["ca.certificate_revoked"] == counts["certificate.revoked"] == result["certificates"]["revoked"]
    assert counts["certificate.renewal_started"] == counts["certificate.renewed"] == result["certificates"]["renewed"]


def test_certificates_rebuild_matches_what_was_written(bench, capsys, dataset):
    data, written = dataset
    tally = written["certificates"]
    result = run_phase(bench, capsys, ["rebuild", "--projection", "certificates", "--dir", str(data)])
    checked = result["checked"]
    assert result["events"] >= EVENTS and result["events_per_second"] > 0
    assert checked["certificates"] == checked["issued_counted"] == tally["issued"]
    assert (checked["revoked"], checked["renewed"]) == (tally["revoked"], tally["renewed"])
    assert checked["live"] == checked["live_counted"] == tally["issued"] - tally["revoked"] - tally["renewed"]
    # issuance days (certificate_counts), and expiry days by CA (certificate_expiry_counts), spread over a year
    assert checked["count_rows"] > 100 and checked["expiry_count_rows"] > 100
    assert not list(data.glob("bench-views-*"))
    cas = run_phase(bench, capsys, ["rebuild", "--projection", "cas", "--dir", str(data)])
    assert cas["checked"] == {"cas": 2 * TENANTS, "ca_certificates": 2 * TENANTS}


def test_a_broken_rebuild_fails_the_phase(bench, capsys, dataset, monkeypatch):
    from projections.certificates import CertificatesProjector
    apply = CertificatesProjector.apply

    def forgets_revocations(self, conn, event):
        if event.type != "certificate.revoked":
            apply(self, conn, event)

    monkeypatch.setattr(CertificatesProjector, "apply", forgets_revocations)
    with pytest.raises(SystemExit, match="the rebuilt certificates read model disagrees with the log.*revoked"):
        bench.phases.main(["rebuild", "--projection", "certificates", "--dir", str(dataset[0])])


def test_plan_rebuilds_certificates_over_their_own_dataset(bench):
    steps = bench.cli.plan(1_000_000)
    names = [(s["args"][0], s["dir"]) for s in steps]
    first = names.index(("certificate-dataset", "certificate-dataset"))
    assert names[first - 1] == ("rebuild", "dataset") and all(d == "certificate-dataset" for _, d in names[first:])
    labels = [s["label"] for s in steps[first + 1:]]
    assert labels == ["rebuild projection certificates (1M certificate events)",
                      "rebuild projection cas (1M certificate events)"]
    assert bench.cli.short_count(200_000) == "200k" and bench.cli.short_count(2_500) == "2,500"
    cli = bench.cli
    chosen = [s["args"][0] for s in steps + cli.issuance.plan() + cli.wrkbench.PLAN if "certificate events" in s["label"]]
    assert chosen == ["certificate-dataset", "rebuild", "rebuild"]  # what --only 'certificate events' runs


def test_report_renders_the_new_rows_and_older_runs(bench, capsys, dataset):
    data, written = dataset
    rebuilt = run_phase(bench, capsys, ["rebuild", "--projection", "certificates", "--dir", str(data)])
    machine = {"date": "D1", "git_commit": "abc", "certificate_dataset_bytes": 3 * 2**20}
    old = {"events": 1000, "command": "python -m bench", "machine": {"date": "D0"}, "micro": [], "issuance": None,
           "phases": [{"phase": "rebuild", "label": "rebuild projection tenants", "projection": "tenants",
                       "events": 1000, "seconds": 1.0, "events_per_second": 1000.0, "command": "x"}]}
    text = bench.report.render(old, None)
    assert "rebuild projection tenants" in text and "certificate-history" not in text
    steps = {s["args"][0] + s["args"][-1]: s for s in bench.cli.plan(EVENTS)}
    written = {**written, "label": steps["certificate-dataset" + str(EVENTS)]["label"], "command": "c"}
    rebuilt = {**rebuilt, "label": steps["rebuildcertificates"]["label"], "command": "r"}
    new = {**old, "machine": machine, "phases": [*old["phases"], written, rebuilt]}
    text = bench.report.render(new, None)
    assert "| rebuild projection certificates (2k certificate events) |" in text
    assert f"checked: {written['certificates']['issued']:,} certificates" in text
    assert "certificate-history phase writes a second dataset" in text
    assert "| certificate dataset size (events.db) | 3 MiB |" in text
    assert "rebuild projection certificates **" in text  # the headline
