"""A root's link certificates at a key rollover (RFC 4210 4.4 root CA key update): NewWithOld and OldWithNew.

A truststore exported before a root's rollover holds only the old root certificate. NewWithOld (the new key
certified by the old key, for the root's own subject) lets such a relying party accept chains to the new key;
OldWithNew (the old key certified by the new one) lets a relying party that holds only the new root accept
chains to the old key. Both are valid from now until the old certificate expires (or the new one, if sooner):
once the old certificate has expired, neither has anything left to link.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from commands import blocking, pki
from commands.runtime import Services
from domain import ca, spec_builders
from domain.certspec import CertificateSpec


def _spec(services: Services, issuer: ca.CertificateAuthority, now: datetime, not_after: datetime) -> CertificateSpec:
    """The root's own subject, path length and name constraints, signed by ``issuer``'s current key, with that
    key's relying-party URLs (its CRL, OCSP responder and caIssuers), as a certificate it signs for a CA has."""
    assert issuer.subject is not None
    spec = spec_builders.ca_spec(subject=issuer.subject, validity_days=1, path_length=issuer.path_length,
                                 name_constraints=issuer.name_constraints, issuer_algorithm=issuer.algorithm,
                                 serial=pki.new_serial(), now=now, **pki.relying_party_urls(services, issuer))
    return msgspec.structs.replace(spec, not_after=not_after)


async def _link(services: Services, spec: CertificateSpec, subject_key: Any, subject: ca.CaCertificate,
                issuer_key: Any, issuer: ca.CaCertificate, ca_id: str) -> ca.CaCertificate:
    crypto = pki.crypto_of(services)
    issuer_der = pki.ca_der(issuer.certificate_pem)
    der = await blocking.signature(crypto.sign_certificate, spec, crypto.public_keys(subject_key), issuer_key,
                                   issuer_der)
    crypto.verify_issued(der, issuer_der)
    return ca.CaCertificate(certificate_pem=pki.pem("CERTIFICATE", der), facts=crypto.describe(der),
                            issuer_ca_id=ca_id, key_ref=subject.key_ref)


async def link_certificates(services: Services, tenant_id: str, state: ca.CertificateAuthority, new_key: Any,
                            new: ca.CaCertificate) -> tuple[ca.CaCertificate, ca.CaCertificate] | None:
    """(NewWithOld, OldWithNew) for root ``state`` rolling over to ``new_key`` (certified by ``new``); None when the
    old certificate has expired. The old key signs with the CA's current relying-party URLs, the new one with
    those it will have once the rollover is recorded."""
    old = state.current
    assert old is not None and state.kind == "root"
    now = services.clock.now()
    not_after = min(old.facts.not_after, new.facts.not_after)
    if not_after <= now:
        return None
    old_key = await pki.signing_key(services, state, tenant_id)
    rolled = msgspec.structs.replace(state, current=new, previous=(*state.previous, old),
                                     algorithm=new.facts.algorithm)
    new_with_old = await _link(services, _spec(services, state, now, not_after), new_key, new, old_key, old,
                               state.ca_id)
    old_with_new = await _link(services, _spec(services, rolled, now, not_after), old_key, old, new_key, new,
                               state.ca_id)
    return new_with_old, old_with_new
