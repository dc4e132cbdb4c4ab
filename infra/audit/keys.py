"""The audit signing keys: Ed25519 and ML-DSA-65, created at init, both sign every checkpoint.

Private keys are PKCS#8 PEM files of mode 0600 in ``<data>/keys``; ``audit-keys.pub.json``
beside them is the trust anchor that verification uses.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from domain.audit import AuditKey
from infra.private_files import write_file

ALGORITHMS = {
    "ed25519": ed25519.Ed25519PrivateKey,
    "ml-dsa-65": mldsa.MLDSA65PrivateKey,
}
PUBLIC_FILE = "audit-keys.pub.json"


def key_id(algorithm: str, public_key) -> str:
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"{algorithm}:{hashlib.sha256(spki).hexdigest()[:16]}"


def load_public_key(pem: str):
    return serialization.load_pem_public_key(pem.encode())


class AuditSigner:
    def __init__(self, keys: list[tuple[str, str, object]]) -> None:
        self.keys = keys  # (key_id, algorithm, private key)

    @classmethod
    def create_or_load(cls, directory: Path) -> AuditSigner:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = []
        for algorithm, key_type in ALGORITHMS.items():
            path = directory / f"audit-{algorithm}.pem"
            if not path.exists():
                private = key_type.generate()
                write_file(path, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()), replace=False)
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            keys.append((key_id(algorithm, private.public_key()), algorithm, private))
        signer = cls(keys)
        (directory / PUBLIC_FILE).write_text(json.dumps([{
            "key_id": k.key_id, "algorithm": k.algorithm, "public_key_pem": k.public_key_pem}
            for k in signer.public_keys()], indent=2))
        return signer

    def public_keys(self) -> list[AuditKey]:
        return [AuditKey(key_id=kid, algorithm=alg, public_key_pem=private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
            for kid, alg, private in self.keys]

    def sign(self, statement: bytes) -> dict[str, str]:
        return {kid: base64.b64encode(private.sign(statement)).decode() for kid, _, private in self.keys}


def trusted_keys(directory: Path) -> dict[str, object] | None:
    """The configured trust anchor: key id -> public key, or None if there is none."""
    path = directory / PUBLIC_FILE
    if not path.exists():
        return None
    return anchor_keys(path)


def anchor_keys(path: Path) -> dict[str, object]:
    """A trust anchor file (``PUBLIC_FILE``'s format: ``[{"key_id", "public_key_pem"}]``): key id -> public key.
    Raises ValueError for a file that is not one."""
    try:
        entries = json.loads(path.read_text())
        keys = {entry["key_id"]: load_public_key(entry["public_key_pem"]) for entry in entries}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not an audit trust anchor ({PUBLIC_FILE}): {exc}") from None
    if not keys:
        raise ValueError(f"{path} is not an audit trust anchor ({PUBLIC_FILE}): it names no key")
    return keys
