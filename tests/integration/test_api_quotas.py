"""Tenant quotas over HTTP: CAs held, live certificates, issuances per UTC day; the usage they are counted on.

The real app and SQLite store. A refusal is a problem naming ``quotas.<name>`` and writes nothing; revoking,
expiry and renewal change what counts; a burst of issuances in flight at once cannot pass a quota together
(one process); a per-day quota answers 429 until the next UTC midnight.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from test_api_revocation import ca, leaf, revoke, setup
from test_api_support import assert_problem, pki_api, written_since  # noqa: F401
from test_crl_schedule import Clock, caught_up

from commands import quotas
from domain.events import decode_payload


async def set_quotas(api, headers, tenant_id="acme", **quotas) -> None:
    response = await api.client.put(f"/v1/tenants/{tenant_id}/quotas", headers=headers, json=quotas)
    assert response.status_code == 200, response.text


async def usage(api, headers, tenant_id="acme") -> dict:
    response = await api.client.get(f"/v1/tenants/{tenant_id}/usage", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def issue(api, headers, ca_id, name):
    return api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": "acme", "ca_id": ca_id, "algorithm": "ecdsa-p256", "subject": {"common_name": name},
        "sans": {"dns": [name]}})


async def test_live_certificates_stop_at_the_quota_and_a_revocation_frees_one(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    await set_quotas(api, admin, max_certificates=3)
    issued = [await leaf(api, admin, inter, f"n{i}.acme.internal") for i in range(3)]
    head = await api.runtime.store.head_position()
    refused = await issue(api, admin, inter, "n3.acme.internal")
    body = assert_problem(refused, 409, "quota_exceeded", field="quotas.max_certificates")
    assert "3 of its 3 live certificates" in body["detail"]
    assert body["errors"] == [{"field": "quotas.max_certificates", "rule": "quota_exceeded",
                               "message": body["detail"]}]
    assert await written_since(api, head) == set()  # nothing written, not even a key
    counted = await usage(api, admin)
    assert counted["usage"] == {"cas": 2, "certificates": 3, "issuances_today": 3}
    assert counted["quotas"] == {"max_cas": None, "max_certificates": 3, "max_issuances_per_day": None}
    assert counted["position"] >= head
    await revoke(api, admin, issued[0]["certificate_id"], reason="superseded")
    assert (await issue(api, admin, inter, "n3.acme.internal")).status_code == 201
    assert (await usage(api, admin))["usage"]["certificates"] == 3
    # lowered below what it holds: nothing is taken away, nothing more is issued; the usage stays exact
    await set_quotas(api, admin, max_certificates=1)
    assert_problem(await issue(api, admin, inter, "n4.acme.internal"), 409, "quota_exceeded")
    assert (await usage(api, admin))["usage"]["certificates"] == 3


async def test_a_renewal_at_the_quota_replaces_its_certificate_and_counts_as_an_issuance(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    old = await leaf(api, admin, inter, "node.acme.internal")
    await set_quotas(api, admin, max_certificates=1)
    renewed = await api.client.post(f"/v1/certificates/{old['certificate_id']}/renew", headers=admin, json={})
    assert renewed.status_code in (200, 201), renewed.text
    await caught_up(api)
    assert (await usage(api, admin))["usage"] == {"cas": 2, "certificates": 1, "issuances_today": 2}
    assert_problem(await issue(api, admin, inter, "other.acme.internal"), 409, "quota_exceeded",
                   field="quotas.max_certificates")


async def test_expired_certificates_no_longer_count(pki_api):
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    admin, _root, inter = await setup(api)
    await set_quotas(api, admin, max_certificates=1)
    response = await api.client.post("/v1/certificates", headers=admin, json={
        "tenant_id": "acme", "ca_id": inter, "algorithm": "ecdsa-p256", "subject": {"common_name": "short"},
        "sans": {"dns": ["short.acme.internal"]}, "validity_days": 1})
    assert response.status_code == 201, response.text
    assert_problem(await issue(api, admin, inter, "next.acme.internal"), 409, "quota_exceeded")
    clock.advance(timedelta(days=2))
    assert (await issue(api, admin, inter, "next.acme.internal")).status_code == 201


async def test_issuances_per_day_answer_429_until_the_next_utc_midnight(pki_api):
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    clock.moment = datetime.now(UTC).replace(hour=23, minute=0, second=0, microsecond=0)
    admin, _root, inter = await setup(api)
    await set_quotas(api, admin, max_issuances_per_day=2, max_certificates=10)
    first = await leaf(api, admin, inter, "a.acme.internal")
    await leaf(api, admin, inter, "b.acme.internal")
    refused = await issue(api, admin, inter, "c.acme.internal")
    assert_problem(refused, 429, "quota_exceeded", field="quotas.max_issuances_per_day")
    assert refused.headers["retry-after"] == str(3600 + 1)
    # revoking gives back a live certificate, not an issuance of the day
    await revoke(api, admin, first["certificate_id"])
    assert_problem(await issue(api, admin, inter, "c.acme.internal"), 429, "quota_exceeded")
    clock.advance(timedelta(hours=1))
    counted = await usage(api, admin)
    assert counted["usage"]["issuances_today"] == 0
    assert counted["day_started_at"].endswith("T00:00:00.000000Z")
    assert (await issue(api, admin, inter, "c.acme.internal")).status_code == 201


async def test_cas_stop_at_the_quota_and_a_revoked_ca_no_longer_counts(pki_api):
    api = pki_api
    admin, root, inter = await setup(api)
    await set_quotas(api, admin, max_cas=2)
    body = {"kind": "intermediate", "tenant_id": "acme", "name": "Third", "algorithm": "ecdsa-p384",
            "parent_id": root, "subject": {"common_name": "Acme Third"}}
    assert_problem(await api.client.post("/v1/cas", headers=admin, json=body), 409, "quota_exceeded",
                   field="quotas.max_cas")
    revoked = await api.client.post(f"/v1/cas/{inter}/revoke", headers=admin, json={"reason": "cessation_of_operation"})
    assert revoked.status_code == 200, revoked.text
    assert (await usage(api, admin))["usage"]["cas"] == 1
    assert (await api.client.post("/v1/cas", headers=admin, json=body)).status_code == 201


async def test_a_burst_in_flight_at_once_cannot_pass_the_quota_together(pki_api):
    api = pki_api
    admin, _root, inter = await setup(api)
    await set_quotas(api, admin, max_certificates=5)
    answers = await asyncio.gather(*(issue(api, admin, inter, f"b{i}.acme.internal") for i in range(24)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] * 5 + [409] * 19, statuses
    await caught_up(api)
    assert (await usage(api, admin))["usage"]["certificates"] == 5
    # server-side keys too, and with the quota raised by one, exactly one more lands
    await set_quotas(api, admin, max_certificates=6)
    answers = await asyncio.gather(*(issue(api, admin, inter, f"c{i}.acme.internal") for i in range(8)))
    assert sorted(answer.status_code for answer in answers) == [201] + [409] * 7


def hold_first_certificate_append(api, monkeypatch) -> tuple[asyncio.Event, asyncio.Event]:
    """The first certificate's event is appended, then its command held until ``resume`` is set: in flight, with its
    event already in the log. Returns (appended, resume)."""
    store = api.runtime.services.store
    append, appended, resume = store.append, asyncio.Event(), asyncio.Event()

    async def append_then_hold(request):
        result = await append(request)
        if request.stream_type == "certificate" and not appended.is_set():
            appended.set()
            await resume.wait()
        return result

    monkeypatch.setattr(store, "append", append_then_hold)
    return appended, resume


async def test_a_command_the_read_models_already_count_is_not_counted_again_while_in_flight(pki_api, monkeypatch):
    """The first issuance's event is appended and projected, but its command has not yet learnt where it landed:
    the second, at the quota's last unit, waits for it to settle instead of counting it twice and refusing."""
    api = pki_api
    admin, _root, inter = await setup(api)
    await set_quotas(api, admin, max_certificates=2)
    appended, resume = hold_first_certificate_append(api, monkeypatch)
    first = asyncio.ensure_future(issue(api, admin, inter, "first.acme.internal"))
    await asyncio.wait_for(appended.wait(), 10)
    await caught_up(api)
    assert (await usage(api, admin))["usage"]["certificates"] == 1  # counted by the read models, still in flight
    second = asyncio.ensure_future(issue(api, admin, inter, "second.acme.internal"))
    await asyncio.sleep(0.3)  # counting the first twice, the second would be refused meanwhile (1 + 1 + 1 > 2)
    assert not second.done(), second.result().text
    resume.set()
    assert (await first).status_code == 201
    assert (await second).status_code == 201, (await second).text
    assert_problem(await issue(api, admin, inter, "third.acme.internal"), 409, "quota_exceeded",
                   field="quotas.max_certificates")


async def test_a_command_in_flight_that_does_not_settle_in_time_still_counts(pki_api, monkeypatch):
    api = pki_api
    admin, _root, inter = await setup(api)
    await set_quotas(api, admin, max_certificates=1)
    monkeypatch.setattr(quotas, "SETTLE_SECONDS", 0.2)
    appended, resume = hold_first_certificate_append(api, monkeypatch)
    first = asyncio.ensure_future(issue(api, admin, inter, "first.acme.internal"))
    await asyncio.wait_for(appended.wait(), 10)
    refused = await issue(api, admin, inter, "second.acme.internal")  # waits 0.2 s for the first, then refuses
    resume.set()
    assert_problem(refused, 409, "quota_exceeded", field="quotas.max_certificates")
    assert (await first).status_code == 201


async def test_a_tenant_reads_its_own_usage_and_cannot_raise_its_quotas(pki_api):
    api = pki_api
    admin, _root, _inter = await setup(api)
    await api.create_tenant(admin, "globex")
    await set_quotas(api, admin, max_cas=2)
    own = await api.token("tenant-admin", tenant_id="acme")
    assert (await usage(api, own))["usage"]["cas"] == 2
    assert_problem(await api.client.get("/v1/tenants/globex/usage", headers=own), 403)
    assert_problem(await api.client.put("/v1/tenants/acme/quotas", headers=own, json={"max_cas": 9}), 403)
    assert_problem(await api.client.get("/v1/tenants/nobody/usage", headers=admin), 404, "tenant_not_found")


async def test_a_tenant_without_quotas_is_never_counted(pki_api, monkeypatch):
    api = pki_api
    admin, _root, inter = await setup(api)
    counts = []
    original = api.runtime.services.usage.count

    async def counting(*args):
        counts.append(args)
        return await original(*args)

    monkeypatch.setattr(api.runtime.services.usage, "count", counting)
    await leaf(api, admin, inter, "free.acme.internal")
    await ca(api, admin, "intermediate", "Another", parent=_root)
    assert counts == []
    await set_quotas(api, admin, max_issuances_per_day=100)
    await leaf(api, admin, inter, "counted.acme.internal")
    await ca(api, admin, "intermediate", "Yet another", parent=_root)  # no quota on CAs: not counted
    assert len(counts) == 1


async def test_a_scheduled_renewal_refused_by_the_day_quota_is_recorded_and_done_the_next_day(pki_api):
    api = pki_api
    clock = api.runtime.services.clock = Clock()
    clock.moment = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    admin, _root, inter = await setup(api)
    old = await leaf(api, admin, inter, "node.acme.internal")  # 365 days; cassandra-node renews at 67%
    await set_quotas(api, admin, max_issuances_per_day=1)
    scheduler = api.runtime.renewal_scheduler()
    clock.advance(timedelta(days=250))  # due, on a new day
    admin = await api.admin()  # API keys live 90 days: one made on the moved clock
    await leaf(api, admin, inter, "other.acme.internal")  # today's one issuance
    await caught_up(api)
    report = await scheduler.run_once()
    assert (report.renewed, report.failed) == ([], [old["certificate_id"]])
    stream = await api.runtime.store.read_stream("acme", f"certificate-{old['certificate_id']}")
    failure = decode_payload(stream[-1])
    assert type(failure).event_type == "certificate.renewal_failed" and failure.reason == "quota_exceeded"
    clock.advance(timedelta(days=1, hours=1))  # the next UTC day, past the retry window
    await caught_up(api)
    assert (await scheduler.run_once()).renewed == [old["certificate_id"]]


async def test_an_issuance_reads_its_tenant_once(pki_api, monkeypatch):
    """The suspension check and the issuance's own tenant rules share one read of the tenant's stream."""
    api = pki_api
    admin, _root, inter = await setup(api)
    store, reads = api.runtime.store, []
    read_stream = store.read_stream

    async def counted(tenant_id, stream_id, *args, **kwargs):
        reads.append(stream_id)
        return await read_stream(tenant_id, stream_id, *args, **kwargs)

    monkeypatch.setattr(store, "read_stream", counted)
    assert (await issue(api, admin, inter, "once.acme.internal")).status_code == 201
    assert reads.count("tenant-acme") == 1
    await api.client.post("/v1/tenants/acme/suspend", headers=admin, json={"reason": "unpaid"})
    assert_problem(await issue(api, admin, inter, "twice.acme.internal"), 422, "tenant_suspended", field="tenant_id")
