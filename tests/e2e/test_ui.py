"""The browser UI (api/webui.py, api/ui/) in real Chromium against `csm serve`: sign-in, the admin dashboard with
live updates, the developer portal's in-browser keys and CSRs, role-based hiding, XSS, CSP and a phone's viewport."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ui_support import (TENANT, UI_CSP, browser, chromium, no_problems, page_problems, playwright,  # noqa: F401
                        service, sign_in)

from commands.authz import PLATFORM_ONLY, ROLES
from domain import totp

pytestmark = pytest.mark.slow


def test_the_ui_is_served_with_a_strict_policy_and_the_api_keeps_its_own(service):
    page = httpx.get(f"{service.base}/ui/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == UI_CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]  # revalidated: a new release shows
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline for the policy to allow
    script = httpx.get(f"{service.base}/ui/js/app.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == UI_CSP
    roles = httpx.get(f"{service.base}/ui/roles.json", timeout=10).json()
    assert roles["roles"] == {role: sorted(granted) for role, granted in ROLES.items()}
    assert roles["platform_only"] == sorted(PLATFORM_ONLY)
    api = service.get("/v1/cas")
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    missing = httpx.get(f"{service.base}/ui/no-such-file.js", timeout=10)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


def test_a_wrong_password_is_shown_next_to_the_field_then_sign_in_and_out(service, browser):
    password = service.user("vera", "viewer")
    page = browser.page()
    sign_in(page, service.base, "vera", "not-" + password)
    error = page.locator("#f-password-error")
    error.wait_for()
    assert "username or password is wrong" in error.inner_text()
    assert page.evaluate("document.activeElement.name") == "password"  # focus goes to the field refused
    assert page.get_by_label("Password").get_attribute("aria-invalid") == "true"
    page.get_by_label("Password").fill(password)
    page.keyboard.press("Enter")  # the form submits from the keyboard
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    stored = json.loads(page.evaluate("sessionStorage.getItem('csm.session')"))
    assert stored["access_token"] and stored["refresh_token"] and page.evaluate("localStorage.length") == 0

    # an access token about to expire is refreshed (the refresh token rotated) before the next call
    page.evaluate("""() => {
        const s = JSON.parse(sessionStorage.getItem('csm.session'));
        sessionStorage.setItem('csm.session', JSON.stringify({...s, expires_at: Date.now()}));
    }""")
    page.reload()
    page.get_by_role("heading", name="Compliance findings").wait_for()
    renewed = json.loads(page.evaluate("sessionStorage.getItem('csm.session')"))
    assert renewed["access_token"] != stored["access_token"] and renewed["refresh_token"] != stored["refresh_token"]
    assert renewed["expires_at"] > stored["expires_at"]
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.get_by_role("heading", name="Sign in").wait_for()
    assert page.evaluate("sessionStorage.getItem('csm.session')") is None
    # signing out ended the session on the server (RFC 7009): neither of its tokens works any more
    ended = page.evaluate("""async ([access, refresh]) => {
        const read = await fetch('/v1/tenants', {headers: {Authorization: `Bearer ${access}`}});
        const again = await fetch('/v1/auth/token', {method: 'POST', body: new URLSearchParams(
            {grant_type: 'refresh_token', refresh_token: refresh})});
        return [read.status, again.status];
    }""", [renewed["access_token"], renewed["refresh_token"]])
    assert ended == [401, 401]
    assert page_problems(page)["csp"] == [] and page_problems(page)["errors"] == []


def test_sign_out_everywhere_ends_the_sessions_of_every_browser(service, browser):
    password = service.user("wendy", "viewer")
    here, there = browser.page(), browser.page()  # two contexts: two devices' sessions
    for page in (here, there):
        sign_in(page, service.base, "wendy", password)
        page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    elsewhere = json.loads(there.evaluate("sessionStorage.getItem('csm.session')"))
    here.get_by_role("button", name="Sign out everywhere").click()
    here.get_by_role("heading", name="Sign in").wait_for()
    assert here.evaluate("sessionStorage.getItem('csm.session')") is None
    read = httpx.get(f"{service.base}/v1/tenants", headers={"Authorization": f"Bearer {elsewhere['access_token']}"},
                     timeout=10)
    again = httpx.post(f"{service.base}/v1/auth/token", timeout=10,
                       data={"grant_type": "refresh_token", "refresh_token": elsewhere["refresh_token"]})
    assert (read.status_code, again.status_code) == (401, 401), again.text
    no_problems(here)


def _clear_of_a_step_boundary(margin: float = 4.0) -> None:
    """Codes are computed here and checked there: keep both in the same 30 s step."""
    left = totp.PERIOD - time.time() % totp.PERIOD
    if left < margin:
        time.sleep(left + 0.1)


def test_a_privileged_user_enrolls_totp_then_signs_in_with_a_code(service, browser):
    password = service.user("tara", "tenant-admin")
    page = browser.page()
    sign_in(page, service.base, "tara", password)
    page.get_by_role("heading", name="Set up two-factor sign-in").wait_for()
    page.get_by_role("button", name="Show my TOTP key").click()
    secret = base64.b32decode(page.locator("#totp-secret").inner_text())
    _clear_of_a_step_boundary()
    page.get_by_label("Code").fill(totp.totp(secret, time.time() - 30))  # the previous step: the next sign-in's is later
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text("Two-factor sign-in is on").wait_for()
    page.get_by_label("Username").fill("tara")
    page.get_by_label("Password").fill(password)
    page.get_by_label("Tenant").fill(TENANT)
    page.get_by_role("button", name="Sign in").click()  # without a code: the field is named
    page.locator("#f-totp-error").wait_for()
    _clear_of_a_step_boundary()
    page.get_by_label("TOTP code").fill(totp.totp(secret, time.time()))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    page.get_by_role("link", name="Certificates", exact=True).wait_for()


def _row(page, common_name: str):
    return page.locator("#results tr", has=page.get_by_role("link", name=common_name, exact=True))


def test_an_admin_searches_revokes_and_the_list_updates_live(service, browser):
    first = service.issue("live-one.acme.internal")
    page = browser.page()
    sign_in(page, service.base, api_key=service.key("ui-admin", "platform-admin", tenant=None))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    page.get_by_text("Live updates on").wait_for()
    page.get_by_role("link", name="Certificates", exact=True).click()
    page.get_by_label("Common name").fill("live-*")
    page.get_by_role("button", name="Search").click()
    _row(page, "live-one.acme.internal").wait_for()

    service.issue("live-two.acme.internal")  # another client issues: the list shows it without a reload
    _row(page, "live-two.acme.internal").wait_for()
    service.post(f"/v1/certificates/{first['certificate_id']}/revoke", {"reason": "superseded"})
    _row(page, "live-one.acme.internal").locator(".st-revoked").wait_for()

    page.get_by_role("link", name="live-two.acme.internal").click()
    page.get_by_label("Reason").select_option("key_compromise")
    page.get_by_role("button", name="Revoke certificate").click()
    page.get_by_role("button", name="Yes, revoke").click()  # the confirmation step
    page.locator("h1 .st-revoked").wait_for()
    assert page.get_by_role("button", name="Revoke certificate").count() == 0
    page.go_back()
    _row(page, "live-two.acme.internal").locator(".st-revoked").wait_for()
    no_problems(page)


def test_a_reload_of_the_view_left_behind_does_not_draw_over_the_view_on_screen(service, browser):
    """A certificate's page reloads when an event comes, at the event's position (a read that may wait); the user
    moves on meanwhile. That reload, answered late, drew the certificate's page over the list now shown (seen under
    load: the list's "Next page" was taken away mid-click). Its answer is held here until the list is shown."""
    left = service.issue("reload-left.acme.internal")
    page = browser.page()
    sign_in(page, service.base, api_key=service.key("ui-reload", "tenant-admin"))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    page.get_by_text("Live updates on").wait_for()
    page.goto(f"{service.base}/ui/#/certs/{left['certificate_id']}")
    page.get_by_role("heading", name=re.compile("reload-left")).wait_for()
    held = []  # the first reload's request; any later one goes through
    page.route(re.compile(rf"/v1/certificates/{left['certificate_id']}\?.*min_position="),
               lambda route: route.continue_() if held else held.append(route))
    with page.expect_request(lambda r: f"/v1/certificates/{left['certificate_id']}?" in r.url):
        service.issue("reload-first.acme.internal")  # an event: the certificate's page reads itself again
    page.goto(f"{service.base}/ui/#/certs?common_name=reload-*")
    _row(page, "reload-left.acme.internal").wait_for()
    assert held
    with page.expect_response(lambda r: f"/v1/certificates/{left['certificate_id']}/deployments" in r.url):
        held[0].continue_()  # the certificate's page, left behind, finishes its reload now
    service.issue("reload-second.acme.internal")  # the list, still on screen, reloads and shows it
    _row(page, "reload-second.acme.internal").wait_for()
    assert page.get_by_role("heading", name="Certificates", exact=True).count() == 1
    no_problems(page)


def test_live_reloads_of_a_view_answered_out_of_order_leave_the_newer_drawn(service, browser):
    """Each live reload reads at its event's position (min_position, a read that may wait), so two reloads of the list
    can answer out of order. The first reload's answer is held here until the second has drawn, then given the list
    as it was at the first (without the second certificate): it drew that over the newer list. Now the second's
    drawing aborts the first, still in flight, which draws nothing."""
    from playwright.sync_api import Error as PlaywrightError  # installed: the fixtures skipped otherwise
    service.issue("order-zero.acme.internal")
    page = browser.page()
    sign_in(page, service.base, api_key=service.key("ui-order", "tenant-admin"))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    page.get_by_text("Live updates on").wait_for()
    page.goto(f"{service.base}/ui/#/certs?common_name=order-*")
    _row(page, "order-zero.acme.internal").wait_for()
    held = []  # the first reload; any later one goes through
    page.route(re.compile(r"/v1/certificates\?.*min_position="),
               lambda route: route.continue_() if held else held.append(route))
    with page.expect_request(lambda r: "/v1/certificates?" in r.url and "min_position=" in r.url) as first:
        service.issue("order-one.acme.internal")  # an event: the list reloads at its position
    _row(page, "order-zero.acme.internal").wait_for()  # a round trip: the route's handler (before it) has run
    assert held
    older = held[0].fetch()  # the first reload's answer, as the list was then: order-zero and order-one
    assert "order-one.acme.internal" in older.text() and "order-two" not in older.text()
    service.issue("order-two.acme.internal")  # another: the second reload answers at once and draws
    _row(page, "order-two.acme.internal").wait_for()
    with contextlib.suppress(PlaywrightError):  # aborted by the page (the fix): there is nothing left to answer
        held[0].fulfill(response=older)
    assert first.value.response() is None and first.value.failure, "the first reload was answered after the second"
    _row(page, "order-one.acme.internal").wait_for()
    assert _row(page, "order-two.acme.internal").is_visible()  # the older list was not drawn over it
    service.issue("order-three.acme.internal")  # and the list still reloads live
    _row(page, "order-three.acme.internal").wait_for()
    no_problems(page)


def test_a_live_reload_still_draws_while_a_later_one_is_in_flight(service, browser):
    """A reload is aborted only by a later one that has drawn, not by one that has merely started: with events coming
    faster than a slow view reads, aborting at the start would abort every reload before it drew. Both reloads are
    held here; the first, let through while the second still waits, draws."""
    service.issue("slow-zero.acme.internal")
    page = browser.page()
    sign_in(page, service.base, api_key=service.key("ui-slow", "tenant-admin"))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    page.get_by_text("Live updates on").wait_for()
    page.goto(f"{service.base}/ui/#/certs?common_name=slow-*")
    _row(page, "slow-zero.acme.internal").wait_for()
    held, reloads = [], re.compile(r"/v1/certificates\?.*min_position=")  # both reloads held
    page.route(reloads, lambda route: held.append(route))
    reload = lambda r: "/v1/certificates?" in r.url and "min_position=" in r.url  # noqa: E731
    with page.expect_request(reload):
        service.issue("slow-one.acme.internal")
    with page.expect_request(reload):
        service.issue("slow-two.acme.internal")  # the second reload starts: the first is still in flight
    _row(page, "slow-zero.acme.internal").wait_for()  # a round trip: the route's handlers have run
    assert len(held) == 2
    held[0].continue_()  # the first answers now (the list as it is: both new certificates in it) and draws
    _row(page, "slow-two.acme.internal").wait_for()
    _row(page, "slow-one.acme.internal").wait_for()
    held[1].continue_()
    page.unroute(reloads)
    service.issue("slow-three.acme.internal")  # and later reloads draw as before
    _row(page, "slow-three.acme.internal").wait_for()
    no_problems(page)


def _downloaded(page, button: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.get_by_role("button", name=button).click()
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target


def _verify(folder: Path, service, certificate: Path) -> None:
    root = folder / "root.pem"
    root.write_text(service.get(f"/v1/cas/{service.root_id}/chain").text.split("-----END CERTIFICATE-----")[-2]
                    + "-----END CERTIFICATE-----\n")
    chain = folder / "issuing.pem"
    chain.write_text(service.get(f"/v1/cas/{service.ca_id}/chain", include_root="false").text)
    run = subprocess.run(["openssl", "verify", "-CAfile", str(root), "-untrusted", str(chain), str(certificate)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and ": OK" in run.stdout, run.stdout + run.stderr


def test_a_developer_makes_the_key_in_the_browser_and_gets_a_certificate_openssl_verifies(service, browser,
                                                                                          tmp_path):
    password = service.user("dev", "developer")
    page = browser.page()
    sent = []
    page.on("request", lambda r: sent.append(r.post_data or "") if r.method == "POST" else None)
    sign_in(page, service.base, "dev", password)
    page.get_by_role("heading", name="Request a certificate").wait_for()  # a developer's home
    assert page.get_by_role("link", name="Audit").count() == 0
    page.get_by_label("Common name").fill("app1.acme.internal")
    page.get_by_label("DNS names").fill("app1.acme.internal, app1-alt.acme.internal")
    page.get_by_role("button", name="Request certificate").click()
    page.locator("#issued").wait_for()
    key_file = _downloaded(page, "Download private key (PKCS#8 PEM)", tmp_path)
    cert_file = _downloaded(page, "Download certificate", tmp_path)
    chain_file = _downloaded(page, "Download CA chain", tmp_path)

    assert not any("PRIVATE KEY" in body for body in sent), "the private key left the browser"
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
    assert certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "app1.acme.internal"
    assert certificate.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "Acme Client CA"
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["app1.acme.internal", "app1-alt.acme.internal"]
    assert "BEGIN CERTIFICATE" in chain_file.read_text()
    _verify(tmp_path, service, cert_file)
    no_problems(page)


def test_a_developer_pastes_a_csr_made_with_the_openssl_command_shown(service, browser, tmp_path):
    password = service.passwords.get("dev") or service.user("dev", "developer")
    page = browser.page()
    sign_in(page, service.base, "dev", password)
    page.get_by_label("I have a CSR").check()
    page.get_by_label("Common name").fill("app2.acme.internal")
    page.get_by_label("Email addresses").fill("team@acme.example")
    command = page.locator("#openssl-command").inner_text()
    assert "/CN=app2.acme.internal" in command and "email:team@acme.example" in command
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, capture_output=True)
    page.get_by_label("CSR (PEM)").fill((tmp_path / "client.csr").read_text())
    page.get_by_role("button", name="Request certificate").click()
    page.locator("#issued").wait_for()
    assert page.get_by_role("button", name="Download private key (PKCS#8 PEM)").count() == 0  # the key is yours
    cert_file = _downloaded(page, "Download certificate", tmp_path)
    _verify(tmp_path, service, cert_file)
    run = subprocess.run(["openssl", "x509", "-noout", "-pubkey", "-in", str(cert_file)], capture_output=True,
                         text=True, check=True)
    mine = subprocess.run(["openssl", "pkey", "-pubout", "-in", str(tmp_path / "client.key")], capture_output=True,
                          text=True, check=True)
    assert run.stdout == mine.stdout


def test_a_developers_refused_request_names_the_field(service, browser):
    password = service.passwords.get("dev") or service.user("dev", "developer")
    page = browser.page()
    sign_in(page, service.base, "dev", password)
    page.get_by_label("Common name").fill("app3.acme.internal")
    page.get_by_label("Validity (days)").fill("5000")  # beyond the profile's maximum: the server refuses it
    page.get_by_role("button", name="Request certificate").click()
    page.locator("#f-validity_days-error").wait_for()
    assert "validity" in page.locator("#f-validity_days-error").inner_text().lower()
    assert page.locator("#issued").count() == 0
    page.get_by_label("I have a CSR").check()
    page.get_by_label("Validity (days)").fill("")
    page.get_by_label("CSR (PEM)").fill("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    page.get_by_role("button", name="Request certificate").click()
    error = page.locator("#f-csr-error")
    error.wait_for()
    assert error.inner_text()
    page.locator("#f-validity_days-error").wait_for(state="hidden")  # the earlier refusal is cleared


def test_a_viewer_sees_no_revoke_button_and_a_forced_call_is_refused(service, browser):
    target = service.issue("viewer-target.acme.internal")
    password = service.passwords.get("vera") or service.user("vera", "viewer")
    page = browser.page()
    sign_in(page, service.base, "vera", password)
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    page.goto(f"{service.base}/ui/#/certs/{target['certificate_id']}")
    page.get_by_role("heading", name=re.compile("viewer-target")).wait_for()
    assert page.get_by_role("button", name="Revoke certificate").count() == 0
    assert page.get_by_role("button", name="Renew now").count() == 0
    assert page.get_by_role("link", name="Request a certificate").count() == 0
    status = page.evaluate("""async id => {
        const token = JSON.parse(sessionStorage.getItem('csm.session')).access_token;
        const r = await fetch(`/v1/certificates/${id}/revoke`, {method: 'POST', body: '{}',
            headers: {Authorization: `Bearer ${token}`, 'Content-Type': 'application/json'}});
        return [r.status, (await r.json()).type];
    }""", target["certificate_id"])
    assert status[0] == 403 and status[1].endswith("/forbidden")
    assert service.get(f"/v1/certificates/{target['certificate_id']}").json()["status"] in ("issued", "valid")


XSS = '<img src=x onerror="window.__xss=1">'


def test_markup_in_certificate_fields_is_shown_as_text(service, browser):
    issued = service.issue(XSS, tags=['<script>window.__xss=2</script>'])
    page = browser.page()
    sign_in(page, service.base, api_key=service.key("ui-xss", "tenant-admin"))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    page.goto(f"{service.base}/ui/#/certs?common_name={XSS[:6]}*")
    page.get_by_role("link", name=XSS).wait_for()
    page.get_by_role("link", name=XSS).click()
    page.get_by_role("heading", name=re.compile(re.escape(XSS))).wait_for()
    page.get_by_text("<script>window.__xss=2</script>").wait_for()
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    assert page.url.endswith(issued["certificate_id"])
    no_problems(page)


def test_every_view_loads_with_no_console_error_or_policy_violation(service, browser, tmp_path):
    renewable = service.issue("renew-me.acme.internal")
    page = browser.page()
    response = page.goto(f"{service.base}/ui/")
    assert response.headers["content-security-policy"] == UI_CSP
    sign_in(page, service.base, api_key=service.key("ui-tour", "platform-admin", tenant=None))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    page.get_by_role("heading", name="Compliance findings").wait_for()
    for link, heading in [("CAs", "Certificate authorities"), ("Certificates", "Certificates"),
                          ("Request a certificate", "Request a certificate"), ("Audit", "Audit")]:
        page.get_by_role("link", name=link, exact=True).click()
        page.get_by_role("heading", name=heading, exact=True).wait_for()
    page.locator("#verify-status").wait_for()
    assert "Verified" in page.locator("#verify-status").inner_text()
    page.get_by_role("link", name="CAs", exact=True).click()
    page.get_by_role("link", name="Acme clients").click()
    with page.expect_download() as chain:
        page.get_by_role("button", name="Download chain (PEM)").click()
    assert chain.value.suggested_filename.endswith("-chain.pem")

    page.goto(f"{service.base}/ui/#/certs?common_name=renew-me.acme.internal&limit=1")
    page.get_by_role("link", name="renew-me.acme.internal").click()
    with page.expect_download() as exported:
        page.get_by_role("button", name="Download certificate and chain (PEM)").click()
    exported.value.save_as(tmp_path / "exported.pem")
    assert (tmp_path / "exported.pem").read_text().count("BEGIN CERTIFICATE") == 3  # leaf, issuing CA, root
    page.get_by_role("button", name="Renew now").click()
    page.wait_for_url(lambda url: "/certs/" in url and renewable["certificate_id"] not in url)
    page.locator("dt", has_text="Renews").wait_for()  # the new certificate's page names the one it renewed
    assert page.locator("dt:text-is('Renews') + dd").inner_text() == renewable["certificate_id"]
    page.goto(f"{service.base}/ui/#/certs?common_name=renew-me.acme.internal&limit=1")
    first = page.locator("#results tbody tr").first.inner_text()
    page.get_by_role("link", name="Next page").click()
    page.locator("#results tbody tr").first.wait_for()
    page.wait_for_function("t => (document.querySelector('#results tbody tr')?.innerText ?? t) !== t", arg=first)
    assert page.get_by_role("link", name="Next page").count() == 0  # two certificates, one a page
    page.get_by_role("button", name="Previous page").click()
    page.wait_for_function("t => document.querySelector('#results tbody tr')?.innerText === t", arg=first)
    no_problems(page)


def test_a_phone_sized_viewport_has_no_horizontal_scroll(service, browser):
    target = service.issue("a-rather-long-name-for-a-narrow-screen.apps.acme.internal",
                           sans={"dns": ["a-rather-long-name-for-a-narrow-screen.applications.acme.internal"]})
    password = service.passwords.get("dev") or service.user("dev", "developer")
    page = browser.page(width=390, height=844)
    sign_in(page, service.base, "dev", password)
    page.get_by_role("heading", name="Request a certificate").wait_for()
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.evaluate(overflow) <= 0
    page.get_by_role("link", name="Certificates", exact=True).wait_for(state="hidden")  # behind the menu button
    menu = page.get_by_role("button", name="Menu")
    menu.focus()
    page.keyboard.press("Enter")  # from the keyboard
    assert menu.get_attribute("aria-expanded") == "true"
    page.get_by_role("link", name="Certificates", exact=True).focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Certificates", exact=True).wait_for()
    assert menu.get_attribute("aria-expanded") == "false"
    page.locator("#results tr").first.wait_for()
    assert page.evaluate(overflow) <= 0
    page.goto(f"{service.base}/ui/#/certs/{target['certificate_id']}")
    page.get_by_role("heading", name=re.compile("a-rather-long")).wait_for()
    assert page.evaluate(overflow) <= 0
    page.goto(f"{service.base}/ui/#/overview")
    page.get_by_role("heading", name="Compliance findings").wait_for()
    assert page.evaluate(overflow) <= 0
    no_problems(page)
