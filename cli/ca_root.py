"""`csm ca root`: the offline root ceremony, run on a machine with no service and no data directory.

`init --offline` writes the root certificate and its key encrypted under a passphrase;
`sign-intermediate` signs an intermediate's CSR with that key, under the same policy the
online service applies. Only the certificate ever goes online (`csm ca import-root`).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec

from cli.ca import constraint_options, constraints, subject_of, subject_options
from cli.common import CliError
from commands.pki import der_of_pem, new_serial, pem
from domain import policy
from domain.algorithms import ALGORITHMS
from domain.errors import DomainError
from infra.audit.keys import write_private
from infra.crypto import keys as key_files
from infra.crypto.engine import CryptographyPki, algorithm_of, csr_alternative_key

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
                                       if v.provider == "cryptography" and policy.allowed_for_ca(a))))
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
        spec = policy.ca_spec(subject=subject, validity_days=validity_days, path_length=path_length,
                              name_constraints=constraints(permit_dns, exclude_dns, permit_ip, exclude_ip),
                              issuer_algorithm=algorithm, serial=new_serial(), now=now)
        policy.raise_for(policy.check_ca(spec, issuer=None, subject_algorithm=algorithm,
                                         key_bits=ALGORITHMS[algorithm].key_bits,
                                         available=crypto.available_algorithms(), now=now))
        key = crypto.generate_key(algorithm)
        der = crypto.sign_certificate(spec, crypto.public_keys(key), key, None)
    except DomainError as exc:
        raise _refuse(exc) from None
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(out_dir / ROOT_KEY, key_files.protect(key, passphrase))
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
    try:
        root_key = key_files.unprotect((root_dir / ROOT_KEY).read_bytes(), _passphrase(passphrase_file,
                                                                                          confirm=False))
    except DomainError:
        raise CliError("the passphrase does not open root.key.enc") from None
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
        spec = policy.ca_spec(subject=facts.subject, validity_days=validity_days, path_length=path_length,
                              name_constraints=constraints(permit_dns, exclude_dns, permit_ip, exclude_ip),
                              issuer_algorithm=root_info.algorithm,
                              serial=new_serial(), now=now,
                              crl_urls=tuple(crl_url))
        algorithm = algorithm_of(keys) or facts.algorithm
        policy.raise_for(policy.check_ca(spec, issuer=issuer, subject_algorithm=algorithm,
                                         key_bits=facts.key_bits, available=crypto.available_algorithms(), now=now,
                                         rsa_exponent=facts.rsa_exponent, key_field="csr"))
        der = crypto.sign_certificate(spec, keys, root_key, root_der)
        crypto.verify_issued(der, root_der)
    except DomainError as exc:
        raise _refuse(exc) from None
    out_file.write_text(pem("CERTIFICATE", der))
    click.echo(f"signed {crypto.describe(der).subject_dn}; certificate written to {out_file}\n"
               f"install it online: csm ca install CA_ID --tenant T --cert {out_file}")
