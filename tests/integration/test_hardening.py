"""HTTP hardening through the real API: no CORS unless configured, security headers on every kind of response,
bounded and strict request bodies whose errors name the field."""

from __future__ import annotations

import pytest
from authz_support import self_signed_ca_pem
from test_api_support import assert_problem, pki_api, running_api  # noqa: F401

PREFLIGHT = {"Origin": "https://ui.example.com", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type"}


def cors_headers(response) -> dict:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


async def test_cors_is_off_by_default(pki_api):
    api = pki_api
    preflight = await api.client.options("/v1/tenants", headers=PREFLIGHT)
    assert cors_headers(preflight) == {}
    simple = await api.client.get("/v1/tenants", headers={"Origin": "https://ui.example.com", **await api.admin()})
    assert simple.status_code == 200 and cors_headers(simple) == {}


async def test_cors_allows_exactly_the_listed_origins(tmp_path):
    async with running_api(tmp_path, cors_origins=("https://ui.example.com",)) as api:
        allowed = await api.client.options("/v1/tenants", headers=PREFLIGHT)
        assert allowed.headers["access-control-allow-origin"] == "https://ui.example.com"
        assert "access-control-allow-credentials" not in allowed.headers  # bearer tokens, never cookies
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = await api.client.options("/v1/tenants", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        read = await api.client.get("/v1/tenants", headers={"Origin": "https://ui.example.com",
                                                             **await api.admin()})
        assert read.headers["access-control-allow-origin"] == "https://ui.example.com"
        assert "ratelimit-remaining" in read.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize("origin", ["*", "https://*.example.com", "https://ui.example.com/", "ui.example.com"])
def test_cors_origins_must_be_exact(tmp_path, origin):
    from api.app import create_app
    from infra.config import Settings

    with pytest.raises(ValueError, match="CSM_CORS_ORIGINS"):
        create_app(Settings(data_dir=tmp_path, cors_origins=(origin,)))


def assert_hardened(response, *, api_path: bool) -> None:
    headers = response.headers
    what = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    assert headers["x-content-type-options"] == "nosniff", what
    assert headers["x-frame-options"] == "DENY", what
    assert "default-src 'none'" in headers["content-security-policy"], what
    assert "frame-ancestors 'none'" in headers["content-security-policy"], what
    assert headers["referrer-policy"] == "no-referrer", what
    assert headers["strict-transport-security"].startswith("max-age="), what
    assert headers["x-request-id"], what
    assert "server" not in headers, what  # no version banner
    if api_path:
        assert headers["cache-control"] == "no-store", what


async def test_security_headers_on_every_kind_of_response(pki_api):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    client = api.client
    anonymous = [("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/metrics"), ("GET", "/schema"),
                 ("GET", "/schema/openapi.json"), ("GET", "/schema/nothing"), ("GET", "/no/such/thing")]
    for method, path in anonymous:
        assert_hardened(await client.request(method, path), api_path=False)
    calls = [(client.get("/v1/tenants"), 401), (client.get("/v1/tenants", headers=admin), 200),
             (client.get("/v1/tenants/acme", headers=admin), 200), (client.delete("/v1/tenants", headers=admin), 405),
             (client.get("/v1/tenants/nope", headers=admin), 404),
             (client.post("/v1/tenants", content=b"{", headers={**admin, "Content-Type": "application/json"}), 400),
             (client.post("/v1/tenants", content=b"x" * (2 << 20), headers=admin), 413),
             (client.options("/v1/tenants", headers=PREFLIGHT), 204)]
    for call, status in calls:
        response = await call
        assert response.status_code == status, response.text
        assert_hardened(response, api_path=True)
    async with client.stream("GET", "/v1/events/stream", headers=admin) as stream:
        assert stream.status_code == 200
        assert_hardened(stream, api_path=True)


async def test_options_lists_every_method_of_the_path(pki_api):
    """Litestar 2 listed only the first method registered at a path (api.hardening.correct_options_allow)."""
    response = await pki_api.client.options("/v1/tenants")
    assert response.status_code == 204
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST", "OPTIONS"}
    assert cors_headers(response) == {}


async def test_request_fields_are_bounded_and_errors_name_the_field(pki_api):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    post = api.client.post
    ca = {"kind": "root", "tenant_id": "acme", "name": "r", "subject": {"common_name": "r"}}
    issue = {"tenant_id": "acme", "ca_id": "0" * 36, "subject": {"common_name": "n"}}
    cases = [
        (post("/v1/tenants", json={"tenant_id": "x-1", "name": "X", "admin": True}, headers=admin), "admin"),
        (post("/v1/cas", json={**ca, "subject": {"common_name": "c" * 257}}, headers=admin), "subject.common_name"),
        (post("/v1/cas", json={**ca, "subject": {"common_name": "c", "organization": "o" * 300}}, headers=admin),
         "subject.organization"),
        (post("/v1/cas", json={**ca, "name_constraints": {"permitted_dns": ["a.example"] * 257}}, headers=admin),
         "name_constraints.permitted_dns"),
        (post("/v1/cas", json={**ca, "subject": {"common_name": "c", "title": "x"}}, headers=admin), "subject.title"),
        (post("/v1/certificates", json={**issue, "sans": {"dns": [f"n{i}.example" for i in range(101)]}},
              headers=admin), "sans.dns"),
        (post("/v1/certificates", json={**issue, "sans": {"uri": ["https://x/" + "a" * 2048]}}, headers=admin),
         "sans.uri[0]"),
        (post("/v1/certificates", json={**issue, "tags": ["t" * 65]}, headers=admin), "tags[0]"),
        (post("/v1/certificates", json={**issue, "tenant_id": "Not A Tenant"}, headers=admin), "tenant_id"),
        (api.client.put("/v1/tenants/acme/policy", json={"allowed_dns": ["a.example"] * 257}, headers=admin),
         "allowed_dns"),
        (api.client.put("/v1/tenants/acme/policy", json={"allowed_dns": ["a" * 256]}, headers=admin),
         "allowed_dns[0]"),
        (post("/v1/profiles", json={"tenant_id": "acme", "profile": {"name": "p" * 64}}, headers=admin),
         "profile.name"),
    ]
    for call, field in cases:
        body = assert_problem(await call, 400, "validation_failed")
        assert body["field"] == field, body


async def test_a_ca_certificate_larger_than_a_request_may_be_is_refused_not_a_crash(pki_api):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    pem = self_signed_ca_pem(organization="x" * 300)  # no request could carry this subject; it must not reach an event
    response = await api.client.post("/v1/cas/import", headers=admin,
                                     json={"tenant_id": "acme", "name": "big", "certificate_pem": pem})
    assert_problem(response, 422, "invalid_certificate", "certificate_pem")
