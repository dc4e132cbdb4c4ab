"""CRL publication: build a CA's CRL from its stream, store the DER, record ``ca.crl_published``; and serve it.

A CRL is built from the CA stream at version v and appended with expected version v, so the
store refuses it if a revocation (or another publisher) got in first: every published CRL
lists every revocation recorded before it, and two racing instances publish one CRL per
number. The DER goes to the artifact store before the event, so no event names a lost CRL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import msgspec

from commands import blocking, pki
from commands.authz import SYSTEM
from commands.ports import ArtifactStore, RevocationCrypto
from commands.runtime import CommandContext, Services, load, run
from domain import ca, revocation
from domain.errors import Contention, NotFound

log = logging.getLogger(__name__)
CRL_MEDIA_TYPE = "application/pkix-crl"
MAX_ATTEMPTS = 8  # each attempt signs a whole CRL: fewer than a command's (runtime.MAX_ATTEMPTS), then 409


class PublishedCrl(msgspec.Struct, frozen=True, kw_only=True):
    """Where a CA's CRL stands after a publication attempt (``published`` False: an earlier one covers it)."""

    ca_id: str
    crl_number: int
    sha256: str
    published: bool


def artifacts_of(services: Services) -> ArtifactStore:
    if services.artifacts is None:
        raise RuntimeError("no artifact store is wired into these services")
    return services.artifacts


def revocation_of(services: Services) -> RevocationCrypto:
    if services.revocation is None:
        raise RuntimeError("no revocation crypto is wired into these services")
    return services.revocation


def system_context() -> CommandContext:
    """Publications and OCSP signers are the service's own doing: the actor is ``system``."""
    return CommandContext(principal=SYSTEM)


async def load_registry(services: Services, tenant_id: str, ca_id: str) -> revocation.Registry:
    return await load(services, tenant_id, ca.stream_id(ca_id), revocation.fold)


async def publish(services: Services, tenant_id: str, ca_id: str, *, covering: int | None = None,
                  only_if_due: bool = False) -> PublishedCrl | None:
    """Publish the next CRL of ``ca_id``, unless one already covers stream version ``covering`` (or is not due).

    None when the CA cannot sign a CRL here (offline key, pending, revoked) or nothing was due.
    The CA stream's turn is held from reading it to appending ``ca.crl_published``: this process's revocations
    wait (they would make the CRL outdated), and those that waited mostly find a CRL that already lists them.
    """
    lost: list[str] = []  # CRLs this call stored whose event lost the race: kept as deltas once one wins
    async with services.locks(tenant_id, ca.stream_id(ca_id)):
        for _ in range(MAX_ATTEMPTS):
            state = await load_registry(services, tenant_id, ca_id)
            if not revocation.can_publish(state):
                return None
            now = services.clock.now()
            if state.crl is not None and ((covering is not None and revocation.covers(state, covering))
                                          or (only_if_due and not revocation.publication_due(state, now))):
                if lost:  # another process's CRL, published meanwhile, replaces this call's attempts
                    await _supersede(artifacts_of(services), state.crl.sha256, lost)
                return PublishedCrl(ca_id=ca_id, crl_number=state.crl.crl_number, sha256=state.crl.sha256,
                                    published=False)
            try:
                return await _publish_from(services, tenant_id, state, now, lost)
            except revocation.CrlOutdated:
                continue  # another process wrote meanwhile: it may now be covered, or need the new revocation
    raise Contention(ca.stream_id(ca_id))  # 409 with Retry-After, as every other lost race


async def _publish_from(services: Services, tenant_id: str, state: revocation.Registry, now,
                        lost: list[str]) -> PublishedCrl:
    current = state.ca.current
    assert current is not None
    number = (state.crl.crl_number if state.crl else 0) + 1
    period = services.crl_validity
    entries = revocation.crl_entries(state, now, period)
    key = await pki.signing_key(services, state.ca, tenant_id)
    der = await blocking.in_thread(revocation_of(services).sign_crl, entries, issuer_key=key,
                                  issuer_certificate=pki.ca_der(current.certificate_pem), number=number,
                                  this_update=now, next_update=now + period)
    artifacts = artifacts_of(services)
    digest = await artifacts.put(der, CRL_MEDIA_TYPE)
    published = revocation.CrlPublished(crl_number=number, this_update=now, next_update=now + period,
                                        revoked_count=len(entries), sha256=digest,
                                        signer_fingerprint=current.facts.fingerprint_sha256)
    built_from = state.version
    try:
        await run(services, system_context(), published, tenant_id=tenant_id, stream_id=ca.stream_id(state.ca.ca_id),
                  stream_type=ca.STREAM_TYPE, fold=revocation.fold,
                  decide=lambda s: revocation.decide_publish(s, built_from, published), locked=True)
    except revocation.CrlOutdated:
        lost.append(digest)
        raise
    log.info("published CRL %d of CA %s (%d entries)", number, state.ca.ca_id, len(entries))
    await _supersede(artifacts, digest, [*([state.crl.sha256] if state.crl else []), *lost])
    return PublishedCrl(ca_id=state.ca.ca_id, crl_number=number, sha256=digest, published=True)


async def _supersede(artifacts: ArtifactStore, newer: str, older: list[str]) -> None:
    """The CRLs this one replaces (the CA's previous one, and lost attempts) are kept as deltas from it: a CA's
    CRLs then take space in proportion to its revocations, not to their square. Best effort: the CRL is out."""
    try:
        await artifacts.supersede(newer, older)
    except Exception:
        log.exception("keeping superseded CRLs as deltas failed; they stay whole")


async def current_crl(services: Services, tenant_id: str, ca_id: str) -> tuple[revocation.CrlPublished, bytes]:
    """The CA's latest CRL and its DER; published now if it has none yet or the last one has lapsed."""
    state = await load_registry(services, tenant_id, ca_id)
    ca.require(state.ca, ca_id)
    # The scheduler normally keeps CRLs fresh; this covers a new CA and a scheduler that was down.
    if state.crl is None or state.crl.next_update <= services.clock.now():
        await publish(services, tenant_id, ca_id, only_if_due=True)
        state = await load_registry(services, tenant_id, ca_id)
    if state.crl is None:
        raise NotFound("crl_not_found", f"CA {ca_id} has no CRL: its key is not held here", field="ca_id")
    der = await artifacts_of(services).get(state.crl.sha256)
    if der is None:
        raise RuntimeError(f"CRL {state.crl.sha256} of CA {ca_id} is missing from the artifact store")
    return state.crl, der


async def republish_due(services: Services, cas: Iterable[tuple[str, str]]) -> list[PublishedCrl]:
    """One scheduler pass over ``(tenant_id, ca_id)`` pairs: publish where the last CRL is a third from lapsing.

    Safe to run on several instances at once: a lost race ends in "covered", not a second CRL.
    """
    done = []
    for tenant_id, ca_id in cas:
        try:
            outcome = await publish(services, tenant_id, ca_id, only_if_due=True)
        except Exception:  # one CA's failure must not starve the others of their CRLs
            log.exception("CRL publication for CA %s failed", ca_id)
            continue
        if outcome is not None and outcome.published:
            done.append(outcome)
    return done
