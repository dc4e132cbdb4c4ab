"""The Certificate aggregate: one issued end-entity certificate and what happened to it.

The stream id is the certificate's serial number (40 hex digits), and issuance appends to a
new stream with expected version 0: the event store itself guarantees that a serial is never
issued twice in a tenant, so uniqueness per CA does not rest on chance alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.certspec import CertificateFacts, DistinguishedName, SubjectAltNames
from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Payload, event

STREAM_TYPE = "certificate"
KEY_SOURCES = ("csr", "server")
EXPORT_FORMATS = ("pem", "der", "pkcs12", "jks", "jks-truststore", "pkcs12-truststore")
MAX_TAGS = 32


def stream_id(certificate_id: str) -> str:
    return f"certificate-{certificate_id}"


def certificate_id(serial: int) -> str:
    return f"{serial:040x}"


@event("certificate.issued")
class CertificateIssued(Payload, frozen=True, kw_only=True):
    certificate_id: str
    ca_id: str
    issuer_fingerprint: str  # which of the CA's certificates signed it (rollover keeps several)
    profile: str
    subject: DistinguishedName
    sans: SubjectAltNames
    key_source: str  # csr | server
    key_ref: str | None  # vault reference of a server-generated key; never the key
    csr_sha256: str | None
    certificate_pem: str
    facts: CertificateFacts
    tags: tuple[str, ...] = ()


@event("certificate.private_key_exported")
class PrivateKeyExported(Payload, frozen=True, kw_only=True):
    """Someone took a copy of the private key: who (the envelope's actor), in what form."""

    format: str
    encrypted: bool


@event("certificate.revoked")
class CertificateRevoked(Payload, frozen=True, kw_only=True):
    """The certificate is revoked; its CA's stream recorded it first (``ca.certificate_revoked``), for the CRL."""

    reason: str  # an RFC 5280 reason name (domain.revocation.REASONS)
    revoked_at: datetime
    invalidity_date: datetime | None


class Certificate(msgspec.Struct, frozen=True, kw_only=True):
    certificate_id: str = ""
    status: str = "absent"  # absent | issued | revoked
    issued: CertificateIssued | None = None
    revoked: CertificateRevoked | None = None
    key_exports: int = 0
    version: int = 0


def evolve(state: Certificate, payload: Payload) -> Certificate:
    replace = msgspec.structs.replace
    match payload:
        case CertificateIssued():
            state = Certificate(certificate_id=payload.certificate_id, status="issued", issued=payload)
        case PrivateKeyExported():
            state = replace(state, key_exports=state.key_exports + 1)
        case CertificateRevoked():
            state = replace(state, status="revoked", revoked=payload)
    return replace(state, version=state.version + 1)


def fold(payloads: Iterable[Payload]) -> Certificate:
    state = Certificate()
    for payload in payloads:
        state = evolve(state, payload)
    return state


def validate_tags(tags: Iterable[str]) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(tag.strip() for tag in tags))
    if len(cleaned) > MAX_TAGS:
        raise DomainError("too_many_tags", f"at most {MAX_TAGS} tags", field="tags")
    for index, tag in enumerate(cleaned):
        if not tag or len(tag) > 64 or not tag.isprintable():
            raise DomainError("invalid_tag", "a tag is 1-64 printable characters", field=f"tags[{index}]")
    return cleaned


def decide_issue(state: Certificate, issued: CertificateIssued) -> list[Payload]:
    if state.status != "absent":  # a serial collision: the handler draws another serial
        raise AlreadyExists("serial_exists", f"serial {issued.certificate_id} is taken", field="serial")
    return [msgspec.structs.replace(issued, tags=validate_tags(issued.tags))]


def decide_export_key(state: Certificate, certificate_id: str, export_format: str, encrypted: bool) -> list[Payload]:
    if state.status == "absent":
        raise NotFound("certificate_not_found", f"certificate {certificate_id} does not exist", field="id")
    assert state.issued is not None
    if state.issued.key_ref is None:
        raise DomainError("no_private_key", "this certificate was issued from a CSR: its key never reached the "
                          "service", field="format")
    return [PrivateKeyExported(format=export_format, encrypted=encrypted)]


def require_exists(state: Certificate, certificate_id: str) -> CertificateIssued:
    if state.status == "absent" or state.issued is None:
        raise NotFound("certificate_not_found", f"certificate {certificate_id} does not exist", field="id")
    return state.issued


def decide_revoke(state: Certificate, certificate_id: str, revoked: CertificateRevoked) -> list[Payload]:
    """Record the revocation its CA already holds; nothing if this stream has it (a retried revocation)."""
    require_exists(state, certificate_id)
    return [] if state.status == "revoked" else [revoked]
