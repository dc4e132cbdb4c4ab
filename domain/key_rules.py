"""The rules for a certificate's subject key and signature hashes: key size, RSA exponent and curve, whether the
installation and the profile or tenant allow the algorithm, what the key can be used for, broken and weak hashes."""

from __future__ import annotations

import re
from collections.abc import Iterable

from domain.algorithms import ALGORITHMS, Algorithm
from domain.certspec import CertificateSpec
from domain.violations import Violation

MIN_RSA_BITS_LEAF, MIN_RSA_BITS_CA = 3072, 4096
# NIST SP 800-56B Rev. 2 (6.2.1) and the CA/Browser Forum Baseline Requirements (6.1.6): an RSA public exponent is
# odd and 2**16 + 1 <= e < 2**256. With e = 3, a verifier that checks PKCS#1 v1.5 padding loosely accepts forged
# signatures (Bleichenbacher 2006), and a message sent unpadded to three keys can be recovered (Hastad).
MIN_RSA_EXPONENT, MAX_RSA_EXPONENT = 2**16 + 1, 2**256
STRONG_HASHES = frozenset({"sha384", "sha512"})
BROKEN_HASHES = frozenset({"md2", "md4", "md5", "sha1"})
_CLASSICAL_SIGNERS = ("rsa", "ecdsa", "hybrid")
_RSA, _DSA, _ECDSA = re.compile(r"rsa-(\d{1,6})"), re.compile(r"dsa-\d{1,6}"), re.compile(r"ecdsa-(\w+)")
_GOOD_CURVES = frozenset({"p256", "p384", "p521", "secp256r1", "secp384r1", "secp521r1", "prime256v1"})


def family_of(algorithm: str) -> str:
    """The family of a catalogued algorithm, or the prefix of a described one ("rsa-2048" → "rsa")."""
    known = ALGORITHMS.get(algorithm)
    return known.family if known else algorithm.partition("-")[0]


def allowed_for_ca(algorithm: str) -> bool:
    """Whether a CA may hold a key of this catalogued algorithm (smaller RSA keys are refused as ``weak_key``)."""
    known = ALGORITHMS.get(algorithm)
    return known is not None and _weakness(algorithm, None, known, for_ca=True) is None


def key_usages_for(algorithm: str, usages: Iterable[str]) -> frozenset[str]:
    """``usages`` less what the subject key cannot do: only RSA encrypts, only EC keys agree keys."""
    family, drop = family_of(algorithm), set()
    if family != "rsa":
        drop |= {"key_encipherment", "data_encipherment"}
    if family not in ("ecdsa", "hybrid"):  # a hybrid certificate's subject key is its EC key
        drop.add("key_agreement")
    return frozenset(usages) - drop


def _weakness(algorithm: str, key_bits: int | None, known: Algorithm | None, for_ca: bool) -> str | None:
    floor = MIN_RSA_BITS_CA if for_ca else MIN_RSA_BITS_LEAF
    bits = key_bits or (known.key_bits if known else None)
    if bits is None and (described := _RSA.fullmatch(algorithm)):
        bits = int(described[1])
    if family_of(algorithm) == "rsa" and bits is not None and bits < floor:
        return f"RSA keys{' for a CA' if for_ca else ''} must be at least {floor} bits, not {bits}"
    if known is not None:
        return None
    if _DSA.fullmatch(algorithm):
        return "DSA keys are not accepted"
    curve = _ECDSA.fullmatch(algorithm)
    if curve and curve[1].lower() not in _GOOD_CURVES:
        return f"curve {curve[1]} is not accepted: use P-256, P-384 or P-521"
    return None


def _exponent_weakness(algorithm: str, rsa_exponent: int | None) -> str | None:
    if rsa_exponent is None or family_of(algorithm) != "rsa":
        return None
    if rsa_exponent % 2 == 1 and MIN_RSA_EXPONENT <= rsa_exponent < MAX_RSA_EXPONENT:
        return None
    # a huge exponent is named by its size: its decimal digits could pass Python's int-to-text limit
    shown = rsa_exponent if rsa_exponent < MAX_RSA_EXPONENT else f"a {rsa_exponent.bit_length()}-bit number"
    return f"an RSA public exponent must be odd, at least 65537 and below 2**256, not {shown}"


def check_key(algorithm: str, key_bits: int | None, *, for_ca: bool, available: frozenset[str],
              field: str = "algorithm", rsa_exponent: int | None = None) -> list[Violation]:
    """Whether a subject key is known, strong enough, and can be used on this installation.

    ``rsa_exponent`` is the public exponent of an RSA key made elsewhere (a CSR, an imported CA certificate);
    None for keys this service generates (always 65537).
    """
    known = ALGORITHMS.get(algorithm)
    weak = _weakness(algorithm, key_bits, known, for_ca)
    out = [Violation(field, "weak_key", weak)] if weak else []
    if exponent := _exponent_weakness(algorithm, rsa_exponent):
        out.append(Violation(field, "weak_key", exponent))
    if known is None and not weak:
        out.append(Violation(field, "algorithm_unknown", f"{algorithm!r} is not a supported algorithm"))
    if known is not None and algorithm not in available:
        out.append(Violation(field, "algorithm_unavailable", f"{algorithm} is not available on this installation"))
    return out


def check_algorithm_allowed(algorithm: str, allowed: tuple[str, ...] | None, source: str) -> list[Violation]:
    """Whether ``source`` (a profile, the tenant policy) allows the algorithm; ``allowed`` None allows any."""
    if allowed is None or algorithm in allowed:
        return []
    return [Violation("algorithm", "algorithm_not_allowed",
                      f"{source} does not allow {algorithm}; it allows {', '.join(allowed) or 'none'}")]


def check_csr_hash(csr_hash: str | None) -> list[Violation]:
    """A CSR signed over a broken hash (MD2, MD4, MD5, SHA-1) is refused by name, whatever its key."""
    if csr_hash is None or csr_hash.lower() not in BROKEN_HASHES:
        return []
    return [Violation("csr", "weak_hash", f"the CSR is signed with {csr_hash}, which is broken; "
                      "sign it with SHA-256 or stronger")]


def check_signature_hashes(spec: CertificateSpec, signer_algorithm: str, csr_hash: str | None,
                           field: str) -> list[Violation]:
    """The CSR's hash (if any), and the CA signature's: a classical signer signs over SHA-384 or SHA-512."""
    out = check_csr_hash(csr_hash)
    if family_of(signer_algorithm) in _CLASSICAL_SIGNERS and spec.signature_hash not in STRONG_HASHES:
        out.append(Violation(field, "weak_hash", "classical CA signatures use SHA-384 or SHA-512, "
                             f"not {spec.signature_hash}"))
    return out
