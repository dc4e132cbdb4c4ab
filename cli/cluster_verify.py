"""`csm cluster verify`, and the check `deploy` and `rollback` run: does a node's TLS port serve the certificate deployed?

A check is a TLS handshake per port (``infra.discovery``, the discovery scan's: nothing is verified but the served
leaf's SHA-256 fingerprint, and a server that demands a client certificate still shows its own), repeated every
second until the port serves the expected certificate or ``--verify-within`` seconds have passed (a reload takes a
moment). Its outcome is recorded as ``certificate.deployment_verified`` on the expected certificate's stream. The
standalone command connects to the TLS ports only, never over SSH, and changes nothing on the nodes.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import click
import msgspec

from cli.ca import convert
from cli.common import CliError, catch_up, command_context, run_async, runtime_for
from cli.metrics_file import metrics_file_option, recorded_run
from commands import deployments
from domain.certificate import VerifiedPort
from domain.discovery import Target, TargetError, parse_target
from domain.errors import DomainError
from infra import discovery
from infra.config import Settings
from projections import certificate_queries as read_model
from projections import deployments as deployments_model

DEFAULT_WITHIN = 60


def verify_options(command):
    """``--verify-port`` and ``--verify-within``, as deploy and rollback take them."""
    command = click.option("--verify-within", type=click.IntRange(1, 3600), default=DEFAULT_WITHIN, show_default=True,
                           help="Seconds to wait for every --verify-port to serve the certificate.")(command)
    return click.option("--verify-port", "verify_ports", multiple=True, type=click.IntRange(1, 65535),
                        metavar="PORT", help="After the install (and reload), check that the node's TLS PORT serves "
                        "the deployed certificate (repeatable: 9142 native, 7001 internode...). None: no check.")(command)


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    """A check's outcome: what each port served (as recorded), whether all served the certificate, and the summary
    lines (one per port) to print. Decisions are taken from ``ports``, never from the lines."""

    ports: tuple[VerifiedPort, ...]
    verified: bool
    lines: list[str]


def check(runtime, *, tenant_id: str, node: str, host: str, ports: tuple[int, ...], certificate_id: str,
          fingerprint: str, within: int, after: str) -> Checked:
    """Check every port, record the outcome."""
    async def all_ports() -> list[tuple]:
        return list(await asyncio.gather(*(discovery.await_served(Target(host=host, port=port), fingerprint,
                                                                  within=within) for port in ports)))

    seen = [_port(port, observed, attempts, fingerprint)
            for port, (observed, attempts) in zip(ports, run_async(all_ports()))]
    outcome = run_async(deployments.record_verification(convert({
        "tenant_id": tenant_id, "certificate_id": certificate_id, "node": node, "host": host, "ports": seen,
        "after": after}, deployments.RecordVerification), command_context(), runtime.services))
    lines = [f"  verify {host}:{p.port}: " + (f"serves certificate {certificate_id}" if p.matched else "FAILED: " + (
        f"serves another certificate (sha256:{p.served_fingerprint})" if p.served_fingerprint else p.error or "?"))
        + f" ({p.attempts} handshake{'s' * (p.attempts > 1)})" for p in seen]
    return Checked(ports=tuple(seen), verified=outcome.verified, lines=lines)


def how_unfinished(node_row: dict) -> str:
    """How the node's record says its started deployment ended: failed (at which step, why), or never recorded."""
    if node_row["failed_at"]:
        return (f"failed at {node_row['failed_at']} ({node_row['failed_step']}: {node_row['failed_reason']}) and was "
                "never recorded as done")
    return "was never recorded as done"


def _port(port: int, observed, attempts: int, fingerprint: str) -> VerifiedPort:
    error = f"{observed.error}: {observed.reason}" if observed.error else None
    return VerifiedPort(port=port, served_fingerprint=observed.fingerprint_sha256,
                        matched=observed.fingerprint_sha256 == fingerprint, error=error[:300] if error else None,
                        attempts=attempts)


def _endpoint(text: str) -> tuple[str, Target]:
    name, _, endpoint = text.partition("=")
    try:
        targets = parse_target(endpoint, ())
    except TargetError as exc:
        raise click.BadParameter(f"{text!r}: NAME=host:port expected ({exc})", param_hint="--node") from None
    if not name or len(targets) != 1 or targets[0].swept:
        raise click.BadParameter(f"{text!r}: NAME=host:port expected (one host, its TLS port)", param_hint="--node")
    return name, targets[0]


@click.command("verify")
@click.option("--node", "nodes", multiple=True, required=True, metavar="NAME=HOST:PORT",
              help="A node's TLS endpoint (repeatable; NAME again for its other ports).")
@click.option("--tenant", "tenant_id", default="platform", show_default=True)
@click.option("--within", type=click.IntRange(1, 3600), default=5, show_default=True,
              help="Seconds to wait for each port to serve the expected certificate.")
@metrics_file_option
@click.pass_obj
def verify(settings: Settings, nodes: tuple[str, ...], tenant_id: str, within: int, metrics_file: Path | None) -> None:
    """Check that each node serves the certificate last deployed to it (as the store records it), audited.

    Read-only for the nodes: TLS handshakes, no SSH. Exit status 1 if any node did not verify. With
    --metrics-file, the run is recorded for node_exporter's textfile collector (csm_cluster_verify_*).
    """
    by_node: dict[str, list[Target]] = defaultdict(list)
    for text in nodes:
        name, target = _endpoint(text)
        by_node[name].append(target)
    with recorded_run(metrics_file, "cluster_verify") as run:
        failed = _verify_all(settings, by_node, tenant_id, within)
        run.count(nodes=len(by_node), nodes_failed=failed)
        run.success = not failed
    click.echo(f"{len(by_node)} node(s): {len(by_node) - failed} verified, {failed} not verified")
    if failed:
        raise SystemExit(1)


def _verify_all(settings: Settings, by_node: dict[str, list[Target]], tenant_id: str, within: int) -> int:
    """Each node's lines, printed as it is checked; how many did not verify."""
    failed = 0
    with runtime_for(settings) as runtime:
        catch_up(runtime)
        for name, targets in by_node.items():
            if len({t.host for t in targets}) > 1:
                raise click.BadParameter(f"node {name} is given two hosts", param_hint="--node")
            try:
                line, ok = _verify_one(runtime, tenant_id, name, targets, within)
            except (CliError, DomainError) as exc:
                text = exc.format_message() if isinstance(exc, CliError) else f"{exc.code}: {exc.detail}"
                line, ok = f"{name}: NOT VERIFIED: {text}", False
            click.echo(line)
            failed += not ok
    return failed


def _verify_one(runtime, tenant_id: str, name: str, targets: list[Target], within: int) -> tuple[str, bool]:
    """Check the certificate the node's record (the deployments read model) says it holds."""
    conn = runtime.runner.connection()
    try:
        node = deployments_model.node(conn, tenant_id, name)
        row = read_model.get(conn, node["certificate_id"], tenant_id) if node and node["certificate_id"] else None
        started = read_model.get(conn, node["started_certificate_id"], tenant_id) \
            if node and node["started_certificate_id"] else None
    finally:
        conn.close()
    if node is None or node["state"] == "none":
        raise CliError(f"no certificate is recorded as deployed to {name} in tenant {tenant_id} (csm cluster deploy)")
    if row is None:
        raise CliError(f"{name} holds files no recorded deployment installed (a rollback put them back at "
                       f"{node['since']}): there is no certificate to check; deploy one")
    checked = check(runtime, tenant_id=tenant_id, node=name, host=targets[0].host,
                    ports=tuple(t.port for t in targets), certificate_id=row["certificate_id"],
                    fingerprint=row["fingerprint"], within=within, after="check")
    how = "deployed" if node["state"] == "deployed" else "restored by a rollback"
    head = f"{name}: {'verified' if checked.verified else 'NOT VERIFIED'}: certificate {row['certificate_id']} " \
           f"({how} {node['since']} by {node['actor']})"
    lines = list(checked.lines)
    if started is not None:
        lines.append(f"  unfinished: a deployment of certificate {started['certificate_id']} started at "
                     f"{node['started_at']} by {node['started_actor']} {how_unfinished(node)}"
                     + _serving_started(checked.ports, started["fingerprint"], row["fingerprint"]))
    return "\n".join([head, *lines]), checked.verified


def _serving_started(ports: tuple[VerifiedPort, ...], started: str, recorded: str) -> str:
    """What the ports' served fingerprints say of an unfinished deployment: every port serves its certificate (the
    renames were done), only some do, or none (nothing to add)."""
    if started == recorded:  # the same certificate deployed again: what is served cannot tell new files from old
        return ""
    serving = [p.port for p in ports if p.served_fingerprint == started]
    if not serving:
        return ""
    if len(serving) == len(ports):
        return "; the node serves that certificate (its renames were done): deploy again to record it"
    others = [p.port for p in ports if p.served_fingerprint != started]
    return (f"; port {', '.join(map(str, serving))} serves that certificate and port {', '.join(map(str, others))} "
            "does not (some of its files may be in place): deploy again")
