"""The browser UI's views of what a tenant certifies and how (api/ui/js/profiles.js, policy.js, acme.js,
compromised.js, and a CA's cross-signing on its page) in real Chromium against `csm serve`: what each changes is checked
through the API, refusals land next to their field, an EAB key is shown once and the printed lego command obtains a
certificate, a compromised-key report waits for the typed confirmation. The users, webhooks, discovery and analytics
views, and the phone's viewport, are test_ui_operations.py's."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest
from cryptography import x509
from test_cli_serve import free_port
from ui_support import (TENANT, browser, chromium, head, in_form, no_problems, playwright,  # noqa: F401
                        start_service, tenant_admin_page)

pytestmark = pytest.mark.slow
LEGO = shutil.which("lego")
ACME_NAMES = ("node7.acme.test", "node8.acme.test")


@pytest.fixture(scope="module")
def http01_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def service(tmp_path_factory, http01_port):
    """The UI's server, its ACME validating http-01 on 127.0.0.1 at ``http01_port`` (names from a hosts file)."""
    tmp = tmp_path_factory.mktemp("ui-pki")
    hosts = tmp / "hosts"
    hosts.write_text("".join(f"127.0.0.1 {name}\n" for name in ACME_NAMES))
    yield from start_service(tmp, {"CSM_ACME_HTTP01_PORT": str(http01_port), "CSM_ACME_HOSTS_FILE": str(hosts),
                                   "CSM_ACME_VALIDATION_NETWORKS": "127.0.0.0/8", "CSM_ACME_VALIDATION_TIMEOUT": "5"})


def own_profile(service, name: str, position: int = 0) -> dict | None:
    answer = service.get("/v1/profiles", tenant_id=TENANT, min_position=position).json()
    return next((p for p in answer if p["name"] == name), None)


def test_the_catalog_names_what_a_profile_may_say_and_the_analytics_metrics(service):
    from domain.certspec import EXTENDED_KEY_USAGES
    from projections.analytics import DIMENSIONS

    catalog = service.get("/ui/catalog.json").json()
    assert "key_cert_sign" not in catalog["key_usages"] and "digital_signature" in catalog["key_usages"]
    assert catalog["extended_key_usages"] == sorted(EXTENDED_KEY_USAGES)
    assert set(DIMENSIONS) < set(catalog["analytics_metrics"])
    assert catalog["analytics_metrics"]["certificate.issued.algorithm"] == "algorithm"


def test_a_profile_is_created_refused_then_changed_and_retired(service, browser):
    page = tenant_admin_page(service, browser, "ui-profiles")
    page.get_by_role("link", name="Profiles", exact=True).click()
    page.locator("#profiles table").wait_for()
    page.get_by_role("link", name="cassandra-node", exact=True).wait_for()  # the built-in ones are listed
    form = in_form(page, "Create a profile")
    form.get_by_label("Name", exact=True).fill("edge-client")
    form.get_by_label("Description").fill("Edge proxies <as clients>")
    form.get_by_label("client_auth", exact=True).check()
    form.get_by_label("Maximum validity (days)").fill("200")
    form.get_by_label("Default validity (days)").fill("90")
    form.get_by_role("button", name="Create profile").click()
    page.get_by_role("heading", name=re.compile("^edge-client")).wait_for()
    made = own_profile(service, "edge-client")
    assert made and made["source"] == "tenant" and made["status"] == "active"
    assert made["profile"]["description"] == "Edge proxies <as clients>"
    assert made["profile"]["extended_key_usage"] == ["client_auth"]
    assert (made["profile"]["max_validity_days"], made["profile"]["default_validity_days"]) == (200, 90)

    change = in_form(page, "Change the profile")
    change.get_by_label("Default validity (days)").fill("300")  # above the maximum: refused, next to the field
    change.get_by_role("button", name="Save profile").click()
    default = change.get_by_label("Default validity (days)")
    page.wait_for_function("() => document.querySelector('#update-profile [name=default_validity_days]')"
                           ".getAttribute('aria-invalid') === 'true'")
    assert "exceeds the maximum" in page.locator("#update-profile [id$='default_validity_days-error']").inner_text()
    default.fill("60")
    change.get_by_label("Description").fill("Edge proxies")
    change.get_by_label("server_auth", exact=True).check()
    change.get_by_role("button", name="Save profile").click()
    page.wait_for_function("() => !document.querySelector('#update-profile [aria-invalid=true]')")
    page.get_by_text("60 days by default, at most 200").wait_for()
    changed = own_profile(service, "edge-client", head(service))["profile"]
    assert changed["description"] == "Edge proxies" and changed["default_validity_days"] == 60
    assert changed["extended_key_usage"] == ["client_auth", "server_auth"]

    retire = in_form(page, "Retire")
    retire.get_by_label("Reason").fill("replaced by edge-v2")
    retire.get_by_role("button", name="Retire profile").click()
    page.get_by_role("button", name="Yes, retire").click()
    page.locator("h1 .st-retired").wait_for()
    assert own_profile(service, "edge-client", head(service))["status"] == "retired"
    assert in_form(page, "Change the profile").count() == 0
    no_problems(page, console=False)  # the refused save is a 422 in the console


def test_a_policy_edit_is_refused_next_to_its_field_then_accepted(service, browser):
    page = tenant_admin_page(service, browser, "ui-policy")
    page.get_by_role("link", name="Policy", exact=True).click()
    form = in_form(page, "Change the policy")
    dns = form.get_by_label("DNS names allowed")
    dns.fill(".acme.internal\nbad_name!.example.com")
    form.get_by_label("Maximum validity (days)").fill("120")
    form.get_by_role("button", name="Save policy").click()
    page.wait_for_function("() => document.querySelector('#edit-policy [name=allowed_dns]')"
                           ".getAttribute('aria-invalid') === 'true'")
    assert "bad_name!.example.com" in page.locator("#edit-policy [id$='allowed_dns-error']").inner_text()
    assert page.evaluate("document.activeElement.name") == "allowed_dns"  # focus went to the refused field
    dns.fill(".acme.internal\n.acme.test\n*.example.org")
    assert form.get_by_label("Wildcard names (*.example.com)").input_value() == ""  # the default: not to ACME
    form.get_by_label("Wildcard names (*.example.com)").select_option("true")
    form.get_by_role("button", name="Save policy").click()
    page.get_by_text("Policy saved.").wait_for()
    assert dns.get_attribute("aria-invalid") is None

    page.reload()  # the policy in force is read back (GET /v1/tenants/{id}/policy)
    page.locator("#policy-now").get_by_text(".acme.internal, .acme.test, *.example.org").wait_for()
    page.locator("#policy-now").get_by_text("120 days").wait_for()
    page.locator("#policy-now").get_by_text("Allowed (ACME orders too)").wait_for()
    assert service.get("/v1/tenants/acme/policy").json()["policy"]["allow_wildcards"] is True
    refused = service.post_raw("/v1/certificates", {
        "ca_id": service.ca_id, "tenant_id": TENANT, "profile": "cassandra-node", "algorithm": "ecdsa-p256",
        "subject": {"common_name": "db.elsewhere.org"}, "sans": {"dns": ["db.elsewhere.org"]}})
    assert refused.status_code == 422, refused.text  # the API applies what the browser set
    service.put("/v1/tenants/acme/policy", {})  # the other tests issue names of their own
    no_problems(page, console=False)


def _lego(command: str, port: int, path) -> subprocess.CompletedProcess:
    """The printed lego command, told where to keep its files and which port its http-01 server binds."""
    argv = shlex.split(command)
    assert argv[0] == "lego" and argv[-2:] == ["--http", "run"], argv
    argv = [LEGO, *argv[1:-1], "--http.port", f"127.0.0.1:{port}", "--path", str(path), "run"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, env=os.environ.copy())


def test_an_eab_key_is_shown_once_with_a_lego_command_that_obtains_a_certificate(service, browser, http01_port,
                                                                                   tmp_path):
    page = tenant_admin_page(service, browser, "ui-acme")
    page.get_by_role("link", name="ACME", exact=True).click()
    directory = f"{service.base}/acme/{TENANT}/directory"
    assert page.locator("#acme-directory").inner_text() == directory
    form = in_form(page, "Create an EAB key")
    form.get_by_label("CA", exact=True).select_option(service.ca_id)
    form.get_by_label("Profile").select_option("cassandra-node")
    form.get_by_label("Names allowed").fill("node7.acme.test")
    form.get_by_label("Description").fill("lego on node7")
    form.get_by_role("button", name="Create key").click()
    page.locator("#one-time-secret").wait_for()
    hmac = page.locator("#one-time-secret").inner_text()
    kid = page.locator("#eab-kid").inner_text()
    lego = page.locator("pre[data-client=lego]").inner_text()
    certbot = page.locator("pre[data-client=certbot]").inner_text()
    for command in (lego, certbot):
        assert directory in command and kid in command and hmac in command and "node7.acme.test" in command
    assert shlex.split(certbot)[:2] == ["certbot", "certonly"] and "--standalone" in certbot
    assert hmac not in page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    page.locator("#eab-keys").get_by_text(kid).wait_for()
    [key] = [k for k in service.get(f"/v1/tenants/{TENANT}/acme/eab-keys").json()["items"] if k["key_id"] == kid]
    assert (key["status"], key["allowed_names"], key["ca_id"]) == ("active", ["node7.acme.test"], service.ca_id)
    page.get_by_role("button", name="I have saved it").click()
    assert hmac not in page.content()

    if LEGO is None:
        pytest.skip("lego is not installed (Debian package lego): the command's shape was checked, not run")
    ran = _lego(lego, http01_port, tmp_path / "lego")
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}"
    leaf = x509.load_pem_x509_certificate((tmp_path / "lego" / "certificates" / "node7.acme.test.crt").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["node7.acme.test"]
    page.reload()
    page.locator("#eab-keys .st-bound").wait_for()  # the key now belongs to lego's account
    page.get_by_role("button", name=f"Revoke EAB key {kid}").click()
    page.get_by_role("button", name="Yes, revoke the key").click()
    page.locator("#eab-keys .st-revoked").wait_for()
    [key] = [k for k in service.get(f"/v1/tenants/{TENANT}/acme/eab-keys").json()["items"] if k["key_id"] == kid]
    assert key["status"] == "revoked"
    no_problems(page)


def test_a_compromised_key_report_waits_for_the_typed_confirmation(service, browser):
    cert = service.issue("leaked.acme.internal")
    service.post(f"/v1/certificates/{cert['certificate_id']}/revoke", {"reason": "superseded"})
    page = tenant_admin_page(service, browser, "ui-compromise")
    page.goto(f"{service.base}/ui/#/certs/{cert['certificate_id']}")
    page.get_by_role("link", name="Report its key compromised").click()
    form = in_form(page, "Report a compromised key")
    assert form.get_by_label("Certificate id").input_value() == cert["certificate_id"]
    form.get_by_role("button", name="Report key compromised").click()
    yes = page.get_by_role("button", name="Yes, report it compromised")
    assert yes.is_disabled()
    confirm = page.get_by_label(f"Type {cert['certificate_id']} to confirm")
    confirm.fill(cert["certificate_id"][:-1])
    assert yes.is_disabled()
    assert service.get(f"/v1/tenants/{TENANT}/compromised-keys").json()["items"] == []  # nothing sent yet
    confirm.fill(cert["certificate_id"])
    yes.click()
    page.get_by_text("Recorded 1 key(s).").wait_for()
    [item] = service.get(f"/v1/tenants/{TENANT}/compromised-keys").json()["items"]
    assert (item["certificate_id"], item["through"], item["reason"]) == (cert["certificate_id"], "report",
                                                                         "key_compromise")
    page.locator("#compromised-keys").get_by_text(item["public_key_sha256"]).wait_for()
    no_problems(page)


def test_a_roots_report_shows_the_cross_certificate_another_ca_revoked(service, browser):
    def root(name: str) -> str:
        return service.post("/v1/cas", {"kind": "root", "tenant_id": TENANT, "name": name, "algorithm": "ecdsa-p384",
                                        "subject": {"common_name": name}})["ca_id"]

    stolen, bridge = root("Acme stolen root"), root("Acme bridge root")
    service.post(f"/v1/cas/{stolen}/cross-sign", {"issuer_id": bridge})
    page = tenant_admin_page(service, browser, "ui-compromise-cross")
    page.goto(f"{service.base}/ui/#/compromised?ca_id={stolen}")
    form = in_form(page, "Report a compromised key")
    form.get_by_role("button", name="Report key compromised").click()
    page.get_by_label(f"Type {stolen} to confirm").fill(stolen)
    page.get_by_role("button", name="Yes, report it compromised").click()
    page.get_by_text("Revoked CA certificates of the key:").wait_for()
    page.get_by_role("link", name=f"CA {bridge[:12]}…").wait_for()
    no_problems(page)


def test_a_ca_is_cross_signed_by_another_root_after_a_confirmation(service, browser):
    other = service.post("/v1/cas", {"kind": "root", "tenant_id": TENANT, "name": "Acme new root",
                                     "algorithm": "ecdsa-p384", "subject": {"common_name": "Acme Root CA 2"}})
    page = tenant_admin_page(service, browser, "ui-cross")
    page.goto(f"{service.base}/ui/#/cas/{service.ca_id}")
    form = in_form(page, "Cross-sign")
    form.get_by_label("Signed by").select_option(other["ca_id"])
    form.get_by_label("Validity (days)").fill("400")
    form.get_by_role("button", name="Cross-sign").click()
    page.get_by_role("button", name="Cancel").click()  # nothing sent
    form.get_by_role("button", name="Cross-sign").click()
    page.get_by_role("button", name="Yes, cross-sign").click()
    page.locator("#ca-certificates").get_by_text("cross-certificate").wait_for()
    certs = service.get(f"/v1/cas/{service.ca_id}/certificates", min_position=head(service)).json()
    [cross] = [c for c in certs if c["role"] == "cross"]
    [own] = [c for c in certs if c["role"] == "current"]
    assert cross["issuer_ca_id"] == other["ca_id"]
    crossed = x509.load_pem_x509_certificate(cross["certificate_pem"].encode())
    current = x509.load_pem_x509_certificate(own["certificate_pem"].encode())
    assert crossed.public_key() == current.public_key() and crossed.subject == current.subject
    assert crossed.issuer.rfc4514_string() == "CN=Acme Root CA 2"
    assert (crossed.not_valid_after_utc - crossed.not_valid_before_utc).days == 400
    no_problems(page)
