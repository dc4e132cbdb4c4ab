"""Discovery against real TLS servers: certificates the service issued, served by Python ``ssl`` listeners on
127.0.0.1, scanned by ``infra.discovery`` and recorded through ``POST /v1/tenants/{id}/discovered`` as a scanner
elsewhere would; then listed, matched to the tenant's certificates, and judged by the compliance report as the
service revokes, renews (never deployed) and lets a certificate expire (the app's clock moves).
"""

from __future__ import annotations

import hashlib
import re
import ssl
from datetime import UTC, datetime, timedelta

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from test_api_revocation import revoke, setup
from test_api_support import Clock, assert_problem, pki_api  # noqa: F401
from tls_servers import closed_port, plain_server, self_signed, tls_server, write_identity

from domain.discovery import Target
from infra.discovery import scan

PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


CHAIN_PEMS: dict[str, str] = {}  # fingerprint -> PEM of every certificate exported here: what a scanner would post


async def deployable(api, headers, tmp_path, ca_id, name, leaf_only: bool = False, **body) -> tuple[dict, tuple]:
    """A certificate with a key made here, exported as PEM (chain and key) into files a TLS server loads; with
    ``leaf_only``, the files hold the leaf alone, as a keystore built by hand without the chain does."""
    response = await api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": "acme", "ca_id": ca_id, "algorithm": "ecdsa-p256", "subject": {"common_name": name},
        "sans": {"dns": [name]}, **body})
    assert response.status_code == 201, response.text
    issued = response.json()
    exported = await api.client.get(f"/v1/certificates/{issued['certificate_id']}/export", headers=headers, params={
        "format": "pem", "include_key": "true", "min_position": issued["global_position"]})
    assert exported.status_code == 200, exported.text
    found = [(m.group(1), m.group(0)) for m in PEM_BLOCK.finditer(exported.text)]
    blocks = [b for label, b in found if label == "CERTIFICATE"]
    for block in blocks:
        der = x509.load_pem_x509_certificate(block.encode()).public_bytes(serialization.Encoding.DER)
        CHAIN_PEMS[hashlib.sha256(der).hexdigest()] = block
    key = next(b for label, b in found if label == "PRIVATE KEY")
    leaf = x509.load_pem_x509_certificate(blocks[0].encode())
    issued["fingerprint"] = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    return issued, write_identity(tmp_path, name, "".join(blocks[:1] if leaf_only else blocks), key)


def posted(observation) -> dict:
    """An observation as a scanner elsewhere posts it: the PEMs, not the facts the server reads from them."""
    fields = ("host", "port", "observed_at", "certificate_pem", "tls_version", "cipher", "error", "reason",
              "client_certificate")
    raw = msgspec.to_builtins(observation)
    out = {name: raw[name] for name in fields if raw.get(name) is not None}
    if observation.chain is not None:
        out["chain_pem"] = [CHAIN_PEMS[c.fingerprint_sha256] for c in observation.chain]
    return out


async def record(api, headers, observations, **body) -> dict:
    response = await api.client.post("/v1/tenants/acme/discovered", headers=headers, json={
        "observations": [posted(o) for o in observations], **body})
    assert response.status_code == 200, response.text
    return response.json()


async def listing(api, headers, position, **params) -> dict[str, dict]:
    response = await api.client.get("/v1/tenants/acme/discovered", headers=headers,
                                    params={"min_position": position, **params})
    assert response.status_code == 200, response.text
    return {item["endpoint"]: item for item in response.json()["items"]}


async def findings(api, headers, position: int = 0) -> dict[str, list[tuple[str, str]]]:
    """The report's findings of endpoints, once the read models have reached ``position``."""
    response = await api.client.get("/v1/tenants/acme/compliance", headers=headers,
                                    params={"min_position": position})
    assert response.status_code == 200, response.text
    out: dict[str, list] = {}
    for f in response.json()["findings"]:
        if f["subject_type"] == "endpoint":
            out.setdefault(f["subject_id"], []).append((f["rule"], f["severity"]))
    return out


async def test_served_certificates_are_matched_and_judged_as_they_are_revoked_renewed_and_expire(pki_api, tmp_path):
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, root, inter = await setup(api)
    kept, kept_files = await deployable(api, admin, tmp_path, inter, "kept.acme.internal")
    gone, gone_files = await deployable(api, admin, tmp_path, inter, "gone.acme.internal")
    old, old_files = await deployable(api, admin, tmp_path, inter, "old.acme.internal")
    brief, brief_files = await deployable(api, admin, tmp_path, inter, "brief.acme.internal", validity_days=1)
    mtls, mtls_files = await deployable(api, admin, tmp_path, inter, "mtls.acme.internal")
    bare, bare_files = await deployable(api, admin, tmp_path, inter, "bare.acme.internal", leaf_only=True)
    stray_cert, stray_key, stray = self_signed(tmp_path)
    root_pem = (await api.client.get(f"/v1/cas/{root}/certificate", params={"format": "pem"})).text
    tls12 = ssl.TLSVersion.TLSv1_2

    with tls_server(*kept_files) as p_kept, tls_server(*gone_files, max_version=tls12) as p_gone, \
            tls_server(*old_files) as p_old, tls_server(*brief_files) as p_brief, \
            tls_server(stray_cert, stray_key) as p_stray, \
            tls_server(*mtls_files, client_ca=root_pem, max_version=tls12) as p_mtls12, \
            tls_server(*mtls_files, client_ca=root_pem) as p_mtls13, plain_server() as p_plain, \
            tls_server(*bare_files) as p_bare:
        p_closed = closed_port()
        ports = {"kept": p_kept, "gone": p_gone, "old": p_old, "brief": p_brief, "stray": p_stray,
                 "mtls12": p_mtls12, "mtls13": p_mtls13, "plain": p_plain, "closed": p_closed, "bare": p_bare}
        at = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        observed = await scan([Target("127.0.0.1", port) for port in ports.values()], timeout=10)
        by_port = {o.port: o for o in observed}

        # what the scanner saw, before anything is recorded
        assert by_port[p_kept].tls_version == "TLSv1.3" and by_port[p_gone].tls_version == "TLSv1.2"
        assert by_port[p_kept].fingerprint_sha256 == kept["fingerprint"]
        assert by_port[p_mtls12].fingerprint_sha256 == by_port[p_mtls13].fingerprint_sha256 == mtls["fingerprint"]
        assert "handshake aborted after the server's certificate" in by_port[p_mtls12].reason
        assert by_port[p_stray].subject_dn == "CN=stray.elsewhere.example"
        assert by_port[p_stray].serial_hex == format(stray.serial_number, "x")
        assert (by_port[p_plain].error, by_port[p_closed].error) == ("not_tls", "refused")
        assert all(o.certificate_pem is None or "PRIVATE" not in o.certificate_pem for o in observed)
        # the chain sent after the leaf (TLS 1.3, and TLS 1.2 read from the clear first flight), and mutual TLS
        inter_dn = by_port[p_kept].issuer_dn
        for port in (p_kept, p_gone, p_mtls12, p_mtls13):
            assert [c.subject_dn for c in by_port[port].chain][:1] == [inter_dn], port
        assert by_port[p_bare].chain == [] and by_port[p_stray].chain == []
        assert by_port[p_mtls12].client_certificate == by_port[p_mtls13].client_certificate == "required"
        assert {by_port[p].client_certificate for p in (p_kept, p_gone, p_bare)} == {"not_required"}
        assert by_port[p_plain].chain is None and by_port[p_plain].client_certificate is None

        recorded = await record(api, admin, observed, scan_id="scan-1")
        assert (recorded["observations"], recorded["events"]) == (10, 1)
        again = await record(api, admin, observed, scan_id="scan-1")  # a retry records nothing
        assert again["events"] == 0 and not again["result"]["changed"]
        rows = await listing(api, admin, recorded["result"]["global_position"])
        assert set(rows) == set(at.values())
        assert rows[at["kept"]]["certificate_id"] == kept["certificate_id"]
        assert rows[at["kept"]]["certificate_status"] == "issued" and rows[at["kept"]]["ca_id"] == inter
        assert rows[at["mtls12"]]["certificate_id"] == rows[at["mtls13"]]["certificate_id"] == mtls["certificate_id"]
        assert rows[at["stray"]]["certificate_id"] is None
        assert rows[at["stray"]]["issuer_dn"] == "CN=stray.elsewhere.example"
        assert rows[at["plain"]]["error"] == "not_tls" and rows[at["closed"]]["error"] == "refused"
        assert rows[at["kept"]]["served_since"] == rows[at["kept"]]["first_seen"]
        assert rows[at["kept"]]["chain"][0]["subject_dn"] == inter_dn and rows[at["kept"]]["chain_complete"] is True
        assert rows[at["bare"]]["chain"] == [] and rows[at["bare"]]["chain_complete"] is False
        assert rows[at["stray"]]["chain_complete"] is None  # not this tenant's: its issuer's kind is not known
        assert rows[at["mtls13"]]["client_certificate"] == "required"
        assert rows[at["kept"]]["client_certificate"] == "not_required"
        assert await findings(api, admin) == {at["stray"]: [("discovered_unmanaged", "medium")],
                                              at["bare"]: [("discovered_incomplete_chain", "medium")]}

        # the service revokes one and renews another; neither node is redeployed
        await revoke(api, admin, gone["certificate_id"], reason="key_compromise")
        renewed = await api.client.post(f"/v1/certificates/{old['certificate_id']}/renew", headers=admin, json={})
        assert renewed.status_code == 201, renewed.text
        successor = renewed.json()["certificate_id"]
        rows = await listing(api, admin, renewed.json()["global_position"])
        assert rows[at["gone"]]["certificate_status"] == "revoked"
        assert rows[at["gone"]]["revocation_reason"] == "key_compromise"
        assert rows[at["old"]]["superseded_by"] == successor
        found = await findings(api, admin)
        assert found[at["gone"]] == [("discovered_revoked", "critical")]
        assert found[at["old"]] == [("discovered_superseded", "high")]
        assert found[at["bare"]] == [("discovered_incomplete_chain", "medium")]

        # two days on, the one-day certificate has expired on its node
        clock.offset = timedelta(days=2)
        admin = await api.admin()
        found = await findings(api, admin)
        assert found[at["brief"]] == [("discovered_expired", "high")]

        # the revoked node is taken down: the next scan finds it refused, and only the latest observation counts
    later = await scan([Target("127.0.0.1", p_gone), Target("127.0.0.1", p_closed)], timeout=10)
    assert [o.error for o in later] == ["refused", "refused"]
    recorded = await record(api, admin, later)
    rows = await listing(api, admin, recorded["result"]["global_position"])
    assert rows[at["gone"]]["error"] == "refused" and rows[at["gone"]]["last_served_at"] is not None
    assert rows[at["gone"]]["first_seen"] < rows[at["gone"]]["observed_at"]
    found = await findings(api, admin)
    assert found[at["gone"]] == [("discovered_unreachable", "low")]
    assert at["closed"] not in found  # it never served a certificate: no node there
    # an observation recorded late never hides a newer one
    late = await record(api, admin, [o for o in observed if o.port == p_gone], scan_id="late-copy")
    assert (await findings(api, admin, late["result"]["global_position"]))[at["gone"]] == \
        [("discovered_unreachable", "low")]

    # a fortnight unscanned, the endpoints drop out of the report (the listing keeps them)
    clock.offset = timedelta(days=15)
    admin = await api.admin()
    assert await findings(api, admin) == {}
    body = (await api.client.get("/v1/tenants/acme/compliance", headers=admin)).json()
    assert body["summary"]["endpoints_observed"] == 0
    assert len(await listing(api, admin, 0)) == len(at)


async def test_a_posted_chain_is_read_from_its_pems_and_judged(pki_api, tmp_path):
    api = pki_api
    admin, _root, inter = await setup(api)
    issued, (certfile, _keyfile) = await deployable(api, admin, tmp_path, inter, "posted.acme.internal")
    pems = [m.group(0) for m in PEM_BLOCK.finditer(certfile.read_text())]
    assert len(pems) >= 2  # the leaf, then its chain
    now = datetime.now(UTC).isoformat()
    url = "/v1/tenants/acme/discovered"

    def body(host, **fields):
        return {"host": host, "port": 9042, "observed_at": now, "certificate_pem": pems[0], **fields}

    bad = await api.client.post(url, headers=admin, json={"observations": [body("10.0.1.1", chain_pem=["nope"])]})
    assert_problem(bad, 422, "invalid_observation", "observations[0].chain_pem[0]")
    odd = await api.client.post(url, headers=admin, json={"observations": [
        body("10.0.1.1", client_certificate="sometimes")]})
    assert_problem(odd, 422, "invalid_observation", "observations[0].client_certificate")
    error_chain = await api.client.post(url, headers=admin, json={"observations": [
        {"host": "10.0.1.1", "port": 9042, "observed_at": now, "error": "refused", "chain_pem": pems[1:]}]})
    assert_problem(error_chain, 422, "invalid_observation", "observations[0].chain")
    too_long = await api.client.post(url, headers=admin, json={"observations": [
        body("10.0.1.1", chain_pem=pems[1:2] * 11)]})
    assert too_long.status_code == 400 and "chain_pem" in too_long.text

    done = await api.client.post(url, headers=admin, json={"observations": [
        body("10.0.1.1", chain_pem=pems[1:], client_certificate="required"),
        body("10.0.1.2", chain_pem=[]),
        body("10.0.1.3")]})  # a scanner that records no chain: nothing is judged of it
    assert done.status_code == 200, done.text
    rows = await listing(api, admin, done.json()["result"]["global_position"])
    assert rows["10.0.1.1:9042"]["certificate_id"] == issued["certificate_id"]
    assert rows["10.0.1.1:9042"]["chain_complete"] is True
    assert rows["10.0.1.1:9042"]["client_certificate"] == "required"
    assert (rows["10.0.1.2:9042"]["chain"], rows["10.0.1.2:9042"]["chain_complete"]) == ([], False)
    assert (rows["10.0.1.3:9042"]["chain"], rows["10.0.1.3:9042"]["chain_complete"]) == (None, None)
    assert await findings(api, admin) == {"10.0.1.2:9042": [("discovered_incomplete_chain", "medium")]}


async def test_posted_observations_are_checked_and_listed_page_by_page(pki_api, tmp_path):
    api = pki_api
    admin, _root, _inter = await setup(api)
    now = datetime.now(UTC).isoformat()
    url = "/v1/tenants/acme/discovered"
    bad_pem = await api.client.post(url, headers=admin, json={"observations": [
        {"host": "10.0.0.1", "port": 9042, "observed_at": now, "certificate_pem": "-----BEGIN CERTIFICATE-----"}]})
    assert_problem(bad_pem, 422, "invalid_observation", "observations[0].certificate_pem")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ahead = await api.client.post(url, headers=admin, json={"observations": [
        {"host": "10.0.0.1", "port": 9042, "observed_at": now, "error": "refused"},
        {"host": "10.0.0.2", "port": 9042, "observed_at": future, "error": "timeout"}]})
    assert_problem(ahead, 422, "invalid_observation", "observations[1].observed_at")
    unknown = await api.client.post(url, headers=admin, json={"observations": [
        {"host": "10.0.0.1", "port": 9042, "observed_at": now, "error": "exploded"}]})
    assert_problem(unknown, 422, "invalid_observation", "observations[0].error")
    missing = await api.client.post("/v1/tenants/nobody/discovered", headers=admin, json={"observations": [
        {"host": "10.0.0.1", "port": 9042, "observed_at": now, "error": "refused"}]})
    assert_problem(missing, 404, "tenant_not_found", "tenant_id")
    short = await api.client.post("/v1/tenants/ab/discovered", headers=admin, json={"observations": [
        {"host": "10.0.0.1", "port": 9042, "observed_at": now, "error": "refused"}]})
    assert_problem(short, 404, "tenant_not_found", "tenant_id")  # no tenant has so short an id
    bad_id = await api.client.post(url, headers=admin, json={"scan_id": "../x", "observations": [
        {"host": "10.0.0.1", "port": 9042, "observed_at": now, "error": "refused"}]})
    assert_problem(bad_id, 400, None, "scan_id")

    stray_cert, _key, _ = self_signed(tmp_path)
    observations = [{"host": f"10.0.0.{i}", "port": 9042, "observed_at": now,
                     "certificate_pem": stray_cert.read_text(), "tls_version": "TLSv1.3"} for i in range(1, 6)]
    first = await api.client.post(url, headers=admin, json={"scan_id": "s-1", "observations": observations})
    assert first.status_code == 200, first.text
    other = await api.client.post(url, headers=admin, json={"scan_id": "s-1", "observations": observations[:2]})
    assert_problem(other, 422, "scan_exists", "scan_id")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "min_position": first.json()["result"]["global_position"]}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get(url, headers=admin, params=params)).json()
        seen += [item["endpoint"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"10.0.0.{i}:9042" for i in range(1, 6)]
    assert_problem(await api.client.get(url, headers=admin, params={"cursor": "nonsense"}), 400, None, "cursor")


async def test_a_suspended_tenant_still_records_what_its_nodes_serve(pki_api):
    api = pki_api
    admin, _root, _inter = await setup(api)
    suspended = await api.client.post("/v1/tenants/acme/suspend", headers=admin, json={"reason": "audit"})
    assert suspended.status_code == 200, suspended.text
    now = datetime.now(UTC).isoformat()
    response = await api.client.post("/v1/tenants/acme/discovered", headers=admin, json={"observations": [
        {"host": "node1.acme.internal", "port": 9042, "observed_at": now, "error": "timeout"}]})
    assert response.status_code == 200, response.text
