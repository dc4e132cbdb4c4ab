"""The browser UI's offline CA views (api/ui/js/offline.js) and Deployments view (api/ui/js/deployments.js) in real
Chromium against `csm serve`: an offline root's certificate is imported, an intermediate requested and its CSR
downloaded, signed at a real ceremony (`csm ca root`, checked with openssl) and installed; the root's CRL request
is downloaded, signed and uploaded (as DER); a reader sees the CRL's state and no button; nodes deployed to over a
real sshd are listed with what each holds, the generations kept and where each certificate went; a certificate's
nodes beyond the list's first page come with "More nodes"; a phone fits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from test_cli_serve import csm
from ui_support import (OVERFLOW, TENANT, browser, chromium, in_form, no_problems, playwright,  # noqa: F401
                        service, sign_in)

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from deploy_halfway import deploy_stopped_halfway  # noqa: E402
from sshd_fixture import ssh_node  # noqa: E402, F401 - a fixture: a fresh sshd on loopback

pytestmark = pytest.mark.slow
OPENSSL = shutil.which("openssl")
PASSPHRASE = "correct horse battery staple"


def signed_in(service, browser, name: str, role: str, **size):
    page = browser.page(**size)
    sign_in(page, service.base, api_key=service.key(name, role))
    page.locator("#nav a").first.wait_for(state="attached")
    return page


def openssl(*args: str) -> str:
    run = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout + run.stderr


def settled(read, ready, what: str):
    """``read()`` once ``ready`` holds of it: the API's read model catches up with what another process (the CLI)
    recorded. No timing is asserted: the deadline only bounds a hang."""
    deadline = time.monotonic() + 60
    while True:
        value = read()
        if ready(value):
            return value
        assert time.monotonic() < deadline, f"{what}: {value}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory, service):
    """An offline root made by `csm ca root init --offline` (its key encrypted in the ceremony directory)."""
    where = tmp_path_factory.mktemp("ceremony")
    (where / "passphrase").write_text(PASSPHRASE + "\n")
    csm(service.data_dir, "ca", "root", "init", "--offline", "--out", str(where / "root"), "--cn",
        "Acme Offline Root", "--algorithm", "ecdsa-p384", "--passphrase-file", str(where / "passphrase"))
    return where


def root_cmd(service, ceremony: Path, *args: str) -> str:
    return csm(service.data_dir, "ca", "root", *args, "--root-dir", str(ceremony / "root"), "--passphrase-file",
               str(ceremony / "passphrase")).stdout


def test_an_offline_root_is_imported_its_intermediate_signed_at_the_ceremony_and_its_crl_installed(
        service, browser, ceremony, tmp_path):
    if OPENSSL is None:
        pytest.skip("openssl is not installed (Debian package openssl)")
    page = signed_in(service, browser, "ui-offline", "tenant-admin")
    page.goto(f"{service.base}/ui/#/cas")
    form = in_form(page, "Import an offline root")
    form.get_by_label("Name", exact=True).fill("Offline root")
    form.get_by_label("Root certificate (file)").set_input_files(str(ceremony / "root" / "root.pem"))
    form.get_by_role("button", name="Import root").click()
    page.get_by_role("heading", name="Offline root", exact=True).wait_for()
    root_id = page.url.rsplit("/", 1)[-1]
    ceremony_box = page.locator("#crl-ceremony")
    assert ceremony_box.locator("[data-crl]").get_attribute("data-crl") == "missing"
    assert "ca_crl_missing" in ceremony_box.inner_text()
    assert page.locator("#ca-admin form[aria-label='Roll over the key']").count() == 0  # its key is not here

    page.get_by_role("link", name="← All CAs").click()
    offline = page.locator("#offline-cas")
    offline.get_by_role("link", name="Offline root").wait_for()
    assert offline.locator("[data-crl]").get_attribute("data-crl") == "missing"
    page.locator("#ca-list tr", has_text="Offline root").get_by_text("offline", exact=True).wait_for()
    form = in_form(page, "Request an intermediate from an offline root")
    form.get_by_label("Offline root").select_option(root_id)
    form.get_by_label("Name", exact=True).fill("Offline issuing")
    form.get_by_label("Common name").fill("Acme Offline Issuing")
    form.get_by_label("Algorithm").select_option("ecdsa-p384")
    form.get_by_role("button", name="Request intermediate").click()
    page.get_by_role("heading", name="Offline issuing", exact=True).wait_for()
    inter_id = page.url.rsplit("/", 1)[-1]
    command = page.locator("#sign-intermediate-command").inner_text()
    assert f"--crl-url {service.base}/v1/cas/{root_id}/crl" in command
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the CSR").click()
    csr = tmp_path / download.value.suggested_filename
    download.value.save_as(csr)
    checked = openssl("req", "-in", str(csr), "-noout", "-verify", "-subject", "-nameopt", "RFC2253")
    assert "subject=CN=Acme Offline Issuing" in checked and "verify OK" in checked

    root_cmd(service, ceremony, "sign-intermediate", "--csr", str(csr), "--out", str(tmp_path / "inter.pem"),
             "--crl-url", f"{service.base}/v1/cas/{root_id}/crl")
    assert "OK" in openssl("verify", "-CAfile", str(ceremony / "root" / "root.pem"), str(tmp_path / "inter.pem"))
    form = in_form(page, "Install the signed certificate")
    form.get_by_label("Signed certificate (file)").set_input_files(str(tmp_path / "inter.pem"))
    form.get_by_role("button", name="Install certificate").click()
    page.locator("dl.facts dd", has_text="active").wait_for()
    assert page.locator("#offline-ceremony").count() == 0
    installed = service.get(f"/v1/cas/{inter_id}").json()
    assert installed["status"] == "active"
    assert installed["fingerprint"] == x509.load_pem_x509_certificate((tmp_path / "inter.pem").read_bytes()) \
        .fingerprint(hashes.SHA256()).hex()

    # the root's CRL ceremony: the request downloaded, signed offline, the CRL uploaded as DER
    service.post(f"/v1/cas/{inter_id}/revoke", {"reason": "superseded"})
    page.goto(f"{service.base}/ui/#/cas/{root_id}")
    ceremony_box = page.locator("#crl-ceremony")
    assert ceremony_box.locator("dt:text-is('Revocations recorded') + dd").inner_text() == "1"
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the CRL request").click()
    request = tmp_path / download.value.suggested_filename
    download.value.save_as(request)
    number = json.loads(request.read_text())["crl_number"]
    assert str(number) in page.locator("#sign-crl-command").inner_text()
    signed = root_cmd(service, ceremony, "sign-crl", "--request", str(request), "--out", str(tmp_path / "root.crl"),
                      "--next-update-days", "30")
    assert f"signed CRL {number} of CA {root_id}: 1 revoked" in signed
    openssl("crl", "-in", str(tmp_path / "root.crl"), "-outform", "DER", "-out", str(tmp_path / "root.crl.der"))
    form = in_form(page, "Install the signed CRL")
    form.get_by_label("Signed CRL (file)").set_input_files(str(tmp_path / "root.crl.der"))
    form.get_by_role("button", name="Install CRL").click()
    page.locator("#crl-ceremony [data-crl=current]").wait_for()
    assert page.locator("#crl-ceremony dt:text-is('Last CRL number') + dd").inner_text() == str(number)
    served = service.get(f"/v1/cas/{root_id}/crl", format="pem")
    assert served.status_code == 200
    (tmp_path / "served.crl").write_text(served.text)
    assert "verify OK" in openssl("crl", "-in", str(tmp_path / "served.crl"), "-CAfile",
                                  str(ceremony / "root" / "root.pem"), "-noout")
    page.get_by_role("link", name="← All CAs").click()
    page.locator("#offline-cas [data-crl=current]").wait_for()
    no_problems(page)

    # a reader sees where the CRL stands and can fetch the request; nothing to install, nothing to start
    reader = signed_in(service, browser, "ui-offline-viewer", "viewer")
    reader.goto(f"{service.base}/ui/#/cas/{root_id}")
    reader.locator("#crl-ceremony [data-crl=current]").wait_for()
    reader.get_by_role("button", name="Download the CRL request").wait_for()
    assert reader.locator("#install-crl").count() == 0
    reader.goto(f"{service.base}/ui/#/cas")
    reader.locator("#offline-cas table").wait_for()
    assert reader.locator("#import-root, #request-intermediate, #create-ca").count() == 0
    no_problems(reader)

    # a CRL that is not one is refused next to its field
    page.goto(f"{service.base}/ui/#/cas/{root_id}")
    form = in_form(page, "Install the signed CRL")
    form.get_by_label("… or paste it (PEM)").fill("not a CRL")
    form.get_by_role("button", name="Install CRL").click()
    page.locator("#crl-pem[aria-invalid=true]").wait_for()
    page.locator("#crl-pem-error").wait_for()
    no_problems(page, console=False)


def deploy(service, node, name: str, certificate_id: str, remote: Path, password: Path, keep: int = 2,
           expect: int = 0) -> str:
    return csm(service.data_dir, "cluster", "deploy", "--tenant", TENANT, "--certificate", certificate_id,
               "--node", f"{name}={node.destination}", "--known-hosts", str(node.known_hosts), "--identity",
               str(node.identity), "--password-file", str(password), "--remote-dir", str(remote), "--keep",
               str(keep), expect=expect).stdout


def test_the_deployments_view_lists_each_node_and_a_certificate_its_nodes(service, browser, ssh_node, tmp_path):
    password = tmp_path / "keystore.password"
    password.write_text("changeit-nodes\n")
    first = service.issue("node.acme.internal")
    renewed = service.post(f"/v1/certificates/{first['certificate_id']}/renew", {})
    old, new = first["certificate_id"], renewed["certificate_id"]
    deploy(service, ssh_node, "db-1", old, tmp_path / "db-1", password)
    deploy(service, ssh_node, "db-2", old, tmp_path / "db-2", password)
    out = deploy(service, ssh_node, "db-1", new, tmp_path / "db-1", password)
    assert "1 deployed, 0 failed" in out
    deploy_stopped_halfway(service.data_dir, ssh_node, tenant_id=TENANT, name="db-2", certificate_id=new,
                           remote=tmp_path / "db-2", keep=2)
    (tmp_path / "db-3" / "keystore.jks.previous").mkdir(parents=True)  # --keep 1 removes it first: rm fails on a
    (tmp_path / "db-3" / "keystore.jks.previous" / "in-the-way").write_bytes(b"x")  # directory, at the commit step
    assert "db-3: FAILED" in deploy(service, ssh_node, "db-3", new, tmp_path / "db-3", password, keep=1, expect=1)
    listed = settled(lambda: service.get("/v1/deployments", tenant_id=TENANT).json()["items"],
                     lambda items: {(n["node"], n["certificate_id"], (n["started"] or {}).get("certificate_id"))
                                    for n in items} >= {("db-1", new, None), ("db-2", old, new), ("db-3", None, new)},
                     "the deployments read model")
    db1 = next(n for n in listed if n["node"] == "db-1")
    assert [g["certificate_id"] for g in db1["generations"]] == [old] and db1["keep"] == 2

    page = signed_in(service, browser, "ui-deployments", "viewer")
    page.get_by_role("link", name="Deployments", exact=True).click()
    page.locator("#nodes table").wait_for()
    row = page.locator("#nodes tbody tr", has=page.locator("[data-node='db-1']"))
    assert row.locator("[data-state]").get_attribute("data-state") == "deployed"
    row.get_by_role("link", name=f"{new[:12]}…").first.wait_for()
    row.get_by_text("1 of 2").wait_for()
    assert row.locator("[data-verified]").get_attribute("data-verified") == "unknown"
    row.get_by_text("2 file(s), jks").click()  # its files, unfolded
    assert str(tmp_path / "db-1" / "keystore.jks") in row.inner_text()
    assert row.locator("[data-unfinished]").count() == 0
    unfinished = page.locator("#nodes tbody tr", has=page.locator("[data-node='db-2']")).locator("[data-unfinished]")
    assert unfinished.get_attribute("data-unfinished") == new
    assert unfinished.get_attribute("data-outcome") == "unfinished"
    failed_row = page.locator("#nodes tbody tr", has=page.locator("[data-node='db-3']"))
    assert failed_row.locator("[data-unfinished]").get_attribute("data-outcome") == "failed"
    assert "at commit" in failed_row.inner_text() and "Is a directory" in failed_row.inner_text()

    page.get_by_role("searchbox", name="Node").fill("db-2")
    page.get_by_role("button", name="Show").click()
    page.wait_for_function("() => document.querySelectorAll('#nodes tbody tr').length === 1 && "
                           "document.querySelector('#nodes [data-node]').dataset.node === 'db-2'")

    page.goto(f"{service.base}/ui/#/certs/{old}")
    nodes = page.locator("#certificate-deployments")
    nodes.locator("table").wait_for()
    states = {nodes.locator("tbody tr").nth(i).locator("[data-node]").get_attribute("data-node"):
              nodes.locator("tbody tr").nth(i).locator("[data-state]").get_attribute("data-state")
              for i in range(nodes.locator("tbody tr").count())}
    assert states == {"db-1": "replaced", "db-2": "current"}
    page.goto(f"{service.base}/ui/#/certs/{new}")
    page.locator("#certificate-deployments [data-state=current]").wait_for()
    expected = {d["node"]: d["started_at"] is not None for d in
                service.get(f"/v1/certificates/{new}/deployments").json()["items"]}
    assert expected == {"db-1": False, "db-2": True, "db-3": True}
    assert nodes.locator("tbody tr", has=page.locator("[data-node='db-2']")).get_by_text("started").count() >= 1
    db3 = nodes.locator("tbody tr", has=page.locator("[data-node='db-3']"))
    assert db3.locator("[data-state]").get_attribute("data-state") == "failed"
    assert "Is a directory" in db3.inner_text()
    nodes.get_by_role("link", name="db-1").click()
    page.wait_for_function("() => document.querySelector('#nodes [data-node]')?.dataset.node === 'db-1'")
    assert page.locator("#deployments-node").input_value() == "db-1"
    no_problems(page)


def record_deployments(data_dir: Path, certificate_id: str, nodes: list[str]) -> None:
    """``certificate_id`` deployed to each of ``nodes``, recorded by the real command handler
    (``deployments.deploy_certificate``, as `csm cluster deploy` runs it) with a delivery that stages and installs
    nothing: what the UI lists is the record, not the nodes. Run in a thread of its own (its own event loop, beside
    Playwright's), against the server's data directory as the CLI opens it."""
    from cli.common import command_context
    from commands import deployments
    from domain.certificate import DeployedFile
    from infra.bootstrap import open_runtime
    from infra.config import Settings

    fingerprint = "SHA256:" + "A" * 43

    def delivery(node: str):
        files = (DeployedFile(path=f"/etc/cassandra/{node}/keystore.jks", sha256=hashlib.sha256(node.encode())
                              .hexdigest()),)

        async def deliver(record_start) -> deployments.Delivered:
            await record_start(deployments.Staging(files=files, host_key_type="ssh-ed25519",
                                                   host_key_fingerprint=fingerprint))
            return deployments.Delivered(files=files, host_key_type="ssh-ed25519", host_key_fingerprint=fingerprint,
                                         host_key_first_use=False, reload_exit_status=None)
        return deliver

    async def record_all(runtime) -> None:
        for node in nodes:
            command = deployments.DeployCertificate(tenant_id=TENANT, certificate_id=certificate_id, node=node,
                                                    user="cassandra", host=f"{node}.acme.internal")
            await deployments.deploy_certificate(command, command_context(), runtime.services, delivery(node))

    def record() -> None:
        runtime = open_runtime(Settings.from_env(str(data_dir)))
        try:
            asyncio.run(record_all(runtime))
        finally:
            runtime.close()

    with ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(record).result()


def test_more_nodes_adds_the_next_page_of_a_certificates_deployments(service, browser):
    """A certificate deployed to 105 nodes: its page lists the first 100 (the API's page, by node name) and "More
    nodes" adds the other 5 below them, then goes away."""
    cert = service.issue("fleet.acme.internal")
    names = [f"fleet-{n:03}" for n in range(105)]
    record_deployments(service.data_dir, cert["certificate_id"], names)
    url = f"/v1/certificates/{cert['certificate_id']}/deployments"
    settled(lambda: service.get(url, limit=1000).json()["items"], lambda items: len(items) == len(names),
            "the deployments read model")
    first = service.get(url).json()
    assert len(first["items"]) == 100 and first["next_cursor"]  # the list's default page: the button is needed

    page = signed_in(service, browser, "ui-more-nodes", "viewer")
    page.goto(f"{service.base}/ui/#/certs/{cert['certificate_id']}")
    section = page.locator("#certificate-deployments")
    section.locator("table").wait_for()
    shown = "els => els.map(e => e.dataset.node)"
    assert section.locator("tbody [data-node]").evaluate_all(shown) == names[:100]
    more = section.get_by_role("button", name="More nodes")
    more.click()
    page.wait_for_function("() => document.querySelectorAll('#certificate-deployments tbody tr').length === 105")
    assert section.locator("tbody [data-node]").evaluate_all(shown) == names  # the next page, after the first
    assert more.count() == 0  # the last page: no button
    assert section.locator("tbody [data-state]").evaluate_all("els => els.map(e => e.dataset.state)") == [
        "current"] * len(names)
    no_problems(page)


def test_the_offline_and_deployment_views_fit_a_phone(service, browser, ceremony):
    root = service.post("/v1/cas/import", {"tenant_id": TENANT, "name": "Phone offline root",
                                           "certificate_pem": (ceremony / "root" / "root.pem").read_text()})
    pending = service.post("/v1/cas/offline-intermediate", {
        "tenant_id": TENANT, "parent_id": root["ca_id"], "name": "Phone pending", "algorithm": "ecdsa-p384",
        "subject": {"common_name": "Acme Phone Issuing"}})
    page = browser.page(width=390, height=844)
    sign_in(page, service.base, api_key=service.key("ui-offline-phone", "tenant-admin"))
    page.locator("#nav a").first.wait_for(state="attached")
    views = [("#/cas", "#offline-cas table"), ("#/deployments", "#nodes :is(p, table)"),
             (f"#/cas/{root['ca_id']}", "#install-crl"), (f"#/cas/{pending['ca_id']}", "#install-certificate")]
    for hash_, last in views:
        page.goto(f"{service.base}/ui/{hash_}")
        page.locator(last).first.wait_for()
        assert page.evaluate(OVERFLOW) <= 0, hash_
    assert page.locator("#nav a[href=\"#/deployments\"]").count() == 1
    no_problems(page)
