"""A deployment that fails after its start was recorded (the renames on the node fail) is recorded as failed, with the
step and a reason that holds no secret, and the read model, `csm cluster status` and the API say so; one whose process
dies there stays merely unfinished. Against a real sshd on loopback, the "node" a local directory."""

from __future__ import annotations

import asyncio
import json

from deploy_halfway import deploy_stopped_halfway
from sshd_fixture import ssh_node  # noqa: F401 - a fixture
from test_api_support import running_api
from test_cluster_deploy import _deploy, _events, _password, cluster, csm_run  # noqa: F401 - cluster is a fixture
from test_cluster_generations import _model, _node_certificate
from test_cluster_verify_rollback import _rollback

from projections import deployments as deployments_model


def test_a_deployment_whose_renames_fail_is_recorded_as_failed_without_a_secret(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    (remote / "keystore.jks.previous").mkdir(parents=True)  # --keep 1 removes it first: rm fails on a directory
    (remote / "keystore.jks.previous" / "in-the-way").write_bytes(b"x")
    certificate_id = _node_certificate(data)
    output = _deploy(data, out, ssh_node, remote, "--keep", "1", code=1)
    assert "db-1: FAILED" in output and "commit: " in output and "Is a directory" in output
    assert "the start of this deployment is recorded (position" in output and "and its failure (position" in output
    [started] = _events(data, "certificate.deployment_started")
    [failed] = _events(data, "certificate.deployment_failed")
    assert not _events(data, "certificate.deployed")
    assert failed["stream_id"] == f"certificate-{certificate_id}"
    assert failed["global_position"] > started["global_position"]
    payload = failed["payload"]
    assert (payload["certificate_id"], payload["node"], payload["step"]) == (certificate_id, "db-1", "commit")
    assert "Is a directory" in payload["reason"] and len(payload["reason"]) <= 300
    everything = json.dumps(_events(data))
    assert _password(out) not in everything and "PRIVATE KEY" not in everything
    assert not any(p.name.startswith(".keystore.jks.csm-") for p in remote.iterdir())  # the staged files removed

    record = _model(data, deployments_model.node, "platform", "db-1")
    assert (record["started_certificate_id"], record["failed_step"]) == (certificate_id, "commit")
    assert record["failed_at"] == failed["occurred_at"] and record["failed_reason"] == payload["reason"]
    [row] = _model(data, deployments_model.of_certificate, certificate_id, "platform")
    assert (row["state"], row["failed_step"]) == ("failed", "commit")
    table = csm_run("--data-dir", str(data), "cluster", "status", "--node", "db-1")
    assert f"{certificate_id} FAILED at" in table and "commit:" in table
    assert "(none deployed yet)" in table and "files of no deployment" not in table  # its first deployment failed

    token = csm_run("--data-dir", str(data), "admin", "create-token", "--name", "reader").strip().splitlines()[-1]

    async def ask() -> tuple[dict, dict]:
        async with running_api(tmp_path) as api:
            headers = {"Authorization": f"Bearer {token}"}
            nodes = (await api.client.get("/v1/deployments", params={"node": "db-1"}, headers=headers)).json()
            of_certificate = (await api.client.get(f"/v1/certificates/{certificate_id}/deployments",
                                                   headers=headers)).json()
            return nodes, of_certificate

    nodes, of_certificate = asyncio.run(ask())
    [node] = nodes["items"]
    assert node["started"]["state"] == "failed" and node["started"]["failure"]["step"] == "commit"
    assert "Is a directory" in node["started"]["failure"]["reason"]
    [deployed] = of_certificate["items"]
    assert (deployed["state"], deployed["failed_step"]) == ("failed", "commit")

    # the next deployment reports it, then replaces every file and ends the state
    (remote / "keystore.jks.previous" / "in-the-way").unlink()
    (remote / "keystore.jks.previous").rmdir()
    output = _deploy(data, out, ssh_node, remote)
    assert f"unfinished: a deployment of certificate {certificate_id} started at" in output
    assert "failed at" in output and "(commit: " in output
    record = _model(data, deployments_model.node, "platform", "db-1")
    assert record["started_certificate_id"] is None and record["failed_at"] is None


def test_a_deployment_whose_process_dies_halfway_stays_unfinished_not_failed(cluster, ssh_node, tmp_path):
    data, out = cluster
    remote = tmp_path / "node"
    _deploy(data, out, ssh_node, remote)
    _deploy(data, out, ssh_node, remote)
    certificate_id = _node_certificate(data)
    deploy_stopped_halfway(data, ssh_node, tenant_id="platform", name="db-1", certificate_id=certificate_id,
                           remote=remote, keep=3)
    assert len(_events(data, "certificate.deployment_started")) == 3 and not _events(data,
                                                                                     "certificate.deployment_failed")
    record = _model(data, deployments_model.node, "platform", "db-1")
    assert record["started_certificate_id"] == certificate_id and record["failed_at"] is None
    table = csm_run("--data-dir", str(data), "cluster", "status", "--node", "db-1")
    assert f"{certificate_id} since" in table and "FAILED" not in table
    output = _rollback(data, ssh_node, code=1)
    assert "deployment_unfinished" in output
