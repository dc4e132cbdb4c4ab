"""The browser UI's admin views (api/ui/js/tenants.js, ca_admin.js, issue.js, users.js, webhooks.js, compliance.js)
in real Chromium against `csm serve`: what each creates is checked through the API, secrets are shown once and kept
nowhere, destructive actions wait for a confirmation, a viewer gets no admin control, and a phone's viewport fits."""

from __future__ import annotations

import io
import json
import re
import zipfile

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from ui_support import (OVERFLOW, TENANT, UI_CSP, browser, chromium, in_form, no_problems,  # noqa: F401
                        playwright, service, sign_in, tenant_admin_page)

from domain.compliance import RULES
from domain.webhook import NOTIFIABLE

pytestmark = pytest.mark.slow


def admin_page(service, browser, **size):
    page = browser.page(**size)
    sign_in(page, service.base, api_key=service.key(f"ui-admin-{len(browser.pages)}", "platform-admin", tenant=None))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    return page


def test_the_catalog_the_forms_read_is_the_domains(service):
    answer = httpx.get(f"{service.base}/ui/catalog.json", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-security-policy"] == UI_CSP
    catalog = answer.json()
    assert catalog["webhook_event_types"] == sorted(NOTIFIABLE)
    assert {name: rule["remedy"] for name, rule in catalog["compliance_rules"].items()} == {
        name: rule.remedy for name, rule in RULES.items()}


def test_a_platform_admin_creates_a_tenant_and_a_root_and_an_intermediate(service, browser):
    page = admin_page(service, browser)
    page.get_by_role("link", name="Tenants", exact=True).click()
    form = in_form(page, "Create a tenant")
    form.get_by_label("Tenant id").fill("globex")
    form.get_by_label("Name").fill("Globex")
    form.get_by_label("Maximum CAs").fill("5")
    form.get_by_role("button", name="Create tenant").click()
    page.get_by_role("link", name="globex", exact=True).wait_for()
    tenant = service.get("/v1/tenants/globex").json()
    assert tenant["name"] == "Globex" and tenant["quotas"]["max_cas"] == 5
    assert tenant["quotas"]["max_certificates"] is None
    page.locator("#tenant option[value=globex]").wait_for(state="attached")  # the picker knows it without a reload

    page.get_by_role("link", name="globex", exact=True).click()
    in_form(page, "Rename").get_by_label("Name").fill("Globex Corporation")
    in_form(page, "Rename").get_by_role("button", name="Rename").click()
    page.get_by_role("heading", name=re.compile("^Globex Corporation")).wait_for()
    suspend = in_form(page, "Suspend")
    suspend.get_by_label("Reason").fill("unpaid")
    suspend.get_by_role("button", name="Suspend tenant").click()
    page.get_by_role("alertdialog").get_by_role("button", name="Cancel").click()  # the confirmation step: no
    assert service.get("/v1/tenants/globex").json()["status"] == "active"
    suspend.get_by_role("button", name="Suspend tenant").click()
    page.get_by_role("button", name="Yes, suspend").click()
    page.locator("h1 .st-suspended").wait_for()
    assert service.get("/v1/tenants/globex").json()["status"] == "suspended"
    in_form(page, "Resume").get_by_label("Reason").fill("paid")
    in_form(page, "Resume").get_by_role("button", name="Resume tenant").click()
    page.locator("h1 .st-active").wait_for()

    page.locator("#tenant").select_option("globex")
    page.get_by_role("link", name="CAs", exact=True).click()
    form = in_form(page, "Create a CA")
    form.get_by_label("Name", exact=True).fill("Globex root")
    form.get_by_label("Common name").fill("Globex Root CA")
    form.get_by_label("Algorithm").select_option("ml-dsa-65")
    form.get_by_role("button", name="Create CA").click()
    page.get_by_role("heading", name="Globex root").wait_for()
    root_id = page.url.rsplit("/", 1)[1]
    page.get_by_role("link", name="← All CAs").click()
    form = in_form(page, "Create a CA")
    form.get_by_label("Kind").select_option("intermediate")
    form.get_by_label("Parent CA").select_option(root_id)
    form.get_by_label("Name", exact=True).fill("Globex issuing")
    form.get_by_label("Common name").fill("Globex Issuing CA")
    form.get_by_label("Algorithm").select_option("hybrid-p384-ml-dsa-65")
    form.get_by_role("button", name="Create CA").click()
    page.get_by_role("heading", name="Globex issuing").wait_for()

    cas = {ca["name"]: ca for ca in service.get("/v1/cas", tenant_id="globex").json()["items"]}
    assert cas["Globex root"]["kind"] == "root" and cas["Globex root"]["algorithm"] == "ml-dsa-65"
    assert cas["Globex issuing"]["parent_id"] == root_id
    assert cas["Globex issuing"]["algorithm"] == "hybrid-p384-ml-dsa-65" and cas["Globex issuing"]["status"] == "active"
    no_problems(page)


def test_a_refused_ca_is_shown_next_to_its_field(service, browser):
    page = tenant_admin_page(service, browser, "ui-ca-refused")
    page.get_by_role("link", name="CAs", exact=True).click()
    form = in_form(page, "Create a CA")
    form.get_by_label("Name", exact=True).fill("Bad country")
    form.get_by_label("Common name").fill("Bad Country CA")
    form.get_by_label("Country").fill("X1")
    form.get_by_role("button", name="Create CA").click()
    error = page.locator("#f-country-error")
    error.wait_for()
    assert error.inner_text() and page.get_by_label("Country").get_attribute("aria-invalid") == "true"
    no_problems(page, console=False)


def _downloaded(page, form, button: str):
    with page.expect_download() as info:
        form.get_by_role("button", name=button).click()
    return info.value


def test_issue_with_a_key_held_here_and_export_pkcs12_and_the_bundle(service, browser, tmp_path):
    page = tenant_admin_page(service, browser, "ui-exporter")
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.get_by_role("link", name="Certificates", exact=True).click()
    page.get_by_role("link", name="Issue with a key held here").click()
    form = page.locator("#issue-form")
    form.get_by_label("Issuing CA").select_option(service.ca_id)
    form.get_by_label("Profile").select_option("cassandra-client")
    form.get_by_label("Common name").fill("keyed.acme.internal")
    form.get_by_label("DNS names").fill("keyed.acme.internal")
    form.get_by_label("Algorithm").select_option("ecdsa-p256")
    form.get_by_role("button", name="Issue certificate").click()
    page.get_by_role("heading", name=re.compile("keyed.acme.internal")).wait_for()
    certificate_id = page.url.rsplit("/", 1)[1]
    assert service.get(f"/v1/certificates/{certificate_id}").json()["has_key"] is True

    export = page.locator("#export-form")
    export.get_by_label("Format").select_option("pkcs12")
    export.get_by_role("button", name="Download export").click()  # no password: the API names the field
    page.locator("[id='f-X-Export-Password-error']").wait_for()
    password = "correct horse battery"
    field = export.get_by_label("Export password")
    assert field.get_attribute("type") == "password"
    field.fill(password)
    download = _downloaded(page, export, "Download export")
    assert download.suggested_filename == "keyed.acme.internal.p12"
    download.save_as(tmp_path / "keyed.p12")
    key, certificate, chain = pkcs12.load_key_and_certificates((tmp_path / "keyed.p12").read_bytes(),
                                                               password.encode())
    assert certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "keyed.acme.internal"
    assert key.public_key().public_numbers() == certificate.public_key().public_numbers() and chain
    assert field.input_value() == ""  # the field forgets it

    export.get_by_label("Format").select_option("jks")
    field.fill(password)
    keystore = _downloaded(page, export, "Download export")
    assert keystore.suggested_filename.endswith(".jks")
    keystore.save_as(tmp_path / "keyed.jks")
    assert (tmp_path / "keyed.jks").read_bytes()[:4] == b"\xfe\xed\xfe\xed"  # a Java KeyStore

    export.get_by_label("Format").select_option("bundle")
    field.fill(password)
    export.get_by_label("Contact points").fill("10.0.0.1, 10.0.0.2:9142")
    bundle = _downloaded(page, export, "Download export")
    bundle.save_as(tmp_path / "bundle.zip")
    names = zipfile.ZipFile(io.BytesIO((tmp_path / "bundle.zip").read_bytes())).namelist()
    assert any(n.endswith(".p12") or n.endswith(".jks") for n in names), names

    stored = page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    assert password not in stored and password.replace(" ", "+") not in stored
    assert not any(password in u or "correct" in u for u in urls), urls
    assert page.evaluate("localStorage.length") == 0
    no_problems(page, console=False)


def test_a_user_is_created_with_a_one_time_password_signs_in_and_gains_a_role(service, browser):
    page = tenant_admin_page(service, browser, "ui-users")
    page.get_by_role("link", name="Users", exact=True).click()
    form = in_form(page, "Create a user")
    form.get_by_label("Username").fill("ulla")
    form.get_by_label("viewer").check()
    form.get_by_role("button", name="Create user").click()
    secret = page.locator("#one-time-secret")
    secret.wait_for()
    password = secret.inner_text()
    assert len(password) == 20
    page.get_by_role("link", name="ulla", exact=True).wait_for()
    assert password not in page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    page.get_by_role("button", name="I have saved it").click()
    assert page.locator("#one-time-secret").count() == 0 and password not in page.content()
    assert service.get("/v1/users/ulla", tenant_id=TENANT).json()["roles"] == ["viewer"]

    other = browser.page()  # a second context: its own sessionStorage
    sign_in(other, service.base, "ulla", password)
    other.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    assert other.get_by_role("link", name="Request a certificate").count() == 0

    page.get_by_role("link", name="ulla", exact=True).click()
    grant = in_form(page, "Grant a role")
    grant.get_by_label("Role").select_option("developer")
    grant.get_by_role("button", name="Grant role").click()
    page.get_by_role("button", name="Revoke developer").wait_for()
    assert set(service.get("/v1/users/ulla", tenant_id=TENANT).json()["roles"]) == {"viewer", "developer"}
    other.get_by_role("button", name="Sign out", exact=True).click()
    sign_in(other, service.base, "ulla", password)
    other.get_by_role("heading", name="Request a certificate").wait_for()  # a developer's home now
    other.get_by_role("link", name="Request a certificate").wait_for()

    page.get_by_role("button", name="Revoke developer").click()
    page.get_by_role("button", name="Yes, revoke developer").click()
    page.get_by_role("button", name="Revoke developer").wait_for(state="detached")
    assert service.get("/v1/users/ulla", tenant_id=TENANT).json()["roles"] == ["viewer"]
    disable = in_form(page, "Disable")
    disable.get_by_role("button", name="Disable user").click()
    page.get_by_role("button", name="Yes, disable").click()
    page.locator("h1 .st-disabled").wait_for()
    assert service.get("/v1/users/ulla", tenant_id=TENANT).json()["status"] == "disabled"
    no_problems(page)


def test_a_service_account_gets_a_key_shown_once_that_signs_in_then_is_revoked(service, browser):
    page = tenant_admin_page(service, browser, "ui-accounts")
    page.get_by_role("link", name="Users", exact=True).click()
    form = in_form(page, "Create a service account")
    form.get_by_label("Name").fill("deployer")
    form.get_by_role("button", name="Create service account").click()
    page.get_by_role("link", name="deployer", exact=True).click()
    keys = in_form(page, "Create an API key")
    keys.get_by_label("issuer").check()
    keys.get_by_role("button", name="Create key").click()
    page.locator("#one-time-secret").wait_for()
    api_key = page.locator("#one-time-secret").inner_text()
    assert api_key.startswith("csm_")
    assert api_key not in page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    # the key is shown before the page reads its account again (at the key's position), and API keys are checked
    # against the read models: sign in with it once they have it, as the key's row in the list says
    page.get_by_role("button", name="Revoke key").wait_for()
    other = browser.page()
    sign_in(other, service.base, api_key=api_key)
    other.get_by_role("heading", name="Certificates", exact=True).wait_for()  # an issuer's home
    page.get_by_role("button", name="Revoke key").click()
    page.get_by_role("button", name="Yes, revoke the key").click()
    page.get_by_role("button", name="Revoke key").wait_for(state="detached")
    account = service.get("/v1/service-accounts/deployer", tenant_id=TENANT).json()
    assert [k["status"] for k in account["keys"]] == ["revoked"]
    no_problems(page)


def test_a_service_account_is_disabled_with_a_reason_after_a_confirmation_and_its_key_stops(service, browser):
    api_key = service.key("ui-disabled-bot", "viewer")  # a tenant key of the account ui-disabled-bot
    assert httpx.get(f"{service.base}/v1/tenants/{TENANT}", headers={"Authorization": f"Bearer {api_key}"},
                     timeout=10).status_code == 200
    page = tenant_admin_page(service, browser, "ui-disabler")
    page.goto(f"{service.base}/ui/#/service-accounts/ui-disabled-bot")
    form = in_form(page, "Disable the account")
    form.get_by_role("button", name="Disable service account").click()  # no reason yet: the browser asks for one
    assert page.get_by_role("button", name="Yes, disable the account").count() == 0
    form.get_by_label("Reason").fill("key pasted in a public issue")
    form.get_by_role("button", name="Disable service account").click()
    confirm = page.get_by_role("alertdialog", name="Disable ui-disabled-bot?")
    confirm.get_by_role("button", name="Cancel").click()
    confirm.wait_for(state="detached")
    assert service.get("/v1/service-accounts/ui-disabled-bot", tenant_id=TENANT).json()["status"] == "active"
    form.get_by_role("button", name="Disable service account").click()
    page.get_by_role("button", name="Yes, disable the account").click()
    in_form(page, "Enable the account").wait_for()  # rendered again from the account as the read model has it
    assert in_form(page, "Create an API key").count() == 0
    account = service.get("/v1/service-accounts/ui-disabled-bot", tenant_id=TENANT).json()
    assert account["status"] == "disabled" and [k["status"] for k in account["keys"]] == ["revoked"]
    refused = httpx.get(f"{service.base}/v1/tenants/{TENANT}", headers={"Authorization": f"Bearer {api_key}"},
                        timeout=10)
    assert refused.status_code == 401, refused.text
    disabled = [e for e in service.get("/v1/audit/events", tenant_id=TENANT, type="service_account.disabled")
                .json()["items"] if e["stream_id"] == "serviceaccount-ui-disabled-bot"]
    assert [e["event"]["payload"]["reason"] for e in disabled] == ["key pasted in a public issue"]
    page.get_by_role("link", name="Users", exact=True).click()
    row = page.locator("#service-accounts tr", has=page.get_by_role("link", name="ui-disabled-bot", exact=True))
    row.locator(".badge.st-disabled", has_text="disabled").wait_for()
    no_problems(page)


def test_a_root_rollover_after_a_compromise_needs_the_confirmation(service, browser):
    root = service.post("/v1/cas", {"kind": "root", "tenant_id": TENANT, "name": "Doomed root",
                                    "algorithm": "ecdsa-p256", "subject": {"common_name": "Doomed Root"}})
    middle = service.post("/v1/cas", {"kind": "intermediate", "tenant_id": TENANT, "parent_id": root["ca_id"],
                                      "name": "Doomed issuing", "algorithm": "ecdsa-p256",
                                      "subject": {"common_name": "Doomed Issuing"}})
    page = tenant_admin_page(service, browser, "ui-rollover")
    page.goto(f"{service.base}/ui/#/cas/{root['ca_id']}")
    page.get_by_role("heading", name="Doomed root").wait_for()
    assert page.get_by_role("link", name="Download CRL (PEM)").get_attribute("href").endswith("/crl?format=pem")
    rollover = in_form(page, "Roll over the key")
    rollover.get_by_label("Reason").fill("routine")
    rollover.get_by_role("button", name="Roll over").click()  # routine: no confirmation
    page.get_by_role("table", name="Link certificates").wait_for()
    rollover = in_form(page, "Roll over the key")
    rollover.get_by_label("Reason").fill("stolen")
    rollover.get_by_label("The root's key was stolen").check()
    rollover.get_by_role("button", name="Roll over").click()
    dialog = page.get_by_role("alertdialog")
    assert "truststore" in dialog.inner_text() and "never certified again" in dialog.inner_text()
    version = service.get(f"/v1/cas/{root['ca_id']}").json()["version"]
    dialog.get_by_role("button", name="Cancel").click()
    assert service.get(f"/v1/cas/{root['ca_id']}").json()["version"] == version  # nothing was sent
    rollover.get_by_role("button", name="Roll over").click()
    page.keyboard.press("Escape")  # no from the keyboard too
    assert page.get_by_role("alertdialog").count() == 0
    rollover.get_by_role("button", name="Roll over").click()
    page.get_by_role("button", name=re.compile("^Yes, the key was stolen")).click()
    page.locator("#reissue").wait_for()
    assert middle["ca_id"] in page.locator("#reissue").inner_text()
    certificates = service.get(f"/v1/cas/{root['ca_id']}/certificates").json()
    assert any(c.get("distrusted_at") for c in (certificates["items"] if isinstance(certificates, dict)
                                                 else certificates))

    page.goto(f"{service.base}/ui/#/cas/{middle['ca_id']}")
    page.get_by_role("heading", name="Doomed issuing").wait_for()
    status = in_form(page, "Disable")
    status.get_by_label("Reason").fill("maintenance")
    status.get_by_role("button", name="Disable CA").click()
    page.get_by_role("button", name="Yes, disable").click()
    in_form(page, "Enable").wait_for()
    assert service.get(f"/v1/cas/{middle['ca_id']}").json()["status"] == "disabled"
    in_form(page, "Enable").get_by_label("Reason").fill("back")
    in_form(page, "Enable").get_by_role("button", name="Enable CA").click()
    in_form(page, "Disable").wait_for()  # the page drawn again: a confirmation opened before it would be lost
    revoke = in_form(page, "Revoke the CA")
    revoke.get_by_label("Reason").select_option("ca_compromise")
    revoke.get_by_role("button", name="Revoke CA").click()
    page.get_by_role("button", name="Yes, revoke the CA").click()
    page.locator("dt", has_text="Revoked").wait_for()
    assert service.get(f"/v1/cas/{middle['ca_id']}").json()["status"] == "revoked"
    assert in_form(page, "Roll over the key").count() == 0
    no_problems(page)


def test_webhooks_are_created_with_a_secret_shown_once_and_deleted_after_a_confirmation(service, browser):
    page = tenant_admin_page(service, browser, "ui-hooks")
    page.get_by_role("link", name="Webhooks", exact=True).click()
    form = in_form(page, "Subscribe a URL")
    form.get_by_label("URL").fill("https://hooks.example.com/csm")
    form.get_by_label("certificate.renewal_failed").check()
    form.get_by_role("button", name="Create webhook").click()
    page.locator("#one-time-secret").wait_for()
    assert page.locator("#one-time-secret").inner_text()
    # the secret shows before the list is read again (at the creation's position): once the list has the webhook,
    # so have the read models the API answers from
    page.locator("#webhooks").get_by_text("https://hooks.example.com/csm").wait_for()
    hooks = service.get("/v1/webhooks", tenant_id=TENANT).json()["items"]
    assert [(h["url"], h["event_types"]) for h in hooks] == [("https://hooks.example.com/csm",
                                                               ["certificate.renewal_failed"])]
    page.get_by_role("button", name="Deliveries").click()
    page.locator("#deliveries").get_by_text("No deliveries yet.").wait_for()
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Yes, delete").click()
    page.get_by_text("No webhooks.").wait_for()
    assert service.get("/v1/webhooks", tenant_id=TENANT).json()["items"] == []
    no_problems(page)


def test_the_compliance_view_lists_every_finding_with_its_remedy_and_filters_by_severity(service, browser):
    issued = service.issue("short-lived.acme.internal", validity_days=3)
    # the report with that certificate in it (the page, read after, has it): the read models may lag the issuance
    report = service.get(f"/v1/tenants/{TENANT}/compliance", min_position=issued["global_position"]).json()
    assert report["findings"], report["counts"]
    page = tenant_admin_page(service, browser, "ui-compliance")
    page.get_by_role("link", name="Compliance", exact=True).click()
    page.locator("#findings tbody tr").first.wait_for()
    rows = page.locator("#findings tbody tr")
    assert rows.count() == len(report["findings"])
    rules = page.locator("#findings td[data-label=Rule]").all_inner_texts()
    assert rules == [f["rule"] for f in report["findings"]]
    remedies = page.locator("#findings td[data-label=Remedy]").all_inner_texts()
    assert all(remedies), remedies  # each rule's remedy, from /ui/catalog.json
    severity = report["findings"][-1]["severity"]
    page.get_by_label("Severity").select_option(severity)
    page.wait_for_url(re.compile(f"severity={severity}"))
    page.wait_for_function("n => document.querySelectorAll('#findings tbody tr').length === n",
                           arg=report["counts"][severity])
    assert set(page.locator("#findings td[data-label=Severity]").all_inner_texts()) == {severity}
    absent = next(s for s in ("critical", "high", "medium", "low", "info") if not report["counts"].get(s))
    page.get_by_label("Severity").select_option(absent)
    page.locator("#findings").get_by_text("No findings.").wait_for()
    no_problems(page)


def test_a_viewer_sees_none_of_the_admin_controls_and_a_forced_call_is_refused(service, browser):
    target = service.issue("viewer-admin.acme.internal")
    password = service.passwords.get("vera") or service.user("vera", "viewer")
    page = browser.page()
    sign_in(page, service.base, "vera", password)
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    for link in ("Tenants", "Users", "Webhooks"):
        assert page.get_by_role("link", name=link, exact=True).count() == 0
    page.get_by_role("link", name="CAs", exact=True).click()
    page.get_by_role("link", name="Acme clients").wait_for()
    assert in_form(page, "Create a CA").count() == 0
    page.get_by_role("link", name="Acme clients").click()
    page.get_by_role("button", name="Download chain (PEM)").wait_for()
    for label in ("Roll over the key", "Disable", "Revoke the CA"):
        assert in_form(page, label).count() == 0
    page.goto(f"{service.base}/ui/#/certs/{target['certificate_id']}")
    page.locator("#export-form").wait_for()
    formats = page.locator("#export-form select[name=format] option").evaluate_all("os => os.map(o => o.value)")
    assert formats and not {"pkcs12", "jks", "pem-key", "bundle"} & set(formats)
    page.goto(f"{service.base}/ui/#/certs")
    page.locator("#results tr").first.wait_for()
    assert page.get_by_role("link", name="Issue with a key held here").count() == 0
    refused = page.evaluate("""async ([ca, cert]) => {
        const token = JSON.parse(sessionStorage.getItem('csm.session')).access_token;
        const call = (path, init = {}) => fetch(path, {...init, headers: {Authorization: `Bearer ${token}`,
            'Content-Type': 'application/json', ...(init.headers || {})}}).then(r => r.status);
        return [await call(`/v1/cas/${ca}/disable`, {method: 'POST', body: '{"reason": "x"}'}),
                await call('/v1/users', {method: 'POST', body: JSON.stringify({username: 'x', password: 'y'.repeat(12),
                                                                               roles: []})}),
                await call(`/v1/certificates/${cert}/export?format=pkcs12`, {headers: {'X-Export-Password': 'abcdefgh'}})];
    }""", [service.ca_id, target["certificate_id"]])
    assert refused == [403, 403, 403]
    assert service.get(f"/v1/cas/{service.ca_id}").json()["status"] == "active"


def test_the_new_views_fit_a_phone_and_raise_no_console_error(service, browser):
    target = service.issue("phone.acme.internal", algorithm="ecdsa-p256")
    account = service.post("/v1/service-accounts", {"name": "phone-bot", "tenant_id": TENANT})
    assert account
    password = service.user("phoebe", "viewer")
    assert password
    page = admin_page(service, browser, width=390, height=844)
    # each view's hash, its heading, and what it shows last
    views = [("#/tenants", "Tenants", "#tenants table"), (f"#/tenants/{TENANT}", "Acme <Corp>", "form"),
             ("#/cas", "Certificate authorities", "#ca-list table"), (f"#/cas/{service.root_id}", "Acme root", "form"),
             ("#/issue", "Issue a certificate", "#issue-form"),
             (f"#/certs/{target['certificate_id']}", "phone.acme.internal", "#export-form"),
             ("#/users", "Users and service accounts", "#service-accounts table"), ("#/users/phoebe", "phoebe", "form"),
             ("#/service-accounts/phone-bot", "phone-bot", "form"), ("#/webhooks", "Webhooks", "#webhooks :is(p, table)"),
             ("#/compliance", "Compliance", "#findings p")]
    for hash_, heading, last in views:
        page.goto(f"{service.base}/ui/{hash_}")
        page.get_by_role("heading", name=re.compile("^" + re.escape(heading))).first.wait_for()
        page.locator(last).first.wait_for()
        assert page.evaluate(OVERFLOW) <= 0, hash_
    page.goto(f"{service.base}/ui/#/users")
    page.get_by_role("heading", name="Users and service accounts").wait_for()
    page.wait_for_function("() => document.activeElement?.id === 'main'")  # the view is done: the shell focused it
    in_form(page, "Create a user").get_by_label("Username").focus()  # the forms are reachable from the keyboard
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "display_name"
    no_problems(page)
    assert json.loads(page.evaluate("JSON.stringify(window.__csp)")) == []
