"""`csm cert`: issue certificates, show and search them, and export them (PEM, DER, PKCS#12, JKS)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cli.ca import convert, execute
from cli.common import CliError, command_context, echo_json, id_table, print_table, query_views, run_async, runtime_for
from cli.options import subject_of, subject_options
from commands import certificates as cmd
from commands import renewal
from commands import revoke as revocation
from commands.runtime import SystemClock, rfc3339
from domain.certspec import SubjectAltNames
from infra.config import Settings
from domain.errors import DomainError
from domain.revocation import REASONS
from infra.export import connection
from infra.export.bundle import EXPORT_FORMATS, preflight, render
from infra.private_files import write_file
from projections import cas as ca_model
from projections import certificate_queries as read_model


@click.group()
def cert() -> None:
    """Issue, inspect and export certificates."""


@cert.command("issue")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--ca", "ca_id", required=True, help="The issuing CA's id.")
@click.option("--profile", default="cassandra-node", show_default=True)
@click.option("--csr", "csr_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Issue for this CSR (PEM); without it the key is generated and kept in the vault.")
@click.option("--algorithm", default=None, help="Server-side key algorithm (default: the profile's).")
@click.option("--dns", multiple=True, help="DNS subject alternative name (repeatable).")
@click.option("--ip", multiple=True, help="IP subject alternative name (repeatable).")
@click.option("--email", multiple=True, help="Email subject alternative name (repeatable).")
@click.option("--validity-days", type=int, default=None)
@click.option("--tag", "tags", multiple=True)
@click.option("--json", "as_json", is_flag=True)
@subject_options
@click.pass_obj
def issue(settings: Settings, tenant_id, ca_id, profile, csr_file: Path | None, algorithm, dns, ip, email,
          validity_days, tags, as_json, cn, org, ou, locality, state, country) -> None:
    """Issue a certificate from a CSR, or with a server-side key."""
    sans = SubjectAltNames(dns=tuple(dns), ip=tuple(ip), email=tuple(email)) if (dns or ip or email) else None
    command = convert({"tenant_id": tenant_id, "ca_id": ca_id, "profile": profile,
                       "csr": csr_file.read_text() if csr_file else None, "algorithm": algorithm,
                       "subject": subject_of(cn, org, ou, locality, state, country), "sans": sans,
                       "validity_days": validity_days, "tags": list(tags)}, cmd.IssueCertificate)
    outcome = execute(settings, cmd.issue_certificate, command)
    if as_json:
        echo_json({"certificate_id": outcome.certificate_id, "version": outcome.result.version,
                   "global_position": outcome.result.global_position})
    else:
        click.echo(f"issued certificate {outcome.certificate_id} (position {outcome.result.global_position})")


def _row(settings: Settings, certificate_id: str) -> dict:
    row = query_views(settings, read_model.get, certificate_id.lower(), None)
    if row is None:
        raise CliError(f"certificate_not_found: certificate {certificate_id} does not exist (field: id)")
    return row


@cert.command("show")
@click.argument("certificate_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--pem", "as_pem", is_flag=True, help="Print the certificate (PEM) only.")
@click.pass_obj
def show(settings: Settings, certificate_id: str, as_json: bool, as_pem: bool) -> None:
    """Show one certificate."""
    row = _row(settings, certificate_id)
    if as_pem:
        click.echo(row["certificate_pem"], nl=False)
    elif as_json:
        echo_json(row)
    else:
        for key, value in row.items():
            if key != "certificate_pem":
                click.echo(f"{key + ':':<20} {value}")


@cert.command("list")
@click.option("--tenant", "tenant_id", default=None)
@click.option("--ca", "ca_id", default=None)
@click.option("--cn", "common_name", default=None, help="Common name (trailing * for a prefix).")
@click.option("--san", default=None, help="Any SAN value (trailing * for a prefix).")
@click.option("--status", type=click.Choice(read_model.SEARCH_STATUSES), default=None,
              help="issued, valid (issued and not expired), expired, or revoked.")
@click.option("--profile", default=None)
@click.option("--algorithm", default=None)
@click.option("--tag", default=None)
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_(settings: Settings, tenant_id, ca_id, common_name, san, status, profile, algorithm, tag, limit,
          as_json) -> None:
    """Search certificates."""
    rows = query_views(settings, read_model.search, None, tenant_id=tenant_id, ca_id=ca_id, common_name=common_name,
                  san=san, status=status, profile=profile, algorithm=algorithm, tag=tag,
                  now=SystemClock().now(), limit=limit)
    if as_json:
        echo_json(rows)
        return
    table = id_table("certificate id", "tenant", "common name", "profile", "algorithm", "not after", "key",
                     ids={"certificate id", "tenant"})
    for row in rows:
        table.add_row(row["certificate_id"], row["tenant_id"], row["common_name"] or "", row["profile"],
                      row["algorithm"], row["not_after"], row["key_source"])
    print_table(table)


@cert.command("export")
@click.argument("certificate_id")
@click.option("--format", "format_", type=click.Choice(EXPORT_FORMATS), default="pem", show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--include-key", is_flag=True, help="pem: add the private key (audited). Keystores always hold it.")
@click.option("--no-chain", is_flag=True, help="Leave the CA chain out.")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Store password / key passphrase (else CSM_EXPORT_PASSWORD).")
@click.option("--contact-point", "contact_points", multiple=True, metavar="HOST[:PORT]",
              help="bundle: a contact point of the cluster for the driver configurations (repeatable; port 9042).")
@click.pass_obj
def export(settings: Settings, certificate_id: str, format_: str, out_file: Path, include_key: bool, no_chain: bool,
           password_file: Path | None, contact_points: tuple[str, ...]) -> None:
    """Export a certificate (and, for keystores, bundles of a key held here or --include-key, its private key: an
    audited event). A bundle is a zip: certificate, chain, truststores, key and keystores, cqlsh and driver
    configurations."""
    password = password_file.read_text().rstrip("\n") if password_file else os.environ.get("CSM_EXPORT_PASSWORD")
    row = _row(settings, certificate_id)
    try:
        preflight(format_, password, include_key, password_field="--password-file", include_key_field="--include-key",
                  key_algorithm=row["algorithm"])
        points = connection.contact_points(",".join(contact_points), field="--contact-point")
    except DomainError as exc:
        raise CliError(f"{exc.code}: {exc.detail} (field: {exc.field})") from None
    wants_key = format_ in ("pkcs12", "jks") or (format_ == "pem" and include_key) or (format_ == "bundle"
                                                                                      and row["has_key"])
    with runtime_for(settings) as runtime:
        now = runtime.services.clock.now()
        conn = runtime.runner.connection()
        try:
            trust = ca_model.truststore_chain(conn, row["tenant_id"], row["issuer_fingerprint"], now)
            if format_.endswith("truststore"):
                chain = trust
            else:
                chain = [] if no_chain and format_ != "bundle" else ca_model.issuer_chain(
                    conn, row["tenant_id"], row["issuer_fingerprint"], now)
        finally:
            conn.close()
        material = None
        if wants_key:
            exported = run_async(cmd.export_private_key(
                convert({"tenant_id": row["tenant_id"], "certificate_id": row["certificate_id"], "format": format_,
                         "encrypted": bool(password)}, cmd.ExportPrivateKey),
                command_context(), runtime.services))
            material = exported.material
        body = (connection.bundle(row, chain, trust, material, password, points, now) if format_ == "bundle"
                else render(format_, row, chain, material, password))
    write_file(out_file, body, mode=0o600 if wants_key else 0o644)  # 0600 even over an existing, wider file
    click.echo(f"wrote {format_} to {out_file}" + (" (includes the private key; export recorded)" if wants_key
                                                    else ""))


def revoked_message(subject: str, outcome: revocation.Revocation) -> str:
    listed = ", ".join(f"CRL {c.crl_number} of CA {c.ca_id}" for c in outcome.crls) or "no CRL signed here"
    also = f"; also revoked: {', '.join(outcome.also_revoked)}" if outcome.also_revoked else ""
    return f"revoked {subject} ({outcome.reason}, {rfc3339(outcome.revoked_at)}); listed on {listed}{also}"


@cert.command("revoke")
@click.argument("certificate_id")
@click.option("--reason", default="unspecified", show_default=True, type=click.Choice(list(REASONS)),
              help="RFC 5280 revocation reason.")
@click.option("--invalidity-date", default=None, metavar="RFC3339",
              help="When the key was (suspected) compromised, e.g. 2026-01-31T12:00:00Z.")
@click.pass_obj
def revoke(settings: Settings, certificate_id: str, reason: str, invalidity_date: str | None) -> None:
    """Revoke a certificate: its CA's CRL is republished, and OCSP answers "revoked", before this returns."""
    row = _row(settings, certificate_id)
    command = convert({"tenant_id": row["tenant_id"], "certificate_id": row["certificate_id"], "reason": reason,
                       "invalidity_date": invalidity_date}, revocation.RevokeCertificate)
    click.echo(revoked_message(f"certificate {row['certificate_id']}",
                               execute(settings, revocation.revoke_certificate, command)))


@cert.command("renew")
@click.argument("certificate_id")
@click.option("--reuse-key/--rotate-key", "reuse_key", default=None,
              help="Keep the key (only if the profile's renewal policy allows it) or make a new one; default: the "
                   "profile's policy.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def renew(settings: Settings, certificate_id: str, reuse_key: bool | None, as_json: bool) -> None:
    """Renew a certificate now: a new certificate from the same CA and profile supersedes it."""
    row = _row(settings, certificate_id)
    command = convert({"tenant_id": row["tenant_id"], "certificate_id": row["certificate_id"],
                       "reuse_key": reuse_key}, renewal.RenewCertificate)
    outcome = execute(settings, renewal.renew_certificate, command)
    if as_json:
        echo_json({"certificate_id": outcome.new_certificate_id, "renewed_from": outcome.certificate_id,
                   "rotated": outcome.rotated})
        return
    click.echo(f"renewed {outcome.certificate_id} as {outcome.new_certificate_id} "
               f"({'new key' if outcome.rotated else 'same key'})")
