import re
from ui_support import TENANT, browser, chromium, playwright, service, sign_in  # noqa: F401
from test_ui_admin import admin_page, in_form


def test_shots(service, browser):
    target = service.issue("phone.acme.internal", algorithm="ecdsa-p256")
    for w, h in ((390, 844), (1280, 900)):
        page = admin_page(service, browser, width=w, height=h)
        for name, hash_, last in [("tenant", f"#/tenants/{TENANT}", "form"), ("cas", "#/cas", "#ca-list table"),
                                  ("ca", f"#/cas/{service.root_id}", "form"), ("cert", f"#/certs/{target['certificate_id']}", "#export-form"),
                                  ("users", "#/users", "#service-accounts"), ("compliance", "#/compliance", "#findings p")]:
            page.goto(f"{service.base}/ui/{hash_}")
            page.locator(last).first.wait_for()
            page.wait_for_timeout(300)
            if name == "ca":
                in_form(page, "Roll over the key").get_by_label("Reason").fill("x")
                page.get_by_label("The root's key was stolen").check()
                in_form(page, "Roll over the key").get_by_role("button", name="Roll over").click()
            page.screenshot(path=f"/tmp/shot-{name}-{w}.png", full_page=True)
