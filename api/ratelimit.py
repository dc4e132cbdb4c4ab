"""Rate limits per client address, per authenticated principal, and for sign-in per address and per username.

GCRA (a token bucket kept as one timestamp per key): ``limit`` requests per ``period`` with a
burst of ``limit``. Two backends: in memory (one process, the embedded default) and Redis (a Lua
script, atomic, on the Redis server's clock: every API instance shares the buckets), chosen by
``CSM_REDIS_URL``. A refusal is a 429 problem with ``Retry-After`` and ``RateLimit-*`` headers;
allowed /v1 responses carry the ``RateLimit-*`` headers of the tightest bucket they were counted in.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.bodies import decode as decode_json
from api.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, ApiProblem
from infra.config import Settings
from infra.telemetry import record_login, request_id_var

log = logging.getLogger(__name__)

LOGIN_PATHS = frozenset({"/v1/auth/token"})  # password sign-in: the stricter limits apply
CLIENT_ADDRESS = "client_address"  # a refusal's field when the client's address is what is limited (TCP peer)
UNLIMITED_PREFIXES = ("/health/",)  # probes must never be throttled
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400,
          "day": 86400}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*")
_BODY_PEEK = 16_384  # how much of a sign-in body is read to find the username
_MICRO = 1_000_000


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    period: float  # seconds

    def __str__(self) -> str:
        return f"{self.limit};w={round(self.period)}"


def parse_rate(text: str, setting: str = "rate") -> Rate | None:
    """``"600/minute"``, ``"10/s"``, ``"100/5m"``; ``""`` or ``"off"`` is no limit; ValueError naming ``setting``."""
    if not text.strip() or text.strip().lower() == "off":
        return None
    match = _RATE.fullmatch(text.lower())
    if not match or match.group(3) not in _UNITS or int(match.group(1)) < 1:
        raise ValueError(f"{setting}: {text!r} is not a rate like 600/minute (units: second, minute, hour, day)")
    return Rate(int(match.group(1)), int(match.group(2) or 1) * _UNITS[match.group(3)])


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: float  # seconds until the next request would be allowed (0 when allowed)
    rate: Rate

    def headers(self) -> dict[str, str]:
        headers = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                   "RateLimit-Reset": str(math.ceil(self.reset_after)), "RateLimit-Policy": str(self.rate)}
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


def gcra(stored_tat: float | None, now: float, rate: Rate) -> tuple[Decision, float | None]:
    """One request at ``now`` against a bucket whose theoretical arrival time is ``stored_tat``.

    Returns the decision and the new arrival time to store (None: refused, store nothing).
    The Redis backend's Lua script (GCRA_LUA) is the same algorithm in whole microseconds, where every sum is
    exact (the interval is rounded down to a microsecond, so the slack below is not needed there).
    """
    interval = rate.period / rate.limit
    tat = max(stored_tat if stored_tat is not None else now, now)
    # Compared as the bucket's debt relative to now, not as absolute times ((now + interval) - period is not
    # exactly now + (interval - period) in floating point: a first request at now = 0.999 with 1/second was once
    # refused by 1e-16 s). The debt itself carries the rounding of every addition to the arrival time, a few ulps
    # of a clock of millions of seconds each; the slack covers that, a microsecond and a little more.
    used = tat - now
    slack = 1e-6 + 4 * rate.limit * math.ulp(max(tat, 1.0))
    if used + interval > rate.period + slack:
        return Decision(False, rate.limit, 0, used, used + interval - rate.period, rate), None
    # the same slack: the rounding could otherwise read 0.999999… intervals of room, one request fewer than it has
    remaining = int((rate.period - (used + interval) + slack) / interval)
    return Decision(True, rate.limit, remaining, used + interval, 0.0, rate), tat + interval


class Backend(Protocol):
    async def hit(self, key: str, rate: Rate) -> Decision: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Buckets in this process (the embedded deployment runs one API process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, rate: Rate) -> Decision:
        now = self._clock()  # no await between read and write: atomic on the event loop
        decision, new_tat = gcra(self._tats.get(key), now, rate)
        if new_tat is not None:
            if len(self._tats) >= self._max_keys and key not in self._tats:
                self._forget_full_buckets(now)
            self._tats[key] = new_tat
        return decision

    def _forget_full_buckets(self, now: float) -> None:
        """A bucket whose arrival time has passed is full again: it is the same as no bucket."""
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        while len(self._tats) >= self._max_keys:  # still full of live buckets: drop the oldest entries
            self._tats.pop(next(iter(self._tats)))

    async def close(self) -> None:
        self._tats.clear()


# KEYS[1] bucket; ARGV[1] period (µs), ARGV[2] limit. Returns {allowed, remaining, reset_after µs, retry_after µs}.
GCRA_LUA = """
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = math.max(1, math.floor(period / limit))
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local used = tat - now
if used + interval > period then
  return {0, 0, used, used + interval - period}
end
redis.call('SET', KEYS[1], string.format('%d', tat + interval), 'PX', math.ceil((used + interval) / 1000) + 1)
return {1, math.floor((period - used - interval) / interval), used + interval, 0}
"""


class RedisBackend:
    """Buckets in Redis, shared by every API instance; one atomic script call per request."""

    def __init__(self, url: str, prefix: str = "csm:ratelimit:") -> None:
        import redis.asyncio as redis  # only the distributed deployment needs the client

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._script = self._redis.register_script(GCRA_LUA)
        self._prefix = prefix

    async def hit(self, key: str, rate: Rate) -> Decision:
        allowed, remaining, reset_us, retry_us = await self._script(
            keys=[self._prefix + key], args=[round(rate.period * _MICRO), rate.limit])
        return Decision(bool(allowed), rate.limit, int(remaining), int(reset_us) / _MICRO, int(retry_us) / _MICRO,
                        rate)

    async def close(self) -> None:
        await self._redis.aclose()


class LinkedBackend:
    """The primary process's in-memory buckets, asked over the link (a multi-worker ``csm serve``)."""

    def __init__(self, link: Any) -> None:
        self._link = link  # infra.primary_link_client.LinkClient

    async def hit(self, key: str, rate: Rate) -> Decision:
        allowed, remaining, reset_after, retry_after = await self._link.rate_hit(key, rate.limit, rate.period)
        return Decision(bool(allowed), rate.limit, int(remaining), float(reset_after), float(retry_after), rate)

    async def close(self) -> None:
        pass


_counted: contextvars.ContextVar[dict | None] = contextvars.ContextVar("rate_limit_counted", default=None)


class RateLimits:
    """The configured limits and their backend; ``middleware`` and ``principal`` wire them into the app."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.per_address = parse_rate(settings.rate_limit_per_address, "CSM_RATE_LIMIT_PER_ADDRESS")
        self.per_principal = parse_rate(settings.rate_limit_per_principal, "CSM_RATE_LIMIT_PER_PRINCIPAL")
        self.login_per_address = parse_rate(settings.rate_limit_login_per_address,
                                            "CSM_RATE_LIMIT_LOGIN_PER_ADDRESS")
        self.login_per_username = parse_rate(settings.rate_limit_login_per_username,
                                             "CSM_RATE_LIMIT_LOGIN_PER_USERNAME")
        self.backend = backend or (RedisBackend(settings.redis_url) if settings.redis_url else MemoryBackend())
        self._warned_at = -math.inf

    async def close(self) -> None:
        await self.backend.close()

    async def check(self, key: str, rate: Rate | None) -> Decision | None:
        """Count one request in ``key``'s bucket; the tightest decision so far is kept for the response headers."""
        if rate is None:
            return None
        try:
            decision = await self.backend.hit(key, rate)
        except Exception as exc:  # a limiter outage must not take the API down with it: fail open, loudly
            self._warn(exc)
            return None
        counted = _counted.get()
        if counted is not None and (counted.get("decision") is None
                                    or decision.remaining < counted["decision"].remaining):
            counted["decision"] = decision
        return decision

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > 30:
            self._warned_at = now
            log.error("rate limiter unavailable; requests are not being limited", extra={"error": repr(exc)})

    # the authenticated principal -------------------------------------------------------
    def principal(self, authenticate: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Wrap the ``principal`` dependency: count the request in the principal's bucket once it is known.

        Counting after authentication means a caller cannot spend someone else's budget by
        sending their token id with a wrong secret.
        """

        if self.per_principal is None:
            return authenticate  # no bucket to count in (and so no decision for the response headers)

        @functools.wraps(authenticate)
        async def principal(*args: Any, **kwargs: Any) -> Any:
            caller = await authenticate(*args, **kwargs)
            decision = await self.check(f"principal:{caller.id}", self.per_principal)
            if decision is not None and not decision.allowed:
                raise ApiProblem(429, "rate_limited", _detail("this principal", decision), field="Authorization",
                                 headers=decision.headers(), retry_after=max(1, math.ceil(decision.retry_after)))
            return caller

        return principal

    # the client address, and sign-in -------------------------------------------------------
    def middleware(self, app: ASGIApp) -> ASGIApp:
        limits = self
        if not (self.per_address or self.per_principal or self.login_per_address or self.login_per_username):
            return app  # every limit is off: nothing to count, no headers to add
        # Only the sign-in limits are on: any other request has no bucket to count in and no headers to get.
        sign_in_only = not (self.per_address or self.per_principal)

        async def rate_limited(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"].startswith(UNLIMITED_PREFIXES) or (
                    sign_in_only and not (scope["method"] == "POST" and scope["path"] in LOGIN_PATHS)):
                await app(scope, receive, send)
                return
            token = _counted.set({})
            try:
                receive, refusal, sign_in = await limits._refusal(scope, receive)
                if refusal is not None:
                    if sign_in is not None:  # csm_logins_total counts what the limiter refuses too
                        record_login(sign_in.get("grant_type"), "rate_limited")
                    await _send_problem(scope, send, *refusal)
                    return
                await app(scope, receive, _with_headers(send, scope["path"]))
            finally:
                _counted.reset(token)

        return rate_limited

    async def _refusal(self, scope: Scope, receive: Receive
                       ) -> tuple[Receive, tuple[str, str, Decision] | None, dict[str, str] | None]:
        """The first bucket that refuses the request: who it counts (for the detail), the problem's field (what is
        limited: the client's address, which no header gives here, or the sign-in body's username), the decision;
        and, for a sign-in, what its body says (grant type, username) for the sign-in counter."""
        address = (scope.get("client") or ("unknown", 0))[0]
        checks = [(f"address:{address}", self.per_address, "this client address", CLIENT_ADDRESS)]
        sign_in = None
        if scope["method"] == "POST" and scope["path"] in LOGIN_PATHS:
            checks.append((f"login-address:{address}", self.login_per_address, "sign-in from this client address",
                           CLIENT_ADDRESS))
            receive, sign_in = await _peek_sign_in(scope, receive)
            username = sign_in.get("username")
            if self.login_per_username is not None and username:
                digest = hashlib.sha256(username.encode()).hexdigest()[:32]  # any bytes, bounded key
                checks.append((f"login-user:{digest}", self.login_per_username, "sign-in as this user",
                               "username"))
        for key, rate, who, field in checks:
            decision = await self.check(key, rate)
            if decision is not None and not decision.allowed:
                return receive, (who, field, decision), sign_in
        return receive, None, sign_in


def _detail(who: str, decision: Decision) -> str:
    return (f"too many requests for {who}: at most {decision.limit} per {round(decision.rate.period)} s; "
            f"retry after {max(1, math.ceil(decision.retry_after))} s")


def _with_headers(send: Send, path: str) -> Send:
    counted = _counted.get()

    async def wrapped(message: Message) -> None:
        decision = counted.get("decision") if counted is not None else None
        if message["type"] == "http.response.start" and decision is not None and path.startswith("/v1"):
            names = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(name.lower().encode(), value.encode()) for name, value in decision.headers().items()
                     if name.lower().encode() not in names]
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped


async def _send_problem(scope: Scope, send: Send, who: str, field: str, decision: Decision) -> None:
    detail = _detail(who, decision)
    body = {"type": PROBLEM_BASE + "rate_limited", "title": "Too Many Requests", "status": 429, "detail": detail,
            "instance": scope["path"], "request_id": request_id_var.get(), "field": field,
            "errors": [{"field": field, "rule": "rate_limited", "message": detail}],
            "retry_after": max(1, math.ceil(decision.retry_after))}
    payload = json.dumps(body).encode()
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(payload)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in decision.headers().items()]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _peek_sign_in(scope: Scope, receive: Receive) -> tuple[Receive, dict[str, str]]:
    """Read (up to a bound) a sign-in body for its username and grant type, and hand the app a ``receive`` that
    replays it."""
    messages: list[Message] = []
    size = 0
    while size <= _BODY_PEEK:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    content_type = dict(scope.get("headers", ())).get(b"content-type", b"").decode("latin-1").lower()
    if size > _BODY_PEEK:
        return replay, {}
    found = {"username": _username_of(body, content_type), "grant_type": _member_of(body, content_type, "grant_type")}
    return replay, {name: value for name, value in found.items() if value is not None}


def _member_of(body: bytes, content_type: str, name: str) -> str | None:
    """Member ``name`` of a JSON or form body when it is a string; None for anything else (the app answers it)."""
    try:
        if "json" in content_type:
            data = decode_json(body)
            value = data.get(name) if isinstance(data, dict) else None
        else:
            value = (urllib.parse.parse_qs(body.decode("utf-8", "replace")).get(name) or [None])[0]
    except (msgspec.DecodeError, ValueError):  # not JSON, or nested too deeply: the app answers it, not the peek
        return None
    return value if isinstance(value, str) else None


def _username_of(body: bytes, content_type: str) -> str | None:
    value = _member_of(body, content_type, "username")
    return value.strip().casefold()[:256] if value and value.strip() else None
