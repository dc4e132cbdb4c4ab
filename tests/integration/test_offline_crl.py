"""An offline root's CRL: the ceremony signs it from what the service records, the service installs and serves it.

`csm ca crl-request` (here: the API's GET /v1/cas/{id}/crl-request) → `csm ca root sign-crl`
(offline, the root key) → POST /v1/cas/{id}/crls. Checked with `openssl crl` and `openssl verify
-crl_check`: a revoked intermediate under an offline root fails, its sibling passes; and every
CRL that would not list exactly what the audit trail records is refused, naming the rule.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_api_ca_lifecycle import (CSM, OPENSSL, PASSPHRASE, create_ca, csm, needs_openssl, ok,
                                   request_offline_intermediate)
from test_api_support import assert_problem, pki_api  # noqa: F401

from commands.pki import der_of_pem, pem
from domain.crl_publication import crl_number_floor
from infra.crypto import keys as key_files
from infra.crypto.revocation import CryptographyRevocation

pytestmark = [needs_openssl,
              pytest.mark.skipif(not CSM.exists(), reason=f"the csm console script is not installed at {CSM}")]


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True)


async def imported_offline_root(api, admin, tmp_path: Path, algorithm: str) -> tuple[Path, str, str]:
    """A tenant acme, a root made by the offline ceremony in ``tmp_path/ceremony``, and its certificate imported:
    (ceremony directory, root PEM, root CA id)."""
    await api.create_tenant(admin, "acme")
    ceremony = tmp_path / "ceremony"
    ceremony.mkdir()
    init = await asyncio.to_thread(csm, ceremony, "ca", "root", "init", "--offline", "--out", "root",
                                   "--cn", "Acme Offline Root", "--org", "acme", "--algorithm", algorithm)
    assert init.returncode == 0, init.stdout + init.stderr
    root_pem = (ceremony / "root" / "root.pem").read_text()
    root_id = (await ok(await api.client.post("/v1/cas/import", headers=admin, json={
        "tenant_id": "acme", "name": "Offline root", "certificate_pem": root_pem}), 201)).json()["ca_id"]
    return ceremony, root_pem, root_id


async def sign_crl(ceremony: Path, request: dict, out: str, *extra: str) -> subprocess.CompletedProcess:
    (ceremony / f"{out}.json").write_text(json.dumps(request))
    return await asyncio.to_thread(csm, ceremony, "ca", "root", "sign-crl", "--root-dir", "root", "--request",
                                   f"{out}.json", "--out", f"{out}.crl", *extra)


@pytest.mark.parametrize("algorithm", ["ecdsa-p384", "hybrid-p384-ml-dsa-65"])
async def test_an_offline_roots_crl_is_signed_in_the_ceremony_and_served_once_complete(pki_api, tmp_path, algorithm):
    api = pki_api
    admin = await api.admin()
    ceremony, root_pem, root_id = await imported_offline_root(api, admin, tmp_path, algorithm)
    signed = {}
    for name in ("Acme Issuing", "Acme Spare"):
        ca_id, row = await request_offline_intermediate(api, admin, root_id, name, algorithm)
        (ceremony / f"{ca_id}.csr").write_text(row["csr_pem"])
        run = await asyncio.to_thread(csm, ceremony, "ca", "root", "sign-intermediate", "--root-dir", "root",
                                      "--csr", f"{ca_id}.csr", "--out", f"{ca_id}.pem")
        assert run.returncode == 0, run.stdout + run.stderr
        signed[ca_id] = (ceremony / f"{ca_id}.pem").read_text()
        await ok(await api.client.post(f"/v1/cas/{ca_id}/certificate", headers=admin,
                                       json={"certificate_pem": signed[ca_id]}))
    revoked_ca, spare = list(signed)

    missing = assert_problem(await api.client.get(f"/v1/cas/{root_id}/crl"), 404, "crl_not_found", field="ca_id")
    assert "csm ca crl-request" in missing["detail"]
    first = (await ok(await api.client.get(f"/v1/cas/{root_id}/crl-request", headers=admin))).json()
    assert (first["due"], first["entries"], first["last_crl_number"]) == (True, [], None)
    assert first["crl_number"] >= crl_number_floor(datetime.datetime.fromisoformat(first["requested_at"]))
    run = await sign_crl(ceremony, first, "first")
    assert run.returncode == 0, run.stdout + run.stderr
    installed = (await ok(await api.client.post(f"/v1/cas/{root_id}/crls", headers=admin,
                                                json={"crl_pem": (ceremony / "first.crl").read_text()}))).json()
    again = (await ok(await api.client.post(f"/v1/cas/{root_id}/crls", headers=admin,
                                            json={"crl_pem": (ceremony / "first.crl").read_text()}))).json()
    assert again["version"] == installed["version"]  # the same CRL again adds nothing
    served = (await ok(await api.client.get(f"/v1/cas/{root_id}/crl", params={"format": "pem"}))).text
    assert served == (ceremony / "first.crl").read_text()

    revoked = (await ok(await api.client.post(f"/v1/cas/{revoked_ca}/revoke", headers=admin,
                                              json={"reason": "key_compromise"}))).json()
    assert (revoked["crls"], revoked["crls_awaiting_ceremony"]) == ([], [root_id])
    request = (await ok(await api.client.get(f"/v1/cas/{root_id}/crl-request", headers=admin))).json()
    assert (request["due"], request["last_crl_number"]) == (True, first["crl_number"])
    assert request["crl_number"] > first["crl_number"]
    serial = format(x509.load_pem_x509_certificate(signed[revoked_ca].encode()).serial_number, "x")
    assert [(e["serial_hex"], e["reason"], e["subject_ca_id"]) for e in request["entries"]] == [
        (serial, "key_compromise", revoked_ca)]

    async def install(name: str, body: dict) -> dict:
        run = await sign_crl(ceremony, body, name)
        assert run.returncode == 0, run.stdout + run.stderr
        return await api.client.post(f"/v1/cas/{root_id}/crls", headers=admin,
                                      json={"crl_pem": (ceremony / f"{name}.crl").read_text()})

    # What would make the served CRL say something the audit trail does not: each refused, naming the rule.
    assert_problem(await install("stale", first), 422, "crl_number_not_increasing", field="crl_pem")
    assert_problem(await install("short", {**request, "entries": []}), 422, "crl_incomplete", field="crl_pem")
    made_up = {**request["entries"][0], "serial_hex": "abc123", "subject_ca_id": None}
    assert_problem(await install("extra", {**request, "entries": [*request["entries"], made_up]}), 422,
                   "crl_lists_unrecorded", field="crl_pem")
    softened = [{**request["entries"][0], "reason": "superseded"}]
    assert_problem(await install("softened", {**request, "entries": softened}), 422, "crl_reason_mismatch",
                   field="crl_pem")
    still = (await ok(await api.client.get(f"/v1/cas/{root_id}/crl", params={"format": "pem"}))).text
    assert still == served  # nothing refused was served

    assert (await install("second", request)).status_code == 200
    crl_pem = (await ok(await api.client.get(f"/v1/cas/{root_id}/crl", params={"format": "pem"}))).text
    assert crl_pem == (ceremony / "second.crl").read_text()
    (tmp_path / "root.pem").write_text(root_pem)
    (tmp_path / "root.crl").write_text(crl_pem)
    shown = openssl("crl", "-in", str(tmp_path / "root.crl"), "-CAfile", str(tmp_path / "root.pem"), "-noout")
    assert shown.returncode == 0 and "verify OK" in shown.stderr + shown.stdout, shown.stdout + shown.stderr
    crl = x509.load_pem_x509_crl(crl_pem.encode())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == request["crl_number"]
    assert [(format(e.serial_number, "x"), e.extensions.get_extension_for_class(x509.CRLReason).value.reason.name)
            for e in crl] == [(serial, "key_compromise")]
    for ca_id, expected in ((revoked_ca, "certificate revoked"), (spare, "OK")):
        (tmp_path / f"{ca_id}.pem").write_text(signed[ca_id])
        check = openssl("verify", "-crl_check", "-CAfile", str(tmp_path / "root.pem"), "-CRLfile",
                        str(tmp_path / "root.crl"), str(tmp_path / f"{ca_id}.pem"))
        assert expected in check.stdout + check.stderr, check.stdout + check.stderr


async def test_a_crl_the_root_did_not_sign_or_a_ca_that_signs_its_own_is_refused(pki_api, tmp_path):
    api = pki_api
    admin = await api.admin()
    ceremony, root_pem, root_id = await imported_offline_root(api, admin, tmp_path, "ecdsa-p384")
    root = x509.load_pem_x509_certificate(root_pem.encode())
    now = datetime.datetime.now(datetime.UTC)
    impostor = (x509.CertificateRevocationListBuilder().issuer_name(root.subject).last_update(now)
                .next_update(now + datetime.timedelta(days=30)).add_extension(x509.CRLNumber(1), critical=False)
                .sign(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()))
    forged = impostor.public_bytes(serialization.Encoding.PEM).decode()
    assert_problem(await api.client.post(f"/v1/cas/{root_id}/crls", headers=admin, json={"crl_pem": forged}), 422,
                   "crl_signature_invalid", field="crl_pem")
    assert_problem(await api.client.post(f"/v1/cas/{root_id}/crls", headers=admin, json={"crl_pem": "not a CRL"}),
                   422, "crl_invalid", field="crl_pem")

    other = tmp_path / "other"
    other.mkdir()
    init = await asyncio.to_thread(csm, other, "ca", "root", "init", "--offline", "--out", "root",
                                   "--cn", "Acme Offline Root", "--algorithm", "ecdsa-p384")
    assert init.returncode == 0, init.stdout + init.stderr
    request = (await ok(await api.client.get(f"/v1/cas/{root_id}/crl-request", headers=admin))).json()
    wrong_root = await sign_crl(other, request, "crl")
    assert wrong_root.returncode != 0 and "not this root" in wrong_root.stderr, wrong_root.stdout + wrong_root.stderr
    assert "Traceback" not in wrong_root.stderr and not (other / "crl.crl").exists()

    online = await create_ca(api, admin, name="Acme Online Root")
    assert_problem(await api.client.get(f"/v1/cas/{online}/crl-request", headers=admin), 422, "ca_key_online",
                   field="ca_id")
    run = await sign_crl(ceremony, request, "crl")
    assert run.returncode == 0, run.stdout + run.stderr
    assert_problem(await api.client.post(f"/v1/cas/{online}/crls", headers=admin,
                                         json={"crl_pem": (ceremony / "crl.crl").read_text()}), 422, "ca_key_online",
                   field="ca_id")



@pytest.mark.parametrize("number", [-1, 1 << 159, 1 << 200])
async def test_a_crl_number_relying_parties_need_not_accept_is_refused_by_the_ceremony_and_the_service(
        pki_api, tmp_path, number):
    """RFC 5280 5.2.3: a CRL number is a non-negative integer of at most 20 octets (below 2**159). A request file
    edited to another number is refused by sign-crl, and a CRL signed with one anyway is not installed: the CA's
    next number would follow it, out of range for good."""
    api = pki_api
    admin = await api.admin()
    ceremony, root_pem, root_id = await imported_offline_root(api, admin, tmp_path, "ecdsa-p384")
    request = (await ok(await api.client.get(f"/v1/cas/{root_id}/crl-request", headers=admin))).json()
    run = await sign_crl(ceremony, {**request, "crl_number": number}, "edited")
    assert run.returncode != 0 and "crl_number_out_of_range" in run.stderr, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and not (ceremony / "edited.crl").exists()

    if number >= 0:  # cryptography signs no negative number; a CRL of one is refused by the same rule
        key = key_files.unprotect((ceremony / "root" / "root.key.enc").read_bytes(), PASSPHRASE.encode())
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        der = CryptographyRevocation().sign_crl([], issuer_key=key, issuer_certificate=der_of_pem(root_pem),
                                                number=number, this_update=now,
                                                next_update=now + datetime.timedelta(days=30))
        refused = await api.client.post(f"/v1/cas/{root_id}/crls", headers=admin,
                                        json={"crl_pem": pem("X509 CRL", der)})
        assert_problem(refused, 422, "crl_number_out_of_range", field="crl_pem")
    run = await sign_crl(ceremony, request, "good")  # the request as served still signs and installs
    assert run.returncode == 0, run.stdout + run.stderr
    await ok(await api.client.post(f"/v1/cas/{root_id}/crls", headers=admin,
                                   json={"crl_pem": (ceremony / "good.crl").read_text()}))
