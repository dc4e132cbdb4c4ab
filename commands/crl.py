"""CRL publication: build a CA's CRLs from its stream, store the DER, record ``ca.crl_published``; and serve them.

A CRL is built from the CA stream at version v and appended with expected version v, so the
store refuses it if a revocation (or another publisher) got in first: every published CRL
lists every revocation recorded before it, and two racing instances publish one CRL per
number. The DER goes to the artifact store before the event, so no event names a lost CRL.
After a key rollover each key that may still have valid certificates signs its own CRL
(``revocation.publishing_keys``): one publication signs them all and appends them together.
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
    """Where one key's CRL stands after a publication attempt (``published`` False: an earlier one covers it)."""

    ca_id: str
    crl_number: int
    sha256: str
    published: bool
    key_id: str = ""  # the signing key's identifier (hex): the CRL's AKI, and ``?key=`` of its URL


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
                  only_if_due: bool = False) -> list[PublishedCrl] | None:
    """Publish the next CRL of every key of ``ca_id`` that publishes, unless they already cover stream version
    ``covering`` (or none is due); the CRLs, oldest key first, the current key's last.

    None when the CA cannot sign a CRL here (offline key, pending, revoked).
    The CA stream's turn is held from reading it to appending ``ca.crl_published``: this process's revocations
    wait (they would make the CRL outdated), and those that waited mostly find a CRL that already lists them.
    """
    lost: dict[str, list[str]] = {}  # by key: CRLs this call stored whose event lost the race, kept as deltas
    async with services.locks(tenant_id, ca.stream_id(ca_id)):
        for _ in range(MAX_ATTEMPTS):
            state = await load_registry(services, tenant_id, ca_id)
            if not revocation.can_publish(state):
                return None
            now = services.clock.now()
            if ((covering is not None and revocation.covers(state, covering, now))
                    or (only_if_due and not revocation.publication_due(state, now))):
                current = _current(state, now)
                for key, (_, published) in current.items():  # other processes' CRLs replace this call's attempts
                    if lost.get(key):
                        await _supersede(artifacts_of(services), published.sha256, lost[key])
                return [_outcome(state, signer, published, False) for signer, published in current.values()]
            try:
                return await _publish_from(services, tenant_id, state, now, lost)
            except revocation.CrlOutdated:
                continue  # another process wrote meanwhile: it may now be covered, or need the new revocation
    raise Contention(ca.stream_id(ca_id))  # 409 with Retry-After, as every other lost race


def _current(state: revocation.Registry, now) -> dict[str, tuple[ca.CaCertificate, revocation.CrlPublished]]:
    """Each publishing key's last CRL, by key, with the certificate that signs for the key."""
    return {signer.facts.public_key_sha256: (signer, last.published)
            for signer in revocation.publishing_keys(state, now)
            if (last := state.crls.get(signer.facts.public_key_sha256)) is not None}


def _outcome(state: revocation.Registry, signer: ca.CaCertificate, published: revocation.CrlPublished,
             new: bool) -> PublishedCrl:
    return PublishedCrl(ca_id=state.ca.ca_id, crl_number=published.crl_number, sha256=published.sha256,
                        published=new, key_id=revocation.key_id(signer))


async def _publish_from(services: Services, tenant_id: str, state: revocation.Registry, now,
                        lost: dict[str, list[str]]) -> list[PublishedCrl]:
    """One CRL per publishing key, all from this state, numbered in turn; stored, then recorded in one append."""
    signers = revocation.publishing_keys(state, now)
    first = revocation.next_crl_number(state)
    period = services.crl_validity
    entries = revocation.crl_entries(state, now, period)  # every revocation of the CA, on every key's CRL
    artifacts = artifacts_of(services)
    publications, signed, number = [], [], first
    for signer in signers:
        try:
            key = await pki.SIGNING_KEYS.get(services, tenant_id, signer.key_ref or "")
            der = await blocking.in_thread(revocation_of(services).sign_crl, entries, issuer_key=key,
                                          issuer_certificate=pki.ca_der(signer.certificate_pem), number=number,
                                          this_update=now, next_update=now + period)
        except Exception:
            if signer is signers[-1]:
                raise  # the current key: no CRL at all is published, and the caller hears why
            # a previous key that cannot sign (gone from the vault, an algorithm no longer here) must not keep the
            # current key's CRL from relying parties; its own CRL lapses, and the log says so
            log.exception("CRL of CA %s for its previous key %s not signed; the current key's CRL is published",
                          state.ca.ca_id, revocation.key_id(signer))
            continue
        digest = await artifacts.put(der, CRL_MEDIA_TYPE)  # stored before any event names it
        signed.append(signer)
        publications.append(revocation.CrlPublished(
            crl_number=number, this_update=now, next_update=now + period, revoked_count=len(entries), sha256=digest,
            signer_fingerprint=signer.facts.fingerprint_sha256))
        number += 1  # the numbers of one publication follow each other (decide_publish checks)
    signers = signed
    built_from = state.version
    try:
        await run(services, system_context(), publications[0], tenant_id=tenant_id,
                  stream_id=ca.stream_id(state.ca.ca_id), stream_type=ca.STREAM_TYPE, fold=revocation.fold,
                  decide=lambda s: revocation.decide_publish(s, built_from, publications), locked=True)
    except revocation.CrlOutdated:
        for signer, published in zip(signers, publications):
            lost.setdefault(signer.facts.public_key_sha256, []).append(published.sha256)
        raise
    outcomes = []
    for signer, published in zip(signers, publications):
        key = signer.facts.public_key_sha256
        log.info("published CRL %d of CA %s, key %s (%d entries)", published.crl_number, state.ca.ca_id,
                 revocation.key_id(signer), len(entries))
        previous = state.crls.get(key)  # a CRL supersedes the previous CRL of the same key
        await _supersede(artifacts, published.sha256,
                         [*([previous.published.sha256] if previous else []), *lost.pop(key, [])])
        outcomes.append(_outcome(state, signer, published, True))
    return outcomes


async def _supersede(artifacts: ArtifactStore, newer: str, older: list[str]) -> None:
    """The CRLs this one replaces (the CA's previous one, and lost attempts) are kept as deltas from it: a CA's
    CRLs then take space in proportion to its revocations, not to their square. Best effort: the CRL is out."""
    try:
        await artifacts.supersede(newer, older)
    except Exception:
        log.exception("keeping superseded CRLs as deltas failed; they stay whole")


async def current_crl(services: Services, tenant_id: str, ca_id: str,
                      key: str | None = None) -> tuple[revocation.CrlPublished, bytes]:
    """The latest CRL of the CA key ``key`` names (its key identifier, hex) and its DER; ``key`` None: of the
    CA's oldest key that still publishes (see ``revocation.crl_of_key``). Published now if a key that publishes
    has none yet, or its last one has lapsed or lacks a revocation."""
    state = await load_registry(services, tenant_id, ca_id)
    ca.require(state.ca, ca_id)
    if key is not None and revocation.key_named(state.ca, key) is None:
        raise NotFound("crl_not_found", f"CA {ca_id} has no key {key}", field="key")
    # The scheduler normally keeps CRLs fresh; this covers a new CA or key, and a scheduler that was down.
    last = revocation.crl_of_key(state, key, services.clock.now())
    if revocation.stale(state, last, services.clock.now()):
        await publish(services, tenant_id, ca_id, only_if_due=True)
        state = await load_registry(services, tenant_id, ca_id)
        last = revocation.crl_of_key(state, key, services.clock.now())
    if last is None:
        raise NotFound("crl_not_found", f"CA {ca_id} has no CRL{f' of key {key}' if key else ''}: its key is not "
                       "held here", field="ca_id")
    der = await artifacts_of(services).get(last.published.sha256)
    if der is None:
        raise RuntimeError(f"CRL {last.published.sha256} of CA {ca_id} is missing from the artifact store")
    return last.published, der


async def republish_due(services: Services, cas: Iterable[tuple[str, str]]) -> list[PublishedCrl]:
    """One scheduler pass over ``(tenant_id, ca_id)`` pairs: publish where a key's last CRL is a third from lapsing
    (or it has none); every key that publishes gets its CRL then.

    Safe to run on several instances at once: a lost race ends in "covered", not a second CRL.
    """
    done = []
    for tenant_id, ca_id in cas:
        try:
            outcome = await publish(services, tenant_id, ca_id, only_if_due=True)
        except Exception:  # one CA's failure must not starve the others of their CRLs
            log.exception("CRL publication for CA %s failed", ca_id)
            continue
        done += [published for published in outcome or () if published.published]
    return done
