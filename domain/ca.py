"""The CertificateAuthority aggregate: root and intermediate CAs, their certificates and their keys.

A CA's events carry its certificates (public) and a reference to its private key in the key
vault, never the key. A CA holds one *current* certificate and key (which signs) and keeps
every earlier one (key rollover: the old certificate stays valid until it expires, so chains
built on it keep verifying during the overlap), plus cross-certificates that other CAs issued
for its key, and a root's link certificates (RFC 4210 4.4: at each rollover its old key
certifies the new one, and the new key the old one).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.certspec import CertificateFacts, DistinguishedName, NameConstraints
from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Payload, event, resumable, upcaster

STREAM_TYPE = "ca"
KINDS = ("root", "intermediate")
MAX_NAME = 200
KEY_STORAGES = ("vault", "hsm")  # the key vault (envelope-encrypted), or generated on the PKCS#11 token and kept there
# what a CA key on the token may be: every HSM generates and signs with these (ECDSA, RSA PKCS #1 v1.5; a CA's RSA key
# is 4096 bits, as the policy requires)
TOKEN_ALGORITHMS = ("ecdsa-p256", "ecdsa-p384", "rsa-4096")


def stream_id(ca_id: str) -> str:
    return f"ca-{ca_id}"


class CaCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """One certificate for a CA's key, with the facts read off it."""

    certificate_pem: str
    facts: CertificateFacts
    issuer_ca_id: str | None  # None: self-signed, or signed outside the service (offline root)
    key_ref: str | None  # the vault key that matches it; None when the key lives offline


@event("ca.created")
class CaCreated(Payload, frozen=True, kw_only=True):
    """A CA came into being: signed here (root or intermediate), or imported (offline root)."""

    ca_id: str
    name: str
    kind: str  # root | intermediate
    origin: str  # online | offline
    algorithm: str
    subject: DistinguishedName
    parent_id: str | None
    path_length: int | None
    name_constraints: NameConstraints
    certificate: CaCertificate
    key_storage: str = "vault"  # vault | hsm (events before token keys: vault)


@event("ca.intermediate_requested")
class CaIntermediateRequested(Payload, frozen=True, kw_only=True):
    """An intermediate whose issuer is offline: the key is here, the CSR waits for the ceremony."""

    ca_id: str
    name: str
    algorithm: str
    subject: DistinguishedName
    key_ref: str
    csr_pem: str
    parent_id: str | None  # the offline root's CA id, when it was imported
    key_storage: str = "vault"  # vault | hsm


@event("ca.certificate_installed")
class CaCertificateInstalled(Payload, frozen=True, kw_only=True):
    """The certificate signed offline for a requested intermediate: the CA becomes active."""

    path_length: int | None
    name_constraints: NameConstraints
    certificate: CaCertificate


@event("ca.cross_certified")
class CaCrossCertified(Payload, frozen=True, kw_only=True):
    """Another CA certified this CA's current key: a second path to a second trust anchor."""

    certificate: CaCertificate


@event("ca.key_rolled_over", schema_version=3)
class CaKeyRolledOver(Payload, frozen=True, kw_only=True):
    """A new key and certificate take over signing; the previous ones stay valid until they expire.

    Schema 2: a root's rollover also records its link certificates (RFC 4210 4.4 root CA key update), each for
    the root's own subject: ``new_with_old``, the new key certified by the old one (a relying party that trusts
    only the old root certificate accepts chains to the new key), and ``old_with_new``, the old key certified by
    the new one (the reverse); neither outlives the old certificate. An intermediate's rollover has none (its
    parent certifies each of its keys), nor had any schema 1 event (upcast to null).

    Schema 3: ``compromised``, a root's rollover away from a stolen key. It has no link certificates (the old key
    certifying the new one proves nothing, since the thief can sign the same; the new key certifying the old one
    would vouch for the thief), and from then on the CA's keys before it are withdrawn from trust: no chain,
    truststore or caIssuers answer holds a certificate of them, nor a link (projections/cas.py). Every earlier key
    goes, not only the stolen one: each earlier key signed a link certifying the next, up to the stolen one, so a
    truststore holding any of them trusts the thief's chains. Schema 2 events were routine (upcast to false).
    """

    certificate: CaCertificate
    reason: str
    new_with_old: CaCertificate | None = None
    old_with_new: CaCertificate | None = None
    compromised: bool = False


@upcaster("ca.key_rolled_over", 1)
def _v1_had_no_link_certificates(data: dict) -> dict:
    return {**data, "new_with_old": None, "old_with_new": None}


@upcaster("ca.key_rolled_over", 2)
def _v2_was_routine(data: dict) -> dict:
    return {**data, "compromised": False}


@event("ca.disabled")
class CaDisabled(Payload, frozen=True, kw_only=True):
    reason: str


@event("ca.enabled")
class CaEnabled(Payload, frozen=True, kw_only=True):
    reason: str


@event("ca.revoked")
class CaRevoked(Payload, frozen=True, kw_only=True):
    """The CA's certificates are revoked (its issuers' CRLs list them): it certifies nothing more, ever (its key
    still signs its CRLs and, once its last OCSP responder runs out, its OCSP answers: domain/crl_publication.py,
    domain/ocsp_signing.py)."""

    reason: str  # an RFC 5280 reason name (domain.revocation.REASONS)
    revoked_at: datetime
    invalidity_date: datetime | None


class CertificateAuthority(msgspec.Struct, frozen=True, kw_only=True):
    """A CA's state, folded from its events. ``version`` 0 means it does not exist."""

    ca_id: str = ""
    name: str = ""
    kind: str = ""
    origin: str = ""
    status: str = "absent"  # absent | pending | active | disabled | revoked
    algorithm: str = ""
    subject: DistinguishedName | None = None
    parent_id: str | None = None
    path_length: int | None = None
    name_constraints: NameConstraints = NameConstraints()
    current: CaCertificate | None = None
    previous: tuple[CaCertificate, ...] = ()
    cross: tuple[CaCertificate, ...] = ()
    links: tuple[CaCertificate, ...] = ()  # a root's link certificates, NewWithOld then OldWithNew per rollover
    pending_key_ref: str | None = None
    csr_pem: str | None = None
    key_storage: str = "vault"  # where its keys are made and kept: every rollover keeps them there
    # fingerprints of the certificates and links a compromise rollover withdrew from trust (domain/compromise.py)
    withdrawn: frozenset[str] = frozenset()
    version: int = 0

    @property
    def signing_key_ref(self) -> str | None:
        return self.current.key_ref if self.current else None

    @property
    def held(self) -> list[CaCertificate]:
        """Every certificate of the CA's keys: the current one, those before a rollover, its cross-certificates."""
        return [c for c in (self.current, *self.previous, *self.cross) if c is not None]


def evolve(state: CertificateAuthority, payload: Payload) -> CertificateAuthority:
    replace = msgspec.structs.replace
    match payload:
        case CaCreated():
            state = CertificateAuthority(
                ca_id=payload.ca_id, name=payload.name, kind=payload.kind, origin=payload.origin, status="active",
                algorithm=payload.algorithm, subject=payload.subject, parent_id=payload.parent_id,
                path_length=payload.path_length, name_constraints=payload.name_constraints,
                current=payload.certificate, key_storage=payload.key_storage)
        case CaIntermediateRequested():
            state = CertificateAuthority(
                ca_id=payload.ca_id, name=payload.name, kind="intermediate", origin="offline", status="pending",
                algorithm=payload.algorithm, subject=payload.subject, parent_id=payload.parent_id,
                pending_key_ref=payload.key_ref, csr_pem=payload.csr_pem, key_storage=payload.key_storage)
        case CaCertificateInstalled():
            state = replace(state, status="active", current=payload.certificate, path_length=payload.path_length,
                            name_constraints=payload.name_constraints, pending_key_ref=None)
        case CaCrossCertified():
            state = replace(state, cross=(*state.cross, payload.certificate))
        case CaKeyRolledOver():
            previous = (*state.previous, state.current) if state.current else state.previous
            links = tuple(c for c in (payload.new_with_old, payload.old_with_new) if c is not None)
            withdrawn = state.withdrawn | {c.facts.fingerprint_sha256 for c in (*state.held, *state.links)} \
                if payload.compromised else state.withdrawn
            state = replace(state, current=payload.certificate, previous=previous, links=(*state.links, *links),
                            algorithm=payload.certificate.facts.algorithm,  # a rollover may change algorithm
                            withdrawn=withdrawn)
        case CaDisabled():
            state = replace(state, status="disabled")
        case CaEnabled():
            state = replace(state, status="active")
        case CaRevoked():
            state = replace(state, status="revoked")
    return replace(state, version=state.version + 1)


@resumable
def fold(payloads: Iterable[Payload], start: CertificateAuthority | None = None) -> CertificateAuthority:
    state = CertificateAuthority() if start is None else start
    for payload in payloads:
        state = evolve(state, payload)
    return state


def validate_name(name: str, field: str = "name") -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise DomainError("invalid_name", f"{field} must be 1-{MAX_NAME} printable characters", field=field)
    return name


def require(state: CertificateAuthority, ca_id: str, field: str = "ca_id") -> None:
    if state.status == "absent":
        raise NotFound("ca_not_found", f"CA {ca_id} does not exist", field=field)


def require_token_algorithm(key_storage: str, algorithm: str, field: str = "key_storage") -> None:
    """A key on the token is ECDSA P-256 or P-384; the vault holds any algorithm."""
    if key_storage == "hsm" and algorithm not in TOKEN_ALGORITHMS:
        raise DomainError("algorithm_not_on_token", f"a CA key on the PKCS#11 token is one of "
                          f"{', '.join(TOKEN_ALGORITHMS)}, not {algorithm}", field=field)


def require_active(state: CertificateAuthority, ca_id: str, field: str = "ca_id") -> None:
    """The CA exists, is enabled, and holds a signing key here (not an offline root)."""
    require(state, ca_id, field)
    if state.status == "revoked":
        raise DomainError("ca_revoked", f"CA {ca_id} is revoked", field=field)
    if state.status == "disabled":
        raise DomainError("ca_disabled", f"CA {ca_id} is disabled", field=field)
    if state.status == "pending":
        raise DomainError("ca_pending", f"CA {ca_id} is waiting for its offline-signed certificate", field=field)
    if state.signing_key_ref is None:
        raise DomainError("ca_key_offline", f"CA {ca_id}'s key is offline: sign with `csm ca root sign-intermediate`",
                          field=field)


def decide_create(state: CertificateAuthority, created: CaCreated) -> list[Payload]:
    if state.status != "absent":
        raise AlreadyExists("ca_exists", f"CA {created.ca_id} already exists", field="ca_id")
    return [msgspec.structs.replace(created, name=validate_name(created.name))]


def decide_request_intermediate(state: CertificateAuthority, requested: CaIntermediateRequested) -> list[Payload]:
    if state.status != "absent":
        raise AlreadyExists("ca_exists", f"CA {requested.ca_id} already exists", field="ca_id")
    return [msgspec.structs.replace(requested, name=validate_name(requested.name))]


def decide_install(state: CertificateAuthority, ca_id: str, installed: CaCertificateInstalled,
                   public_key_sha256: str) -> list[Payload]:
    require(state, ca_id)
    if state.status != "pending":
        raise DomainError("ca_not_pending", f"CA {ca_id} is not waiting for a certificate", field="ca_id")
    if installed.certificate.facts.public_key_sha256 != public_key_sha256:
        raise DomainError("certificate_key_mismatch", "the certificate is not for the key this CA requested",
                          field="certificate_pem")
    return [installed]


def decide_cross_certify(state: CertificateAuthority, ca_id: str, crossed: CaCrossCertified) -> list[Payload]:
    require_active(state, ca_id)
    current = state.current
    if current is None or crossed.certificate.facts.public_key_sha256 != current.facts.public_key_sha256:
        raise DomainError("certificate_key_mismatch", "a cross-certificate must certify this CA's current key",
                          field="certificate")
    if crossed.certificate.issuer_ca_id in {c.issuer_ca_id for c in state.cross}:
        raise AlreadyExists("already_cross_certified", f"CA {ca_id} is already certified by "
                            f"{crossed.certificate.issuer_ca_id}", field="issuer_id")
    return [crossed]


def check_rollover(state: CertificateAuthority, ca_id: str, *, compromised: bool, key_reported: bool) -> None:
    """Whether the CA may roll over in this mode, before a key is made: it is active; a compromise rollover is a
    root's (an intermediate's stolen key is revoked instead: its parent's CRL lists it, which nothing can do for a
    root); and a routine one is not of a key reported compromised (``key_reported``: its current key is on the
    tenant's compromised-keys stream), whose link certificates would vouch for the thief."""
    require_active(state, ca_id)
    if compromised and state.kind != "root":
        raise DomainError("compromise_rollover_root_only", f"CA {ca_id} is an intermediate: revoke it with reason "
                          "key_compromise (POST /v1/cas/{id}/revoke), its parent's CRL then lists it, and create "
                          "another", field="compromised")
    if key_reported and not compromised:
        raise DomainError("key_compromised", f"CA {ca_id}'s current key was reported compromised: roll over with "
                          "compromised true, so that no link certificate vouches for it", field="compromised")


def decide_rollover(state: CertificateAuthority, ca_id: str, rolled: CaKeyRolledOver) -> list[Payload]:
    require_active(state, ca_id)
    if rolled.compromised:
        check_rollover(state, ca_id, compromised=True, key_reported=False)
        if (rolled.new_with_old, rolled.old_with_new) != (None, None):
            raise DomainError("link_certificates_invalid", "a compromise rollover signs no link certificate: "
                              "each would tie the stolen key to the new one", field="certificate")
    _require_links(state, rolled)
    return [msgspec.structs.replace(rolled, reason=validate_name(rolled.reason, "reason"))]


def _require_links(state: CertificateAuthority, rolled: CaKeyRolledOver) -> None:
    """Link certificates belong to a root's rollover, both or neither, each certifying the key it names."""
    links = (rolled.new_with_old, rolled.old_with_new)
    if links == (None, None):
        return
    old, new = state.current, rolled.certificate
    if state.kind != "root" or None in links or old is None:
        raise DomainError("link_certificates_invalid", "only a root's rollover has link certificates, and both",
                          field="certificate")
    for link, certified in zip(links, (new, old), strict=True):
        assert link is not None
        if link.facts.public_key_sha256 != certified.facts.public_key_sha256:
            raise DomainError("link_certificates_invalid", "a link certificate must certify the root's other key",
                              field="certificate")


def _require_not_revoked(state: CertificateAuthority, ca_id: str) -> None:
    if state.status == "revoked":  # final: neither disable nor enable may bring it back
        raise DomainError("ca_revoked", f"CA {ca_id} is revoked", field="ca_id")


def decide_disable(state: CertificateAuthority, ca_id: str, reason: str) -> list[Payload]:
    require(state, ca_id)
    _require_not_revoked(state, ca_id)
    if state.status == "disabled":
        return []
    return [CaDisabled(reason=validate_name(reason, "reason"))]


def decide_enable(state: CertificateAuthority, ca_id: str, reason: str) -> list[Payload]:
    require(state, ca_id)
    _require_not_revoked(state, ca_id)
    if state.status != "disabled":
        return []
    return [CaEnabled(reason=validate_name(reason, "reason"))]


def decide_revoke(state: CertificateAuthority, ca_id: str, revoked: CaRevoked) -> list[Payload]:
    """Revoke an intermediate (a root is withdrawn from trust stores instead: nothing above it lists it)."""
    require(state, ca_id)
    if state.kind == "root":
        raise DomainError("root_not_revocable", "a root CA has no issuer whose CRL could list it: remove it from "
                          "trust stores, or disable it", field="ca_id")
    if state.status == "pending":
        raise DomainError("ca_pending", f"CA {ca_id} has no certificate to revoke yet", field="ca_id")
    if state.status == "revoked":
        raise AlreadyExists("already_revoked", f"CA {ca_id} is already revoked", field="ca_id")
    return [revoked]
