"""The /v1/certificates resource: issuance, search, reading one certificate, and exports."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from api.cas import tenant_for
from api.deps import (Caller, IdempotencyKey, MinPosition, TenantQuery, command_context, decoded_cursor, execute,
                      find_row, read_models_of, read_your_writes, runtime_of)
from api.problems import COMMAND_ERRORS, QUERY_ERRORS, ApiProblem
from commands import certificates as cmd
from commands import renewal
from commands.authz import Principal, authorize, authorize_search, visible_tenants
from commands.cas import AlgorithmName, CaId
from commands.tenants import TenantId
from domain.certspec import DistinguishedName, SubjectAltNames
from domain.renewal import parse_duration
from infra.export.bundle import EXPORT_MEDIA_TYPES, preflight, render
from infra.export import connection
from projections import cas as ca_model
from projections import certificate_queries as read_model
from projections import deployments as deployments_model


class IssueBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Give ``csr`` (PEM) to keep the key yourself, or leave it out to have the key made and stored here."""

    ca_id: CaId
    profile: cmd.ProfileName = "cassandra-node"
    csr: cmd.CsrText | None = None
    subject: DistinguishedName | None = None
    sans: SubjectAltNames | None = None
    algorithm: AlgorithmName | None = None
    validity_days: Annotated[int, msgspec.Meta(ge=1, le=36500)] | None = None
    tags: Annotated[list[cmd.Tag], msgspec.Meta(max_length=32)] = []
    tenant_id: TenantId | None = None


class Issued(msgspec.Struct, frozen=True, kw_only=True):
    certificate_id: str
    serial_hex: str
    version: int
    global_position: int | None
    replayed: bool


class CertificateOut(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    certificate_id: str
    ca_id: str
    profile: str
    serial_hex: str
    fingerprint: str
    subject_dn: str
    common_name: str | None
    issuer_dn: str
    issuer_fingerprint: str
    algorithm: str
    status: str
    key_source: str
    has_key: bool
    not_before: str
    not_after: str
    sans: dict
    tags: list[str]
    certificate_pem: str
    issued_at: str
    key_exports: int
    version: int
    position: int
    revocation_reason: str | None = None  # an RFC 5280 reason, or "ca_revoked": a CA above it was revoked
    revoked_at: str | None = None
    invalidity_date: str | None = None
    revoked_ca_id: str | None = None  # the revoked CA, when revocation_reason is "ca_revoked"
    superseded_by: str | None = None  # the certificate that renewed this one
    supersedes: str | None = None  # the certificate this one renewed
    renew_at: str | None = None  # when its profile's renewal policy makes it due
    auto_renew: bool = False  # whether the renewal scheduler renews it at renew_at
    expiry_warned_days: int | None = None  # the tightest expiry warning sent (certificate.expiry_warned)
    renewal_failed_at: str | None = None
    renewal_failure: str | None = None  # the last failed renewal's reason code
    last_deployed_at: str | None = None  # the last certificate.deployed (csm cluster deploy): when
    last_deployed_node: str | None = None  # and to which node (a rollback that restored it: since then)
    last_verified_at: str | None = None  # the last certificate.deployment_verified: when
    last_verified: bool | None = None  # and whether every TLS port checked served this certificate
    last_rolled_back_at: str | None = None  # its last deployment was undone (certificate.deployment_rolled_back)


class RenewBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``reuse_key``: keep the subject's key (only if the profile's renewal policy allows it); default: the policy."""

    reuse_key: bool | None = None
    tenant_id: TenantId | None = None  # platform callers: the certificate's tenant (default: looked up)


class Renewed(msgspec.Struct, frozen=True, kw_only=True):
    certificate_id: str  # the new certificate
    renewed_from: str
    rotated: bool  # a new key; false: the same public key certified again
    version: int  # of the old certificate's stream, after certificate.renewed
    global_position: int | None
    replayed: bool


class CertificatePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[CertificateOut]
    next_cursor: str | None


class DeploymentOut(msgspec.Struct, frozen=True, kw_only=True):
    """The certificate on one node (``csm cluster deploy``): ``current`` (the node holds it, as far as the store
    knows), ``replaced`` (another deployment followed), ``rolled_back``, ``started`` (never recorded as done) or
    ``failed`` (its deployment there failed, and none was recorded as done)."""

    tenant_id: str
    certificate_id: str
    node: str
    state: str
    first_deployed_at: str | None
    last_deployed_at: str | None
    last_actor: str | None  # who deployed it last (the event's principal)
    deployments: int
    host: str | None
    port: int | None
    verified: bool | None  # its last check on this node; null: not checked since it was deployed or restored
    verified_at: str | None
    rolled_back_at: str | None
    started_at: str | None  # a deployment of it to the node started and not recorded as done
    failed_at: str | None  # the last deployment of it to the node that failed (certificate.deployment_failed)
    failed_step: str | None  # commit | record | deliver
    failed_reason: str | None  # what the step reported: never a password or key material


class DeploymentList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DeploymentOut]
    next_cursor: str | None  # pass it back as ``cursor`` for the next page (the format GET /v1/deployments uses)


Text = Annotated[str | None, QueryParameter(max_length=255)]
Timestamp = Annotated[datetime | None, QueryParameter(description="RFC 3339")]
STATUS_PATTERN = f"^({'|'.join(read_model.SEARCH_STATUSES)})$"
ExportPassword = Annotated[str | None, HeaderParameter(
    name="X-Export-Password", required=False,
    description="password of a PKCS#12 or JKS store, or to encrypt an exported PEM key (not in the URL: URLs "
                "end up in logs); at least 8 characters")]


async def certificate_row(request: Request, principal: Principal, certificate_id: str) -> dict:
    row = await find_row(request, read_model.get, certificate_id.lower(), visible_tenants(principal))
    if row is None:
        raise ApiProblem(404, "certificate_not_found", f"certificate {certificate_id} does not exist", field="id")
    authorize(principal, "cert:read", row["tenant_id"])
    return row


class CertificateController(Controller):
    path = "/certificates"
    tags = ["certificates"]

    @post("/", status_code=201, summary="Issue a certificate from a CSR, or with a server-side key",
          responses=COMMAND_ERRORS)
    async def issue(self, request: Request, principal: Caller, data: JSONBody[IssueBody],
                    idempotency_key: IdempotencyKey = None) -> Response[Issued]:
        command = cmd.IssueCertificate(
            tenant_id=tenant_for(principal, data.tenant_id), ca_id=data.ca_id, profile=data.profile, csr=data.csr,
            subject=data.subject, sans=data.sans, algorithm=data.algorithm, validity_days=data.validity_days,
            tags=data.tags)
        outcome = await execute(request, cmd.issue_certificate, command, principal, idempotency_key)
        body = Issued(certificate_id=outcome.certificate_id, serial_hex=outcome.certificate_id,
                      version=outcome.result.version, global_position=outcome.result.global_position,
                      replayed=outcome.result.replayed)
        return Response(body, status_code=201, headers={"Location": f"/v1/certificates/{outcome.certificate_id}"})

    @get("/", summary="Search certificates (cursor pagination)", responses=QUERY_ERRORS)
    async def search(self, request: Request, principal: Caller, min_position: MinPosition = None,
                     tenant_id: TenantQuery = None, ca_id: Text = None, common_name: Text = None, san: Text = None,
                     serial: Annotated[str | None, QueryParameter(pattern=r"^(0x)?[0-9a-fA-F:]{1,64}$")] = None,
                     fingerprint: Annotated[str | None, QueryParameter(pattern=r"^[0-9a-fA-F:]{64,95}$")] = None,
                     issuer: Text = None,
                     status: Annotated[str | None, QueryParameter(pattern=STATUS_PATTERN)] = None,
                     algorithm: Text = None, profile: Text = None, tag: Text = None,
                     expires_after: Timestamp = None, expires_before: Timestamp = None,
                     expiring_within: Annotated[str | None, QueryParameter(
                         pattern=r"^[1-9][0-9]{0,5}[dh]$",
                         description="not yet expired, and expiring within this many days (30d) or hours (12h). "
                         "Without `status`, only live certificates (issued, not revoked nor under a revoked CA, not "
                         "superseded by a renewal): what still needs action, as the csm_certificates_expiring gauge "
                         "counts them. With `status` (e.g. `status=revoked`), that filter instead, as given.")]
                     = None,
                     sort: Annotated[str, QueryParameter(pattern="^(issued|expiry)$")] = "issued",
                     cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
                     limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100) -> CertificatePage:
        authorize_search(principal, "cert:read", tenant_id)
        await read_your_writes(request, min_position)
        after = decoded_cursor(read_model.decode_cursor, cursor)
        moment = runtime_of(request.app.state).services.clock.now()
        if expiring_within is not None:
            try:
                window = parse_duration(expiring_within)
            except ValueError as exc:
                raise ApiProblem(400, "validation_failed", str(exc), field="expiring_within", rule="range") from None
            expires_after = max(_aware(expires_after), moment) if expires_after else moment
            expires_before = min(_aware(expires_before), moment + window) if expires_before else moment + window
        models = read_models_of(request.app.state)
        # an exact name, serial or fingerprint is a few index lookups: on the event loop (a thread hop costs more);
        # anything that may scan goes to a thread, so that it cannot hold up the other requests
        selective = read_model.is_selective(common_name=common_name, serial=serial, fingerprint=fingerprint)
        rows = await (models.inline if selective else models.query)(
            read_model.search, visible_tenants(principal), tenant_id=tenant_id, ca_id=ca_id, common_name=common_name,
            san=san, serial=serial.removeprefix("0x").replace(":", "") if serial else None, fingerprint=fingerprint,
            issuer=issuer, status=status, algorithm=algorithm, profile=profile, tag=tag,
            expires_after=expires_after and _aware(expires_after),
            expires_before=expires_before and _aware(expires_before), now=moment,
            live_only=expiring_within is not None and status is None, sort=sort, cursor=after,
            limit=limit + 1)
        items = [msgspec.convert(row, CertificateOut) for row in rows[:limit]]
        more = len(rows) > limit
        return CertificatePage(items=items, next_cursor=read_model.encode_cursor(rows[limit - 1], sort) if more
                               else None)

    @post("/{certificate_id:str}/renew", status_code=201, summary="Renew a certificate now: same CA and profile, "
          "a new key unless the profile allows (and the body asks for) the same one", responses=COMMAND_ERRORS)
    async def renew(self, request: Request, principal: Caller, certificate_id: FromPath[str],
                    data: JSONBody[RenewBody], idempotency_key: IdempotencyKey = None,
                    min_position: MinPosition = None) -> Response[Renewed]:
        await read_your_writes(request, min_position)
        certificate_id = certificate_id.lower()
        tenant_id = principal.tenant_id or data.tenant_id
        if tenant_id is None:
            tenant_id = (await certificate_row(request, principal, certificate_id))["tenant_id"]
        try:
            command = msgspec.convert({"tenant_id": tenant_id, "certificate_id": certificate_id,
                                       "reuse_key": data.reuse_key}, renewal.RenewCertificate)
        except msgspec.ValidationError:
            raise ApiProblem(404, "certificate_not_found", f"certificate {certificate_id} does not exist",
                             field="id") from None
        outcome = await execute(request, renewal.renew_certificate, command, principal, idempotency_key)
        body = Renewed(certificate_id=outcome.new_certificate_id, renewed_from=certificate_id,
                       rotated=outcome.rotated, version=outcome.result.version,
                       global_position=outcome.result.global_position, replayed=outcome.result.replayed)
        return Response(body, status_code=201, headers={"Location": f"/v1/certificates/{outcome.new_certificate_id}"})

    @get("/{certificate_id:str}", summary="Read one certificate", responses=QUERY_ERRORS)
    async def read(self, request: Request, principal: Caller, certificate_id: FromPath[str],
                   min_position: MinPosition = None) -> CertificateOut:
        await read_your_writes(request, min_position)
        return msgspec.convert(await certificate_row(request, principal, certificate_id), CertificateOut)

    @get("/{certificate_id:str}/deployments", summary="The nodes this certificate was deployed to, and its state on "
         "each (cursor pagination)", description="One item per node (`csm cluster deploy`), by tenant and node: "
         "whether the node holds it now (`current`), when and by whom it was deployed there, its last verification "
         "there, a rollback. Pages as GET /v1/deployments does: `limit` (default 100), then the answer's "
         "`next_cursor` as `cursor`. Needs cert:read.", responses=QUERY_ERRORS)
    async def deployments(self, request: Request, principal: Caller, certificate_id: FromPath[str],
                          min_position: MinPosition = None,
                          cursor: Annotated[str | None, QueryParameter(max_length=600, description="the previous "
                                                                       "page's next_cursor")] = None,
                          limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100) -> DeploymentList:
        await read_your_writes(request, min_position)
        row = await certificate_row(request, principal, certificate_id)
        after = decoded_cursor(deployments_model.decode_cursor, cursor)
        rows = await read_models_of(request.app.state).query(deployments_model.of_certificate, row["certificate_id"],
                                                            row["tenant_id"], after=after, limit=limit + 1)
        return DeploymentList(items=[msgspec.convert(r, DeploymentOut) for r in rows[:limit]],
                              next_cursor=deployments_model.encode_cursor(rows[limit - 1]) if len(rows) > limit
                              else None)

    @get("/{certificate_id:str}/export", summary="Export as PEM, DER, PKCS#12 or JKS (keystore or truststore), or a "
         "secure connection bundle (zip)", responses={**QUERY_ERRORS, **COMMAND_ERRORS},
         media_type="application/octet-stream")
    async def export(self, request: Request, principal: Caller, certificate_id: FromPath[str],
                     format: Annotated[str, QueryParameter(
                         pattern="^(pem|der|pkcs12|jks|pkcs12-truststore|jks-truststore|bundle)$",
                         description="bundle: a zip with the certificate, chain, truststores, the key and keystores "
                                     "when the key is held here (audited; needs key:export), and cqlsh, Java and "
                                     "Python driver configurations")] = "pem",
                     include_key: Annotated[bool, QueryParameter(
                         description="pem: add the private key (audited; needs key:export), encrypted when "
                                     "X-Export-Password is given. pkcs12 and jks keystores always hold the key; "
                                     "der and truststores never do (422)")] = False,
                     include_chain: Annotated[bool, QueryParameter()] = True, password: ExportPassword = None,
                     contact_points: Annotated[str | None, QueryParameter(
                         max_length=2000, description="bundle: the cluster's contact points for the driver "
                                                      "configurations, comma-separated host[:port] (port 9042 when "
                                                      "none is given)")] = None,
                     min_position: MinPosition = None) -> Response[bytes]:
        await read_your_writes(request, min_position)
        row = await certificate_row(request, principal, certificate_id)
        preflight(format, password, include_key, password_field="X-Export-Password", key_algorithm=row["algorithm"])
        points = connection.contact_points(contact_points) if format == "bundle" else []
        views = read_models_of(request.app.state)
        now = runtime_of(request.app.state).services.clock.now()
        trust = []
        if format.endswith("truststore") or format == "bundle":
            trust = await views.query(ca_model.truststore_chain, row["tenant_id"], row["issuer_fingerprint"], now)
        if format.endswith("truststore"):
            chain = trust
        else:
            chain = await views.query(ca_model.issuer_chain, row["tenant_id"], row["issuer_fingerprint"],
                                      now) if include_chain or format == "bundle" else []
        wants_key = format in ("pkcs12", "jks") or (format == "pem" and include_key) or (format == "bundle"
                                                                                        and row["has_key"])
        material = None
        if wants_key:
            exported = await cmd.export_private_key(
                cmd.ExportPrivateKey(tenant_id=row["tenant_id"], certificate_id=row["certificate_id"],
                                     format=format, encrypted=bool(password)),
                command_context(principal), runtime_of(request.app.state).services)
            material = exported.material
        if format == "bundle":
            body = await asyncio.to_thread(connection.bundle, row, chain, trust, material, password, points, now)
        else:
            body = await asyncio.to_thread(render, format, row, chain, material, password)
        extension, media_type = EXPORT_MEDIA_TYPES[format]
        filename = f"{row['common_name'] or row['certificate_id']}.{extension}".replace('"', "")
        return Response(body, media_type=media_type,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                 "Cache-Control": "no-store"})


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
