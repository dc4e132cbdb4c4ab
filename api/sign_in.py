"""Sign-in routes: POST /v1/auth/token and POST /v1/auth/revoke (sign-out), GET /.well-known/jwks.json (all public),
TOTP enrollment and signing out everywhere (the caller's own account)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import JSONBody

from api.auth import account_disabled, api_key_record
from api.deps import Caller, command_context, runtime_of
from api.identity import identity_of
from api.bodies import decode as decode_json
from api.problems import COMMAND_ERRORS, ApiProblem, documented
from commands import mfa, session_end, sessions
from commands.runtime import CommandResult
from commands.tokens import parse_token
from domain.errors import DomainError
from infra import telemetry

GRANT_TYPES = telemetry.LOGIN_GRANTS
T = TypeVar("T")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenRequest(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 6749 token request, as a form (application/x-www-form-urlencoded) or as JSON."""

    grant_type: str
    username: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    password: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    totp: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    tenant_id: Annotated[str, msgspec.Meta(max_length=63)] | None = None
    refresh_token: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    client_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    client_secret: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    scope: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class Jwk(msgspec.Struct, frozen=True, omit_defaults=True):
    """A public key that verifies access tokens (RFC 7517; RSA: n and e, EC: crv, x and y)."""

    kty: str
    kid: str
    alg: str
    use: str
    key_ops: list[str]
    n: str | None = None
    e: str | None = None
    crv: str | None = None
    x: str | None = None
    y: str | None = None


class Jwks(msgspec.Struct, frozen=True):
    keys: list[Jwk]


def _bad(detail: str, field: str, code: str = "invalid_request") -> ApiProblem:
    return ApiProblem(400, code, detail, field=field)


class RevocationRequest(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 7009 revocation request: the token to end (a refresh token or an access token), as a form or JSON."""

    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    token_type_hint: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # a hint only (RFC 7009 2.1)


async def _token_request(request: Request) -> TokenRequest:
    return await _form(request, TokenRequest, "token request")


async def _form(request: Request, kind: type[T], what: str) -> T:
    """The body as ``kind``, from a form (application/x-www-form-urlencoded, as OAuth clients send) or JSON."""
    body = await request.body()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if media == "application/json":
            raw: Any = decode_json(body)
        elif media in ("application/x-www-form-urlencoded", ""):
            raw = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                                 max_num_fields=20))
        else:
            raise ApiProblem(415, "unsupported_media_type", f"send the {what} as a form or as JSON",
                             field="content-type", rule="media_type")
        return msgspec.convert(raw, kind)
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, msgspec.ValidationError):
            raise _bad(f"the {what} is invalid: {exc}", _field_of(str(exc))) from None
        raise _bad(f"the {what} is not a valid form or JSON object", "body") from None


def _field_of(message: str) -> str:
    """The member a msgspec validation message names (``… - at `$.token``, ``missing required field `token```)."""
    if "`$." in message:
        return message.rsplit("`$.", 1)[-1].rstrip("`")
    if "missing required field `" in message:
        return message.split("missing required field `", 1)[1].split("`", 1)[0]
    return "body"


def _basic_secret(request: Request) -> str | None:
    """The client secret of ``Authorization: Basic`` (RFC 6749 section 2.3.1), if any."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2] or None
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _required(value: str | None, field: str) -> str:
    if not value:
        raise _bad(f"{field} is required for this grant type", field)
    return value


class TokenController(Controller):
    """Outside the bearer-protected router: this is where a caller gets its bearer token."""

    path = "/v1/auth/token"
    tags = ["auth"]

    @post("/", status_code=200, summary="Issue an access token (grant types: password, refresh_token, "
          "client_credentials)", responses=documented(400, 401, 415, 429, 503))
    async def token(self, request: Request) -> Response[sessions.TokenResponse]:
        form = await _token_request(request)
        try:
            issued = await self._issue(request, form)
        except (DomainError, ApiProblem) as refused:  # csm_logins_total: the alerts on failure spikes and lockouts
            telemetry.record_login(form.grant_type, refused.code)
            raise
        telemetry.record_login(form.grant_type, "ok")
        return Response(issued, status_code=200, headers=_NO_STORE)

    async def _issue(self, request: Request, form: TokenRequest) -> sessions.TokenResponse:
        runtime = runtime_of(request.app.state)
        identity, services = identity_of(request), runtime.services
        correlation = telemetry.request_id_var.get()
        if form.grant_type == "password":
            grant = sessions.PasswordGrant(username=_required(form.username, "username"),
                                           password=_required(form.password, "password"), totp=form.totp or None,
                                           tenant_id=form.tenant_id or None)
            issued = await sessions.password_login(grant, services, identity, correlation)
        elif form.grant_type == "refresh_token":
            issued = await sessions.refresh(_required(form.refresh_token, "refresh_token"), services, identity,
                                            correlation)
        elif form.grant_type == "client_credentials":
            issued = await self._client_credentials(request, form, correlation)
        else:
            raise _bad(f"grant_type must be one of {', '.join(GRANT_TYPES)}", "grant_type", "unsupported_grant_type")
        return issued

    @staticmethod
    async def _client_credentials(request: Request, form: TokenRequest, correlation: str | None):
        secret = form.client_secret or _basic_secret(request)
        parsed = parse_token(_required(secret, "client_secret"))
        record = await asyncio.to_thread(api_key_record, request, parsed) if parsed else None
        runtime = runtime_of(request.app.state)
        if record is None or await account_disabled(runtime.services, record):
            await sessions.client_credentials_failed(runtime.services, identity_of(request),
                                                     parsed[0] if parsed else None, correlation)
            raise ApiProblem(401, "invalid_client", "the client credentials are invalid, expired or revoked",
                             field="client_secret")
        key = sessions.KeyFacts(token_id=record["token_id"], tenant_id=record["tenant_id"], roles=record["roles"],
                                service_account=record.get("service_account"))
        return await sessions.client_credentials(key, runtime.services, identity_of(request), correlation)


class TokenRevocationController(Controller):
    """Sign-out (RFC 7009), outside the bearer-protected router: possession of the token is the authority."""

    path = "/v1/auth/revoke"
    tags = ["auth"]

    @post("/", status_code=200, summary="Revoke a refresh or access token: its session ends, every token of it is "
          "refused from then on (RFC 7009)", responses=documented(400, 415, 429, 503))
    async def revoke(self, request: Request) -> Response[bytes]:
        """Answers 200 whether or not the token was one of ours or still active (RFC 7009 2.2): the answer says
        nothing about a token to whoever presents it."""
        form = await _form(request, RevocationRequest, "revocation request")
        runtime = runtime_of(request.app.state)
        await sessions.sign_out(form.token, runtime.services, identity_of(request), telemetry.request_id_var.get())
        return Response(b"", status_code=200, headers=_NO_STORE, media_type="text/plain")


class JwksController(Controller):
    path = "/.well-known/jwks.json"
    tags = ["auth"]

    @get("/", summary="The public keys that verify access tokens (RFC 7517)", cache=False)
    async def jwks(self, request: Request) -> Response[Jwks]:
        runtime = runtime_of(request.app.state)
        now = runtime.services.clock.now()
        keys = await asyncio.to_thread(identity_of(request).tokens.jwks, now)
        jwks = Jwks(keys=[msgspec.convert(key, Jwk) for key in keys["keys"]])  # each member's JSON type checked
        return Response(jwks, headers={"Cache-Control": "public, max-age=60"})


class TotpController(Controller):
    path = "/auth/totp"
    tags = ["auth"]

    @post("/", status_code=201, summary="Start TOTP enrollment: the otpauth:// URI, shown once",
          responses=COMMAND_ERRORS)
    async def start(self, request: Request, principal: Caller) -> Response[mfa.TotpEnrollment]:
        enrollment = await mfa.start_enrollment(command_context(principal), runtime_of(request.app.state).services,
                                                identity_of(request).issuer_label)
        return Response(enrollment, status_code=201, headers=_NO_STORE)

    @post("/confirm", status_code=200, summary="Confirm TOTP enrollment with a current code",
          responses=COMMAND_ERRORS)
    async def confirm(self, request: Request, principal: Caller, data: JSONBody[mfa.ConfirmTotp]) -> CommandResult:
        return await mfa.confirm_enrollment(data, command_context(principal), runtime_of(request.app.state).services)


class SessionsController(Controller):
    path = "/auth/sessions"
    tags = ["auth"]

    @post("/revoke-all", status_code=200, summary="Sign out everywhere: end every session of the caller (a local "
          "user), or every one but this request's with keep_current; their tokens are refused at once",
          responses=COMMAND_ERRORS)
    async def revoke_all(self, request: Request, principal: Caller,
                         data: JSONBody[session_end.SignOutEverywhere]) -> Response[session_end.SignedOutEverywhere]:
        ended = await session_end.sign_out_everywhere(data, command_context(principal),
                                                      runtime_of(request.app.state).services)
        return Response(ended, status_code=200, headers=_NO_STORE)
