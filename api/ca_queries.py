"""The /v1/cas queries: list CAs, read one with a root's link certificates, every certificate of its keys, a CA
certificate by key (public: the caIssuers URL), and its chain to the root."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import FromPath, QueryParameter

from api.cas import ca_row
from api.deps import (Caller, MinPosition, TenantQuery, find_row, page_position, read_models_of, read_your_writes,
                      runtime_of)
from api.problems import QUERY_ERRORS, ApiProblem, documented
from commands.authz import authorize_search, visible_tenants
from commands.pki import der_of_pem
from projections import cas as read_model

PEM = "application/pem-certificate-chain"


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


class CaQueryController(Controller):
    path = "/cas"
    tags = ["certificate authorities"]

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
        row = await ca_row(request, principal, ca_id, min_position)
        rows = await read_models_of(request.app.state).query(read_model.certificates_of, row["tenant_id"], ca_id)
        links = [msgspec.convert(r, CaCertificateOut, strict=False) for r in rows if r["role"] in read_model.LINK_ROLES]
        return msgspec.convert({**row, "link_certificates": links}, CaDetailOut)

    @get("/{ca_id:str}/certificates", summary="Every certificate of this CA's keys (current, previous, cross, "
         "a root's link certificates)",
         responses=QUERY_ERRORS)
    async def certificates(self, request: Request, principal: Caller, ca_id: FromPath[str],
                           min_position: MinPosition = None) -> list[CaCertificateOut]:
        row = await ca_row(request, principal, ca_id, min_position)
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
        row = await ca_row(request, principal, ca_id, min_position)
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
