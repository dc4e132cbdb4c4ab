"""`csm ca`: CA commands through their handlers (create, cross-sign, disable, rollover, compromise, revoke).

Queries are in cli/ca_queries.py, the offline CA's exchanges in cli/ca_offline.py, the ceremony itself
(`csm ca root`) in cli/ca_root.py.
"""

from __future__ import annotations

import functools

import click
import msgspec

from cli.common import CliError, catch_up, command_context, echo_json, run_async, runtime_for
from cli.options import constraint_options, constraints, key_storage_option, required_subject, subject_options
from commands import ca_rollover, cas as cmd
from commands import revoke as revocation
from commands.runtime import CommandResult
from domain.revocation import REASONS
from infra.config import Settings


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


def ca_id_of(result: CommandResult) -> str:
    return result.stream_id.removeprefix("ca-")


@click.group()
def ca() -> None:
    """Create and manage certificate authorities."""


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
                       "subject": required_subject(cn, org, ou, locality, state, country),
                       "name_constraints": constraints(permit_dns, exclude_dns, permit_ip, exclude_ip)},
                      cmd.CreateRootCa)
    result = execute(settings, cmd.create_root_ca, command)
    click.echo(f"created root CA {ca_id_of(result)} (position {result.global_position})")


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
                       "subject": required_subject(cn, org, ou, locality, state, country),
                       "name_constraints": constraints(permit_dns, exclude_dns, permit_ip, exclude_ip)},
                      cmd.CreateIntermediateCa)
    result = execute(settings, cmd.create_intermediate_ca, command)
    click.echo(f"created intermediate CA {ca_id_of(result)} under {parent_id} (position {result.global_position})")


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
