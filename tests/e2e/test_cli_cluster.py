"""`csm cluster bootstrap-tls` and `csm db migrate`: the cluster's TLS material, checked by keytool and openssl."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess

import pytest
from click.testing import CliRunner

from cli.main import csm

KEYTOOL, OPENSSL = shutil.which("keytool"), shutil.which("openssl")


def invoke(*args: str, env: dict | None = None):
    result = CliRunner().invoke(csm, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_bootstrap_tls_issues_node_keystores_a_truststore_and_a_client_certificate(tmp_path):
    data, out = str(tmp_path / "data"), tmp_path / "tls"
    invoke("--data-dir", data, "init")
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=10.1.0.1",
           "--node", "db-2=10.1.0.2")
    password = (out / "keystore.password").read_text().strip()
    assert stat.S_IMODE((out / "keystore.password").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "db-1" / "keystore.jks").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "client" / "client.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "client", "db-1", "db-2", "keystore.password"]
    if OPENSSL:
        verified = subprocess.run([OPENSSL, "verify", "-CAfile", out / "ca.pem", out / "client" / "client.pem"],
                                  capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr
        assert subprocess.run([OPENSSL, "pkey", "-in", out / "client" / "client.key", "-noout"]).returncode == 0
    if KEYTOOL:
        listing = subprocess.run([KEYTOOL, "-list", "-v", "-keystore", out / "db-2" / "keystore.jks",
                                  "-storepass", password], capture_output=True, text=True)
        assert listing.returncode == 0, listing.stderr
        assert "PrivateKeyEntry" in listing.stdout and "IPAddress: 10.1.0.2" in listing.stdout
        assert "DNSName: db-2" in listing.stdout and "Certificate chain length: 2" in listing.stdout
        trust = subprocess.run([KEYTOOL, "-list", "-keystore", out / "db-1" / "truststore.jks", "-storepass",
                                password], capture_output=True, text=True)
        assert trust.returncode == 0 and "trustedCertEntry" in trust.stdout
    # Re-running rotates: fresh node certificates, the same keystore password.
    keystore = (out / "db-1" / "keystore.jks").read_bytes()
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=10.1.0.1")
    assert (out / "keystore.password").read_text().strip() == password
    assert (out / "db-1" / "keystore.jks").read_bytes() != keystore
    exported = invoke("--data-dir", data, "audit", "verify")
    assert "ok" in exported.lower() or "verified" in exported.lower()


def test_a_rotation_over_existing_files_leaves_every_secret_owner_only(tmp_path):
    data, out = str(tmp_path / "data"), tmp_path / "tls"
    invoke("--data-dir", data, "init")
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=10.1.0.1")
    secrets_ = [out / "keystore.password", out / "db-1" / "keystore.jks", out / "client" / "client.key"]
    for path in secrets_:
        path.chmod(0o644)  # as a copy, a restore or an operator may leave them
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=10.1.0.1")
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in secrets_} == {
        "keystore.password": 0o600, "keystore.jks": 0o600, "client.key": 0o600}
    assert stat.S_IMODE((out / "ca.pem").stat().st_mode) == 0o644


def _pem_blocks(text: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", text, re.DOTALL)


@pytest.mark.skipif(OPENSSL is None or KEYTOOL is None, reason="needs the openssl command and Java's keytool")
def test_after_a_root_rollover_the_nodes_keystores_chain_to_the_truststores_exported_before_it(tmp_path):
    """A node keyed under the rolled-over root presents NewWithOld (its JKS keystore's chain, and the client's PEM
    chain), so a peer still holding the ca.pem and truststore from before the rollover accepts it."""
    data, out = str(tmp_path / "data"), tmp_path / "tls"
    invoke("--data-dir", data, "init")
    made = invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=10.1.0.1")
    ca_id = re.search(r"cluster CA (\S+):", made).group(1)
    old_ca = (out / "ca.pem").read_text()
    invoke("--data-dir", data, "ca", "rollover", ca_id, "--tenant", "platform", "--reason", "root key update")
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--ca", ca_id, "--node",
           "db-1=10.1.0.1")
    new_ca = (out / "ca.pem").read_text()
    assert new_ca != old_ca
    shown = _pem_blocks(invoke("--data-dir", data, "ca", "show", ca_id, "--chain"))  # NewWithOld, then the root
    assert len(shown) == 2 and shown[1].strip() == new_ca.strip()
    (tmp_path / "old-ca.pem").write_text(old_ca)
    password = (out / "keystore.password").read_text().strip()
    listing = subprocess.run([KEYTOOL, "-list", "-rfc", "-keystore", out / "db-1" / "keystore.jks", "-storepass",
                              password], capture_output=True, text=True)
    assert listing.returncode == 0 and "Certificate chain length: 3" in listing.stdout, listing.stdout
    node_chain = _pem_blocks(listing.stdout)
    assert node_chain[-1].strip() == new_ca.strip() and node_chain[1].strip() == shown[0].strip()
    for name, chain in (("node", node_chain), ("client", _pem_blocks((out / "client" / "client.pem").read_text()))):
        (tmp_path / f"{name}-leaf.pem").write_text(chain[0])
        (tmp_path / f"{name}-chain.pem").write_text("".join(chain[1:]))
        (tmp_path / f"{name}-unlinked.pem").write_text(new_ca)
        for untrusted, accepted in (("chain", True), ("unlinked", False)):
            verified = subprocess.run([OPENSSL, "verify", "-x509_strict", "-CAfile", tmp_path / "old-ca.pem",
                                       "-untrusted", tmp_path / f"{name}-{untrusted}.pem",
                                       tmp_path / f"{name}-leaf.pem"], capture_output=True, text=True)
            assert (verified.returncode == 0) is accepted, (name, untrusted, verified.stdout + verified.stderr)


def _trusted(out) -> str | None:
    """The fingerprints in db-1's truststore as keytool lists them (the file's bytes change with its timestamp)."""
    if not KEYTOOL:
        return None
    password = (out / "keystore.password").read_text().strip()
    listing = subprocess.run([KEYTOOL, "-list", "-keystore", out / "db-1" / "truststore.jks", "-storepass", password],
                             capture_output=True, text=True, check=True).stdout
    return "\n".join(sorted(re.findall(r"SHA-256\): (\S+)", listing)))


def test_re_running_without_ca_rotates_under_the_same_cluster_ca(tmp_path):
    """A rotation run without --ca made a second root: ca.pem and the truststores changed under the nodes, and a
    rolling restart split the cluster (nodes on the old truststore refuse the new keystores)."""
    data, out = str(tmp_path / "data"), tmp_path / "tls"
    invoke("--data-dir", data, "init")
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=10.1.0.1")
    ca_pem, trusted = (out / "ca.pem").read_bytes(), _trusted(out)
    client = (out / "client" / "client.pem").read_bytes()
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=10.1.0.1")
    assert (out / "ca.pem").read_bytes() == ca_pem
    assert _trusted(out) == trusted
    assert (out / "client" / "client.pem").read_bytes() != client
    listed = invoke("--data-dir", data, "ca", "list", "--tenant", "platform", "--json")
    assert listed.count("cassandra-cluster") == 1, listed
    if OPENSSL:
        (tmp_path / "old-ca.pem").write_bytes(ca_pem)
        verified = subprocess.run([OPENSSL, "verify", "-CAfile", tmp_path / "old-ca.pem",
                                   out / "client" / "client.pem"], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize("node", ["db-1=not-an-ip", "db-1=10.1.0.1=x"])
def test_a_bad_node_address_is_refused_before_any_ca_is_created(tmp_path, node):
    data, out = str(tmp_path / "data"), tmp_path / "tls"
    invoke("--data-dir", data, "init")
    result = CliRunner().invoke(csm, ["--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out),
                                      "--node", node])
    assert result.exit_code == 2 and "--node" in result.output and "IPv4 or IPv6" in result.output, result.output
    assert "cassandra-cluster" not in invoke("--data-dir", data, "ca", "list", "--tenant", "platform", "--json")
    assert not out.exists()


def test_bootstrap_tls_against_an_uninitialised_data_dir_writes_nothing(tmp_path):
    out = tmp_path / "tls"
    result = CliRunner().invoke(csm, ["--data-dir", str(tmp_path / "data"), "cluster", "bootstrap-tls", "--out",
                                      str(out)])
    assert result.exit_code != 0 and "not initialised" in result.output
    assert not out.exists()


def test_db_migrate_on_the_sqlite_store_has_nothing_to_do(tmp_path):
    assert "nothing to migrate" in invoke("--data-dir", str(tmp_path), "db", "migrate")


def test_db_migrate_names_a_bad_setting(tmp_path):
    result = CliRunner().invoke(csm, ["--data-dir", str(tmp_path), "db", "migrate"],
                                env={"CSM_STORE": "cassandra", "CSM_CASSANDRA_CONSISTENCY": "ONE"})
    assert result.exit_code != 0 and "CSM_CASSANDRA_CONSISTENCY" in result.output


@pytest.mark.skipif(OPENSSL is None or KEYTOOL is None, reason="needs the openssl command and Java's keytool")
def test_replacing_the_cluster_ca_trusts_both_through_the_rolling_restarts(tmp_path):
    """docs/operations.md: to replace the CA, build truststores with both, then switch keystores, then drop the
    old one. --also-trust puts the other CA's root into every truststore and ca.pem; each step's truststore
    accepts both steps' keystores, so no restart order splits the cluster."""
    data, out = str(tmp_path / "data"), tmp_path / "tls"
    invoke("--data-dir", data, "init")
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=10.1.0.1")
    old_ca = (out / "ca.pem").read_text()
    old = json.loads(invoke("--data-dir", data, "ca", "list", "--tenant", "platform", "--json"))[0]["ca_id"]
    created = invoke("--data-dir", data, "ca", "create-root", "--tenant", "platform", "--name", "cassandra-next",
                     "--cn", "Cassandra cluster CA 2", "--algorithm", "ecdsa-p384")
    new = created.split()[3]
    refused = CliRunner().invoke(csm, ["--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--ca",
                                       old, "--also-trust", "no-such-ca", "--node", "db-1=10.1.0.1"])
    assert refused.exit_code != 0 and "--also-trust no-such-ca" in refused.output, refused.output
    # 1: keystores still under the old CA, truststores with both
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--ca", old, "--also-trust", new,
           "--node", "db-1=10.1.0.1")
    both = _trusted(out)
    assert both.count("\n") == 1  # two roots
    assert old_ca in (out / "ca.pem").read_text() and (out / "ca.pem").read_text().count("BEGIN CERTIFICATE") == 2
    step1_client = (out / "client" / "client.pem").read_text()
    # 2: keystores under the new CA, truststores with both
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--ca", new, "--also-trust", old,
           "--node", "db-1=10.1.0.1")
    assert _trusted(out) == both
    for client in (step1_client, (out / "client" / "client.pem").read_text()):
        (tmp_path / "client.pem").write_text(client)
        verified = subprocess.run([OPENSSL, "verify", "-CAfile", out / "ca.pem", tmp_path / "client.pem"],
                                  capture_output=True, text=True)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    # 3: the old CA dropped
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--ca", new, "--node", "db-1=10.1.0.1")
    assert _trusted(out).count("\n") == 0 and old_ca not in (out / "ca.pem").read_text()


@pytest.mark.skipif(OPENSSL is None or KEYTOOL is None, reason="needs the openssl command and Java's keytool")
def test_after_a_compromise_rollover_the_cluster_trusts_the_new_root_key_alone(tmp_path):
    """`csm ca rollover --compromised`: it says what to issue again (the node and the client certificate, signed by the
    stolen key), and the next bootstrap-tls run hands out a truststore and ca.pem of the new root alone, and
    keystores without a link: the old client certificate no longer verifies against them, the new one does."""
    data, out = str(tmp_path / "data"), tmp_path / "tls"
    invoke("--data-dir", data, "init")
    made = invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=10.1.0.1")
    ca_id = re.search(r"cluster CA (\S+):", made).group(1)
    old_ca, old_client = (out / "ca.pem").read_text(), (out / "client" / "client.pem").read_text()
    said = invoke("--data-dir", data, "ca", "rollover", ca_id, "--tenant", "platform", "--reason", "root key stolen",
                  "--compromised")
    assert "no link certificate" in said and "2 to issue again under the new key: 0 CA(s), 2 certificate(s)" in said
    assert len(re.findall(r"csm cert renew \S+", said)) == 2
    status = invoke("--data-dir", data, "ca", "compromise", ca_id, "--tenant", "platform")  # read back later
    assert "rolled over away from key" in status and "2 to issue again under the new key" in status
    assert re.findall(r"csm cert renew \S+", status) == re.findall(r"csm cert renew \S+", said)
    invoke("--data-dir", data, "cluster", "bootstrap-tls", "--out", str(out), "--ca", ca_id, "--node",
           "db-1=10.1.0.1")
    new_ca = (out / "ca.pem").read_text()
    assert new_ca != old_ca and len(_pem_blocks(new_ca)) == 1
    password = (out / "keystore.password").read_text().strip()
    trusted = subprocess.run([KEYTOOL, "-list", "-rfc", "-keystore", out / "db-1" / "truststore.jks", "-storepass",
                              password], capture_output=True, text=True, check=True).stdout
    assert [block.strip() for block in _pem_blocks(trusted)] == [new_ca.strip()]
    keystore = subprocess.run([KEYTOOL, "-list", "-rfc", "-keystore", out / "db-1" / "keystore.jks", "-storepass",
                               password], capture_output=True, text=True, check=True).stdout
    assert "Certificate chain length: 2" in keystore  # the node's certificate and the new root: no link
    for name, client in (("old", old_client), ("new", (out / "client" / "client.pem").read_text())):
        (tmp_path / f"{name}-client.pem").write_text(_pem_blocks(client)[0])
        verified = subprocess.run([OPENSSL, "verify", "-x509_strict", "-CAfile", out / "ca.pem",
                                   tmp_path / f"{name}-client.pem"], capture_output=True, text=True)
        assert (verified.returncode == 0) is (name == "new"), (name, verified.stdout + verified.stderr)
