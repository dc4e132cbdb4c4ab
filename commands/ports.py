"""The ports the command side needs (event store, crypto, key vault, artifacts), declared where they are used."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec

from domain.certspec import (CaCertificateInfo, CertificateFacts, CertificateSpec, CsrFacts, DistinguishedName,
                             SubjectKeyFacts)
from domain.crl_publication import SignedCrl
from domain.events import Actor, EventEnvelope
from domain.tenant import Quotas, Usage
from domain.vault import KekUsage, NewKek, RewrapCounts, StoredKey


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event a handler decided on, before the store gives it a version and a hash."""

    event_id: str
    type: str
    schema_version: int
    occurred_at: str
    actor: Actor
    correlation_id: str | None
    causation_id: str | None
    payload: dict[str, Any]


class AppendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Append ``events`` to one stream iff it is at ``expected_version`` (0: new stream).

    ``idempotency_scope``/``idempotency_key`` make a retried request a no-op that returns
    the first result; ``fingerprint`` tells a retry from a different request with the same key.
    """

    tenant_id: str
    stream_id: str
    stream_type: str
    expected_version: int
    events: list[NewEvent]
    idempotency_scope: str | None = None
    idempotency_key: str | None = None
    fingerprint: str | None = None


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str
    version: int
    first_position: int
    global_position: int
    replayed: bool = False


class EventStore(Protocol):
    """Append-only, hash-chained, durable event storage (SQLite or Cassandra)."""

    async def append(self, request: AppendRequest) -> AppendResult: ...

    async def read_stream(self, tenant_id: str, stream_id: str, from_version: int = 1) -> list[EventEnvelope]: ...

    async def read_all(self, after_position: int, limit: int = 1000) -> list[EventEnvelope]: ...

    def subscribe(self, after_position: int) -> AsyncIterator[EventEnvelope]: ...

    async def head_position(self) -> int: ...

    async def idempotent_result(self, scope: str, key: str, fingerprint: str) -> AppendResult | None: ...


class PublicKeys(msgspec.Struct, frozen=True, kw_only=True):
    """A subject's public key(s) as SubjectPublicKeyInfo DER; ``alternative`` is the ML-DSA half of a hybrid."""

    primary: bytes
    alternative: bytes | None = None


class PkiCrypto(Protocol):
    """Key generation, CSR checking and certificate signing (infra/crypto implements it).

    Private keys are opaque handles; ``private_key_bytes`` turns one into the plaintext that
    the ``KeyVault`` encrypts, and ``load_private_key`` reverses it. Methods are synchronous
    and CPU-bound: handlers generate keys on ``commands.blocking``'s pool (RSA takes seconds) and sign
    through ``asyncio.to_thread``.
    Every refusal is a ``DomainError`` naming the field ("csr", "algorithm") and the rule.
    """

    def available_algorithms(self) -> frozenset[str]: ...

    def generate_key(self, algorithm: str) -> Any: ...

    def generate_token_key(self, algorithm: str, label: str) -> Any:
        """A key made on the PKCS#11 token, which never leaves it: ``private_key_bytes`` gives only its reference.
        Refuses ``algorithm_not_on_token`` / ``hsm_not_configured`` (422) and ``hsm_unavailable`` (503)."""
        ...

    def private_key_bytes(self, key: Any) -> bytes: ...

    def load_private_key(self, material: bytes) -> Any: ...

    def public_keys(self, key: Any) -> PublicKeys: ...

    def parse_csr(self, data: bytes) -> tuple[CsrFacts, PublicKeys]: ...

    def sign_certificate(self, spec: CertificateSpec, subject: PublicKeys, issuer_key: Any,
                         issuer_certificate: bytes | None) -> bytes: ...

    def sign_described(self, spec: CertificateSpec, subject: PublicKeys, issuer_key: Any,
                       issuer_certificate: bytes | None) -> tuple[bytes, CertificateFacts]:
        """``sign_certificate`` and ``describe`` of its result in one step, without reading it back."""
        ...

    def describe(self, certificate: bytes) -> CertificateFacts: ...

    def certificate_public_keys(self, certificate: bytes) -> tuple[SubjectKeyFacts, PublicKeys]:
        """The subject key(s) a DER certificate certifies, and what policy needs to judge them."""
        ...

    def verify_issued(self, certificate: bytes, issuer_certificate: bytes, field: str = "certificate") -> None:
        """That ``issuer_certificate`` signed ``certificate``; refusals name ``field``, where the certificate came
        from (a request's ``certificate_pem``)."""
        ...

    def describe_ca(self, certificate: bytes) -> CaCertificateInfo: ...

    def create_csr(self, subject: DistinguishedName, key: Any) -> bytes: ...


class KeyVault(Protocol):
    """Envelope-encrypted private key storage, confined to a tenant (infra/keystore implements it).

    ``put`` encrypts ``material`` under a fresh data key wrapped by the tenant's KEK and
    returns the new key id; ``get`` decrypts it, and raises ``NotFound`` for a key of another
    tenant exactly as for a key that does not exist.
    """

    async def put(self, tenant_id: str, material: bytes, *, algorithm: str, purpose: str) -> str: ...

    async def get(self, tenant_id: str, key_id: str) -> bytes: ...

    async def stored_before(self, cutoff: datetime) -> list[StoredKey]:
        """Every key stored before ``cutoff``, of every tenant: ids and purposes, never the material."""
        ...

    async def delete(self, key_ids: Sequence[str]) -> int:
        """Delete these keys (of any tenant); returns how many there were."""
        ...


class KekAdmin(Protocol):
    """Rotating, re-wrapping and retiring key-encryption keys (the key vault, infra/keystore/keks.py).

    Two steps each, so that the record comes between them: ``create_keks`` makes inert key material and
    ``assign_keks`` puts it in service; ``mark_kek_retired`` stops a KEK from ever wrapping again (refused,
    ``KekInUse``, while it wraps new keys or any row names it) and ``destroy_kek`` destroys it.
    """

    kek_provider: str  # who wraps new data keys here

    async def create_keks(self, provider: str, tenant_id: str | None) -> list[NewKek]: ...

    async def assign_keks(self, created: list[NewKek]) -> None: ...

    async def rewrap_plan(self, provider: str, tenant_id: str | None) -> tuple[dict[str, str], RewrapCounts, int]:
        """Each tenant's target KEK, the KEKs its rows are under, and how many rows are not under the target."""
        ...

    async def rewrap(self, provider: str, targets: dict[str, str], total: int,
                     progress: Callable[[int, int], None] | None = None) -> RewrapCounts: ...

    async def kek_usage(self) -> list[KekUsage]: ...

    async def mark_kek_retired(self, kek_id: str) -> str: ...

    async def destroy_kek(self, kek_id: str) -> None: ...


class DirectoryIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """Who an external directory (LDAP, Active Directory) says a user is, after a successful bind."""

    username: str
    dn: str
    display_name: str | None = None
    email: str | None = None
    groups: tuple[str, ...] = ()  # group DNs
    roles: tuple[str, ...] = ()  # mapped from groups by configuration
    tenant_id: str | None = None  # from configuration: the tenant the directory's users act in (None: platform)


class Directory(Protocol):
    """Password authentication against an external directory (infra/ldap implements it).

    Returns None for a wrong username or password, and for a disabled account: the caller
    cannot tell them apart (no account enumeration). Raises ``DirectoryUnavailable`` (a
    DomainError, 503) when the directory cannot be reached.
    """

    async def authenticate(self, username: str, password: str) -> DirectoryIdentity | None: ...


class ArtifactStore(Protocol):
    """Content-addressed storage of published documents (CRLs), named by the SHA-256 their events carry.

    ``put`` is idempotent (the same bytes have the same name) and durable before it returns,
    so an event never names an artifact that a crash could lose. ``supersede`` tells the store that the artifact
    ``newer`` replaces the artifacts ``older`` (a CA's previous CRL): it may keep those as their difference from it,
    and ``get`` still returns them whole.
    """

    async def put(self, data: bytes, media_type: str) -> str: ...

    async def supersede(self, newer: str, older: Sequence[str]) -> int: ...

    async def get(self, sha256: str) -> bytes | None: ...


class OcspQuestion(msgspec.Struct, frozen=True, kw_only=True):
    """One certificate an OCSP request asks about (RFC 6960 CertID), and the request's nonce."""

    hash_algorithm: str  # sha1 | sha256 | sha384 | sha512: how the issuer hashes were made
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    nonce: bytes | None = None


class OcspAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """good | revoked | unknown, with the revocation's time and RFC 5280 reason name when revoked."""

    status: str
    revoked_at: datetime | None = None
    reason: str | None = None


class RevocationCrypto(Protocol):
    """CRL signing and the OCSP wire format (infra/crypto/revocation.py implements it).

    Keys are the opaque handles of ``PkiCrypto``; a hybrid CA signs CRLs with its classical
    key, the signature every relying party checks. ``parse_ocsp_request`` raises a
    ``DomainError`` "malformed_ocsp_request" for anything it cannot answer; ``read_crl`` (a CRL an
    offline key signed) one naming ``crl_pem`` for a CRL that does not decode or verify.
    """

    def sign_crl(self, entries: Sequence[Any], *, issuer_key: Any, issuer_certificate: bytes, number: int,
                 this_update: datetime, next_update: datetime) -> bytes: ...

    def read_crl(self, data: bytes, issuer_certificate: bytes) -> SignedCrl: ...

    def parse_ocsp_request(self, data: bytes) -> OcspQuestion: ...

    def issuer_hashes(self, issuer_certificate: bytes, hash_algorithm: str) -> tuple[bytes, bytes]: ...

    def ocsp_response(self, question: OcspQuestion, answer: OcspAnswer, *, signer_key: Any,
                      signer_certificate: bytes, this_update: datetime, next_update: datetime) -> bytes: ...

    def ocsp_failure(self, status: str) -> bytes: ...


class CountedUsage(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's usage as the read models counted it, and the log position each count includes.

    ``cas_position`` / ``certificates_position``: every event up to there is in ``usage.cas`` /
    ``usage.certificates`` and ``usage.issuances_today`` (the two counts come from different read models).
    """

    usage: Usage
    cas_position: int
    certificates_position: int


class TenantUsage(Protocol):
    """What a tenant holds, counted on the read models once they have reached the log's head (infra/usage.py).

    With ``bounds``, only what a quota there bounds is counted (the rest reads 0); without, everything. Raises a ``DomainError`` (503, "usage_unknown") when the read models cannot
    reach the head in time: a quota is never checked against counts known to be behind.
    """

    async def count(self, tenant_id: str, now: datetime, bounds: Quotas | None = None) -> CountedUsage: ...


class SessionIndex(Protocol):
    """A subject's refresh-token families that are still open, from the sessions read model (infra/sessions.py).

    Best effort: the read model may miss a family that started a moment ago; the user's sessions epoch
    (domain/user.py) ends that one too, so this only decides which families get a recorded revocation.
    """

    async def open_sessions(self, subject: str, now: datetime) -> list[tuple[str, str]]: ...  # (tenant, session id)


class AccountKeys(Protocol):
    """The active API keys the api_tokens read model lists for a service account (infra/account_keys.py).

    Only for keys issued before the account's stream recorded its keys (``service_account.key_issued``): a disable
    revokes every key its stream records whatever the read model says; these are the older ones, which the read model
    has had since long before. Best effort: a rebuilding read model lists none.
    """

    async def active_keys(self, tenant_id: str | None, account: str) -> list[str]: ...


class KeyHolding(msgspec.Struct, frozen=True, kw_only=True):
    """The certificates a read model found holding a key, and whether it could have missed none."""

    certificate_ids: tuple[str, ...]
    # False: the read model had not reached the log's head, or was rebuilding (then nothing is found): more may exist
    complete: bool = True


class KeyHolders(Protocol):
    """The tenant's certificates of one public key that are still trusted (not revoked, not expired), from the
    certificates read model once it has reached the log's head (infra/key_holders.py): those whose subject key it is,
    and hybrid certificates whose ML-DSA half (subjectAltPublicKeyInfo) it is.

    Best effort, like ``SessionIndex``: a certificate issued in the same instant may be missed; a revocation never
    waits on it for its own certificate, only for the others of a compromised key.
    """

    async def holding_key(self, tenant_id: str, public_key_sha256: str, now: datetime) -> KeyHolding: ...


class AcmeAuthorizations(Protocol):
    """An ACME account's authorizations not yet validated, failed, deactivated or expired, from the ACME read model
    once it has reached the log's head (infra/acme/authorizations.py): what deactivating the account deactivates.

    Best effort, like ``KeyHolders``: one created in the same instant may be missed; the account, deactivated, can
    no longer answer it, and its validation records nothing."""

    async def open_authorizations(self, tenant_id: str, account_id: str, now: datetime) -> list[str]: ...


class Reissue(msgspec.Struct, frozen=True, kw_only=True):
    """What still chains to a root only through a key a compromise rollover withdrew from trust: nothing it signed
    validates against a truststore exported since, so each must be issued again under a trusted key
    (docs/operations.md, "A stolen root key"). The rollover revokes none of them (only the root's link
    certificates); a CA listed here issues nothing until it is rolled over."""

    count: int  # len(cas) + len(certificates)
    cas: tuple[str, ...]  # intermediates: roll each over (its parent signs with its trusted key), nearest the root first
    certificates: tuple[str, ...]  # live certificates: renew each, once its CA chains to a trusted key
    complete: bool = True  # False: the read models had not reached the log's head (or were rebuilding): more may exist


class UntrustedChains(Protocol):
    """What a root's compromise rollover left chained to it only through a withdrawn key, from the CA and certificate
    read models once they have reached the log's head (infra/untrusted_chains.py). Best effort, like ``KeyHolders``:
    it informs the operator's re-issuance, and never decides anything."""

    async def below(self, tenant_id: str, root_id: str, now: datetime) -> Reissue: ...
