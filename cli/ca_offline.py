"""`csm ca` commands for a CA whose key is offline: import the root's certificate, request and install an
intermediate it signs, and carry its CRLs to and from the ceremony (`csm ca root`, cli/ca_root.py)."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from cli.ca import ca_id_of, convert, execute
from cli.common import query_views
from cli.options import key_storage_option, required_subject, subject_options
from commands import cas as cmd
from commands import crl
from commands.pki import pem
from infra.config import Settings
from projections import cas as read_model


@click.command("import-root")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--name", required=True)
@click.option("--cert", "cert_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The offline root's certificate (PEM), from `csm ca root init`.")
@click.pass_obj
def import_root(settings: Settings, tenant_id, name, cert_file: Path) -> None:
    """Register an offline root: only its certificate enters the service."""
    command = convert({"tenant_id": tenant_id, "name": name, "certificate_pem": cert_file.read_text()},
                      cmd.ImportOfflineRoot)
    click.echo(f"imported offline root CA {ca_id_of(execute(settings, cmd.import_offline_root, command))}")


@click.command("request-intermediate")
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
                       "key_storage": key_storage, "subject": required_subject(cn, org, ou, locality, state, country)},
                      cmd.RequestOfflineIntermediate)
    result = execute(settings, cmd.request_offline_intermediate, command)
    ca_id = ca_id_of(result)
    row = query_views(settings, read_model.get, ca_id, None)
    csr_out.write_text(row["csr_pem"])
    click.echo(f"intermediate CA {ca_id} is pending; CSR written to {csr_out}\n"
               f"sign it offline: csm ca root sign-intermediate --root-dir DIR --csr {csr_out} --out CERT "
               f"--crl-url {settings.base_url}/v1/cas/{parent_id}/crl")


@click.command("install")
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


@click.command("crl-request")
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


@click.command("install-crl")
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


COMMANDS = (import_root, request_intermediate, install, crl_request, install_crl)  # added to `csm ca` by cli/main.py
