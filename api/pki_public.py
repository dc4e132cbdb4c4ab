"""What relying parties fetch without a token: CRLs (GET /v1/cas/{id}/crl) and the OCSP responder (/ocsp/{ca_id}).

These handlers sit on their own Router, outside the bearer-protected /v1 one, so no
``principal`` dependency ever runs for them; the paths are the ones written into every
certificate's CRL distribution point and authority information access extensions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated
from urllib.parse import unquote

from litestar import Controller, Request, Response, Router, get, post
from litestar.params import FromPath, QueryParameter

from api.deps import find_row, read_models_of, runtime_of
from api.problems import QUERY_ERRORS, ApiProblem
from commands import crl, ocsp
from commands.pki import der_of_pem, pem
from projections import cas as ca_model

CA_ID = re.compile(r"[0-9a-z-]{1,64}")
OCSP_RESPONSE = "application/ocsp-response"
MAX_OCSP_REQUEST = 8192  # a single-certificate request is a few hundred bytes


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


async def _tenant_of(request: Request, ca_id: str) -> str | None:
    """The tenant owning ``ca_id``; a CA's tenant never changes, so the read model is safe to ask."""
    if not CA_ID.fullmatch(ca_id):
        return None
    row = await find_row(request, ca_model.get, ca_id, None)
    return row["tenant_id"] if row else None


class CrlController(Controller):
    path = "/v1/cas"
    tags = ["relying parties"]

    @get("/{ca_id:str}/crl", summary="A CA key's current CRL (DER, or PEM with format=pem); no token needed",
         description="`key`: the CA key's identifier (hex), as the CRL distribution point of the certificates it "
         "signed names it; without it, the CRL of the CA's oldest key that still publishes (its first key's, "
         "until that key's certificates have expired), which certificates with the plain URL need.",
         responses=QUERY_ERRORS, media_type="application/pkix-crl", security=[])
    async def crl(self, request: Request, ca_id: FromPath[str],
                  format: Annotated[str, QueryParameter(pattern="^(der|pem)$")] = "der",
                  key: Annotated[str | None, QueryParameter(pattern="^[0-9a-fA-F]{2,128}$")] = None,
                  ) -> Response[bytes]:
        tenant_id = await _tenant_of(request, ca_id)
        if tenant_id is None:
            raise ApiProblem(404, "ca_not_found", f"CA {ca_id} does not exist", field="ca_id")
        published, der = await crl.current_crl(runtime_of(request.app.state).services, tenant_id, ca_id, key)
        headers = {"ETag": f'"{published.sha256}"', "Last-Modified": _http_date(published.this_update),
                   "Expires": _http_date(published.next_update)}
        if format == "pem":
            return Response(pem("X509 CRL", der).encode(), media_type="application/x-pem-file", headers=headers)
        return Response(der, media_type="application/pkix-crl", headers=headers)


class OcspController(Controller):
    path = "/ocsp"
    tags = ["relying parties"]

    @post("/{ca_id:str}", status_code=200, summary="OCSP (RFC 6960): a DER OCSPRequest, application/ocsp-request",
          media_type=OCSP_RESPONSE, security=[])
    async def post(self, request: Request, ca_id: FromPath[str]) -> Response[bytes]:
        body = await request.body()
        return await _answer(request, ca_id, body[:MAX_OCSP_REQUEST + 1], cache_headers=False)

    @get("/{ca_id:str}/{encoded:path}", summary="OCSP (RFC 6960 A.1 GET, RFC 5019 caching): base64 OCSPRequest",
         media_type=OCSP_RESPONSE, security=[])
    async def get(self, request: Request, ca_id: FromPath[str], encoded: FromPath[str]) -> Response[bytes]:
        return await _answer(request, ca_id, _decode(_encoded_request(request, ca_id, encoded)), cache_headers=True)


def _encoded_request(request: Request, ca_id: str, routed: str) -> str:
    """The base64 OCSPRequest as the client sent it, URL-decoded: taken from the raw path, not the router's.

    Base64 has '/' in its alphabet, so an encoded request may hold '//' or end in '/'. The router's path
    parameter has both normalised away ('AB//CD/' arrives as '/AB/CD'), which corrupted about one request
    in forty; the raw path keeps every byte.
    """
    raw = request.scope.get("raw_path")
    marker = f"/ocsp/{ca_id}/"
    if raw:
        text = raw.decode("latin-1")
        at = text.find(marker)
        if at >= 0:
            return unquote(text[at + len(marker):])
    return routed.removeprefix("/")  # no raw path (not every ASGI server gives one): the router's


def _decode(encoded: str) -> bytes:
    """The base64 of an OCSPRequest ('/' may appear in it anywhere). Undecodable: empty, i.e. malformed."""
    padded = (encoded + "=" * (-len(encoded) % 4)).encode("ascii", "replace")
    for altchars in (None, b"-_"):  # standard base64 (RFC 6960 A.1), or its URL-safe variant
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    return b""


async def _answer(request: Request, ca_id: str, data: bytes, *, cache_headers: bool) -> Response[bytes]:
    services = runtime_of(request.app.state).services
    tenant_id = await _tenant_of(request, ca_id)
    if len(data) > MAX_OCSP_REQUEST:
        data = b""  # answered as malformed, not parsed
    reply = await ocsp.respond(services, tenant_id, ca_id, data, subordinates=_subordinates(request))
    headers = {"Cache-Control": "no-store"}
    if cache_headers and reply.cacheable and reply.this_update and reply.next_update:
        now = services.clock.now()
        max_age = max(0, min(ocsp.CACHE_SECONDS, int((reply.next_update - now).total_seconds())))
        headers = {"Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
                   "Last-Modified": _http_date(reply.this_update), "Expires": _http_date(reply.next_update),
                   "ETag": f'"{hashlib.sha256(reply.body).hexdigest()}"'}
    return Response(reply.body, media_type=OCSP_RESPONSE, headers=headers)


def _subordinates(request: Request) -> ocsp.Subordinates:
    """Serials of the sub-CA certificates a CA signed (read model: only the good/unknown answer depends on it)."""
    async def lookup(tenant_id: str, ca_id: str) -> frozenset[str]:
        rows = await read_models_of(request.app.state).query(ca_model.certificates_issued_by, tenant_id, ca_id)
        crypto = runtime_of(request.app.state).services.crypto
        return frozenset(crypto.describe(der_of_pem(row["certificate_pem"])).serial_hex for row in rows)
    return lookup


public_pki = Router("/", route_handlers=[CrlController, OcspController])
