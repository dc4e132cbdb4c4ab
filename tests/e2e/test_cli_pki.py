"""`csm ca` and `csm cert` end to end: a hierarchy, issuance from a CSR and with a server-side key, exports."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_cli import csm

KEYTOOL = shutil.which("keytool")
OPENSSL = shutil.which("openssl")


@pytest.fixture
def hierarchy(tmp_path):
    data = tmp_path / "data"
    csm(data, "init")
    csm(data, "tenant", "create", "acme", "--name", "Acme")
    root = csm(data, "ca", "create-root", "--tenant", "acme", "--name", "Root", "--cn", "Acme Root",
               "--algorithm", "ecdsa-p384").stdout.split()[3]
    inter = csm(data, "ca", "create-intermediate", "--tenant", "acme", "--parent", root, "--name", "Issuing",
                "--cn", "Acme Issuing", "--algorithm", "ecdsa-p384", "--permit-dns", "acme.internal").stdout.split()[3]
    return data, root, inter


def test_a_csr_and_a_server_side_key_are_issued_listed_and_exported(hierarchy, tmp_path):
    data, root, inter = hierarchy
    cas = json.loads(csm(data, "ca", "list", "--json").stdout)
    assert {(c["ca_id"], c["kind"]) for c in cas} == {(root, "root"), (inter, "intermediate")}
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node1.acme.internal")]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("node1.acme.internal")]), critical=False)
               .sign(key, hashes.SHA256()))
    (tmp_path / "node1.csr").write_bytes(request.public_bytes(serialization.Encoding.PEM))
    from_csr = json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--csr",
                              str(tmp_path / "node1.csr"), "--json").stdout)["certificate_id"]
    server_side = json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn",
                                 "node2.acme.internal", "--dns", "node2.acme.internal", "--ip", "10.0.0.2",
                                 "--tag", "dc1", "--json").stdout)["certificate_id"]
    listed = json.loads(csm(data, "cert", "list", "--tenant", "acme", "--json").stdout)
    assert {row["certificate_id"] for row in listed} == {from_csr, server_side}
    assert json.loads(csm(data, "cert", "list", "--san", "10.0.0.2", "--json").stdout)[0]["certificate_id"] \
        == server_side
    shown = json.loads(csm(data, "cert", "show", from_csr, "--json").stdout)
    assert shown["key_source"] == "csr" and shown["common_name"] == "node1.acme.internal"

    (tmp_path / "pw").write_text("changeit-please\n")
    csm(data, "cert", "export", server_side, "--format", "jks", "--out", str(tmp_path / "node2.jks"),
        "--password-file", str(tmp_path / "pw"))
    csm(data, "cert", "export", server_side, "--format", "jks-truststore", "--out", str(tmp_path / "trust.jks"),
        "--password-file", str(tmp_path / "pw"))
    (tmp_path / "node2.pem").write_text("an earlier export\n")
    (tmp_path / "node2.pem").chmod(0o644)  # written over: the unencrypted key must not keep the old, wider mode
    csm(data, "cert", "export", server_side, "--format", "pem", "--include-key", "--out",
        str(tmp_path / "node2.pem"))
    assert oct((tmp_path / "node2.pem").stat().st_mode & 0o777) == "0o600"
    assert "PRIVATE KEY" in (tmp_path / "node2.pem").read_text()
    refused = csm(data, "cert", "export", from_csr, "--format", "jks", "--out", str(tmp_path / "x.jks"),
                  "--password-file", str(tmp_path / "pw"), expect=None)
    assert refused.returncode != 0 and "no_private_key" in refused.stderr
    (tmp_path / "short").write_text("seven77\n")  # the API's minimum too: 8 characters for every export password
    for format_ in ("pkcs12", "jks", "jks-truststore"):
        short = csm(data, "cert", "export", server_side, "--format", format_, "--out", str(tmp_path / "x.p12"),
                    "--password-file", str(tmp_path / "short"), expect=None)
        assert short.returncode != 0 and "password_too_short" in short.stderr, short.stderr
    der = csm(data, "cert", "export", server_side, "--format", "der", "--include-key", "--out",
              str(tmp_path / "x.der"), expect=None)
    assert der.returncode != 0 and "key_not_in_der" in der.stderr, der.stderr
    if KEYTOOL:
        listing = subprocess.run([KEYTOOL, "-list", "-v", "-keystore", tmp_path / "node2.jks", "-storepass",
                                  "changeit-please"], capture_output=True, text=True)
        assert listing.returncode == 0 and "PrivateKeyEntry" in listing.stdout, listing.stderr
    if OPENSSL:
        chain = csm(data, "ca", "show", inter, "--chain").stdout
        (tmp_path / "chain.pem").write_text(chain)
        (tmp_path / "leaf.pem").write_text(csm(data, "cert", "show", from_csr, "--pem").stdout)
        run = subprocess.run([OPENSSL, "verify", "-CAfile", tmp_path / "chain.pem", tmp_path / "leaf.pem"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    events = subprocess.run(["sqlite3", data / "events.db", "SELECT type FROM events WHERE tenant_id = 'acme'"],
                            capture_output=True, text=True).stdout.split()
    assert events.count("certificate.private_key_exported") == 2  # the JKS and the PEM with its key
    assert "every chain and checkpoint verifies" in csm(data, "audit", "verify").stdout


def test_policy_refusals_name_the_rule_and_exit_non_zero(hierarchy):
    data, _, inter = hierarchy
    run = csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", "evil.example.com", "--dns",
              "evil.example.com", "--validity-days", "4000", expect=None)
    assert run.returncode != 0
    assert "name_constraint_violation" in run.stderr and "validity_too_long" in run.stderr
    weak = csm(data, "ca", "create-root", "--tenant", "acme", "--name", "Weak", "--cn", "Weak", "--algorithm",
               "rsa-3072", expect=None)
    assert weak.returncode != 0 and "weak_key" in weak.stderr


def test_quotas_are_set_counted_and_enforced_from_the_cli(hierarchy):
    data, _, inter = hierarchy

    def issue(name: str, **run):
        return csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", name, "--dns", name,
                   "--algorithm", "ecdsa-p256", **run)

    csm(data, "tenant", "quotas", "acme", "--max-certificates", "1", "--max-cas", "5")
    issue("one.acme.internal")
    refused = issue("two.acme.internal", expect=None)
    assert refused.returncode == 1
    assert "quota_exceeded" in refused.stderr and "quotas.max_certificates" in refused.stderr
    counted = json.loads(csm(data, "tenant", "usage", "acme", "--json").stdout)
    assert counted["usage"] == {"cas": 2, "certificates": 1, "issuances_today": 1}
    assert counted["quotas"] == {"max_cas": 5, "max_certificates": 1, "max_issuances_per_day": None}
    csm(data, "tenant", "quotas", "acme", "--max-certificates", "none")  # --max-cas keeps its value
    issue("two.acme.internal")
    shown = csm(data, "tenant", "usage", "acme").stdout
    assert "certificates:     2 of unlimited" in shown and "cas:              2 of 5" in shown
    bad = csm(data, "tenant", "quotas", "acme", "--max-cas", "many", expect=None)
    assert bad.returncode != 0 and "--max-cas" in bad.stderr


def test_sweep_keys_lists_then_deletes_a_key_no_event_names_and_keeps_the_rest(hierarchy):
    import sqlite3

    from infra.keystore import SQLiteKeyVault
    data, _root, _inter = hierarchy
    vault = SQLiteKeyVault(data)  # as a command that stored a key and then failed would leave it
    orphan = vault.put_sync("acme", b"material of a key no event names", algorithm="ecdsa-p256",
                            purpose="end-entity")
    vault.close()
    with sqlite3.connect(data / "keys.db") as conn:  # stored two days ago; the CA keys too
        conn.execute("UPDATE private_keys SET created_at = '2020-01-01T00:00:00.000000Z'")
        named = {key_id for (key_id,) in conn.execute("SELECT key_id FROM private_keys") if key_id != orphan}
    listed = json.loads(csm(data, "admin", "sweep-keys", "--dry-run", "--json").stdout)
    assert [key["key_id"] for key in listed["orphans"]] == [orphan] and listed["deleted"] == 0
    swept = csm(data, "admin", "sweep-keys")
    assert orphan in swept.stdout and "deleted 1" in swept.stderr
    with sqlite3.connect(data / "keys.db") as conn:
        assert {key_id for (key_id,) in conn.execute("SELECT key_id FROM private_keys")} == named and named
    assert "deleted 0" in csm(data, "admin", "sweep-keys").stderr
    assert "OK" in csm(data, "audit", "verify", "--quiet").stdout


def test_ca_algorithms_lists_what_the_api_lists_and_create_root_help_names_it(tmp_path):
    data = tmp_path / "data"  # no `csm init`: what this installation offers needs no data directory
    listed = {a["name"]: a for a in json.loads(csm(data, "ca", "algorithms", "--json").stdout)}
    assert listed["ml-dsa-65"]["available"] and listed["rsa-4096"]["allowed_for_ca"]
    assert not listed["rsa-3072"]["allowed_for_ca"] and listed["falcon-512"]["available"] is False
    table = csm(data, "ca", "algorithms").stdout
    assert all(header in table for header in ("name", "family", "available", "allowed for CA"))
    assert "rsa-3072" in table and "hybrid-p384-ml-dsa-65" in table
    assert "csm ca algorithms" in csm(data, "ca", "create-root", "--help").stdout


def test_root_init_offers_only_algorithms_a_ca_may_hold(tmp_path):
    help_text = csm(tmp_path / "data", "ca", "root", "init", "--help").stdout
    assert "rsa-4096" in help_text and "rsa-3072" not in help_text
    refused = csm(tmp_path / "data", "ca", "root", "init", "--offline", "--out", str(tmp_path / "root"),
                  "--algorithm", "rsa-3072", "--cn", "Root", expect=2)
    assert "Invalid value for '--algorithm'" in refused.stderr and not (tmp_path / "root").exists()


def test_cert_list_filters_by_every_status_the_api_accepts(hierarchy):
    data, _, inter = hierarchy
    issued = [json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", f"n{i}.acme.internal",
                             "--dns", f"n{i}.acme.internal", "--algorithm", "ecdsa-p256", "--json").stdout)
              ["certificate_id"] for i in (1, 2)]
    csm(data, "cert", "revoke", issued[0], "--reason", "key_compromise")

    def listed(status: str) -> set[str]:
        return {row["certificate_id"] for row in json.loads(csm(data, "cert", "list", "--status", status,
                                                                "--json").stdout)}

    assert listed("revoked") == {issued[0]}
    assert listed("issued") == listed("valid") == {issued[1]}
    assert listed("expired") == set()
    assert "revoked" in csm(data, "cert", "list", "--help").stdout
    shown = json.loads(csm(data, "cert", "show", issued[0], "--json").stdout)
    blocked = json.loads(csm(data, "tenant", "compromised-keys", "acme", "--json").stdout)
    assert [(k["certificate_id"], k["reason"]) for k in blocked] == [(issued[0], "key_compromise")]
    assert blocked[0]["public_key_sha256"] == shown["public_key_sha256"]
    assert issued[0] in csm(data, "tenant", "compromised-keys", "acme").stdout
    # the other certificate, revoked for another reason, turns out to have a stolen key: reported apart
    csm(data, "cert", "revoke", issued[1], "--reason", "superseded")
    reported = csm(data, "tenant", "report-compromised-key", "acme", "--certificate", issued[1]).stdout
    assert reported.startswith("reported compromised in tenant acme: ")
    again = csm(data, "tenant", "report-compromised-key", "acme", "--certificate", issued[1]).stdout
    assert again.startswith("already reported")
    refused = csm(data, "tenant", "report-compromised-key", "acme", expect=1).stderr
    assert "one_of_required" in refused and "field: certificate_id" in refused
    assert f"certificate {issued[1]} (report)" in csm(data, "tenant", "compromised-keys", "acme").stdout
    # the first report turns out wrong: lifted (a reason always), nothing un-revoked
    refused = csm(data, "tenant", "lift-compromised-key", "acme", "--key", shown["public_key_sha256"], expect=2).stderr
    assert "--reason" in refused
    lifted = csm(data, "tenant", "lift-compromised-key", "acme", "--key", shown["public_key_sha256"], "--reason",
                 "the wrong certificate was revoked").stdout
    assert lifted.startswith(f"block lifted in tenant acme: {shown['public_key_sha256']}")
    assert [k["certificate_id"] for k in json.loads(csm(data, "tenant", "compromised-keys", "acme", "--json").stdout)
            ] == [issued[1]]
    assert listed("revoked") == {issued[0], issued[1]}


def test_tables_print_ids_whole_when_piped(tmp_path):
    data = tmp_path / "data"
    tenant = "acme-industries-production-europe-west"
    csm(data, "init")
    csm(data, "tenant", "create", tenant, "--name", "Acme Industries Production, Europe West")
    root = csm(data, "ca", "create-root", "--tenant", tenant, "--name", "Acme Industries Production Root",
               "--cn", "Acme Root", "--algorithm", "ecdsa-p384").stdout.split()[3]
    inter = csm(data, "ca", "create-intermediate", "--tenant", tenant, "--parent", root, "--name",
                "Acme Industries Production Issuing", "--cn", "Acme Issuing", "--algorithm",
                "ecdsa-p384").stdout.split()[3]
    leaf = json.loads(csm(data, "cert", "issue", "--tenant", tenant, "--ca", inter, "--cn", "n1.acme.internal",
                          "--dns", "n1.acme.internal", "--algorithm", "ecdsa-p256", "--json").stdout)["certificate_id"]
    cas, certs, tenants = (csm(data, *args).stdout for args in (("ca", "list"), ("cert", "list"), ("tenant", "list")))
    assert cas.count(root) == 2 and inter in cas and tenant in cas  # the root: its own row and the parent column
    assert leaf in certs and tenant in certs and tenant in tenants
    assert "…" not in cas + certs + tenants
    assert sum(line.startswith("│") for line in cas.splitlines()) == 2  # piped: one line per row, nothing wrapped


def test_an_offline_roots_crl_ceremony_from_the_cli(tmp_path):
    data, ceremony = tmp_path / "data", tmp_path / "ceremony"
    ceremony.mkdir()
    secret = ceremony / "passphrase"
    secret.write_text("correct horse battery staple\n")
    csm(data, "init")
    csm(data, "tenant", "create", "acme", "--name", "Acme")
    csm(data, "ca", "root", "init", "--offline", "--out", str(ceremony / "root"), "--cn", "Acme Offline Root",
        "--algorithm", "ecdsa-p384", "--passphrase-file", str(secret))
    root = csm(data, "ca", "import-root", "--tenant", "acme", "--name", "Offline",
               "--cert", str(ceremony / "root" / "root.pem")).stdout.split()[-1]
    requested = csm(data, "ca", "request-intermediate", "--tenant", "acme", "--parent", root, "--name", "Issuing",
                    "--cn", "Acme Issuing", "--algorithm", "ecdsa-p384", "--csr-out", str(tmp_path / "inter.csr"))
    inter = requested.stdout.split()[2]
    assert f"--crl-url http://127.0.0.1:8000/v1/cas/{root}/crl" in requested.stdout  # the root's CRL URL here
    csm(data, "ca", "root", "sign-intermediate", "--root-dir", str(ceremony / "root"), "--csr",
        str(tmp_path / "inter.csr"), "--out", str(tmp_path / "inter.pem"), "--passphrase-file", str(secret))
    csm(data, "ca", "install", inter, "--tenant", "acme", "--cert", str(tmp_path / "inter.pem"))

    revoked = csm(data, "ca", "revoke", inter, "--tenant", "acme", "--reason", "ca_compromise").stdout
    assert "no CRL signed here" in revoked and f"csm ca crl-request {root}" in revoked
    asked = csm(data, "ca", "crl-request", root, "--tenant", "acme", "--out", str(tmp_path / "request.json")).stdout
    first = json.loads((tmp_path / "request.json").read_text())["crl_number"]
    assert f"CRL {first}, 1 revocation(s) recorded; a new CRL is due" in asked
    signed = csm(data, "ca", "root", "sign-crl", "--root-dir", str(ceremony / "root"), "--request",
                 str(tmp_path / "request.json"), "--out", str(tmp_path / "root.crl"), "--next-update-days", "30",
                 "--passphrase-file", str(secret)).stdout
    serial = format(x509.load_pem_x509_certificate((tmp_path / "inter.pem").read_bytes()).serial_number, "x")
    assert f"signed CRL {first} of CA {root}: 1 revoked" in signed and f"{serial}  ca_compromise" in signed
    crl = x509.load_pem_x509_crl((tmp_path / "root.crl").read_bytes())
    (tmp_path / "root.der").write_bytes(crl.public_bytes(serialization.Encoding.DER))  # install takes DER too
    assert f"CRL installed for CA {root}" in csm(data, "ca", "install-crl", root, "--tenant", "acme", "--crl",
                                                 str(tmp_path / "root.der")).stdout
    assert "already installed" in csm(data, "ca", "install-crl", root, "--tenant", "acme", "--crl",
                                      str(tmp_path / "root.crl")).stdout
    again = csm(data, "ca", "crl-request", root, "--tenant", "acme", "--out", str(tmp_path / "again.json")).stdout
    second = json.loads((tmp_path / "again.json").read_text())["crl_number"]
    assert second > first
    assert f"CRL {second}, 1 revocation(s) recorded; a new CRL is not due (last: CRL {first}, next update" in again
    again_signed = csm(data, "ca", "root", "sign-crl", "--root-dir", str(ceremony / "root"), "--request",
                       str(tmp_path / "request.json"), "--out", str(tmp_path / "root.crl"),
                       "--passphrase-file", str(secret), expect=1)
    assert "exists" in again_signed.stderr  # a ceremony never overwrites a CRL


def test_compliance_report_gates_ci_by_severity_and_analytics_count_the_days(hierarchy):
    data, root, inter = hierarchy
    issued = json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", "*.acme.internal",
                            "--dns", "*.acme.internal", "--json").stdout)["certificate_id"]
    report = json.loads(csm(data, "tenant", "compliance", "acme", "--json").stdout)
    assert [(f["rule"], f["subject_id"]) for f in report["findings"]] == [
        ("certificate_wildcard_name", issued), ("tenant_policy_unrestricted", "acme")]
    assert report["counts"] == {"critical": 0, "high": 0, "medium": 1, "low": 1}
    table = csm(data, "tenant", "compliance", "acme").stdout
    assert "certificate_wildcard_name" in table and "0 critical, 0 high, 1 medium, 1 low" in table
    csm(data, "tenant", "compliance", "acme", "--fail-on", "high")  # exit 0: nothing that severe
    csm(data, "tenant", "compliance", "acme", "--fail-on", "medium", expect=3)
    assert "tenant_not_found" in csm(data, "tenant", "compliance", "nobody", expect=1).stderr

    counted = json.loads(csm(data, "tenant", "analytics", "acme", "--json").stdout)
    assert counted["totals"]["certificate.issued"] == {"cassandra-node": 1}
    assert counted["totals"]["ca.created"] == {"root": 1, "intermediate": 1}
    assert "certificate.issued" in csm(data, "tenant", "analytics", "acme").stdout
    refused = csm(data, "tenant", "analytics", "acme", "--since", "2026-12-02", "--until", "2026-12-01",
                  expect=2).stderr
    assert "--since" in refused


def test_a_connection_bundle_is_written_private_and_names_its_contact_points(hierarchy, tmp_path):
    import zipfile
    data, root, inter = hierarchy
    issued = json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", "node7.acme.internal",
                            "--dns", "node7.acme.internal", "--json").stdout)["certificate_id"]
    (tmp_path / "pw").write_text("bundle-password\n")
    out = tmp_path / "node7.zip"
    wrote = csm(data, "cert", "export", issued, "--format", "bundle", "--out", str(out), "--password-file",
                str(tmp_path / "pw"), "--contact-point", "10.0.0.7", "--contact-point", "node8.acme.internal:9142")
    assert "includes the private key" in wrote.stdout and out.stat().st_mode & 0o777 == 0o600
    with zipfile.ZipFile(out) as archive:
        names = {info.filename.split("/", 1)[1] for info in archive.infolist()}
        manifest = json.loads(archive.read("node7.acme.internal-connection-bundle/manifest.json"))
    assert {"keystore.jks", "truststore.jks", "private-key.pem", "cqlshrc", "application.conf"} <= names
    assert manifest["contact_points"] == ["10.0.0.7:9042", "node8.acme.internal:9142"]
    refused = csm(data, "cert", "export", issued, "--format", "bundle", "--out", str(tmp_path / "x.zip"),
                  "--password-file", str(tmp_path / "pw"), "--contact-point", "no such host", expect=1).stderr
    assert "invalid_contact_point" in refused and "--contact-point" in refused
