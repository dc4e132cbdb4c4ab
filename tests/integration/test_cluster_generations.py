"""Deployments tracked per (certificate, node), rollbacks of several generations, and a deployment that stopped
halfway through its renames: against a real sshd on loopback, the "node" a local directory."""

from __future__ import annotations

import asyncio
import json

from deploy_halfway import deploy_stopped_halfway
from sshd_fixture import ssh_node  # noqa: F401 - a fixture
from test_api_support import running_api
from test_cluster_deploy import _deploy, _events, _password, cluster, csm_run  # noqa: F401 - cluster is a fixture
from test_cluster_verify_rollback import _rollback, node_tls

from cli.common import catch_up
from infra.bootstrap import open_runtime
from infra.config import Settings
from projections import deployments as deployments_model


def _model(data, query, *args):
    runtime = open_runtime(Settings.from_env(str(data)))
    try:
        catch_up(runtime)
        conn = runtime.runner.connection()
        try:
            return query(conn, *args)
        finally:
            conn.close()
    finally:
        runtime.close()


def _node_certificate(data) -> str:
    return next(e["payload"]["certificate_id"] for e in _events(data, "certificate.issued")
                if e["payload"]["profile"] == "cassandra-node")


def test_one_certificate_on_two_nodes_is_verified_and_rolled_back_on_each_by_its_own_record(cluster, ssh_node,
                                                                                            tmp_path):
    data, out = cluster
    certificate_id = _node_certificate(data)
    first, second = tmp_path / "db-1", tmp_path / "db-2"
    _deploy(data, out, ssh_node, first, "--format", "pem", "--certificate", certificate_id)
    _deploy(data, out, ssh_node, second, "--format", "pem", "--certificate", certificate_id, name="db-2")
    _deploy(data, out, ssh_node, first, "--format", "pem", "--certificate", certificate_id)
    rows = {r["node"]: r for r in _model(data, deployments_model.of_certificate, certificate_id, "platform")}
    assert {n: (r["state"], r["deployments"]) for n, r in rows.items()} == {"db-1": ("current", 2),
                                                                           "db-2": ("current", 1)}
    # db-2 was deployed to after db-1's first deployment: db-1 is still known to hold the certificate
    with node_tls(first / "keystore.pem", _password(out), reloads=True) as port:
        checked = csm_run("--data-dir", str(data), "cluster", "verify", "--node", f"db-1=127.0.0.1:{port}")
    assert f"db-1: verified: certificate {certificate_id} (deployed" in checked
    output = _rollback(data, ssh_node)
    assert f"rolled back certificate {certificate_id}" in output and f"restored: certificate {certificate_id}" in output
    db1, db2 = (_model(data, deployments_model.node, "platform", n) for n in ("db-1", "db-2"))
    assert (db1["state"], db1["certificate_id"], db1["verified"]) == ("rolled_back", certificate_id, None)
    assert (db2["state"], db2["certificate_id"]) == ("deployed", certificate_id)
    assert db2["files"] == [{"path": str(second / n), "sha256": f["sha256"]}
                            for n, f in zip(("keystore.pem", "truststore.pem"), db2["files"])]
    [verified] = [e for e in _events(data, "certificate.deployment_verified")]
    assert verified["payload"]["node"] == "db-1" and verified["payload"]["verified"] is True


def test_a_node_keeps_its_generations_and_a_rollback_goes_back_several(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    bodies = []
    for _ in range(3):  # three certificates for db-1, each deployed in turn
        _deploy(data, out, ssh_node, remote)
        bodies.append((remote / "keystore.jks").read_bytes())
        csm_run("--data-dir", str(data), "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=127.0.0.1")
    first, second, third = (e["payload"]["certificate_id"] for e in _events(data, "certificate.deployed"))
    assert (remote / "keystore.jks.previous").read_bytes() == bodies[1]
    assert (remote / "keystore.jks.previous.2").read_bytes() == bodies[0]
    record = _model(data, deployments_model.node, "platform", "db-1")
    assert record["certificate_id"] == third and record["keep"] == 3
    assert [g["certificate_id"] for g in record["generations"]] == [second, first]
    # csm cluster status shows the same record, read-only
    [shown] = json.loads(csm_run("--data-dir", str(data), "cluster", "status", "--node", "db-1", "--json"))
    assert (shown["certificate_id"], shown["state"], shown["keep"]) == (third, "deployed", 3)
    table = csm_run("--data-dir", str(data), "cluster", "status")
    assert third in table and f"{second}, {first}" in table and "1 node(s) in tenant platform" in table
    assert "no deployment is recorded for node db-9" in csm_run("--data-dir", str(data), "cluster", "status",
                                                                "--node", "db-9", code=1)
    output = _rollback(data, ssh_node, "--generation", "3", code=1)  # nothing was there before the first
    assert "no_previous" in output and "keystore.jks.previous.3" in output
    output = _rollback(data, ssh_node, "--generation", "2")
    assert f"rolled back certificate {third}" in output and "to generation 2" in output
    assert f"restored: certificate {first}" in output
    assert (remote / "keystore.jks").read_bytes() == bodies[0]
    assert (remote / "keystore.jks.rolled-back").read_bytes() == bodies[2]
    assert not (remote / "keystore.jks.previous").exists() and not (remote / "keystore.jks.previous.2").exists()
    [event] = _events(data, "certificate.deployment_rolled_back")
    assert event["payload"]["generation"] == 2 and event["payload"]["restored_certificate_id"] == first
    assert event["schema_version"] == 2
    record = _model(data, deployments_model.node, "platform", "db-1")
    assert (record["certificate_id"], record["state"], record["generations"]) == (first, "rolled_back", [])
    states = {r["certificate_id"]: r["state"] for c in (first, second, third)
              for r in _model(data, deployments_model.of_certificate, c, "platform")}
    assert states == {first: "current", second: "replaced", third: "rolled_back"}
    # --keep 1 drops the older generations on the next deployment
    for _ in range(3):
        _deploy(data, out, ssh_node, remote, "--keep", "2")
    assert (remote / "keystore.jks.previous.2").exists()
    output = _deploy(data, out, ssh_node, remote, "--keep", "1")
    assert "keeping 1 generation)" in output
    assert (remote / "keystore.jks.previous").exists() and not (remote / "keystore.jks.previous.2").exists()


def test_a_deployment_stopped_halfway_through_its_renames_is_reported_and_blocks_a_rollback(cluster, ssh_node,
                                                                                           tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    _deploy(data, out, ssh_node, remote)
    _deploy(data, out, ssh_node, remote)
    old_truststore = (remote / "truststore.jks").read_bytes()
    certificate_id = _node_certificate(data)
    deploy_stopped_halfway(data, ssh_node, tenant_id="platform", name="db-1", certificate_id=certificate_id,
                           remote=remote, keep=3)
    assert (remote / "keystore.jks").read_bytes() == b"new keystore"
    assert (remote / "truststore.jks").read_bytes() == old_truststore
    started = _events(data, "certificate.deployment_started")
    assert len(started) == 3 and len(_events(data, "certificate.deployed")) == 2
    record = _model(data, deployments_model.node, "platform", "db-1")
    assert record["started_position"] == started[-1]["global_position"]
    checked = csm_run("--data-dir", str(data), "cluster", "verify", "--node", "db-1=127.0.0.1:9", "--within", "1",
                      code=1)
    assert f"unfinished: a deployment of certificate {certificate_id} started at" in checked
    before = {p.name: p.read_bytes() for p in remote.iterdir()}
    output = _rollback(data, ssh_node, code=1)
    assert "deployment_unfinished" in output
    assert f"{remote / 'keystore.jks'}: new, {remote / 'truststore.jks'}: old" in output
    assert {p.name: p.read_bytes() for p in remote.iterdir()} == before
    assert not _events(data, "certificate.deployment_rolled_back")
    output = _deploy(data, out, ssh_node, remote)  # reports what it found, then replaces every file
    assert f"{remote / 'keystore.jks'}: new, {remote / 'truststore.jks'}: old" in output
    assert _model(data, deployments_model.node, "platform", "db-1")["started_certificate_id"] is None
    output = _rollback(data, ssh_node)  # the half-done files are the generation a rollback now goes back to
    assert "restored: files no recorded deployment installed" in output
    assert (remote / "keystore.jks").read_bytes() == b"new keystore"


def test_the_api_lists_each_node_and_each_certificates_nodes_confined_to_the_tenant(cluster, ssh_node, tmp_path):
    data, out = cluster
    certificate_id = _node_certificate(data)
    for name in ("db-1", "db-2", "db-3"):
        _deploy(data, out, ssh_node, tmp_path / name, "--certificate", certificate_id, name=name)
    _deploy(data, out, ssh_node, tmp_path / "db-1", "--certificate", certificate_id)
    token = csm_run("--data-dir", str(data), "admin", "create-token", "--name", "reader").strip().splitlines()[-1]
    csm_run("--data-dir", str(data), "tenant", "create", "other", "--name", "Other")
    other = csm_run("--data-dir", str(data), "admin", "create-token", "--name", "other", "--tenant", "other",
                    "--role", "tenant-admin").strip().splitlines()[-1]

    async def ask() -> tuple:
        async with running_api(tmp_path) as api:
            mine, theirs = ({"Authorization": f"Bearer {t}"} for t in (token, other))
            first = (await api.client.get("/v1/deployments", params={"limit": 2}, headers=mine)).json()
            rest = (await api.client.get("/v1/deployments", params={"cursor": first["next_cursor"]},
                                         headers=mine)).json()
            one = (await api.client.get("/v1/deployments", params={"node": "db-1"}, headers=mine)).json()
            of_certificate = (await api.client.get(f"/v1/certificates/{certificate_id}/deployments",
                                                   headers=mine)).json()
            paged = [(await api.client.get(f"/v1/certificates/{certificate_id}/deployments", params={"limit": 2},
                                           headers=mine)).json()]
            paged.append((await api.client.get(f"/v1/certificates/{certificate_id}/deployments",
                                               params={"limit": 2, "cursor": paged[0]["next_cursor"]},
                                               headers=mine)).json())
            bad_page = await api.client.get(f"/v1/certificates/{certificate_id}/deployments",
                                            params={"cursor": "nope"}, headers=mine)
            confined = (await api.client.get("/v1/deployments", headers=theirs)).json()
            hidden = await api.client.get(f"/v1/certificates/{certificate_id}/deployments", headers=theirs)
            bad = await api.client.get("/v1/deployments", params={"cursor": "nope"}, headers=mine)
            return first, rest, one, of_certificate, confined, hidden, bad, paged, bad_page

    first, rest, one, of_certificate, confined, hidden, bad, paged, bad_page = asyncio.run(ask())
    assert [n["node"] for n in first["items"]] == ["db-1", "db-2"] and first["next_cursor"]
    assert [n["node"] for n in rest["items"]] == ["db-3"] and rest["next_cursor"] is None
    [db1] = one["items"]
    assert (db1["certificate_id"], db1["state"], db1["keep"], db1["started"]) == (certificate_id, "deployed", 3, None)
    assert db1["actor"].startswith("cli:") and db1["port"] == ssh_node.port
    assert [g["certificate_id"] for g in db1["generations"]] == [certificate_id]
    assert [f["path"] for f in db1["files"]] == [str(tmp_path / "db-1" / n) for n in ("keystore.jks",
                                                                                      "truststore.jks")]
    assert {d["node"]: (d["state"], d["deployments"]) for d in of_certificate["items"]} == {
        "db-1": ("current", 2), "db-2": ("current", 1), "db-3": ("current", 1)}
    assert of_certificate["next_cursor"] is None
    # a certificate's nodes page as GET /v1/deployments does: limit, then next_cursor (the same format) as cursor
    assert [d["node"] for d in paged[0]["items"]] == ["db-1", "db-2"] and paged[0]["next_cursor"]
    assert paged[0]["next_cursor"] == first["next_cursor"]
    assert [d["node"] for d in paged[1]["items"]] == ["db-3"] and paged[1]["next_cursor"] is None
    assert bad_page.status_code == 400 and bad_page.json()["errors"][0]["field"] == "cursor"
    assert confined["items"] == [] and hidden.status_code == 404
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "cursor"


def test_verify_says_which_ports_serve_an_unfinished_deployments_certificate_from_what_they_served(cluster, ssh_node,
                                                                                                  tmp_path):
    data, out = cluster
    first, second = tmp_path / "db-1", tmp_path / "db-2"
    _deploy(data, out, ssh_node, first, "--format", "pem")
    old = _node_certificate(data)
    csm_run("--data-dir", str(data), "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=127.0.0.1")
    new = [e["payload"]["certificate_id"] for e in _events(data, "certificate.issued")
           if e["payload"]["profile"] == "cassandra-node"][-1]
    _deploy(data, out, ssh_node, second, "--format", "pem", "--certificate", new, name="db-2")  # new's keystore
    deploy_stopped_halfway(data, ssh_node, tenant_id="platform", name="db-1", certificate_id=new, remote=first,
                           keep=3)
    # one port of db-1 took the new certificate, the other still serves the old one
    with node_tls(second / "keystore.pem", _password(out), reloads=False) as took, \
            node_tls(first / "keystore.pem", _password(out), reloads=False) as kept:
        checked = csm_run("--data-dir", str(data), "cluster", "verify", "--node", f"db-1=127.0.0.1:{took}",
                          "--node", f"db-1=127.0.0.1:{kept}", "--within", "2", code=1)
        assert f"db-1: NOT VERIFIED: certificate {old}" in checked
        assert f"unfinished: a deployment of certificate {new} started at" in checked
        assert f"port {took} serves that certificate and port {kept} does not" in checked, checked
        assert "its renames were done" not in checked
        checked = csm_run("--data-dir", str(data), "cluster", "verify", "--node", f"db-1=127.0.0.1:{took}",
                          "--within", "2", code=1)
        assert "the node serves that certificate (its renames were done): deploy again to record it" in checked


def test_rollbacks_after_deploying_two_certificates_twice_each_go_back_through_every_generation(cluster, ssh_node,
                                                                                               tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    first = _node_certificate(data)
    _deploy(data, out, ssh_node, remote)
    bodies = [(remote / "keystore.jks").read_bytes()]
    csm_run("--data-dir", str(data), "cluster", "bootstrap-tls", "--out", str(out), "--node", "db-1=127.0.0.1")
    for extra in ((), (), ("--certificate", first)):  # the second certificate twice, then the first again
        _deploy(data, out, ssh_node, remote, *extra)
        bodies.append((remote / "keystore.jks").read_bytes())
    second = _events(data, "certificate.deployed")[1]["payload"]["certificate_id"]
    # back two generations: the second certificate's first deployment, not its last, is in place again
    output = _rollback(data, ssh_node, "--generation", "2")
    assert f"rolled back certificate {first}" in output and f"restored: certificate {second}" in output
    assert (remote / "keystore.jks").read_bytes() == bodies[1]
    # a change by hand is still refused, and once undone the next rollback goes ahead
    (remote / "keystore.jks").write_bytes(b"edited on the node")
    output = _rollback(data, ssh_node, code=1)
    assert "files_changed" in output and f"{remote / 'keystore.jks'} on node db-1" in output
    (remote / "keystore.jks").write_bytes(bodies[1])
    output = _rollback(data, ssh_node)
    assert f"rolled back certificate {second}" in output and f"restored: certificate {first}" in output
    assert (remote / "keystore.jks").read_bytes() == bodies[0]
    record = _model(data, deployments_model.node, "platform", "db-1")
    assert (record["certificate_id"], record["state"], record["generations"]) == (first, "rolled_back", [])
    assert [e["payload"]["restored_certificate_id"] for e in _events(data, "certificate.deployment_rolled_back")] \
        == [second, first]
