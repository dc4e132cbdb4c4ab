"""Click options shared by the CA, offline-root and certificate commands: a subject DN, name constraints, key storage."""

from __future__ import annotations

import click

from cli.common import CliError
from domain.certspec import DistinguishedName, NameConstraints


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


def required_subject(*parts) -> DistinguishedName:
    subject = subject_of(*parts)
    if subject is None:
        raise CliError("--cn is required")
    return subject


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


key_storage_option = click.option(
    "--key-storage", type=click.Choice(["vault", "hsm"]), default="vault", show_default=True,
    help="vault: the key is kept encrypted in the key vault; hsm: generated on the PKCS#11 token (CSM_PKCS11_*) "
         "and never leaves it (ecdsa-p256 or ecdsa-p384).")
