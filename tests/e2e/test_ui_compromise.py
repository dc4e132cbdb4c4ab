"""The browser UI's compromise handling (api/ui/js/compromised.js, compromise.js, and the refusal link of dom.js) in
real Chromium against `csm serve`: a compromised-key block reported in error is lifted after a reason and a
confirmation (nothing un-revoked), a root's page reads its compromise report back from the API after the rollover, a
CA still chained through the stolen key says which CA to roll over (on its page and in the issuance form's refusal),
a viewer gets no button, and a phone's viewport fits."""

from __future__ import annotations

import re

import httpx
import pytest
from ui_support import (OVERFLOW, TENANT, browser, chromium, in_form, no_problems, playwright, service,  # noqa: F401
                        sign_in)

pytestmark = pytest.mark.slow


def signed_in(service, browser, name: str, role: str, **size):
    page = browser.page(**size)
    sign_in(page, service.base, api_key=service.key(name, role))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    return page


def keys(service) -> dict:
    return service.get(f"/v1/tenants/{TENANT}/compromised-keys").json()


def reported_in_error(service, common_name: str) -> tuple[dict, str]:
    """A certificate revoked superseded, then its key reported compromised: (the certificate, its key's SHA-256)."""
    cert = service.issue(common_name)
    service.post(f"/v1/certificates/{cert['certificate_id']}/revoke", {"reason": "superseded"})
    [key] = service.post(f"/v1/tenants/{TENANT}/compromised-keys",
                         {"certificate_id": cert["certificate_id"]})["public_keys_sha256"]
    return cert, key


def hierarchy(service, prefix: str) -> dict[str, str]:
    """A root, an intermediate under it and one under that (ECDSA), and a leaf of the upper one."""
    made = {"root": service.post("/v1/cas", {"kind": "root", "tenant_id": TENANT, "name": f"{prefix} root",
                                             "algorithm": "ecdsa-p256", "path_length": 2,
                                             "subject": {"common_name": f"{prefix} Root"}})["ca_id"]}
    for name, parent in (("upper", "root"), ("lower", "upper")):
        made[name] = service.post("/v1/cas", {"kind": "intermediate", "tenant_id": TENANT, "parent_id": made[parent],
                                              "name": f"{prefix} {name}", "algorithm": "ecdsa-p256",
                                              "path_length": 1 if name == "upper" else 0,
                                              "subject": {"common_name": f"{prefix} {name.title()}"}})["ca_id"]
    made["leaf"] = service.post("/v1/certificates", {
        "ca_id": made["upper"], "tenant_id": TENANT, "profile": "cassandra-client", "algorithm": "ecdsa-p256",
        "subject": {"common_name": f"{prefix.lower()}-leaf.acme.internal"}})["certificate_id"]
    service.post(f"/v1/cas/{made['root']}/rollover", {"reason": "routine"})  # link certificates, to be revoked
    return made


@pytest.fixture(scope="module")
def stolen(service):
    """A hierarchy whose root rolled over in compromise mode through the API, and a block lifted."""
    made = hierarchy(service, "Seized")
    service.post(f"/v1/cas/{made['root']}/rollover", {"reason": "root key stolen", "compromised": True})
    _, made["lifted"] = reported_in_error(service, "lifted.acme.internal")
    service.post(f"/v1/tenants/{TENANT}/compromised-keys/{made['lifted']}/lift", {"reason": "wrong certificate"})
    return made


def test_a_block_reported_in_error_is_lifted_after_a_confirmation_and_shown_lifted(service, browser):
    cert, key = reported_in_error(service, "mistaken.acme.internal")
    page = signed_in(service, browser, "ui-lifter", "tenant-admin")
    page.goto(f"{service.base}/ui/#/compromised")
    row = page.locator("#compromised-keys tr", has_text=key)
    row.get_by_role("button", name=re.compile("^Lift the block of key")).click()
    lift = in_form(page, "Lift the block")
    assert "Nothing is un-revoked" in lift.inner_text() and key in lift.inner_text()
    lift.get_by_label("Reason").fill("the wrong certificate was reported")
    lift.get_by_role("button", name="Lift block", exact=True).click()
    dialog = page.get_by_role("alertdialog")
    assert "un-revoked" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    assert key in [k["public_key_sha256"] for k in keys(service)["items"]]  # nothing was sent
    lift.get_by_role("button", name="Lift block", exact=True).click()
    page.get_by_role("button", name="Yes, lift the block").click()
    page.get_by_text("Lifted the block of 1 key(s). Nothing was un-revoked.").wait_for()
    now = keys(service)
    assert key not in [k["public_key_sha256"] for k in now["items"]]
    assert [(k["public_key_sha256"], k["reason"]) for k in now["lifted"] if k["public_key_sha256"] == key] == [
        (key, "the wrong certificate was reported")]
    shown = page.locator("#lifted-keys tr", has_text=key)
    shown.wait_for()
    assert "lifted" in shown.inner_text() and "the wrong certificate was reported" in shown.inner_text()
    assert page.locator("#compromised-keys tr", has_text=key).count() == 0
    assert in_form(page, "Lift the block").count() == 0
    assert service.get(f"/v1/certificates/{cert['certificate_id']}").json()["status"] == "revoked"
    no_problems(page)

    # lifted behind the page's back: the refusal (409 compromise_already_lifted) is shown in the form
    _, other = reported_in_error(service, "mistaken-too.acme.internal")
    page.reload()
    page.locator("#compromised-keys tr", has_text=other).get_by_role("button").click()
    service.post(f"/v1/tenants/{TENANT}/compromised-keys/{other}/lift", {"reason": "lifted from the API"})
    lift = in_form(page, "Lift the block")
    lift.get_by_label("Reason").fill("lifted from the browser")
    lift.get_by_role("button", name="Lift block", exact=True).click()
    page.get_by_role("button", name="Yes, lift the block").click()
    lift.locator(".field-error, .banner.error").filter(has_text="was lifted on").first.wait_for()
    assert [k["reason"] for k in keys(service)["lifted"] if k["public_key_sha256"] == other] == ["lifted from the API"]
    no_problems(page, console=False)

    # a key reported from two sources: the lift is refused until the operator says every report was in error
    twice_cert = service.issue("reported-twice.acme.internal")
    service.post(f"/v1/certificates/{twice_cert['certificate_id']}/revoke", {"reason": "key_compromise"})
    [twice] = service.post(f"/v1/tenants/{TENANT}/compromised-keys",  # the revocation reported it; now a report
                           {"certificate_id": twice_cert["certificate_id"]})["public_keys_sha256"]
    assert [k["sources"] for k in keys(service)["items"] if k["public_key_sha256"] == twice] == [2]
    page.reload()
    row = page.locator("#compromised-keys tr", has_text=twice)
    row.get_by_role("button").click()
    lift = in_form(page, "Lift the block")
    lift.get_by_label("Reason").fill("both reports were mistaken")
    lift.get_by_role("button", name="Lift block", exact=True).click()
    page.get_by_role("button", name="Yes, lift the block").click()
    lift.locator(".field-error, .banner.error").filter(has_text="every_report").first.wait_for()
    assert twice in [k["public_key_sha256"] for k in keys(service)["items"]]  # still blocked
    lift.get_by_label("All 2 reports of this key were in error").check()
    lift.get_by_role("button", name="Lift block", exact=True).click()
    page.get_by_role("button", name="Yes, lift the block").click()
    page.get_by_text("Lifted the block of 1 key(s). Nothing was un-revoked.").wait_for()
    assert twice not in [k["public_key_sha256"] for k in keys(service)["items"]]


def test_a_roots_page_keeps_its_compromise_report_and_the_cas_below_say_what_to_roll_over(service, browser):
    made = hierarchy(service, "Stolen")
    page = signed_in(service, browser, "ui-stolen", "tenant-admin")
    page.goto(f"{service.base}/ui/#/cas/{made['root']}")
    page.get_by_role("heading", name="Stolen root").wait_for()
    assert page.locator("#ca-compromise").count() == 0  # a routine rollover only
    rollover = in_form(page, "Roll over the key")
    rollover.get_by_label("Reason").fill("key found on a stolen laptop")
    rollover.get_by_label("The root's key was stolen").check()
    rollover.get_by_role("button", name="Roll over").click()
    page.get_by_role("button", name=re.compile("^Yes, the key was stolen")).click()
    page.locator("#reissue").wait_for()  # the rollover's answer, once

    page.reload()  # the answer is gone: the page reads the report from GET /v1/cas/{id}/compromise
    page.get_by_role("heading", name="Compromise rollovers").wait_for()
    assert page.locator("#reissue").count() == 0
    report = service.get(f"/v1/cas/{made['root']}/compromise").json()
    [rolled] = report["rollovers"]
    text = page.locator("#ca-compromise").inner_text()
    assert "key found on a stolen laptop" in text
    assert rolled["compromised_key_sha256"] in text and rolled["certificate_fingerprint"] in text
    assert len(report["revoked_links"]) == 2 and all(link["serial_hex"] in text for link in report["revoked_links"])
    assert report["reissue"]["cas"] == [made["upper"], made["lower"]]
    reissue = page.locator("#ca-reissue")
    assert reissue.get_by_role("link", name=re.compile("^Stolen upper")).get_attribute("href") == \
        f"#/cas/{made['upper']}"
    assert reissue.get_by_role("link", name=made["leaf"]).get_attribute("href") == f"#/certs/{made['leaf']}"

    reissue.get_by_role("link", name=re.compile("^Stolen lower")).click()
    page.get_by_role("heading", name="Stolen lower").wait_for()
    banner = page.locator("#recertification")
    assert "Must be re-certified" in banner.inner_text()
    banner.get_by_role("link", name="Stolen upper").click()
    page.get_by_role("heading", name="Stolen upper").wait_for()
    assert "Roll this CA over" in page.locator("#recertification").inner_text()

    # the issuance form's refusal names the CA to roll over, with a link
    page.goto(f"{service.base}/ui/#/issue")
    form = page.locator("#issue-form")
    form.get_by_label("Issuing CA").select_option(made["lower"])
    form.get_by_label("Profile").select_option("cassandra-client")
    form.get_by_label("Common name").fill("refused.acme.internal")
    form.get_by_label("Algorithm").select_option("ecdsa-p256")
    form.get_by_role("button", name="Issue certificate").click()
    first = form.locator("#recertify-first")
    first.wait_for()
    assert "compromise rollover" in first.inner_text()
    assert "ca_recertification_required" not in form.locator(".banner.error").inner_text()  # words, not a code
    first.get_by_role("link", name=f"CA {made['upper']}").click()
    page.get_by_role("heading", name="Stolen upper").wait_for()

    rollover = in_form(page, "Roll over the key")
    rollover.get_by_label("Reason").fill("re-certified under the new root key")
    rollover.get_by_role("button", name="Roll over").click()
    page.locator("#recertification").wait_for(state="detached")
    page.goto(f"{service.base}/ui/#/cas/{made['lower']}")
    page.get_by_role("heading", name="Stolen lower").wait_for()
    assert "Roll this CA over" in page.locator("#recertification").inner_text()
    page.goto(f"{service.base}/ui/#/cas/{made['root']}")
    reissue = page.locator("#ca-reissue")
    reissue.wait_for()
    assert made["lower"] in reissue.inner_text() and made["upper"] not in reissue.inner_text()

    # the key rolled away from stays blocked: no lift offered
    page.goto(f"{service.base}/ui/#/compromised")
    row = page.locator("#compromised-keys tr", has_text=rolled["compromised_key_sha256"])
    row.wait_for()
    assert "final (rollover)" in row.inner_text() and row.get_by_role("button").count() == 0
    no_problems(page, console=False)  # the refused issuance is a console error
    assert not [c for c in page.console_errors if "422" not in c], page.console_errors


def test_a_viewer_sees_the_compromise_but_no_button(service, browser, stolen):
    page = signed_in(service, browser, "ui-compromise-viewer", "viewer")
    page.goto(f"{service.base}/ui/#/cas/{stolen['root']}")
    page.get_by_role("heading", name="Compromise rollovers").wait_for()
    assert stolen["upper"] in page.locator("#ca-reissue").inner_text()
    assert page.locator("form").count() == 0
    page.goto(f"{service.base}/ui/#/cas/{stolen['lower']}")
    page.locator("#recertification").wait_for()
    assert page.locator("form").count() == 0
    page.goto(f"{service.base}/ui/#/compromised")
    page.locator("#lifted-keys tr", has_text=stolen["lifted"]).wait_for()
    assert page.locator("#compromised-keys tr").count() > 1
    assert page.locator("#compromised-keys button").count() == 0 and page.locator("form").count() == 0
    # the API refuses the lift a forced call would make
    refused = httpx.post(f"{service.base}/v1/tenants/{TENANT}/compromised-keys/{'0' * 64}/lift", json={
        "reason": "forced"}, headers={"Authorization": f"Bearer {service.key('ui-forced', 'viewer')}"}, timeout=30)
    assert refused.status_code == 403
    no_problems(page)


def test_the_compromise_views_fit_a_phone(service, browser, stolen):
    _, key = reported_in_error(service, "phone-lift.acme.internal")
    page = signed_in(service, browser, "ui-compromise-phone", "tenant-admin", width=390, height=844)
    page.goto(f"{service.base}/ui/#/compromised")
    page.locator("#lifted-keys table").wait_for()
    page.locator("#compromised-keys tr", has_text=key).get_by_role("button").click()
    in_form(page, "Lift the block").get_by_label("Reason").wait_for()
    assert page.evaluate(OVERFLOW) <= 0
    for ca, shown in ((stolen["root"], "#ca-compromise"), (stolen["lower"], "#recertification")):
        page.goto(f"{service.base}/ui/#/cas/{ca}")
        page.locator(shown).wait_for()
        assert page.evaluate(OVERFLOW) <= 0, page.evaluate("""[...document.querySelectorAll('#main *')].filter(
            e => e.getBoundingClientRect().right > 391).slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id +
            ' ' + Math.round(e.getBoundingClientRect().right) + ' ' + (e.textContent || '').slice(0, 40))""")
    no_problems(page)
