"""What CA and certificate handlers share: serials, PEM, relying-party URLs, issuer keys and facts."""

from __future__ import annotations

import asyncio
import base64
import functools
import secrets
from collections import OrderedDict
from typing import Any

from commands.ports import KeyVault, PkiCrypto
from commands.runtime import Services, load
from domain import ca, compromise, revocation
from domain.algorithms import ALGORITHMS
from domain.errors import DomainError
from domain.policy import IssuerFacts
from domain.spec_builders import serial_from_random

_SIGNING_KEYS_CACHED = 64


def crypto_of(services: Services) -> PkiCrypto:
    if services.crypto is None:
        raise RuntimeError("no crypto engine is wired into these services")
    return services.crypto


def vault_of(services: Services) -> KeyVault:
    if services.keys is None:
        raise RuntimeError("no key vault is wired into these services")
    return services.keys


def new_serial() -> int:
    """A 159-bit serial from the CSPRNG: positive, at most 20 DER octets (RFC 5280 4.1.2.2)."""
    while True:
        try:
            return serial_from_random(secrets.token_bytes(20))
        except ValueError:  # all-zero draw
            continue


def key_bits(algorithm: str) -> int | None:
    known = ALGORITHMS.get(algorithm)
    return known.key_bits if known else None


def pem(label: str, der: bytes) -> str:
    encoded = base64.b64encode(der).decode("ascii")  # slices, not textwrap: this runs for every certificate
    body = "\n".join(encoded[i:i + 64] for i in range(0, len(encoded), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def der_of_pem(text: str) -> bytes:
    """The base64 of every line that does not start with "-----" (a BEGIN or END line), decoded.

    A single block, BEGIN and END on lines of their own, is decoded straight from between them: b64decode skips the
    line breaks itself (the read models decode every certificate they fold; splitting it into lines was most of it).
    """
    parts = text.split("-----")
    if (len(parts) == 5 and not parts[0].strip() and not parts[4].strip() and _label(parts[1]) and _label(parts[3])
            and parts[2].isascii() and parts[2].startswith(("\n", "\r\n")) and parts[2].rstrip(" \t").endswith("\n")):
        return base64.b64decode(parts[2])
    return _der_of_pem_lines(text)


def _label(text: str) -> bool:
    """Printable ASCII: no line break (of any kind splitlines knows) inside a BEGIN or END line's label."""
    return text.isascii() and text.isprintable()


def _der_of_pem_lines(text: str) -> bytes:
    lines = [line.strip() for line in text.strip().splitlines()]
    return base64.b64decode("".join(line for line in lines if line and not line.startswith("-----")))


@functools.lru_cache(maxsize=64)
def ca_der(certificate_pem: str) -> bytes:
    """``der_of_pem`` of a CA's (or OCSP responder's) own certificate, remembered: every certificate, CRL
    and OCSP answer it signs needs it, and a CA's certificate never changes (a new one is another string)."""
    return der_of_pem(certificate_pem)


def relying_party_urls(services: Services, issuer: ca.CertificateAuthority) -> dict[str, tuple[str, ...]]:
    """CRL distribution point, OCSP responder and CA-issuer URLs for certificates ``issuer``'s current key signs.

    The distribution point names the key: each key of a rolled-over CA publishes its own CRL, and a relying party
    needs the one its certificate's issuer key signed. The CA's first key keeps the plain URL, as certificates
    signed before keys were named carry it (``crl_publication.crl_of_key`` serves it that key's CRL first).
    """
    base = services.public_url.rstrip("/")
    ca_id = issuer.ca_id
    crl_url, issuer_url = f"{base}/v1/cas/{ca_id}/crl", f"{base}/v1/cas/{ca_id}/certificate"
    current = issuer.current
    if current is not None and current.facts.public_key_sha256 != revocation.first_key(issuer):
        crl_url += f"?key={revocation.key_id(current)}"
        issuer_url += f"?key={revocation.key_id(current)}"  # the certificate of the key that signs, not the latest
    return {"crl_urls": (crl_url,),
            "ocsp_urls": (f"{base}/ocsp/{ca_id}",),
            "ca_issuer_urls": (issuer_url,)}


def issuer_facts(state: ca.CertificateAuthority) -> IssuerFacts:
    assert state.current is not None
    facts = state.current.facts
    return IssuerFacts(ca_id=state.ca_id, algorithm=state.algorithm, not_before=facts.not_before,
                       not_after=facts.not_after, path_length=state.path_length,
                       name_constraints=state.name_constraints,
                       status="active" if state.status == "active" else "disabled")


class SigningKeys:
    """Decrypted CA signing keys, kept in memory (an online CA signs with them all day), LRU-bounded."""

    def __init__(self, capacity: int = _SIGNING_KEYS_CACHED) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[tuple[int, str, str], Any] = OrderedDict()

    async def get(self, services: Services, tenant_id: str, key_ref: str) -> Any:
        slot = (id(services.keys), tenant_id, key_ref)
        if slot in self._keys:
            self._keys.move_to_end(slot)
            return self._keys[slot]
        material = await vault_of(services).get(tenant_id, key_ref)
        key = await asyncio.to_thread(crypto_of(services).load_private_key, material)
        self._keys[slot] = key
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return key


SIGNING_KEYS = SigningKeys()


async def signing_key(services: Services, state: ca.CertificateAuthority, tenant_id: str) -> Any:
    key_ref = state.signing_key_ref
    if key_ref is None:
        raise DomainError("ca_key_offline", f"CA {state.ca_id}'s key is offline", field="ca_id")
    return await SIGNING_KEYS.get(services, tenant_id, key_ref)


async def require_trusted_chain(services: Services, tenant_id: str, state: ca.CertificateAuthority,
                                field: str = "ca_id") -> None:
    """Refuse to sign under a CA one of whose issuers is revoked (its chain no longer validates anywhere), or whose
    certificate chains to a root only through a key that root's compromise rollover withdrew (422
    ``ca_recertification_required``, naming the CA to roll over: its parent's trusted key certifies it then)."""
    seen = {state.ca_id}
    below, held = state, state.current  # the certificate of ``below`` that its parent's key signed
    stale = None  # the highest CA on the path signed by a key its parent has rolled away from: roll it over first
    parent_id = state.parent_id
    while parent_id and parent_id not in seen:  # seen: a corrupt parent loop must not spin forever
        seen.add(parent_id)
        parent = await load(services, tenant_id, ca.stream_id(parent_id), ca.fold)
        if parent.status == "revoked":
            raise DomainError("ca_revoked", f"CA {state.ca_id} is under CA {parent_id}, which is revoked",
                              field=field)
        if held is not None and held.issuer_ca_id == parent_id:
            signers = compromise.signer_of(parent, held)
            if not signers and parent.withdrawn:
                roll = stale or below
                raise DomainError("ca_recertification_required", f"CA {state.ca_id}'s chain passes through a key of CA "
                                  f"{parent_id} that a compromise rollover withdrew from trust, so nothing it signs "
                                  f"validates for relying parties: roll CA {roll.ca_id} over first (POST /v1/cas/"
                                  f"{roll.ca_id}/rollover; csm ca rollover {roll.ca_id}); GET /v1/cas/{{root id}}/"
                                  "compromise lists what else is left", field=field,
                                  members={"ca_to_roll_over": roll.ca_id})
            held = signers[0] if signers else None
            current = parent.current.facts.fingerprint_sha256 if parent.current is not None else None
            if held is not None and held.facts.fingerprint_sha256 != current:
                stale = below
        else:
            held = None  # certified by another CA (cross-certified): its own hierarchy answers for it
        below = parent
        parent_id = parent.parent_id
