"""The delivery job with an unsendable URL: every failure is a recorded attempt, never an exception of its own."""

from __future__ import annotations

import pytest

from infra.webhooks.delivery import Deliverer, DeliveryFailed
from infra.webhooks.log import DeliveryLog

BAD_HOST = "https://" + "a" * 2030  # the idna codec refuses it: "label too long"


def deliverer(tmp_path, url: str, monkeypatch) -> tuple[Deliverer, str]:
    log = DeliveryLog(tmp_path / "webhooks.db")
    log.record_dispatch([("d1", "acme", "w1", "e1", "certificate.revoked", 1, b"{}")], 1)
    job = Deliverer(deliveries=log, views_path=tmp_path / "views.db", secret=lambda tenant, ref: b"whsec_x",
                    max_attempts=3, timeout=1.0)
    hook = {"url": url, "status": "active", "enabled": True, "secret_ref": "key_1"}
    monkeypatch.setattr(job, "_subscription", lambda tenant_id, webhook_id: hook)
    return job, "d1"


@pytest.mark.parametrize("url", [BAD_HOST, "https://169.254.169.254/latest", "https://[fe80::1]/x"])
def test_a_url_the_rules_refuse_fails_the_delivery_at_once(tmp_path, monkeypatch, url):
    """A subscription saved before these rules existed: no request is made, the delivery fails (and is reported)."""
    job, delivery_id = deliverer(tmp_path, url, monkeypatch)
    job(delivery_id)  # no exception: nothing for dramatiq to retry for ever
    row = job.deliveries.get(delivery_id)
    assert row["status"] == "failed" and row["attempts"] == 1 and row["last_error"].startswith(("invalid_url",
                                                                                                "url_host"))
    assert [r["delivery_id"] for r in job.deliveries.unreported_failures()] == [delivery_id]


def test_an_error_sending_to_the_url_is_a_failed_attempt(tmp_path, monkeypatch):
    """A host the rules accept but the HTTP client cannot encode (IDNA 2008 refuses symbols) counts an attempt."""
    job, delivery_id = deliverer(tmp_path, "https://☃.example/x", monkeypatch)
    with pytest.raises(DeliveryFailed):
        job(delivery_id)
    row = job.deliveries.get(delivery_id)
    assert row["status"] == "pending" and row["attempts"] == 1 and "InvalidURL" in row["last_error"]


def test_posting_to_a_host_the_idna_codec_refuses_returns_an_error(tmp_path, monkeypatch):
    job, delivery_id = deliverer(tmp_path, BAD_HOST, monkeypatch)
    status, error = job._post(BAD_HOST, b"{}", job.deliveries.get(delivery_id), b"whsec_x")
    assert status is None and error.startswith("UnicodeError")


def test_loopback_is_left_to_the_subscription_check(tmp_path, monkeypatch):
    """Whether loopback receivers are allowed is the API's setting, checked when the URL is saved; a separate
    ``csm worker`` may not carry it, and must not fail the deliveries the API accepted."""
    job, delivery_id = deliverer(tmp_path, "http://127.0.0.1:9/x", monkeypatch)
    with pytest.raises(DeliveryFailed):  # port 9 (discard) refuses the connection: an ordinary failed attempt
        job(delivery_id)
    assert "ConnectError" in job.deliveries.get(delivery_id)["last_error"]
