"""`csm ca root`: the offline root ceremony, run on a machine with no service and no data directory.

`init --offline` writes the root certificate and its key encrypted under a passphrase;
`sign-intermediate` signs an intermediate's CSR with that key, under the same policy the
online service applies; `sign-crl` signs the root's CRL from what the service records
(`csm ca crl-request`). Only certificates and CRLs ever go online (`csm ca import-root`,
`csm ca install`, `csm ca install-crl`).
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import msgspec

from cli.common import CliError
from cli.options import constraint_options, constraints, subject_of, subject_options
from commands.crl import CrlRequest
from commands.pki import der_of_pem, new_serial, pem
from domain import crl_publication, key_rules, policy, spec_builders, violations
from domain.algorithms import ALGORITHMS
from domain.errors import DomainError
from infra.crypto import keys as key_files
from infra.crypto.engine import CryptographyPki
from infra.crypto.revocation import CryptographyRevocation
from infra.crypto.x509_facts import algorithm_of, csr_alternative_key
from infra.private_files import write_file

ROOT_CERT = "root.pem"
ROOT_KEY = "root.key.enc"
MIN_PASSPHRASE = 12


def _passphrase(passphrase_file: Path | None, *, confirm: bool) -> bytes:
    if passphrase_file is not None:
        value = passphrase_file.read_text().rstrip("\n")
    elif os.environ.get("CSM_ROOT_PASSPHRASE"):
        value = os.environ["CSM_ROOT_PASSPHRASE"]
    else:
        value = click.prompt("root key passphrase", hide_input=True, confirmation_prompt=confirm)
    if len(value) < MIN_PASSPHRASE:
        raise CliError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    return value.encode()


def _root_key(root_dir: Path, passphrase_file: Path | None):
    try:
        return key_files.unprotect((root_dir / ROOT_KEY).read_bytes(), _passphrase(passphrase_file, confirm=False))
    except DomainError:
        raise CliError("the passphrase does not open root.key.enc") from None


def _refuse(exc: DomainError) -> CliError:
    violations = getattr(exc, "violations", None)
    if violations:
        return CliError("refused by policy:\n" + "\n".join(f"  {v.field}: {v.rule}: {v.message}" for v in violations))
    return CliError(f"{exc.code}: {exc.detail}" + (f" (field: {exc.field})" if exc.field else ""))


@click.group()
def root() -> None:
    """The offline root ceremony (no service, no data directory)."""


@root.command("init")
@click.option("--offline", is_flag=True, required=True, help="Required: this runs the offline ceremony.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A new or empty directory for root.pem and root.key.enc.")
@click.option("--algorithm", default="hybrid-p384-ml-dsa-65", show_default=True,
              type=click.Choice(sorted(a for a, v in ALGORITHMS.items()
                                       if v.provider == "cryptography" and key_rules.allowed_for_ca(a))))
@click.option("--validity-days", type=int, default=7300, show_default=True)
@click.option("--path-length", type=int, default=None)
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Read the passphrase from this file (else CSM_ROOT_PASSPHRASE, else a prompt).")
@subject_options
@constraint_options
def init(offline, out_dir: Path, algorithm, validity_days, path_length, passphrase_file, cn, org, ou, locality, state,
         country, permit_dns, exclude_dns, permit_ip, exclude_ip) -> None:
    """Create a root CA key and self-signed certificate, offline."""
    subject = subject_of(cn, org, ou, locality, state, country)
    if subject is None:
        raise CliError("--cn is required")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CliError(f"{out_dir} is not empty: a ceremony never overwrites a root")
    passphrase = _passphrase(passphrase_file, confirm=True)
    crypto, now = CryptographyPki(), datetime.now(UTC)
    try:
        spec = spec_builders.ca_spec(subject=subject, validity_days=validity_days, path_length=path_length,
                                     name_constraints=constraints(permit_dns, exclude_dns, permit_ip, exclude_ip),
                                     issuer_algorithm=algorithm, serial=new_serial(), now=now)
        violations.raise_for(policy.check_ca(spec, issuer=None, subject_algorithm=algorithm,
                                             key_bits=ALGORITHMS[algorithm].key_bits,
                                             available=crypto.available_algorithms(), now=now))
        key = crypto.generate_key(algorithm)
        der = crypto.sign_certificate(spec, crypto.public_keys(key), key, None)
    except DomainError as exc:
        raise _refuse(exc) from None
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file(out_dir / ROOT_KEY, key_files.protect(key, passphrase), replace=False)
    (out_dir / ROOT_CERT).write_text(pem("CERTIFICATE", der))
    facts = crypto.describe(der)
    click.echo(f"root certificate: {out_dir / ROOT_CERT}\nencrypted key:    {out_dir / ROOT_KEY} (mode 0600)\n"
               f"subject:          {facts.subject_dn}\nsha256:           {facts.fingerprint_sha256}\n"
               f"valid until:      {facts.not_after.isoformat()}\n"
               "carry only root.pem online: csm ca import-root --tenant T --name N --cert root.pem")


@root.command("sign-intermediate")
@click.option("--root-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--csr", "csr_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The CSR from `csm ca request-intermediate`.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--validity-days", type=int, default=1825, show_default=True)
@click.option("--path-length", type=int, default=0, show_default=True)
@click.option("--crl-url", multiple=True, help="CRL distribution point for the intermediate (repeatable).")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@constraint_options
def sign_intermediate(root_dir: Path, csr_file: Path, out_file: Path, validity_days, path_length, crl_url,
                      passphrase_file, permit_dns, exclude_dns, permit_ip, exclude_ip) -> None:
    """Sign an intermediate CA's CSR with the offline root key."""
    crypto, now = CryptographyPki(), datetime.now(UTC)
    root_der = der_of_pem((root_dir / ROOT_CERT).read_text())
    root_key = _root_key(root_dir, passphrase_file)
    try:
        root_info = crypto.describe_ca(root_der)
        root_facts = crypto.describe(root_der)
        request = csr_file.read_bytes()
        facts, keys = crypto.parse_csr(request)
        keys = msgspec.structs.replace(keys, alternative=csr_alternative_key(request))  # a hybrid CA's ML-DSA half
        if facts.subject is None:
            raise DomainError("subject_required", "the CSR has an empty subject", field="csr")
        issuer = policy.IssuerFacts(ca_id="offline-root", algorithm=root_info.algorithm,
                                    not_before=root_facts.not_before, not_after=root_facts.not_after,
                                    path_length=root_info.path_length, name_constraints=root_info.name_constraints,
                                    status="active")
        spec = spec_builders.ca_spec(subject=facts.subject, validity_days=validity_days, path_length=path_length,
                                     name_constraints=constraints(permit_dns, exclude_dns, permit_ip, exclude_ip),
                                     issuer_algorithm=root_info.algorithm,
                                     serial=new_serial(), now=now,
                                     crl_urls=tuple(crl_url))
        algorithm = algorithm_of(keys) or facts.algorithm
        violations.raise_for(policy.check_ca(spec, issuer=issuer, subject_algorithm=algorithm,
                                             key_bits=facts.key_bits, available=crypto.available_algorithms(), now=now,
                                             rsa_exponent=facts.rsa_exponent, key_field="csr"))
        der = crypto.sign_certificate(spec, keys, root_key, root_der)
        crypto.verify_issued(der, root_der)
    except DomainError as exc:
        raise _refuse(exc) from None
    out_file.write_text(pem("CERTIFICATE", der))
    click.echo(f"signed {crypto.describe(der).subject_dn}; certificate written to {out_file}\n"
               f"install it online: csm ca install CA_ID --tenant T --cert {out_file}")


@root.command("sign-crl")
@click.option("--root-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--request", "request_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The request from `csm ca crl-request` (JSON).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--next-update-days", type=click.IntRange(1, crl_publication.OFFLINE_CRL_MAX_DAYS), default=180,
              show_default=True, help="When relying parties should expect the next CRL; sign one before then.")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
def sign_crl(root_dir: Path, request_file: Path, out_file: Path, next_update_days: int, passphrase_file) -> None:
    """Sign the root's next CRL: every revocation the request lists, under the number it names."""
    root_der = der_of_pem((root_dir / ROOT_CERT).read_text())
    try:
        request = msgspec.json.decode(request_file.read_bytes(), type=CrlRequest)
    except msgspec.DecodeError as exc:  # ValidationError included: it names the field
        raise CliError(f"{request_file} is not a CRL request from `csm ca crl-request`: {exc}") from None
    fingerprint = hashlib.sha256(root_der).hexdigest()
    if request.issuer_fingerprint != fingerprint:
        raise CliError(f"the request is for CA certificate {request.issuer_fingerprint}, not this root "
                       f"({fingerprint}): sign it with the root it names")
    if out_file.exists():
        raise CliError(f"{out_file} exists: a ceremony never overwrites a CRL")
    try:
        crl_publication.check_crl_number(request.crl_number, "crl_number")
    except DomainError as exc:
        raise _refuse(exc) from None
    now = datetime.now(UTC).replace(microsecond=0)
    period = timedelta(days=next_update_days)
    entries = crl_publication.listed(request.entries, now, period)
    root_key = _root_key(root_dir, passphrase_file)
    try:
        der = CryptographyRevocation().sign_crl(entries, issuer_key=root_key, issuer_certificate=root_der,
                                                number=request.crl_number, this_update=now, next_update=now + period)
    except DomainError as exc:
        raise _refuse(exc) from None
    out_file.write_text(pem("X509 CRL", der))
    listing = "".join(f"\n  {entry.serial_hex}  {entry.reason}  revoked {entry.revoked_at.isoformat()}"
                      f"{f'  (CA {entry.subject_ca_id})' if entry.subject_ca_id else ''}" for entry in entries)
    click.echo(f"signed CRL {request.crl_number} of CA {request.ca_id}: {len(entries)} revoked{listing}\n"
               f"this update {now.isoformat()}, next update {(now + period).isoformat()}\n"
               f"CRL written to {out_file}\n"
               f"install it online: csm ca install-crl {request.ca_id} --tenant {request.tenant_id} --crl {out_file}")
