"""The /v1/cas resource: CA commands (create, import, cross-sign, rollover, disable), CA queries and chains, and
an offline key's CRL ceremony (its request, and installing what it signed)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from api.deps import (Caller, IdempotencyKey, MinPosition, TenantQuery, command_context, execute, find_row,
                      page_position, read_models_of, read_your_writes, runtime_of)
from api.problems import COMMAND_ERRORS, QUERY_ERRORS, ApiProblem, documented
from commands import ca_rollover, cas as cmd
from commands import crl
from commands.authz import Principal, authorize, authorize_search, visible_tenants
from commands.pki import der_of_pem
from commands.runtime import CommandResult
from commands.tenants import TenantId
from domain.certspec import DistinguishedName, NameConstraints
from projections import cas as read_model

PEM = "application/pem-certificate-chain"


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


class CaOut(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    ca_id: str
    name: str
    kind: str
    origin: str
    status: str
    algorithm: str
    parent_id: str | None
    subject_dn: str | None
    not_before: str | None
    not_after: str | None
    fingerprint: str | None
    path_length: int | None
    name_constraints: dict
    csr_pem: str | None
    created_at: str
    updated_at: str
    version: int
    position: int
    # "revoked" status: its own RFC 5280 reason, or "ca_revoked" for a CA below a revoked CA (``revoked_ca_id``)
    revocation_reason: str | None = None
    revoked_at: str | None = None
    revoked_ca_id: str | None = None
    key_storage: str = "vault"  # vault: its keys are in the key vault; hsm: on the PKCS#11 token, never leaving it


class CaDetailOut(CaOut, frozen=True, kw_only=True):
    """One CA, with a root's link certificates (RFC 4210 4.4), oldest rollover first: at each rollover the old key
    certified the new one (role new_with_old) and the new key the old one (old_with_new)."""

    link_certificates: list[CaCertificateOut] = []


class CaPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[CaOut]
    next_cursor: str | None


class CaCertificateOut(msgspec.Struct, frozen=True, kw_only=True):
    fingerprint: str
    role: str  # current | previous | cross | new_with_old | old_with_new (a root's link certificates)
    issuer_ca_id: str | None
    subject_dn: str
    issuer_dn: str
    not_before: str
    not_after: str
    certificate_pem: str
    distrusted_at: str | None = None  # withdrawn from trust by a compromise rollover of the root: in no chain


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


async def ca_row(request: Request, principal: Principal, ca_id: str) -> dict:
    """A CA the caller may see, or 404 (another tenant's CA is indistinguishable from none)."""
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
        await read_your_writes(request, min_position)  # the CA may be newer than the read model
        row = await ca_row(request, principal, ca_id)
        command = cmd.InstallCaCertificate(tenant_id=row["tenant_id"], ca_id=ca_id,
                                           certificate_pem=data.certificate_pem)
        return await execute(request, cmd.install_ca_certificate, command, principal, idempotency_key)

    @get("/{ca_id:str}/crl-request", summary="What the offline ceremony needs to sign this CA's next CRL",
         description="For a CA whose key is offline (an imported root): every revocation its stream records, the "
         "next CRL number and the certificate that must sign; `csm ca root sign-crl --request` reads it.",
         responses=QUERY_ERRORS)
    async def crl_request(self, request: Request, principal: Caller, ca_id: FromPath[str],
                          min_position: MinPosition = None) -> crl.CrlRequest:
        await read_your_writes(request, min_position)
        row = await ca_row(request, principal, ca_id)
        return await crl.request_crl(crl.RequestCrl(tenant_id=row["tenant_id"], ca_id=ca_id),
                                     command_context(principal), runtime_of(request.app.state).services)

    @post("/{ca_id:str}/crls", status_code=200, summary="Install the CRL this CA's offline key signed",
          description="Refused unless it verifies with the CA's key, carries a CRL number above the last, is current, "
          "and lists exactly the revocations the CA's stream records (with their reasons). From then on "
          "`GET /v1/cas/{ca_id}/crl` serves it.", responses=COMMAND_ERRORS)
    async def install_crl(self, request: Request, principal: Caller, ca_id: FromPath[str], data: JSONBody[CrlBody],
                          idempotency_key: IdempotencyKey = None, min_position: MinPosition = None) -> CommandResult:
        await read_your_writes(request, min_position)
        row = await ca_row(request, principal, ca_id)
        command = crl.InstallCrl(tenant_id=row["tenant_id"], ca_id=ca_id, crl_pem=data.crl_pem)
        return await execute(request, crl.install_crl, command, principal, idempotency_key)

    @post("/{ca_id:str}/cross-sign", status_code=200, summary="Have another CA certify this CA's key",
          responses=COMMAND_ERRORS)
    async def cross_sign(self, request: Request, principal: Caller, ca_id: FromPath[str],
                         data: JSONBody[CrossSignBody], idempotency_key: IdempotencyKey = None,
                         min_position: MinPosition = None) -> CommandResult:
        await read_your_writes(request, min_position)  # the CA may be newer than the read model
        row = await ca_row(request, principal, ca_id)
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
        await read_your_writes(request, min_position)  # the CA may be newer than the read model
        row = await ca_row(request, principal, ca_id)
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
        await read_your_writes(request, min_position)
        row = await ca_row(request, principal, ca_id)
        return await ca_rollover.read_compromise(ca_rollover.ReadCompromise(tenant_id=row["tenant_id"], ca_id=ca_id),
                                                 command_context(principal), runtime_of(request.app.state).services)

    @post("/{ca_id:str}/disable", status_code=200, summary="Disable a CA (it signs nothing more)",
          responses=COMMAND_ERRORS)
    async def disable(self, request: Request, principal: Caller, ca_id: FromPath[str],
                      data: JSONBody[ReasonBody], min_position: MinPosition = None) -> CommandResult:
        await read_your_writes(request, min_position)  # the CA may be newer than the read model
        row = await ca_row(request, principal, ca_id)
        command = cmd.DisableCa(tenant_id=row["tenant_id"], ca_id=ca_id, reason=data.reason)
        return await execute(request, cmd.disable_ca, command, principal)

    @post("/{ca_id:str}/enable", status_code=200, summary="Enable a disabled CA", responses=COMMAND_ERRORS)
    async def enable(self, request: Request, principal: Caller, ca_id: FromPath[str],
                     data: JSONBody[ReasonBody], min_position: MinPosition = None) -> CommandResult:
        await read_your_writes(request, min_position)  # the CA may be newer than the read model
        row = await ca_row(request, principal, ca_id)
        command = cmd.EnableCa(tenant_id=row["tenant_id"], ca_id=ca_id, reason=data.reason)
        return await execute(request, cmd.enable_ca, command, principal)

    @get("/", summary="List CAs (keyset pagination by CA id)", responses=QUERY_ERRORS)
    async def search(self, request: Request, principal: Caller, min_position: MinPosition = None,
                     tenant_id: TenantQuery = None,
                     status: Annotated[str | None, QueryParameter(
                         pattern="^(active|pending|disabled|revoked)$")] = None,
                     kind: Annotated[str | None, QueryParameter(pattern="^(root|intermediate)$")] = None,
                     cursor: Annotated[str | None, QueryParameter(max_length=64, description="the previous page's "
                                                                  "next_cursor")] = None,
                     after: Annotated[str | None, QueryParameter(max_length=64, description="cursor's older name")] = None,
                     limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100) -> CaPage:
        authorize_search(principal, "ca:read", tenant_id)
        await read_your_writes(request, min_position)
        rows = await read_models_of(request.app.state).query(
            read_model.search, visible_tenants(principal), tenant_id=tenant_id, status=status, kind=kind,
            after=page_position(after, cursor), limit=limit + 1)
        items = [msgspec.convert(row, CaOut) for row in rows[:limit]]
        return CaPage(items=items, next_cursor=items[-1].ca_id if len(rows) > limit else None)

    @get("/{ca_id:str}", summary="Read one CA, with a root's link certificates", responses=QUERY_ERRORS)
    async def read(self, request: Request, principal: Caller, ca_id: FromPath[str],
                   min_position: MinPosition = None) -> CaDetailOut:
        await read_your_writes(request, min_position)
        row = await ca_row(request, principal, ca_id)
        rows = await read_models_of(request.app.state).query(read_model.certificates_of, row["tenant_id"], ca_id)
        links = [msgspec.convert(r, CaCertificateOut, strict=False) for r in rows if r["role"] in read_model.LINK_ROLES]
        return msgspec.convert({**row, "link_certificates": links}, CaDetailOut)

    @get("/{ca_id:str}/certificates", summary="Every certificate of this CA's keys (current, previous, cross, "
         "a root's link certificates)",
         responses=QUERY_ERRORS)
    async def certificates(self, request: Request, principal: Caller, ca_id: FromPath[str],
                           min_position: MinPosition = None) -> list[CaCertificateOut]:
        await read_your_writes(request, min_position)
        row = await ca_row(request, principal, ca_id)
        rows = await read_models_of(request.app.state).query(read_model.certificates_of, row["tenant_id"], ca_id)
        return [msgspec.convert(r, CaCertificateOut, from_attributes=False, strict=False) for r in rows]

    @get("/{ca_id:str}/certificate", summary="A CA certificate (DER, or PEM with format=pem): the caIssuers URL of "
         "the certificates it signed; no token needed",
         description="`key`: the CA key's identifier (hex), as the caIssuers URL of the certificates it signed names "
         "it after a key rollover; without it, the certificate of the CA's oldest key that may still have valid "
         "certificates (the key whose certificates carry the plain URL): before any rollover, the current one. "
         "After a compromise rollover, the oldest key still trusted; a withdrawn `key` answers 410.",
         responses={**QUERY_ERRORS, **documented(410)}, media_type="application/pkix-cert", security=[],
         opt={"public": True})  # on the /v1 router, whose bearer guard lets it through
    async def certificate(self, request: Request, ca_id: FromPath[str],
                          format: Annotated[str, QueryParameter(pattern="^(der|pem)$")] = "der",
                          key: Annotated[str | None, QueryParameter(pattern="^[0-9a-fA-F]{2,128}$")] = None,
                          min_position: MinPosition = None) -> Response[bytes]:
        await read_your_writes(request, min_position)
        row = await find_row(request, read_model.get, ca_id, None)
        if row is None:
            raise ApiProblem(404, "ca_not_found", f"CA {ca_id} does not exist", field="ca_id")
        views = read_models_of(request.app.state)
        if key is None:  # what certificates of the CA's first key carry: that key's, while any of them may be valid
            found = await views.query(read_model.plain_issuer_certificate, row["tenant_id"], ca_id,
                                      runtime_of(request.app.state).services.clock.now())
        else:  # the key's own certificate first: cross-certificates of the same key come after it
            found = next((c for c in await views.query(read_model.certificates_of, row["tenant_id"], ca_id)
                          if (c["subject_key_id"] or "").lower() == key.lower()
                          and c["role"] not in read_model.LINK_ROLES), None)
            if found is None:
                raise ApiProblem(404, "ca_key_not_found", f"CA {ca_id} has no key {key}", field="key")
            if found["distrusted_at"] is not None:
                raise ApiProblem(410, "ca_key_withdrawn", f"CA {ca_id}'s key {key} was withdrawn from trust by a "
                                 f"compromise rollover at {found['distrusted_at']}", field="key")
        if found is None:
            raise ApiProblem(404, "ca_pending", f"CA {ca_id} has no certificate yet", field="ca_id")
        if format == "pem":
            return Response(found["certificate_pem"].encode(), media_type="application/x-pem-file")
        return Response(der_of_pem(found["certificate_pem"]), media_type="application/pkix-cert")

    @get("/{ca_id:str}/chain", summary="The CA's chain to its root, PEM, CA first", responses=QUERY_ERRORS,
         description="After a root's key rollover, the root's link certificates for the key the chain ends at come "
         "before the root certificate (and stay with `include_root=false`): a relying party that trusts only the "
         "root's other key accepts the chain through them. After a compromise rollover a chain ends before the "
         "first certificate it withdrew: a CA still certified only under the root's withdrawn key gets a chain "
         "without a root.", media_type=PEM)
    async def chain(self, request: Request, principal: Caller, ca_id: FromPath[str],
                    via: Annotated[str | None, QueryParameter(max_length=64,
                                                              description="prefer the path through this issuing CA "
                                                                          "(cross-certification)")] = None,
                    include_root: Annotated[bool, QueryParameter()] = True,
                    min_position: MinPosition = None) -> Response[bytes]:
        await read_your_writes(request, min_position)
        row = await ca_row(request, principal, ca_id)
        chain = await read_models_of(request.app.state).query(_chain_of, row, via,
                                                              runtime_of(request.app.state).services.clock.now())
        if not include_root and len(chain) > 1:
            chain = chain[:-1]
        return Response("".join(c["certificate_pem"] for c in chain).encode(), media_type=PEM)


def _chain_of(conn, row: dict, via: str | None, now: datetime) -> list[dict]:
    start = read_model.certificate_by_fingerprint(conn, row["tenant_id"], row["fingerprint"] or "")
    if start is None:
        raise ApiProblem(404, "ca_pending", f"CA {row['ca_id']} has no certificate yet", field="ca_id")
    if via:
        crossed = [c for c in read_model.certificates_of(conn, row["tenant_id"], row["ca_id"])
                   if c["role"] == "cross" and c["issuer_ca_id"] == via]
        if not crossed:
            raise ApiProblem(404, "no_such_path", f"CA {row['ca_id']} is not cross-certified by {via}", field="via")
        trusted = [c for c in crossed if c["distrusted_at"] is None]
        if not trusted:
            raise ApiProblem(404, "no_such_path", f"CA {row['ca_id']}'s cross-certificate by {via} was revoked or "
                             "withdrawn from trust (a compromised key): no chain goes through it", field="via")
        start = trusted[-1]
    return read_model.with_links(conn, row["tenant_id"], read_model.chain_from(conn, row["tenant_id"], start, via=via),
                                 now)
