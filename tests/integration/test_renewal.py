"""Expiry monitoring and automated renewal over time: the real app and SQLite store on a clock the test moves.

Two renewal schedulers racing over one due certificate renew it once; rotation makes a new key,
a profile that allows it keeps the key; a CSR certificate without key reuse fails once per
retry window; expiry warnings come once per threshold; ``expiring_within`` and the
``csm_certificates_expiring`` gauges read the certificates read model. An intermediate rolled
over before it expires serves both chains during the overlap, checked by `openssl verify`.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY
from test_api_ca_lifecycle import OPENSSL, ca_pem, certificates, create_ca, current_ca_pem, load, needs_openssl
from test_api_revocation import crl_of, leaf, revoke, setup
from test_api_support import assert_problem, pki_api, running_api  # noqa: F401
from test_crl_schedule import Clock, caught_up, crl_number

from domain.events import decode_payload

DAY = timedelta(days=1)


async def events_of(api, certificate_id: str) -> list:
    return [decode_payload(e) for e in await api.runtime.store.read_stream("acme", f"certificate-{certificate_id}")]


async def types_of(api, certificate_id: str) -> list[str]:
    return [type(p).event_type for p in await events_of(api, certificate_id)]


async def row(api, headers, certificate_id: str) -> dict:
    await caught_up(api)
    response = await api.client.get(f"/v1/certificates/{certificate_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def public_key_of(row_: dict) -> bytes:
    certificate = x509.load_pem_x509_certificate(row_["certificate_pem"].encode())
    return certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


async def create_profile(api, headers, name: str, renewal: dict) -> None:
    response = await api.client.post("/v1/profiles", headers=headers, json={"tenant_id": "acme", "profile": {
        "name": name, "description": "renewal test profile", "key_usage": ["digital_signature"],
        "extended_key_usage": ["server_auth", "client_auth"], "allowed_san_types": ["dns"], "require_san": False,
        "require_common_name": True, "max_validity_days": 397, "default_validity_days": 365,
        "allowed_algorithms": None, "default_algorithm": "ecdsa-p256", "renewal": renewal}})
    assert response.status_code == 201, response.text
    await caught_up(api)


async def issue(api, headers, ca_id: str, name: str, **body) -> dict:
    response = await api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": "acme", "ca_id": ca_id, "subject": {"common_name": name}, "sans": {"dns": [name]}, **body})
    assert response.status_code == 201, response.text
    return await row(api, headers, response.json()["certificate_id"])


def csr_for(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM).decode()


async def test_a_due_certificate_is_renewed_exactly_once_by_two_racing_schedulers(pki_api):
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    old = await leaf(api, admin, inter, "node.acme.internal")  # 365 days; cassandra-node renews at 67%
    await caught_up(api)
    first, second = api.runtime.renewal_scheduler(), api.runtime.renewal_scheduler()
    clock.advance(240 * DAY)  # 65.8% of its life
    assert (await first.run_once()).renewed == []

    clock.advance(10 * DAY)  # 68.5%: due
    reports = await asyncio.gather(first.run_once(), second.run_once())
    renewed = [c for report in reports for c in report.renewed]
    assert renewed == [old["certificate_id"]], reports
    assert (await types_of(api, old["certificate_id"])).count("certificate.renewal_started") == 1
    events = await events_of(api, old["certificate_id"])
    link = events[-1]
    assert type(link).event_type == "certificate.renewed" and link.rotated is True

    await caught_up(api)
    admin = await api.admin()  # API keys live 90 days: one made on the moved clock
    listed = await api.client.get("/v1/certificates", headers=admin, params={"common_name": "node.acme.internal"})
    assert listed.status_code == 200, listed.text
    both = listed.json()["items"]
    assert len(both) == 2  # no orphan: the loser issued nothing
    new = await row(api, admin, link.new_certificate_id)
    before = await row(api, admin, old["certificate_id"])
    assert (before["superseded_by"], new["supersedes"]) == (new["certificate_id"], old["certificate_id"])
    assert (new["ca_id"], new["profile"], new["sans"]) == (old["ca_id"], old["profile"], old["sans"])
    assert public_key_of(new) != public_key_of(old) and new["has_key"]  # rotated: a new key in the vault
    assert new["not_before"] > old["not_before"]
    assert [r.renewed for r in await asyncio.gather(first.run_once(), second.run_once())] == [[], []]


async def test_same_key_renewal_keeps_the_key_only_where_the_profile_allows_it(pki_api):
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    await create_profile(api, admin, "keep-key", {"renew_before_days": 30, "reuse_key": True})
    server = await issue(api, admin, inter, "a.acme.internal", profile="keep-key", algorithm="ecdsa-p256")
    held = await issue(api, admin, inter, "b.acme.internal", profile="keep-key", csr=csr_for("b.acme.internal"))
    plain = await issue(api, admin, inter, "c.acme.internal", csr=csr_for("c.acme.internal"))

    refused = await api.client.post(f"/v1/certificates/{plain['certificate_id']}/renew", headers=admin,
                                    json={"reuse_key": True})
    assert_problem(refused, 422, "key_reuse_not_allowed", field="reuse_key")
    refused = await api.client.post(f"/v1/certificates/{plain['certificate_id']}/renew", headers=admin, json={})
    assert_problem(refused, 422, "new_csr_required", field="reuse_key")

    clock.advance(340 * DAY)  # keep-key: 30 days before expiry; cassandra-node: past 67%
    admin = await api.admin()  # API keys live 90 days: one made on the moved clock
    scheduler = api.runtime.renewal_scheduler()
    counted = {outcome: REGISTRY.get_sample_value("csm_renewals_total", {"outcome": outcome}) or 0
               for outcome in ("renewed", "failed")}
    report = await scheduler.run_once()
    assert sorted(report.renewed) == sorted([server["certificate_id"], held["certificate_id"]])
    assert report.failed == [plain["certificate_id"]]
    assert {outcome: REGISTRY.get_sample_value("csm_renewals_total", {"outcome": outcome}) - before
            for outcome, before in counted.items()} == {"renewed": 2, "failed": 1}  # what CsmRenewalsFailing reads
    for before in (server, held):
        link = (await events_of(api, before["certificate_id"]))[-1]
        after = await row(api, admin, link.new_certificate_id)
        assert link.rotated is False and public_key_of(after) == public_key_of(before)
        assert (after["key_source"], after["has_key"]) == (before["key_source"], before["has_key"])
    renewed_server = (await events_of(api, server["certificate_id"]))[-1].new_certificate_id
    exported = await api.client.get(f"/v1/certificates/{renewed_server}/export", headers=admin,
                                    params={"format": "pem", "include_key": "true"})
    assert exported.status_code == 200, exported.text
    key = serialization.load_pem_private_key(exported.text[exported.text.index("-----BEGIN PRIVATE KEY"):].encode(),
                                             None)
    assert key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                                         ) == public_key_of(server)  # the vault's key, certified again

    failures = [p for p in await events_of(api, plain["certificate_id"])
                if type(p).event_type == "certificate.renewal_failed"]
    assert [(f.reason, f.attempt) for f in failures] == [("new_csr_required", 0)]
    await caught_up(api)
    assert (await scheduler.run_once()).failed == []  # within the retry window: no second failure
    clock.advance(timedelta(hours=25))
    await caught_up(api)
    assert (await scheduler.run_once()).failed == [plain["certificate_id"]]  # the next window: one more


async def test_a_certificate_shorter_lived_than_the_lead_time_is_renewed_once_per_lifetime(pki_api):
    """The tester's M1: a 30-day lead time and certificates that live 7 days (asked so) or 30 (the tenant's cap)
    were due from their first second, and so was every successor: a new certificate on every scheduler pass.
    They renew at the profile's share of their lifetime instead; a profile whose default lifetime is not longer
    than its lead time is refused."""
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    await create_profile(api, admin, "node30", {"renew_before_days": 30})
    refused = await api.client.post("/v1/profiles", headers=admin, json={"tenant_id": "acme", "profile": {
        "name": "storm", "description": "due as soon as issued", "key_usage": ["digital_signature"],
        "extended_key_usage": ["server_auth"], "allowed_san_types": ["dns"], "require_san": False,
        "require_common_name": True, "max_validity_days": 397, "default_validity_days": 30,
        "allowed_algorithms": None, "default_algorithm": "ecdsa-p256", "renewal": {"renew_before_days": 30}}})
    assert_problem(refused, 422, "policy_violation", field="renewal.renew_before_days")
    capped = await api.client.put("/v1/tenants/acme/policy", headers=admin, json={"max_validity_days": 30})
    assert capped.status_code == 200, capped.text
    month = await issue(api, admin, inter, "month.acme.internal", profile="node30", algorithm="ecdsa-p256")
    week = await issue(api, admin, inter, "week.acme.internal", profile="node30", algorithm="ecdsa-p256",
                       validity_days=7)
    scheduler = api.runtime.renewal_scheduler()

    async def renewed_by_two_passes() -> list[list[str]]:
        await caught_up(api)
        first = (await scheduler.run_once()).renewed
        await caught_up(api)
        return [first, (await scheduler.run_once()).renewed]

    assert await renewed_by_two_passes() == [[], []]
    clock.advance(5 * DAY)  # the week's certificate is 71% through its life (67%: due); the month's, 17%
    assert await renewed_by_two_passes() == [[week["certificate_id"]], []]
    clock.advance(16 * DAY)  # the month's is 70% through; the week's successor has expired unrenewed
    assert await renewed_by_two_passes() == [[month["certificate_id"]], []]
    admin = await api.admin()  # API keys live 90 days: one made on the moved clock
    successor = await row(api, admin, (await events_of(api, month["certificate_id"]))[-1].new_certificate_id)
    lifetime = datetime.fromisoformat(successor["not_after"]) - datetime.fromisoformat(successor["not_before"])
    assert datetime.fromisoformat(successor["renew_at"]) == datetime.fromisoformat(successor["not_before"]) \
        + lifetime * 67 / 100  # what the scheduler reads: the share, not its first second


async def test_manual_renewal_rotates_links_and_refuses_twice_or_when_revoked(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    old = await leaf(api, admin, inter, "m.acme.internal")
    response = await api.client.post(f"/v1/certificates/{old['certificate_id']}/renew", headers=admin,
                                     json={})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["renewed_from"], body["rotated"]) == (old["certificate_id"], True)
    assert response.headers["location"] == f"/v1/certificates/{body['certificate_id']}"
    assert (await row(api, admin, old["certificate_id"]))["superseded_by"] == body["certificate_id"]
    again = await api.client.post(f"/v1/certificates/{old['certificate_id']}/renew", headers=admin, json={})
    assert_problem(again, 409, "already_renewed", field="id")

    other = await leaf(api, admin, inter, "r.acme.internal")
    await revoke(api, admin, other["certificate_id"], reason="superseded")
    refused = await api.client.post(f"/v1/certificates/{other['certificate_id']}/renew", headers=admin, json={})
    assert_problem(refused, 409, "certificate_revoked", field="id")
    missing = await api.client.post(f"/v1/certificates/{'0' * 39}1/renew", headers=admin, json={})
    assert_problem(missing, 404, "certificate_not_found", field="id")


async def test_expiry_warnings_come_once_per_threshold(pki_api):
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    await create_profile(api, admin, "manual", {"auto": False})
    certificate = await issue(api, admin, inter, "w.acme.internal", profile="manual", algorithm="ecdsa-p256",
                              validity_days=100)
    scheduler = api.runtime.renewal_scheduler()
    seen = []
    for days in (50, 25, 26, 5, 6, 0.5, 100):  # days before expiry (the clock only moves forward)
        clock.moment = max(clock.moment, x509.load_pem_x509_certificate(
            certificate["certificate_pem"].encode()).not_valid_after_utc - timedelta(days=days))
        await caught_up(api)
        report = await scheduler.run_once()
        assert report.renewed == []  # auto: false
        seen += [threshold for _, threshold in report.warned]
    assert seen == [30, 7, 1]
    admin = await api.admin()
    warned = [p for p in await events_of(api, certificate["certificate_id"])
              if type(p).event_type == "certificate.expiry_warned"]
    assert [w.threshold_days for w in warned] == [30, 7, 1]
    assert (await row(api, admin, certificate["certificate_id"]))["expiry_warned_days"] == 1


async def test_expiring_within_and_the_expiry_gauges(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    ids = {}
    for days in (5, 20, 60, 200):
        issued = await issue(api, admin, inter, f"e{days}.acme.internal", algorithm="ecdsa-p256",
                             validity_days=days)
        ids[days] = issued["certificate_id"]
    await caught_up(api)

    async def within(value: str) -> set[str]:
        response = await api.client.get("/v1/certificates", headers=admin, params={"expiring_within": value})
        assert response.status_code == 200, response.text
        return {item["certificate_id"] for item in response.json()["items"]}

    assert await within("30d") == {ids[5], ids[20]}
    assert await within("24h") == set()
    assert await within("2400h") == {ids[5], ids[20], ids[60]}
    for bad in ("30", "30m", "0d", "-1d", "d", "3651d", "1000000h"):
        response = await api.client.get("/v1/certificates", headers=admin, params={"expiring_within": bad})
        assert_problem(response, 400, "validation_failed", field="expiring_within")

    series = expiring_series
    anonymous = (await api.client.get("/metrics")).text  # no scrape token configured: totals, no tenant or CA
    assert series(anonymous) == {("", "", "7d"): 1, ("", "", "30d"): 2, ("", "", "90d"): 3}
    assert 'tenant="acme"' not in anonymous and inter not in anonymous  # (a route and a projection say acme)
    api.app.state.metrics_token_digest = hashlib.sha256(b"s" * 32).digest()  # as CSM_METRICS_TOKEN_FILE sets it
    assert_problem(await api.client.get("/metrics"), 401, "unauthorized", field="Authorization")
    scraped = await api.client.get("/metrics", headers={"Authorization": "Bearer " + "s" * 32})
    assert series(scraped.text) == {("acme", inter, "7d"): 1, ("acme", inter, "30d"): 2, ("acme", inter, "90d"): 3}


def expiring_series(metrics: str) -> dict[tuple[str, ...], float]:
    """``csm_certificates_expiring`` of a scrape, by its (tenant, ca, within) labels ("" where absent)."""
    found = {}
    for line in metrics.splitlines():
        if line.startswith("csm_certificates_expiring{"):
            labels, value = line.removeprefix("csm_certificates_expiring{").split("} ")
            parsed = dict(item.split("=") for item in labels.split(","))
            found[tuple(parsed.get(name, "").strip('"') for name in ("tenant", "ca", "within"))] = float(value)
    return found


async def test_expiring_within_lists_what_the_expiry_gauge_counts_and_a_status_filter_overrides_it(tmp_path):
    """Of a revoked, a renewed (superseded) and a live certificate expiring within 30 days, the list and the
    tenant's gauge (scraped with the CSM_METRICS_TOKEN_FILE token) both hold the live one and the renewal's
    successor (same lifetime, so in the window too), and nothing else; ``status`` still selects what it names."""
    token = "0123456789abcdef" * 4
    (tmp_path / "scrape-token").write_text(token + "\n")
    async with running_api(tmp_path, max_body_bytes=1 << 20, metrics_token_file=tmp_path / "scrape-token") as api:
        admin, _root, inter = await setup(api)
        live, revoked, renewed = [(await issue(api, admin, inter, f"{name}.acme.internal", algorithm="ecdsa-p256",
                                               validity_days=20))["certificate_id"]
                                  for name in ("live", "revoked", "renewed")]
        await revoke(api, admin, revoked, reason="cessation_of_operation")
        response = await api.client.post(f"/v1/certificates/{renewed}/renew", headers=admin, json={})
        assert response.status_code == 201, response.text
        successor = response.json()["certificate_id"]
        await caught_up(api)

        async def within(**params) -> set[str]:
            response = await api.client.get("/v1/certificates", headers=admin,
                                            params={"expiring_within": "30d", **params})
            assert response.status_code == 200, response.text
            return {item["certificate_id"] for item in response.json()["items"]}

        listed = await within()
        assert listed == {live, successor}
        scraped = await api.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200, scraped.text
        assert expiring_series(scraped.text)[("acme", inter, "30d")] == len(listed)
        assert await within(status="revoked") == {revoked}
        assert await within(status="issued") == {live, renewed, successor}  # "issued" keeps the superseded one


async def test_a_certificate_is_valid_through_its_not_after_second_and_expired_just_after(pki_api):
    """X.509 validity includes notAfter itself; the read model keeps it in whole seconds and ``now`` has microseconds."""
    api = pki_api
    admin, _root, inter = await setup(api)
    issued = await issue(api, admin, inter, "edge.acme.internal", algorithm="ecdsa-p256", validity_days=5)
    not_after = x509.load_pem_x509_certificate(issued["certificate_pem"].encode()).not_valid_after_utc
    clock = api.runtime.services.clock = Clock()

    async def listed(status: str) -> bool:
        response = await api.client.get("/v1/certificates", headers=admin, params={"status": status})
        assert response.status_code == 200, response.text
        return issued["certificate_id"] in {item["certificate_id"] for item in response.json()["items"]}

    for offset_us, valid in ((-500_000, True), (0, True), (1, False), (500_000, False), (1_000_000, False)):
        clock.moment = not_after + timedelta(microseconds=offset_us)
        assert (await listed("valid"), await listed("expired")) == (valid, not valid), offset_us
    clock.moment = not_after - timedelta(milliseconds=500)
    window = await api.client.get("/v1/certificates", headers=admin, params={"expiring_within": "1h"})
    assert [item["certificate_id"] for item in window.json()["items"]] == [issued["certificate_id"]]


async def test_expiring_within_and_the_gauge_count_the_same_certificate_at_both_edges_of_the_window(pki_api):
    """One window for the list and the gauge: not expired now (valid through its notAfter second, as status=valid
    says) and notAfter before now + 7 days. The clock is set on whole seconds, where ">=" and ">", "<" and "<="
    differ (with microseconds, the rounding of ``validity_time`` hid the difference)."""
    api = pki_api
    admin, _root, inter = await setup(api)
    issued = await issue(api, admin, inter, "window.acme.internal", algorithm="ecdsa-p256", validity_days=5)
    not_after = x509.load_pem_x509_certificate(issued["certificate_pem"].encode()).not_valid_after_utc
    clock = api.runtime.services.clock = Clock()
    second = timedelta(seconds=1)

    async def seen() -> tuple[bool, float]:
        response = await api.client.get("/v1/certificates", headers=admin, params={"expiring_within": "7d"})
        assert response.status_code == 200, response.text
        scraped = await api.client.get("/metrics")  # no scrape token configured: one series per window
        assert scraped.status_code == 200, scraped.text
        return (issued["certificate_id"] in {item["certificate_id"] for item in response.json()["items"]},
                expiring_series(scraped.text).get(("", "", "7d"), 0))

    for moment, inside in ((not_after - 7 * DAY - second, False), (not_after - 7 * DAY, False),
                           (not_after - 7 * DAY + second, True), (not_after - second, True), (not_after, True),
                           (not_after + second, False)):
        clock.moment = moment
        assert await seen() == (inside, int(inside)), moment - not_after


async def test_expiring_within_pages_through_every_live_certificate_once_with_other_filters(pki_api):
    """Cursor pagination under ``expiring_within`` (both sorts, one item a page) returns each live certificate in
    the window exactly once, and combines with another filter (``common_name``) and with ``expires_before``."""
    api = pki_api
    admin, _root, inter = await setup(api)
    ids = {}
    for name, days in (("a", 3), ("b", 4), ("c", 5), ("far", 60)):
        ids[name] = (await issue(api, admin, inter, f"{name}.page.acme.internal", algorithm="ecdsa-p256",
                                 validity_days=days))["certificate_id"]
    revoked = (await issue(api, admin, inter, "r.page.acme.internal", algorithm="ecdsa-p256",
                           validity_days=3))["certificate_id"]
    await revoke(api, admin, revoked, reason="superseded")
    await caught_up(api)

    async def pages(**params) -> list[str]:
        found, cursor = [], None
        while True:
            response = await api.client.get("/v1/certificates", headers=admin, params={
                "expiring_within": "30d", "limit": 1, **params, **({"cursor": cursor} if cursor else {})})
            assert response.status_code == 200, response.text
            found += [item["certificate_id"] for item in response.json()["items"]]
            cursor = response.json()["next_cursor"]
            if cursor is None:
                return found

    for sort in ("issued", "expiry"):
        assert sorted(await pages(sort=sort)) == sorted([ids["a"], ids["b"], ids["c"]]), sort
    assert await pages(sort="expiry") == [ids["a"], ids["b"], ids["c"]]
    assert await pages(common_name="b.page.acme.internal") == [ids["b"]]
    before = (datetime.now(UTC) + timedelta(days=4, hours=12)).isoformat()
    assert sorted(await pages(expires_before=before)) == sorted([ids["a"], ids["b"]])


async def exported_chain(api, headers, certificate_id: str) -> list[str]:
    """The leaf's PEM export with its chain, as served: leaf first, root last."""
    await caught_up(api)
    response = await api.client.get(f"/v1/certificates/{certificate_id}/export", headers=headers,
                                    params={"format": "pem"})
    assert response.status_code == 200, response.text
    return certificates(response.text)


async def verify_at(tmp_path, name: str, chain: list[str], moment) -> subprocess.CompletedProcess:
    """`openssl verify -x509_strict` of ``chain[0]`` at ``moment`` (the test's clock), anchored at ``chain[-1]``."""
    folder = tmp_path / name
    folder.mkdir()
    for file, text in (("leaf.pem", chain[0]), ("anchor.pem", chain[-1]), ("untrusted.pem", "".join(chain[1:-1]))):
        (folder / file).write_text(text)
    args = [OPENSSL, "verify", "-x509_strict", "-attime", str(int(moment.timestamp())), "-CAfile",
            folder / "anchor.pem", "-untrusted", folder / "untrusted.pem", folder / "leaf.pem"]
    return await asyncio.to_thread(subprocess.run, [str(a) for a in args], capture_output=True, text=True)


@needs_openssl
async def test_an_intermediate_rolled_over_before_expiry_serves_both_chains_during_the_overlap(pki_api, tmp_path):
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root")
    inter = await create_ca(api, admin, name="Acme Issuing", parent_id=root, validity_days=400)
    root_pem = await ca_pem(api, admin, root)
    clock.advance(300 * DAY)
    admin = await api.admin()
    before = await issue(api, admin, inter, "old.acme.internal", algorithm="ecdsa-p256", validity_days=90)
    old = await ca_pem(api, admin, inter)

    clock.advance(80 * DAY)  # 20 days left on the intermediate: roll it over, overlapping
    admin = await api.admin()
    response = await api.client.post(f"/v1/cas/{inter}/rollover", headers=admin, json={"reason": "expiring soon"})
    assert response.status_code == 200, response.text
    await caught_up(api)
    new = await current_ca_pem(api, admin, inter)
    old_ca, new_ca = load(old), load(new)
    assert new_ca.subject == old_ca.subject and new_ca.public_key() != old_ca.public_key()
    assert new_ca.not_valid_before_utc <= clock.now() < old_ca.not_valid_after_utc < new_ca.not_valid_after_utc

    clock.advance(5 * DAY)  # inside the overlap: both intermediate certificates are valid
    admin = await api.admin()
    after = await issue(api, admin, inter, "new.acme.internal", algorithm="ecdsa-p256")
    renewed = await api.client.post(f"/v1/certificates/{before['certificate_id']}/renew", headers=admin, json={})
    assert renewed.status_code == 201, renewed.text
    successor = renewed.json()["certificate_id"]
    chains = {name: await exported_chain(api, admin, certificate_id) for name, certificate_id in
              (("old-leaf", before["certificate_id"]), ("new-leaf", after["certificate_id"]),
               ("renewed-leaf", successor))}
    assert chains["old-leaf"][1:] == [old, root_pem]
    assert chains["new-leaf"][1:] == chains["renewed-leaf"][1:] == [new, root_pem]  # renewals use the new key
    for name, chain in chains.items():
        run = await verify_at(tmp_path, name, chain, clock.now())
        assert run.returncode == 0 and run.stdout.strip().endswith(": OK"), name + run.stdout + run.stderr
    crossed = await verify_at(tmp_path, "old-leaf-new-ca", [chains["old-leaf"][0], new, root_pem], clock.now())
    assert crossed.returncode != 0  # each leaf needs the CA certificate of the key that signed it
    served = (await api.client.get(f"/v1/cas/{inter}/chain", headers=admin)).text
    assert certificates(served) == [new, root_pem]
    listed = (await api.client.get(f"/v1/cas/{inter}/certificates", headers=admin)).json()
    assert [(c["role"], c["certificate_pem"]) for c in listed] == [("previous", old), ("current", new)]

    clock.advance(20 * DAY)  # the old intermediate certificate has expired; the renewed leaf chains on
    run = await verify_at(tmp_path, "renewed-after-overlap", chains["renewed-leaf"], clock.now())
    assert run.returncode == 0, run.stdout + run.stderr
    run = await verify_at(tmp_path, "old-after-overlap", chains["old-leaf"], clock.now())
    assert run.returncode != 0


async def issued_before_the_exponent_rule(api, ca_id: str, name: str, key, key_source: str) -> dict:
    """A certificate for an RSA key with exponent 3, as a release before the exponent rule issued it: signed with
    the CA's key by the engine and recorded as ``certificate.issued``, with no policy run (issuance refuses it now)."""
    from commands import pki
    from commands.authz import SYSTEM
    from commands.ports import PublicKeys
    from commands.profiles import resolve_profile
    from commands.runtime import CommandContext, load, run
    from domain import ca, certificate, spec_builders
    from domain.certspec import DistinguishedName, SubjectAltNames

    services = api.runtime.services
    crypto = pki.crypto_of(services)
    issuer = await load(services, "acme", ca.stream_id(ca_id), ca.fold)
    subject, sans, serial = DistinguishedName(common_name=name), SubjectAltNames(dns=(name,)), pki.new_serial()
    spec = spec_builders.leaf_spec(await resolve_profile(services, "acme", "keep-key"), subject=subject, sans=sans,
                                   validity_days=365, subject_algorithm="rsa-3072", issuer_algorithm=issuer.algorithm,
                                   serial=serial, now=services.clock.now(), **pki.relying_party_urls(services, issuer))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    der, facts = crypto.sign_described(spec, PublicKeys(primary=spki), await pki.signing_key(services, issuer, "acme"),
                                       pki.ca_der(issuer.current.certificate_pem))
    key_ref = None
    if key_source == "server":
        material = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        key_ref = await api.runtime.keys.put("acme", material, algorithm="rsa-3072", purpose="end-entity")
    issued = certificate.CertificateIssued(
        certificate_id=certificate.certificate_id(serial), ca_id=ca_id,
        issuer_fingerprint=issuer.current.facts.fingerprint_sha256, profile="keep-key", subject=subject, sans=sans,
        key_source=key_source, key_ref=key_ref, csr_sha256=None, certificate_pem=pki.pem("CERTIFICATE", der),
        facts=facts)
    await run(services, CommandContext(principal=SYSTEM), issued, tenant_id="acme",
              stream_id=certificate.stream_id(issued.certificate_id), stream_type=certificate.STREAM_TYPE,
              fold=certificate.fold, decide=lambda s: certificate.decide_issue(s, issued), presume_new=True)
    return {"certificate_id": issued.certificate_id, "certificate_pem": issued.certificate_pem}


async def test_a_same_key_renewal_refuses_a_key_todays_issuance_would_refuse(pki_api):
    """RSA exponent 3 was accepted before the exponent rule; renewing with that key again is refused as issuance
    refuses it (422 weak_key, field reuse_key), naming the way out; a vault key renews with a new key instead."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    api = pki_api
    admin, _root, inter = await setup(api)
    await create_profile(api, admin, "keep-key", {"renew_before_days": 30, "reuse_key": True})
    weak = rsa.generate_private_key(3, 3072)
    held = await issued_before_the_exponent_rule(api, inter, "e3.acme.internal", weak, "csr")
    vaulted = await issued_before_the_exponent_rule(api, inter, "v3.acme.internal", weak, "server")

    refused = await api.client.post(f"/v1/certificates/{held['certificate_id']}/renew", headers=admin, json={})
    problem = assert_problem(refused, 422, "policy_violation", field="reuse_key")
    assert [(e["field"], e["rule"]) for e in problem["errors"]] == [("reuse_key", "weak_key")], problem
    assert "exponent" in problem["detail"] and "new CSR" in problem["detail"]
    assert (await types_of(api, held["certificate_id"]))[-1] == "certificate.renewal_failed"

    refused = await api.client.post(f"/v1/certificates/{vaulted['certificate_id']}/renew", headers=admin,
                                    json={"reuse_key": True})
    problem = assert_problem(refused, 422, "policy_violation", field="reuse_key")
    assert "reuse_key false" in problem["detail"]
    rekeyed = await api.client.post(f"/v1/certificates/{vaulted['certificate_id']}/renew", headers=admin,
                                    json={"reuse_key": False})
    assert rekeyed.status_code == 201, rekeyed.text
    assert rekeyed.json()["rotated"] is True
    new = await row(api, admin, rekeyed.json()["certificate_id"])
    assert x509.load_pem_x509_certificate(new["certificate_pem"].encode()).public_key().public_numbers().e == 65537
    issued = [e for e in await api.runtime.store.read_all(0, 100_000) if e.type == "certificate.issued"]
    assert len(issued) == 3  # the two old certificates and the rekeyed one: no same-key successor


async def test_a_suspended_tenants_due_certificates_wait_for_its_resumption_while_its_crls_go_on(pki_api):
    """The renewal scheduler signs nothing for a suspended tenant and records nothing (no claim, no failure to wait
    out); the revocation scheduler republishes its CRLs as usual; once resumed, the next pass renews."""
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    old = await leaf(api, admin, inter, "node.acme.internal")  # 365 days; cassandra-node renews at 67%
    first_crl = await crl_of(api, inter)
    suspended = await api.client.post("/v1/tenants/acme/suspend", json={"reason": "unpaid"}, headers=admin)
    assert suspended.status_code == 200, suspended.text
    await caught_up(api)
    renewals, revocations = api.runtime.renewal_scheduler(), api.runtime.revocation_scheduler()
    clock.advance(250 * DAY)  # 68.5%: due
    assert (await renewals.run_once()).renewed == []
    assert await types_of(api, old["certificate_id"]) == ["certificate.issued"]
    assert inter in {p.ca_id for p in await revocations.run_once()}
    assert crl_number(await crl_of(api, inter)) > crl_number(first_crl)

    admin = await api.admin()  # API keys live 90 days: one made on the moved clock
    resumed = await api.client.post("/v1/tenants/acme/resume", json={"reason": "paid"}, headers=admin)
    assert resumed.status_code == 200, resumed.text
    await caught_up(api)
    assert (await renewals.run_once()).renewed == [old["certificate_id"]]
