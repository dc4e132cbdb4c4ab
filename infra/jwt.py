"""Token-signing keys (RS256 or ES384, files 0600, rotated without downtime), the JWKS, JWT sign and verify (PyJWT)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import stat
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from infra.private_files import write_file

ALGORITHMS = ("RS256", "ES384")  # the allow-list: never "none", never HS*
TOKEN_TYPE = "at+jwt"  # RFC 9068: an access token, not some other JWT signed by the same key
INDEX = "index.json"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti")
MAX_TOKEN_CHARS = 16_384
JWK_KEY_MEMBERS = ("kty", "n", "e", "crv", "x", "y")  # the public parameters of RSA and EC keys (RFC 7518 6)
Jwk = dict[str, str | list[str]]


class SigningKeyError(Exception):
    """The signing-key directory is unsafe (readable by others) or unreadable."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str
    created_at: float
    retired_at: float | None
    public: Any
    path: Path

    def private(self) -> Any:
        return serialization.load_pem_private_key(self.path.read_bytes(), password=None)

    def jwk(self) -> Jwk:
        """The public key as a JWK (RFC 7517): every member a string but ``key_ops``, an array (section 4.3)."""
        base = (RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm).to_jwk(self.public, as_dict=True)
        public = {member: str(base[member]) for member in JWK_KEY_MEMBERS if member in base}
        return {**public, "key_ops": ["verify"], "kid": self.kid, "alg": self.algorithm, "use": "sig"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(public: Any, algorithm: str) -> str:
    """RFC 7638 JWK thumbprint (SHA-256): the kid."""
    jwk = (RSAAlgorithm if algorithm == "RS256" else ECAlgorithm).to_jwk(public, as_dict=True)
    members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _generate(algorithm: str) -> Any:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if algorithm == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(f"token signing algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")


class SigningKeys:
    """The key set: one current key signs; retired keys stay published for ``publish_for`` seconds."""

    def __init__(self, directory: Path, algorithm: str = "RS256", publish_for: float = 960.0) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"token signing algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")
        self.directory, self.algorithm, self.publish_for = directory, algorithm, publish_for
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._current: str | None = None
        self._keys: dict[str, SigningKey] = {}

    # reading ----------------------------------------------------------------------------------
    def _refresh(self) -> None:
        index = self.directory / INDEX
        try:
            info = index.stat()
        except FileNotFoundError:
            self._seen, self._current, self._keys = None, None, {}
            return
        seen = (info.st_mtime_ns, info.st_size)
        if seen == self._seen:
            return
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise SigningKeyError(f"{index} is readable by group or others; chmod 600 it")
        data = json.loads(index.read_text())
        keys = {}
        for entry in data["keys"]:
            path = self.directory / f"{entry['kid']}.pem"
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                raise SigningKeyError(f"{path} is readable by group or others; chmod 600 it")
            public = serialization.load_pem_private_key(path.read_bytes(), password=None).public_key()
            keys[entry["kid"]] = SigningKey(entry["kid"], entry["alg"], entry["created_at"], entry.get("retired_at"),
                                            public, path)
        self._seen, self._current, self._keys = seen, data["current"], keys

    def current(self, now: float) -> SigningKey:
        """The key that signs now, created on first use."""
        with self._lock:
            self._refresh()
            if self._current is None:
                self._add(self.algorithm, now)
            return self._keys[self._current]

    def published(self, now: float) -> list[SigningKey]:
        """The current key and every retired key whose tokens may still be unexpired."""
        with self._lock:
            self._refresh()
            return [key for key in self._keys.values()
                    if key.retired_at is None or key.retired_at + self.publish_for > now]

    def verification_key(self, kid: str, now: float) -> SigningKey | None:
        return next((key for key in self.published(now) if key.kid == kid), None)

    def jwks(self, now: float) -> dict[str, list[Jwk]]:
        return {"keys": [key.jwk() for key in self.published(now)]}

    # writing ----------------------------------------------------------------------------------
    def rotate(self, now: float, algorithm: str | None = None) -> tuple[SigningKey, SigningKey | None]:
        """Add a key that signs from now on; the previous one is retired (still published)."""
        with self._lock:
            self._refresh()
            previous = self._keys.get(self._current) if self._current else None
            key = self._add(algorithm or self.algorithm, now)
            return key, previous

    @contextlib.contextmanager
    def _exclusive(self):
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the CLI and a running server may share the directory
            yield
        finally:
            os.close(fd)

    def _add(self, algorithm: str, now: float) -> SigningKey:
        private = _generate(algorithm)
        kid = thumbprint(private.public_key(), algorithm)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        with self._exclusive():
            self._seen = None
            self._refresh()  # another process may have written meanwhile
            kept = [k for k in self._keys.values() if k.retired_at is None or k.retired_at + self.publish_for > now]
            entries = [{"kid": k.kid, "alg": k.algorithm, "created_at": k.created_at,
                        "retired_at": now if k.retired_at is None else k.retired_at} for k in kept]
            entries.append({"kid": kid, "alg": algorithm, "created_at": now, "retired_at": None})
            write_file(self.directory / f"{kid}.pem", pem)
            write_file(self.directory / INDEX, json.dumps({"current": kid, "keys": entries}, indent=2).encode())
            for gone in set(self._keys) - {k.kid for k in kept}:  # no token it signed can still be valid
                (self.directory / f"{gone}.pem").unlink(missing_ok=True)
            self._seen = None
            self._refresh()
        return self._keys[kid]


class JwtTokens:
    """Signs and verifies access tokens (implements commands.identity.TokenSigner)."""

    def __init__(self, keys: SigningKeys, issuer: str, audience: str, leeway: float = 30.0) -> None:
        self.keys, self.issuer, self.audience, self.leeway = keys, issuer, audience, leeway
        self._private: tuple[str, Any] | None = None

    def sign(self, claims: dict[str, Any], now: datetime) -> str:
        key = self.keys.current(now.timestamp())
        cached = self._private
        if cached is None or cached[0] != key.kid:
            cached = self._private = (key.kid, key.private())
        body = {**claims, "iss": self.issuer, "aud": self.audience}
        return jwt.encode(body, cached[1], algorithm=key.algorithm, headers={"kid": key.kid, "typ": TOKEN_TYPE})

    def jwks(self, now: datetime) -> dict[str, list[Jwk]]:
        return self.keys.jwks(now.timestamp())

    def verify(self, token: str, now: datetime) -> dict[str, Any] | None:
        """The claims of a genuine, current access token; None for anything else, never an exception."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS or not isinstance(kid, str) or header.get("typ") != TOKEN_TYPE:
            return None
        key = self.keys.verification_key(kid, now.timestamp())
        if key is None or key.algorithm != alg:  # the key decides the algorithm, never the token
            return None
        try:
            claims = jwt.decode(token, key.public, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False,
                                         "verify_nbf": False, "verify_iat": False})
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        return claims if self._current(claims, now.timestamp()) else None

    def _current(self, claims: dict[str, Any], now: float) -> bool:
        """Times against the injected clock (not PyJWT's), with a small leeway; shapes of our own claims."""
        times = [claims.get(name) for name in ("iat", "nbf", "exp")]
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
            return False
        iat, nbf, exp = times
        if not (nbf - self.leeway <= now < exp + self.leeway and iat <= now + self.leeway):
            return False
        roles, amr = claims.get("roles", []), claims.get("amr", [])
        return (isinstance(claims["sub"], str) and isinstance(claims["jti"], str)
                and isinstance(claims.get("tenant"), (str, type(None)))
                and isinstance(roles, list) and all(isinstance(r, str) for r in roles)
                and isinstance(amr, list) and all(isinstance(a, str) for a in amr))
