"""`csm ca`: CA commands through their handlers, CA queries, and the offline root ceremony (`csm ca root`)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec

from cli.common import (CliError, catch_up, command_context, echo_json, id_table, print_table, query_views, run_async,
                        runtime_for)
from commands import ca_rollover, cas as cmd
from commands import crl
from commands import profiles
from commands import revoke as revocation
from commands.pki import pem
from commands.runtime import CommandResult
from domain.certspec import DistinguishedName, NameConstraints
from domain.revocation import REASONS
from infra.config import Settings
from infra.crypto.engine import CryptographyPki
from projections import cas as read_model


def subject_options(fn):
    """--cn/--org/--ou/--locality/--state/--country, gathered into ``subject`` by :func:`subject_of`."""
    for name, help_ in reversed((("--cn", "Common name."), ("--org", "Organisation (O)."),
                                 ("--ou", "Organisational unit (OU)."), ("--locality", "Locality (L)."),
                                 ("--state", "State or province (ST)."), ("--country", "Two-letter country (C)."))):
        fn = click.option(name, default=None, help=help_)(fn)
    return fn


def subject_of(cn, org, ou, locality, state, country) -> DistinguishedName | None:
    if cn is None:
        return None
    return DistinguishedName(common_name=cn, organization=org, organizational_unit=ou, locality=locality,
                             state=state, country=country)


def execute(settings: Settings, handler, command):
    with runtime_for(settings) as runtime:
        result = run_async(handler(command, command_context(), runtime.services))
        catch_up(runtime, strict=False)
        return result


def convert(fields: dict, command_type):
    """The command from CLI options, refused with the field and rule like the API would."""
    try:
        return msgspec.convert({k: v for k, v in fields.items() if v is not None}, command_type)
    except msgspec.ValidationError as exc:
        raise CliError(f"invalid input: {exc}") from None


def _ca_id(result: CommandResult) -> str:
    return result.stream_id.removeprefix("ca-")


def constraints(permit_dns, exclude_dns, permit_ip, exclude_ip) -> NameConstraints:
    return NameConstraints(permitted_dns=tuple(permit_dns), excluded_dns=tuple(exclude_dns),
                           permitted_ip=tuple(permit_ip), excluded_ip=tuple(exclude_ip))


def constraint_options(fn):
    for name, help_ in reversed((("--permit-dns", "Permitted DNS subtree (repeatable)."),
                                 ("--exclude-dns", "Excluded DNS subtree (repeatable)."),
                                 ("--permit-ip", "Permitted IP network, CIDR (repeatable)."),
                                 ("--exclude-ip", "Excluded IP network, CIDR (repeatable)."))):
        fn = click.option(name, multiple=True, help=help_)(fn)
    return fn


@click.group()
def ca() -> None:
    """Create and manage certificate authorities."""


key_storage_option = click.option(
    "--key-storage", type=click.Choice(["vault", "hsm"]), default="vault", show_default=True,
    help="vault: the key is kept encrypted in the key vault; hsm: generated on the PKCS#11 token (CSM_PKCS11_*) "
         "and never leaves it (ecdsa-p256 or ecdsa-p384).")


def _creation(fn):
    @click.option("--tenant", "tenant_id", required=True, help="The tenant the CA belongs to.")
    @click.option("--name", required=True, help="Display name.")
    @click.option("--algorithm", default=cmd.DEFAULT_CA_ALGORITHM, show_default=True,
                  help="Key algorithm (see `csm ca algorithms`).")
    @click.option("--validity-days", type=int, default=None, help="Validity in days.")
    @click.option("--path-length", type=int, default=None, help="basicConstraints pathLenConstraint.")
    @key_storage_option
    @subject_options
    @constraint_options
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@ca.command("create-root")
@_creation
@click.pass_obj
def create_root(settings: Settings, tenant_id, name, algorithm, validity_days, path_length, key_storage, cn, org, ou,
                locality, state, country, permit_dns, exclude_dns, permit_ip, exclude_ip) -> None:
    """Create an online root CA (its key is generated and kept, encrypted, in the key vault, or on the token)."""
    command = convert({"tenant_id": tenant_id, "name": name, "algorithm": algorithm, "validity_days": validity_days,
                       "path_length": path_length, "key_storage": key_storage,
                       "subject": _required_subject(cn, org, ou, locality, state, country),
                       "name_constraints": constraints(permit_dns, exclude_dns, permit_ip, exclude_ip)},
                      cmd.CreateRootCa)
    result = execute(settings, cmd.create_root_ca, command)
    click.echo(f"created root CA {_ca_id(result)} (position {result.global_position})")


@ca.command("create-intermediate")
@_creation
@click.option("--parent", "parent_id", required=True, help="The issuing CA's id.")
@click.pass_obj
def create_intermediate(settings: Settings, tenant_id, name, algorithm, validity_days, path_length, key_storage, cn, org,
                        ou, locality, state, country, permit_dns, exclude_dns, permit_ip, exclude_ip,
                        parent_id) -> None:
    """Create an intermediate CA signed by --parent."""
    command = convert({"tenant_id": tenant_id, "name": name, "algorithm": algorithm, "validity_days": validity_days,
                       "path_length": path_length, "parent_id": parent_id, "key_storage": key_storage,
                       "subject": _required_subject(cn, org, ou, locality, state, country),
                       "name_constraints": constraints(permit_dns, exclude_dns, permit_ip, exclude_ip)},
                      cmd.CreateIntermediateCa)
    result = execute(settings, cmd.create_intermediate_ca, command)
    click.echo(f"created intermediate CA {_ca_id(result)} under {parent_id} (position {result.global_position})")


def _required_subject(*parts) -> DistinguishedName:
    subject = subject_of(*parts)
    if subject is None:
        raise CliError("--cn is required")
    return subject


@ca.command("cross-sign")
@click.argument("ca_id")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--issuer", "issuer_id", required=True, help="The CA that certifies CA_ID's key.")
@click.option("--validity-days", type=int, default=None,
              help="Validity in days  [default: 1825, or what the issuer has left if that is less]")
@click.option("--path-length", type=int, default=None)
@click.pass_obj
def cross_sign(settings: Settings, ca_id, tenant_id, issuer_id, validity_days, path_length) -> None:
    """Cross-certify CA_ID by --issuer."""
    command = convert({"tenant_id": tenant_id, "ca_id": ca_id, "issuer_id": issuer_id,
                       "validity_days": validity_days, "path_length": path_length}, cmd.CrossCertify)
    result = execute(settings, cmd.cross_certify, command)
    click.echo(f"CA {ca_id} cross-certified by {issuer_id} (version {result.version})")


@ca.command("import-root")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--name", required=True)
@click.option("--cert", "cert_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The offline root's certificate (PEM), from `csm ca root init`.")
@click.pass_obj
def import_root(settings: Settings, tenant_id, name, cert_file: Path) -> None:
    """Register an offline root: only its certificate enters the service."""
    command = convert({"tenant_id": tenant_id, "name": name, "certificate_pem": cert_file.read_text()},
                      cmd.ImportOfflineRoot)
    click.echo(f"imported offline root CA {_ca_id(execute(settings, cmd.import_offline_root, command))}")


@ca.command("request-intermediate")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--parent", "parent_id", required=True, help="The imported offline root's CA id.")
@click.option("--name", required=True)
@click.option("--algorithm", default=cmd.DEFAULT_CA_ALGORITHM, show_default=True)
@click.option("--csr-out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the CSR to carry to the offline root.")
@key_storage_option
@subject_options
@click.pass_obj
def request_intermediate(settings: Settings, tenant_id, parent_id, name, algorithm, csr_out: Path, key_storage, cn, org,
                         ou, locality, state, country) -> None:
    """Make an intermediate's key here (or on the token) and write its CSR for the offline root to sign."""
    command = convert({"tenant_id": tenant_id, "parent_id": parent_id, "name": name, "algorithm": algorithm,
                       "key_storage": key_storage, "subject": _required_subject(cn, org, ou, locality, state, country)},
                      cmd.RequestOfflineIntermediate)
    result = execute(settings, cmd.request_offline_intermediate, command)
    ca_id = _ca_id(result)
    row = query_views(settings, read_model.get, ca_id, None)
    csr_out.write_text(row["csr_pem"])
    click.echo(f"intermediate CA {ca_id} is pending; CSR written to {csr_out}\n"
               f"sign it offline: csm ca root sign-intermediate --root-dir DIR --csr {csr_out} --out CERT "
               f"--crl-url {settings.base_url}/v1/cas/{parent_id}/crl")


@ca.command("install")
@click.argument("ca_id")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--cert", "cert_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.pass_obj
def install(settings: Settings, ca_id, tenant_id, cert_file: Path) -> None:
    """Install the certificate the offline root signed for pending intermediate CA_ID."""
    command = convert({"tenant_id": tenant_id, "ca_id": ca_id, "certificate_pem": cert_file.read_text()},
                      cmd.InstallCaCertificate)
    execute(settings, cmd.install_ca_certificate, command)
    click.echo(f"intermediate CA {ca_id} is active")


@ca.command("crl-request")
@click.argument("ca_id")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the request to carry to the offline ceremony (JSON).")
@click.pass_obj
def crl_request(settings: Settings, ca_id, tenant_id, out_file: Path) -> None:
    """Write what the offline ceremony needs to sign CA_ID's next CRL (CA_ID's key is offline)."""
    command = convert({"tenant_id": tenant_id, "ca_id": ca_id}, crl.RequestCrl)
    request = execute(settings, crl.request_crl, command)
    out_file.write_bytes(msgspec.json.format(msgspec.json.encode(request)) + b"\n")
    state = "due" if request.due else "not due"
    last = (f"CRL {request.last_crl_number}, next update {request.last_next_update.isoformat()}"
            if request.last_crl_number is not None else "none installed")
    click.echo(f"CRL request for CA {ca_id} written to {out_file}: CRL {request.crl_number}, "
               f"{len(request.entries)} revocation(s) recorded; a new CRL is {state} (last: {last})\n"
               f"sign it offline: csm ca root sign-crl --root-dir DIR --request {out_file} --out root.crl")


@ca.command("install-crl")
@click.argument("ca_id")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--crl", "crl_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The CRL `csm ca root sign-crl` wrote (PEM or DER).")
@click.pass_obj
def install_crl(settings: Settings, ca_id, tenant_id, crl_file: Path) -> None:
    """Install the CRL the offline ceremony signed for CA_ID: its CRL URL serves it from then on."""
    data = crl_file.read_bytes()
    text = data.decode("ascii", "replace") if b"-----BEGIN" in data else pem("X509 CRL", data)
    command = convert({"tenant_id": tenant_id, "ca_id": ca_id, "crl_pem": text}, crl.InstallCrl)
    result = execute(settings, crl.install_crl, command)
    click.echo(f"CRL installed for CA {ca_id}" if result.changed else f"that CRL was already installed for CA {ca_id}")


@ca.command("disable")
@click.argument("ca_id")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--reason", required=True)
@click.pass_obj
def disable(settings: Settings, ca_id, tenant_id, reason) -> None:
    """Disable CA_ID: it signs nothing until enabled again."""
    execute(settings, cmd.disable_ca, convert({"tenant_id": tenant_id, "ca_id": ca_id, "reason": reason},
                                              cmd.DisableCa))
    click.echo(f"CA {ca_id} disabled")


@ca.command("rollover")
@click.argument("ca_id")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--reason", required=True)
@click.option("--algorithm", default=None)
@click.option("--validity-days", type=int, default=None)
@click.option("--compromised", is_flag=True, help="The root's key was stolen: no link certificates, the old key is "
              "recorded compromised, and chains and truststores drop the root's keys until now.")
@click.option("--invalidity-date", default=None, metavar="RFC3339", help="With --compromised: since when.")
@click.option("--json", "as_json", is_flag=True, help="The result as JSON (every CA and certificate to issue again).")
@click.pass_obj
def rollover(settings: Settings, ca_id, tenant_id, reason, algorithm, validity_days, compromised,
             invalidity_date, as_json: bool) -> None:
    """Give CA_ID a new key and certificate; the old certificate stays valid until it expires (unless
    --compromised: then nothing the old keys signed is trusted by truststores exported from now on)."""
    command = convert({"tenant_id": tenant_id, "ca_id": ca_id, "reason": reason, "algorithm": algorithm,
                       "validity_days": validity_days, "compromised": compromised,
                       "invalidity_date": invalidity_date}, ca_rollover.RolloverCaKey)
    result = execute(settings, ca_rollover.rollover_ca_key, command)
    if as_json:
        echo_json(result)
        return
    if not compromised:
        click.echo(f"CA {ca_id} rolled over to a new key (version {result.version})")
        return
    click.echo(f"CA {ca_id} rolled over away from its compromised key (version {result.version}): no link "
               "certificate signed; the old key is recorded compromised, and no chain or truststore exported from now "
               "on holds the root's earlier keys. Re-export and deploy every truststore.")
    _echo_reissue(result.reissue, tenant_id)


def _echo_reissue(reissue, tenant_id: str) -> None:
    """How many CAs and certificates are still signed only under the withdrawn keys, and what to do with each."""
    if reissue is None:
        return
    click.echo(f"{reissue.count} to issue again under the new key: {len(reissue.cas)} CA(s), "
               f"{len(reissue.certificates)} certificate(s) (none of them revoked)"
               + ("" if reissue.complete else "; the read models lagged, so there may be more"))
    steps = [f"  csm ca rollover {ca_id} --tenant {tenant_id} --reason 'root key compromised'" for ca_id in reissue.cas]
    steps += [f"  csm cert renew {certificate_id}" for certificate_id in reissue.certificates]  # after their CAs
    for step in steps[:LISTED]:
        click.echo(step)
    if len(steps) > LISTED:
        click.echo(f"  ... and {len(steps) - LISTED} more (--json lists them all)")


LISTED = 20  # re-issuance steps printed after a compromise rollover; --json has every one


@ca.command("compromise")
@click.argument("ca_id")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--json", "as_json", is_flag=True, help="The whole report as JSON.")
@click.pass_obj
def compromise(settings: Settings, ca_id, tenant_id, as_json: bool) -> None:
    """What root CA_ID's compromise rollovers did, and what is still left to issue again (GET /v1/cas/{id}/compromise)."""
    command = convert({"tenant_id": tenant_id, "ca_id": ca_id}, ca_rollover.ReadCompromise)
    report = execute(settings, ca_rollover.read_compromise, command)
    if as_json:
        echo_json(report)
        return
    if not report.rollovers:
        click.echo(f"CA {ca_id} has had no compromise rollover")
        return
    for done in report.rollovers:
        click.echo(f"{done.rolled_over_at.isoformat()}: rolled over away from key {done.compromised_key_sha256} "
                   f"({done.reason}); new certificate {done.certificate_fingerprint}")
    click.echo(f"{report.withdrawn_certificates} certificate(s) and link(s) withdrawn from trust; "
               f"{len(report.revoked_links)} link certificate(s) revoked key_compromise")
    _echo_reissue(report.reissue, tenant_id)


@ca.command("list")
@click.option("--tenant", "tenant_id", default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.pass_obj
def list_(settings: Settings, tenant_id, as_json: bool) -> None:
    """List CAs."""
    rows = query_views(settings, read_model.search, None, tenant_id=tenant_id, limit=10_000)
    if as_json:
        echo_json(rows)
        return
    table = id_table("ca id", "tenant", "name", "kind", "origin", "status", "algorithm", "parent", "not after",
                     ids={"ca id", "tenant", "parent"})
    for row in rows:
        table.add_row(row["ca_id"], row["tenant_id"], row["name"], row["kind"], row["origin"], row["status"],
                      row["algorithm"], row["parent_id"] or "", row["not_after"] or "")
    print_table(table)


@ca.command("algorithms")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
def algorithms(as_json: bool) -> None:
    """The key algorithms this installation offers, and which a CA may use (as GET /v1/algorithms)."""
    offers = profiles.algorithm_offers(CryptographyPki().available_algorithms())
    if as_json:
        echo_json(offers)
        return
    table = id_table("name", "family", "available", "allowed for CA", ids={"name"})
    for offer in offers:
        table.add_row(offer.name, offer.family, _yes(offer.available), _yes(offer.allowed_for_ca))
    print_table(table)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@ca.command("show")
@click.argument("ca_id")
@click.option("--chain", is_flag=True, help="Print the PEM chain to the root instead.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(settings: Settings, ca_id: str, chain: bool, as_json: bool) -> None:
    """Show one CA (or its chain)."""
    row = query_views(settings, read_model.get, ca_id, None)
    if row is None:
        raise CliError(f"ca_not_found: CA {ca_id} does not exist (field: ca_id)")
    if chain:
        certs = query_views(settings, _chain, row)
        click.echo("".join(c["certificate_pem"] for c in certs), nl=False)
        return
    if as_json:
        echo_json(row)
        return
    for key, value in row.items():
        click.echo(f"{key + ':':<18} {value if value is not None else ''}")


def _chain(conn, row: dict) -> list[dict]:
    start = read_model.certificate_by_fingerprint(conn, row["tenant_id"], row["fingerprint"] or "")
    chain = read_model.chain_from(conn, row["tenant_id"], start) if start else []
    return read_model.with_links(conn, row["tenant_id"], chain, datetime.now(UTC))  # a root's unexpired links


@ca.command("revoke")
@click.argument("ca_id")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--reason", default="unspecified", show_default=True, type=click.Choice(list(REASONS)),
              help="RFC 5280 revocation reason.")
@click.option("--invalidity-date", default=None, metavar="RFC3339", help="When the CA key was (suspected) compromised.")
@click.pass_obj
def revoke(settings: Settings, ca_id, tenant_id, reason, invalidity_date) -> None:
    """Revoke intermediate CA_ID: its issuer's CRL lists it; it and every CA under it sign nothing more."""
    command = convert({"tenant_id": tenant_id, "ca_id": ca_id, "reason": reason, "invalidity_date": invalidity_date},
                      revocation.RevokeCa)
    outcome = execute(settings, revocation.revoke_ca, command)
    listed = ", ".join(f"CRL {c.crl_number} of CA {c.ca_id}" for c in outcome.crls) or "no CRL signed here"
    click.echo(f"revoked CA {ca_id} ({outcome.reason}); listed on {listed}")
    for issuer in outcome.awaiting_ceremony:
        click.echo(f"CA {issuer}'s key is offline: its CRL lists this once the ceremony signs one:\n"
                   f"  csm ca crl-request {issuer} --tenant {tenant_id} --out crl-request.json   (here)\n"
                   "  csm ca root sign-crl --root-dir DIR --request crl-request.json --out root.crl   (offline)\n"
                   f"  csm ca install-crl {issuer} --tenant {tenant_id} --crl root.crl   (here)")
