"""Optional liboqs signatures (SLH-DSA, Falcon), offered only where the liboqs shared library is already installed."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from domain.errors import DomainError
from infra.crypto import der

# Catalogue name -> liboqs mechanism name (liboqs >= 0.14 spells FIPS 205 SLH-DSA this way).
MECHANISMS: dict[str, str] = {
    "slh-dsa-sha2-128s": "SLH_DSA_PURE_SHA2_128S",
    "slh-dsa-sha2-192s": "SLH_DSA_PURE_SHA2_192S",
    "falcon-512": "Falcon-512",
    "falcon-1024": "Falcon-1024",
}
# NIST CSOR sigAlgs arcs for FIPS 205 SLH-DSA. Falcon (FN-DSA) has no registered OID yet, so no SPKI either.
SPKI_OIDS: dict[str, str] = {
    "slh-dsa-sha2-128s": "2.16.840.1.101.3.4.3.20",
    "slh-dsa-sha2-192s": "2.16.840.1.101.3.4.3.22",
}


@dataclass(frozen=True)
class OqsKey:
    """A liboqs key pair: liboqs's own secret- and public-key encodings."""

    algorithm: str
    public_key: bytes
    secret_key: bytes = field(repr=False)


@functools.cache
def _module() -> Any | None:
    # liboqs-python downloads and builds liboqs at import time when it cannot find the library,
    # so look for the library first and import the wrapper only if it is already there.
    path = ctypes.util.find_library("oqs")
    if path is None or importlib.util.find_spec("oqs") is None:
        return None
    try:
        ctypes.CDLL(path)
        return importlib.import_module("oqs")
    except (ImportError, OSError, RuntimeError, SystemExit):  # old wrappers sys.exit() when loading fails
        return None


def available() -> frozenset[str]:
    module = _module()
    if module is None:
        return frozenset()
    enabled = set(module.get_enabled_sig_mechanisms())
    return frozenset(name for name, mechanism in MECHANISMS.items() if mechanism in enabled)


def _unavailable(name: str, why: str) -> DomainError:
    return DomainError("algorithm_unavailable", f"{name}: {why}", field="algorithm")


def _signature(name: str, secret_key: bytes | None = None) -> Any:
    if name not in available():
        raise _unavailable(name, "liboqs is not installed or does not offer it")
    return _module().Signature(MECHANISMS[name], secret_key)


def generate(name: str) -> OqsKey:
    with _signature(name) as signer:
        public_key = signer.generate_keypair()
        return OqsKey(name, bytes(public_key), bytes(signer.export_secret_key()))


def sign(key: OqsKey, message: bytes) -> bytes:
    with _signature(key.algorithm, key.secret_key) as signer:
        signature = signer.sign(message)
    if not signature:  # the wrapper returns 0 when liboqs reports failure
        raise _unavailable(key.algorithm, "liboqs failed to sign")
    return bytes(signature)


def subject_public_key_info(key: OqsKey) -> bytes:
    oid = SPKI_OIDS.get(key.algorithm)
    if oid is None:
        raise _unavailable(key.algorithm, "no registered X.509 OID, so no SubjectPublicKeyInfo")
    return der.sequence(der.sequence(der.encode_oid(oid)), der.encode_bit_string(key.public_key))


def to_bytes(key: OqsKey) -> bytes:
    octets = [der.encode_tlv(der.OCTET_STRING, part) for part in (key.secret_key, key.public_key)]
    return der.sequence(*octets)


def from_bytes(name: str, data: bytes) -> OqsKey:
    """Inverse of ``to_bytes``; ValueError if the material is not two OCTET STRINGs."""
    outer = der.parse(data)
    fields = der.children(outer) if outer.tag == der.SEQUENCE else []
    if len(fields) != 2 or any(f.tag != der.OCTET_STRING for f in fields):
        raise ValueError("liboqs key material is not SEQUENCE { secret, public }")
    return OqsKey(name, fields[1].value, fields[0].value)
