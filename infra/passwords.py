"""Argon2id password hashing (argon2-cffi); an unknown account is verified against a dummy hash, at the same cost."""

from __future__ import annotations

import secrets
import threading

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP's argon2id baseline (m=19 MiB, t=2, p=1): ~30 ms a verify on one idle core; raise it with CSM_ARGON2.
TIME_COST, MEMORY_KIB, PARALLELISM = 2, 19_456, 1


class Argon2Passwords:
    """Implements commands.identity.PasswordHasher."""

    def __init__(self, time_cost: int = TIME_COST, memory_kib: int = MEMORY_KIB, parallelism: int = PARALLELISM):
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
                                      hash_len=32, salt_len=16, type=Type.ID)
        self._dummy: bytes | None = None
        self._lock = threading.Lock()

    @property
    def parameters(self) -> str:
        h = self._hasher
        return f"argon2id t={h.time_cost} m={h.memory_cost}KiB p={h.parallelism}"

    def hash(self, password: str) -> bytes:
        return self._hasher.hash(password).encode()

    def verify(self, stored: bytes | None, password: str) -> bool:
        """True iff ``stored`` is the hash of ``password``; ``None`` costs the same and is False."""
        target = stored if stored is not None else self._dummy_hash()
        try:
            matched = self._hasher.verify(target.decode(), password)
        except (VerifyMismatchError, VerificationError, InvalidHashError, UnicodeDecodeError):
            return False
        return bool(matched) and stored is not None

    def _dummy_hash(self) -> bytes:
        with self._lock:
            if self._dummy is None:  # made on first use, not at start: every CLI command opens a runtime
                self._dummy = self.hash(secrets.token_urlsafe(24))
            return self._dummy


def from_setting(value: str) -> Argon2Passwords:
    """``"t=3,m=65536,p=4"`` (any subset; the rest default) into a hasher; ValueError names a bad part."""
    params = {"t": TIME_COST, "m": MEMORY_KIB, "p": PARALLELISM}
    for part in filter(None, (piece.strip() for piece in value.split(","))):
        name, _, number = part.partition("=")
        if name not in params or not number.isdigit() or int(number) < 1:
            raise ValueError(f"CSM_ARGON2: {part!r} is not t=N, m=KiB or p=N")
        params[name] = int(number)
    if params["m"] < 8 * params["p"]:
        raise ValueError("CSM_ARGON2: m must be at least 8 KiB per lane (p)")
    return Argon2Passwords(params["t"], params["m"], params["p"])
