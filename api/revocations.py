"""Revocation commands under /v1: POST /v1/certificates/{id}/revoke and POST /v1/cas/{id}/revoke."""

from __future__ import annotations

import re
from datetime import datetime

import msgspec
from litestar import Controller, Request, post
from litestar.params import FromPath, JSONBody

from api.cas import ca_row
from api.deps import Caller, IdempotencyKey, MinPosition, execute, find_row, read_your_writes
from api.problems import COMMAND_ERRORS, ApiProblem
from commands import revoke as cmd
from commands.authz import Principal, visible_tenants
from commands.tenants import TenantId
from projections import certificate_queries as read_model

CERTIFICATE_ID = re.compile(r"[0-9a-f]{40}")


class RevokeBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``reason``: unspecified, key_compromise, ca_compromise, affiliation_changed, superseded,
    cessation_of_operation, privilege_withdrawn or aa_compromise (certificate_hold is refused:
    revocation is final). ``invalidity_date``: when the key was, or may have been, compromised.
    """

    reason: cmd.ReasonName = "unspecified"
    invalidity_date: datetime | None = None
    tenant_id: TenantId | None = None  # platform callers: the certificate's tenant (default: looked up)


class CrlOut(msgspec.Struct, frozen=True, kw_only=True):
    ca_id: str
    crl_number: int
    sha256: str
    key_id: str  # the signing CA key's identifier (hex): GET /v1/cas/{ca_id}/crl?key={key_id}


class Revoked(msgspec.Struct, frozen=True, kw_only=True):
    """The revocation as recorded (a retried or concurrent one returns the first), and the CRLs listing it."""

    id: str
    status: str
    reason: str
    revoked_at: datetime
    invalidity_date: datetime | None
    crls: list[CrlOut]
    # issuer CAs whose key is offline: their CRL lists this once a ceremony signs one (GET /v1/cas/{id}/crl-request)
    crls_awaiting_ceremony: list[str]
    # certificates revoked with it: a renewal's successor that raced the revocation, and for key_compromise the
    # tenant's other certificates of the same key
    also_revoked: list[str]
    version: int
    global_position: int | None
    replayed: bool


def _revoked(subject_id: str, outcome: cmd.Revocation) -> Revoked:
    return Revoked(id=subject_id, status="revoked", reason=outcome.reason, revoked_at=outcome.revoked_at,
                   invalidity_date=outcome.invalidity_date,
                   crls=[CrlOut(ca_id=c.ca_id, crl_number=c.crl_number, sha256=c.sha256, key_id=c.key_id)
                         for c in outcome.crls],
                   crls_awaiting_ceremony=list(outcome.awaiting_ceremony), also_revoked=list(outcome.also_revoked),
                   version=outcome.result.version, global_position=outcome.result.global_position,
                   replayed=outcome.result.replayed)


async def _certificate_tenant(request: Request, principal: Principal, certificate_id: str,
                              requested: str | None) -> str:
    """A tenant-scoped caller's own tenant (no read model needed); a platform caller's as given or looked up."""
    if principal.tenant_id is not None:
        return principal.tenant_id
    if requested is not None:
        return requested
    row = await find_row(request, read_model.get, certificate_id, visible_tenants(principal))
    if row is None:
        raise ApiProblem(404, "certificate_not_found", f"certificate {certificate_id} does not exist", field="id")
    return row["tenant_id"]


class RevocationController(Controller):
    path = "/"

    @post("/certificates/{certificate_id:str}/revoke", status_code=200, tags=["certificates"],
          summary="Revoke a certificate: on the CRL and in OCSP answers before this returns",
          responses=COMMAND_ERRORS)
    async def revoke_certificate(self, request: Request, principal: Caller, certificate_id: FromPath[str],
                                 data: JSONBody[RevokeBody], idempotency_key: IdempotencyKey = None,
                                 min_position: MinPosition = None) -> Revoked:
        await read_your_writes(request, min_position)
        certificate_id = certificate_id.lower()
        if not CERTIFICATE_ID.fullmatch(certificate_id):
            raise ApiProblem(404, "certificate_not_found", f"certificate {certificate_id} does not exist", field="id")
        tenant_id = await _certificate_tenant(request, principal, certificate_id, data.tenant_id)
        command = cmd.RevokeCertificate(tenant_id=tenant_id, certificate_id=certificate_id, reason=data.reason,
                                        invalidity_date=data.invalidity_date)
        return _revoked(certificate_id, await execute(request, cmd.revoke_certificate, command, principal,
                                                      idempotency_key))

    @post("/cas/{ca_id:str}/revoke", status_code=200, tags=["certificate authorities"],
          summary="Revoke an intermediate CA: its issuers' CRLs list it, and everything under it is untrusted",
          responses=COMMAND_ERRORS)
    async def revoke_ca(self, request: Request, principal: Caller, ca_id: FromPath[str], data: JSONBody[RevokeBody],
                        idempotency_key: IdempotencyKey = None, min_position: MinPosition = None) -> Revoked:
        row = await ca_row(request, principal, ca_id, min_position)
        command = cmd.RevokeCa(tenant_id=row["tenant_id"], ca_id=ca_id, reason=data.reason,
                               invalidity_date=data.invalidity_date)
        return _revoked(ca_id, await execute(request, cmd.revoke_ca, command, principal, idempotency_key))
