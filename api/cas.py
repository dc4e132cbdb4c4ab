"""The /v1/cas commands: create, import, cross-sign, rollover (and a compromise rollover's report), disable, enable,
and an offline key's CRL ceremony (its request, and installing what it signed); ``ca_row`` and ``tenant_for`` for
the other controllers. The CA queries and chains are in api/ca_queries.py."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, JSONBody

from api.deps import (Caller, IdempotencyKey, MinPosition, command_context, execute, find_row, read_your_writes,
                      runtime_of)
from api.problems import COMMAND_ERRORS, QUERY_ERRORS, ApiProblem
from commands import ca_rollover, cas as cmd
from commands import crl
from commands.authz import Principal, authorize, visible_tenants
from commands.runtime import CommandResult
from commands.tenants import TenantId
from domain.certspec import DistinguishedName, NameConstraints
from projections import cas as read_model


class CreateCaBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A root (no ``parent_id``) or an intermediate signed by ``parent_id``."""

    kind: Literal["root", "intermediate"]
    name: cmd.Name
    subject: DistinguishedName
    tenant_id: TenantId | None = None  # default: the caller's tenant
    parent_id: cmd.CaId | None = None
    algorithm: cmd.AlgorithmName = cmd.DEFAULT_CA_ALGORITHM
    validity_days: cmd.Days | None = None
    path_length: cmd.PathLength | None = None
    name_constraints: NameConstraints = NameConstraints()
    key_storage: cmd.KeyStorage = "vault"


class ImportRootBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: cmd.Name
    certificate_pem: cmd.PemText
    tenant_id: TenantId | None = None


class OfflineIntermediateBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    parent_id: cmd.CaId
    name: cmd.Name
    subject: DistinguishedName
    algorithm: cmd.AlgorithmName = cmd.DEFAULT_CA_ALGORITHM
    tenant_id: TenantId | None = None
    key_storage: cmd.KeyStorage = "vault"


class CertificateBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    certificate_pem: cmd.PemText


class CrlBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    crl_pem: crl.CrlPem


class CrossSignBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    issuer_id: cmd.CaId
    validity_days: cmd.Days | None = None  # None: 1825 days, or what the issuer has left if that is less
    path_length: cmd.PathLength | None = None


class RolloverBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: cmd.Reason
    algorithm: cmd.AlgorithmName | None = None
    validity_days: cmd.Days | None = None
    compromised: bool = False  # a root's key was stolen: no link certificates, the old keys leave every truststore
    invalidity_date: datetime | None = None  # with compromised: since when the key was (suspected) compromised


class ReasonBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: cmd.Reason


class CaCreated(msgspec.Struct, frozen=True, kw_only=True):
    ca_id: str
    version: int
    global_position: int | None
    replayed: bool


def tenant_for(principal: Principal, requested: str | None) -> str:
    """The tenant a create acts in: as asked, or the caller's own; platform callers must say."""
    tenant_id = requested or principal.tenant_id
    if tenant_id is None:
        raise ApiProblem(400, "validation_failed", "tenant_id is required for a platform-wide caller",
                         field="tenant_id", rule="required")
    return tenant_id


def _created(result: CommandResult) -> Response[CaCreated]:
    ca_id = result.stream_id.removeprefix("ca-")
    body = CaCreated(ca_id=ca_id, version=result.version, global_position=result.global_position,
                     replayed=result.replayed)
    return Response(body, status_code=201, headers={"Location": f"/v1/cas/{ca_id}"})


async def ca_row(request: Request, principal: Principal, ca_id: str, min_position: int | None) -> dict:
    """A CA the caller may see, or 404 (another tenant's CA is indistinguishable from none), once the read model has
    reached the caller's `min_position` (the CA may be newer than the read model)."""
    await read_your_writes(request, min_position)
    row = await find_row(request, read_model.get, ca_id, visible_tenants(principal))
    if row is None:
        raise ApiProblem(404, "ca_not_found", f"CA {ca_id} does not exist", field="ca_id")
    authorize(principal, "ca:read", row["tenant_id"])
    return row


class CaController(Controller):
    path = "/cas"
    tags = ["certificate authorities"]

    @post("/", status_code=201, summary="Create a root CA or an intermediate CA", responses=COMMAND_ERRORS)
    async def create(self, request: Request, principal: Caller, data: JSONBody[CreateCaBody],
                     idempotency_key: IdempotencyKey = None) -> Response[CaCreated]:
        tenant_id = tenant_for(principal, data.tenant_id)
        common = {"tenant_id": tenant_id, "name": data.name, "subject": data.subject, "algorithm": data.algorithm,
                  "name_constraints": data.name_constraints, "key_storage": data.key_storage}
        if data.kind == "root":
            if data.parent_id is not None:
                raise ApiProblem(400, "validation_failed", "a root CA has no parent", field="parent_id",
                                 rule="forbidden")
            command = cmd.CreateRootCa(**common, validity_days=data.validity_days or 3650,
                                       path_length=data.path_length)
            return _created(await execute(request, cmd.create_root_ca, command, principal, idempotency_key))
        if data.parent_id is None:
            raise ApiProblem(400, "validation_failed", "an intermediate CA needs parent_id", field="parent_id",
                             rule="required")
        command = cmd.CreateIntermediateCa(**common, parent_id=data.parent_id, validity_days=data.validity_days,
                                           path_length=0 if data.path_length is None else data.path_length)
        return _created(await execute(request, cmd.create_intermediate_ca, command, principal, idempotency_key))

    @post("/import", status_code=201, summary="Import an offline root's certificate (its key stays offline)",
          responses=COMMAND_ERRORS)
    async def import_root(self, request: Request, principal: Caller, data: JSONBody[ImportRootBody],
                          idempotency_key: IdempotencyKey = None) -> Response[CaCreated]:
        command = cmd.ImportOfflineRoot(tenant_id=tenant_for(principal, data.tenant_id), name=data.name,
                                        certificate_pem=data.certificate_pem)
        return _created(await execute(request, cmd.import_offline_root, command, principal, idempotency_key))

    @post("/offline-intermediate", status_code=201, summary="Request an intermediate from an offline root (a CSR)",
          responses=COMMAND_ERRORS)
    async def request_intermediate(self, request: Request, principal: Caller,
                                   data: JSONBody[OfflineIntermediateBody],
                                   idempotency_key: IdempotencyKey = None) -> Response[CaCreated]:
        command = cmd.RequestOfflineIntermediate(tenant_id=tenant_for(principal, data.tenant_id),
                                                 parent_id=data.parent_id, name=data.name, subject=data.subject,
                                                 algorithm=data.algorithm, key_storage=data.key_storage)
        return _created(await execute(request, cmd.request_offline_intermediate, command, principal,
                                      idempotency_key))

    @post("/{ca_id:str}/certificate", status_code=200, summary="Install the offline-signed certificate",
          responses=COMMAND_ERRORS)
    async def install(self, request: Request, principal: Caller, ca_id: FromPath[str],
                      data: JSONBody[CertificateBody], idempotency_key: IdempotencyKey = None,
                      min_position: MinPosition = None) -> CommandResult:
        row = await ca_row(request, principal, ca_id, min_position)
        command = cmd.InstallCaCertificate(tenant_id=row["tenant_id"], ca_id=ca_id,
                                           certificate_pem=data.certificate_pem)
        return await execute(request, cmd.install_ca_certificate, command, principal, idempotency_key)

    @get("/{ca_id:str}/crl-request", summary="What the offline ceremony needs to sign this CA's next CRL",
         description="For a CA whose key is offline (an imported root): every revocation its stream records, the "
         "next CRL number and the certificate that must sign; `csm ca root sign-crl --request` reads it.",
         responses=QUERY_ERRORS)
    async def crl_request(self, request: Request, principal: Caller, ca_id: FromPath[str],
                          min_position: MinPosition = None) -> crl.CrlRequest:
        row = await ca_row(request, principal, ca_id, min_position)
        return await crl.request_crl(crl.RequestCrl(tenant_id=row["tenant_id"], ca_id=ca_id),
                                     command_context(principal), runtime_of(request.app.state).services)

    @post("/{ca_id:str}/crls", status_code=200, summary="Install the CRL this CA's offline key signed",
          description="Refused unless it verifies with the CA's key, carries a CRL number above the last, is current, "
          "and lists exactly the revocations the CA's stream records (with their reasons). From then on "
          "`GET /v1/cas/{ca_id}/crl` serves it.", responses=COMMAND_ERRORS)
    async def install_crl(self, request: Request, principal: Caller, ca_id: FromPath[str], data: JSONBody[CrlBody],
                          idempotency_key: IdempotencyKey = None, min_position: MinPosition = None) -> CommandResult:
        row = await ca_row(request, principal, ca_id, min_position)
        command = crl.InstallCrl(tenant_id=row["tenant_id"], ca_id=ca_id, crl_pem=data.crl_pem)
        return await execute(request, crl.install_crl, command, principal, idempotency_key)

    @post("/{ca_id:str}/cross-sign", status_code=200, summary="Have another CA certify this CA's key",
          responses=COMMAND_ERRORS)
    async def cross_sign(self, request: Request, principal: Caller, ca_id: FromPath[str],
                         data: JSONBody[CrossSignBody], idempotency_key: IdempotencyKey = None,
                         min_position: MinPosition = None) -> CommandResult:
        row = await ca_row(request, principal, ca_id, min_position)
        command = cmd.CrossCertify(tenant_id=row["tenant_id"], ca_id=ca_id, issuer_id=data.issuer_id,
                                   validity_days=data.validity_days, path_length=data.path_length)
        return await execute(request, cmd.cross_certify, command, principal, idempotency_key)

    @post("/{ca_id:str}/rollover", status_code=200, summary="Roll the CA over to a new key (overlapping validity)",
          description="`compromised: true` (a root only): the old key was stolen. No link certificate is signed, "
          "the old key is recorded compromised in the tenant, and from then on no chain, truststore or caIssuers "
          "answer holds a certificate of the root's keys until now; `reissue` lists the CAs and certificates still "
          "signed under them, to issue again (`GET /v1/cas/{id}/compromise` reads it back); the root's link "
          "certificates are revoked key_compromise, and a CA the old key certified issues nothing until it is rolled "
          "over. See docs/operations.md, \"A stolen root key\".",
          responses=COMMAND_ERRORS)
    async def rollover(self, request: Request, principal: Caller, ca_id: FromPath[str],
                       data: JSONBody[RolloverBody], idempotency_key: IdempotencyKey = None,
                       min_position: MinPosition = None) -> ca_rollover.RolledOver:
        row = await ca_row(request, principal, ca_id, min_position)
        command = ca_rollover.RolloverCaKey(tenant_id=row["tenant_id"], ca_id=ca_id, reason=data.reason,
                                    algorithm=data.algorithm, validity_days=data.validity_days,
                                    compromised=data.compromised, invalidity_date=data.invalidity_date)
        return await execute(request, ca_rollover.rollover_ca_key, command, principal, idempotency_key)

    @get("/{ca_id:str}/compromise", summary="What a root's compromise rollovers did, and what is left to re-issue",
         description="Each compromise rollover (when, why, the key rolled away from, the new certificate), the link "
         "certificates it revoked (key_compromise), how many of the root's certificates left every chain and "
         "truststore, and `reissue`: the CAs (roll each over) and live certificates (renew each) still chained only "
         "to a withdrawn key, counted now; null before any compromise rollover. See docs/operations.md 6.2.",
         responses=QUERY_ERRORS)
    async def compromise(self, request: Request, principal: Caller, ca_id: FromPath[str],
                         min_position: MinPosition = None) -> ca_rollover.CompromiseReport:
        row = await ca_row(request, principal, ca_id, min_position)
        return await ca_rollover.read_compromise(ca_rollover.ReadCompromise(tenant_id=row["tenant_id"], ca_id=ca_id),
                                                 command_context(principal), runtime_of(request.app.state).services)

    @post("/{ca_id:str}/disable", status_code=200, summary="Disable a CA (it signs nothing more)",
          responses=COMMAND_ERRORS)
    async def disable(self, request: Request, principal: Caller, ca_id: FromPath[str],
                      data: JSONBody[ReasonBody], min_position: MinPosition = None) -> CommandResult:
        row = await ca_row(request, principal, ca_id, min_position)
        command = cmd.DisableCa(tenant_id=row["tenant_id"], ca_id=ca_id, reason=data.reason)
        return await execute(request, cmd.disable_ca, command, principal)

    @post("/{ca_id:str}/enable", status_code=200, summary="Enable a disabled CA", responses=COMMAND_ERRORS)
    async def enable(self, request: Request, principal: Caller, ca_id: FromPath[str],
                     data: JSONBody[ReasonBody], min_position: MinPosition = None) -> CommandResult:
        row = await ca_row(request, principal, ca_id, min_position)
        command = cmd.EnableCa(tenant_id=row["tenant_id"], ca_id=ca_id, reason=data.reason)
        return await execute(request, cmd.enable_ca, command, principal)
