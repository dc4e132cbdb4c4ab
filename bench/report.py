"""Render benchmark results (and the baseline, if any) as docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

NARRATIVE = Path(__file__).resolve().parent / "narrative.md"
GOALS = {"append-single": 20_000, "replay": 100_000, "verify": 100_000}
RSA_4096_P95_MS = 2_000  # requirement: RSA-4096 issuance with a server-side key under 2 s
PER_MINUTE_GOAL = 100  # requirement: more than 100 issuances a minute for every algorithm family
READ_P95_MS, READ_P95_GOAL_MS = 100, 10  # reads at 1,000 connections: requirement p95 < 100 ms, goal < 10 ms


def _n(value, digits: int = 0) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{value:,.0f}"


def _rss(phase: dict) -> str:
    kib = phase.get("max_rss_kib")
    return f"{kib / 1024:,.0f}" if kib else "–"


def _goal(phase: dict) -> str:
    goal = GOALS.get(phase["phase"])
    if goal is None:
        return ""
    return f"≥ {goal:,}: {'met' if phase['events_per_second'] >= goal else '**not met**'}"


def _extra(phase: dict) -> str:
    bits = []
    if "conflicts" in phase:
        bits.append(f"{phase['conflicts']:,} WrongExpectedVersion retries")
    if "checkpoints" in phase:
        bits.append(f"{phase['checkpoints']} checkpoints")
    if "streams" in phase:
        bits.append(f"{phase['streams']:,} streams")
    if "certificates" in phase:  # the certificate dataset: what its history holds
        t = phase["certificates"]
        bits.append(f"{t['tenants']} tenants, {t['cas']} CAs, {t['issued']:,} certificates issued "
                    f"({t['renewed']:,} of them renewals), {t['revoked']:,} revoked, {t['crls']:,} CRLs")
    if "checked" in phase:  # a rebuilt read model checked against the log's event counts
        c = phase["checked"]
        bits.append(f"checked: {c['certificates']:,} certificates ({c['revoked']:,} revoked, {c['renewed']:,} "
                    f"renewed, {c['live']:,} live), {c['count_rows']:,} per-day count rows"
                    if "certificates" in c else "checked: " + ", ".join(f"{v:,} {k}" for k, v in c.items()))
    if phase.get("cpu_percent") is not None:
        bits.append(f"CPU {phase['cpu_percent']}%")
    if phase.get("load_before") is not None:
        bits.append(f"load {phase['load_before']:.2f} before")
    return ", ".join(bits)


def results_table(phases: list[dict]) -> list[str]:
    lines = ["| phase | events | seconds | **events/s** | goal | mean events per commit | append p50 ms | "
             "append p99 ms | peak RSS MiB | notes |",
             "|---|--:|--:|--:|---|--:|--:|--:|--:|---|"]
    for p in phases:
        lines.append(
            f"| {p['label']} | {_n(p['events'])} | {_n(p['seconds'], 2)} | **{_n(p['events_per_second'])}** | "
            f"{_goal(p)} | {_n(p.get('mean_events_per_commit'), 1)} | {_n(p.get('latency_ms_p50'), 1)} | "
            f"{_n(p.get('latency_ms_p99'), 1)} | {_rss(p)} | {_extra(p)} |")
    return lines


def certificate_dataset_text(phases: list[dict]) -> list[str]:
    """What the certificate dataset holds, if this run wrote one (runs before it did not)."""
    written = next((p for p in phases if p["phase"] == "certificate-dataset"), None)
    if written is None:
        return []
    t = written["certificates"]

    def share(n: int) -> str:
        return f"{100 * n / t['issued']:.1f} %" if t["issued"] else "–"

    return ["",
            "The certificate-history phase writes a second dataset, the history the certificates and cas",
            f"projectors see in production: {t['tenants']} tenants of different sizes, each with a root and an",
            "intermediate CA (`tenant.created`, two `ca.created`), then `certificate.issued` events (each at",
            "version 0 of its own stream; payloads of the real domain structs, a real PEM from a pool of",
            f"{written.get('pem_pool', 0):,} signed once, distinct serials and fingerprints, validity dated by a clock",
            f"that runs over a year as the events are written). {share(t['revoked'])} of the certificates are revoked",
            "as `revoke` records it (the CA's `ca.certificate_revoked`, the certificate's `certificate.revoked`,",
            f"the CA's next `ca.crl_published` unless one already lists it) and {share(t['renewed'])} renewed as the",
            "renewal records it (`certificate.renewal_started`, the successor's `certificate.issued`,",
            "`certificate.renewed`). Each rebuild over it is checked: the read model's rows and per-day counts",
            "against the log's events."]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _notes(phase: dict) -> str:
    bits = [f"CPU {phase['cpu_percent']}%"] if phase.get("cpu_percent") is not None else []
    if phase.get("load_before") is not None:
        bits.append(f"load {phase['load_before']:.2f} before")
    if phase.get("verified"):
        bits.append(f"{phase['certificate_issued_events']:,} certificate.issued events, store verified")
    return ", ".join(bits)


def _server_goal(p: dict) -> str:
    bits = [f"> {PER_MINUTE_GOAL}/min: {_met(p['sequential']['per_minute'] > PER_MINUTE_GOAL)}"]
    if p["algorithm"] == "rsa-4096":
        bits.insert(0, f"p95 < {RSA_4096_P95_MS:,} ms: {_met(p['sequential']['latency_ms_p95'] < RSA_4096_P95_MS)}")
    return "; ".join(bits)


def server_table(phases: list[dict]) -> list[str]:
    lines = ["| algorithm | signed by (root and intermediate) | n | p50 ms | p95 ms | p99 ms | max ms | **per min** | "
             "CPU ms each | × 8: n | × 8: per min | × 8: p50 / p95 ms | goal | peak RSS MiB | notes |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|---|"]
    for p in phases:
        s, c = p["sequential"], p["concurrent"]
        lines.append(
            f"| {p['algorithm']} | {p['ca_algorithm']} | {s['n']} | {_n(s['latency_ms_p50'], 1)} | "
            f"{_n(s['latency_ms_p95'], 1)} | {_n(s['latency_ms_p99'], 1)} | {_n(s['latency_ms_max'], 1)} | "
            f"**{_n(s['per_minute'])}** | {_n(s.get('cpu_ms_per_issuance'), 1)} | {c['n']} | {_n(c['per_minute'])} | "
            f"{_n(c['latency_ms_p50'], 1)} / "
            f"{_n(c['latency_ms_p95'], 1)} | {_server_goal(p)} | {_rss(p)} | {_notes(p)} |")
    return lines


def family_table(phases: list[dict]) -> list[str]:
    """Each family's slowest algorithm, one request at a time: the figure the per-minute requirement is held to."""
    lines = ["| family | algorithms | slowest, one at a time | slowest, × 8 concurrent | goal |", "|---|---|--:|--:|---|"]
    families: dict[str, list[dict]] = {}
    for p in phases:
        families.setdefault(p["family"], []).append(p)
    for family, members in families.items():
        slow = min(members, key=lambda m: m["sequential"]["per_minute"])
        conc = min(m["concurrent"]["per_minute"] for m in members)
        lines.append(f"| {family} | {', '.join(m['algorithm'] for m in members)} | "
                     f"{_n(slow['sequential']['per_minute'])}/min ({slow['algorithm']}) | {_n(conc)}/min | "
                     f"> {PER_MINUTE_GOAL}/min: {_met(slow['sequential']['per_minute'] > PER_MINUTE_GOAL)} |")
    return lines


def csr_table(phases: list[dict]) -> list[str]:
    lines = ["| concurrency | CSRs | seconds | **issuances/s** | per min | p50 ms | p95 ms | p99 ms | max ms | "
             "peak RSS MiB | notes |", "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for p in phases:
        lines.append(f"| {p['concurrency']} | {_n(p['n'])} | {_n(p['seconds'], 2)} | **{_n(p['per_second'])}** | "
                     f"{_n(p['per_minute'])} | {_n(p['latency_ms_p50'], 1)} | {_n(p['latency_ms_p95'], 1)} | "
                     f"{_n(p['latency_ms_p99'], 1)} | {_n(p['latency_ms_max'], 1)} | {_rss(p)} | {_notes(p)} |")
    return lines


def revocation_table(phase: dict) -> list[str]:
    lines = ["| revocations so far | in this block | mean ms | p50 ms | p95 ms | p99 ms | max ms |",
             "|--:|--:|--:|--:|--:|--:|--:|"]
    for block in phase["blocks"]:
        lines.append(f"| {_n(block['revoked'])} | {_n(block['n'])} | {_n(block['seconds'] * 1000 / block['n'], 2)} | "
                     f"{_n(block['latency_ms_p50'], 2)} | {_n(block['latency_ms_p95'], 2)} | "
                     f"{_n(block['latency_ms_p99'], 2)} | {_n(block['latency_ms_max'], 2)} |")
    return lines


def revocation_section(phase: dict) -> list[str]:
    every, after = phase["revocations"], phase["issuance_after"]
    return ["### Revocation as a CA's revoked list grows", "",
            f"{_n(phase['revoked'])} certificates issued under one intermediate (untimed), then revoked one at a",
            "time through `commands.revoke.revoke_certificate`: each revocation appends to the CA's stream,",
            "signs and stores the CA's next CRL (listing every revocation so far), and appends to the",
            "certificate's stream, three durable commits. Then 200 issuances one at a time under the same CA.",
            "What rises with the revocations so far is that CRL: each lists, encodes and signs every entry again.", "",
            *revocation_table(phase), "",
            f"All {_n(every['n'])}: {_n(every['per_second'], 1)} a second, CPU {_n(every['cpu_ms_per_issuance'], 2)} ms "
            f"each; issuance afterwards, one at a time: p50 {_n(after['latency_ms_p50'], 2)} ms, "
            f"p95 {_n(after['latency_ms_p95'], 2)} ms ({_n(after['per_minute'])} a minute). Notes: "
            f"{_notes(phase) or 'none'}.", ""]


def issuance_section(run: dict) -> list[str]:
    server = [p for p in run["phases"] if p["phase"] == "issue-server"]
    csr = [p for p in run["phases"] if p["phase"] == "issue-csr"]
    revocations = [p for p in run["phases"] if p["phase"] == "revoke"]
    info = run["machine"]
    out = ["## Issuance", "",
           f"`{run['command'].strip()}` on {info.get('date')}, code {info.get('git_commit')}, load average "
           f"{info.get('load_average')} at the start ({info.get('nproc')} x {info.get('cpu_model')}).", "",
           "Through the real command path, in one process per row, each on a fresh data directory",
           "(`infra.bootstrap.initialise`): tenant `acme`, a root and an intermediate CA, then",
           "`commands.certificates.issue_certificate` with profile `cassandra-node`, subject and DNS SAN",
           "`node-N.acme.internal`. Every issuance is counted when its command returned: the policy",
           "checks passed, the certificate was signed, a hash-chained `certificate.issued` event was",
           "appended durably (WAL, `synchronous=FULL`) and, for a server-side key, the private key was",
           "encrypted (its own AES-256-GCM data key, wrapped by the tenant KEK) and stored in `keys.db`",
           "(WAL, `synchronous=FULL`). One untimed warm-up issuance first loads the CA key. After the",
           "timed part the phase seals a checkpoint, verifies the whole store and counts the",
           "`certificate.issued` events (notes column). Projections and the checkpoint timer do not run",
           "during the timed part.", ""]
    if server:
        out += ["### Server-side keys", "",
                "Latency: one request at a time (n, p50 … max, **per min**). × 8: the next n requests with 8",
                "in flight (`asyncio.gather` behind a semaphore); latency there is each request's own time",
                "once it had a slot. Percentiles are nearest-rank: with n = 20, p95 is the 19th of 20 and",
                "p99 is the maximum. The per-minute goal is held to the one-at-a-time rate. *CPU ms each*:",
                "the process's CPU time (all threads) over the one-at-a-time run, per issuance.", "",
                *server_table(server), "", *family_table(server), ""]
    if csr:
        out += ["### From CSRs (ECDSA P-256, made before the clock starts)", "",
                "Each request a distinct CSR (its own key, subject and DNS SAN); the requester keeps the key,",
                "so nothing goes to the vault. Concurrency 1 awaits each request in turn.", "",
                *csr_table(csr), ""]
    for phase in revocations:
        out += revocation_section(phase)
    out += ["Commands (DIR is a fresh scratch directory under `bench/results/work/`):", "",
            *(f"- {p['label']}: `{p['command']}`" for p in run["phases"]), ""]
    return out


def _ms(run: dict, key: str) -> str:
    return _n(run["latency_ms"][key], 1)


def _errors(run: dict) -> str:
    bits = [f"{v:,} {k}" for k, v in run["errors"].items() if v]
    return ", ".join(bits) if bits else "none"


def _server_cpu(run: dict) -> str:
    cpu = run.get("server_cpu_seconds")
    return f"{cpu * 1000 / run['ok']:,.2f}" if cpu and run.get("ok") else "–"


def http_issuance_table(rows: list[dict]) -> list[str]:
    lines = ["| connections | server | requests | **requests/s** | p50 ms | p95 ms | p99 ms | max ms | non-2xx / errors | "
             "server CPU ms per request | load before | **ours / this** |",
             "|--:|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|"]
    for row in rows:
        for name, label, ratio_key in (("csm", "csm serve", None), ("cfssl", "cfssl serve", "ratio"),
                                       ("cfssl_db", "cfssl serve -db-config (SQLite certdb)", "ratio_db")):
            if name not in row:
                continue
            r = row[name]
            ratio = f"**{row[ratio_key]:.2f}**" if ratio_key and row.get(ratio_key) is not None else ""
            wrapped = " (CSRs reused: the file ran out)" if r.get("wrapped") else ""
            lines.append(f"| {row['connections']} | {label} | {_n(r['ok'])} | **{_n(r['requests_per_second'])}** | "
                         f"{_ms(r, 'p50')} | {_ms(r, 'p95')} | {_ms(r, 'p99')} | {_ms(r, 'max')} | "
                         f"{_errors(r)}{wrapped} | {_server_cpu(r)} | {r['load_before']:.2f} | {ratio} |")
    return lines


def http_reads_table(runs: list[dict]) -> list[str]:
    lines = ["| request | connections | requests | **requests/s** | p50 ms | **p95 ms** | **p99 ms** | max ms | "
             "non-2xx / errors | server CPU ms per request | load before | requirement p95 < 100 ms | goal p95 < 10 ms |",
             "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|---|---|"]
    for r in runs:
        p95 = r["latency_ms"]["p95"]
        lines.append(f"| `{r['label']}` | {r['connections']:,} | {_n(r['ok'])} | **{_n(r['requests_per_second'])}** | "
                     f"{_ms(r, 'p50')} | **{_ms(r, 'p95')}** | **{_ms(r, 'p99')}** | {_ms(r, 'max')} | {_errors(r)} | "
                     f"{_server_cpu(r)} | {r['load_before']:.2f} | {_met(p95 < READ_P95_MS)} | "
                     f"{_met(p95 < READ_P95_GOAL_MS)} |")
    return lines


def quota_issuance_section(run: dict) -> list[str]:
    """The same CSR issuance for a tenant with quotas, beside the tenant without (same server, same run)."""
    quota = run.get("quota_issuance")
    if not quota:
        return []
    free = next((row["csm"] for row in run.get("issuance", []) if row["connections"] == quota["connections"]), None)
    bounds = ", ".join(f"`{k}` {v:,}" for k, v in quota["quotas"].items())
    out = ["### A tenant with quotas", "",
           f"Then the same issuance, {quota['connections']} connections, for a second tenant whose quotas are set "
           f"({bounds}; none is reached): before signing, every issuance waits for the read models to reach the "
           "log's head and reads the tenant's live certificates and today's issuances from the counts they keep "
           "per day (a few dozen rows, however many certificates the tenant holds), plus what its own process "
           "has in flight (commands/quotas.py, infra/usage.py).", "",
           "| tenant | requests | **requests/s** | p50 ms | p95 ms | p99 ms | non-2xx / errors | "
           "server CPU ms per request | load before |",
           "|---|--:|--:|--:|--:|--:|---|--:|--:|"]
    for label, r in (("without quotas (above)", free), ("with quotas", quota)):
        if r is not None:
            out.append(f"| {label} | {_n(r['ok'])} | **{_n(r['requests_per_second'])}** | {_ms(r, 'p50')} | "
                       f"{_ms(r, 'p95')} | {_ms(r, 'p99')} | {_errors(r)} | {_server_cpu(r)} | "
                       f"{r['load_before']:.2f} |")
    return [*out, ""]


def http_section(run: dict) -> list[str]:
    info = run["machine"]
    first = run["issuance"][0]["csm"] if run.get("issuance") else None
    procs = [(label, run[key]) for label, key in (("csm serve", "csm_process"), ("cfssl serve", "cfssl_process"),
                                                  ("cfssl serve -db-config", "cfssl_db_process")) if run.get(key)]
    out = ["## Over HTTP: CSR issuance against cfssl, and reads (wrk)", "",
           f"`python -m bench.wrkbench http --dir DIR` (bench/wrkbench.py, bench/wrk_cycle.lua), as a phase of "
           f"the run of {info.get('date')} (code {info.get('git_commit')}, {info.get('nproc')} x "
           f"{info.get('cpu_model')}); the 1-minute load average was "
           f"{run.get('load_before', 0):.2f} when this phase started, and is given before each wrk run below.", "",
           f"The servers ran at the same time on this machine (idle while another was measured: before each wrk run the benchmark waits until every server is using under 5 % of a core), with wrk ({first['threads'] if first else 2} threads) "
           f"beside them; each wrk run lasted {run['duration_s']} s. Every request carried the next of "
           f"{run['csrs']:,} distinct ECDSA P-256 CSRs (its own key, subject and DNS SAN), made before any clock "
           "started; each run started where the previous run against that server stopped, so no CSR was sent "
           "twice to the same server. Both CAs are ECDSA P-384 intermediates (SHA-384 signatures). "
           "Latencies are wrk's (per request, from its connection's send to the full response); "
           "*server CPU ms per request* is the server process's user + system CPU time over the run "
           "(/proc/PID/stat), divided by the successful requests.", "",
           "**What each 2xx means.** *csm serve*: `POST /v1/certificates` authenticated with an API key, "
           "authorised, the tenant, CA and profile loaded, every policy check passed, the CSR's signature "
           "verified, the certificate signed, and its `certificate.issued` event appended to the hash-chained "
           "log and **fsynced** (WAL, `synchronous=FULL`, group commit) before the answer. *cfssl serve*: "
           "`POST /api/v1/cfssl/sign` with no authentication and no database, so nothing is stored and "
           "nothing is durable; it signs and answers. This is the comparison the goal (ratio ≥ 1.0) is held to. "
           "*cfssl serve -db-config*: the same, with cfssl's SQLite certificate database (the certdb schema "
           "of cfssl 1.2, go-sqlite3's defaults: rollback journal, `synchronous=FULL`), so every certificate "
           "is INSERTed, each in its own transaction, before the answer; no hash chain, no policy beyond the "
           "signing profile.", "",
           *http_issuance_table(run.get("issuance", [])), "", *quota_issuance_section(run)]
    if run.get("verify") is not None:
        events, answered = run.get("certificate_issued_events") or 0, run.get("ok_201") or 0
        bound = sum(r["connections"] + r["csm"]["errors"]["timeout"] for r in run.get("issuance", []))
        if run.get("quota_issuance"):
            bound += run["quota_issuance"]["connections"] + run["quota_issuance"]["errors"]["timeout"]
        consistent = answered <= events <= answered + bound
        out += [f"After the runs `GET /v1/audit/verify` answered ok = {run.get('verify_ok')} "
                f"({_n(run['verify'].get('events'))} events checked), and the log held {_n(events)} "
                f"`certificate.issued` events: the {_n(answered)} issuances wrk saw answered 201 (the warm-up "
                f"included) and {_n(events - answered)} that were still in flight when a wrk run stopped, or "
                f"that wrk had given up on after its 10 s timeout (wrk counts neither as answered; at most one "
                f"per connection plus the timeouts, {bound:,} in all): "
                f"{'consistent' if consistent else '**inconsistent**'}."
                + (f" cfssl's certificate database held {_n(run['cfssl_db_certificates'])} certificates for "
                   f"{_n(run.get('cfssl_db_ok'))} answers." if run.get("cfssl_db_certificates") is not None else ""),
                ""]
    if run.get("reads"):
        out += ["### Reads at 1,000 connections", "",
                f"Against the same `csm serve` after the issuance runs ({_n(run.get('certificates_listed'))} "
                "certificates in the read model), same API key; each request the next id (or name) of the "
                f"issued certificates, cycling. The open-file limit was raised to {run.get('nofile'):,} "
                "(`RLIMIT_NOFILE`, inherited by both servers and wrk). wrk's timeout was 10 s: a request "
                "that took longer counts under errors, not in the percentiles.", "",
                *http_reads_table(run["reads"]), ""]
    if run.get("paced_reads"):
        delay = run["paced_reads"][0].get("paced_delay_ms", 1000)
        out += ["### Reads from 1,000 connections, each asking about once a second", "",
                "The same reads, the same 1,000 connections, but each connection waits a random 0 to "
                f"{2 * delay / 1000:g} s (mean {delay / 1000:g} s) after every answer before its next request "
                "(`BENCH_DELAY_MS`, bench/wrk_cycle.lua): 1,000 clients holding their connections open and "
                "asking at their own pace, about 1,000 requests a second offered in all, instead of the "
                "saturating loop above, where every connection asks again the instant it is answered (there "
                "the latency is only the queue: 1,000 connections / the requests per second). Latency is still "
                "wrk's, from send to answer.", "",
                *http_reads_table(run["paced_reads"]), ""]
    out += ["Peak RSS over the whole run (`/usr/bin/time -v`, Maximum resident set size): " +
            "; ".join(f"{label} {_rss(p)} MiB" for label, p in procs) + ".", "",
            "Commands:", "",
            *(f"- issuance x {r['connections']}: `{r['csm']['command']}` against each server" for r in
              run.get("issuance", [])),
            *([f"- issuance for the tenant with quotas: `{run['quota_issuance']['command']}`"]
              if run.get("quota_issuance") else []),
            *(f"- `{r['label']}`: `{r['command']}`" for r in run.get("reads", [])),
            *(f"- `{r['label']}`, paced: `{r['command']}`" for r in run.get("paced_reads", [])), ""]
    return out


def comparison_table(before: dict, after: dict) -> list[str]:
    old = {p["label"]: p for p in before["phases"]}
    lines = ["| phase | before events/s | after events/s | change | before p50 / p99 ms | after p50 / p99 ms | "
             "before → after peak RSS MiB |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for p in after["phases"]:
        b = old.get(p["label"])
        if b is None:
            continue
        change = p["events_per_second"] / b["events_per_second"] if b["events_per_second"] else 0
        lat = lambda x: (f"{_n(x.get('latency_ms_p50'), 1)} / {_n(x.get('latency_ms_p99'), 1)}"  # noqa: E731
                         if "latency_ms_p50" in x else "–")
        lines.append(f"| {p['label']} | {_n(b['events_per_second'])} | {_n(p['events_per_second'])} | "
                     f"×{change:.2f} | {lat(b)} | {lat(p)} | {_rss(b)} → {_rss(p)} |")
    return lines


def micro_table(micro: list[dict], before: list[dict] | None) -> list[str]:
    old = {m["name"]: m for m in before or []}
    lines = ["| micro-benchmark | median µs | ops/s | before: median µs |", "|---|--:|--:|--:|"]
    for m in micro:
        b = old.get(m["name"])
        previous = f"{b['median_us']:,.2f}" if b else "–"
        lines.append(f"| `{m['name']}` | {m['median_us']:,.2f} | {m['ops']:,.0f} | {previous} |")
    return lines


def machine_table(info: dict) -> list[str]:
    rows = [("date", info.get("date")), ("nproc", info.get("nproc")), ("CPU model (/proc/cpuinfo)", info.get("cpu_model")),
            ("RAM", f"{info.get('ram_gib')} GiB"), ("Python", info.get("python")), ("SQLite", info.get("sqlite")),
            ("kernel", info.get("kernel")), ("filesystem of the data directory", info.get("filesystem")),
            ("code", info.get("git_commit")),
            ("load average (1/5/15 min) at the start", info.get("load_average")),
            ("dataset size (events.db)", f"{info['dataset_bytes'] / 2**20:,.0f} MiB" if info.get("dataset_bytes")
             else None),
            ("certificate dataset size (events.db)", f"{info['certificate_dataset_bytes'] / 2**20:,.0f} MiB"
             if info.get("certificate_dataset_bytes") else None)]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows if v is not None)]


def _generated(results: dict) -> str:
    store = f"`{results['command'].strip()}` on {results['machine']['date']}"
    run = results.get("issuance")
    if not run or run["command"] == results["command"] and run["machine"]["date"] == results["machine"]["date"]:
        return f"Generated by {store}."
    if not results.get("phases"):
        return f"Generated by `{run['command'].strip()}` on {run['machine']['date']} (issuance only)."
    http = results.get("http")
    separate = http and http.get("machine", {}).get("date") not in (None, run["machine"]["date"])
    served = f"; HTTP figures by `{http['command'].strip()}` on {http['machine']['date']}" if separate else ""
    what = "issuance and HTTP figures" if http and not separate else "issuance figures"
    return (f"Store figures generated by {store}; {what} by `{run['command'].strip()}` on "
            f"{run['machine']['date']}{served} (each section says which run it comes from).")


def headline(results: dict) -> list[str]:
    """The figures the requirements and goals are held to, each with its section's run below."""
    out = []
    http_run = results.get("http")
    for row in (http_run or {}).get("issuance", []):
        ours, theirs = row["csm"], row["cfssl"]
        out.append(f"- CSR issuance over HTTP, {row['connections']} connections: csm serve "
                   f"**{_n(ours['requests_per_second'])}/s** (p50 / p95 / p99 {_ms(ours, 'p50')} / {_ms(ours, 'p95')} / "
                   f"{_ms(ours, 'p99')} ms) vs cfssl serve **{_n(theirs['requests_per_second'])}/s** "
                   f"({_ms(theirs, 'p50')} / {_ms(theirs, 'p95')} / {_ms(theirs, 'p99')} ms): "
                   f"ratio ours/cfssl **{row['ratio']:.2f}** (goal ≥ 1.0: {_met(row['ratio'] >= 1.0)}); ours with a "
                   "durable, hash-chained event per certificate, cfssl storing nothing"
                   + (f"; against cfssl storing each certificate in its SQLite certdb "
                      f"({_n(row['cfssl_db']['requests_per_second'])}/s) the ratio is **{row['ratio_db']:.2f}**"
                      if row.get("ratio_db") is not None else "") + ".")
    for r in (http_run or {}).get("reads", []):
        p95 = r["latency_ms"]["p95"]
        out.append(f"- `{r['label']}` at {r['connections']:,} connections: p95 **{_ms(r, 'p95')} ms**, p99 "
                   f"**{_ms(r, 'p99')} ms**, {_n(r['requests_per_second'])} requests/s (requirement p95 < "
                   f"{READ_P95_MS} ms: {_met(p95 < READ_P95_MS)}; goal < {READ_P95_GOAL_MS} ms: "
                   f"{_met(p95 < READ_P95_GOAL_MS)}).")
    for r in (http_run or {}).get("paced_reads", []):
        p95 = r["latency_ms"]["p95"]
        out.append(f"- `{r['label']}` from {r['connections']:,} connections each asking about once a second "
                   f"({_n(r['requests_per_second'])} requests/s): p95 **{_ms(r, 'p95')} ms**, p99 "
                   f"**{_ms(r, 'p99')} ms** (requirement p95 < {READ_P95_MS} ms: {_met(p95 < READ_P95_MS)}; "
                   f"goal < {READ_P95_GOAL_MS} ms: {_met(p95 < READ_P95_GOAL_MS)}).")
    server = [p for p in (results.get("issuance") or {}).get("phases", []) if p["phase"] == "issue-server"]
    for p in server:
        if p["algorithm"] == "rsa-4096":
            s_ = p["sequential"]
            out.append(f"- RSA-4096 issuance with a server-side key, one at a time: p50 {_n(s_['latency_ms_p50'])} ms, "
                       f"**p95 {_n(s_['latency_ms_p95'])} ms** (n = {s_['n']}; requirement < {RSA_4096_P95_MS:,} ms: "
                       f"{_met(s_['latency_ms_p95'] < RSA_4096_P95_MS)}).")
    families: dict[str, list[dict]] = {}
    for p in server:
        families.setdefault(p["family"], []).append(p)
    if families:
        bits = []
        for family, members in families.items():
            slow = min(members, key=lambda m: m["sequential"]["per_minute"])
            conc = min(m["concurrent"]["per_minute"] for m in members)
            bits.append(f"{family} {_n(slow['sequential']['per_minute'])} ({slow['algorithm']}; {_n(conc)} with 8 "
                        "in flight)")
        worst = min(m["sequential"]["per_minute"] for m in server)
        out.append(f"- Server-side-key issuances per minute through the command path, one at a time, each family's "
                   "slowest algorithm: "
                   f"{'; '.join(bits)} (requirement > {PER_MINUTE_GOAL}/min for every family: "
                   f"{_met(worst > PER_MINUTE_GOAL)}).")
    for p in (results.get("issuance") or {}).get("phases", []):
        if p["phase"] == "revoke":
            first, last = p["blocks"][0], p["blocks"][-1]
            out.append(f"- Revoking {_n(p['revoked'])} certificates of one CA one at a time (each signs the CA's "
                       f"next CRL): **{_n(first['seconds'] * 1000 / first['n'], 2)} ms** each over the first "
                       f"{_n(first['n'])}, **{_n(last['seconds'] * 1000 / last['n'], 2)} ms** over the last "
                       f"{_n(last['n'])}.")
    bits = []
    for p in results.get("phases") or []:
        if p["phase"] == "seal":
            continue
        label = p["label"].split(" (")[0].replace("audit verify: verify_store", "audit verify")
        bits.append(f"{label} **{_n(p['events_per_second'])} events/s** ({_rss(p)} MiB)")
    if bits:
        out.append(f"- Store at {results['events']:,} events, events/s (peak RSS): " + "; ".join(bits) + ".")
    return ["## Headline figures", "", *out, ""] if out else []


def render(results: dict, baseline: dict | None, extra_runs: list[dict] | None = None) -> str:
    n = results["events"]
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m bench` (bench/report.py); edit bench/narrative.md instead. -->",
        "",
        _generated(results),
        "",
        *headline(results),
        "## How to reproduce",
        "",
        "```sh",
        "make bench                                  # = .venv/bin/python -m bench: everything (about half an hour)",
        ".venv/bin/python -m bench --events 200000   # the store phases at 200k events instead of 1M",
        ".venv/bin/python -m bench --only http       # the wrk runs against csm serve and cfssl serve alone",
        ".venv/bin/python -m bench --only verify     # one phase (needs the dataset phase too: --only 1024 --only verify)",
        ".venv/bin/python -m bench --only 'certificate events'   # the certificate dataset and its rebuilds",
        ".venv/bin/python -m bench --only issuance   # the issuance phases alone (the store figures stay)",
        ".venv/bin/python -m bench --only rsa-4096   # one issuance phase",
        ".venv/bin/pytest bench/test_micro.py --benchmark-only   # the micro-benchmarks alone",
        "# the HTTP runs against a one-process server (CSM_WORKERS=1), results as JSON on stdout:",
        "CSM_WORKERS=1 .venv/bin/python -m bench.wrkbench http --dir bench/results/work/http-w1",
        "# this page from saved runs (bench/results/*.json), with a second run as an extra section:",
        ".venv/bin/python -m bench --render bench/results/RUN.json --also bench/results/OTHER_RUN.json",
        "```",
        "",
        "`make bench` first installs what it needs when missing: the venv, and the Debian packages",
        "`golang-cfssl` (cfssl 1.2), `wrk` and `time` (GNU time). It runs with the machine's other work",
        "going on: the load average is recorded before every phase.",
        "",
        "Each phase runs in its own process, `/usr/bin/time -v python -m bench.phases PHASE …` (or",
        "`bench.issuance`), so the *peak RSS* column is that phase's `Maximum resident set size`",
        "alone (the HTTP section reports each server's own). Every append is durable when counted: the store runs WAL with `synchronous=FULL` and",
        "resolves an append only after the group commit that holds it has returned, fsynced. JSON",
        "results are written to `bench/results/` (git-ignored); `bench/baseline.json` holds the",
        "figures from before tuning.",
        "",
        "## Machine",
        "",
        *machine_table(results["machine"]),
        "",
    ]
    if results.get("phases"):
        out += [
            f"## Results ({n:,} events)",
            "",
            "The 1024-writer append phase builds the dataset (one tenant stream per writer: `tenant.created`,",
            "then `tenant.renamed` events, realistic envelopes with actor and correlation id) that the",
            "seal, replay, verify and rebuild phases then read. The other append phases use fresh stores.",
            *certificate_dataset_text(results["phases"]),
            "",
            *results_table(results["phases"]),
            "",
            "Commands (DIR is a scratch or dataset directory under `bench/results/work/`):",
            "",
            *(f"- {p['label']}: `{p['command']}`" for p in results["phases"]),
            "",
        ]
    if baseline and results.get("phases") and baseline.get("events") == results.get("events"):
        out += [
            "## Before and after tuning",
            "",
            f"Before: `bench/baseline.json`, {baseline['events']:,} events, code "
            f"{baseline['machine'].get('git_commit')}, {baseline['machine'].get('date')}. "
            f"After: this run, code {results['machine'].get('git_commit')}.",
            "",
            *comparison_table(baseline, results),
            "",
        ]
    for extra in extra_runs or []:
        out += [f"## Also: {extra['events']:,} events", "",
                f"`{extra['command'].strip()}` on {extra['machine']['date']}, code {extra['machine'].get('git_commit')}, "
                f"load average {extra['machine'].get('load_average')} at the start.", "",
                *results_table(extra["phases"]), ""]
    if results.get("issuance"):
        out += issuance_section(results["issuance"])
    if results.get("http"):
        out += http_section(results["http"])
    if results.get("micro"):
        out += ["## Micro-benchmarks (pytest-benchmark, per call)", "",
                *micro_table(results["micro"], baseline.get("micro") if baseline else None), ""]
    if NARRATIVE.exists():
        out += [NARRATIVE.read_text().rstrip(), ""]
    return "\n".join(out)
