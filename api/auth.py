"""Bearer authentication: an API key (``csm_<id>_<secret>``) or a signed access token (JWT) becomes a Principal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from api import permissions
from api.denials import PRINCIPAL_KEY
from api.deps import read_models_of, runtime_of
from api.problems import ApiProblem
from commands.authz import Principal
from commands.runtime import Services, load
from commands.sessions import ENROLL_SCOPE, EPOCH_CLAIM
from commands.tokens import parse_token, secret_matches
from domain import service_account, session, user
from domain.events import SYSTEM_TENANT
from projections import api_tokens

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="csm"'}
_INVALID = {"WWW-Authenticate": 'Bearer realm="csm", error="invalid_token"'}
MAX_HEADER = 16_384


def bearer_guard(authenticate_caller: Callable[[Request], Awaitable[Principal]]) -> Guard:
    """The /v1 router's guard: who calls (401 if nobody) and whether its roles allow the route at all (403).

    Litestar runs guards before it reads the body or resolves any handler argument, so a request
    without a valid credential is refused before its body is decoded or validated, on every /v1
    route alike. ``authenticate_caller`` is ``authenticate``, wrapped by the per-principal rate limit.
    """

    async def bearer(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        if handler.handler_name == "options_handler" or handler.opt.get("public"):  # automatic OPTIONS; a route
            return  # relying parties fetch (a CA's certificate, the caIssuers URL): no data, no token
        principal = await authenticate_caller(connection)  # type: ignore[arg-type]  # an HTTP route: a Request
        permissions.refuse_early(principal, connection.scope["method"], connection.scope.get("path_template"))

    return bearer


def caller(request: Request) -> Principal:
    """The ``principal`` dependency: the caller the guard authenticated."""
    return request.scope[PRINCIPAL_KEY]


async def authenticate(request: Request) -> Principal:
    """The caller of a /v1 route, or a 401 problem (run by ``bearer_guard``)."""
    token = bearer_token(request)
    if token.startswith("csm_"):
        # primary-key lookups and the account's stream: on the event loop (a thread hop cost more than all)
        principal = await _principal_for_key(request, token)
    else:
        principal = await _principal_from_jwt(request, token)
    if principal is None:
        raise invalid_token()
    request.scope[PRINCIPAL_KEY] = principal  # for the access-denied audit hook (api/denials.py)
    return principal


def bearer_token(request: Request) -> str:
    """The request's ``Authorization: Bearer`` token, or a 401 problem (none; another scheme; empty or too long)."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiProblem(401, "unauthorized", "this resource needs an Authorization: Bearer token",
                         field="Authorization", rule="required", headers=_CHALLENGE)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not 0 < len(token) <= MAX_HEADER:
        raise invalid_token()
    return token


def invalid_token() -> ApiProblem:
    """The one 401 for a token that is not accepted, whatever the reason (an unknown id reads as a wrong secret)."""
    return ApiProblem(401, "unauthorized", "the bearer token is invalid, expired or revoked",
                      field="Authorization", rule="invalid_token", headers=_INVALID)


async def _principal_for_key(request: Request, token: str) -> Principal | None:
    parsed = parse_token(token)
    record = api_key_record(request, parsed) if parsed else None
    if record is None or await account_disabled(runtime_of(request.app.state).services, record):
        return None
    return Principal(id=f"token:{record['token_id']}", auth_method="api_token", roles=frozenset(record["roles"]),
                     tenant_id=record["tenant_id"], expires_at=_instant(record["expires_at"]))


def api_key_record(request: Request, parsed: tuple[str, str]) -> dict | None:
    """The read model's record of a genuine, active, unexpired API key; None for anything else."""
    token_id, secret = parsed
    runtime = runtime_of(request.app.state)
    verifier = runtime.vault.get_verifier(token_id)
    matches = secret_matches(secret, verifier)  # always compared, so an unknown id costs the same time
    record = read_models_of(request.app.state).run(api_tokens.get, token_id)
    if not matches or verifier is None or record is None or record["status"] != "active":
        return None
    if _expired(record["expires_at"], runtime.services.clock.now()):
        return None
    return record


async def account_disabled(services: Services, record: dict) -> bool:
    """Whether the service account holding a key is disabled, read from the log as a user's account is (no lag). The
    disable also deletes each key's verifier; this holds for keys it could not name (issued before accounts recorded
    their keys, while the read model that lists those was rebuilding)."""
    account = record.get("service_account")
    if not account:  # a key from before keys had accounts
        return False
    state = await load(services, record["tenant_id"] or SYSTEM_TENANT, service_account.stream_id(account),
                       service_account.fold)
    return state.status == "disabled"


async def _principal_from_jwt(request: Request, token: str) -> Principal | None:
    runtime = runtime_of(request.app.state)
    if runtime.identity is None:
        return None
    now = runtime.services.clock.now()
    claims = runtime.identity.tokens.verify(token, now)
    if claims is None:
        return None
    subject, tenant_id = claims["sub"], claims.get("tenant")
    roles = frozenset(claims.get("roles", []))
    if not await _session_open(runtime.services, claims):  # signed out (RFC 7009), or its refresh token reused
        return None
    if subject.startswith("user:"):  # disabled users, ended sessions, revoked or lapsed grants stop at once
        _, scope, username = subject.split(":", 2)
        account = await load(runtime.services, scope, user.stream_id(username), user.fold)  # the log: no lag
        if account.status != "active" or user.session_ended(account, _epoch(claims), claims["sid"]):
            return None
        roles &= user.active_roles(account, now)
    expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    if claims.get("scope") == ENROLL_SCOPE:
        roles = frozenset()  # good for /v1/auth/totp only
    elif "key" in claims:  # a service account's token ends with its key
        record = await read_models_of(request.app.state).query(api_tokens.get, str(claims["key"]))
        revoked = runtime.vault.get_verifier(str(claims["key"])) is None  # deleted as the revocation is recorded
        if record is None or revoked or record["status"] != "active" or _expired(record["expires_at"], now):
            return None
        if await account_disabled(runtime.services, record):
            return None
        expires_at = min(expires_at, _instant(record["expires_at"]) or expires_at)
    amr = "+".join(str(method) for method in claims.get("amr", [])) or "jwt"
    return Principal(id=subject, auth_method=f"jwt:{amr}", roles=roles, tenant_id=tenant_id, expires_at=expires_at,
                     session_id=claims["sid"], session_epoch=_epoch(claims) if subject.startswith("user:") else None)


async def _session_open(services, claims: dict) -> bool:
    """Whether the session the token belongs to is still open: from the log (no lag), as a user's account is. A
    session ends by sign-out or when its refresh token is presented twice; its access tokens end with it."""
    session_id, tenant_id = claims.get("sid"), claims.get("tenant")
    if not isinstance(session_id, str) or not (tenant_id is None or isinstance(tenant_id, str)):
        return False
    state = await load(services, tenant_id or SYSTEM_TENANT, session.stream_id(session_id), session.fold)
    return state.status == "active"


def _epoch(claims: dict) -> int:
    """The sessions epoch the token was issued in: tokens from before epochs existed were issued in epoch 0."""
    epoch = claims.get(EPOCH_CLAIM, 0)
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else -1  # a malformed one is refused


def _expired(expires_at: str | None, now: datetime) -> bool:
    if not expires_at:
        return False
    try:
        return datetime.fromisoformat(expires_at) <= now
    except ValueError:
        return True  # an unreadable expiry grants nothing


def _instant(expires_at: str | None) -> datetime | None:
    """A read model's expiry as a time (the key was accepted, so it is readable or empty)."""
    return datetime.fromisoformat(expires_at) if expires_at else None
