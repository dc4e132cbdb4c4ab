"""The Certificate aggregate: one issued end-entity certificate and what happened to it.

The stream id is the certificate's serial number (40 hex digits), and issuance appends to a
new stream with expected version 0: the event store itself guarantees that a serial is never
issued twice in a tenant, so uniqueness per CA does not rest on chance alone.

Here: the stream's events, the aggregate's state and its decisions; the renewal decisions (claim, link,
failure, expiry warning) are in domain/certificate_renewal.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.certspec import CertificateFacts, DistinguishedName, SubjectAltNames
from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Payload, event, resumable, upcaster

STREAM_TYPE = "certificate"
KEY_SOURCES = ("csr", "server")
MAX_TAGS = 32
KEPT_DEPLOYMENTS = 11  # per node: the last deployment and as many as a node may keep generations of (MAX_KEEP 10)


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


@event("certificate.renewal_started")
class RenewalStarted(Payload, frozen=True, kw_only=True):
    """A renewal claimed this certificate: its successor will be ``new_certificate_id`` (chosen now, so a retry
    or a second scheduler completes this renewal instead of issuing another)."""

    certificate_id: str
    new_certificate_id: str
    rotate_key: bool
    attempt: int  # 1, 2, ... per certificate
    trigger: str  # scheduled | manual
    started_at: datetime


@event("certificate.renewed")
class CertificateRenewed(Payload, frozen=True, kw_only=True):
    """``new_certificate_id`` (same CA and profile) supersedes this certificate."""

    certificate_id: str
    new_certificate_id: str
    rotated: bool  # a new key; False: the same public key certified again
    attempt: int


@event("certificate.renewal_failed")
class RenewalFailed(Payload, frozen=True, kw_only=True):
    certificate_id: str
    reason: str  # the refused rule's code, e.g. new_csr_required, ca_disabled, policy_violation, internal_error
    attempt: int  # the failed claim's attempt; 0 when refused before claiming
    failed_at: datetime


@event("certificate.expiry_warned")
class ExpiryWarned(Payload, frozen=True, kw_only=True):
    """The certificate expires within ``threshold_days``; once per threshold, the tightest one crossed."""

    certificate_id: str
    ca_id: str
    threshold_days: int
    not_after: datetime


class DeployedFile(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # absolute, on the node
    sha256: str  # hex, of the file as the node holds it (checked there against what was sent)


@event("certificate.deployment_started")
class DeploymentStarted(Payload, frozen=True, kw_only=True):
    """The files are staged on the node (checked by SHA-256) and about to be renamed into place: the intent, recorded
    before the renames. ``certificate.deployed`` follows once they are done; a deployment started and never
    completed (the renames failed, or the process died) may have left the node with some new files and some old,
    which the next deploy, verify or rollback of the node reports (docs/operations.md 6.1). ``keep``: how many
    generations of the replaced files the node is to keep."""

    certificate_id: str
    node: str
    user: str
    host: str
    port: int
    format: str
    files: tuple[DeployedFile, ...]  # what the node will hold once the renames are done
    keep: int
    host_key_type: str
    host_key_fingerprint: str


@event("certificate.deployment_failed")
class DeploymentFailed(Payload, frozen=True, kw_only=True):
    """A deployment recorded as started (``certificate.deployment_started``) failed before it was recorded as done: at
    ``step`` (``commit``: the renames; ``record``: recording ``certificate.deployed`` once they were done;
    ``deliver``: anything else), for ``reason`` (what the step reported, bounded: never a password or key material).
    The node may hold some of the started deployment's files and not others: until the next deployment to the node
    it stays unfinished for a rollback, as one whose process died (which could record nothing)."""

    certificate_id: str
    node: str
    step: str  # commit | record | deliver
    reason: str


@event("certificate.deployed", schema_version=2)
class CertificateDeployed(Payload, frozen=True, kw_only=True):
    """The certificate, its chain and its key, as ``format`` files, were installed on a node over SSH.

    Where (``node``, ``user``@``host``:``port``, each file's path), what (each file's SHA-256), and whom the
    connection trusted: the node's host key as ssh checked it against the operator's known_hosts
    (``host_key_first_use``: not checked but trusted on first use, as asked, and added there). Who deployed is
    the envelope's actor. ``reload_exit_status``: of the operator's reload command run after the install
    (None: none was run; its text is not recorded, as it may carry credentials). Never a password.
    """

    certificate_id: str
    node: str
    user: str
    host: str
    port: int
    format: str  # jks | pkcs12 | pem
    files: tuple[DeployedFile, ...]
    host_key_type: str
    host_key_fingerprint: str  # SHA256:<base64>, as ssh-keygen -l prints it
    host_key_first_use: bool
    reload_exit_status: int | None
    keep: int = 1  # generations of the replaced files kept on the node (NAME.previous, NAME.previous.2, ...)


@upcaster("certificate.deployed", 1)
def _v1_kept_one_generation(data: dict) -> dict:
    return {**data, "keep": 1}


class VerifiedPort(msgspec.Struct, frozen=True, kw_only=True):
    """What one TLS port of a node served when it was checked (the last of ``attempts`` handshakes)."""

    port: int
    served_fingerprint: str | None  # SHA-256 hex of the leaf certificate served; None: none was seen
    matched: bool  # served_fingerprint is this certificate's
    error: str | None = None  # why none was seen: refused, timeout, unreachable, not_tls, handshake_failed
    attempts: int


@event("certificate.deployment_verified")
class DeploymentVerified(Payload, frozen=True, kw_only=True):
    """``host``'s TLS ports were checked for this certificate (the one deployed to ``node`` last): ``verified`` if
    every port served it. ``after``: deploy, rollback (just done, reload included), or check (csm cluster verify)."""

    certificate_id: str
    node: str
    host: str
    ports: tuple[VerifiedPort, ...]
    verified: bool
    after: str  # deploy | rollback | check


class RestoredFile(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # absolute, on the node
    sha256: str  # of the file now in place (it was PATH.previous)
    rolled_back_sha256: str | None  # of the file it replaced, kept as PATH.rolled-back (None: there was none)


@event("certificate.deployment_rolled_back", schema_version=2)
class DeploymentRolledBack(Payload, frozen=True, kw_only=True):
    """This certificate's last deployment to ``node`` was undone over SSH: each file's ``generation`` (1: its
    ``.previous``; 2: ``.previous.2``, the one before, ...) is back in place, and the newer generations with it.

    ``restored_certificate_id``: the certificate whose recorded deployment to the node the restored files are
    (their SHA-256 match it), None if they match none (files put there by other means). ``forced``: the node's
    files were not those the deployment recorded (changed by hand) and the operator rolled back anyway (--force).
    Host key and reload status as in ``certificate.deployed``."""

    certificate_id: str
    node: str
    user: str
    host: str
    port: int
    files: tuple[RestoredFile, ...]
    restored_certificate_id: str | None
    forced: bool
    host_key_type: str
    host_key_fingerprint: str
    reload_exit_status: int | None
    generation: int = 1


@upcaster("certificate.deployment_rolled_back", 1)
def _v1_went_back_one_generation(data: dict) -> dict:
    return {**data, "generation": 1}


class Certificate(msgspec.Struct, frozen=True, kw_only=True):
    certificate_id: str = ""
    status: str = "absent"  # absent | issued | revoked
    issued: CertificateIssued | None = None
    revoked: CertificateRevoked | None = None
    key_exports: int = 0
    pending: RenewalStarted | None = None  # a renewal claimed and not yet finished
    renewed: CertificateRenewed | None = None
    attempts: int = 0
    last_failure_at: datetime | None = None
    warned_days: int | None = None  # the tightest expiry threshold warned of
    # per node, its last KEPT_DEPLOYMENTS deployments of this certificate (oldest first) that the node may still
    # hold: which of them a rollback undoes (by SHA-256), and which of them the files it restores are
    deployments: tuple[CertificateDeployed, ...] = ()
    # per node, a deployment of this certificate started and not (yet) recorded as done
    started: tuple[DeploymentStarted, ...] = ()
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
        case RenewalStarted():
            state = replace(state, pending=payload, attempts=payload.attempt)
        case CertificateRenewed():
            state = replace(state, pending=None, renewed=payload)
        case RenewalFailed():
            state = replace(state, pending=None, last_failure_at=payload.failed_at)
        case ExpiryWarned():
            state = replace(state, warned_days=payload.threshold_days)
        case DeploymentStarted():
            state = replace(state, started=(*(d for d in state.started if d.node != payload.node), payload))
        case CertificateDeployed():
            state = replace(state, deployments=_deployments(state, payload),
                            started=tuple(d for d in state.started if d.node != payload.node))
        case DeploymentRolledBack():
            state = replace(state, deployments=_deployments(state, payload))
    return replace(state, version=state.version + 1)


def _deployments(state: Certificate, payload: CertificateDeployed | DeploymentRolledBack) -> tuple:
    """A deployment becomes the node's last (the earlier ones kept, up to KEPT_DEPLOYMENTS). A rollback drops the
    deployment it undid (the newest whose files are those it rolled back, by SHA-256: not always the last, as a
    rollback on another certificate's stream may have put an earlier one back; the last if none is, as when forced
    over files changed by hand) and the later ones (no longer on the node); the earlier ones stay, as the node's
    older generations may hold them, down to the one the node got back if it is one of this certificate's."""
    mine = [d for d in state.deployments if d.node == payload.node]
    others = tuple(d for d in state.deployments if d.node != payload.node)
    if isinstance(payload, CertificateDeployed):
        return (*others, *mine[-(KEPT_DEPLOYMENTS - 1):], payload)
    undone = {(f.path, f.rolled_back_sha256) for f in payload.files}
    matching = [i for i, d in enumerate(mine) if d.files and {(f.path, f.sha256) for f in d.files} <= undone]
    kept = mine[:matching[-1] if matching else -1]
    if payload.restored_certificate_id == state.certificate_id:
        restored = {(f.path, f.sha256) for f in payload.files}
        while kept and not {(f.path, f.sha256) for f in kept[-1].files} <= restored:
            kept.pop()
    return (*others, *kept)


@resumable
def fold(payloads: Iterable[Payload], start: Certificate | None = None) -> Certificate:
    state = Certificate() if start is None else start
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


def require_deployable(state: Certificate, certificate_id: str, now: datetime) -> CertificateIssued:
    """Before any key leaves the vault for a node: the certificate exists, is not revoked and has not expired."""
    issued = require_exists(state, certificate_id)
    if state.status == "revoked":
        raise DomainError("certificate_revoked", f"certificate {certificate_id} is revoked: deploy its successor",
                          field="id")
    if issued.facts.not_after <= now:
        raise DomainError("certificate_expired", f"certificate {certificate_id} expired at "
                          f"{issued.facts.not_after.isoformat()}", field="id")
    if issued.key_ref is None:
        raise DomainError("no_private_key", "this certificate was issued from a CSR: its key never reached the "
                          "service, so there is no keystore to deploy", field="id")
    return issued


def decide_deployed(state: Certificate, deployed: CertificateDeployed) -> list[Payload]:
    """Record a deployment that happened: the files are on the node whatever happened to the certificate since."""
    require_exists(state, deployed.certificate_id)
    return [deployed]


def decide_revoke(state: Certificate, certificate_id: str, revoked: CertificateRevoked) -> list[Payload]:
    """Record the revocation its CA already holds; nothing if this stream has it (a retried revocation)."""
    require_exists(state, certificate_id)
    return [] if state.status == "revoked" else [revoked]
