"""Certificate commands: issue from a CSR or with a server-side key, and the audited private-key export."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import msgspec

from commands import blocking, compromised_keys, pki, quotas, revoke
from commands.authz import authorize
from commands.cas import AlgorithmName, CaId
from commands.ids import CertificateId
from commands.ports import PublicKeys
from commands.profiles import resolve_profile
from commands.runtime import CommandContext, CommandResult, Services, load, replayed, run
from commands.tenants import TenantId, active_tenant, refused_while_suspended
from domain import ca, certificate, key_rules, policy, spec_builders, violations
from domain.certspec import DistinguishedName, SubjectAltNames
from domain.errors import DomainError
from domain.profile import Profile, require_issuable
from domain.renewal import check_reused_key
from domain.tenant import NEW_CERTIFICATE, RENEWAL

CsrText = Annotated[str, msgspec.Meta(min_length=1, max_length=65536, description="PKCS#10, PEM")]
ProfileName = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ExportFormat = Annotated[str, msgspec.Meta(pattern="^(pem|der|pkcs12|jks|bundle)$")]


class IssueCertificate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Issue from ``csr`` (the requester keeps the key), or generate the key here when no CSR is given.

    ``subject`` and ``sans`` override what a CSR asks for; without a CSR ``subject`` is required.
    """

    tenant_id: TenantId
    ca_id: CaId
    profile: ProfileName = "cassandra-node"
    csr: CsrText | None = None
    subject: DistinguishedName | None = None
    sans: SubjectAltNames | None = None
    algorithm: AlgorithmName | None = None  # server-side keys only; default: the profile's
    validity_days: Annotated[int, msgspec.Meta(ge=1, le=36500)] | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=32)] = []


class ExportPrivateKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: TenantId
    certificate_id: CertificateId
    format: ExportFormat
    encrypted: bool


class IssuedCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """The command's result, and what the issuer needs to build a chain."""

    result: CommandResult
    certificate_id: str

    @property
    def replayed(self) -> bool:
        return self.result.replayed


class _Request(msgspec.Struct, frozen=True, kw_only=True):
    """The subject's side of an issuance: from a CSR, a server-side key to make, or (renewal) a key already held.

    ``public_keys`` None means a key is generated here; ``key_ref`` names a vault key being reused.
    ``rsa_exponent`` is a CSR's RSA exponent (a key made here always has 65537); ``key_field`` names where the key
    came from, for refusals. ``public_key_sha256`` (of a key not made here) is checked against the tenant's
    compromised keys.
    """

    subject: DistinguishedName
    sans: SubjectAltNames
    algorithm: str
    key_bits: int | None
    csr_hash: str | None
    public_keys: PublicKeys | None
    csr_sha256: str | None
    key_ref: str | None = None
    rsa_exponent: int | None = None
    key_field: str = "algorithm"
    public_key_sha256: str | None = None


def _from_csr(services: Services, cmd: IssueCertificate) -> _Request:
    if cmd.algorithm is not None:
        raise DomainError("algorithm_with_csr", "a CSR brings its own key: leave algorithm out", field="algorithm")
    facts, keys = pki.crypto_of(services).parse_csr(cmd.csr.encode())
    subject = cmd.subject or facts.subject
    if subject is None:
        raise DomainError("subject_required", "the CSR has an empty subject: give one in subject", field="subject")
    return _Request(subject=subject, sans=cmd.sans if cmd.sans is not None else facts.sans,
                    algorithm=facts.algorithm, key_bits=facts.key_bits, csr_hash=facts.signature_hash,
                    public_keys=keys, csr_sha256=hashlib.sha256(cmd.csr.encode()).hexdigest(),
                    rsa_exponent=facts.rsa_exponent, key_field="csr", public_key_sha256=facts.public_key_sha256)


@refused_while_suspended("signs a certificate")
async def issue_certificate(cmd: IssueCertificate, ctx: CommandContext, services: Services) -> IssuedCertificate:
    authorize(ctx.principal, "cert:issue", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return IssuedCertificate(result=prior, certificate_id=prior.stream_id.removeprefix("certificate-"))
    where = await issuing_context(services, cmd.tenant_id, cmd.ca_id, cmd.profile)
    if cmd.csr is not None:
        request = _from_csr(services, cmd)
    else:
        if cmd.subject is None:
            raise DomainError("subject_required", "without a CSR, give the subject", field="subject")
        algorithm = cmd.algorithm or where.profile.default_algorithm
        violations.raise_for(key_rules.check_key(algorithm, pki.key_bits(algorithm), for_ca=False,
                                                 available=pki.crypto_of(services).available_algorithms()))
        request = _Request(subject=cmd.subject, sans=cmd.sans or SubjectAltNames(), algorithm=algorithm,
                           key_bits=pki.key_bits(algorithm), csr_hash=None, public_keys=None, csr_sha256=None)
    return await issue(services, ctx, cmd, where, request=request, validity_days=cmd.validity_days,
                       tags=tuple(cmd.tags), serial=pki.new_serial())


class IssuingContext(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant (active), the issuing CA (active, its chain unrevoked) and the profile of one issuance."""

    tenant_id: str
    tenant: Any
    issuer: ca.CertificateAuthority
    profile_name: str
    profile: Profile


async def issuing_context(services: Services, tenant_id: str, ca_id: str, profile_name: str) -> IssuingContext:
    tenant = await active_tenant(services, tenant_id)
    issuer = await load(services, tenant_id, ca.stream_id(ca_id), ca.fold)
    ca.require_active(issuer, ca_id)
    await pki.require_trusted_chain(services, tenant_id, issuer)
    profile = await resolve_profile(services, tenant_id, profile_name)
    require_issuable(profile)  # issuance and renewal on request; OCSP responders are issued apart
    return IssuingContext(tenant_id=tenant_id, tenant=tenant, issuer=issuer, profile_name=profile_name,
                          profile=profile)


async def issue(services: Services, ctx: CommandContext, command: msgspec.Struct, where: IssuingContext, *,
                request: _Request, validity_days: int | None, tags: tuple[str, ...], serial: int,
                renewal: bool = False) -> IssuedCertificate:
    """Check every rule and the tenant's quotas, then make (or take) the key, sign, and append ``certificate.issued``
    at version 0.

    The caller has authorised. A key reported compromised in the tenant is refused (``key_compromised``, naming
    ``request.key_field``). A taken ``serial`` fails with AlreadyExists and writes nothing. A ``renewal``
    counts against the tenant's issuances per day, not its live certificates (its successor replaces one).
    """
    tenant_id, tenant, issuer, profile = where.tenant_id, where.tenant, where.issuer, where.profile
    crypto = pki.crypto_of(services)
    now = services.clock.now()
    if validity_days is None:
        validity_days = spec_builders.default_validity_days(profile.default_validity_days, now=now,
                                                            limit=tenant.policy.max_validity_days,
                                                            issuer_not_after=issuer.current.facts.not_after)
    if request.public_key_sha256 is not None:  # a key from outside, or kept: never one reported compromised
        await compromised_keys.refuse_if_compromised(services, tenant_id, request.public_key_sha256,
                                                     request.key_field)
    spec = spec_builders.leaf_spec(profile, subject=request.subject, sans=request.sans, validity_days=validity_days,
                                   subject_algorithm=request.algorithm, issuer_algorithm=issuer.algorithm,
                                   serial=serial, now=now, **pki.relying_party_urls(services, issuer))
    violations.raise_for(policy.check_certificate(
        spec, profile=profile, tenant_policy=tenant.policy, issuer=pki.issuer_facts(issuer),
        subject_algorithm=request.algorithm, key_bits=request.key_bits, csr_signature_hash=request.csr_hash,
        available=crypto.available_algorithms(), now=now, rsa_exponent=request.rsa_exponent,
        key_field=request.key_field))
    async with quotas.reserve(services, tenant, RENEWAL if renewal else NEW_CERTIFICATE) as reservation:
        key = None
        if request.public_keys is None:  # every rule passed: only now spend the time on a key
            key = await blocking.slow(crypto.generate_key, request.algorithm)
            keys = crypto.public_keys(key)
        else:
            keys = request.public_keys
        signer = await pki.signing_key(services, issuer, tenant_id)
        issuer_der = pki.ca_der(issuer.current.certificate_pem)
        der, facts = await blocking.signature(crypto.sign_described, spec, keys, signer, issuer_der)
        key_ref = request.key_ref
        if key is not None:
            key_ref = await pki.vault_of(services).put(tenant_id, crypto.private_key_bytes(key),
                                                       algorithm=request.algorithm, purpose="end-entity")
        certificate_id = certificate.certificate_id(serial)
        issued = certificate.CertificateIssued(
            certificate_id=certificate_id, ca_id=issuer.ca_id,
            issuer_fingerprint=issuer.current.facts.fingerprint_sha256, profile=where.profile_name,
            subject=request.subject, sans=request.sans, key_source="server" if key_ref is not None else "csr",
            key_ref=key_ref, csr_sha256=request.csr_sha256, certificate_pem=pki.pem("CERTIFICATE", der), facts=facts,
            tags=tags)
        result = await run(services, ctx, command, tenant_id=tenant_id,
                           stream_id=certificate.stream_id(certificate_id), stream_type=certificate.STREAM_TYPE,
                           fold=certificate.fold, decide=lambda s: certificate.decide_issue(s, issued),
                           presume_new=True)
        reservation.landed(result)
    if result.replayed:  # a retry of this request (same Idempotency-Key) landed first: its certificate is the one
        certificate_id = result.stream_id.removeprefix("certificate-")
        if key is not None and key_ref is not None:  # this attempt's own key, which no event names
            await pki.vault_of(services).delete([key_ref])
    elif request.public_key_sha256 is not None and not renewal:  # a renewal checks its predecessor's revocation
        await _withdraw_if_compromised(services, ctx, tenant_id, certificate_id, request)
    return IssuedCertificate(result=result, certificate_id=certificate_id)


async def _withdraw_if_compromised(services: Services, ctx: CommandContext, tenant_id: str, certificate_id: str,
                                   request: _Request) -> None:
    """The key was reported compromised while this certificate was being signed: it passed the check above before
    the report was recorded, and landed after the revocation's sweep of the key's certificates (commands/revoke.py
    reads them once the read model has reached the log's head as it stood after the report). Revoke it through the
    normal path, as that sweep would have, and refuse: no valid certificate of the key is left by the race."""
    assert request.public_key_sha256 is not None
    report = (await compromised_keys.load_keys(services, tenant_id)).keys.get(request.public_key_sha256)
    if report is None:
        return
    await revoke.revoke_raced(services, revoke.on_own_account(ctx), tenant_id, certificate_id, reason=report.reason,
                              invalidity_date=report.invalidity_date, same_key=True,
                              raced="the key was reported compromised while it was being signed")
    raise DomainError("key_compromised", f"the key of {request.key_field} was reported compromised in tenant "
                      f"{tenant_id} while this certificate was being signed; certificate {certificate_id} is revoked",
                      field=request.key_field)


def renewal_request(services: Services, issued: certificate.CertificateIssued, rotate_key: bool) -> _Request:
    """The subject side of a renewal: the old certificate's names, and a new key or its own key again."""
    if rotate_key:
        return _Request(subject=issued.subject, sans=issued.sans, algorithm=issued.facts.algorithm,
                        key_bits=pki.key_bits(issued.facts.algorithm), csr_hash=None, public_keys=None,
                        csr_sha256=None)
    crypto = pki.crypto_of(services)
    key, keys = crypto.certificate_public_keys(pki.der_of_pem(issued.certificate_pem))
    violations.raise_for(check_reused_key(key, issued.key_source, crypto.available_algorithms()))
    return _Request(subject=issued.subject, sans=issued.sans, algorithm=key.algorithm, key_bits=key.key_bits,
                    csr_hash=None, public_keys=keys, csr_sha256=issued.csr_sha256, key_ref=issued.key_ref,
                    rsa_exponent=key.rsa_exponent, key_field="reuse_key",
                    public_key_sha256=issued.facts.public_key_sha256)


class ExportedKey(msgspec.Struct, frozen=True, kw_only=True):
    result: CommandResult
    material: bytes  # the vault's plaintext: hand it to the crypto engine, never to a log


@refused_while_suspended("hands out a private key (PKCS#12, JKS, PEM with the key); certificates and truststores, "
                         "which hold none, are reads and stay open")
async def export_private_key(cmd: ExportPrivateKey, ctx: CommandContext, services: Services) -> ExportedKey:
    """Record that the key is being exported, then hand it over: no export without its audit event."""
    authorize(ctx.principal, "key:export", cmd.tenant_id)
    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id,
                       stream_id=certificate.stream_id(cmd.certificate_id), stream_type=certificate.STREAM_TYPE,
                       fold=certificate.fold,
                       decide=lambda s: certificate.decide_export_key(s, cmd.certificate_id, cmd.format,
                                                                      cmd.encrypted))
    state = await load(services, cmd.tenant_id, certificate.stream_id(cmd.certificate_id), certificate.fold)
    material = await pki.vault_of(services).get(cmd.tenant_id, state.issued.key_ref)
    return ExportedKey(result=result, material=material)
