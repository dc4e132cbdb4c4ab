"""The signature algorithms the service knows: names used in the API, events and policy."""

from __future__ import annotations

from typing import Annotated

import msgspec

AlgorithmText = Annotated[str, msgspec.Meta(max_length=40)]  # an algorithm's name as a field (a profile's, a policy's)


class Algorithm(msgspec.Struct, frozen=True, kw_only=True):
    """One key/signature algorithm.

    ``name`` is the stable identifier (API, events, policy). ``family`` groups them for policy
    and statistics. A hybrid algorithm pairs a ``classical`` algorithm (the X.509 signature
    every client checks) with an ``alternative`` post-quantum one (the 2.5.29.72-74
    extensions). ``provider`` is "cryptography" (always present) or "liboqs" (optional).
    """

    name: str
    family: str  # rsa | ecdsa | eddsa | ml-dsa | hybrid | slh-dsa | falcon
    security_bits: int
    key_bits: int | None = None  # RSA modulus size, EC field size
    curve: str | None = None  # secp256r1 | secp384r1 | secp521r1
    post_quantum: bool = False
    classical: str | None = None
    alternative: str | None = None
    provider: str = "cryptography"


def _catalogue(*algorithms: Algorithm) -> dict[str, Algorithm]:
    return {a.name: a for a in algorithms}


ALGORITHMS: dict[str, Algorithm] = _catalogue(
    Algorithm(name="rsa-3072", family="rsa", security_bits=128, key_bits=3072),
    Algorithm(name="rsa-4096", family="rsa", security_bits=152, key_bits=4096),
    Algorithm(name="ecdsa-p256", family="ecdsa", security_bits=128, key_bits=256, curve="secp256r1"),
    Algorithm(name="ecdsa-p384", family="ecdsa", security_bits=192, key_bits=384, curve="secp384r1"),
    Algorithm(name="ecdsa-p521", family="ecdsa", security_bits=256, key_bits=521, curve="secp521r1"),
    Algorithm(name="ed25519", family="eddsa", security_bits=128, key_bits=256),
    Algorithm(name="ed448", family="eddsa", security_bits=224, key_bits=448),
    Algorithm(name="ml-dsa-44", family="ml-dsa", security_bits=128, post_quantum=True),
    Algorithm(name="ml-dsa-65", family="ml-dsa", security_bits=192, post_quantum=True),
    Algorithm(name="ml-dsa-87", family="ml-dsa", security_bits=256, post_quantum=True),
    Algorithm(name="hybrid-p256-ml-dsa-44", family="hybrid", security_bits=128, key_bits=256, curve="secp256r1",
              post_quantum=True, classical="ecdsa-p256", alternative="ml-dsa-44"),
    Algorithm(name="hybrid-p384-ml-dsa-65", family="hybrid", security_bits=192, key_bits=384, curve="secp384r1",
              post_quantum=True, classical="ecdsa-p384", alternative="ml-dsa-65"),
    Algorithm(name="hybrid-p521-ml-dsa-87", family="hybrid", security_bits=256, key_bits=521, curve="secp521r1",
              post_quantum=True, classical="ecdsa-p521", alternative="ml-dsa-87"),
    # Offered only where the liboqs shared library is installed (infra/crypto decides).
    Algorithm(name="slh-dsa-sha2-128s", family="slh-dsa", security_bits=128, post_quantum=True, provider="liboqs"),
    Algorithm(name="slh-dsa-sha2-192s", family="slh-dsa", security_bits=192, post_quantum=True, provider="liboqs"),
    Algorithm(name="falcon-512", family="falcon", security_bits=128, post_quantum=True, provider="liboqs"),
    Algorithm(name="falcon-1024", family="falcon", security_bits=256, post_quantum=True, provider="liboqs"),
)

# The hash a CA's classical signature uses, by the CA key's algorithm: never below SHA-384 (policy);
# EdDSA and ML-DSA hash internally and have none.
SIGNATURE_HASH: dict[str, str] = {
    "rsa-3072": "sha384", "rsa-4096": "sha384",
    "ecdsa-p256": "sha384", "ecdsa-p384": "sha384", "ecdsa-p521": "sha512",
    "hybrid-p256-ml-dsa-44": "sha384", "hybrid-p384-ml-dsa-65": "sha384", "hybrid-p521-ml-dsa-87": "sha512",
}


def get(name: str) -> Algorithm | None:
    return ALGORITHMS.get(name)
