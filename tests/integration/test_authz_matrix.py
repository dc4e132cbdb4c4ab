"""Every /v1 route × every role × own tenant, another tenant and platform scope, against the real API.

The expectation is derived from two tables only: ``commands.authz.ROLES`` and
``api.permissions.ROUTE_PERMISSIONS``. A route the app serves without an entry in the table (or
without a request below) fails the suite by name. Every case runs twice: as served (the /v1 guard
refuses early what the table rules out from the roles alone) and with that early refusal off, so
the handlers' own ``authorize`` calls (which the CLI relies on) are held to the same table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from authz_support import OTHER, OWN, World, build_world, caught_up, fresh, profile_body
from test_api_support import PROBLEM, running_api

from api import permissions
from api.permissions import ROUTE_PERMISSIONS, Rule, operations, unlisted
from commands.authz import ROLES

pytestmark = pytest.mark.asyncio(loop_scope="module")
SCOPES = ("own", "other", "platform")  # token scoped to OWN acting on OWN / on OTHER; unscoped token on OTHER


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict = field(default_factory=dict)
    json: dict | None = None
    headers: dict = field(default_factory=dict)


Build = Callable[[World, str], Call]  # (world, target tenant) -> the request
T = World  # short alias for the lambdas below


def _t(w: T, tenant: str):
    return w.tenants[tenant]


REASON = {"reason": "authorization matrix"}
MATRIX_PASSWORD = "matrix password, long enough"
PKCS12 = {"X-Export-Password": "matrix-export-password"}
REQUESTS: dict[tuple[str, str], Build] = {
    ("POST", "/v1/tenants"): lambda w, t: Call("POST", "/v1/tenants", json={"tenant_id": fresh("mx"), "name": "M"}),
    ("GET", "/v1/tenants"): lambda w, t: Call("GET", "/v1/tenants"),
    ("GET", "/v1/tenants/{tenant_id}"): lambda w, t: Call("GET", f"/v1/tenants/{t}"),
    ("GET", "/v1/tenants/{tenant_id}/usage"): lambda w, t: Call("GET", f"/v1/tenants/{t}/usage"),
    ("GET", "/v1/tenants/{tenant_id}/compromised-keys"): lambda w, t: Call("GET", f"/v1/tenants/{t}/compromised-keys"),
    ("GET", "/v1/tenants/{tenant_id}/compliance"): lambda w, t: Call("GET", f"/v1/tenants/{t}/compliance"),
    ("GET", "/v1/tenants/{tenant_id}/analytics"): lambda w, t: Call("GET", f"/v1/tenants/{t}/analytics"),
    ("GET", "/v1/tenants/{tenant_id}/discovered"): lambda w, t: Call("GET", f"/v1/tenants/{t}/discovered"),
    ("POST", "/v1/tenants/{tenant_id}/discovered"): lambda w, t: Call(  # the same scan again records nothing
        "POST", f"/v1/tenants/{t}/discovered", json={"scan_id": "matrix", "observations": [
            {"host": "192.0.2.1", "port": 9042, "observed_at": "2026-01-01T00:00:00Z", "error": "refused"}]}),
    ("POST", "/v1/tenants/{tenant_id}/compromised-keys"): lambda w, t: Call(  # refused after authorization: nothing
        "POST", f"/v1/tenants/{t}/compromised-keys",  # is recorded (an invalidity date in the future)
        json={"certificate_id": _t(w, t).certificate, "invalidity_date": "2999-01-01T00:00:00Z"}),
    ("POST", "/v1/tenants/{tenant_id}/compromised-keys/{public_key_sha256}/lift"): lambda w, t: Call(  # a key not
        "POST", f"/v1/tenants/{t}/compromised-keys/{'0' * 64}/lift", json={"reason": "reported in error"}),  # blocked
    ("POST", "/v1/tenants/{tenant_id}/rename"): lambda w, t: Call("POST", f"/v1/tenants/{t}/rename",
                                                                  json={"name": fresh("Renamed")}),
    ("PUT", "/v1/tenants/{tenant_id}/quotas"): lambda w, t: Call("PUT", f"/v1/tenants/{t}/quotas", json={}),
    ("POST", "/v1/tenants/{tenant_id}/quotas"): lambda w, t: Call("POST", f"/v1/tenants/{t}/quotas", json={}),
    ("GET", "/v1/tenants/{tenant_id}/policy"): lambda w, t: Call("GET", f"/v1/tenants/{t}/policy"),
    ("PUT", "/v1/tenants/{tenant_id}/policy"): lambda w, t: Call("PUT", f"/v1/tenants/{t}/policy", json={}),
    ("POST", "/v1/tenants/{tenant_id}/policy"): lambda w, t: Call("POST", f"/v1/tenants/{t}/policy", json={}),
    ("POST", "/v1/tenants/{tenant_id}/suspend"): lambda w, t: Call("POST", f"/v1/tenants/{t}/suspend", json=REASON),
    ("POST", "/v1/tenants/{tenant_id}/resume"): lambda w, t: Call("POST", f"/v1/tenants/{t}/resume", json=REASON),
    ("GET", "/v1/audit/events"): lambda w, t: Call("GET", "/v1/audit/events", params={"tenant_id": t}),
    ("GET", "/v1/audit/verify"): lambda w, t: Call("GET", "/v1/audit/verify"),
    ("GET", "/v1/events/stream"): lambda w, t: Call("GET", "/v1/events/stream"),
    ("POST", "/v1/cas"): lambda w, t: Call("POST", "/v1/cas", json={
        "kind": "root", "tenant_id": t, "name": "matrix", "algorithm": "ecdsa-p384",
        "subject": {"common_name": "matrix root"}}),
    ("GET", "/v1/cas"): lambda w, t: Call("GET", "/v1/cas", params={"tenant_id": t}),
    ("POST", "/v1/cas/import"): lambda w, t: Call("POST", "/v1/cas/import", json={
        "tenant_id": t, "name": "offline", "certificate_pem": w.import_pem}),
    ("POST", "/v1/cas/offline-intermediate"): lambda w, t: Call("POST", "/v1/cas/offline-intermediate", json={
        "tenant_id": t, "parent_id": _t(w, t).root, "name": "offline", "algorithm": "ecdsa-p384",
        "subject": {"common_name": "offline intermediate"}}),  # an online parent: refused after authorization
    ("GET", "/v1/cas/{ca_id}"): lambda w, t: Call("GET", f"/v1/cas/{_t(w, t).issuing}"),
    ("GET", "/v1/cas/{ca_id}/certificates"): lambda w, t: Call("GET", f"/v1/cas/{_t(w, t).issuing}/certificates"),
    ("GET", "/v1/cas/{ca_id}/certificate"): lambda w, t: Call("GET", f"/v1/cas/{_t(w, t).issuing}/certificate"),
    ("GET", "/v1/cas/{ca_id}/chain"): lambda w, t: Call("GET", f"/v1/cas/{_t(w, t).issuing}/chain"),
    ("POST", "/v1/cas/{ca_id}/certificate"): lambda w, t: Call(  # not pending: refused after authorization
        "POST", f"/v1/cas/{_t(w, t).root}/certificate", json={"certificate_pem": w.import_pem}),
    ("POST", "/v1/cas/{ca_id}/cross-sign"): lambda w, t: Call(
        "POST", f"/v1/cas/{_t(w, t).spare}/cross-sign", json={"issuer_id": _t(w, t).root, "validity_days": 30}),
    ("POST", "/v1/cas/{ca_id}/rollover"): lambda w, t: Call("POST", f"/v1/cas/{_t(w, t).spare}/rollover",
                                                            json=REASON),
    ("POST", "/v1/cas/{ca_id}/disable"): lambda w, t: Call("POST", f"/v1/cas/{_t(w, t).spare}/disable", json=REASON),
    ("POST", "/v1/cas/{ca_id}/enable"): lambda w, t: Call("POST", f"/v1/cas/{_t(w, t).spare}/enable", json=REASON),
    # Both revocations are refused after authorization (a root; an invalidity date to come): nothing changes.
    ("POST", "/v1/cas/{ca_id}/revoke"): lambda w, t: Call("POST", f"/v1/cas/{_t(w, t).root}/revoke", json={}),
    ("GET", "/v1/cas/{ca_id}/crl"): lambda w, t: Call("GET", f"/v1/cas/{_t(w, t).issuing}/crl"),
    # Both refused after authorization: the root's key is online, so its CRLs are signed here.
    ("GET", "/v1/cas/{ca_id}/crl-request"): lambda w, t: Call("GET", f"/v1/cas/{_t(w, t).root}/crl-request"),
    ("GET", "/v1/cas/{ca_id}/compromise"): lambda w, t: Call("GET", f"/v1/cas/{_t(w, t).root}/compromise"),
    ("POST", "/v1/cas/{ca_id}/crls"): lambda w, t: Call("POST", f"/v1/cas/{_t(w, t).root}/crls",
                                                        json={"crl_pem": "-----BEGIN X509 CRL-----"}),
    # Refused after authorization: the built-in profile's renewal policy does not allow keeping the key.
    ("POST", "/v1/certificates/{certificate_id}/renew"): lambda w, t: Call(
        "POST", f"/v1/certificates/{_t(w, t).certificate}/renew", json={"reuse_key": True}),
    ("POST", "/v1/certificates/{certificate_id}/revoke"): lambda w, t: Call(
        "POST", f"/v1/certificates/{_t(w, t).certificate}/revoke", json={"invalidity_date": "2999-01-01T00:00:00Z"}),
    ("POST", "/v1/certificates"): lambda w, t: Call("POST", "/v1/certificates", json={
        "tenant_id": t, "ca_id": _t(w, t).issuing, "algorithm": "ecdsa-p256",
        "subject": {"common_name": f"n.{t}.internal"}, "sans": {"dns": [f"n.{t}.internal"]}}),
    ("GET", "/v1/certificates"): lambda w, t: Call("GET", "/v1/certificates", params={"tenant_id": t}),
    ("GET", "/v1/certificates/{certificate_id}"): lambda w, t: Call(
        "GET", f"/v1/certificates/{_t(w, t).certificate}"),
    ("GET", "/v1/certificates/{certificate_id}/deployments"): lambda w, t: Call(
        "GET", f"/v1/certificates/{_t(w, t).certificate}/deployments"),
    ("GET", "/v1/deployments"): lambda w, t: Call("GET", "/v1/deployments", params={"tenant_id": t}),
    ("GET", "/v1/certificates/{certificate_id}/export"): lambda w, t: Call(
        "GET", f"/v1/certificates/{_t(w, t).certificate}/export", params={"format": "pem"}),
    ("GET", "/v1/profiles"): lambda w, t: Call("GET", "/v1/profiles", params={"tenant_id": t}),
    ("POST", "/v1/profiles"): lambda w, t: Call("POST", "/v1/profiles", json={
        "tenant_id": t, "profile": profile_body(fresh("matrix"))}),
    ("PUT", "/v1/profiles/{name}"): lambda w, t: Call("PUT", f"/v1/profiles/{_t(w, t).profile}", json={
        "tenant_id": t, "profile": profile_body(_t(w, t).profile) | {"description": fresh("updated")}}),
    ("POST", "/v1/profiles/{name}/retire"): lambda w, t: Call(
        "POST", f"/v1/profiles/{_t(w, t).retiring}/retire", json={"tenant_id": t, **REASON}),
    ("GET", "/v1/algorithms"): lambda w, t: Call("GET", "/v1/algorithms"),
    # identity: every tenant has the user, service account and key that build_tenant made
    ("POST", "/v1/auth/token"): lambda w, t: Call("POST", "/v1/auth/token", json={
        "grant_type": "client_credentials", "client_secret": w.admin["Authorization"].split()[1]}),
    ("POST", "/v1/auth/revoke"): lambda w, t: Call("POST", "/v1/auth/revoke", json={"token": fresh("not-a-token")}),
    ("POST", "/v1/auth/totp"): lambda w, t: Call("POST", "/v1/auth/totp"),  # API keys: 422, TOTP is for people
    ("POST", "/v1/auth/totp/confirm"): lambda w, t: Call("POST", "/v1/auth/totp/confirm", json={"code": "123456"}),
    ("POST", "/v1/auth/sessions/revoke-all"): lambda w, t: Call(  # API keys: 422, for local users only
        "POST", "/v1/auth/sessions/revoke-all", json={}),
    ("POST", "/v1/users"): lambda w, t: Call("POST", "/v1/users", json={
        "username": fresh("mx-user"), "password": MATRIX_PASSWORD, "tenant_id": t}),
    ("GET", "/v1/users"): lambda w, t: Call("GET", "/v1/users", params={"tenant_id": t}),
    ("GET", "/v1/users/{username}"): lambda w, t: Call("GET", f"/v1/users/{_t(w, t).user}", params={"tenant_id": t}),
    ("POST", "/v1/users/{username}/roles"): lambda w, t: Call(
        "POST", f"/v1/users/{_t(w, t).user}/roles", params={"tenant_id": t}, json={"role": "viewer"}),
    ("DELETE", "/v1/users/{username}/roles/{role}"): lambda w, t: Call(
        "DELETE", f"/v1/users/{_t(w, t).user}/roles/developer", params={"tenant_id": t}),  # tenant-admin may grant it
    ("POST", "/v1/users/{username}/password"): lambda w, t: Call(
        "POST", f"/v1/users/{_t(w, t).user}/password", params={"tenant_id": t}, json={"password": MATRIX_PASSWORD}),
    ("POST", "/v1/users/{username}/disable"): lambda w, t: Call(
        "POST", f"/v1/users/{_t(w, t).user}/disable", params={"tenant_id": t}, json=REASON),
    ("POST", "/v1/users/{username}/enable"): lambda w, t: Call(
        "POST", f"/v1/users/{_t(w, t).user}/enable", params={"tenant_id": t}, json=REASON),
    ("POST", "/v1/users/{username}/unlock"): lambda w, t: Call(
        "POST", f"/v1/users/{_t(w, t).user}/unlock", params={"tenant_id": t}),
    ("DELETE", "/v1/users/{username}/totp"): lambda w, t: Call(
        "DELETE", f"/v1/users/{_t(w, t).user}/totp", params={"tenant_id": t}),
    ("POST", "/v1/service-accounts"): lambda w, t: Call("POST", "/v1/service-accounts", json={
        "name": fresh("mx-sa"), "tenant_id": t}),
    ("GET", "/v1/service-accounts"): lambda w, t: Call("GET", "/v1/service-accounts", params={"tenant_id": t}),
    ("GET", "/v1/service-accounts/{name}"): lambda w, t: Call(
        "GET", f"/v1/service-accounts/{_t(w, t).service_account}", params={"tenant_id": t}),
    ("POST", "/v1/service-accounts/{name}/keys"): lambda w, t: Call(
        "POST", f"/v1/service-accounts/{_t(w, t).service_account}/keys", params={"tenant_id": t},
        json={"roles": ["viewer"]}),
    ("DELETE", "/v1/service-accounts/{name}/keys/{key_id}"): lambda w, t: Call(
        "DELETE", f"/v1/service-accounts/{_t(w, t).service_account}/keys/{_t(w, t).key}", params={"tenant_id": t}),
    ("POST", "/v1/service-accounts/{name}/disable"): lambda w, t: Call(
        "POST", f"/v1/service-accounts/{_t(w, t).spare_account}/disable", params={"tenant_id": t}, json=REASON),
    ("POST", "/v1/service-accounts/{name}/enable"): lambda w, t: Call(
        "POST", f"/v1/service-accounts/{_t(w, t).spare_account}/enable", params={"tenant_id": t}, json=REASON),
    ("POST", "/v1/tenants/{tenant_id}/acme/eab-keys"): lambda w, t: Call(
        "POST", f"/v1/tenants/{t}/acme/eab-keys", json={"ca_id": _t(w, t).issuing}),
    ("GET", "/v1/tenants/{tenant_id}/acme/eab-keys"): lambda w, t: Call("GET", f"/v1/tenants/{t}/acme/eab-keys"),
    ("DELETE", "/v1/tenants/{tenant_id}/acme/eab-keys/{key_id}"): lambda w, t: Call(
        "DELETE", f"/v1/tenants/{t}/acme/eab-keys/{_t(w, t).eab_key}"),
    ("POST", "/v1/webhooks"): lambda w, t: Call("POST", "/v1/webhooks", json={
        "tenant_id": t, "url": "https://hooks.invalid/matrix", "event_types": ["certificate.expiry_warned"]}),
    ("GET", "/v1/webhooks"): lambda w, t: Call("GET", "/v1/webhooks", params={"tenant_id": t}),
    ("GET", "/v1/webhooks/{webhook_id}"): lambda w, t: Call(
        "GET", f"/v1/webhooks/{_t(w, t).webhook}", params={"tenant_id": t}),
    ("PATCH", "/v1/webhooks/{webhook_id}"): lambda w, t: Call(
        "PATCH", f"/v1/webhooks/{_t(w, t).webhook}", params={"tenant_id": t}, json={"description": fresh("m")}),
    ("DELETE", "/v1/webhooks/{webhook_id}"): lambda w, t: Call(  # deleting again answers 200, unchanged
        "DELETE", f"/v1/webhooks/{_t(w, t).webhook_deleting}", params={"tenant_id": t}),
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): lambda w, t: Call(
        "POST", f"/v1/webhooks/{_t(w, t).webhook}/rotate-secret", params={"tenant_id": t}),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): lambda w, t: Call(
        "GET", f"/v1/webhooks/{_t(w, t).webhook}/deliveries", params={"tenant_id": t}),
}
# The same route asked for a private key: key_permissions apply too.
WITH_KEY: dict[tuple[str, str], Build] = {
    ("GET", "/v1/certificates/{certificate_id}/export"): lambda w, t: Call(
        "GET", f"/v1/certificates/{_t(w, t).certificate}/export", params={"format": "pkcs12"}, headers=PKCS12),
}
# Suspending the platform-scope target would make the calls after it refuse for another reason: last.
LAST = [("POST", "/v1/tenants/{tenant_id}/suspend"), ("POST", "/v1/tenants/{tenant_id}/resume")]
MODES = ("early", "handlers")  # the guard's early refusal on; off (the command handlers' checks alone)
CASES = ([(key, False, mode) for mode in MODES for key in sorted(ROUTE_PERMISSIONS) if key not in LAST]
         + [(key, True, mode) for mode in MODES for key in WITH_KEY]
         + [(key, False, mode) for mode in MODES for key in LAST])


def expected(rule: Rule, role: str, scope: str, with_key: bool) -> str:
    """allow | deny | confine (a list answers, but with the caller's own tenant's items only)."""
    needed = set(rule.permissions) | (set(rule.key_permissions) if with_key else set())
    held = needed <= ROLES[role]
    if rule.scope in ("public", "self"):  # self: the caller's own account, whatever its roles
        return "allow"
    if not held:
        return "deny"
    if scope == "platform":
        return "allow"
    if rule.scope == "platform":
        return "deny"
    if scope == "own":
        return "allow"
    return "confine" if rule.scope == "confined" else "deny"


async def send(world: World, call: Call, headers: dict) -> tuple[int, dict | list | None, str]:
    client = world.api.client
    request = client.build_request(call.method, call.path, params=call.params, json=call.json,
                                   headers={**headers, **call.headers})
    response = await client.send(request, stream=True)  # the event stream never ends: read only what is needed
    try:
        kind = response.headers.get("content-type", "")
        if "event-stream" in kind:
            return response.status_code, None, kind
        await response.aread()
        body = response.json() if "json" in kind else None
        return response.status_code, body, kind
    finally:
        await response.aclose()


def judge(outcome: str, status: int, body, kind: str) -> str | None:
    """Why the response does not match the expected outcome, or None."""
    if status >= 500:
        return f"server error {status}"
    if outcome == "allow":
        return None if status not in (401, 403, 404) else f"expected allowed, got {status}"
    if status in (403, 404):
        return None if kind.startswith(PROBLEM) else f"{status} without problem+json"
    if outcome == "confine" and status == 200:
        items = body.get("items", []) if isinstance(body, dict) else []
        foreign = {item.get("tenant_id") for item in items} - {OWN}
        return f"saw other tenants' items {sorted(foreign)}" if foreign else None
    return f"expected {outcome}, got {status}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    limits = {"rate_limit_per_principal": "100000/minute", "rate_limit_per_address": "100000/minute"}
    async with running_api(tmp_path_factory.mktemp("matrix"), max_body_bytes=1 << 20, **limits) as api:
        yield await build_world(api)


async def test_every_route_is_in_the_permission_table_and_has_a_request(world):
    app = world.api.app
    assert not unlisted(app), f"routes without an entry in api/permissions.py ROUTE_PERMISSIONS: {unlisted(app)}"
    stale = sorted(f"{m} {p}" for m, p in ROUTE_PERMISSIONS.keys() - operations(app))
    assert not stale, f"ROUTE_PERMISSIONS lists routes the app does not serve: {stale}"
    no_request = sorted(f"{m} {p}" for m, p in ROUTE_PERMISSIONS.keys() - REQUESTS.keys())
    assert not no_request, f"routes without a request in test_authz_matrix.REQUESTS: {no_request}"
    keyed = {key for key, rule in ROUTE_PERMISSIONS.items() if rule.key_permissions}
    assert keyed == WITH_KEY.keys(), "every route with key_permissions needs a WITH_KEY request"


@pytest.mark.parametrize("key, with_key, mode", CASES,
                         ids=[f"{m} {p}{' +key' if k else ''} ({mode})" for (m, p), k, mode in CASES])
async def test_route_allows_exactly_what_the_tables_say(world, key, with_key, mode, monkeypatch):
    if mode == "handlers":
        monkeypatch.setattr(permissions, "refuse_early", lambda principal, method, path: None)
    rule = ROUTE_PERMISSIONS[key]
    build = (WITH_KEY if with_key else REQUESTS)[key]
    wrong = []
    for role in ROLES:
        for scope in SCOPES:
            outcome = expected(rule, role, scope, with_key)
            target = OWN if scope == "own" else OTHER
            headers = world.headers(role, None if scope == "platform" else OWN)
            call = build(world, target)
            if outcome == "confine" and call.params.get("tenant_id") == OTHER:
                outcome = "deny"  # a list that names another tenant is refused, not confined to nothing
            status, body, kind = await send(world, call, headers)
            if (why := judge(outcome, status, body, kind)) is not None:
                wrong.append(f"{role:>15} {scope:>8}: {why} ({str(body)[:160]})")
    await caught_up(world.api)  # the next route's requests see this one's writes
    assert not wrong, f"{key[0]} {key[1]} (needs {rule.permissions}, scope {rule.scope}):\n" + "\n".join(wrong)


def _reads_tenant_query(app) -> set[tuple[str, str]]:
    """Every (method, path) whose handler reads ``?tenant_id``, from the handlers' own signatures."""
    return {(method, route.path_format) for route in app.routes
            for method, (_handler, model) in getattr(route, "route_handler_map", {}).items()
            if any(p.field_alias == "tenant_id" for p in model.expected_query_params)}


async def test_an_empty_tenant_id_is_refused_alike_on_every_route_that_reads_one(world):
    """``?tenant_id=`` names no tenant: a 400 naming the field, never an empty list (a filter on no tenant) on some
    routes and the caller's own tenant or a 403 on others."""
    routes = _reads_tenant_query(world.api.app)
    assert {("GET", "/v1/certificates"), ("GET", "/v1/audit/events"), ("GET", "/v1/users"), ("GET", "/v1/cas"),
            ("GET", "/v1/service-accounts"), ("GET", "/v1/webhooks"), ("GET", "/v1/profiles")} <= routes
    wrong = []
    for key in sorted(routes):
        call = REQUESTS[key](world, OWN)
        call = Call(call.method, call.path, params={**call.params, "tenant_id": ""}, json=call.json,
                    headers=call.headers)
        for scope in (OWN, None):  # a tenant-scoped caller, and a platform-wide one
            status, body, kind = await send(world, call, world.headers("platform-admin", scope))
            rules = [(e.get("field"), e.get("rule")) for e in body.get("errors", [])] if isinstance(body, dict) else []
            if status != 400 or not kind.startswith(PROBLEM) or ("tenant_id", "min_length") not in rules:
                wrong.append(f"{key[0]} {key[1]} ({scope or 'platform'}): {status} {str(body)[:160]}")
    assert not wrong, "\n".join(wrong)
