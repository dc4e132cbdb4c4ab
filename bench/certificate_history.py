"""The certificate dataset's history: tenants with a root and an intermediate CA, then certificates issued,
revoked (about 10 %) and renewed (about 10 %), event for event as the commands record them.

``python -m bench.phases certificate-dataset`` writes it (``CertificateHistory`` is its workload for
``bench.phases._appenders``); the certificates and cas rebuilds are then measured over it.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import random
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from bench.phases import new_event, timed_append
from commands.ids import uuid7
from domain import ca, certificate
from domain.events import Actor, Payload
from domain.tenant import Quotas, TenantCreated

HISTORY_DAYS = 365  # the simulated clock's span: events and validities over a year make many per-day count rows
REVOKED_SHARE = RENEWED_SHARE = 0.10  # of the certificates issued
SERVER_KEY_SHARE = 0.6  # the rest were issued from a CSR, which built-in profiles cannot renew without a new one
CA_ALGORITHM, LEAF_ALGORITHM = "ecdsa-p384", "ecdsa-p256"
PROFILES = ("cassandra-node", "cassandra-node", "cassandra-node", "internode", "cassandra-client")  # by node number
VALIDITY_DAYS = {"cassandra-node": (90, 397), "internode": (90, 397), "cassandra-client": (30, 90)}
REASONS = ("key_compromise", "superseded", "cessation_of_operation", "affiliation_changed", "unspecified")
CRL_PERIOD = timedelta(hours=168)  # Settings.crl_validity_hours
CLOCK_SKEW = timedelta(minutes=5)  # domain.spec_builders backdates not_before by this much
ISSUER = Actor(principal="token:bench-issuer", auth_method="api_token")
SYSTEM = Actor(principal="system", auth_method="internal")


class Leaf(NamedTuple):
    """An issued certificate neither revoked nor renewed yet: what its later events need to know."""

    authority: int
    serial: int
    node: int  # its holder (subject and SANs); a renewal keeps it
    not_before: datetime
    not_after: datetime
    server_key: bool


@dataclass
class Authority:
    """A tenant's issuing CA (an intermediate under the tenant's root) and its stream, whose writers take turns
    as ``Services.locks`` makes them; ``pems`` are real certificates it signed, reused as the events' PEM text."""

    tenant_id: str
    dns_zone: str  # its holders' names end in it
    ca_id: str
    certificate: ca.CaCertificate
    pems: list[str]
    setup: list[tuple[str, str, Payload]]  # (stream id, stream type, payload) that create the tenant and its CAs
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    version: int = 1
    nodes: int = 0
    revoked: int = 0
    crls: int = 0
    crl_covers: int = 0  # the stream version its last CRL was built from


def _digest(kind: str, serial: int, algorithm: str = "sha256") -> str:
    """A distinct, stable stand-in for a hash the certificate ``serial`` would have (its DER, key, CSR)."""
    return hashlib.new(algorithm, f"{kind}:{serial}".encode()).hexdigest()


def _dn(subject) -> str:
    """RFC 4514, as infra/crypto describes a subject of these two attributes (checked on the signed pool)."""
    return f"CN={subject.common_name},O={subject.organization}"


def _holder(authority: Authority, profile: str, node: int):
    """The subject, SANs and tags of a tenant's ``node``-th certificate holder."""
    from domain.certspec import DistinguishedName, SubjectAltNames
    org = authority.dns_zone.split(".")[0].title()
    if profile == "cassandra-client":
        name = f"app-{node}"
        return (DistinguishedName(common_name=name, organization=org),
                SubjectAltNames(email=(f"{name}@{authority.dns_zone}",)), ("clients",))
    host = f"node-{node}.{authority.dns_zone}"
    return (DistinguishedName(common_name=host, organization=org),
            SubjectAltNames(dns=(host,), ip=(f"10.{node >> 16 & 255}.{node >> 8 & 255}.{node & 255}",)),
            (f"dc{node % 3 + 1}", "cassandra"))


def _tenant_pki(crypto, index: int, start: datetime, pems: int) -> Authority:
    """A tenant with a root and an intermediate CA, really signed, and ``pems`` leaf certificates the intermediate
    really signed (ECDSA: fast), as commands/cas.py and commands/certificates.py make them."""
    from commands.pki import new_serial, pem
    from domain import spec_builders, tenant
    from domain.certspec import DistinguishedName, NameConstraints
    from domain.profile import BUILTIN_PROFILES
    tenant_id, dns_zone = f"certs-{index:02d}", f"tenant{index}.cassandra.example"
    org = dns_zone.split(".")[0].title()
    created = []
    issuer_key = issuer_der = parent_id = None
    for kind, path_length in (("root", 1), ("intermediate", 0)):
        key, ca_id = crypto.generate_key(CA_ALGORITHM), uuid7()
        subject = DistinguishedName(common_name=f"{org} {kind.title()} CA", organization=org)
        spec = spec_builders.ca_spec(subject=subject, validity_days=3650 if kind == "root" else 1825,
                                     path_length=path_length, name_constraints=NameConstraints(),
                                     issuer_algorithm=CA_ALGORITHM, serial=new_serial(), now=start - timedelta(days=1))
        der = crypto.sign_certificate(spec, crypto.public_keys(key), issuer_key or key, issuer_der)
        held = ca.CaCertificate(certificate_pem=pem("CERTIFICATE", der), facts=crypto.describe(der),
                                issuer_ca_id=parent_id, key_ref=f"key_{_digest(kind, index)[:32]}")
        created.append(ca.CaCreated(ca_id=ca_id, name=f"{org} {kind}", kind=kind, origin="online",
                                    algorithm=CA_ALGORITHM, subject=subject, parent_id=parent_id,
                                    path_length=path_length, name_constraints=NameConstraints(), certificate=held))
        issuer_key, issuer_der, parent_id = key, der, ca_id
    setup = [(tenant.stream_id(tenant_id), tenant.STREAM_TYPE,
              TenantCreated(tenant_id=tenant_id, name=f"{org} Cassandra", quotas=Quotas()))]
    setup += [(ca.stream_id(c.ca_id), ca.STREAM_TYPE, c) for c in created]
    authority = Authority(tenant_id=tenant_id, dns_zone=dns_zone, ca_id=parent_id, certificate=created[-1].certificate,
                          pems=[], setup=setup)
    for node in range(pems):
        profile = PROFILES[node % len(PROFILES)]
        subject, sans, _ = _holder(authority, profile, node)
        spec = spec_builders.leaf_spec(BUILTIN_PROFILES[profile], subject=subject, sans=sans,
                                       validity_days=VALIDITY_DAYS[profile][-1], subject_algorithm=LEAF_ALGORITHM,
                                       issuer_algorithm=CA_ALGORITHM, serial=new_serial(), now=start, crl_urls=(),
                                       ocsp_urls=(), ca_issuer_urls=())
        der, facts = crypto.sign_described(spec, crypto.public_keys(crypto.generate_key(LEAF_ALGORITHM)), issuer_key,
                                           issuer_der)
        if facts.subject_dn != _dn(subject):
            raise RuntimeError(f"subject DN {_dn(subject)!r} is not what infra/crypto records: {facts.subject_dn!r}")
        authority.pems.append(pem("CERTIFICATE", der))
    return authority


class CertificateHistory:
    """The certificate dataset's writes, event for event as the commands record them: each writer issues a new
    certificate (commands/certificates.py issue), or revokes (commands/revoke.py) or renews (commands/renewal.py)
    a live one, until its share of events is written. A simulated clock runs from HISTORY_DAYS ago to now as the
    events are written: it dates the events and the certificates' validity. Tenants differ in size (1, 1/2,
    1/3 ... of the issuance)."""

    unit = 1

    def __init__(self, tenants: int, events: int, pems: int, seed: int) -> None:
        from infra.crypto.engine import CryptographyPki
        self.rng = random.Random(seed)
        self.events = events
        self.end = datetime.now(UTC)
        self.start = self.end - timedelta(days=HISTORY_DAYS)
        crypto = CryptographyPki()
        self.authorities = [_tenant_pki(crypto, i, self.start, max(1, pems // tenants)) for i in range(tenants)]
        self.weights = list(itertools.accumulate(1 / (i + 1) for i in range(tenants)))
        self.live: list[Leaf] = []
        self.written = self.serials = 0
        self.tally = {"tenants": tenants, "cas": 2 * tenants, "issued": 0, "revoked": 0, "renewed": 0, "crls": 0}

    async def prepare(self, store) -> int:
        """Append every tenant's creation and its CAs'; returns the number of events."""
        latencies = array("d")
        for authority in self.authorities:
            for stream_id, stream_type, payload in authority.setup:
                event = new_event(payload, uuid7(), actor=ISSUER, occurred_at=self.start - timedelta(days=1))
                await timed_append(store, latencies, authority.tenant_id, stream_id, stream_type, 0, [event])
        return len(latencies)

    def now(self) -> datetime:
        return self.start + (self.end - self.start) * min(1.0, self.written / self.events)

    async def write(self, store, index: int, events: int, latencies: array) -> None:
        while events:
            events -= await self._operation(store, events, latencies)

    async def _operation(self, store, budget: int, latencies: array) -> int:
        """One command's events: a revocation or renewal takes 2 or 3, so only when the budget has room."""
        draw = self.rng.random() * (1 + REVOKED_SHARE)  # per issued certificate: REVOKED_SHARE revocations
        if budget >= 3 and draw < REVOKED_SHARE and (leaf := self._take(renewable=False)):
            return await self._revoke(store, leaf, latencies)
        if budget >= 3 and draw < REVOKED_SHARE + RENEWED_SHARE and (leaf := self._take(renewable=True)):
            return await self._renew(store, leaf, latencies)
        return await self._issue(store, latencies)

    def _take(self, renewable: bool) -> Leaf | None:
        """A random live certificate (one with a server-side key, ``renewable``), out of the pool; None if the
        draws find none. Expired ones met on the way leave the pool."""
        now = self.now()
        for _ in range(8):
            if not self.live:
                return None
            index = self.rng.randrange(len(self.live))
            leaf = self.live[index]
            if renewable and not leaf.server_key and leaf.not_after > now:
                continue
            self.live[index] = self.live[-1]
            self.live.pop()
            if leaf.not_after > now:
                return leaf
        return None

    async def _append(self, store, latencies: array, authority: Authority, stream_id: str, stream_type: str,
                      version: int, payload: Payload, actor: Actor, correlation: str, at: datetime) -> int:
        event = new_event(payload, correlation, actor=actor, occurred_at=at)
        version = await timed_append(store, latencies, authority.tenant_id, stream_id, stream_type, version, [event])
        self.written += 1
        return version

    def _new_leaf(self, authority: int, node: int, now: datetime, days: int, server_key: bool) -> Leaf:
        self.serials += 1  # distinct by construction: a random 120-bit prefix over a counter
        serial = self.rng.getrandbits(120) << 32 | self.serials
        not_before = (now - CLOCK_SKEW).replace(microsecond=0)
        return Leaf(authority, serial, node, not_before, not_before + timedelta(days=days), server_key)

    def _issued(self, leaf: Leaf) -> certificate.CertificateIssued:
        from domain.certspec import CertificateFacts
        authority = self.authorities[leaf.authority]
        profile = PROFILES[leaf.node % len(PROFILES)]
        subject, sans, tags = _holder(authority, profile, leaf.node)
        issuer = authority.certificate.facts
        facts = CertificateFacts(
            serial_hex=f"{leaf.serial:x}", fingerprint_sha256=_digest("certificate", leaf.serial),
            subject_dn=_dn(subject), issuer_dn=issuer.subject_dn, not_before=leaf.not_before,
            not_after=leaf.not_after, algorithm=LEAF_ALGORITHM, public_key_sha256=_digest("key", leaf.serial),
            subject_key_identifier=_digest("key", leaf.serial, "sha1"),
            authority_key_identifier=issuer.subject_key_identifier)
        return certificate.CertificateIssued(
            certificate_id=certificate.certificate_id(leaf.serial), ca_id=authority.ca_id,
            issuer_fingerprint=issuer.fingerprint_sha256, profile=profile, subject=subject, sans=sans,
            key_source="server" if leaf.server_key else "csr",
            key_ref=f"key_{_digest('vault', leaf.serial)[:32]}" if leaf.server_key else None,
            csr_sha256=None if leaf.server_key else _digest("csr", leaf.serial),
            certificate_pem=authority.pems[leaf.serial % len(authority.pems)], facts=facts, tags=tags)

    async def _issue(self, store, latencies: array) -> int:
        """``certificate.issued`` at version 0 of the new certificate's stream."""
        index = bisect.bisect_left(self.weights, self.rng.random() * self.weights[-1])
        authority, now = self.authorities[index], self.now()
        authority.nodes += 1
        profile = PROFILES[authority.nodes % len(PROFILES)]
        leaf = self._new_leaf(index, authority.nodes, now, self.rng.choice(VALIDITY_DAYS[profile]),
                              self.rng.random() < SERVER_KEY_SHARE)
        await self._append(store, latencies, authority, certificate.stream_id(certificate.certificate_id(leaf.serial)),
                           certificate.STREAM_TYPE, 0, self._issued(leaf), ISSUER, uuid7(), now)
        self.live.append(leaf)
        self.tally["issued"] += 1
        return 1

    async def _revoke(self, store, leaf: Leaf, latencies: array) -> int:
        """The issuing CA's ``ca.certificate_revoked`` first (in the CA stream's turn), then the certificate's
        ``certificate.revoked``, then the CA's next CRL unless one built since already lists it."""
        from domain.revocation import CrlPublished, RevocationRecorded
        authority, now, correlation = self.authorities[leaf.authority], self.now(), uuid7()
        certificate_id = certificate.certificate_id(leaf.serial)
        reason = self.rng.choice(REASONS)
        invalidity = max(leaf.not_before, now - timedelta(days=1)) if reason == "key_compromise" else None
        entry = RevocationRecorded(serial_hex=f"{leaf.serial:x}", certificate_id=certificate_id, subject_ca_id=None,
                                   reason=reason, revoked_at=now, invalidity_date=invalidity, not_after=leaf.not_after)
        ca_stream = ca.stream_id(authority.ca_id)
        async with authority.turn:
            recorded = authority.version = await self._append(store, latencies, authority, ca_stream, ca.STREAM_TYPE,
                                                              authority.version, entry, ISSUER, correlation, now)
            authority.revoked += 1
        revoked = certificate.CertificateRevoked(reason=reason, revoked_at=now, invalidity_date=invalidity)
        await self._append(store, latencies, authority, certificate.stream_id(certificate_id), certificate.STREAM_TYPE,
                           1, revoked, ISSUER, correlation, now)
        self.tally["revoked"] += 1
        async with authority.turn:
            if authority.crl_covers >= recorded:
                return 2
            now, built_from = self.now(), authority.version
            crl = CrlPublished(crl_number=authority.crls + 1, this_update=now, next_update=now + CRL_PERIOD,
                               revoked_count=authority.revoked, sha256=_digest(authority.ca_id, authority.crls + 1),
                               signer_fingerprint=authority.certificate.facts.fingerprint_sha256)
            authority.version = await self._append(store, latencies, authority, ca_stream, ca.STREAM_TYPE,
                                                   authority.version, crl, SYSTEM, uuid7(), now)
            authority.crls, authority.crl_covers = authority.crls + 1, built_from
        self.tally["crls"] += 1
        return 3

    async def _renew(self, store, leaf: Leaf, latencies: array) -> int:
        """The claim on the old stream, the successor's ``certificate.issued`` at version 0 of its own stream, the
        link on the old stream. Built-in profiles do not reuse keys: a server-side key is rotated."""
        from domain.profile import BUILTIN_PROFILES
        from domain.renewal import renew_at
        authority, now, correlation = self.authorities[leaf.authority], self.now(), uuid7()
        policy = BUILTIN_PROFILES[PROFILES[leaf.node % len(PROFILES)]].renewal
        due = renew_at(policy, leaf.not_before, leaf.not_after) <= now
        actor, trigger = (SYSTEM, "scheduled") if due else (ISSUER, "manual")
        new = self._new_leaf(leaf.authority, leaf.node, now, (leaf.not_after - leaf.not_before).days, True)
        old_id, new_id = certificate.certificate_id(leaf.serial), certificate.certificate_id(new.serial)
        old_stream = certificate.stream_id(old_id)
        claim = certificate.RenewalStarted(certificate_id=old_id, new_certificate_id=new_id, rotate_key=True, attempt=1,
                                           trigger=trigger, started_at=now)
        version = await self._append(store, latencies, authority, old_stream, certificate.STREAM_TYPE, 1, claim, actor,
                                     correlation, now)
        await self._append(store, latencies, authority, certificate.stream_id(new_id), certificate.STREAM_TYPE, 0,
                           self._issued(new), actor, correlation, now)
        renewed = certificate.CertificateRenewed(certificate_id=old_id, new_certificate_id=new_id, rotated=True,
                                                 attempt=1)
        await self._append(store, latencies, authority, old_stream, certificate.STREAM_TYPE, version, renewed, actor,
                           correlation, now)
        self.live.append(new)
        self.tally["issued"] += 1
        self.tally["renewed"] += 1
        return 3
