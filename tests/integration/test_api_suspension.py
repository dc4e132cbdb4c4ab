"""A suspended tenant over HTTP: everything that signs, adds or re-enables a key, CA, credential or subscription, or
hands out a private key or secret, is refused (422 tenant_suspended, field tenant_id) and writes nothing;
revocation, reads, certificate-only exports, CRL and OCSP, sign-in and taking things away go on; resuming (a
platform admin's command) opens it again.

The refusals are the handlers commands/tenants.py WHILE_SUSPENDED marks refused: one request each, or the module
fails by name (as test_authz_matrix.py does for routes). The requests are the authorization matrix's.
"""

from __future__ import annotations

import base64

import pytest
import pytest_asyncio
import test_authz_matrix as matrix
from authz_support import World, build_tenant, caught_up, self_signed_ca_pem
from cryptography import x509
from cryptography.x509 import ocsp
from test_api_revocation import ask, ocsp_request, pem_certs
from test_api_support import assert_problem, running_api

from api.permissions import while_suspended

pytestmark = pytest.mark.asyncio(loop_scope="module")
SUSPENDED = "sus-tenant"
Call, R = matrix.Call, matrix.REQUESTS


def _t(w: World):
    return w.tenants[SUSPENDED]


# handler (commands/tenants.py WHILE_SUSPENDED) -> the requests that reach it
REFUSED: dict[str, list] = {
    "cas.create_root_ca": [R[("POST", "/v1/cas")]],
    "cas.create_intermediate_ca": [lambda w, t: Call("POST", "/v1/cas", json={
        "kind": "intermediate", "tenant_id": t, "parent_id": _t(w).root, "name": "more", "algorithm": "ecdsa-p384",
        "subject": {"common_name": "another intermediate"}})],
    "cas.import_offline_root": [R[("POST", "/v1/cas/import")]],
    "cas.request_offline_intermediate": [R[("POST", "/v1/cas/offline-intermediate")]],
    "cas.install_ca_certificate": [R[("POST", "/v1/cas/{ca_id}/certificate")]],
    "cas.cross_certify": [R[("POST", "/v1/cas/{ca_id}/cross-sign")]],
    "ca_rollover.rollover_ca_key": [R[("POST", "/v1/cas/{ca_id}/rollover")]],
    "cas.enable_ca": [R[("POST", "/v1/cas/{ca_id}/enable")]],
    "compromised_keys.lift_key_compromise": [
        R[("POST", "/v1/tenants/{tenant_id}/compromised-keys/{public_key_sha256}/lift")]],
    "certificates.issue_certificate": [R[("POST", "/v1/certificates")]],
    "certificates.export_private_key": [matrix.WITH_KEY[("GET", "/v1/certificates/{certificate_id}/export")]] + [
        lambda w, t, params=params: Call("GET", f"/v1/certificates/{_t(w).certificate}/export", params=params,
                                         headers=matrix.PKCS12)
        for params in ({"format": "jks"}, {"format": "pem", "include_key": "true"})],
    "identity.create_user": [R[("POST", "/v1/users")]],
    "identity.grant_role": [R[("POST", "/v1/users/{username}/roles")]],
    "identity.reset_password": [R[("POST", "/v1/users/{username}/password")]],
    "identity.set_user_status": [R[("POST", "/v1/users/{username}/enable")]],
    "mfa.reset_totp": [R[("DELETE", "/v1/users/{username}/totp")]],
    "profiles.create_profile": [R[("POST", "/v1/profiles")]],
    "profiles.update_profile": [R[("PUT", "/v1/profiles/{name}")]],
    "renewal.renew_certificate": [lambda w, t: Call("POST", f"/v1/certificates/{_t(w).certificate}/renew", json={})],
    "tokens.create_service_account": [R[("POST", "/v1/service-accounts")]],
    "tokens.issue_api_token": [R[("POST", "/v1/service-accounts/{name}/keys")]],
    "service_accounts.enable_service_account": [R[("POST", "/v1/service-accounts/{name}/enable")]],
    "webhooks.create_webhook": [R[("POST", "/v1/webhooks")]],
    "acme_eab.create_eab_key": [R[("POST", "/v1/tenants/{tenant_id}/acme/eab-keys")]],
    "webhooks.update_webhook": [R[("PATCH", "/v1/webhooks/{webhook_id}")]],
    "webhooks.rotate_webhook_secret": [R[("POST", "/v1/webhooks/{webhook_id}/rotate-secret")]],
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    async with running_api(tmp_path_factory.mktemp("suspension"), max_body_bytes=1 << 20) as api:
        world = World(api=api, admin=await api.admin(), import_pem=self_signed_ca_pem())
        world.tenants[SUSPENDED] = await build_tenant(api, world.admin, SUSPENDED)
        world.tokens[("tenant-admin", SUSPENDED)] = await api.token("tenant-admin", tenant_id=SUSPENDED)
        suspended = await api.client.post(f"/v1/tenants/{SUSPENDED}/suspend", json={"reason": "unpaid"},
                                          headers=world.admin)
        assert suspended.status_code == 200, suspended.text
        await caught_up(api)
        yield world


def tenant_admin(world: World) -> dict:
    return world.headers("tenant-admin", SUSPENDED)


async def send(world: World, call, headers: dict):
    return await world.api.client.request(call.method, call.path, params=call.params, json=call.json,
                                          headers={**headers, **call.headers})


# refused handlers no HTTP request reaches -> the test that holds them to it
CLI_ONLY: dict[str, str] = {
    "deployments.deploy_certificate": "test_cluster_deploy.py::test_a_suspended_tenant_deploys_nothing_and_records_nothing",
    "deployments.rollback_deployment":
        "test_cluster_verify_rollback.py::test_a_suspended_tenant_rolls_nothing_back_and_records_nothing",
    # ACME requests are signed by account keys, not tokens: test_acme_api.py sends them to a suspended tenant
    "acme_accounts.new_account": "test_acme_api.py::test_a_suspended_tenant_opens_no_account_and_issues_nothing",
    "acme.new_order": "test_acme_api.py::test_a_suspended_tenant_opens_no_account_and_issues_nothing",
    "acme.finalize_order": "test_acme_api.py::test_a_suspended_tenant_opens_no_account_and_issues_nothing",
}


async def test_every_refused_handler_has_a_request_here():
    refused = {name for name, rule in while_suspended().items() if rule.refused}  # every command module's
    covered = REFUSED.keys() | CLI_ONLY.keys()
    assert refused == covered, f"no request for {sorted(refused - covered)}; not refused: {sorted(covered - refused)}"


@pytest.mark.parametrize("handler", sorted(REFUSED))
async def test_what_signs_adds_credentials_or_hands_out_keys_is_refused_and_writes_nothing(world, handler):
    head = await world.api.runtime.store.head_position()
    for build in REFUSED[handler]:
        for headers in (tenant_admin(world), world.admin):  # the tenant's own admin, and a platform admin
            response = await send(world, build(world, SUSPENDED), headers)
            assert_problem(response, 422, "tenant_suspended", field="tenant_id")
    written = await world.api.runtime.store.read_all(head, 1000)  # the audit checkpointer's own may come
    assert [e.type for e in written if e.tenant_id == SUSPENDED] == [], "a refused command wrote events"


async def test_reads_and_certificate_only_exports_go_on(world):
    t, headers = _t(world), tenant_admin(world)
    tenant = await world.api.client.get(f"/v1/tenants/{SUSPENDED}", headers=headers)
    assert tenant.status_code == 200 and tenant.json()["status"] == "suspended"
    for path in (f"/v1/cas/{t.issuing}", f"/v1/cas/{t.issuing}/chain", f"/v1/certificates/{t.certificate}",
                 f"/v1/cas/{t.issuing}/crl", f"/v1/cas/{t.issuing}/certificate"):
        response = await world.api.client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
    for export in ("pem", "der", "pkcs12-truststore", "jks-truststore"):
        response = await world.api.client.get(f"/v1/certificates/{t.certificate}/export", params={"format": export},
                                              headers={**headers, **matrix.PKCS12})
        assert response.status_code == 200, (export, response.text)


async def test_sign_in_and_signing_out_everywhere_go_on(world):
    password = await world.api.client.post("/v1/auth/token", data={
        "grant_type": "password", "username": _t(world).user, "password": matrix.MATRIX_PASSWORD,
        "tenant_id": SUSPENDED})
    assert password.status_code == 200, password.text
    everywhere = await world.api.client.post("/v1/auth/sessions/revoke-all", json={"keep_current": True},
                                             headers={"Authorization": f"Bearer {password.json()['access_token']}"})
    assert everywhere.status_code == 200 and everywhere.json()["kept_session"] is True, everywhere.text
    key = tenant_admin(world)["Authorization"].split()[1]
    basic = base64.b64encode(f"x:{key}".encode()).decode()
    client = await world.api.client.post("/v1/auth/token", data={"grant_type": "client_credentials"},
                                         headers={"Authorization": f"Basic {basic}"})
    assert client.status_code == 200, client.text


async def test_revocation_crl_and_ocsp_go_on(world):
    api, t, headers = world.api, _t(world), tenant_admin(world)
    revoked = await api.client.post(f"/v1/certificates/{t.certificate}/revoke", headers=headers,
                                    json={"reason": "key_compromise"})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["crls"], "the issuer's CRL is published at once, as in an active tenant"
    crl = x509.load_der_x509_crl((await api.client.get(f"/v1/cas/{t.issuing}/crl")).content)
    row = (await api.client.get(f"/v1/certificates/{t.certificate}", headers=headers)).json()
    leaf = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    issuer = pem_certs((await api.client.get(f"/v1/cas/{t.issuing}/chain", headers=headers)).text)[0]
    answer = await ask(api, t.issuing, ocsp_request(leaf, issuer))  # its responder is issued now, as usual
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    ca = await api.client.post(f"/v1/cas/{t.spare}/revoke", headers=headers, json={"reason": "key_compromise"})
    assert ca.status_code == 200, ca.text


async def test_taking_things_away_goes_on(world):
    t, headers, client = _t(world), tenant_admin(world), world.api.client
    q = {"tenant_id": SUSPENDED}
    calls = [
        ("POST", f"/v1/cas/{t.issuing}/disable", None, {"reason": "incident"}),
        ("DELETE", f"/v1/users/{t.user}/roles/viewer", q, None),
        ("POST", f"/v1/users/{t.user}/unlock", q, None),
        ("POST", f"/v1/users/{t.user}/disable", q, {"reason": "incident"}),
        ("DELETE", f"/v1/service-accounts/{t.service_account}/keys/{t.key}", q, None),
        ("POST", f"/v1/service-accounts/{t.spare_account}/disable", q, {"reason": "incident"}),
        ("DELETE", f"/v1/webhooks/{t.webhook_deleting}", q, None),
        ("POST", f"/v1/profiles/{t.retiring}/retire", None, {"tenant_id": SUSPENDED, "reason": "incident"}),
        ("POST", f"/v1/tenants/{SUSPENDED}/rename", None, {"name": "Suspended Corp"}),
    ]
    for method, path, params, body in calls:
        response = await client.request(method, path, params=params, json=body, headers=headers)
        assert response.status_code == 200, (method, path, response.text)


async def test_only_a_platform_admin_resumes_and_then_the_tenant_signs_again(world):
    client, headers = world.api.client, tenant_admin(world)
    own = await client.post(f"/v1/tenants/{SUSPENDED}/resume", json={"reason": "paid"}, headers=headers)
    assert_problem(own, 403, "forbidden")
    resumed = await client.post(f"/v1/tenants/{SUSPENDED}/resume", json={"reason": "paid"}, headers=world.admin)
    assert resumed.status_code == 200, resumed.text
    root = await send(world, R[("POST", "/v1/cas")](world, SUSPENDED), headers)
    assert root.status_code == 201, root.text
    key = await send(world, R[("POST", "/v1/service-accounts/{name}/keys")](world, SUSPENDED), headers)
    assert key.status_code == 201, key.text
