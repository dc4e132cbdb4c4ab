"""The browser UI's user, webhook and observation views (the user and webhook actions of api/ui/js/users.js and
webhooks.js, discovery.js, analytics.js) in real Chromium against `csm serve`: a password reset ends the user's other
session, a TOTP reset and an unlock let the user sign in again, a webhook's secret is shown once, discovered
endpoints are listed with their status and paged, the analytics chart has the API's counts; and every view
test_ui_pki.py drives, with these, fits a phone's viewport."""

from __future__ import annotations

import base64
import datetime as dt
import re
import time

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from ui_support import (OVERFLOW, TENANT, browser, chromium, head, in_form, no_problems, playwright,  # noqa: F401
                        sign_in, start_service, tenant_admin_page)

from domain import totp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The UI's server; the lockout test fails five sign-ins of one user, then signs in twice."""
    yield from start_service(tmp_path_factory.mktemp("ui-operations"),
                             {"CSM_RATE_LIMIT_LOGIN_PER_USERNAME": "20/minute"})


def test_a_password_reset_ends_the_users_other_session(service, browser):
    password = service.user("rosa", "viewer")
    other = browser.page()
    sign_in(other, service.base, "rosa", password)
    other.get_by_role("heading", name=re.compile("^Overview")).wait_for()

    page = tenant_admin_page(service, browser, "ui-reset")
    page.goto(f"{service.base}/ui/#/users/rosa")
    access = page.locator("#access")
    assert access.get_by_role("button", name="Unlock").is_disabled()  # not locked out
    assert access.get_by_role("button", name="Reset TOTP").is_disabled()  # no TOTP to reset
    access.get_by_role("button", name="Reset password").click()
    page.get_by_text("Every session of the user ends at once").wait_for()
    page.get_by_role("button", name="Cancel").click()  # nothing sent
    assert page.locator("#one-time-secret").count() == 0
    access.get_by_role("button", name="Reset password").click()
    page.get_by_role("button", name="Yes, reset the password").click()
    page.locator("#one-time-secret").wait_for()
    fresh = page.locator("#one-time-secret").inner_text()
    assert len(fresh) == 20 and fresh != password
    assert fresh not in page.evaluate("JSON.stringify(Object.entries(sessionStorage))")

    other.get_by_role("link", name="Certificates", exact=True).click()  # its next call is refused: signed out
    other.get_by_role("heading", name="Sign in").wait_for()
    sign_in(other, service.base, "rosa", password)
    other.locator("#f-password-error").wait_for()  # the old password is refused
    sign_in(other, service.base, "rosa", fresh)
    other.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    page.get_by_role("button", name="I have saved it").click()
    assert page.locator("#one-time-secret").count() == 0
    no_problems(page)


def _enroll_totp(service, username: str, password: str) -> None:
    """The user sets up TOTP through the API (as the sign-in view's enrollment does)."""
    tokens = httpx.post(f"{service.base}/v1/auth/token", data={"grant_type": "password", "username": username,
                                                                "password": password, "tenant_id": TENANT}, timeout=30)
    assert tokens.status_code == 200, tokens.text
    own = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    enrollment = service.post("/v1/auth/totp", {}, headers=own)
    code = totp.totp(base64.b32decode(enrollment["secret"]), time.time())
    service.post("/v1/auth/totp/confirm", {"code": code}, headers=own)


def test_a_lost_totp_device_is_reset_after_a_confirmation(service, browser):
    password = service.user("tomas", "viewer")
    _enroll_totp(service, "tomas", password)
    # the users read model, at least where the enrollment landed: the page below reads it once, with no live reload
    assert service.get("/v1/users/tomas", tenant_id=TENANT, min_position=head(service)).json()["totp_enabled"] is True
    page = tenant_admin_page(service, browser, "ui-totp")
    page.goto(f"{service.base}/ui/#/users/tomas")
    page.locator("#access").get_by_role("button", name="Reset TOTP").click()
    page.get_by_role("button", name="Yes, reset TOTP").click()
    page.locator("#access button:disabled", has_text="Reset TOTP").wait_for()
    assert service.get("/v1/users/tomas", tenant_id=TENANT).json()["totp_enabled"] is False
    other = browser.page()
    sign_in(other, service.base, "tomas", password)  # no code asked any more
    other.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    no_problems(page)


def test_a_locked_out_user_is_unlocked(service, browser):
    password = service.user("ulrich", "viewer")
    for _ in range(5):  # CSM_LOGIN_MAX_FAILURES: five wrong passwords lock the account
        wrong = httpx.post(f"{service.base}/v1/auth/token", data={"grant_type": "password", "username": "ulrich",
                                                                   "password": "wrong-" + password, "tenant_id": TENANT})
        assert wrong.status_code in (401, 423, 429), wrong.text
    # the lockout in the users read model, which the page below reads once (no live reload)
    assert service.get("/v1/users/ulrich", tenant_id=TENANT, min_position=head(service)).json()["locked_until"]
    page = tenant_admin_page(service, browser, "ui-unlock")
    page.goto(f"{service.base}/ui/#/users/ulrich")
    page.locator("#access").get_by_text("Locked after failed sign-ins until").wait_for()
    page.locator("#access").get_by_role("button", name="Unlock").click()  # no session to end: no confirmation
    page.locator("#access").get_by_text("Not locked out.").wait_for()
    assert service.get("/v1/users/ulrich", tenant_id=TENANT).json()["locked_until"] is None
    right = httpx.post(f"{service.base}/v1/auth/token", data={"grant_type": "password", "username": "ulrich",
                                                               "password": password, "tenant_id": TENANT})
    assert right.status_code == 200, right.text
    other = browser.page()
    sign_in(other, service.base, "ulrich", password)
    other.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    no_problems(page)


def test_a_webhook_is_changed_and_its_secret_rotated_and_shown_once(service, browser):
    made = service.post("/v1/webhooks", {"tenant_id": TENANT, "url": "https://hooks.example.com/old",
                                         "event_types": ["certificate.revoked"]})
    page = tenant_admin_page(service, browser, "ui-hooks")
    page.get_by_role("link", name="Webhooks", exact=True).click()
    page.get_by_role("button", name="Change https://hooks.example.com/old").click()
    edit = in_form(page, "Change the webhook to https://hooks.example.com/old")
    edit.get_by_label("URL").fill("https://hooks.example.com/new")
    edit.get_by_label("certificate.renewed", exact=True).check()
    edit.get_by_label("Enabled (deliveries are sent)").uncheck()
    edit.get_by_role("button", name="Save webhook").click()
    page.get_by_role("button", name="Change https://hooks.example.com/new").wait_for()
    hook = service.get(f"/v1/webhooks/{made['webhook_id']}", tenant_id=TENANT, min_position=head(service)).json()
    assert (hook["url"], hook["enabled"]) == ("https://hooks.example.com/new", False)
    assert hook["event_types"] == ["certificate.renewed", "certificate.revoked"]

    page.get_by_role("button", name="Rotate the secret of https://hooks.example.com/new").click()
    page.get_by_role("button", name="Yes, rotate").click()
    page.locator("#one-time-secret").wait_for()
    secret = page.locator("#one-time-secret").inner_text()
    assert secret and secret != made["secret"]
    assert secret not in page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    hook = service.get(f"/v1/webhooks/{made['webhook_id']}", tenant_id=TENANT, min_position=head(service)).json()
    assert hook["secret_rotated_at"]
    page.get_by_role("button", name="I have saved it").click()
    assert secret not in page.content()
    no_problems(page)


def _foreign_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "legacy.acme.internal")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _pem(service, made: dict) -> str:
    return service.get(f"/v1/certificates/{made['certificate_id']}",
                       min_position=made["global_position"]).json()["certificate_pem"]


def test_discovered_endpoints_are_listed_with_their_status_and_paged(service, browser):
    live = service.issue("db1.acme.internal")
    gone = service.issue("db2.acme.internal")
    old = service.issue("db3.acme.internal")
    service.post(f"/v1/certificates/{gone['certificate_id']}/revoke", {"reason": "superseded"})
    renewed = service.post(f"/v1/certificates/{old['certificate_id']}/renew", {})
    now = dt.datetime.now(dt.UTC).isoformat()
    seen = {"observed_at": now, "tls_version": "TLSv1.3"}
    service.post(f"/v1/tenants/{TENANT}/discovered", {"observations": [
        {"host": "db1.acme.internal", "port": 9142, "certificate_pem": _pem(service, live), "chain_pem": [],
         "client_certificate": "required", **seen},
        {"host": "db2.acme.internal", "port": 9142, "certificate_pem": _pem(service, gone), **seen},
        {"host": "db3.acme.internal", "port": 9142, "certificate_pem": _pem(service, old), **seen},
        {"host": "db4.acme.internal", "port": 9142, "certificate_pem": _foreign_pem(), **seen},
        {"host": "db5.acme.internal", "port": 9142, "observed_at": now, "error": "refused",
         "reason": "connection refused"}]})
    expected = {"db1": "matched", "db2": "revoked", "db3": "superseded", "db4": "unmanaged", "db5": "unreachable"}
    page = tenant_admin_page(service, browser, "ui-discovery")
    page.goto(f"{service.base}/ui/#/discovery?limit=2")
    found: dict[str, str] = {}
    for _ in range(3):  # 5 endpoints, 2 a page
        page.locator("#endpoints table").wait_for()
        rows = page.locator("#endpoints tbody tr")
        for i in range(rows.count()):
            endpoint = rows.nth(i).locator("td").first.inner_text()
            found[endpoint.split(".")[0]] = rows.nth(i).locator("[data-status]").get_attribute("data-status")
        link = page.get_by_role("link", name="Next page")
        if link.count() == 0:
            break
        first = rows.first.inner_text()
        link.click()
        page.wait_for_function("first => document.querySelector('#endpoints tbody tr')?.innerText !== first", arg=first)
    assert found == expected
    assert page.get_by_role("link", name="Next page").count() == 0
    page.goto(f"{service.base}/ui/#/discovery")
    page.locator("#endpoints table").wait_for()
    row = page.locator("#endpoints tbody tr", has_text="db3.acme.internal")
    row.get_by_role("link", name=f"{renewed['certificate_id'][:12]}…").wait_for()  # its successor
    cells = page.locator("#endpoints tbody tr", has_text="db1.acme.internal").locator("td").all_inner_texts()
    assert "required" in cells and any(cell.startswith("0 sent") for cell in cells), cells
    no_problems(page)


def test_the_analytics_chart_has_a_bar_a_day_with_the_apis_counts(service, browser):
    for n in range(3):
        service.issue(f"chart{n}.acme.internal")
    today = dt.datetime.now(dt.UTC).date()
    since = today - dt.timedelta(days=6)
    report = service.get(f"/v1/tenants/{TENANT}/analytics", since=since.isoformat(), until=today.isoformat(),
                         min_position=head(service)).json()
    issued = {d["day"]: sum(d["counts"].get("certificate.issued", {}).values()) for d in report["days"]}
    assert issued.get(today.isoformat(), 0) >= 3
    page = tenant_admin_page(service, browser, "ui-analytics")
    page.get_by_role("link", name="Analytics", exact=True).click()
    page.locator("svg.chart").wait_for()
    assert page.locator("svg.chart rect.bar").count() == 30  # the last 30 days by default
    form = page.locator("form[aria-label=Range]")
    form.get_by_label("From (UTC day)").fill(since.isoformat())
    form.get_by_label("To (UTC day)").fill(today.isoformat())
    form.get_by_role("button", name="Show").click()
    page.wait_for_function("() => document.querySelectorAll('svg.chart rect.bar').length === 7")
    bars = page.locator("svg.chart rect.bar")
    drawn = {bars.nth(i).get_attribute("data-day"): int(bars.nth(i).get_attribute("data-count")) for i in range(7)}
    assert drawn == {(since + dt.timedelta(days=i)).isoformat(): issued.get((since + dt.timedelta(days=i)).isoformat(), 0)
                     for i in range(7)}
    assert float(page.locator(f"svg.chart rect.bar[data-day='{today.isoformat()}']").get_attribute("height")) > 0
    page.locator("#analytics table").get_by_text(today.isoformat()).wait_for()

    form.get_by_label("From (UTC day)").fill(today.isoformat())
    form.get_by_label("To (UTC day)").fill(since.isoformat())  # backwards: refused, next to the field it names
    form.get_by_role("button", name="Show").click()
    page.wait_for_function("() => document.querySelector('form[aria-label=Range] [name=since]')"
                           ".getAttribute('aria-invalid') === 'true'")
    no_problems(page, console=False)


def test_the_new_views_fit_a_phone_and_raise_no_console_error(service, browser):
    page = browser.page(width=390, height=844)
    sign_in(page, service.base, api_key=service.key("ui-phone", "platform-admin", tenant=None))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    views = [("#/profiles", "Certificate profiles", "#create-profile"),
             ("#/profiles/cassandra-node", "cassandra-node", "dl.facts"),
             ("#/policy", "Tenant policy", "#edit-policy"), ("#/acme", "ACME", "#create-eab-key"),
             ("#/compromised", "Compromised keys", "#report-compromised"),
             ("#/discovery", "Discovered endpoints", "#endpoints :is(p, table)"),
             ("#/analytics", "Analytics", "svg.chart"), (f"#/cas/{service.ca_id}", "Acme clients", "#cross-sign")]
    for hash_, heading, last in views:
        page.goto(f"{service.base}/ui/{hash_}")
        page.get_by_role("heading", name=re.compile("^" + re.escape(heading))).first.wait_for()
        page.locator(last).first.wait_for()
        assert page.evaluate(OVERFLOW) <= 0, hash_
    page.goto(f"{service.base}/ui/#/users/rosa" if service.passwords.get("rosa") else f"{service.base}/ui/#/users")
    page.locator("#main h1").wait_for()
    assert page.evaluate(OVERFLOW) <= 0
    no_problems(page)
