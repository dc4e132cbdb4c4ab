"""The ACME server's plumbing: URLs, nonces on every answer, RFC 8555 problem documents, the JWS check, JSON views.

Every answer carries a fresh ``Replay-Nonce`` and a ``Link: rel="index"`` to the directory; errors are problem
documents of type ``urn:ietf:params:acme:error:*`` that still name the field and the rule at fault. Litestar calls
exception handlers synchronously, so a refusal's nonce is issued by ``RefusalNonces`` (ASGI, around the app) off the
event loop as its answer starts: a slow nonce store (Redis) holds up that answer, never the process's other requests.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from litestar.openapi.datastructures import ResponseSpec
from litestar.serialization import encode_json

from api.deps import command_context, runtime_of
from api.problems import PROBLEM_MEDIA_TYPE, documented, handle_unexpected
from commands import acme as cmd
from commands.authz import Principal
from commands.runtime import CommandContext
from domain import acme_account, acme_authz, acme_challenges, acme_order, jose, tenant
from domain.acme_problems import AcmeProblem
from domain.errors import DomainError
from infra import telemetry
from infra.acme.nonces import NoncesUnavailable

ACME_ERROR = "urn:ietf:params:acme:error:"
ACME_ERRORS = documented(400, 403, 404, 405, 413, 415, 429, 503)
CREATED = {201: ResponseSpec(dict, description="Created: the new resource, its URL in Location",
                             media_type="application/json", generate_examples=False)}
log = logging.getLogger(__name__)
JOSE_JSON = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"
# A DomainError from the ordinary commands (issuance's policy, quotas, suspension) as an ACME error type.
_TYPES = {400: "malformed", 401: "unauthorized", 403: "unauthorized", 404: "malformed", 409: "malformed",
          422: "rejectedIdentifier", 429: "rateLimited", 503: "serverInternal"}


def base_url(request: Request) -> str:
    return runtime_of(request.app.state).settings.acme_base_url or str(request.base_url).rstrip("/")


def url_of(request: Request, tenant_id: str, *parts: str) -> str:
    return "/".join((base_url(request), "acme", tenant_id, *parts))


async def nonce_headers(request: Request, tenant_id: str | None) -> dict[str, str]:
    return await asyncio.to_thread(headers_now, request, tenant_id)


def headers_now(request: Request, tenant_id: str | None, *, nonce: bool = True) -> dict[str, str]:
    """The headers of every answer: a fresh nonce (one insert, or one Redis SET: called in a thread) unless not
    ``nonce``, and the directory's Link."""
    headers = {"Cache-Control": "no-store"}
    if nonce:
        try:
            headers["Replay-Nonce"] = runtime_of(request.app.state).nonces.issue()
        except NoncesUnavailable as exc:
            raise _unavailable(exc) from exc
    if tenant_id and tenant.TENANT_ID_RE.fullmatch(tenant_id):  # never echo a path that is no tenant id into a header
        headers["Link"] = f'<{url_of(request, tenant_id, "directory")}>;rel="index"'
    return headers


NONCE_WANTED = "csm.acme_refusal_nonce"  # set in the ASGI scope by acme_error: RefusalNonces adds the nonce


class RefusalNonces:
    """ASGI middleware: the ``Replay-Nonce`` of an ACME refusal, issued in a thread as the answer starts.

    ``acme_error`` runs synchronously on the event loop (Litestar calls exception handlers so), where a store that
    answers slowly (Redis: up to its 2 s socket timeout) would hold up every request of the process. It marks the
    scope instead; a nonce that cannot be had leaves the refusal without one (logged), as RFC 8555 6.5 allows.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/acme/"):
            await self.app(scope, receive, send)
            return

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start" and scope.pop(NONCE_WANTED, None) is not None:
                try:
                    nonce = await asyncio.to_thread(runtime_of(scope["app"].state).nonces.issue)
                except NoncesUnavailable as exc:
                    log.warning("ACME refusal sent without a Replay-Nonce: %s", exc)
                else:
                    message = {**message, "headers": [*message.get("headers", ()),
                                                      (b"replay-nonce", nonce.encode())]}
            await send(message)

        await self.app(scope, receive, sending)


class NoncesDown(AcmeProblem):
    """No nonce can be issued or checked (the nonce store does not answer): 503, answered without a nonce."""


def _unavailable(exc: NoncesUnavailable) -> NoncesDown:
    log.error("ACME nonces unavailable: %s", exc)
    return NoncesDown("serverInternal", "nonces cannot be issued or checked now (the nonce store does not answer); "
                      "retry later", field="Replay-Nonce", status=503)


async def reply(request: Request, tenant_id: str, body: Any, status: int = 200, *, location: str | None = None,
                 links: tuple[str, ...] = ()) -> Response:
    headers = await nonce_headers(request, tenant_id)
    if location:
        headers["Location"] = location
    if links:
        headers["Link"] = ", ".join((headers["Link"], *links))
    return Response(content=encode_json(body), status_code=status, media_type="application/json", headers=headers)


def _kind(exc: DomainError) -> tuple[str, int]:
    """The ACME error type and status of a refusal; the ordinary commands' refusals (policy, quotas, suspension)
    are translated (422 is not an ACME status: a policy refusal is the CSR's or the names')."""
    kind = getattr(exc, "acme_type", None)
    if kind is not None:
        return kind, exc.status
    if exc.code == "tenant_suspended":
        return "unauthorized", 403
    if exc.status == 422:
        return ("badCSR" if (exc.field or "").startswith("csr") else "rejectedIdentifier"), 400
    return _TYPES.get(exc.status, "malformed"), exc.status


def acme_error(request: Request, exc: Exception) -> Response:
    """Every refusal of an ACME route, as an RFC 8555 problem document with a fresh nonce."""
    if not isinstance(exc, DomainError):
        from litestar.exceptions import HTTPException  # a route the router has not (404, 405)

        if isinstance(exc, HTTPException) and exc.status_code < 500:
            exc = AcmeProblem("malformed", str(exc.detail), field="path", status=exc.status_code)
        else:
            return handle_unexpected(request, exc)
    kind, status = _kind(exc)
    tenant_id = request.path_params.get("tenant_id") if request.scope.get("path_params") else None
    field = exc.field or "request"
    body = {"type": ACME_ERROR + kind, "title": exc.code, "status": status,
            "detail": f"{exc.detail} (field {field}, rule {exc.code})", "instance": request.url.path,
            "request_id": telemetry.request_id_var.get(), "field": field,
            "errors": [{"field": field, "rule": exc.code, "message": exc.detail}]}
    headers = headers_now(request, tenant_id, nonce=False)
    if not isinstance(exc, NoncesDown):  # after NoncesDown, the store is not asked again
        request.scope[NONCE_WANTED] = True  # type: ignore[literal-required]
    if isinstance(exc, acme_account.KeyInUse) and tenant_id:  # RFC 8555 7.3.5: the account that has the key
        headers["Location"] = url_of(request, tenant_id, "acct", exc.account_id)
    return Response(content=encode_json(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


@dataclass(frozen=True)
class Signed:
    jws: jose.Jws
    account_id: str | None  # the kid's account; None for a jwk-signed request
    principal: Principal

    @property
    def context(self) -> CommandContext:
        return command_context(self.principal)


async def verified(request: Request, tenant_id: str, *, by: str = "kid") -> Signed:
    """Check the request's JWS: media type, url, nonce (consumed once, by any process), key, signature.

    ``by``: "kid" (an account), "jwk" (newAccount) or "either" (revokeCert).
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != JOSE_JSON:
        raise AcmeProblem("malformed", f"Content-Type must be {JOSE_JSON}", field="Content-Type", status=415)
    jws = jose.parse_jws(await request.body())
    expected = base_url(request) + request.url.path
    if jws.url != expected:
        raise AcmeProblem("unauthorized", f"the JWS url {jws.url!r} is not this request's URL {expected!r}",
                          field="protected.url", status=403)
    runtime = runtime_of(request.app.state)
    try:
        accepted = await asyncio.to_thread(runtime.nonces.consume, jws.nonce or "")
    except NoncesUnavailable as exc:
        raise _unavailable(exc) from exc
    if not accepted:
        raise AcmeProblem("badNonce", "the nonce is unknown, expired or used: take the fresh one from this "
                          "answer's Replay-Nonce", field="protected.nonce")
    if jws.jwk is not None:
        if by == "kid":
            raise AcmeProblem("malformed", "sign with your account's kid, not a jwk", field="protected.jwk")
        jose.verify(jws, jose.public_key(jws.jwk))
        principal = cmd.account_principal(tenant_id, jose.thumbprint(jws.jwk))
        return Signed(jws=jws, account_id=None, principal=principal)
    if by == "jwk":
        raise AcmeProblem("malformed", "newAccount is signed with a jwk, not a kid", field="protected.kid")
    prefix = url_of(request, tenant_id, "acct") + "/"
    account_id = jws.kid.removeprefix(prefix) if jws.kid.startswith(prefix) else ""
    if not account_id or "/" in account_id:
        raise AcmeProblem("accountDoesNotExist", f"kid must be an account URL of this directory ({prefix}…)",
                          field="protected.kid")
    account = await cmd.load_account(runtime.services, tenant_id, account_id)
    jose.verify(jws, jose.public_key(account.jwk))
    return Signed(jws=jws, account_id=account_id, principal=cmd.account_principal(tenant_id, account_id))


def payload_of(signed: Signed) -> dict[str, Any]:
    if signed.jws.post_as_get:
        raise AcmeProblem("malformed", "this request needs a JSON payload", field="payload")
    return signed.jws.payload_json()


def account_json(request: Request, tenant_id: str, account: acme_account.Account) -> dict[str, Any]:
    created = account.created
    return {"status": account.status, "contact": created.contact, "key": account.jwk,
            "orders": url_of(request, tenant_id, "acct", created.account_id, "orders"),
            "externalAccountBinding": {"kid": created.eab_key_id}}


def challenge_json(request: Request, tenant_id: str, authz: acme_authz.Authorization,
                   challenge: acme_authz.Challenge) -> dict[str, Any]:
    body: dict[str, Any] = {"type": challenge.challenge_type, "status": authz.status_of(challenge.challenge_id),
                            "token": challenge.token,
                            "url": url_of(request, tenant_id, "chall", authz.created.authz_id, challenge.challenge_id)}
    if authz.error is not None and challenge.challenge_id == authz.started:
        body["error"] = {"type": ACME_ERROR + authz.error.error_type, "detail": authz.error.detail, "status": 403}
    return body


def authz_json(request: Request, tenant_id: str, authz: acme_authz.Authorization, now) -> dict[str, Any]:
    c = authz.created
    body = {"status": acme_authz.authz_status(authz, now), "expires": c.expires,
            "identifier": ({"type": "ip", "value": c.identifier} if c.identifier_type == "ip"
                           else {"type": "dns", "value": acme_challenges.base_name(c.identifier)}),
            "challenges": [challenge_json(request, tenant_id, authz, one) for one in c.challenges]}
    if acme_challenges.is_wildcard(c.identifier):
        body["wildcard"] = True  # RFC 8555 7.1.4: the identifier is the name below the "*."
    return body


async def order_json(request: Request, tenant_id: str, order: acme_order.Order) -> dict[str, Any]:
    services = runtime_of(request.app.state).services
    c = order.created
    authzs = await cmd.order_authorizations(services, tenant_id, order)
    body: dict[str, Any] = {
        "status": acme_order.order_status(order, authzs, services.clock.now()), "expires": c.expires,
        "identifiers": [*({"type": "dns", "value": name} for name in c.identifiers),
                        *({"type": "ip", "value": address} for address in c.ip_identifiers)],
        "authorizations": [url_of(request, tenant_id, "authz", a) for a in c.authorization_ids],
        "finalize": url_of(request, tenant_id, "order", c.order_id, "finalize")}
    if c.not_after is not None:
        body["notAfter"] = c.not_after
    if order.certificate_id is not None:
        body["certificate"] = url_of(request, tenant_id, "cert", c.order_id)
    return body
