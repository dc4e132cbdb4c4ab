"""`csm cluster bootstrap-tls`: the Cassandra cluster's own TLS material, issued by this service.

For each node a `cassandra-node` certificate (server and client auth, DNS and IP names) as a
JKS keystore and the CA as a JKS truststore, for client and internode encryption; for the
service itself a `cassandra-client` certificate (PEM) to authenticate to the cluster with
mutual TLS. Everything goes through the ordinary commands, so every issuance and every key
export is in the audit trail.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

import click

from cli.ca import convert
from cli.common import CliError, catch_up, command_context, run_async, runtime_for
from commands import cas as ca_commands
from commands import certificates as cert_commands
from commands import tenants as tenant_commands
from domain.errors import AlreadyExists
from infra.config import Settings
from infra.export.bundle import node_keystores, render
from infra.private_files import write_file
from projections import cas as ca_model
from projections import certificate_queries as read_model

DEFAULT_NODES = ("cassandra-1=172.28.0.11", "cassandra-2=172.28.0.12", "cassandra-3=172.28.0.13")
CLUSTER_CA_NAME = "cassandra-cluster"


@click.group()
def cluster() -> None:
    """The Cassandra cluster's TLS material."""


def _node(text: str) -> tuple[str, str | None]:
    name, _, address = text.partition("=")
    if not name:
        raise click.BadParameter(f"{text!r}: NAME or NAME=IP expected", param_hint="--node")
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.BadParameter(f"{text!r}: {address!r} is not an IPv4 or IPv6 address",
                                     param_hint="--node") from None
    return name, address or None


def _cluster_ca(conn, tenant_id: str) -> str | None:
    """The tenant's active root made by an earlier run, so that re-running rotates under it; None if there is none.

    Several of them (left by runs before re-running reused it) are ambiguous: the operator names one with --ca.
    """
    roots = [row["ca_id"] for row in ca_model.search(conn, tenant_id, status="active", kind="root", limit=1000)
             if row["name"] == CLUSTER_CA_NAME]
    if len(roots) > 1:
        raise CliError(f"{len(roots)} active {CLUSTER_CA_NAME} roots in tenant {tenant_id} ({', '.join(roots)}): "
                       "pass the one the nodes trust as --ca")
    return roots[0] if roots else None


def also_trusted(conn, tenant_id: str, ca_ids: tuple[str, ...], now) -> list[dict]:
    """The root certificates (every unexpired one of each root's keys) of the tenant's CAs ``ca_ids``, for
    truststores that must accept a second cluster CA; an unknown or pending CA is refused by name."""
    rows: list[dict] = []
    for extra in ca_ids:
        ca_row = ca_model.get(conn, extra, tenant_id)
        if ca_row is None or not ca_row["fingerprint"]:
            raise CliError(f"--also-trust {extra}: no CA with a certificate of that id in tenant {tenant_id}")
        rows += ca_model.trust_anchors(conn, tenant_id, ca_row["fingerprint"], now)
    return rows


def _write(path: Path, data: bytes, private: bool) -> None:
    """0600 for keys, keystores and the password, also over a file a rotation finds there with a wider mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    write_file(path, data, mode=0o600 if private else 0o644)


@cluster.command("bootstrap-tls")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the keystores, truststore, client certificate and password file.")
@click.option("--tenant", "tenant_id", default="platform", show_default=True,
              help="The tenant that owns the cluster CA (created if missing).")
@click.option("--ca", "ca_id", default=None, help="Issue under this existing CA instead of the tenant's cassandra-cluster root "
                   "(created by the first run, reused by the next).")
@click.option("--node", "nodes", multiple=True, default=DEFAULT_NODES, show_default=True,
              help="NAME=IP of a node (repeatable): the certificate names both, as Java and the driver check them.")
@click.option("--also-trust", "also_trust", multiple=True, metavar="CA_ID",
              help="Put this CA's root certificates in the truststores and ca.pem too (repeatable): replacing the "
                   "cluster CA, nodes must trust the old and the new one through the rolling restarts.")
@click.option("--client-name", default="csm", show_default=True, help="Common name of the service's client cert.")
@click.option("--validity-days", type=click.IntRange(1, 825), default=365, show_default=True)
@click.pass_obj
def bootstrap_tls(settings: Settings, out_dir: Path, tenant_id: str, ca_id: str | None, nodes: tuple[str, ...],
                  also_trust: tuple[str, ...], client_name: str, validity_days: int) -> None:
    """Issue node keystores (JKS), the truststore and the service's client certificate into --out.

    The first run creates the root CA cassandra-cluster in --tenant; re-running issues fresh
    certificates under that same CA (the rotation procedure in docs/operations.md), never a
    second root the nodes do not trust. The keystore password is kept in
    --out/keystore.password (0600) and reused.
    """
    parsed = [_node(text) for text in nodes]  # every --node checked before anything is written or issued
    password_file = out_dir / "keystore.password"
    password = password_file.read_text().strip() if password_file.exists() else secrets.token_urlsafe(24)
    with runtime_for(settings) as runtime:  # refuses an uninitialised data directory before anything is written
        _write(password_file, password.encode() + b"\n", private=True)
        services, ctx = runtime.services, command_context()
        try:
            run_async(tenant_commands.create_tenant(convert({"tenant_id": tenant_id, "name": "Platform"},
                                                            tenant_commands.CreateTenant), ctx, services))
        except AlreadyExists:
            pass
        catch_up(runtime)
        conn = runtime.runner.connection()
        try:
            if ca_id is None:
                ca_id = _cluster_ca(conn, tenant_id)
            extra = also_trusted(conn, tenant_id, also_trust, services.clock.now())  # refused before any issuance
        finally:
            conn.close()
        if ca_id is None:
            result = run_async(ca_commands.create_root_ca(convert({
                "tenant_id": tenant_id, "name": CLUSTER_CA_NAME, "algorithm": "ecdsa-p384",
                "subject": {"common_name": "Cassandra cluster CA", "organization": "Cassandra Security Manager"}},
                ca_commands.CreateRootCa), ctx, services))
            ca_id = result.stream_id.removeprefix("ca-")
        issued: list[tuple[str, str, str]] = []  # (directory, certificate id, kind)
        for name, address in parsed:
            outcome = run_async(cert_commands.issue_certificate(convert({
                "tenant_id": tenant_id, "ca_id": ca_id, "profile": "cassandra-node", "algorithm": "ecdsa-p256",
                "subject": {"common_name": name}, "validity_days": validity_days,
                "sans": {"dns": [name], "ip": [address] if address else []}}, cert_commands.IssueCertificate),
                ctx, services))
            issued.append((name, outcome.certificate_id, "node"))
        outcome = run_async(cert_commands.issue_certificate(convert({
            "tenant_id": tenant_id, "ca_id": ca_id, "profile": "cassandra-client", "algorithm": "ecdsa-p256",
            "subject": {"common_name": client_name}, "validity_days": validity_days}, cert_commands.IssueCertificate),
            ctx, services))
        issued.append(("client", outcome.certificate_id, "client"))
        catch_up(runtime)
        conn = runtime.runner.connection()
        try:
            for directory, certificate_id, kind in issued:
                row = read_model.get(conn, certificate_id, None)
                if row is None:
                    raise CliError(f"certificate {certificate_id} is not in the read model yet; re-run")
                chain = ca_model.issuer_chain(conn, row["tenant_id"], row["issuer_fingerprint"], services.clock.now())
                trust = ca_model.truststore_chain(conn, row["tenant_id"], row["issuer_fingerprint"],
                                                  services.clock.now())
                trust += [r for r in extra if r["fingerprint"] not in {t["fingerprint"] for t in trust}]
                exported = run_async(cert_commands.export_private_key(convert({
                    "tenant_id": tenant_id, "certificate_id": certificate_id, "format": "jks" if kind == "node"
                    else "pem", "encrypted": kind == "node"}, cert_commands.ExportPrivateKey), ctx, services))
                target = out_dir / directory
                if kind == "node":
                    for name, body in node_keystores("jks", row, chain, trust, exported.material, password):
                        _write(target / name, body, private=name.startswith("keystore"))
                else:
                    _write(target / "client.pem", render("pem", row, chain, None, None), False)
                    _write(target / "client.key", render("pem", row, [], exported.material, None)
                           .split(b"-----END CERTIFICATE-----\n", 1)[-1], True)
                _write(out_dir / "ca.pem", "".join(dict.fromkeys(
                    [chain[-1]["certificate_pem"], *(r["certificate_pem"] for r in extra)])).encode(), False)
        finally:
            conn.close()
    click.echo(f"cluster CA {ca_id}: {len(issued) - 1} node keystores and a client certificate in {out_dir}")
    click.echo(f"  keystore password: {password_file} (0600); truststore: <node>/truststore.jks; CA: {out_dir}/ca.pem")
