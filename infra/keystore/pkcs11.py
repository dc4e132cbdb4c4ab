"""Pkcs11KekProvider: tenants' key-encryption keys as AES-256 keys on a PKCS#11 token (python-pkcs11).

Each tenant has its own AES-256 secret key on the token, label ``csm-kek:<tenant>``, a random
16-byte CKA_ID, generated on first use: a token object, private, sensitive, never extractable,
not modifiable, usable only to encrypt and decrypt. A data key is wrapped on the token with
CKM_AES_GCM (SoftHSM2 2.6 and most HSMs have it; CKM_AES_KEY_WRAP_PAD cannot bind associated
data) under a random 96-bit nonce, with associated data binding the provider, the ``kek_id`` and
the tenant id, as the other providers do. Wrapped = 0x01 || nonce (12) || ciphertext+tag (48).
Random nonces keep a tenant key within GCM's bound for 2^32 wraps.

``kek_id`` = ``pkcs11:<token serial>:<CKA_ID hex>:<label>``: a row names exactly the object that
wraps it. A row's label must be this tenant's (else UnwrapFailed), and the tenant is in the
associated data too. Two processes creating a tenant's key at once may leave two; rows name
theirs by CKA_ID, and new wraps use the smallest, so both stay readable and they converge.

The token's login, shared with the CA keys on the token, is ``pkcs11_token``'s.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from infra.config import Settings
from infra.service_settings import Pkcs11Settings
from infra.keystore.kek import KEY_BYTES, NONCE_BYTES, KekProvider, KekUnavailable, UnwrapFailed, bind
from infra.keystore.pkcs11_token import SharedToken, TokenSession, open_token, pkcs11_module

T = TypeVar("T")
VERSION = b"\x01"
LABEL_PREFIX = "csm-kek:"
WRAPPED_BYTES = 1 + NONCE_BYTES + KEY_BYTES + 16


class Pkcs11KekProvider:
    """The ``KekProvider`` on a PKCS#11 token; see the module docstring for the key and wrap format."""

    provider = "pkcs11"
    per_tenant = True  # a key on the token is one tenant's: a rotation for every tenant makes one each

    def __init__(self, settings: Pkcs11Settings) -> None:
        self._pkcs11 = pkcs11_module()
        self._token: SharedToken | None = open_token(settings)
        self.serial = self._token.serial

    # keys on the token -------------------------------------------------------------------

    def _shared(self) -> SharedToken:
        if self._token is None:
            raise KekUnavailable("the PKCS#11 provider is closed")
        return self._token

    def _find(self, held: TokenSession, label: str, key_id: bytes | None = None) -> Any | None:
        """The tenant's key (by CKA_ID, or the one with the smallest CKA_ID), cached per session."""
        cached = held.keys.get((label, key_id or b""))
        if cached is not None:
            return cached
        attribute, object_class = self._pkcs11.Attribute, self._pkcs11.ObjectClass
        template = {attribute.CLASS: object_class.SECRET_KEY, attribute.LABEL: label}
        if key_id is not None:
            template[attribute.ID] = key_id
        found = sorted(held.session.get_objects(template), key=lambda key: key[attribute.ID])
        if not found:
            return None
        held.keys[(label, key_id or b"")] = found[0]
        return found[0]

    def _create(self, held: TokenSession, label: str) -> Any:
        self._generate(held, label)
        return self._find(held, label)  # the smallest CKA_ID: another process may have made one too

    def _generate(self, held: TokenSession, label: str) -> Any:
        pkcs11 = self._pkcs11
        attribute = pkcs11.Attribute
        template = {attribute.TOKEN: True, attribute.PRIVATE: True, attribute.SENSITIVE: True,
                    attribute.EXTRACTABLE: False, attribute.MODIFIABLE: False, attribute.WRAP: False,
                    attribute.UNWRAP: False, attribute.DERIVE: False, attribute.SIGN: False, attribute.VERIFY: False}
        return held.session.generate_key(pkcs11.KeyType.AES, KEY_BYTES * 8, label=label, id=secrets.token_bytes(16),
                                         store=True, template=template,
                                         capabilities=pkcs11.MechanismFlag.ENCRYPT | pkcs11.MechanismFlag.DECRYPT)

    def _kek_id(self, key: Any, label: str) -> str:
        return f"{self.provider}:{self.serial}:{bytes(key[self._pkcs11.Attribute.ID]).hex()}:{label}"

    def _aad(self, tenant_id: str, kek_id: str) -> bytes:
        return bind("csm/v1/wrap", self.provider, kek_id, tenant_id)

    def _gcm(self, nonce: bytes, aad: bytes) -> Any:
        return self._pkcs11.GCMParams(nonce, aad, 128)

    # the provider ------------------------------------------------------------------------

    def _parse(self, kek_id: str) -> tuple[str, bytes]:
        """The label and CKA_ID a ``kek_id`` of this token names; KekUnavailable for another token's or none."""
        name, serial, key_hex, label = (kek_id.split(":", 3) + ["", "", "", ""])[:4]
        if name != self.provider or not label.startswith(LABEL_PREFIX):
            raise KekUnavailable(f"{kek_id!r} does not name a key on a PKCS#11 token")
        if serial != self.serial:
            raise KekUnavailable(f"this data key was wrapped on token serial {serial}; the configured token "
                                 f"{self._shared().label!r} is serial {self.serial}")
        try:
            key_id = bytes.fromhex(key_hex)
        except ValueError:
            raise KekUnavailable(f"{kek_id!r} names no valid key id") from None
        return label, key_id

    def _named(self, held: TokenSession, label: str, key_id: bytes) -> Any:
        key = self._find(held, label, key_id)
        if key is None:
            raise KekUnavailable(f"key {label} (id {key_id.hex()}) is not on PKCS#11 token "
                                 f"{self._shared().label!r} (serial {self.serial}): deleted, or another token's")
        return key

    def _on_token(self, what: str, label: str, operation: Callable[[TokenSession], T]) -> T:
        token = self._shared()
        try:
            return token.run(operation)
        except self._pkcs11.PKCS11Error as exc:
            raise KekUnavailable(f"PKCS#11 token {token.label!r}: cannot {what} with {label} "
                                 f"({type(exc).__name__})") from None

    def _tenant_key(self, held: TokenSession, label: str) -> Any:
        key = self._find(held, label)
        if key is None:  # first use: the module lock makes this process's creator the only one
            key = self._create(held, label)
        return key

    def wrap(self, tenant_id: str, dek: bytes | bytearray, kek_id: str | None = None) -> tuple[str, bytes]:
        """Wrap under ``kek_id`` (a version rotation made), or under the tenant's first key (made on first use)."""
        label = LABEL_PREFIX + tenant_id
        named = self._parse(kek_id) if kek_id is not None else None
        if named is not None and named[0] != label:
            raise KekUnavailable(f"{kek_id!r} is another tenant's key")

        def seal(held: TokenSession) -> tuple[str, bytes]:
            key = self._named(held, label, named[1]) if named else self._tenant_key(held, label)
            kek_id = self._kek_id(key, label)
            nonce = secrets.token_bytes(NONCE_BYTES)
            sealed = key.encrypt(bytes(dek), mechanism=self._pkcs11.Mechanism.AES_GCM,
                                 mechanism_param=self._gcm(nonce, self._aad(tenant_id, kek_id)))
            return kek_id, VERSION + nonce + bytes(sealed)

        return self._on_token("wrap", label, seal)

    def unwrap(self, tenant_id: str, kek_id: str, wrapped: bytes) -> bytearray:
        label, key_id = self._parse(kek_id)
        if label != LABEL_PREFIX + tenant_id:
            raise UnwrapFailed("the wrapped data key belongs to another tenant's key")
        if len(wrapped) != WRAPPED_BYTES or wrapped[:1] != VERSION:
            raise UnwrapFailed("the wrapped data key has the wrong length or version")
        nonce = wrapped[1:1 + NONCE_BYTES]
        errors = self._pkcs11

        def open_(held: TokenSession) -> bytearray:
            key = self._named(held, label, key_id)
            try:
                return bytearray(key.decrypt(wrapped[1 + NONCE_BYTES:], mechanism=errors.Mechanism.AES_GCM,
                                             mechanism_param=self._gcm(nonce, self._aad(tenant_id, kek_id))))
            except (errors.EncryptedDataInvalid, errors.EncryptedDataLenRange, errors.GeneralError):
                # SoftHSM2 reports a failed tag as CKR_GENERAL_ERROR: it is a forgery only if the token
                # still answers; otherwise the token failed, and the row may well be sound.
                self._probe(held, label)
                raise UnwrapFailed("the wrapped data key fails authentication") from None

        return self._on_token("unwrap", label, open_)

    # versions: rotation and retirement ---------------------------------------------------

    def current_kek_id(self, tenant_id: str) -> str:
        """The tenant's first key (the smallest CKA_ID of its label), made now if it has none."""
        label = LABEL_PREFIX + tenant_id
        return self._on_token("find", label, lambda held: self._kek_id(self._tenant_key(held, label), label))

    def existing_kek_id(self, tenant_id: str) -> str | None:
        """The tenant's first key, if it has one (none is made)."""
        label = LABEL_PREFIX + tenant_id

        def first(held: TokenSession) -> str | None:
            key = self._find(held, label)
            return None if key is None else self._kek_id(key, label)

        return self._on_token("find", label, first)

    def base_scope(self, kek_id: str) -> str | None:
        """Every key on the token is some tenant's: the tenant its label names."""
        label, _ = self._parse(kek_id)
        return label.removeprefix(LABEL_PREFIX)

    def create_kek(self, tenant_id: str | None) -> str:
        """A new AES-256 key for the tenant (same label, a new random CKA_ID, the same attributes)."""
        if tenant_id is None:
            raise ValueError("a key on the token is one tenant's: name the tenant")
        label = LABEL_PREFIX + tenant_id

        def make(held: TokenSession) -> str:
            key = self._generate(held, label)
            held.keys.clear()
            return self._kek_id(key, label)

        return self._on_token("create a key", label, make)

    def retire_kek(self, kek_id: str) -> None:
        """Destroy the key on the token (the vault checked that no row names it); gone already is fine."""
        label, key_id = self._parse(kek_id)

        def destroy(held: TokenSession) -> None:
            key = self._find(held, label, key_id)
            held.keys.clear()
            if key is not None:
                key.destroy()

        self._on_token("destroy", label, destroy)

    def check_kek(self, kek_id: str) -> None:
        """Status: the token logs in and holds the key object ``kek_id`` names (asked again, not from the cache);
        KekUnavailable otherwise. Nothing is encrypted or decrypted."""
        label, key_id = self._parse(kek_id)

        def find(held: TokenSession) -> None:
            held.keys.pop((label, key_id), None)
            self._named(held, label, key_id)

        self._on_token("find", label, find)

    def _probe(self, held: TokenSession, label: str) -> None:
        held.keys.clear()
        self._find(held, label)

    def check(self) -> None:
        """Readiness: the token is present and answers (``SharedToken.probe``); KekUnavailable otherwise."""
        self._shared().probe()

    def close(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            token.release()


def kek_factories(settings: Settings) -> dict[str, Callable[[], KekProvider]]:
    """The vault's providers opened on first use: the token, whether or not it is the default."""

    def open_provider() -> KekProvider:
        if settings.pkcs11 is None:
            raise KekUnavailable("the PKCS#11 KEK provider needs CSM_PKCS11_MODULE and CSM_PKCS11_TOKEN_LABEL "
                                 "(and CSM_PKCS11_PIN_FILE)")
        return Pkcs11KekProvider(settings.pkcs11)

    return {Pkcs11KekProvider.provider: open_provider}
