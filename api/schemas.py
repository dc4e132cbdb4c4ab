"""Request bodies and response shapes of the HTTP API (the commands themselves are in commands/)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from commands.cas import CaId
from commands.discovery import ScanId
from domain import discovery
from commands.ids import CertificateId
from commands.compromised_keys import KeyHash
from commands.tenants import Name, Reason
from domain.events import EventEnvelope
from domain.tenant import Quotas, Usage


class RenameBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name


class ReasonBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason


class KeyCompromiseBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One of ``certificate_id`` (its key) and ``ca_id`` (every key the CA has held); ``invalidity_date``: when the
    key was, or may have been, compromised."""

    certificate_id: CertificateId | None = None
    ca_id: CaId | None = None
    public_key_sha256: KeyHash | None = None  # with ca_id: only this one of its keys (a root's old key)
    invalidity_date: datetime | None = None


class LiftBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Why the key's compromise report was in error: kept in the audit trail."""

    reason: Annotated[str, msgspec.Meta(min_length=3, max_length=500)]
    every_report: bool = False  # the key was reported from several sources (the list's ``sources``): all in error


class TenantOut(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    name: str
    status: str
    quotas: Quotas
    created_at: str
    updated_at: str
    version: int
    position: int


class TenantUsageOut(msgspec.Struct, frozen=True, kw_only=True):
    """What a tenant holds against its quotas (a null quota is unlimited), counted at ``position`` of the log.

    ``usage.cas``: CAs not revoked; ``usage.certificates``: live certificates (not revoked, expired or renewed);
    ``usage.issuances_today``: certificates issued since ``day_started_at`` (UTC midnight), renewals included.
    """

    tenant_id: str
    quotas: Quotas
    usage: Usage
    day_started_at: str
    day_ends_at: str
    position: int


class TenantPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[TenantOut]
    next_cursor: str | None


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    day_bucket: str
    occurred_at: str
    event_id: str
    tenant_id: str
    stream_id: str
    stream_type: str
    version: int
    type: str
    actor: str
    auth_method: str
    correlation_id: str | None
    event: EventEnvelope | None


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AuditEntry]
    next_cursor: int | None


class Liveness(msgspec.Struct, frozen=True, kw_only=True):
    status: str


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    store_writable: bool
    head_position: int
    projection_position: int
    lag: int
    max_lag: int
    # the key-encryption keys of new private keys can be reached (a PKCS#11 token answers; file providers: always)
    kek_available: bool = True
    # the PKCS#11 token answers, when a CA in service keeps its signing key there (key_storage hsm); else true
    hsm_available: bool = True
    # read models being rebuilt from the log after their projector's version changed: commands are accepted and
    # the other read models answer; reads of these answer 503 projection-rebuilding until they are swapped in
    rebuilding: list[str] = []


class ObservationIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One endpoint as a scanner elsewhere observed it: the certificate it served (PEM; the server reads its
    fingerprint, names, serial and validity from it), or ``error`` (refused, timeout, unreachable, not_tls,
    handshake_failed) and ``reason``."""

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    observed_at: datetime
    certificate_pem: Annotated[str, msgspec.Meta(max_length=discovery.MAX_PEM_BYTES)] | None = None
    tls_version: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    cipher: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    error: Annotated[str, msgspec.Meta(max_length=32, description=", ".join(discovery.ERRORS))] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    # the certificates it sent after the leaf, in order, PEM each ([]: the leaf alone; absent: not recorded)
    chain_pem: Annotated[list[Annotated[str, msgspec.Meta(max_length=discovery.MAX_PEM_BYTES)]],
                         msgspec.Meta(max_length=discovery.MAX_CHAIN)] | None = None
    client_certificate: Annotated[str, msgspec.Meta(
        max_length=32, description=", ".join(discovery.CLIENT_CERTIFICATE))] | None = None


class DiscoveredBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A scan's observations; ``scan_id`` (default: a new one) makes a retry record nothing."""

    observations: Annotated[list[ObservationIn], msgspec.Meta(min_length=1, max_length=discovery.MAX_OBSERVATIONS)]
    scan_id: ScanId | None = None


class DiscoveredEndpointOut(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint's latest observation, and the tenant's certificate it serves (null: not one of this tenant's)."""

    endpoint: str
    host: str
    port: int
    observed_at: str
    scan_id: str
    error: str | None
    reason: str | None
    fingerprint_sha256: str | None
    subject_dn: str | None
    issuer_dn: str | None
    serial_hex: str | None
    not_before: str | None
    not_after: str | None
    tls_version: str | None
    cipher: str | None
    chain: list[discovery.ChainCertificate] | None  # sent after the leaf, in order (null: not recorded)
    client_certificate: str | None  # required | not_required | null (not judged)
    chain_complete: bool | None  # whether the leaf's issuer is among them (null: not recorded, or a root issued it)
    first_seen: str
    last_served_at: str | None
    served_since: str | None  # since when it has served this certificate (scans seen)
    certificate_id: str | None
    ca_id: str | None
    certificate_status: str | None  # issued | revoked
    revocation_reason: str | None
    superseded_by: str | None


class DiscoveredPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DiscoveredEndpointOut]
    next_cursor: str | None
