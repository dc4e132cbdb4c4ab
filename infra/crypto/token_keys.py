"""CA signing keys on a PKCS#11 token: generated there, used there, never extractable; the service holds a reference.

A token key is an EC key pair (P-256 or P-384: what every HSM signs with) generated on the token configured by
CSM_PKCS11_* (the KEK provider's token and login, shared: infra/keystore/pkcs11.py), label ``csm-ca:<tenant>:<ca>``
and a random 16-byte CKA_ID. The private half is a token object that is private, sensitive, never extractable, not
modifiable, and may only sign (CKM_ECDSA). What the service keeps in its key vault, in place of key material, is a
``TokenKeyRef``: the algorithm, the token's serial, the CKA_ID, the label and the public key (to check that the
token's object is still the one recorded).

``TokenEcKey`` is a ``cryptography`` EC private key whose ``sign`` hashes on the host and signs the digest on the
token: cryptography's certificate, CRL, CSR and OCSP builders call back into it, so every signing path of the
engine works unchanged, and ``private_bytes`` (an export, a PKCS#8 copy) is refused by name. Every signature the
token returns is verified with the public key before it is used.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from domain.ca import TOKEN_ALGORITHMS
from domain.errors import DomainError, KeyUnavailable
from infra.config import Pkcs11Settings
from infra.crypto import der
from infra.keystore.kek import KekUnavailable
from infra.keystore.pkcs11 import open_token

log = logging.getLogger(__name__)
_CURVES: dict[str, tuple[type[ec.EllipticCurve], str]] = {
    "ecdsa-p256": (ec.SECP256R1, "1.2.840.10045.3.1.7"), "ecdsa-p384": (ec.SECP384R1, "1.3.132.0.34")}
assert set(_CURVES) == set(TOKEN_ALGORITHMS)
LABEL_PREFIX = "csm-ca:"
_FORMAT = b"csm-token-key"  # first field of a reference, so it is never mistaken for key material
_VERSION = 1


class TokenUnavailable(KeyUnavailable):
    """The token that holds a CA's key cannot sign now (gone, not logged in, the key missing): 503, retry later."""

    def __init__(self, why: str) -> None:
        super().__init__("hsm_unavailable", f"the CA key on the PKCS#11 token cannot be used: {why}",
                         field="key_storage")


def not_extractable(what: str) -> DomainError:
    return DomainError("key_not_extractable", f"{what}: the CA key was generated on a PKCS#11 token and never "
                       "leaves it (it is sensitive and not extractable)", field="key")


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


class TokenEcKey(ec.EllipticCurvePrivateKey):
    """An EC private key that lives on the token: it signs there, and refuses to be exported or copied out."""

    def __init__(self, store: TokenKeys, ref: TokenKeyRef, public: ec.EllipticCurvePublicKey) -> None:
        self._store, self.ref, self._public = store, ref, public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("a token key signs with ECDSA only")
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, utils.Prehashed):
            digest, algorithm = bytes(data), algorithm._algorithm
        else:
            hasher = hashes.Hash(algorithm)
            hasher.update(bytes(data))
            digest = hasher.finalize()
        # ECDSA uses the leftmost bits of the digest, as many as the group order has (a whole number of octets for
        # P-256 and P-384): cut here, since tokens differ in what they do with a longer CKM_ECDSA input.
        raw = self._store.sign(self.ref, digest[:(self.key_size + 7) // 8])
        half = len(raw) // 2
        signature = utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        try:
            self._public.verify(signature, digest, ec.ECDSA(utils.Prehashed(algorithm)))
        except InvalidSignature:
            raise TokenUnavailable(f"the token's signature with {self.ref.label} does not verify") from None
        return signature

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise DomainError("key_sign_only", "a CA key on the PKCS#11 token only signs", field="key")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise not_extractable("the private numbers cannot be read")

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:  # noqa: A002
        raise not_extractable("the private key cannot be exported")

    def __copy__(self) -> TokenEcKey:
        return self

    def __deepcopy__(self, memo: dict) -> TokenEcKey:
        return self

    def __repr__(self) -> str:
        return f"<TokenEcKey {self.ref.algorithm} {self.ref.label} id={self.ref.key_id.hex()} serial={self.ref.serial}>"


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

    def generate(self, algorithm: str, label: str) -> TokenEcKey:
        """A new key pair on the token; refuses an algorithm the token keys do not cover (``algorithm_not_on_token``)."""
        if algorithm not in _CURVES:
            raise DomainError("algorithm_not_on_token", f"a CA key on the PKCS#11 token is one of "
                              f"{', '.join(TOKEN_ALGORITHMS)}, not {algorithm}", field="key_storage")
        if self.settings is None:
            raise DomainError("hsm_not_configured", "key_storage hsm needs a PKCS#11 token: this service has none "
                              "configured (CSM_PKCS11_MODULE, CSM_PKCS11_TOKEN_LABEL, CSM_PKCS11_PIN_FILE)",
                              field="key_storage")
        pkcs11 = _pkcs11()
        attribute, key_id = pkcs11.Attribute, secrets.token_bytes(16)
        curve, oid = _CURVES[algorithm]
        public_template = {attribute.TOKEN: True, attribute.PRIVATE: False, attribute.VERIFY: True,
                           attribute.ENCRYPT: False, attribute.WRAP: False, attribute.DERIVE: False,
                           attribute.MODIFIABLE: False}
        private_template = {attribute.TOKEN: True, attribute.PRIVATE: True, attribute.SENSITIVE: True,
                            attribute.EXTRACTABLE: False, attribute.MODIFIABLE: False, attribute.SIGN: True,
                            attribute.DECRYPT: False, attribute.UNWRAP: False, attribute.DERIVE: False,
                            attribute.SIGN_RECOVER: False}

        def make(held: Any) -> bytes:
            parameters = held.session.create_domain_parameters(
                pkcs11.KeyType.EC, {attribute.EC_PARAMS: der.encode_oid(oid)}, local=True)
            public, _ = parameters.generate_keypair(store=True, label=label, id=key_id,
                                                    public_template=public_template,
                                                    private_template=private_template)
            return bytes(public[attribute.EC_POINT])

        point = self._run(make, f"generating {algorithm} key {label}")
        public_key = _public_key(curve(), point)
        serial = self._shared().serial
        ref = TokenKeyRef(algorithm=algorithm, serial=serial, key_id=key_id, label=label, spki=_spki(public_key))
        log.info("generated %s key %s (id %s) on PKCS#11 token serial %s", algorithm, label, key_id.hex(), serial)
        return TokenEcKey(self, ref, public_key)

    def load(self, material: bytes) -> TokenEcKey:
        """The token key a vault reference names, checked to be on this token and to have the recorded public key."""
        try:
            ref = TokenKeyRef.from_bytes(material)
            curve = _CURVES[ref.algorithm][0]()
        except (ValueError, KeyError, UnicodeDecodeError):
            raise DomainError("invalid_key_material", "a damaged PKCS#11 key reference", field="key") from None
        serial = self._shared().serial
        if ref.serial != serial:
            raise TokenUnavailable(f"key {ref.label} is on token serial {ref.serial}; the configured token is "
                                   f"serial {serial}")
        attribute = _pkcs11().Attribute

        def public_point(held: Any) -> bytes:
            self._private(held, ref)  # it is there, and signs
            found = list(held.session.get_objects({attribute.CLASS: _pkcs11().ObjectClass.PUBLIC_KEY,
                                                    attribute.ID: ref.key_id, attribute.LABEL: ref.label}))
            if not found:
                raise TokenUnavailable(f"the public half of key {ref.label} (id {ref.key_id.hex()}) is not on the "
                                       "token")
            return bytes(found[0][attribute.EC_POINT])

        public_key = _public_key(curve, self._run(public_point, f"finding key {ref.label}"))
        if _spki(public_key) != ref.spki:
            raise TokenUnavailable(f"key {ref.label} (id {ref.key_id.hex()}) on the token is not the key recorded")
        return TokenEcKey(self, ref, public_key)

    def sign(self, ref: TokenKeyRef, digest: bytes) -> bytes:
        """CKM_ECDSA over ``digest`` with the referenced key: the raw r || s the token returns."""
        mechanism = _pkcs11().Mechanism.ECDSA
        return self._run(lambda held: bytes(self._private(held, ref).sign(digest, mechanism=mechanism)),
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
        """The token answers (logging in if this process has not yet); ``TokenUnavailable`` otherwise."""
        probe = {_pkcs11().Attribute.LABEL: "csm-readiness-probe"}
        self._run(lambda held: list(held.session.get_objects(probe)), "reaching the token")

    def close(self) -> None:
        with self._lock:
            token, self._token = self._token, None
        if token is not None:
            token.release()


def _public_key(curve: ec.EllipticCurve, point: bytes) -> ec.EllipticCurvePublicKey:
    """CKA_EC_POINT is the DER OCTET STRING of the uncompressed point (some tokens give the bare point, which also
    starts 0x04: told apart by its length)."""
    if len(point) != 1 + 2 * ((curve.key_size + 7) // 8):
        point = der.parse(point).value
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


def _spki(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
