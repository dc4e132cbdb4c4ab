"""Issuance benchmark phases through the real command path, one per process: ``python -m bench.issuance NAME …``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path

from commands import cas, certificates, revoke, tenants
from commands.authz import SYSTEM
from commands.runtime import CommandContext
from domain.algorithms import ALGORITHMS
from domain.certspec import DistinguishedName, SubjectAltNames
from infra.audit.verify import verify_store
from infra.bootstrap import Runtime, initialise
from infra.config import Settings

TENANT = "acme"
PROFILE = "cassandra-node"
# The CA that signs each family's leaves: classical leaves under ECDSA P-384, ML-DSA under ML-DSA-65, hybrids
# under a hybrid P-384 + ML-DSA-65 hierarchy (root and intermediate of that algorithm).
CA_FOR_FAMILY = {"rsa": "ecdsa-p384", "ecdsa": "ecdsa-p384", "eddsa": "ecdsa-p384", "ml-dsa": "ml-dsa-65",
                 "hybrid": "hybrid-p384-ml-dsa-65"}
# (algorithm, sequential issuances, concurrent issuances): RSA key generation takes about a second, and its
# time varies a lot (a random prime search), so RSA-4096 gets 60 one-at-a-time samples for its p95.
SERVER_SIDE = (("rsa-4096", 60, 24), ("rsa-3072", 30, 32), ("ecdsa-p256", 200, 400), ("ecdsa-p384", 200, 400),
               ("ed25519", 200, 400), ("ml-dsa-44", 200, 400), ("ml-dsa-65", 200, 400), ("ml-dsa-87", 200, 400),
               ("hybrid-p256-ml-dsa-44", 200, 400), ("hybrid-p384-ml-dsa-65", 200, 400))
SERVER_CONCURRENCY = 8
RSA_KEY_POOL = 4  # the default of CSM_RSA_KEY_POOL, which `csm serve` (make run) uses
CSR_RUNS = ((1, 400), (32, 2000), (256, 2000))  # (concurrency, CSRs)
REVOCATIONS, REVOCATION_BLOCK = 3000, 500  # certificates revoked one at a time under one CA; reported per block


def plan() -> list[dict]:
    """The issuance steps for ``python -m bench`` (each on a fresh data directory)."""
    steps = [{"label": f"issuance: server-side {alg} key", "module": "bench.issuance", "dir": "scratch",
              "args": ["issue-server", "--algorithm", alg, "--sequential", str(seq), "--concurrent", str(conc),
                       "--concurrency", str(SERVER_CONCURRENCY)]} for alg, seq, conc in SERVER_SIDE]
    steps += [{"label": f"issuance: ECDSA P-256 CSRs x {c} concurrent", "module": "bench.issuance", "dir": "scratch",
               "args": ["issue-csr", "--requests", str(n), "--concurrency", str(c)]} for c, n in CSR_RUNS]
    steps.append({"label": f"issuance, then revocation: {REVOCATIONS:,} certificates of one CA revoked one at a time",
                  "module": "bench.issuance",
                  "dir": "scratch", "args": ["revoke", "--requests", str(REVOCATIONS), "--block", str(REVOCATION_BLOCK)]})
    return steps


def percentile(sorted_values, q: float) -> float:
    """Nearest-rank percentile (the same rule as bench.phases): with n = 20, p95 is the 19th value."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]


def summary(latencies: array, seconds: float, cpu_seconds: float) -> dict:
    values = sorted(latencies)
    n = len(values)
    return {"n": n, "seconds": seconds, "per_second": n / seconds if seconds else 0.0,
            "per_minute": n * 60 / seconds if seconds else 0.0, "cpu_ms_per_issuance": cpu_seconds * 1000 / n,
            **{f"latency_ms_{name}": percentile(values, q) * 1000
               for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))},
            "latency_ms_max": (values[-1] if values else 0.0) * 1000}


def node(i: int) -> tuple[DistinguishedName, SubjectAltNames]:
    name = f"node-{i}.acme.internal"
    return DistinguishedName(common_name=name, organization="Acme"), SubjectAltNames(dns=(name,))


async def hierarchy(runtime: Runtime, ca_algorithm: str) -> str:
    """A tenant with a root and an intermediate CA of ``ca_algorithm``; the intermediate's id."""
    ctx, services = CommandContext(principal=SYSTEM), runtime.services
    await tenants.create_tenant(tenants.CreateTenant(tenant_id=TENANT, name="Acme"), ctx, services)
    root = await cas.create_root_ca(cas.CreateRootCa(
        tenant_id=TENANT, name="Acme root", subject=DistinguishedName(common_name="Acme Root CA"),
        algorithm=ca_algorithm, path_length=1), ctx, services)
    intermediate = await cas.create_intermediate_ca(cas.CreateIntermediateCa(
        tenant_id=TENANT, parent_id=root.stream_id.removeprefix("ca-"), name="Acme nodes",
        subject=DistinguishedName(common_name="Acme Cassandra Nodes CA"), algorithm=ca_algorithm), ctx, services)
    return intermediate.stream_id.removeprefix("ca-")


async def run_requests(commands: list, concurrency: int, services) -> dict:
    """Issue every command, ``concurrency`` in flight (asyncio.gather behind a semaphore).

    Latency is each call's own time, from when it got a slot to its durable append; CPU is the whole
    process's (every thread), per issuance.
    """
    ctx, gate, latencies = CommandContext(principal=SYSTEM), asyncio.Semaphore(concurrency), array("d")

    async def one(command) -> None:
        async with gate:
            started = time.perf_counter()
            await certificates.issue_certificate(command, ctx, services)
            latencies.append(time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()
    if concurrency == 1:
        for command in commands:
            await one(command)
    else:
        await asyncio.gather(*(one(command) for command in commands))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return {"concurrency": concurrency, **summary(latencies, seconds, cpu_seconds)}


def audit(runtime: Runtime) -> dict:
    """Untimed: seal, verify the whole store, and count what the run wrote (events and vault keys)."""
    runtime.checkpointer.seal_all()
    report = verify_store(runtime.settings, runtime.store)
    if not report.ok:
        raise SystemExit(f"verification failed: {report.first_problem}")
    issued, position = 0, 0
    while envelopes := runtime.store.read_all_sync(position, 5000):
        issued += sum(1 for e in envelopes if e.type == "certificate.issued")
        position = envelopes[-1].global_position
    return {"events": report.events, "certificate_issued_events": issued, "verified": report.ok,
            "vault_keys": len(runtime.keys.key_ids(TENANT)) if runtime.keys else 0}


def on_fresh_store(data_dir: Path, body: Callable[[Runtime], Awaitable[dict]]) -> dict:
    """``body`` run on a runtime over ``data_dir`` (as `csm` opens it), then the untimed audit; closed either way."""
    runtime = initialise(Settings(data_dir=data_dir))
    try:
        result = asyncio.run(body(runtime))
        return {**result, **audit(runtime)}
    finally:
        runtime.close()


def phase_server(args) -> dict:
    """Server-side keys: generate, sign, encrypt into the vault, append; sequential, then concurrent."""
    family = ALGORITHMS[args.algorithm].family
    ca_algorithm = CA_FOR_FAMILY[family]

    def commands(first: int, count: int) -> list:
        return [certificates.IssueCertificate(tenant_id=TENANT, ca_id=ca_id, profile=PROFILE, subject=subject,
                                              sans=sans, algorithm=args.algorithm)
                for subject, sans in map(node, range(first, first + count))]

    async def body() -> dict:
        nonlocal ca_id
        ca_id = await hierarchy(runtime, ca_algorithm)
        await run_requests(commands(0, 1), 1, runtime.services)  # warm-up: loads the CA key (untimed)
        sequential = await run_requests(commands(1, args.sequential), 1, runtime.services)
        concurrent = await run_requests(commands(1 + args.sequential, args.concurrent), args.concurrency,
                                        runtime.services)
        return {"sequential": sequential, "concurrent": concurrent}

    ca_id = ""
    # As `csm serve` runs it: RSA keys kept ready in the background (CSM_RSA_KEY_POOL, default 4 per size).
    runtime = initialise(Settings(data_dir=args.dir, rsa_key_pool=RSA_KEY_POOL))
    runtime.services.crypto.rsa_pool.arm()
    try:
        result = asyncio.run(body())
        checks = audit(runtime)
    finally:
        runtime.services.crypto.rsa_pool.stop()
        runtime.close()
    return {"algorithm": args.algorithm, "family": family, "rsa_key_pool": RSA_KEY_POOL, "ca_algorithm": ca_algorithm,
            "profile": PROFILE,
            "issued": 1 + args.sequential + args.concurrent, "warm_up": 1, **result, **checks}


def make_csrs(first: int, count: int) -> list[str]:
    """``count`` distinct ECDSA P-256 CSRs (PEM), each for node-N with a matching DNS SAN."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    out = []
    for i in range(first, first + count):
        name = f"node-{i}.acme.internal"
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .sign(key, hashes.SHA256()))
        out.append(csr.public_bytes(serialization.Encoding.PEM).decode())
    return out


def phase_csr(args) -> dict:
    """CSR-based issuance: the requester keeps its key; CSRs are made before the clock starts."""
    started = time.perf_counter()
    csrs = make_csrs(0, args.requests + 1)
    generation = time.perf_counter() - started

    async def body(runtime: Runtime) -> dict:
        ca_id = await hierarchy(runtime, CA_FOR_FAMILY["ecdsa"])
        commands = [certificates.IssueCertificate(tenant_id=TENANT, ca_id=ca_id, profile=PROFILE, csr=csr)
                    for csr in csrs]
        await run_requests(commands[:1], 1, runtime.services)  # warm-up (untimed)
        return await run_requests(commands[1:], args.concurrency, runtime.services)

    return {"algorithm": "ecdsa-p256", "ca_algorithm": CA_FOR_FAMILY["ecdsa"], "profile": PROFILE,
            "issued": 1 + args.requests, "warm_up": 1, "csr_generation_seconds": generation,
            **on_fresh_store(args.dir, body)}


def phase_revoke(args) -> dict:
    """Revocation as a CA's revoked list grows: issue ``--requests`` certificates under one intermediate (untimed,
    32 in flight), revoke them one at a time (each revocation appends to the CA's stream, signs and stores the
    CA's next CRL listing every revocation so far, then appends to the certificate's stream), then issue 200
    more one at a time under the same CA. Latency per block of ``--block`` revocations."""
    csrs = make_csrs(0, args.requests + 200)

    async def body(runtime: Runtime) -> dict:
        ctx, services = CommandContext(principal=SYSTEM), runtime.services
        ca_id = await hierarchy(runtime, CA_FOR_FAMILY["ecdsa"])
        commands = [certificates.IssueCertificate(tenant_id=TENANT, ca_id=ca_id, profile=PROFILE, csr=csr)
                    for csr in csrs]
        gate, ids = asyncio.Semaphore(32), []

        async def issue(command) -> None:
            async with gate:
                ids.append((await certificates.issue_certificate(command, ctx, services)).certificate_id)

        await asyncio.gather(*(issue(command) for command in commands[:args.requests]))
        latencies = array("d")
        started, cpu = time.perf_counter(), time.process_time()
        for certificate_id in ids:
            began = time.perf_counter()
            await revoke.revoke_certificate(revoke.RevokeCertificate(tenant_id=TENANT, certificate_id=certificate_id,
                                                                     reason="superseded"), ctx, services)
            latencies.append(time.perf_counter() - began)
        revoked = summary(latencies, time.perf_counter() - started, time.process_time() - cpu)
        blocks = [{"revoked": min(start + args.block, len(latencies)),
                   **summary(latencies[start:start + args.block], sum(latencies[start:start + args.block]), 0.0)}
                  for start in range(0, len(latencies), args.block)]
        after = await run_requests(commands[args.requests:], 1, services)
        stored, size = services.artifacts.stored_bytes()
        return {"revocations": revoked, "blocks": blocks, "issuance_after": after,
                "artifacts": {"stored": stored, "bytes": size,
                              "file_bytes": sum(p.stat().st_size for p in args.dir.glob("artifacts.db*"))}}

    return {"ca_algorithm": CA_FOR_FAMILY["ecdsa"], "profile": PROFILE, "revoked": args.requests,
            **on_fresh_store(args.dir, body)}


PHASES = {"issue-server": phase_server, "issue-csr": phase_csr, "revoke": phase_revoke}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.issuance")
    parser.add_argument("name", choices=sorted(PHASES))
    parser.add_argument("--dir", type=Path, required=True, help="a fresh data directory")
    parser.add_argument("--algorithm", default="ecdsa-p256", choices=sorted(a for a, _, _ in SERVER_SIDE),
                        help="server-side key algorithm (issue-server)")
    parser.add_argument("--sequential", type=int, default=20, help="issuances one at a time (issue-server)")
    parser.add_argument("--concurrent", type=int, default=24, help="issuances with --concurrency in flight")
    parser.add_argument("--requests", type=int, default=1000, help="CSRs to issue (issue-csr), certificates to revoke (revoke)")
    parser.add_argument("--concurrency", type=int, default=SERVER_CONCURRENCY, help="requests in flight")
    parser.add_argument("--block", type=int, default=REVOCATION_BLOCK, help="revocations per reported block (revoke)")
    args = parser.parse_args(argv)
    if min(args.sequential, args.concurrent, args.requests, args.concurrency, args.block) < 1:
        parser.error("counts and --concurrency must be at least 1")
    result = {"phase": args.name, **PHASES[args.name](args)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
