"""`csm cert revoke` and `csm ca revoke` end to end, against a data directory (no server)."""

from __future__ import annotations

import json
import re

from test_cli import csm

from infra.artifacts import SQLiteArtifactStore


def test_cert_revoke_and_ca_revoke(tmp_path):
    data = tmp_path / "data"
    csm(data, "init")
    csm(data, "tenant", "create", "acme", "--name", "Acme")
    root = csm(data, "ca", "create-root", "--tenant", "acme", "--name", "Root", "--cn", "Acme Root",
               "--algorithm", "ecdsa-p384").stdout.split()[3]
    inter = csm(data, "ca", "create-intermediate", "--tenant", "acme", "--parent", root, "--name", "Issuing",
                "--cn", "Acme Issuing", "--algorithm", "ecdsa-p384").stdout.split()[3]
    issued = json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", "n1.acme.internal",
                            "--dns", "n1.acme.internal", "--json").stdout)["certificate_id"]

    done = csm(data, "cert", "revoke", issued, "--reason", "key_compromise",
               "--invalidity-date", "2020-01-01T00:00:00Z", expect=1)  # before the certificate existed
    assert "invalidity_date_before_validity" in done.stderr and "field: invalidity_date" in done.stderr
    assert "Invalid value" in csm(data, "cert", "revoke", issued, "--reason", "certificate_hold", expect=2).stderr
    done = csm(data, "cert", "revoke", issued, "--reason", "key_compromise")
    assert done.stdout.startswith(f"revoked certificate {issued} (key_compromise")
    assert re.search(rf"CRL \d+ of CA {inter}", done.stdout), done.stdout
    assert "already_revoked" in csm(data, "cert", "revoke", issued, expect=1).stderr
    shown = json.loads(csm(data, "cert", "show", issued, "--json").stdout)
    assert (shown["status"], shown["revocation_reason"]) == ("revoked", "key_compromise")

    assert "root_not_revocable" in csm(data, "ca", "revoke", root, "--tenant", "acme", expect=1).stderr
    done = csm(data, "ca", "revoke", inter, "--tenant", "acme", "--reason", "cessation_of_operation")
    assert re.search(rf"revoked CA {inter} \(cessation_of_operation\); listed on CRL \d+ of CA {root}", done.stdout)
    listed = json.loads(csm(data, "ca", "list", "--json").stdout)
    assert {c["ca_id"]: c["status"] for c in listed} == {root: "active", inter: "revoked"}

    backup, restored = tmp_path / "backup", tmp_path / "restored"
    csm(data, "backup", str(backup))
    assert "artifacts.db" in json.loads((backup / "manifest.json").read_text())["files"]
    csm(restored, "restore", str(backup))
    published = [json.loads(line) for line in csm(restored, "events", "export").stdout.splitlines()]
    names = [e["payload"]["sha256"] for e in published if e["type"] == "ca.crl_published"]
    assert len(names) >= 2
    store = SQLiteArtifactStore(restored)
    try:  # every CRL the restored log names came along, byte for byte (the store checks the hash)
        assert all(store.get_sync(name) is not None for name in names)
    finally:
        store.close()
