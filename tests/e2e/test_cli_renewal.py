"""`csm cert renew` end to end, against a data directory (no server)."""

from __future__ import annotations

import json

from test_cli import csm


def test_cert_renew_links_the_successor_and_refuses_a_second_renewal(tmp_path):
    data = tmp_path / "data"
    csm(data, "init")
    csm(data, "tenant", "create", "acme", "--name", "Acme")
    root = csm(data, "ca", "create-root", "--tenant", "acme", "--name", "Root", "--cn", "Acme Root",
               "--algorithm", "ecdsa-p384").stdout.split()[3]
    inter = csm(data, "ca", "create-intermediate", "--tenant", "acme", "--parent", root, "--name", "Issuing",
                "--cn", "Acme Issuing", "--algorithm", "ecdsa-p384").stdout.split()[3]
    old = json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", "n1.acme.internal",
                         "--dns", "n1.acme.internal", "--json").stdout)["certificate_id"]

    refused = csm(data, "cert", "renew", old, "--reuse-key", expect=1)
    assert "key_reuse_not_allowed" in refused.stderr and "field: reuse_key" in refused.stderr
    renewed = json.loads(csm(data, "cert", "renew", old, "--json").stdout)
    assert (renewed["renewed_from"], renewed["rotated"]) == (old, True)
    new = renewed["certificate_id"]
    assert json.loads(csm(data, "cert", "show", old, "--json").stdout)["superseded_by"] == new
    shown = json.loads(csm(data, "cert", "show", new, "--json").stdout)
    assert (shown["supersedes"], shown["ca_id"], shown["sans"]["dns"]) == (old, inter, ["n1.acme.internal"])
    assert "already_renewed" in csm(data, "cert", "renew", old, expect=1).stderr
    types = [json.loads(line)["type"] for line in csm(data, "events", "export").stdout.splitlines()]
    assert types.count("certificate.renewal_started") == types.count("certificate.renewed") == 1
