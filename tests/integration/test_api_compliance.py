"""The compliance report and the analytics counts over HTTP: the real app, SQLite store and read models.

Findings appear when their rule starts to hold (a policy tightened after issuance, a CRL lapsing, a renewal left
undone, an expiry, a compromised CA key) and go when it stops; the counts and the summary are exact; permissions
and bad ranges are refused by name. Time moves through the app's clock; the schedulers' first passes ran at
start-up and their next ones are minutes away, so nothing repairs a finding behind a test's back.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from test_api_compromised_halves import revoked_hybrid
from test_api_compromised_keys import compromised
from test_api_revocation import leaf, revoke, setup
from test_api_support import Clock, assert_problem, pki_api  # noqa: F401
from test_crl_schedule import caught_up


async def report(api, headers, tenant_id="acme", **params) -> dict:
    response = await api.client.get(f"/v1/tenants/{tenant_id}/compliance", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def rules(body: dict) -> list[tuple[str, str]]:
    return [(f["rule"], f["subject_id"]) for f in body["findings"]]


async def test_a_policy_tightened_after_issuance_flags_the_certificates_it_would_refuse_now(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    issued = [await leaf(api, admin, inter, f"n{i}.acme.internal") for i in range(2)]
    body = await report(api, admin)
    assert rules(body) == [("tenant_policy_unrestricted", "acme")]
    assert body["counts"] == {"critical": 0, "high": 0, "medium": 0, "low": 1}
    summary = body["summary"]
    assert summary["live_certificates"] == 2 and summary["by_algorithm"] == {"ecdsa-p256": 2}
    assert summary["by_profile"] == {"cassandra-node": 2} and summary["by_key_source"] == {"server": 2}
    assert summary["cas_by_status"] == {"active": 2} and summary["cas_in_service"] == 2
    assert summary["expiring_within_days"] == {"7": 0, "30": 0, "90": 0}
    assert summary["post_quantum_cas"] == 0 and summary["compromised_keys"] == 0

    policy = await api.client.put("/v1/tenants/acme/policy", headers=admin, json={
        "allowed_dns": [".other.internal"], "max_validity_days": 90, "allowed_algorithms": ["ecdsa-p384"]})
    assert policy.status_code == 200, policy.text
    body = await report(api, admin)
    ids = sorted(c["certificate_id"] for c in issued)
    found = sorted(rules(body))
    assert found == sorted([(rule, cid) for cid in ids for rule in (
        "certificate_algorithm_not_allowed", "certificate_validity_exceeds_policy",
        "certificate_name_not_allowed", "certificate_name_not_allowed")])  # its DNS name, and its CN
    assert body["counts"] == {"critical": 0, "high": 0, "medium": 8, "low": 0}
    named = next(f for f in body["findings"] if f["rule"] == "certificate_name_not_allowed")
    assert named["ca_id"] == inter and named["subject_type"] == "certificate" and "allowed DNS" in named["detail"]
    # revoked, a certificate is no longer the tenant's problem
    await revoke(api, admin, ids[0], reason="cessation_of_operation")
    await caught_up(api)
    body = await report(api, admin)
    assert {cid for _, cid in rules(body)} == {ids[1]}
    assert body["summary"]["revoked_last_30_days"] == {"cessation_of_operation": 1}
    limited = await report(api, admin, limit=1)
    assert len(limited["findings"]) == 1 and limited["truncated"] and limited["counts"]["medium"] == 4


async def test_lapsed_crls_undone_renewals_and_expiry_appear_as_time_passes_and_go_when_mended(pki_api):
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    kept = await leaf(api, admin, inter, "kept.acme.internal")
    gone = await leaf(api, admin, inter, "gone.acme.internal")
    await revoke(api, admin, gone["certificate_id"], reason="superseded")  # publishes the intermediate's CRL
    await caught_up(api)
    assert not [r for r in rules(await report(api, admin)) if r[0] != "tenant_policy_unrestricted"]

    clock.offset = timedelta(days=8)  # past the CRL's nextUpdate (7 days)
    body = await report(api, admin)
    overdue = [f for f in body["findings"] if f["rule"] == "ca_crl_overdue"]
    assert [f["subject_id"] for f in overdue if f["subject_id"] == inter] == [inter]
    assert overdue[0]["severity"] == "critical" and "lapsed at" in overdue[0]["detail"]
    fetched = await api.client.get(f"/v1/cas/{inter}/crl")  # publishes the due CRL on demand
    assert fetched.status_code == 200
    await caught_up(api)
    assert ("ca_crl_overdue", inter) not in rules(await report(api, admin))

    renew_at = datetime.fromisoformat(kept["renew_at"])
    clock.offset = renew_at - datetime.now(UTC) + timedelta(minutes=30)  # due, inside the scheduler's grace
    admin = await api.admin()  # the first token has expired by then
    assert ("certificate_renewal_overdue", kept["certificate_id"]) not in rules(await report(api, admin))
    clock.offset = renew_at - datetime.now(UTC) + timedelta(hours=2)
    body = await report(api, admin)
    assert ("certificate_renewal_overdue", kept["certificate_id"]) in rules(body)
    assert body["summary"]["expiring_within_days"]["90"] == 0  # renew_at is months before its expiry

    not_after = datetime.fromisoformat(kept["not_after"])
    clock.offset = not_after - datetime.now(UTC) + timedelta(days=1)
    admin = await api.admin()
    body = await report(api, admin)
    expired = [f for f in body["findings"] if f["subject_id"] == kept["certificate_id"]]
    assert [f["rule"] for f in expired] == ["certificate_expired"] and expired[0]["severity"] == "high"
    assert body["summary"]["live_certificates"] == 0
    clock.offset = not_after - datetime.now(UTC) + timedelta(days=31)  # out of the lookback
    admin = await api.admin()
    assert kept["certificate_id"] not in {cid for _, cid in rules(await report(api, admin))}


async def test_a_root_signing_with_a_key_reported_compromised_is_critical(pki_api):
    api = pki_api
    admin, root, inter = await setup(api)
    reported = await api.client.post("/v1/tenants/acme/compromised-keys", headers=admin, json={"ca_id": root})
    assert reported.status_code == 200, reported.text
    body = await report(api, admin)
    assert body["findings"][0]["rule"] == "ca_key_compromised" and body["findings"][0]["subject_id"] == root
    assert body["counts"]["critical"] == 1 and body["summary"]["compromised_keys"] == 1
    assert ("ca_key_compromised", inter) not in rules(body)


async def test_a_hybrid_keys_two_halves_count_as_one_compromised_key(pki_api):
    """A hybrid certificate's compromise blocks its classical key and its ML-DSA half (two entries, one report): the
    summary counts the keys stolen, one."""
    api = pki_api
    admin, _inter, _issued, _pair, classical, ml_dsa = await revoked_hybrid(api)
    assert sorted(k["public_key_sha256"] for k in await compromised(api, admin)) == sorted([classical, ml_dsa])
    assert (await report(api, admin))["summary"]["compromised_keys"] == 1


async def test_who_may_read_reports_and_counts_and_bad_ranges_are_refused_by_name(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    await api.create_tenant(admin, "globex")
    viewer = await api.token("viewer", tenant_id="acme")
    assert (await api.client.get("/v1/tenants/acme/compliance", headers=viewer)).status_code == 200
    issuer = await api.token("issuer", tenant_id="acme")  # cert:read without ca:read
    assert_problem(await api.client.get("/v1/tenants/acme/compliance", headers=issuer), 403, "forbidden")
    assert_problem(await api.client.get("/v1/tenants/globex/compliance", headers=viewer), 403, "forbidden",
                   field="tenant_id")
    assert_problem(await api.client.get("/v1/tenants/nobody/compliance", headers=admin), 404, "tenant_not_found")
    assert_problem(await api.client.get("/v1/tenants/acme/compliance", headers=admin, params={"limit": 0}), 400)
    assert_problem(await api.client.get("/v1/tenants/acme/analytics", headers=viewer), 403, "forbidden")
    auditor = await api.token("auditor", tenant_id="acme")
    assert (await api.client.get("/v1/tenants/acme/analytics", headers=auditor)).status_code == 200
    assert_problem(await api.client.get("/v1/tenants/globex/analytics", headers=auditor), 403, "forbidden")
    assert_problem(await api.client.get("/v1/tenants/nobody/analytics", headers=admin), 404, "tenant_not_found")
    refused = await api.client.get("/v1/tenants/acme/analytics", headers=admin,
                                   params={"since": "2026-12-02", "until": "2026-12-01"})
    assert "after" in assert_problem(refused, 400, "validation_failed", field="since")["detail"]
    refused = await api.client.get("/v1/tenants/acme/analytics", headers=admin,
                                   params={"since": "2025-01-01", "until": "2026-12-01"})
    assert "366 days" in assert_problem(refused, 400, "validation_failed", field="since")["detail"]
    assert_problem(await api.client.get("/v1/tenants/acme/analytics", headers=admin, params={"since": "yesterday"}),
                   400)


async def test_analytics_count_each_day_by_kind_and_a_rebuild_counts_the_same(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    issued = [await leaf(api, admin, inter, f"n{i}.acme.internal") for i in range(3)]
    await revoke(api, admin, issued[0]["certificate_id"], reason="key_compromise")
    await revoke(api, admin, issued[1]["certificate_id"], reason="superseded")
    renewed = await api.client.post(f"/v1/certificates/{issued[2]['certificate_id']}/renew", headers=admin, json={})
    assert renewed.status_code in (200, 201), renewed.text
    viewer = await api.token("viewer", tenant_id="acme")
    denied = await api.client.post("/v1/certificates", headers=viewer, json={
        "tenant_id": "acme", "ca_id": inter, "algorithm": "ecdsa-p256", "subject": {"common_name": "x.acme.internal"}})
    assert denied.status_code == 403
    for _ in range(100):  # the denial is recorded after its answer
        await caught_up(api)
        response = await api.client.get("/v1/tenants/acme/analytics", headers=admin)
        assert response.status_code == 200, response.text
        counted = response.json()
        if "access.denied" in counted["totals"]:
            break
        await asyncio.sleep(0.05)
    totals = counted["totals"]
    assert totals["certificate.issued"] == {"cassandra-node": 4}  # the renewal's too
    assert totals["certificate.issued.algorithm"] == {"ecdsa-p256": 4}
    assert totals["certificate.revoked"] == {"key_compromise": 1, "superseded": 1}
    assert totals["certificate.renewed"] == {"": 1}
    assert totals["key.compromise_recorded"] == {"key_compromise": 1}
    assert totals["ca.created"] == {"root": 1, "intermediate": 1}
    assert totals["access.denied"] == {"cert:issue": 1}
    today = api.runtime.services.clock.now().date().isoformat()
    assert [day["day"] for day in counted["days"]] == [today] and counted["until"] == today
    assert counted["days"][0]["counts"] == totals
    yesterday = await api.client.get("/v1/tenants/acme/analytics", headers=admin,
                                     params={"since": "2026-01-01", "until": "2026-01-02"})
    assert yesterday.json()["totals"] == {} and yesterday.json()["days"] == []
    await api.create_tenant(admin, "globex")
    other = await api.client.get("/v1/tenants/globex/analytics", headers=admin)
    assert other.json()["totals"] == {}

    await asyncio.to_thread(api.runtime.runner.rebuild, "analytics")
    again = await api.client.get("/v1/tenants/acme/analytics", headers=admin)
    assert again.json() == counted
