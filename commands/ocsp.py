"""The OCSP responder (RFC 6960, RFC 5019 profile): answers from the CA stream, signed by a delegated responder.

Each CA key gets its own responder certificate (profile ``ocsp-signing``: EKU OCSPSigning,
id-pkix-ocsp-nocheck, 30 days), issued on first use (or as the CA is revoked) and renewed when a
third of its life is left; its key lives in the key vault. A revoked CA gets no new one: its
last responder signs while it outlives an answer, then the CA's own key does. Status comes from the CA stream (authoritative), never
from a read model: revoked if the CA lists the serial, good if the serial's certificate
stream says this CA key signed it (or the caller's ``subordinates`` lookup knows it as a
sub-CA certificate), unknown otherwise; everything below a revoked CA answers revoked.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import msgspec

from commands import blocking, crl, pki
from commands.ports import OcspAnswer, OcspQuestion
from commands.runtime import Services, load, run
from domain import ca, certificate, ocsp_signing, policy, revocation, spec_builders, tenant, violations
from domain.certspec import DistinguishedName, SubjectAltNames
from domain.errors import DomainError
from domain.profile import BUILTIN_PROFILES

log = logging.getLogger(__name__)
RESPONSE_VALIDITY = timedelta(hours=1)  # nextUpdate - thisUpdate of an answer
CACHE_SECONDS = 60  # how long an answer without a nonce is reused here (and by HTTP caches: max-age)
SIGNER_PROFILE = "ocsp-signing"
# Fast to sign and understood by every OCSP client, whatever the CA's algorithm; the first a tenant allows.
SIGNER_ALGORITHMS = ("ecdsa-p384", "ecdsa-p256", "ecdsa-p521", "ed25519", "rsa-3072")
Subordinates = Callable[[str, str], Awaitable[frozenset[str]]]  # (tenant, ca) -> serial_hex of sub-CA certificates


class OcspReply(msgspec.Struct, frozen=True, kw_only=True):
    """A DER OCSPResponse; ``this_update``/``next_update`` only for a successful one."""

    body: bytes
    status: str  # successful | malformed_request | unauthorized | internal_error
    this_update: datetime | None = None
    next_update: datetime | None = None
    cacheable: bool = False  # no nonce: the same bytes answer everyone asking this question


class ResponseCache:
    """Signed answers per CA and question, reused for ``CACHE_SECONDS``.

    ``respond`` keys each answer by the revocations recorded on the CA and on every CA above it as well as
    the question (``Registry.revocations_mark``): a revocation of a certificate, recorded on its CA's
    stream, or of a CA on the chain moves one of them, so the next question misses, in every process,
    whichever process revoked. Other events (a CRL, a new responder certificate) leave answers cached.
    A revocation made here also drops the CA's answers at once (``invalidate``), to free them.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._by_ca: dict[str, OrderedDict[tuple, tuple[datetime, OcspReply]]] = {}

    def get(self, ca_id: str, key: tuple, now: datetime) -> OcspReply | None:
        entry = self._by_ca.get(ca_id, {}).get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def put(self, ca_id: str, key: tuple, reply: OcspReply, now: datetime) -> None:
        answers = self._by_ca.setdefault(ca_id, OrderedDict())
        answers[key] = (now + timedelta(seconds=CACHE_SECONDS), reply)
        while len(answers) > self.capacity:
            answers.popitem(last=False)

    def invalidate(self, ca_id: str) -> None:
        self._by_ca.pop(ca_id, None)

    def invalidate_all(self) -> None:
        self._by_ca.clear()


RESPONSES = ResponseCache()
_ISSUER_HASHES: dict[tuple[str, str], tuple[bytes, bytes]] = {}  # (certificate fingerprint, hash) -> CertID hashes


def _failure(services: Services, status: str) -> OcspReply:
    return OcspReply(body=crl.revocation_of(services).ocsp_failure(status), status=status)


async def respond(services: Services, tenant_id: str | None, ca_id: str, data: bytes,
                  subordinates: Subordinates | None = None) -> OcspReply:
    """Answer one DER OCSPRequest for ``ca_id`` (``tenant_id`` None: not a CA of ours). Never raises."""
    try:
        question = crl.revocation_of(services).parse_ocsp_request(data)
    except DomainError:
        return _failure(services, "malformed_request")
    if tenant_id is None:
        return _failure(services, "unauthorized")
    now = services.clock.now()
    try:
        chain = await _chain(services, tenant_id, await crl.load_registry(services, tenant_id, ca_id))
        key = (question.hash_algorithm, question.issuer_name_hash, question.issuer_key_hash, question.serial,
               tuple(registry.revocations_mark for registry in chain))
        if question.nonce is None and (cached := RESPONSES.get(ca_id, key, now)) is not None:
            return cached
        reply = await _answer(services, tenant_id, chain, question, subordinates)
    except Exception:  # a responder answers internalError, never an HTTP 500 (RFC 6960 2.3)
        log.exception("OCSP answer for CA %s failed", ca_id)
        return _failure(services, "internal_error")
    if reply.cacheable:
        RESPONSES.put(ca_id, key, reply, now)
    return reply


async def _chain(services: Services, tenant_id: str, state: revocation.Registry) -> list[revocation.Registry]:
    """This CA's registry and those of every CA above it, nearest first (each read through the stream cache)."""
    chain: list[revocation.Registry] = []
    seen: set[str] = set()
    current: revocation.Registry | None = state
    while current is not None and current.ca.ca_id not in seen:  # seen: a corrupt parent loop must not spin
        chain.append(current)
        seen.add(current.ca.ca_id)
        parent_id = current.ca.parent_id
        current = await crl.load_registry(services, tenant_id, parent_id) if parent_id else None
    return chain


async def _answer(services: Services, tenant_id: str, chain: list[revocation.Registry], question: OcspQuestion,
                  subordinates: Subordinates | None) -> OcspReply:
    """The answer as of ``chain`` (read when the cache key was made) or later: never older than its key."""
    state = chain[0]
    issuer = _issuer_named_by(services, state, question) if state.ca.current is not None else None
    if issuer is None:  # not a key of this CA: another responder is authoritative (RFC 6960 2.3)
        return _failure(services, "unauthorized")
    signer = await signer_for(services, tenant_id, state, issuer)
    if signer is None:
        return _failure(services, "unauthorized")
    answer = await _status(services, tenant_id, chain, issuer, question.serial, subordinates)
    signer_key = await pki.SIGNING_KEYS.get(services, tenant_id, signer.key_ref or "")
    now = services.clock.now()
    body = await blocking.signature(
        crl.revocation_of(services).ocsp_response, question, answer, signer_key=signer_key,
        signer_certificate=pki.ca_der(signer.certificate_pem), this_update=now, next_update=now + RESPONSE_VALIDITY)
    return OcspReply(body=body, status="successful", this_update=now, next_update=now + RESPONSE_VALIDITY,
                     cacheable=question.nonce is None)


def _issuer_named_by(services: Services, state: revocation.Registry,
                     question: OcspQuestion) -> ca.CaCertificate | None:
    """The CA certificate whose name and key the CertID hashes (current key first; cross-certificates share it)."""
    crypto = crl.revocation_of(services)
    for held in (state.ca.current, *reversed(state.ca.previous)):
        if held is None:
            continue
        slot = (held.facts.fingerprint_sha256, question.hash_algorithm)
        if slot not in _ISSUER_HASHES:
            _ISSUER_HASHES[slot] = crypto.issuer_hashes(pki.ca_der(held.certificate_pem), question.hash_algorithm)
        if _ISSUER_HASHES[slot] == (question.issuer_name_hash, question.issuer_key_hash):
            return held
    return None


async def _status(services: Services, tenant_id: str, chain: list[revocation.Registry], issuer: ca.CaCertificate,
                  serial: int, subordinates: Subordinates | None) -> OcspAnswer:
    state = chain[0]
    serial_hex = format(serial, "x")
    entry = state.revoked.get(serial_hex)
    if entry is not None:
        return OcspAnswer(status="revoked", revoked_at=entry.revoked_at, reason=entry.reason)
    if not await _signed_here(services, tenant_id, state, issuer, serial, subordinates):
        return OcspAnswer(status="unknown")
    # this CA's revocation, or the nearest revoked CA above it
    revoked_ca = next((registry.ca_revoked for registry in chain if registry.ca_revoked is not None), None)
    if revoked_ca is not None:
        return OcspAnswer(status="revoked", revoked_at=revoked_ca.revoked_at,
                          reason=ocsp_signing.ca_reason_for_subordinates(revoked_ca.reason))
    return OcspAnswer(status="good")


async def _signed_here(services: Services, tenant_id: str, state: revocation.Registry, issuer: ca.CaCertificate,
                       serial: int, subordinates: Subordinates | None) -> bool:
    serial_hex = format(serial, "x")
    key_sha = issuer.facts.public_key_sha256
    same_key = {c.facts.fingerprint_sha256 for c in state.ca.held if c.facts.public_key_sha256 == key_sha}
    if any(s.facts.serial_hex == serial_hex for s in state.signers.values()):
        return True
    if 0 < serial < 1 << 160:
        leaf = await load(services, tenant_id, certificate.stream_id(certificate.certificate_id(serial)),
                          certificate.fold)
        if leaf.issued is not None:
            return leaf.issued.ca_id == state.ca.ca_id and leaf.issued.issuer_fingerprint in same_key
    return subordinates is not None and serial_hex in await subordinates(tenant_id, state.ca.ca_id)


async def signer_for(services: Services, tenant_id: str, state: revocation.Registry,
                     issuer: ca.CaCertificate) -> ca.CaCertificate | None:
    """The certificate whose key signs answers about ``issuer``'s certificates: the key's responder, issued or
    renewed here when due while the CA is in service and its key may still sign; otherwise the last responder, or
    for a revoked CA the CA itself (``ocsp_signing.answering_signer``). None: nothing may sign."""
    signer = state.signers.get(issuer.facts.fingerprint_sha256)
    now = services.clock.now()
    if not ocsp_signing.signer_due(signer, now):
        return signer
    if state.ca.status in ("active", "disabled") and issuer.key_ref is not None and issuer.facts.not_after > now:
        await _issue_signer(services, tenant_id, state, issuer, now)
        state = await crl.load_registry(services, tenant_id, state.ca.ca_id)
    return ocsp_signing.answering_signer(state, issuer, now, RESPONSE_VALIDITY)


async def _issue_signer(services: Services, tenant_id: str, state: revocation.Registry, issuer: ca.CaCertificate,
                        now: datetime) -> None:
    profile = BUILTIN_PROFILES[SIGNER_PROFILE]
    crypto = pki.crypto_of(services)
    subject = DistinguishedName(common_name=f"OCSP {state.ca.subject.common_name or state.ca.name}"[:64],
                                organization=state.ca.subject.organization if state.ca.subject else None)
    owner = await load(services, tenant_id, tenant.stream_id(tenant_id), tenant.fold)
    allowed = owner.policy.allowed_algorithms
    algorithm = next((a for a in SIGNER_ALGORITHMS if allowed is None or a in allowed), SIGNER_ALGORITHMS[0])
    days = min(profile.default_validity_days, owner.policy.max_validity_days or profile.default_validity_days,
               (issuer.facts.not_after - now).days)
    if days < 1:
        raise DomainError("ca_expiring", f"CA {state.ca.ca_id}'s certificate expires within a day", field="ca_id")
    spec = spec_builders.leaf_spec(profile, subject=subject, sans=SubjectAltNames(), validity_days=days,
                                   subject_algorithm=algorithm, issuer_algorithm=issuer.facts.algorithm,
                                   serial=pki.new_serial(), now=now, crl_urls=(), ocsp_urls=(),
                                   ca_issuer_urls=pki.relying_party_urls(services, state.ca)["ca_issuer_urls"])
    facts = policy.IssuerFacts(ca_id=state.ca.ca_id, algorithm=issuer.facts.algorithm,
                               not_before=issuer.facts.not_before, not_after=issuer.facts.not_after,
                               path_length=state.ca.path_length, name_constraints=state.ca.name_constraints,
                               status="active")  # disabling stops issuance, not the revocation service
    violations.raise_for(policy.check_certificate(
        spec, profile=profile, tenant_policy=owner.policy, issuer=facts, subject_algorithm=algorithm,
        key_bits=pki.key_bits(algorithm), csr_signature_hash=None, available=crypto.available_algorithms(),
        now=now))
    key = await blocking.slow(crypto.generate_key, algorithm)
    issuer_key = await pki.SIGNING_KEYS.get(services, tenant_id, issuer.key_ref or "")
    issuer_der = pki.ca_der(issuer.certificate_pem)
    der = await blocking.signature(crypto.sign_certificate, spec, crypto.public_keys(key), issuer_key, issuer_der)
    crypto.verify_issued(der, issuer_der)
    # Stored before the event names it; a signer that loses the race below leaves an unused key behind.
    key_ref = await pki.vault_of(services).put(tenant_id, crypto.private_key_bytes(key), algorithm=algorithm,
                                               purpose="ocsp-signing")
    held = ca.CaCertificate(certificate_pem=pki.pem("CERTIFICATE", der), facts=crypto.describe(der),
                            issuer_ca_id=state.ca.ca_id, key_ref=key_ref)
    issued = revocation.OcspSignerIssued(issuer_fingerprint=issuer.facts.fingerprint_sha256, certificate=held)
    await run(services, crl.system_context(), issued, tenant_id=tenant_id, stream_id=ca.stream_id(state.ca.ca_id),
              stream_type=ca.STREAM_TYPE, fold=revocation.fold,
              decide=lambda s: ocsp_signing.decide_signer(s, issued, now))


async def renew_signers(services: Services, tenant_id: str, ca_id: str) -> bool:
    """Scheduler pass for one CA: renew its current key's responder before it is due. True if one was issued."""
    state = await crl.load_registry(services, tenant_id, ca_id)
    current = state.ca.current
    if state.ca.status == "revoked":
        return False  # it certifies nothing more: its last responder, then its own key, sign its answers
    if current is None or current.facts.fingerprint_sha256 not in state.signers:
        return False  # never used: the first OCSP request issues it
    if not ocsp_signing.signer_due(state.signers[current.facts.fingerprint_sha256], services.clock.now()):
        return False
    return await signer_for(services, tenant_id, state, current) is not None
