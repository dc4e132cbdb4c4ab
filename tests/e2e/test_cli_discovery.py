"""`csm discover` end to end: a node certificate issued and exported by the CLI, served by a real TLS listener on
127.0.0.1, scanned and recorded by `csm discover scan`, listed, and judged by `csm tenant compliance`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from test_cli import csm
from test_cli_pki import hierarchy  # noqa: F401

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from tls_servers import closed_port, plain_server, self_signed, tls_server  # noqa: E402


def test_scan_list_and_compliance_of_what_nodes_serve(hierarchy, tmp_path):
    data, _root, inter = hierarchy
    node = json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", "node1.acme.internal",
                          "--dns", "node1.acme.internal", "--json").stdout)["certificate_id"]
    bundle = tmp_path / "node1.pem"
    csm(data, "cert", "export", node, "--format", "pem", "--include-key", "--out", str(bundle))
    stray_cert, stray_key, _ = self_signed(tmp_path)

    with tls_server(bundle, bundle) as served, tls_server(stray_cert, stray_key) as stray, plain_server() as plain:
        closed = closed_port()
        targets = [f"127.0.0.1:{port}" for port in (served, stray, plain, closed)]
        scanned = json.loads(csm(data, "discover", "scan", "--tenant", "acme", *targets, "--timeout", "10",
                                 "--json").stdout)
        assert scanned["scanned"] == scanned["recorded"] == 4 and scanned["events"] == 1
        by_port = {o["port"]: o for o in scanned["observations"]}
        assert by_port[served]["subject_dn"] == "CN=node1.acme.internal"
        assert (by_port[plain]["error"], by_port[closed]["error"]) == ("not_tls", "refused")
        # a swept range records only addresses that answered: 127.0.0.2 refuses (nothing listens there)
        swept = json.loads(csm(data, "discover", "scan", "--tenant", "acme", "127.0.0.0/30", "--port", str(served),
                               "--json").stdout)
        assert (swept["scanned"], swept["recorded"]) == (2, 1)
        assert swept["observations"][0]["host"] == "127.0.0.1"
        table = csm(data, "discover", "scan", "--tenant", "acme", f"127.0.0.1:{served}").stdout
        assert node in table and f"127.0.0.1:{served}" in table

    listed = {row["endpoint"]: row for row in json.loads(csm(data, "discover", "list", "--tenant", "acme",
                                                             "--json").stdout)}
    assert listed[f"127.0.0.1:{served}"]["certificate_id"] == node
    # the export carries the chain, so the node sent its intermediate after its leaf
    assert listed[f"127.0.0.1:{served}"]["chain"][0]["subject_dn"] == listed[f"127.0.0.1:{served}"]["issuer_dn"]
    assert listed[f"127.0.0.1:{served}"]["client_certificate"] == "not_required"
    assert "(complete)" in csm(data, "discover", "list", "--tenant", "acme").stdout
    first = csm(data, "discover", "list", "--tenant", "acme", "--limit", "2", "--json")
    cursor = first.stderr.split("--cursor ")[1].split()[0]
    rest = json.loads(csm(data, "discover", "list", "--tenant", "acme", "--cursor", cursor, "--json").stdout)
    assert [r["endpoint"] for r in json.loads(first.stdout) + rest] == sorted(
        listed, key=lambda e: (listed[e]["host"], listed[e]["port"]))
    assert listed[f"127.0.0.1:{stray}"]["certificate_id"] is None
    assert listed[f"127.0.0.1:{closed}"]["error"] == "refused"
    assert "not issued here" in csm(data, "discover", "list", "--tenant", "acme").stdout

    csm(data, "cert", "revoke", node, "--reason", "key_compromise")
    report = json.loads(csm(data, "tenant", "compliance", "acme", "--json").stdout)
    endpoints = {(f["rule"], f["subject_id"]) for f in report["findings"] if f["subject_type"] == "endpoint"}
    assert endpoints == {("discovered_revoked", f"127.0.0.1:{served}"),
                         ("discovered_unmanaged", f"127.0.0.1:{stray}")}
    assert report["summary"]["endpoints_observed"] == 4
    csm(data, "tenant", "compliance", "acme", "--fail-on", "critical", expect=3)


def test_bad_targets_and_an_unknown_tenant_are_refused_before_scanning(tmp_path):
    data = tmp_path / "data"
    csm(data, "init")
    bad = csm(data, "discover", "scan", "--tenant", "acme", "10.0.0.0/8", expect=2)
    assert "error: target '10.0.0.0/8'" in bad.stderr and "more than 4096 endpoints" in bad.stderr
    bad = csm(data, "discover", "scan", "--tenant", "acme", "node:99999", expect=2)
    assert "target 'node:99999': port '99999'" in bad.stderr
    missing = csm(data, "discover", "scan", "--tenant", "acme", f"127.0.0.1:{closed_port()}", expect=1)
    assert "tenant_not_found" in missing.stderr
