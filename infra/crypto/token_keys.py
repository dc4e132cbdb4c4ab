"""CA signing keys on a PKCS#11 token: generated there, used there, never extractable; the service holds a reference.

A token key is an EC key pair (P-256 or P-384) or an RSA key pair (4096 bits, the least a CA's RSA key may have;
public exponent 65537): what every HSM generates and signs with. It is generated on the token configured by CSM_PKCS11_* (the KEK provider's token
and login, shared: infra/keystore/pkcs11_token.py), label ``csm-ca:<tenant>:<ca>`` and a random 16-byte CKA_ID. The private
half is a token object that is private, sensitive, never extractable, not modifiable, and may only sign (CKM_ECDSA,
CKM_RSA_PKCS). What the service keeps in its key vault, in place of key material, is a ``TokenKeyRef``: the
algorithm, the token's serial, the CKA_ID, the label and the public key (to check that the token's object is still
the one recorded). The ``cryptography`` keys that sign through the token are in ``token_signers``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from domain.ca import TOKEN_ALGORITHMS
from domain.errors import DomainError
from infra.service_settings import Pkcs11Settings
from infra.crypto import der
from infra.crypto.token_signers import TOKEN_KEY_TYPES, TokenEcKey, TokenRsaKey, TokenUnavailable
from infra.keystore.kek import KekUnavailable
from infra.keystore.pkcs11_token import open_token

__all__ = ["TOKEN_KEY_TYPES", "TokenEcKey", "TokenKeyRef", "TokenKeys", "TokenRsaKey", "TokenUnavailable",
           "is_reference"]

log = logging.getLogger(__name__)
_CURVES: dict[str, tuple[type[ec.EllipticCurve], str]] = {
    "ecdsa-p256": (ec.SECP256R1, "1.2.840.10045.3.1.7"), "ecdsa-p384": (ec.SECP384R1, "1.3.132.0.34")}
_RSA_BITS = {"rsa-4096": 4096}
assert set(_CURVES) | set(_RSA_BITS) == set(TOKEN_ALGORITHMS)
TokenKey = TokenEcKey | TokenRsaKey
LABEL_PREFIX = "csm-ca:"
_FORMAT = b"csm-token-key"  # first field of a reference, so it is never mistaken for key material
_VERSION = 1


@dataclass(frozen=True, slots=True)
class TokenKeyRef:
    """What the service stores for a token key: where it is, and its public key. Never secret."""

    algorithm: str
    serial: str
    key_id: bytes
    label: str
    spki: bytes

    def to_bytes(self) -> bytes:
        """SEQUENCE { "csm-token-key", version 1, algorithm, serial, CKA_ID, label, SubjectPublicKeyInfo }."""
        utf8 = [der.encode_tlv(der.UTF8_STRING, text.encode()) for text in (self.algorithm, self.serial)]
        return der.sequence(der.encode_tlv(der.UTF8_STRING, _FORMAT), der.encode_tlv(der.INTEGER, bytes([_VERSION])),
                            *utf8, der.encode_tlv(der.OCTET_STRING, self.key_id),
                            der.encode_tlv(der.UTF8_STRING, self.label.encode()),
                            der.encode_tlv(der.OCTET_STRING, self.spki))

    @classmethod
    def from_bytes(cls, material: bytes) -> TokenKeyRef:
        fields = der.children(der.parse(material))
        tags = [f.tag for f in fields]
        if tags != [der.UTF8_STRING, der.INTEGER, der.UTF8_STRING, der.UTF8_STRING, der.OCTET_STRING,
                    der.UTF8_STRING, der.OCTET_STRING] or fields[0].value != _FORMAT:
            raise ValueError("not a csm-token-key reference")
        if fields[1].value != bytes([_VERSION]):
            raise ValueError("unknown csm-token-key version")
        return cls(algorithm=fields[2].value.decode(), serial=fields[3].value.decode(), key_id=fields[4].value,
                   label=fields[5].value.decode(), spki=fields[6].value)


def is_reference(material: bytes) -> bool:
    """Whether vault material is a token key's reference (rather than a csm-private-key structure)."""
    try:
        first = der.children(der.parse(material))[0]
    except (ValueError, IndexError):
        return False
    return first.tag == der.UTF8_STRING and first.value == _FORMAT


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise TokenUnavailable("python-pkcs11 is not installed (pip install 'cassandra-security-manager[hsm]')") \
            from None
    return pkcs11


class TokenKeys:
    """The CA keys on the configured token; opens (and logs in, or shares the KEK provider's login) on first use."""

    def __init__(self, settings: Pkcs11Settings | None) -> None:
        self.settings = settings
        self._token: Any = None
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return self.settings is not None

    def _shared(self) -> Any:
        with self._lock:
            if self._token is None:
                if self.settings is None:
                    raise TokenUnavailable("no PKCS#11 token is configured (CSM_PKCS11_MODULE, "
                                           "CSM_PKCS11_TOKEN_LABEL, CSM_PKCS11_PIN_FILE)")
                try:
                    self._token = open_token(self.settings, needed_by="key_storage hsm")
                except KekUnavailable as exc:
                    raise TokenUnavailable(str(exc)) from None
            return self._token

    def _run(self, operation: Any, what: str) -> Any:
        token, errors = self._shared(), _pkcs11()
        try:
            return token.run(operation)
        except KekUnavailable as exc:
            raise TokenUnavailable(str(exc)) from None
        except errors.PKCS11Error as exc:
            log.error("PKCS#11 token %r: %s failed: %s", token.label, what, type(exc).__name__)
            raise TokenUnavailable(f"PKCS#11 token {token.label!r}: {what} failed ({type(exc).__name__})") from None

    def generate(self, algorithm: str, label: str) -> TokenKey:
        """A new key pair on the token; refuses an algorithm the token keys do not cover (``algorithm_not_on_token``)."""
        if algorithm not in TOKEN_ALGORITHMS:
            raise DomainError("algorithm_not_on_token", f"a CA key on the PKCS#11 token is one of "
                              f"{', '.join(TOKEN_ALGORITHMS)}, not {algorithm}", field="key_storage")
        if self.settings is None:
            raise DomainError("hsm_not_configured", "key_storage hsm needs a PKCS#11 token: this service has none "
                              "configured (CSM_PKCS11_MODULE, CSM_PKCS11_TOKEN_LABEL, CSM_PKCS11_PIN_FILE)",
                              field="key_storage")
        pkcs11 = _pkcs11()
        attribute, key_id = pkcs11.Attribute, secrets.token_bytes(16)
        public_template = {attribute.TOKEN: True, attribute.PRIVATE: False, attribute.VERIFY: True,
                           attribute.ENCRYPT: False, attribute.WRAP: False, attribute.DERIVE: False,
                           attribute.MODIFIABLE: False}
        private_template = {attribute.TOKEN: True, attribute.PRIVATE: True, attribute.SENSITIVE: True,
                            attribute.EXTRACTABLE: False, attribute.MODIFIABLE: False, attribute.SIGN: True,
                            attribute.DECRYPT: False, attribute.UNWRAP: False, attribute.DERIVE: False,
                            attribute.SIGN_RECOVER: False}

        def make(held: Any) -> Any:
            if algorithm in _RSA_BITS:
                public, _ = held.session.generate_keypair(
                    pkcs11.KeyType.RSA, _RSA_BITS[algorithm], store=True, label=label, id=key_id,
                    public_template={**public_template, attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                    private_template=private_template)
            else:
                parameters = held.session.create_domain_parameters(
                    pkcs11.KeyType.EC, {attribute.EC_PARAMS: der.encode_oid(_CURVES[algorithm][1])}, local=True)
                public, _ = parameters.generate_keypair(store=True, label=label, id=key_id,
                                                        public_template=public_template,
                                                        private_template=private_template)
            return _public_of(algorithm, public, attribute)

        public_key = self._run(make, f"generating {algorithm} key {label}")
        serial = self._shared().serial
        ref = TokenKeyRef(algorithm=algorithm, serial=serial, key_id=key_id, label=label, spki=_spki(public_key))
        log.info("generated %s key %s (id %s) on PKCS#11 token serial %s", algorithm, label, key_id.hex(), serial)
        return _signer(self, ref, public_key)

    def load(self, material: bytes) -> TokenKey:
        """The token key a vault reference names, checked to be on this token and to have the recorded public key."""
        try:
            ref = TokenKeyRef.from_bytes(material)
        except (ValueError, UnicodeDecodeError):
            raise DomainError("invalid_key_material", "a damaged PKCS#11 key reference", field="key") from None
        if ref.algorithm not in TOKEN_ALGORITHMS:
            raise DomainError("invalid_key_material", f"a PKCS#11 key reference of unknown algorithm "
                              f"{ref.algorithm!r}", field="key")
        serial = self._shared().serial
        if ref.serial != serial:
            raise TokenUnavailable(f"key {ref.label} is on token serial {ref.serial}; the configured token is "
                                   f"serial {serial}")
        attribute = _pkcs11().Attribute

        def public_half(held: Any) -> Any:
            self._private(held, ref)  # it is there, and signs
            found = list(held.session.get_objects({attribute.CLASS: _pkcs11().ObjectClass.PUBLIC_KEY,
                                                    attribute.ID: ref.key_id, attribute.LABEL: ref.label}))
            if not found:
                raise TokenUnavailable(f"the public half of key {ref.label} (id {ref.key_id.hex()}) is not on the "
                                       "token")
            return _public_of(ref.algorithm, found[0], attribute)

        public_key = self._run(public_half, f"finding key {ref.label}")
        if _spki(public_key) != ref.spki:
            raise TokenUnavailable(f"key {ref.label} (id {ref.key_id.hex()}) on the token is not the key recorded")
        return _signer(self, ref, public_key)

    def sign(self, ref: TokenKeyRef, data: bytes, mechanism: str) -> bytes:
        """The token's signature over ``data`` (a digest for CKM_ECDSA, a DigestInfo for CKM_RSA_PKCS) with the
        referenced key, as the token returns it (ECDSA: raw r || s)."""
        chosen = getattr(_pkcs11().Mechanism, mechanism)
        return self._run(lambda held: bytes(self._private(held, ref).sign(data, mechanism=chosen)),
                         f"signing with {ref.label}")

    def _private(self, held: Any, ref: TokenKeyRef) -> Any:
        """The private key object, cached in the login's session (a new login finds it again)."""
        cached = held.keys.get((ref.label, ref.key_id))
        if cached is not None:
            return cached
        pkcs11 = _pkcs11()
        found = list(held.session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY,
                                               pkcs11.Attribute.ID: ref.key_id, pkcs11.Attribute.LABEL: ref.label}))
        if not found:
            raise TokenUnavailable(f"key {ref.label} (id {ref.key_id.hex()}) is not on the token: deleted, or "
                                   "another token's")
        held.keys[(ref.label, ref.key_id)] = found[0]
        return found[0]

    def check(self) -> None:
        """The token is present and answers (logging in if this process has not yet, or again once it is back:
        ``SharedToken.probe``); ``TokenUnavailable`` otherwise."""
        try:
            self._shared().probe()
        except KekUnavailable as exc:
            raise TokenUnavailable(str(exc)) from None

    def close(self) -> None:
        with self._lock:
            token, self._token = self._token, None
        if token is not None:
            token.release()


def _signer(store: TokenKeys, ref: TokenKeyRef, public_key: Any) -> TokenKey:
    return TokenRsaKey(store, ref, public_key) if ref.algorithm in _RSA_BITS else TokenEcKey(store, ref, public_key)


def _public_of(algorithm: str, public: Any, attribute: Any) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key of a token's public key object: CKA_MODULUS and CKA_PUBLIC_EXPONENT, or CKA_EC_POINT."""
    if algorithm in _RSA_BITS:
        numbers = rsa.RSAPublicNumbers(int.from_bytes(bytes(public[attribute.PUBLIC_EXPONENT]), "big"),
                                       int.from_bytes(bytes(public[attribute.MODULUS]), "big"))
        return numbers.public_key()
    return _public_key(_CURVES[algorithm][0](), bytes(public[attribute.EC_POINT]))


def _public_key(curve: ec.EllipticCurve, point: bytes) -> ec.EllipticCurvePublicKey:
    """CKA_EC_POINT is the DER OCTET STRING of the uncompressed point (some tokens give the bare point, which also
    starts 0x04: told apart by its length)."""
    if len(point) != 1 + 2 * ((curve.key_size + 7) // 8):
        point = der.parse(point).value
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


def _spki(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
