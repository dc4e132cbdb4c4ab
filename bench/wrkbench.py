"""HTTP benchmarks with wrk: CSR issuance against ``csm serve`` and ``cfssl serve`` in the same run, then reads.

``python -m bench.wrkbench http --dir DIR [--duration S] [--csrs N]`` prints one JSON object on stdout.

1. Makes N distinct ECDSA P-256 CSRs (its own key, subject and DNS SAN each), unless a file of them
   from an earlier run is in DIR's parent (they are made before any clock starts).
2. Starts ``csm serve`` exactly as ``make run`` does (``csm --data-dir D init``, then ``csm --data-dir D
   serve``: uvicorn, one process, the embedded SQLite store), with the rate limits switched off
   (``CSM_RATE_LIMIT_PER_PRINCIPAL=`` and ``CSM_RATE_LIMIT_PER_ADDRESS=``), and an API key from
   ``csm admin create-token``. Over HTTP: a tenant, an ECDSA P-384 root and intermediate CA.
3. Starts ``cfssl serve`` with an ECDSA P-384 intermediate (made here) as its CA, and a second
   ``cfssl serve`` with the same CA and ``-db-config``: its SQLite certificate database, so that it
   stores every certificate it signs before answering.
4. For each connection count (32, 256): wrk against ours, then the two cfssl, each request
   carrying the next unused CSR (bench/wrk_cycle.lua). Every 2xx of ours is a certificate whose
   ``certificate.issued`` event was durably appended to the hash-chained log before the answer.
5. Reads at 1,000 connections: ``GET /v1/certificates/{id}`` cycling through the issued ids, and
   ``GET /v1/certificates?tenant_id=acme&common_name=…`` (search) cycling through their names.
6. Stops both servers (SIGTERM) and reports each one's peak RSS (``/usr/bin/time -v``); after the
   runs ``GET /v1/audit/verify`` must pass and the certificates counted by the log must equal the
   201 answers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "wrk_cycle.lua"
GNU_TIME = Path("/usr/bin/time")
TENANT = "acme"
QUOTA_TENANT = "quota-bound"
QUOTAS = {"max_certificates": 1_000_000, "max_issuances_per_day": 1_000_000}
PROFILE = "cassandra-node"
CA_ALGORITHM = "ecdsa-p384"  # both CAs sign with ECDSA P-384 (SHA-384)
ISSUE_CONNECTIONS = (32, 256)
PLAN = [{"label": "HTTP (wrk): csm serve and cfssl serve signing CSRs, reads at 1,000 connections",
         "module": "bench.wrkbench", "dir": "scratch", "args": ["http"]}]
READ_CONNECTIONS = 1000
PACED_DELAY_MS = 1000  # paced reads: each connection waits 0-2 s (mean 1 s) after an answer
WRK_THREADS = 2


# --- material ----------------------------------------------------------------------------------

def make_csrs(path: Path, count: int) -> None:
    """``count`` distinct ECDSA P-256 CSRs, one JSON string literal (the PEM) a line."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        for i in range(count):
            name = f"node-{i}.acme.internal"
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
                                            x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .sign(key, hashes.SHA256()))
            out.write(json.dumps(csr.public_bytes(serialization.Encoding.PEM).decode()) + "\n")
    tmp.rename(path)


def cfssl_ca(directory: Path) -> None:
    """An ECDSA P-384 root and intermediate for cfssl (ca.pem, ca-key.pem) and its signing config."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def build(subject: str, key, issuer_name, issuer_key, path_length: int):
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
                          x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(issuer_key or key, hashes.SHA384()))
        return cert

    root_key, ca_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    root = build("Acme Root CA (cfssl)", root_key, None, None, 1)
    ca = build("Acme Cassandra Nodes CA (cfssl)", ca_key, root.subject, root_key, 0)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "ca-key.pem").write_bytes(ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    (directory / "config.json").write_text(json.dumps({"signing": {"default": {
        "expiry": "8760h", "usages": ["digital signature", "key encipherment", "server auth", "client auth"]}}}))


# cfssl's SQLite certificate database (certdb/sqlite/migrations of cfssl 1.2): with -db-config, `cfssl serve`
# INSERTs every certificate it signs before answering (go-sqlite3 defaults: rollback journal, synchronous=FULL).
CFSSL_CERTDB = """
CREATE TABLE certificates (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, ca_label blob,
  status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL,
  PRIMARY KEY (serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, body blob NOT NULL,
  expiry timestamp, PRIMARY KEY (serial_number, authority_key_identifier));
"""


def cfssl_certdb(directory: Path) -> Path:
    """An empty certdb for cfssl and its -db-config file."""
    import sqlite3
    db = directory / "certs.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(CFSSL_CERTDB)
    config = directory / "db-config.json"
    config.write_text(json.dumps({"driver": "sqlite3", "data_source": str(db)}))
    return config


def count_cfssl_certificates(directory: Path) -> int:
    import sqlite3
    with sqlite3.connect(f"file:{directory / 'certs.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM certificates").fetchone()[0]


# --- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile() -> int:
    """Raise this process's (and so its children's) open-file limit to the hard limit: 1,000 sockets each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Server:
    """A server process under ``/usr/bin/time -v`` (for its peak RSS), stopped with SIGTERM."""

    def __init__(self, name: str, command: list[str], env: dict, log: Path, timing: Path) -> None:
        self.name, self.timing = name, timing
        wrapped = [str(GNU_TIME), "-v", "-o", str(timing), *command] if GNU_TIME.exists() else command
        self.log = log.open("w")
        self.proc = subprocess.Popen(wrapped, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.started_cpu = None

    def child_pid(self) -> int:
        if not GNU_TIME.exists():
            return self.proc.pid
        for _ in range(100):
            try:
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                children = []
            if children:
                return int(children[0])
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no child process under /usr/bin/time")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (/proc/PID/stat) of the server and every process under it (a
        multi-worker ``csm serve`` is a supervisor, a primary and its workers), all their threads."""
        total, pending = 0, [self.child_pid()]
        while pending:
            pid = pending.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:  # it exited meanwhile
                continue
        return total / os.sysconf("SC_CLK_TCK")

    def settle(self, idle_cores: float = 0.05, longest: float = 30.0) -> float:
        """Wait until the server is idle (under ``idle_cores`` of CPU over half a second): a run must not pay for
        the requests an earlier run left queued. Returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < longest:
            before = self.cpu_seconds()
            time.sleep(0.5)
            if self.cpu_seconds() - before < idle_cores * 0.5:
                break
        return time.monotonic() - started

    def stop(self) -> dict:
        try:
            os.kill(self.child_pid(), signal.SIGTERM)
        except (ProcessLookupError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        out = {}
        if self.timing.exists():
            text = self.timing.read_text()
            for key, label in (("max_rss_kib", "Maximum resident set size (kbytes)"),
                               ("cpu_percent", "Percent of CPU this job got")):
                for line in text.splitlines():
                    if line.strip().startswith(label):
                        out[key] = int(line.rsplit(":", 1)[1].strip().rstrip("%") or 0)
        return out


def http(method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 30) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def wait_until_up(url: str, server: Server, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited with status {server.proc.returncode}; see its log")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{server.name} did not answer {url} within {seconds} s")


# --- wrk ---------------------------------------------------------------------------------------

def wrk(url: str, items: Path, mode: str, offset: int, connections: int, duration: int, env: dict) -> dict:
    """One wrk run; its summary (requests, errors, latency percentiles) plus requests/s and the load before."""
    threads = min(WRK_THREADS, connections)
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s",
               "-s", str(LUA), url, "--", str(items), mode, str(offset), str(threads)]
    load = os.getloadavg()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result = json.loads(line.removeprefix("WRK_JSON "))
    errors = result["errors"]
    ok = result["requests"] - errors["status"]
    seconds = result["duration_us"] / 1e6
    result.update({
        "connections": connections, "threads": threads, "duration_s": seconds, "ok": ok,
        "requests_per_second": ok / seconds if seconds else 0.0,
        "latency_ms": {k: v / 1000 for k, v in result.pop("latency_us").items()},
        "load_before": load[0], "load_before_all": list(load),
        "wrapped": result["sent"] > result["items"],
        "command": " ".join(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout",
                             "10s", "-s", "bench/wrk_cycle.lua", "URL", "--", "FILE", mode, "OFFSET", str(threads)]),
    })
    return result


# --- the run -----------------------------------------------------------------------------------

def start_csm(data_dir: Path, port: int, work: Path) -> tuple[Server, str, dict]:
    csm = str(Path(sys.executable).parent / "csm")
    env = {**os.environ, "CSM_DATA_DIR": str(data_dir), "CSM_RATE_LIMIT_PER_PRINCIPAL": "",
           "CSM_RATE_LIMIT_PER_ADDRESS": ""}
    subprocess.run([csm, "--data-dir", str(data_dir), "init"], env=env, check=True, capture_output=True)
    token = subprocess.run([csm, "--data-dir", str(data_dir), "admin", "create-token", "--name", "bench",
                            "--role", "platform-admin"], env=env, check=True, capture_output=True,
                           text=True).stdout.strip().splitlines()[-1]
    server = Server("csm serve", [csm, "--data-dir", str(data_dir), "serve", "--host", "127.0.0.1", "--port",
                                  str(port)], env, work / "csm-serve.log", work / "csm-serve.time.txt")
    wait_until_up(f"http://127.0.0.1:{port}/health/live", server)
    return server, token, env


def setup_hierarchy(base: str, token: str, tenant: str = TENANT, quotas: dict | None = None) -> str:
    http("POST", f"{base}/v1/tenants", {"tenant_id": tenant, "name": "Acme", "quotas": quotas or {}}, token)
    root = http("POST", f"{base}/v1/cas", {"kind": "root", "tenant_id": tenant, "name": "Acme root",
                                           "subject": {"common_name": "Acme Root CA", "organization": "Acme"},
                                           "algorithm": CA_ALGORITHM, "path_length": 1}, token)["ca_id"]
    return http("POST", f"{base}/v1/cas", {"kind": "intermediate", "tenant_id": tenant, "parent_id": root,
                                           "name": "Acme nodes", "algorithm": CA_ALGORITHM,
                                           "subject": {"common_name": "Acme Cassandra Nodes CA",
                                                       "organization": "Acme"}}, token)["ca_id"]


def issued_certificates(base: str, token: str) -> list[dict]:
    rows, cursor = [], None
    while True:
        query = f"tenant_id={TENANT}&limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = http("GET", f"{base}/v1/certificates?{query}", token=token)
        rows += [{"id": r["certificate_id"], "cn": r["common_name"]} for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return rows


def run(args) -> dict:
    nofile = raise_nofile()
    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    csr_file = work.parent / f"csrs-p256-{args.csrs}.txt"
    started = time.perf_counter()
    if not csr_file.exists():
        make_csrs(csr_file, args.csrs)
    csr_seconds = time.perf_counter() - started

    servers: list[Server] = []
    result: dict = {"csrs": args.csrs, "csr_generation_seconds": csr_seconds, "nofile": nofile,
                    "duration_s": args.duration, "issuance": [], "reads": [], "paced_reads": []}
    try:
        # ours, exactly as `make run` starts it
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        csm, token, _ = start_csm(work / "csm-data", port, work)
        servers.append(csm)
        # cfssl, with its own P-384 intermediate; then the same CA again with its SQLite certificate database
        cfssl_ca(work / "cfssl")
        common = ["-ca", str(work / "cfssl" / "ca.pem"), "-ca-key", str(work / "cfssl" / "ca-key.pem"),
                  "-config", str(work / "cfssl" / "config.json")]
        cfssl_port, cfssl_db_port = free_port(), free_port()
        cfssl = Server("cfssl serve", ["cfssl", "serve", "-address", "127.0.0.1", "-port", str(cfssl_port), *common],
                       dict(os.environ), work / "cfssl-serve.log", work / "cfssl-serve.time.txt")
        servers.append(cfssl)
        cfssl_db = Server("cfssl serve -db-config", [
            "cfssl", "serve", "-address", "127.0.0.1", "-port", str(cfssl_db_port), *common,
            "-db-config", str(cfssl_certdb(work / "cfssl"))],
            dict(os.environ), work / "cfssl-db-serve.log", work / "cfssl-db-serve.time.txt")
        servers.append(cfssl_db)
        cfssl_base, cfssl_db_base = f"http://127.0.0.1:{cfssl_port}", f"http://127.0.0.1:{cfssl_db_port}"
        wait_until_up(f"{cfssl_base}/api/v1/cfssl/info", cfssl)
        wait_until_up(f"{cfssl_db_base}/api/v1/cfssl/info", cfssl_db)
        result.update(run_loads(args, result, csr_file, work, base, token, csm, cfssl_base, cfssl, cfssl_db_base,
                                cfssl_db))
    finally:
        for key, server in zip(("csm_process", "cfssl_process", "cfssl_db_process"), servers):
            result[key] = server.stop()
    result["certificate_issued_events"] = count_issued(work / "csm-data")
    result["cfssl_db_certificates"] = count_cfssl_certificates(work / "cfssl")
    result["cfssl_db_ok"] = 1 + sum(r["cfssl_db"]["ok"] for r in result["issuance"])
    return result


def run_loads(args, result: dict, csr_file: Path, work: Path, base: str, token: str, csm: Server, cfssl_base: str,
              cfssl: Server, cfssl_db_base: str, cfssl_db: Server) -> dict:
    """The wrk runs, with every server up; fills and returns ``result``."""
    ca_id = setup_hierarchy(base, token)
    first_csr = json.loads(csr_file.open().readline())
    # one untimed request each: loads the CA key, warms caches and connections
    http("POST", f"{base}/v1/certificates", {"tenant_id": TENANT, "ca_id": ca_id, "profile": PROFILE,
                                              "csr": first_csr}, token)
    http("POST", f"{cfssl_base}/api/v1/cfssl/sign", {"certificate_request": first_csr})
    http("POST", f"{cfssl_db_base}/api/v1/cfssl/sign", {"certificate_request": first_csr})
    ours_env = {**os.environ, "BENCH_TOKEN": token, "BENCH_SUFFIX": "}",
                "BENCH_PREFIX": json.dumps({"tenant_id": TENANT, "ca_id": ca_id, "profile": PROFILE})[:-1]
                + ', "csr": '}
    cfssl_env = {**os.environ, "BENCH_TOKEN": "", "BENCH_PREFIX": '{"certificate_request": ',
                 "BENCH_SUFFIX": "}"}
    offsets = {"csm": 1, "cfssl": 1, "cfssl_db": 1}
    for connections in args.connections:
        row = {"connections": connections}
        for name, url, env, server in (("csm", f"{base}/v1/certificates", ours_env, csm),
                                       ("cfssl", f"{cfssl_base}/api/v1/cfssl/sign", cfssl_env, cfssl),
                                       ("cfssl_db", f"{cfssl_db_base}/api/v1/cfssl/sign", cfssl_env, cfssl_db)):
            for other in (csm, cfssl, cfssl_db):
                other.settle()
            cpu = server.cpu_seconds()
            print(f"  wrk POST {name} x {connections} ...", end="", flush=True, file=sys.stderr)
            row[name] = wrk(url, csr_file, "post", offsets[name], connections, args.duration, env)
            row[name]["server_cpu_seconds"] = server.cpu_seconds() - cpu
            offsets[name] += row[name]["sent"]
            print(f" {row[name]['requests_per_second']:,.0f}/s", file=sys.stderr)
        row["ratio"] = (row["csm"]["requests_per_second"] / row["cfssl"]["requests_per_second"]
                        if row["cfssl"]["requests_per_second"] else None)
        row["ratio_db"] = (row["csm"]["requests_per_second"] / row["cfssl_db"]["requests_per_second"]
                           if row["cfssl_db"]["requests_per_second"] else None)
        result["issuance"].append(row)

    # the same issuance for a tenant with quotas: every issuance counts what they bound (commands/quotas.py)
    quota_ca = setup_hierarchy(base, token, QUOTA_TENANT, QUOTAS)
    quota_env = {**ours_env, "BENCH_PREFIX": json.dumps({"tenant_id": QUOTA_TENANT, "ca_id": quota_ca,
                                                          "profile": PROFILE})[:-1] + ', "csr": '}
    csm.settle()
    cpu = csm.cpu_seconds()
    connections = args.connections[0]
    print(f"  wrk POST csm (tenant with quotas) x {connections} ...", end="", flush=True, file=sys.stderr)
    run_ = wrk(f"{base}/v1/certificates", csr_file, "post", offsets["csm"], connections, args.duration, quota_env)
    run_["server_cpu_seconds"] = csm.cpu_seconds() - cpu
    run_["quotas"] = QUOTAS
    offsets["csm"] += run_["sent"]
    print(f" {run_['requests_per_second']:,.0f}/s", file=sys.stderr)
    result["quota_issuance"] = run_

    # reads, at 1,000 connections
    certs = issued_certificates(base, token)
    result["certificates_listed"] = len(certs)
    by_id, search = work / "paths-by-id.txt", work / "paths-search.txt"
    by_id.write_text("".join(f"/v1/certificates/{c['id']}\n" for c in certs))
    search.write_text("".join(f"/v1/certificates?tenant_id={TENANT}&common_name={c['cn']}\n"
                              for c in certs if c["cn"]))
    read_env = {**os.environ, "BENCH_TOKEN": token}
    for label, items in (("GET /v1/certificates/{id}", by_id),
                         (f"GET /v1/certificates?tenant_id={TENANT}&common_name=NAME", search)):
        csm.settle()
        cpu = csm.cpu_seconds()
        print(f"  wrk {label} x {args.read_connections} ...", end="", flush=True, file=sys.stderr)
        run_ = wrk(f"{base}/", items, "get", 0, args.read_connections, args.duration, read_env)
        run_["server_cpu_seconds"] = csm.cpu_seconds() - cpu
        run_["label"] = label
        print(f" {run_['requests_per_second']:,.0f}/s p95 {run_['latency_ms']['p95']:,.1f} ms",
              file=sys.stderr)
        result["reads"].append(run_)
    # the same reads from 1,000 connections that each ask about once a second (a paced, open-ish load)
    paced_env = {**read_env, "BENCH_DELAY_MS": str(PACED_DELAY_MS)}
    for label, items in (("GET /v1/certificates/{id}", by_id),
                         (f"GET /v1/certificates?tenant_id={TENANT}&common_name=NAME", search)):
        csm.settle()
        cpu = csm.cpu_seconds()
        print(f"  wrk {label} x {args.read_connections}, paced ...", end="", flush=True, file=sys.stderr)
        run_ = wrk(f"{base}/", items, "get", 0, args.read_connections, args.duration, paced_env)
        run_["server_cpu_seconds"] = csm.cpu_seconds() - cpu
        run_["label"] = label
        run_["paced_delay_ms"] = PACED_DELAY_MS
        run_["command"] = f"BENCH_DELAY_MS={PACED_DELAY_MS} {run_['command']}"
        print(f" {run_['requests_per_second']:,.0f}/s p95 {run_['latency_ms']['p95']:,.1f} ms",
              file=sys.stderr)
        result["paced_reads"].append(run_)

    # every 201 is a certificate in the log, and the log verifies
    verify = http("GET", f"{base}/v1/audit/verify", token=token, timeout=600)
    result["verify_ok"] = bool(verify.get("ok"))
    result["verify"] = {k: verify.get(k) for k in ("ok", "events", "streams", "checkpoints") if k in verify}
    result["ok_201"] = (1 + sum(r["csm"]["ok"] for r in result["issuance"])  # with the warm-up
                        + result["quota_issuance"]["ok"])
    return result


def count_issued(data_dir: Path) -> int:
    import sqlite3
    with sqlite3.connect(f"file:{data_dir / 'events.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE type = 'certificate.issued'").fetchone()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wrkbench", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=["http"])
    parser.add_argument("--dir", type=Path, required=True, help="a scratch directory (emptied first)")
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--csrs", type=int, default=60_000, help="distinct CSRs to make (cached next to --dir)")
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")],
                        default=list(ISSUE_CONNECTIONS), help="issuance connection counts, e.g. 32,256")
    parser.add_argument("--read-connections", type=int, default=READ_CONNECTIONS)
    args = parser.parse_args(argv)
    for tool in ("wrk", "cfssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install {'golang-cfssl' if tool == 'cfssl' else tool} "
                             "(make bench installs it)")
    result = {"phase": "http", **run(args)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
