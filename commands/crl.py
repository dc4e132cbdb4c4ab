"""CRL publication: build a CA's CRLs from its stream, store the DER, record ``ca.crl_published``; and serve them.

A CRL is built from the CA stream at version v and appended with expected version v, so the
store refuses it if a revocation (or another publisher) got in first: every published CRL
lists every revocation recorded before it, and two racing instances publish one CRL per
number. The DER goes to the artifact store before the event, so no event names a lost CRL.
After a key rollover each key that may still have valid certificates signs its own CRL
(``crl_publication.publishing_keys``): one publication signs them all and appends them together.

A CA whose key is offline (an imported root) has its CRL signed in the ceremony instead:
``request_crl`` gives the ceremony what the stream records (``csm ca crl-request``), and
``install_crl`` records what it signed once ``crl_publication.decide_install`` finds it complete.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

import msgspec

from commands import blocking, pki
from commands.authz import SYSTEM, authorize
from commands.cas import CaId
from commands.ports import ArtifactStore, RevocationCrypto
from commands.runtime import CommandContext, CommandResult, Services, load, replayed, run
from commands.tenants import TenantId, allowed_while_suspended
from domain import ca, crl_publication, revocation
from domain.errors import Contention, DomainError, NotFound

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


# An offline root's CRL lists its revoked intermediates: a few hundred bytes each; 1 MiB (the API's default body
# limit, CSM_MAX_BODY_BYTES) is some 20,000 of them.
CrlPem = Annotated[str, msgspec.Meta(min_length=1, max_length=1_048_576)]


class RequestCrl(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Ask what the ceremony needs to sign the next CRL of ``ca_id``, whose key is offline."""

    tenant_id: TenantId
    ca_id: CaId


class CrlRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What an offline key's ceremony signs the CA's next CRL from (``csm ca root sign-crl``): every revocation
    the CA's stream records, the next CRL number, and the CA certificate whose key must sign it."""

    ca_id: str
    tenant_id: str
    issuer_fingerprint: str  # SHA-256 of the CA certificate: the ceremony refuses to sign for another root
    crl_number: int  # the next one
    built_from: int  # the CA stream's version: a revocation after it makes a CRL signed from this one incomplete
    requested_at: datetime
    due: bool  # no CRL yet, one that lacks a revocation, or less than a third of its period left
    last_crl_number: int | None
    last_next_update: datetime | None
    entries: list[revocation.RevocationRecorded]  # the ceremony lists those not expired a whole period before


class InstallCrl(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Record the CRL an offline key signed for ``ca_id``: served at the CA's CRL URL from then on."""

    tenant_id: TenantId
    ca_id: CaId
    crl_pem: CrlPem


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
            if not crl_publication.can_publish(state):
                return None
            now = services.clock.now()
            if ((covering is not None and crl_publication.covers(state, covering, now))
                    or (only_if_due and not crl_publication.publication_due(state, now))):
                current = _current(state, now)
                for key, (_, published) in current.items():  # other processes' CRLs replace this call's attempts
                    if lost.get(key):
                        await _supersede(artifacts_of(services), published.sha256, lost[key])
                return [_outcome(state, signer, published, False) for signer, published in current.values()]
            try:
                return await _publish_from(services, tenant_id, state, now, lost)
            except crl_publication.CrlOutdated:
                continue  # another process wrote meanwhile: it may now be covered, or need the new revocation
    raise Contention(ca.stream_id(ca_id), "ca_id")  # 409 with Retry-After, as every other lost race


def _current(state: revocation.Registry, now) -> dict[str, tuple[ca.CaCertificate, revocation.CrlPublished]]:
    """Each publishing key's last CRL, by key, with the certificate that signs for the key."""
    return {signer.facts.public_key_sha256: (signer, last.published)
            for signer in crl_publication.publishing_keys(state, now)
            if (last := state.crls.get(signer.facts.public_key_sha256)) is not None}


def _outcome(state: revocation.Registry, signer: ca.CaCertificate, published: revocation.CrlPublished,
             new: bool) -> PublishedCrl:
    return PublishedCrl(ca_id=state.ca.ca_id, crl_number=published.crl_number, sha256=published.sha256,
                        published=new, key_id=revocation.key_id(signer))


async def _publish_from(services: Services, tenant_id: str, state: revocation.Registry, now,
                        lost: dict[str, list[str]]) -> list[PublishedCrl]:
    """One CRL per publishing key, all from this state, numbered in turn; stored, then recorded in one append."""
    signers = crl_publication.publishing_keys(state, now)
    first = crl_publication.next_crl_number(state, now)
    period = services.crl_validity
    entries = crl_publication.crl_entries(state, now, period)  # every revocation of the CA, on every key's CRL
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
                  decide=lambda s: crl_publication.decide_publish(s, built_from, publications), locked=True)
    except crl_publication.CrlOutdated:
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
    CA's oldest key that still publishes (see ``crl_publication.crl_of_key``). Published now if a key that publishes
    has none yet, or its last one has lapsed or lacks a revocation."""
    state = await load_registry(services, tenant_id, ca_id)
    ca.require(state.ca, ca_id)
    if key is not None and revocation.key_named(state.ca, key) is None:
        raise NotFound("crl_not_found", f"CA {ca_id} has no key {key}", field="key")
    # The scheduler normally keeps CRLs fresh; this covers a new CA or key, and a scheduler that was down.
    last = crl_publication.crl_of_key(state, key, services.clock.now())
    if crl_publication.stale(state, last, services.clock.now()):
        await publish(services, tenant_id, ca_id, only_if_due=True)
        state = await load_registry(services, tenant_id, ca_id)
        last = crl_publication.crl_of_key(state, key, services.clock.now())
    if last is None:
        why = ("its key is offline, and no CRL its ceremony signed is installed yet (csm ca crl-request, csm ca root "
               "sign-crl, csm ca install-crl)" if crl_publication.key_offline(state)
               else "it awaits its offline-signed certificate" if state.ca.status == "pending"
               else "its key is not held here")
        raise NotFound("crl_not_found", f"CA {ca_id} has no CRL{f' of key {key}' if key else ''}: {why}",
                       field="ca_id")
    der = await artifacts_of(services).get(last.published.sha256)
    if der is None:
        raise RuntimeError(f"CRL {last.published.sha256} of CA {ca_id} is missing from the artifact store")
    return last.published, der


async def republish_due(services: Services, cas: Iterable[tuple[str, str]],
                        failed: list[str] | None = None) -> list[PublishedCrl]:
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
            if failed is not None:
                failed.append(ca_id)
            continue
        done += [published for published in outcome or () if published.published]
    return done


async def lapses_at(services: Services, tenant_id: str, ca_id: str) -> datetime | None:
    """When the CA's CRLs first go stale (``crl_publication.lapses_at``); None when it has none to lapse."""
    return crl_publication.lapses_at(await load_registry(services, tenant_id, ca_id), services.clock.now())


@allowed_while_suspended("a read: what an offline key's CRL ceremony signs (CRL publication goes on)")
async def request_crl(cmd: RequestCrl, ctx: CommandContext, services: Services) -> CrlRequest:
    """What the offline ceremony needs to sign ``cmd.ca_id``'s next CRL; only for a CA whose key is offline."""
    authorize(ctx.principal, "ca:read", cmd.tenant_id)
    state = await load_registry(services, cmd.tenant_id, cmd.ca_id)
    ca.require(state.ca, cmd.ca_id)
    crl_publication.require_key_offline(state)
    current = state.ca.current
    assert current is not None  # require_key_offline
    now = services.clock.now()
    last = state.crls.get(current.facts.public_key_sha256)
    return CrlRequest(ca_id=cmd.ca_id, tenant_id=cmd.tenant_id, issuer_fingerprint=current.facts.fingerprint_sha256,
                      crl_number=crl_publication.next_crl_number(state, now), built_from=state.version, requested_at=now,
                      due=crl_publication.publication_due(state, now),
                      last_crl_number=last.published.crl_number if last else None,
                      last_next_update=last.published.next_update if last else None,
                      entries=list(state.revoked.values()))


def _crl_der(text: str) -> bytes:
    marker = "-----BEGIN X509 CRL-----"
    if marker not in text:
        raise DomainError("crl_invalid", "expected a PEM CRL (-----BEGIN X509 CRL-----)", field="crl_pem")
    try:
        return pki.der_of_pem(text[text.index(marker):])
    except ValueError:
        raise DomainError("crl_invalid", "the PEM CRL's base64 does not decode", field="crl_pem") from None


@allowed_while_suspended("publishes a CRL the offline key signed: CRL publication goes on")
async def install_crl(cmd: InstallCrl, ctx: CommandContext, services: Services) -> CommandResult:
    """Check the CRL the CA's offline key signed (signature, number, dates, every recorded revocation and nothing
    else), store it, and record ``ca.crl_published``: the CA's CRL URL serves it from then on."""
    authorize(ctx.principal, "ca:manage", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return prior
    state = await load_registry(services, cmd.tenant_id, cmd.ca_id)
    ca.require(state.ca, cmd.ca_id)
    crl_publication.require_key_offline(state)  # before the CRL is even read
    der = _crl_der(cmd.crl_pem)
    current = state.ca.current
    assert current is not None  # require_key_offline
    signed = await blocking.in_thread(revocation_of(services).read_crl, der, pki.ca_der(current.certificate_pem))
    now = services.clock.now()
    crl_publication.decide_install(state, signed, now)  # refused before anything is stored
    artifacts = artifacts_of(services)
    await artifacts.put(der, CRL_MEDIA_TYPE)  # stored before any event names it
    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id, stream_id=ca.stream_id(cmd.ca_id),
                       stream_type=ca.STREAM_TYPE, fold=revocation.fold,
                       decide=lambda s: crl_publication.decide_install(s, signed, now))
    previous = state.crls.get(current.facts.public_key_sha256)
    if result.changed and previous is not None and previous.published.sha256 != signed.sha256:
        await _supersede(artifacts, signed.sha256, [previous.published.sha256])
    log.info("installed CRL %d of CA %s, signed offline (%d entries)", signed.crl_number, cmd.ca_id,
             len(signed.reasons))
    return result
