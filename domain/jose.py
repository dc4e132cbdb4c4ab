"""JOSE for ACME (RFC 7515, 7517, 7638, 8555 6.2): flattened JWS parsing, public JWKs, thumbprints, verification.

Pure: bytes in, a parsed request or a ``JoseError`` out (never another exception). Accepted signature algorithms:
ES256/ES384/ES512 (their own curve only), RS256 (RSA of at least 2048 bits) and EdDSA (Ed25519, Ed448); ``none``,
the HMAC algorithms and anything else are ``badSignatureAlgorithm``. External account bindings (RFC 8555 7.3.4)
are HS256 JWS over the account key, checked here with a constant-time comparison.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from domain.errors import DomainError

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
MAX_JWS_BYTES = 65536
ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "EdDSA")
EAB_ALGORITHMS = ("HS256", "HS384", "HS512")
_CURVES = {"P-256": (ec.SECP256R1, 32, "ES256"), "P-384": (ec.SECP384R1, 48, "ES384"),
           "P-521": (ec.SECP521R1, 66, "ES512")}
_EC_HASH = {"ES256": hashes.SHA256, "ES384": hashes.SHA384, "ES512": hashes.SHA512}
_OKP = {"Ed25519": (ed25519.Ed25519PublicKey, 32), "Ed448": (ed448.Ed448PublicKey, 57)}
_HMAC_HASH = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


class JoseError(DomainError):
    """A request's JWS or JWK is refused: ``acme_type`` is the RFC 8555 error it answers with."""

    status = 400

    def __init__(self, acme_type: str, detail: str, *, field: str = "jws", status: int = 400) -> None:
        super().__init__(acme_type, detail, field=field)
        self.acme_type = acme_type
        self.status = status


def b64url_decode(text: Any, field: str) -> bytes:
    """Unpadded base64url (RFC 7515 2), strictly: any other character, padding, a bad length or a non-canonical
    spelling (unused trailing bits set: another spelling of the same octets) is ``malformed``."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise JoseError("malformed", f"{field} is not unpadded base64url", field=field)
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JoseError("malformed", f"{field} is not unpadded base64url", field=field) from None
    if b64url_encode(decoded) != text:
        raise JoseError("malformed", f"{field} is not canonical base64url (unused bits set)", field=field)
    return decoded


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_object(data: bytes, field: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JoseError("malformed", f"{field} is not JSON", field=field) from None
    if not isinstance(value, dict):
        raise JoseError("malformed", f"{field} must be a JSON object", field=field)
    return value


@dataclass(frozen=True, slots=True)
class Jws:
    """A parsed flattened JWS: its protected header, payload and signature, and what was signed."""

    header: dict[str, Any]
    payload: bytes
    signature: bytes
    signing_input: bytes
    alg: str
    url: str
    nonce: str | None
    jwk: dict[str, Any] | None
    kid: str | None

    def payload_json(self) -> dict[str, Any]:
        """The payload as a JSON object; ``{}`` for POST-as-GET's empty payload is not allowed here."""
        return _json_object(self.payload, "payload")

    @property
    def post_as_get(self) -> bool:
        return self.payload == b""


def parse_jws(body: bytes, *, nonce_required: bool = True) -> Jws:
    """A flattened JWS JSON serialization (RFC 7515 7.2.2) as ACME sends it (RFC 8555 6.2).

    The header is protected only (an unprotected ``header`` is refused); it names ``alg``, ``url``, ``nonce`` (unless
    ``nonce_required`` is off: the inner EAB JWS has none) and exactly one of ``jwk`` and ``kid``.
    """
    if len(body) > MAX_JWS_BYTES:
        raise JoseError("malformed", f"the JWS is larger than {MAX_JWS_BYTES} bytes", field="body")
    outer = _json_object(body, "body")
    return parse_jws_object(outer, nonce_required=nonce_required)


def parse_jws_object(outer: dict[str, Any], *, nonce_required: bool = True, field: str = "body") -> Jws:
    """``parse_jws`` for an already decoded JSON object (the EAB JWS sits inside the newAccount payload)."""
    if "header" in outer:
        raise JoseError("malformed", "an unprotected header is not allowed (RFC 8555 6.2)", field=f"{field}.header")
    unknown = set(outer) - {"protected", "payload", "signature"}
    if unknown or not {"protected", "payload", "signature"} <= set(outer):
        raise JoseError("malformed", "a flattened JWS has exactly protected, payload and signature "
                        "(general serialization and extra members are refused)", field=field)
    protected_b64, payload_b64, signature_b64 = outer["protected"], outer["payload"], outer["signature"]
    header = _json_object(b64url_decode(protected_b64, "protected"), "protected")
    payload = b64url_decode(payload_b64, "payload")
    signature = b64url_decode(signature_b64, "signature")
    alg, url, nonce = header.get("alg"), header.get("url"), header.get("nonce")
    jwk, kid = header.get("jwk"), header.get("kid")
    if not isinstance(alg, str):
        raise JoseError("malformed", "the protected header needs alg", field="protected.alg")
    if not isinstance(url, str) or not url:
        raise JoseError("malformed", "the protected header needs url (RFC 8555 6.4)", field="protected.url")
    if nonce_required and (not isinstance(nonce, str) or not nonce):
        raise JoseError("badNonce", "the protected header needs nonce (RFC 8555 6.5)", field="protected.nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise JoseError("badNonce", "nonce must be a string", field="protected.nonce")
    if (jwk is None) == (kid is None):
        raise JoseError("malformed", "the protected header has exactly one of jwk and kid", field="protected.jwk")
    if jwk is not None and not isinstance(jwk, dict):
        raise JoseError("malformed", "jwk must be a JSON object", field="protected.jwk")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise JoseError("malformed", "kid must be a non-empty string", field="protected.kid")
    if "crit" in header:
        raise JoseError("malformed", "no critical header parameters are understood here", field="protected.crit")
    signing_input = f"{protected_b64}.{payload_b64}".encode("ascii")
    return Jws(header=header, payload=payload, signature=signature, signing_input=signing_input, alg=alg,
               url=url, nonce=nonce, jwk=jwk, kid=kid)


def _coordinate(jwk: dict[str, Any], name: str, size: int) -> int:
    raw = b64url_decode(jwk.get(name), f"jwk.{name}")
    if len(raw) != size:
        raise JoseError("badPublicKey", f"jwk.{name} must be {size} octets for its curve", field=f"jwk.{name}")
    return int.from_bytes(raw, "big")


def _unsigned(jwk: dict[str, Any], name: str) -> int:
    """An RSA member in its fewest octets (RFC 7518 6.3.1): a zero octet in front would spell the same key with
    another thumbprint."""
    raw = b64url_decode(jwk.get(name), f"jwk.{name}")
    if not raw or raw[0] == 0:
        raise JoseError("badPublicKey", f"jwk.{name} must be in its fewest octets (no leading zero)",
                        field=f"jwk.{name}")
    return int.from_bytes(raw, "big")


def public_key(jwk: dict[str, Any]) -> PublicKey:
    """The public key a JWK describes; a private JWK, an unknown type or curve, or a weak RSA key is refused."""
    if not isinstance(jwk, dict):
        raise JoseError("malformed", "jwk must be a JSON object", field="jwk")
    if _PRIVATE_MEMBERS & set(jwk):
        raise JoseError("badPublicKey", "the JWK holds private key members: send the public key only", field="jwk")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    crv = crv if isinstance(crv, str) else None
    try:
        if kty == "EC":
            curve = _CURVES.get(crv) if crv else None
            if curve is None:
                raise JoseError("badPublicKey", "jwk.crv must be P-256, P-384 or P-521", field="jwk.crv")
            cls, size, _ = curve
            x, y = _coordinate(jwk, "x", size), _coordinate(jwk, "y", size)
            return ec.EllipticCurvePublicNumbers(x, y, cls()).public_key()
        if kty == "RSA":
            n, e = _unsigned(jwk, "n"), _unsigned(jwk, "e")
            if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
                raise JoseError("badPublicKey", f"an RSA account key has {MIN_RSA_BITS}-{MAX_RSA_BITS} bits, "
                                f"not {n.bit_length()}", field="jwk.n")
            if e < 3 or e % 2 == 0 or e.bit_length() > 32:
                raise JoseError("badPublicKey", "jwk.e must be an odd exponent of at most 32 bits", field="jwk.e")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if kty == "OKP":
            okp = _OKP.get(crv) if crv else None
            if okp is None:
                raise JoseError("badPublicKey", "jwk.crv must be Ed25519 or Ed448", field="jwk.crv")
            cls, size = okp
            raw = b64url_decode(jwk.get("x"), "jwk.x")
            if len(raw) != size:
                raise JoseError("badPublicKey", f"jwk.x must be {size} octets", field="jwk.x")
            return cls.from_public_bytes(raw)
    except ValueError as exc:  # a point off the curve, a malformed number
        raise JoseError("badPublicKey", f"the JWK is not a valid public key: {exc}", field="jwk") from None
    raise JoseError("badPublicKey", "jwk.kty must be EC, RSA or OKP", field="jwk.kty")


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, no whitespace; base64url. Validates the key first."""
    canonical = json.dumps(public_jwk(jwk), separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


_REQUIRED = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def public_jwk(jwk: dict[str, Any]) -> dict[str, str]:
    """Only the members that define the public key (what an account records, what a thumbprint hashes)."""
    public_key(jwk)
    return {name: jwk[name] for name in _REQUIRED[jwk["kty"]]}


def spki_sha256(jwk: dict[str, Any]) -> str:
    """Hex SHA-256 of the key's DER SubjectPublicKeyInfo (as certificates' ``public_key_sha256``)."""
    der = public_key(jwk).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _check_alg(alg: str, key: PublicKey) -> None:
    if alg not in ALGORITHMS:
        raise JoseError("badSignatureAlgorithm", f"alg {alg!r} is not accepted; use one of {', '.join(ALGORITHMS)}",
                        field="protected.alg")
    if isinstance(key, ec.EllipticCurvePublicKey):
        expected = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
    elif isinstance(key, rsa.RSAPublicKey):
        expected = "RS256"
    else:
        expected = "EdDSA"
    if alg != expected:
        raise JoseError("badSignatureAlgorithm", f"alg {alg} does not fit this key: it signs with {expected}",
                        field="protected.alg")


def verify(jws: Jws, key: PublicKey) -> None:
    """Raise ``JoseError`` unless ``jws`` is signed by ``key`` with an accepted ``alg`` that fits it."""
    _check_alg(jws.alg, key)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(jws.signature) != 2 * size:
                raise InvalidSignature()
            r = int.from_bytes(jws.signature[:size], "big")
            s = int.from_bytes(jws.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), jws.signing_input, ec.ECDSA(_EC_HASH[jws.alg]()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(jws.signature, jws.signing_input)
    except InvalidSignature:
        raise JoseError("malformed", "the JWS signature does not verify with the account key",
                        field="signature", status=400) from None


def eab_key_id(eab: Any) -> str:
    """The ``kid`` an ``externalAccountBinding`` names (read before its HMAC key is fetched to check it)."""
    if not isinstance(eab, dict):
        raise JoseError("malformed", "externalAccountBinding must be a JWS object", field="externalAccountBinding")
    inner = parse_jws_object(eab, nonce_required=False, field="externalAccountBinding")
    if inner.kid is None:
        raise JoseError("malformed", "the external account binding names its key by kid",
                        field="externalAccountBinding.kid")
    return inner.kid


def verify_eab(eab: dict[str, Any], *, account_jwk: dict[str, Any], url: str, hmac_key: bytes) -> None:
    """RFC 8555 7.3.4: an HS* JWS by the EAB key, ``url`` the newAccount URL, no nonce, payload the account's JWK."""
    inner = parse_jws_object(eab, nonce_required=False, field="externalAccountBinding")
    if inner.alg not in EAB_ALGORITHMS:
        raise JoseError("badSignatureAlgorithm",
                        f"the external account binding is signed with {', '.join(EAB_ALGORITHMS)}",
                        field="externalAccountBinding.alg")
    if inner.nonce is not None:
        raise JoseError("malformed", "the external account binding carries no nonce",
                        field="externalAccountBinding.nonce")
    if inner.url != url:
        raise JoseError("unauthorized", "the external account binding's url is not the newAccount URL",
                        field="externalAccountBinding.url", status=403)
    expected = hmac.new(hmac_key, inner.signing_input, _HMAC_HASH[inner.alg]).digest()
    if not hmac.compare_digest(expected, inner.signature):
        raise JoseError("unauthorized", "the external account binding's MAC does not verify with that key",
                        field="externalAccountBinding.signature", status=403)
    bound = _json_object(inner.payload, "externalAccountBinding.payload")
    if thumbprint_or_none(bound) != thumbprint(account_jwk):
        raise JoseError("unauthorized", "the external account binding signs another key than the account's",
                        field="externalAccountBinding.payload", status=403)


@dataclass(frozen=True, slots=True)
class KeyChange:
    """What a keyChange's inner JWS (RFC 8555 7.3.5) says, once its signature by the new key has verified."""

    new_jwk: dict[str, str]  # public members only
    old_jwk: Any  # as sent: the command compares its thumbprint with the account's key


def parse_key_change(payload: bytes, *, url: str, kid: str) -> KeyChange:
    """The outer JWS's payload, a flattened JWS signed by the new key (``jwk``, no ``kid``), whose ``url`` is the
    outer one and whose payload is ``{"account": kid, "oldKey": jwk}``. Its ``nonce``, if any, is ignored."""
    inner_object = _json_object(payload, "payload")
    inner = parse_jws_object(inner_object, nonce_required=False, field="payload")
    if inner.jwk is None:
        raise JoseError("malformed", "the inner JWS names the new key by jwk, not kid", field="payload.protected.kid")
    if inner.url != url:
        raise JoseError("malformed", "the inner JWS's url is not the outer one", field="payload.protected.url")
    try:
        verify(inner, public_key(inner.jwk))
    except JoseError as exc:
        raise JoseError(exc.acme_type, f"inner JWS: {exc.detail}", field=f"payload.{exc.field}") from None
    body = _json_object(inner.payload, "payload.payload")
    if body.get("account") != kid:
        raise JoseError("malformed", "the inner payload's account is not the outer kid", field="payload.account")
    if "oldKey" not in body:
        raise JoseError("malformed", "the inner payload names oldKey", field="payload.oldKey")
    return KeyChange(new_jwk=public_jwk(inner.jwk), old_jwk=body["oldKey"])


def thumbprint_or_none(jwk: Any) -> str | None:
    try:
        return thumbprint(jwk)
    except JoseError:
        return None


def key_authorization(token: str, account_thumbprint: str) -> str:
    """RFC 8555 8.1: what an http-01 response body holds."""
    return f"{token}.{account_thumbprint}"
