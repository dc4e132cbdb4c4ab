"""`csm webhook create|list|delete` and `csm worker`'s refusal without Redis, run as operators run them."""

from __future__ import annotations

import json

from test_cli import csm


def test_webhook_create_list_delete(tmp_path):
    data = tmp_path / "data"
    csm(data, "init")
    csm(data, "tenant", "create", "acme", "--name", "Acme")
    created = csm(data, "webhook", "create", "--tenant", "acme", "--url", "https://hooks.example.com/csm",
                  "--event", "certificate.revoked", "--event", "certificate.renewed")
    secret = created.stdout.strip().rsplit(" ", 1)[1]
    assert secret.startswith("whsec_") and len(secret) > 40
    webhook_id = created.stderr.split()[1]
    [row] = json.loads(csm(data, "webhook", "list", "--tenant", "acme", "--json").stdout)
    assert row["webhook_id"] == webhook_id and row["event_types"] == ["certificate.renewed", "certificate.revoked"]
    assert "secret_ref" not in row and secret not in json.dumps(row)
    refused = csm(data, "webhook", "create", "--tenant", "acme", "--url", "http://hooks.example.com/x", expect=1)
    assert "url_scheme" in refused.stderr and "(field: url)" in refused.stderr
    assert "deleted webhook" in csm(data, "webhook", "delete", "--tenant", "acme", webhook_id).stdout
    assert json.loads(csm(data, "webhook", "list", "--tenant", "acme", "--json").stdout) == []
    assert secret not in (data / "events.db").read_bytes().decode("latin-1"), "the secret never enters the log"


def test_worker_needs_the_redis_broker(tmp_path):
    data = tmp_path / "data"
    csm(data, "init")
    refused = csm(data, "worker", expect=1)
    assert "CSM_JOBS=redis" in refused.stderr
