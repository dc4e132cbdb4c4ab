"""CA commands: create roots and intermediates, import offline roots, cross-certify, disable (rollover: ca_rollover)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Literal

import msgspec

from commands import blocking, compromised_keys, pki, quotas
from commands.authz import authorize
from commands.ids import uuid7
from commands.ports import PublicKeys
from commands.runtime import CommandContext, CommandResult, Services, load, replayed, run
from commands.tenants import TenantId, active_tenant, allowed_while_suspended, refused_while_suspended
from domain import ca, key_rules, policy, spec_builders, violations
from domain.certspec import CertificateSpec, DistinguishedName, NameConstraints
from domain.errors import DomainError
from domain.tenant import NEW_CA, Tenant

CaId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[0-9a-z-]+$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
AlgorithmName = Annotated[str, msgspec.Meta(min_length=1, max_length=40, description="see GET /v1/algorithms")]
Days = Annotated[int, msgspec.Meta(ge=1, le=36500)]
PathLength = Annotated[int, msgspec.Meta(ge=0, le=16)]
PemText = Annotated[str, msgspec.Meta(min_length=1, max_length=65536)]
DEFAULT_CA_ALGORITHM = "hybrid-p384-ml-dsa-65"
KeyStorage = Annotated[Literal["vault", "hsm"], msgspec.Meta(
    description="vault: the key is kept envelope-encrypted in the key vault; hsm: generated on the PKCS#11 token "
                "and never leaves it (ecdsa-p256 or ecdsa-p384)")]


class Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


INTERMEDIATE_DAYS = 1825  # an intermediate's or a cross-certificate's validity when the request names none


class CreateRootCa(Strict):
    tenant_id: TenantId
    name: Name
    subject: DistinguishedName
    algorithm: AlgorithmName = DEFAULT_CA_ALGORITHM
    validity_days: Days = 3650
    path_length: PathLength | None = None
    name_constraints: NameConstraints = NameConstraints()
    key_storage: KeyStorage = "vault"


class CreateIntermediateCa(Strict):
    tenant_id: TenantId
    parent_id: CaId
    name: Name
    subject: DistinguishedName
    algorithm: AlgorithmName = DEFAULT_CA_ALGORITHM
    validity_days: Days | None = None  # None: INTERMEDIATE_DAYS, or what the parent has left if that is less
    path_length: PathLength | None = 0
    name_constraints: NameConstraints = NameConstraints()
    key_storage: KeyStorage = "vault"


class ImportOfflineRoot(Strict):
    tenant_id: TenantId
    name: Name
    certificate_pem: PemText


class RequestOfflineIntermediate(Strict):
    """An intermediate whose parent is an offline root: the key is made here, the CSR signed in the ceremony."""

    tenant_id: TenantId
    parent_id: CaId
    name: Name
    subject: DistinguishedName
    algorithm: AlgorithmName = DEFAULT_CA_ALGORITHM
    key_storage: KeyStorage = "vault"


class InstallCaCertificate(Strict):
    tenant_id: TenantId
    ca_id: CaId
    certificate_pem: PemText


class CrossCertify(Strict):
    """``issuer_id`` certifies ``ca_id``'s current key: relying parties that trust either root accept its chain."""

    tenant_id: TenantId
    ca_id: CaId
    issuer_id: CaId
    validity_days: Days | None = None  # None: INTERMEDIATE_DAYS, or what the issuer has left if that is less
    path_length: PathLength | None = None  # None: the CA's own path length (a cross-certificate never widens it)


class DisableCa(Strict):
    tenant_id: TenantId
    ca_id: CaId
    reason: Reason


class EnableCa(Strict):
    tenant_id: TenantId
    ca_id: CaId
    reason: Reason


def _run(services: Services, ctx: CommandContext, cmd: msgspec.Struct, tenant_id: str, ca_id: str, decide):
    return run(services, ctx, cmd, tenant_id=tenant_id, stream_id=ca.stream_id(ca_id), stream_type=ca.STREAM_TYPE,
               fold=ca.fold, decide=decide)


async def load_ca(services: Services, tenant_id: str, ca_id: str, field: str = "ca_id") -> ca.CertificateAuthority:
    state = await load(services, tenant_id, ca.stream_id(ca_id), ca.fold)
    ca.require(state, ca_id, field)
    return state


async def keep_key(services: Services, tenant_id: str, key, algorithm: str) -> str:
    """A new CA's private key into the tenant's vault; returns its key id."""
    crypto = pki.crypto_of(services)
    return await pki.vault_of(services).put(tenant_id, crypto.private_key_bytes(key), algorithm=algorithm, purpose="ca")


async def new_key(services: Services, algorithm: str, *, key_storage: str = "vault", tenant_id: str = "",
                   ca_id: str = ""):
    """A new CA key: in memory until the vault keeps it, or made on the PKCS#11 token (``key_storage`` hsm)."""
    crypto = pki.crypto_of(services)
    if key_storage == "hsm":
        return await blocking.slow(crypto.generate_token_key, algorithm, f"csm-ca:{tenant_id}:{ca_id}")
    return await blocking.slow(crypto.generate_key, algorithm)  # RSA takes seconds


def ca_certificate(services: Services, der: bytes, issuer_ca_id: str | None, key_ref: str | None) -> ca.CaCertificate:
    facts = pki.crypto_of(services).describe(der)
    return ca.CaCertificate(certificate_pem=pki.pem("CERTIFICATE", der), facts=facts, issuer_ca_id=issuer_ca_id,
                            key_ref=key_ref)


def spec_of(services: Services, *, subject: DistinguishedName, validity_days: int | None, path_length: int | None,
            name_constraints: NameConstraints, issuer: ca.CertificateAuthority | None,
            algorithm: str) -> CertificateSpec:
    """A CA certificate's content, checked against policy: signed by ``issuer``, or self-signed (root).
    ``validity_days`` None (a CA under ``issuer``): ``INTERMEDIATE_DAYS``, within what the issuer has left."""
    urls = pki.relying_party_urls(services, issuer) if issuer else {}
    now = services.clock.now()
    if validity_days is None:
        validity_days = spec_builders.default_validity_days(
            INTERMEDIATE_DAYS, now=now, issuer_not_after=issuer.current.facts.not_after if issuer else None)
    spec = spec_builders.ca_spec(subject=subject, validity_days=validity_days, path_length=path_length,
                                 name_constraints=name_constraints,
                                 issuer_algorithm=issuer.algorithm if issuer else algorithm,
                                 serial=pki.new_serial(), now=now, **urls)
    violations.raise_for(policy.check_ca(spec, issuer=pki.issuer_facts(issuer) if issuer else None,
                                         subject_algorithm=algorithm, key_bits=pki.key_bits(algorithm),
                                         available=pki.crypto_of(services).available_algorithms(), now=now))
    return spec


async def sign(services: Services, spec: CertificateSpec, subject_keys: PublicKeys, tenant_id: str,
               issuer: ca.CertificateAuthority | None, self_key=None) -> bytes:
    """Sign ``spec`` with the issuer's current key (verified against its certificate), or with ``self_key``."""
    crypto = pki.crypto_of(services)
    if issuer is None:
        return await blocking.signature(crypto.sign_certificate, spec, subject_keys, self_key, None)
    key = await pki.signing_key(services, issuer, tenant_id)
    issuer_der = pki.ca_der(issuer.current.certificate_pem)
    der = await blocking.signature(crypto.sign_certificate, spec, subject_keys, key, issuer_der)
    crypto.verify_issued(der, issuer_der)
    return der


async def _create_online(services: Services, ctx: CommandContext, cmd: CreateRootCa | CreateIntermediateCa,
                         tenant_state: Tenant, spec: CertificateSpec,
                         parent: ca.CertificateAuthority | None) -> CommandResult:
    """Within the tenant's quota: make the new CA's key, have it signed (by itself for a root, else by ``parent``),
    keep the key in the vault and record the CA."""
    async with quotas.reserve(services, tenant_state, NEW_CA) as reservation:
        crypto = pki.crypto_of(services)
        ca_id, parent_id = uuid7(), parent.ca_id if parent is not None else None
        key = await new_key(services, cmd.algorithm, key_storage=cmd.key_storage, tenant_id=cmd.tenant_id,
                             ca_id=ca_id)
        der = await sign(services, spec, crypto.public_keys(key), cmd.tenant_id, parent,
                          self_key=key if parent is None else None)
        key_ref = await keep_key(services, cmd.tenant_id, key, cmd.algorithm)
        created = ca.CaCreated(ca_id=ca_id, name=cmd.name, kind="root" if parent is None else "intermediate",
                               origin="online", algorithm=cmd.algorithm, subject=cmd.subject, parent_id=parent_id,
                               path_length=cmd.path_length, name_constraints=cmd.name_constraints,
                               certificate=ca_certificate(services, der, parent_id, key_ref),
                               key_storage=cmd.key_storage)
        result = await _run(services, ctx, cmd, cmd.tenant_id, ca_id, lambda s: ca.decide_create(s, created))
        reservation.landed(result)
    return result


@refused_while_suspended("makes a CA key and signs with it")
async def create_root_ca(cmd: CreateRootCa, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "ca:create", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return prior
    tenant_state = await active_tenant(services, cmd.tenant_id)
    ca.require_token_algorithm(cmd.key_storage, cmd.algorithm)
    spec = spec_of(services, subject=cmd.subject, validity_days=cmd.validity_days, path_length=cmd.path_length,
                 name_constraints=cmd.name_constraints, issuer=None, algorithm=cmd.algorithm)
    return await _create_online(services, ctx, cmd, tenant_state, spec, parent=None)


@refused_while_suspended("makes a CA key; its parent signs")
async def create_intermediate_ca(cmd: CreateIntermediateCa, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "ca:create", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return prior
    tenant_state = await active_tenant(services, cmd.tenant_id)
    parent = await load_ca(services, cmd.tenant_id, cmd.parent_id, "parent_id")
    ca.require_active(parent, cmd.parent_id, "parent_id")
    await pki.require_trusted_chain(services, cmd.tenant_id, parent, "parent_id")
    ca.require_token_algorithm(cmd.key_storage, cmd.algorithm)
    spec = spec_of(services, subject=cmd.subject, validity_days=cmd.validity_days, path_length=cmd.path_length,
                 name_constraints=cmd.name_constraints, issuer=parent, algorithm=cmd.algorithm)
    return await _create_online(services, ctx, cmd, tenant_state, spec, parent=parent)


@refused_while_suspended("adds a CA the tenant's certificates may chain to")
async def import_offline_root(cmd: ImportOfflineRoot, ctx: CommandContext, services: Services) -> CommandResult:
    """Register a root whose key never touches this service: only its self-signed certificate."""
    authorize(ctx.principal, "ca:create", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return prior
    tenant_state = await active_tenant(services, cmd.tenant_id)
    crypto = pki.crypto_of(services)
    der = _certificate_der(cmd.certificate_pem)
    crypto.verify_issued(der, der, "certificate_pem")  # self-signed, and the signature holds
    info = _require_ca_certificate(crypto.describe_ca(der))
    violations.raise_for(key_rules.check_key(info.algorithm, info.key_bits, for_ca=True,
                                             rsa_exponent=info.rsa_exponent, available=crypto.available_algorithms(),
                                             field="certificate_pem"))
    certificate = ca_certificate(services, der, None, None)
    await compromised_keys.refuse_certificate_keys(services, cmd.tenant_id, certificate.facts.public_key_sha256,
                                                   certificate.certificate_pem, "certificate_pem")
    async with quotas.reserve(services, tenant_state, NEW_CA) as reservation:
        ca_id = uuid7()
        created = ca.CaCreated(ca_id=ca_id, name=cmd.name, kind="root", origin="offline", algorithm=info.algorithm,
                               subject=info.subject, parent_id=None, path_length=info.path_length,
                               name_constraints=info.name_constraints, certificate=certificate)
        result = await _run(services, ctx, cmd, cmd.tenant_id, ca_id, lambda s: ca.decide_create(s, created))
        reservation.landed(result)
    return result


def _require_ca_certificate(info):
    if not info.is_ca:
        raise DomainError("not_a_ca_certificate", "the certificate's basicConstraints do not say cA=true",
                          field="certificate_pem")
    return info


def _certificate_der(text: str) -> bytes:
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise DomainError("invalid_certificate", "expected a PEM certificate", field="certificate_pem")
    try:
        return pki.der_of_pem(text[text.index("-----BEGIN CERTIFICATE-----"):])
    except ValueError:  # binascii's text ("Incorrect padding") describes the decoder, not the request
        raise DomainError("invalid_certificate", "the PEM certificate's body is not base64",
                          field="certificate_pem") from None


@refused_while_suspended("makes a CA key")
async def request_offline_intermediate(cmd: RequestOfflineIntermediate, ctx: CommandContext,
                                       services: Services) -> CommandResult:
    authorize(ctx.principal, "ca:create", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return prior
    tenant_state = await active_tenant(services, cmd.tenant_id)
    parent = await load_ca(services, cmd.tenant_id, cmd.parent_id, "parent_id")
    if parent.origin != "offline" or parent.kind != "root":
        raise DomainError("parent_online", "this parent signs online: create the intermediate directly",
                          field="parent_id")
    violations.raise_for(key_rules.check_key(cmd.algorithm, pki.key_bits(cmd.algorithm), for_ca=True,
                                             available=pki.crypto_of(services).available_algorithms()))
    ca.require_token_algorithm(cmd.key_storage, cmd.algorithm)
    async with quotas.reserve(services, tenant_state, NEW_CA) as reservation:
        crypto = pki.crypto_of(services)
        ca_id = uuid7()
        key = await new_key(services, cmd.algorithm, key_storage=cmd.key_storage, tenant_id=cmd.tenant_id,
                             ca_id=ca_id)
        csr_der = await asyncio.to_thread(crypto.create_csr, cmd.subject, key)
        key_ref = await keep_key(services, cmd.tenant_id, key, cmd.algorithm)
        requested = ca.CaIntermediateRequested(ca_id=ca_id, name=cmd.name, algorithm=cmd.algorithm, subject=cmd.subject,
                                               key_ref=key_ref, csr_pem=pki.pem("CERTIFICATE REQUEST", csr_der),
                                               parent_id=parent.ca_id, key_storage=cmd.key_storage)
        result = await _run(services, ctx, cmd, cmd.tenant_id, ca_id,
                            lambda s: ca.decide_request_intermediate(s, requested))
        reservation.landed(result)
    return result


@refused_while_suspended("activates a CA: from then on it signs")
async def install_ca_certificate(cmd: InstallCaCertificate, ctx: CommandContext, services: Services) -> CommandResult:
    """Activate a requested intermediate with the certificate the offline root signed for it."""
    authorize(ctx.principal, "ca:create", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):  # a retry: the CA is no longer pending
        return prior
    state = await load_ca(services, cmd.tenant_id, cmd.ca_id)
    if state.pending_key_ref is None or state.parent_id is None:
        raise DomainError("ca_not_pending", f"CA {cmd.ca_id} is not waiting for a certificate", field="ca_id")
    parent = await load_ca(services, cmd.tenant_id, state.parent_id, "parent_id")
    crypto = pki.crypto_of(services)
    der = _certificate_der(cmd.certificate_pem)
    crypto.verify_issued(der, pki.ca_der(parent.current.certificate_pem), "certificate_pem")
    info = _require_ca_certificate(crypto.describe_ca(der))
    material = await pki.vault_of(services).get(cmd.tenant_id, state.pending_key_ref)
    expected = hashlib.sha256(crypto.public_keys(crypto.load_private_key(material)).primary).hexdigest()
    installed = ca.CaCertificateInstalled(path_length=info.path_length, name_constraints=info.name_constraints,
                                          certificate=ca_certificate(services, der, parent.ca_id,
                                                                      state.pending_key_ref))
    # The key was made here for this CA, so only a report since (through another CA holding it) blocks it.
    await compromised_keys.refuse_certificate_keys(services, cmd.tenant_id,
                                                   installed.certificate.facts.public_key_sha256,
                                                   installed.certificate.certificate_pem, "certificate_pem")
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.ca_id,
                      lambda s: ca.decide_install(s, cmd.ca_id, installed, expected))


@refused_while_suspended("signs a CA certificate")
async def cross_certify(cmd: CrossCertify, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "ca:manage", cmd.tenant_id)
    if prior := await replayed(services, ctx, cmd, cmd.tenant_id):
        return prior
    if cmd.ca_id == cmd.issuer_id:
        raise DomainError("self_cross_certification", "a CA cannot cross-certify itself", field="issuer_id")
    subject_ca = await load_ca(services, cmd.tenant_id, cmd.ca_id)
    issuer = await load_ca(services, cmd.tenant_id, cmd.issuer_id, "issuer_id")
    ca.require_active(subject_ca, cmd.ca_id)
    ca.require_active(issuer, cmd.issuer_id, "issuer_id")
    await pki.require_trusted_chain(services, cmd.tenant_id, issuer, "issuer_id")
    # A cross-certificate is a second path to the same CA: it may narrow the CA's path length, never widen it.
    own = subject_ca.path_length
    if cmd.path_length is not None and own is not None and cmd.path_length > own:
        raise DomainError("path_length_widens", f"CA {cmd.ca_id} has path length {own}: a cross-certificate may "
                          "not allow more", field="path_length")
    path_length = own if cmd.path_length is None else cmd.path_length
    spec = spec_of(services, subject=subject_ca.subject, validity_days=cmd.validity_days, path_length=path_length,
                 name_constraints=subject_ca.name_constraints, issuer=issuer, algorithm=subject_ca.algorithm)
    crypto = pki.crypto_of(services)
    subject_key = await pki.signing_key(services, subject_ca, cmd.tenant_id)
    der = await sign(services, spec, crypto.public_keys(subject_key), cmd.tenant_id, issuer)
    crossed = ca.CaCrossCertified(certificate=ca_certificate(services, der, issuer.ca_id, subject_ca.signing_key_ref))
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.ca_id,
                      lambda s: ca.decide_cross_certify(s, cmd.ca_id, crossed))


@allowed_while_suspended("stops a CA issuing: it contains an incident, and its CRL and OCSP go on")
async def disable_ca(cmd: DisableCa, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "ca:manage", cmd.tenant_id)
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.ca_id,
                      lambda s: ca.decide_disable(s, cmd.ca_id, cmd.reason))


@refused_while_suspended("lets a disabled CA sign again")
async def enable_ca(cmd: EnableCa, ctx: CommandContext, services: Services) -> CommandResult:
    authorize(ctx.principal, "ca:manage", cmd.tenant_id)
    return await _run(services, ctx, cmd, cmd.tenant_id, cmd.ca_id,
                      lambda s: ca.decide_enable(s, cmd.ca_id, cmd.reason))
