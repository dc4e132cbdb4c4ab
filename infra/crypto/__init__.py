"""The crypto engine: keys, CSRs and X.509 issuance (classical, ML-DSA and hybrid) on pyca/cryptography."""

from infra.crypto.engine import CryptographyPki
from infra.crypto.keys import KeyPair, protect, unprotect

__all__ = ["CryptographyPki", "KeyPair", "protect", "unprotect"]
