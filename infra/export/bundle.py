"""One export, whatever asks for it (API or CLI): a certificate row, its chain and maybe its key, in a format.

The key arrives as the key vault's plaintext (the crypto engine's serialisation); here it
becomes PKCS#8 for the format writers. For a hybrid key, PEM carries both halves (the
classical key first, then the ML-DSA key); PKCS#12 and JKS carry the classical half, which
is all Java and Cassandra's TLS can use.

A refusal says what is wrong in this service's words, naming the field: the format writers' ValueError text
names their own arguments (``private_key_pkcs8_der``) or a library's classes, not the request, and is logged at
debug, never put in a problem.
"""

from __future__ import annotations

import base64
import logging
import re

from cryptography.hazmat.primitives import serialization

from commands.pki import pem
from domain import algorithms
from domain.errors import DomainError
from infra.crypto import keys
from infra.export import formats, jks

EXPORT_FORMATS = ("pem", "der", "pkcs12", "jks", "pkcs12-truststore", "jks-truststore", "bundle")
EXPORT_MEDIA_TYPES = {
    "pem": ("pem", "application/x-pem-file"),
    "der": ("der", "application/pkix-cert"),
    "pkcs12": ("p12", "application/x-pkcs12"),
    "pkcs12-truststore": ("truststore.p12", "application/x-pkcs12"),
    "jks": ("jks", "application/x-java-keystore"),
    "jks-truststore": ("truststore.jks", "application/x-java-keystore"),
    "bundle": ("connection-bundle.zip", "application/zip"),  # infra/export/connection.py
}
log = logging.getLogger(__name__)
_PEM_BODY = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


def der_of(certificate_pem: str) -> bytes:
    match = _PEM_BODY.search(certificate_pem)
    if match is None:
        raise ValueError("not a PEM certificate")
    return base64.b64decode("".join(match.group(1).split()))


def _pkcs8(private_key) -> bytes:
    return private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def _alias(row: dict) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", (row.get("common_name") or row["certificate_id"]).lower()).strip("-") or "key"


STORES = ("pkcs12", "jks", "pkcs12-truststore", "jks-truststore", "bundle")  # these need a password
# Every export password, whatever the format: a store's, or the passphrase of a PEM key. One rule, above
# keytool's own minimum (jks.MIN_PASSWORD): a store that leaves here is attacked offline, at leisure.
MIN_PASSWORD = 8
assert MIN_PASSWORD >= jks.MIN_PASSWORD


def _password(password: str | None, format_: str, field: str = "password") -> str:
    if not password:
        raise DomainError("password_required", f"a {format_} store needs a password (X-Export-Password header, "
                          "or --password-file)", field=field)
    return password


KEYSTORE_FAMILIES = ("rsa", "ecdsa", "eddsa", "hybrid")  # a hybrid's keystore entry is its EC key


def preflight(format_: str, password: str | None, include_key: bool = False, *, password_field: str = "password",
              include_key_field: str = "include_key", key_algorithm: str | None = None) -> None:
    """Refuse an export that cannot succeed before any key leaves the vault (and before its audit event).

    ``password_field`` and ``include_key_field`` name the inputs as the caller knows them (an HTTP header, a
    CLI option); ``key_algorithm`` is the certificate's (a keystore refuses keys it cannot carry). A PEM key without a password is exported unencrypted, as asked (an audited, separately
    permitted action); a password that is given is held to ``MIN_PASSWORD`` whatever the format.
    """
    if format_ not in EXPORT_FORMATS:
        raise DomainError("unknown_format", f"unknown export format {format_}", field="format")
    if include_key and format_ != "pem":
        if format_ == "der":
            raise DomainError("key_not_in_der", "DER carries one certificate and no key: export pem with the key, "
                              "or a pkcs12 or jks keystore", field=include_key_field)
        # pkcs12 and jks keystores always hold the key; truststores never do
        if format_.endswith("truststore"):
            raise DomainError("key_not_in_truststore", "a truststore holds CA certificates only: export pkcs12 or "
                              "jks for the key", field=include_key_field)
    if format_ in ("pkcs12", "jks") and key_algorithm is not None:
        family = getattr(algorithms.get(key_algorithm), "family", key_algorithm)
        if family not in KEYSTORE_FAMILIES:  # refused here, not after the key left the vault and was audited
            raise DomainError("export_refused", f"a {format_} keystore cannot carry a {key_algorithm} key (Java and "
                              "PKCS#12 know classical keys only): export it as pem", field="format")
    if format_ in STORES:
        _password(password, format_, password_field)
    if password and len(password) < MIN_PASSWORD:
        raise DomainError("password_too_short", f"an export password has at least {MIN_PASSWORD} characters",
                          field=password_field)


def render(format_: str, row: dict, chain: list[dict], material: bytes | None, password: str | None) -> bytes:
    """The export's bytes; ``chain`` rows are the issuing CA's certificate first, up to the root."""
    certificate = der_of(row["certificate_pem"])
    chain_der = [der_of(c["certificate_pem"]) for c in chain]
    pair = keys.from_bytes(material) if material is not None else None
    try:
        if format_ == "der":
            return formats.der_certificate(certificate)
        if format_ == "pem":
            return _pem(certificate, chain_der, pair, password)
        if format_ == "pkcs12":
            return formats.pkcs12(certificate, chain_der, _pkcs8(pair.primary) if pair else None,
                                  _password(password, format_), _alias(row))
        if format_ == "jks":
            if pair is None:
                raise DomainError("no_private_key", "a JKS keystore needs the private key", field="format")
            return jks.jks_keystore(certificate, chain_der, _pkcs8(pair.primary), _password(password, format_),
                                    _alias(row))
        if not chain_der:
            raise DomainError("no_chain", "no CA certificates to put in a truststore", field="format")
        aliases = [f"ca-{index}-{c['fingerprint'][:12]}" for index, c in enumerate(chain)]
        if format_ == "pkcs12-truststore":
            return formats.pkcs12_truststore(chain_der, _password(password, format_), aliases)
        if format_ == "jks-truststore":
            return jks.jks_truststore(list(zip(aliases, chain_der)), _password(password, format_))
    except ValueError as exc:  # preflight refused what a request can get wrong; this is what the format cannot hold
        log.debug("%s export not written: %s", format_, exc)  # the writers' texts carry no key material
        raise DomainError("export_refused", f"a {format_} export of this certificate cannot be written: its stored "
                          f"key does not match it, or {format_} cannot hold that kind of key (pem holds any)",
                          field="format") from None
    raise DomainError("unknown_format", f"unknown export format {format_}", field="format")


def _pem(certificate: bytes, chain_der: list[bytes], pair, password: str | None) -> bytes:
    primary = _pkcs8(pair.primary) if pair else None
    passphrase = password.encode() if (password and pair) else None
    body = formats.pem_bundle(certificate, chain_der, primary, passphrase)
    if pair is not None and pair.alternative is not None:
        alternative = _pkcs8(pair.alternative)
        if passphrase:
            body += pem("ENCRYPTED PRIVATE KEY", formats.encrypt_pkcs8(alternative, passphrase)).encode()
        else:
            body += pem("PRIVATE KEY", alternative).encode()
    return body


NODE_FORMATS = ("jks", "pkcs12", "pem")
_NODE_SUFFIXES = {"jks": "jks", "pkcs12": "p12", "pem": "pem"}


def node_keystores(format_: str, row: dict, chain: list[dict], trust: list[dict], material: bytes,
                   password: str) -> list[tuple[str, bytes]]:
    """A Cassandra node's two files, ``keystore.<ext>`` (certificate, ``chain``, the key) and ``truststore.<ext>``
    (the ``trust`` CA certificates), as ``server_encryption_options`` and ``client_encryption_options`` load them:
    JKS, PKCS#12, or PEM (PEMBasedSslContextFactory: the key encrypted with ``password``, the keystore password)."""
    suffix = _NODE_SUFFIXES[format_]
    if format_ == "pem":
        if not trust:
            raise DomainError("no_chain", "no CA certificates to put in a truststore", field="format")
        truststore = "".join(dict.fromkeys(r["certificate_pem"] for r in trust)).encode()
    else:
        truststore = render(f"{format_}-truststore", row, trust, None, password)
    return [(f"keystore.{suffix}", render(format_, row, chain, material, password)),
            (f"truststore.{suffix}", truststore)]
