"""Run every benchmark phase and write docs/benchmarks.md: ``python -m bench [--events N]``.

Each phase runs in its own process under ``/usr/bin/time -v`` (GNU time) so that its peak
resident set size is its own. Results go to ``bench/results/`` as JSON (git-ignored) and
are rendered into ``docs/benchmarks.md``. ``bench/baseline.json`` holds the figures from
before the store was tuned; the report compares against it. The store phases
(``bench.phases``) and the issuance phases (``bench.issuance``) are two sections with their
own command and date: a run that runs none of one section's phases (``--only issuance``)
keeps that section from the previous run (``bench/results/latest.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import issuance, machine, report, wrkbench

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BASELINE = ROOT / "bench" / "baseline.json"
DOC = ROOT / "docs" / "benchmarks.md"
GNU_TIME = Path("/usr/bin/time")
# the data directories that phases share (plan's "dir"), and the machine field their events.db's size goes in
DATASETS = {"dataset": "dataset_bytes", "certificate-dataset": "certificate_dataset_bytes"}


def short_count(n: int) -> str:
    """1M, 200k, 2,000: how a label names a size."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size:,}{suffix}"
    return f"{n:,}"


def plan(events: int) -> list[dict]:
    """(label, phase arguments, which data directory) in the order they run.

    "dataset" and "certificate-dataset" are data directories that one phase writes and later phases read;
    every "scratch" phase gets a fresh one.
    """
    contended = max(1_000, events // 100)
    certificates = f"{short_count(events)} certificate events"
    return [
        {"label": "append: 1 event x 256 writers", "args": ["append-single", "--writers", "256",
                                                             "--events", str(events)], "dir": "scratch"},
        {"label": "append: 1 event x 1024 writers (the dataset)", "args": ["append-single", "--writers", "1024",
                                                              "--events", str(events), "--dataset"], "dir": "dataset"},
        {"label": "append: 1 event x 20,000 writers", "args": ["append-single", "--writers", "20000",
                                                                "--events", str(events)], "dir": "scratch"},
        {"label": "append: 10-event batches x 128 writers", "args": ["append-batch", "--writers", "128",
                                                                      "--events", str(events)], "dir": "scratch"},
        {"label": "append: 1 stream, 64 contending writers", "args": ["append-contended", "--writers", "64",
                                                                       "--events", str(contended)], "dir": "scratch"},
        {"label": "replay: read_all, pages of 1000", "args": ["replay", "--page", "1000"], "dir": "dataset"},
        {"label": "audit verify: verify_store", "args": ["verify"], "dir": "dataset"},
        {"label": "rebuild projection audit_log", "args": ["rebuild", "--projection", "audit_log"], "dir": "dataset"},
        {"label": "rebuild projection tenants", "args": ["rebuild", "--projection", "tenants"], "dir": "dataset"},
        {"label": f"append: certificate history x 256 writers (the certificate dataset, {certificates})",
         "args": ["certificate-dataset", "--writers", "256", "--events", str(events)], "dir": "certificate-dataset"},
        {"label": f"rebuild projection certificates ({certificates})",
         "args": ["rebuild", "--projection", "certificates"], "dir": "certificate-dataset"},
        {"label": f"rebuild projection cas ({certificates})", "args": ["rebuild", "--projection", "cas"],
         "dir": "certificate-dataset"},
    ]


def parse_gnu_time(text: str) -> dict:
    fields = {}
    for key, pattern in (("max_rss_kib", r"Maximum resident set size \(kbytes\): (\d+)"),
                         ("cpu_percent", r"Percent of CPU this job got: (\d+)%"),
                         ("voluntary_switches", r"Voluntary context switches: (\d+)"),
                         ("fs_outputs", r"File system outputs: (\d+)")):
        match = re.search(pattern, text)
        if match:
            fields[key] = int(match.group(1))
    return fields


def run_phase(step: dict, data_dir: Path, work: Path) -> dict:
    module = step.get("module", "bench.phases")
    command = [sys.executable, "-m", module, *step["args"], "--dir", str(data_dir)]
    timing = work / "gnu-time.txt"
    wrapped = [str(GNU_TIME), "-v", "-o", str(timing), *command] if GNU_TIME.exists() else command
    print(f"  {step['label']} ...", end="", flush=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(wrapped, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        print(" failed")
        sys.stderr.write(done.stderr)
        raise SystemExit(f"phase {step['args'][0]} failed with exit status {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(parse_gnu_time(timing.read_text()) if timing.exists() else {})
    result["label"] = step["label"]
    result["command"] = f"python -m {module} " + " ".join(step["args"]) + " --dir DIR"
    result["wall_seconds"] = time.perf_counter() - started
    result["load_before"] = load_before
    if "events_per_second" in result:
        print(f" {result['events_per_second']:,.0f} events/s")
    elif result.get("phase") == "http":
        print(" " + ", ".join(f"x {r['connections']}: {r['csm']['requests_per_second']:,.0f}/s vs cfssl "
                              f"{r['cfssl']['requests_per_second']:,.0f}/s" for r in result["issuance"])
              + "; reads " + ", ".join(f"p95 {r['latency_ms']['p95']:,.0f} ms" for r in result["reads"]))
    elif result.get("phase") == "revoke":
        print(" " + ", ".join(f"{b['seconds'] * 1000 / b['n']:,.2f} ms each up to {b['revoked']:,}"
                              for b in result["blocks"]))
    else:
        runs = [result[k] for k in ("sequential", "concurrent") if k in result] or [result]
        print(" " + ", ".join(f"{r['per_minute']:,.0f}/min at concurrency {r['concurrency']}" for r in runs))
    return result


def run_micro(work: Path) -> list[dict]:
    """The pytest-benchmark micro-benchmarks of the per-event hot paths (bench/test_micro.py)."""
    out = work / "micro.json"
    print("  micro-benchmarks (pytest-benchmark) ...", flush=True)
    done = subprocess.run([sys.executable, "-m", "pytest", "bench/test_micro.py", "-q", "-p", "no:cacheprovider",
                           "--benchmark-only", f"--benchmark-json={out}", "--benchmark-disable-gc",
                           "--benchmark-min-rounds=20"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit("micro-benchmarks failed")
    data = json.loads(out.read_text())
    return [{"name": b["name"], "mean_us": b["stats"]["mean"] * 1e6, "median_us": b["stats"]["median"] * 1e6,
             "ops": b["stats"]["ops"], "rounds": b["stats"]["rounds"]} for b in data["benchmarks"]]


def carry_over(results: dict, previous_path: Path) -> dict:
    """Keep the previous run's store, issuance or HTTP section when this run ran none of that section's phases."""
    if (results["phases"] and results["issuance"] and results.get("http")) or not previous_path.exists():
        return results
    previous = json.loads(previous_path.read_text())
    if not results["phases"] and previous.get("phases"):
        kept = {k: previous.get(k) for k in ("events", "command", "machine", "phases", "micro")}
        results = {**results, **kept}
    for section in ("issuance", "http"):
        if not results.get(section) and previous.get(section):
            results = {**results, section: previous[section]}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events per append phase and dataset size")
    parser.add_argument("--work-dir", type=Path, default=RESULTS / "work",
                        help="where the benchmark stores live (deleted afterwards unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark data directories")
    parser.add_argument("--no-micro", action="store_true", help="skip the pytest-benchmark micro-benchmarks")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--save-baseline", action="store_true",
                        help="store these figures as bench/baseline.json (the 'before' column)")
    parser.add_argument("--only", action="append", default=[], metavar="PHASE",
                        help="run only phases whose name or label contains this (repeatable; "
                             "'issuance' selects the issuance phases)")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                        help="only rewrite docs/benchmarks.md from saved results (no benchmark runs)")
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="RESULTS_JSON",
                        help="add another saved run (e.g. --events 1000000) to the report")
    args = parser.parse_args(argv)
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() and not args.save_baseline else None
    extra = [json.loads(path.read_text()) for path in args.also]
    if args.render:
        DOC.write_text(report.render(json.loads(args.render.read_text()), baseline, extra))
        print(f"report: {DOC}")
        return

    if args.events < 1_000:
        parser.error("--events must be at least 1000")
    if not GNU_TIME.exists():
        print("warning: /usr/bin/time is missing (apt-get install time); peak RSS is not measured", file=sys.stderr)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    args.work_dir.mkdir(parents=True)
    info = machine.describe(ROOT, args.work_dir)
    print(f"benchmarking {args.events:,} events on {info['nproc']} x {info['cpu_model']}, "
          f"Python {info['python']}, SQLite {info['sqlite']}")
    phases, issued, served = [], [], []
    try:
        for index, step in enumerate(plan(args.events) + issuance.plan() + wrkbench.PLAN):
            if args.only and not any(o in step["args"][0] or o in step["label"] for o in args.only):
                continue
            data_dir = args.work_dir / (step["dir"] if step["dir"] in DATASETS else f"scratch-{index}")
            if step.get("module") == "bench.issuance":
                issued.append(run_phase(step, data_dir, args.work_dir))
            elif step.get("module") == "bench.wrkbench":
                served.append(run_phase(step, data_dir, args.work_dir))
            else:
                phases.append(run_phase(step, data_dir, args.work_dir))
            if phases and "seal" in phases[-1]:  # a dataset run sealed a checkpoint every 50k events: its own row
                seal = phases[-1].pop("seal")
                run = "certificate run" if phases[-1]["phase"] == "certificate-dataset" else "run"
                phases.append({"phase": "seal", "label": f"seal checkpoints every 50k events (in the {run} above)",
                               "command": phases[-1]["command"], **seal})
            if step["dir"] == "scratch" and not args.keep:
                shutil.rmtree(data_dir, ignore_errors=True)
        micro = [] if args.no_micro or not phases else run_micro(args.work_dir)
        for name, key in DATASETS.items():
            db = args.work_dir / name / "events.db"
            info[key] = db.stat().st_size if db.exists() else None
    finally:
        if not args.keep:
            shutil.rmtree(args.work_dir, ignore_errors=True)

    command = "python -m bench " + " ".join(argv or sys.argv[1:])
    results = {"events": args.events, "command": command, "machine": info, "phases": phases, "micro": micro,
               "issuance": {"command": command, "machine": info, "phases": issued} if issued else None,
               "http": {**served[0], "command": command, "machine": info} if served else None}
    results = carry_over(results, RESULTS / "latest.json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for path in (RESULTS / f"{stamp}-{args.events}.json", RESULTS / "latest.json"):
        path.write_text(json.dumps(results, indent=2))
    print(f"results: {RESULTS / 'latest.json'}")
    if args.save_baseline:
        BASELINE.write_text(json.dumps(results, indent=2) + "\n")
        print(f"baseline: {BASELINE}")
    if not args.no_docs:
        DOC.write_text(report.render(results, baseline, extra))
        print(f"report: {DOC}")


if __name__ == "__main__":
    main()
