"""compose.yaml parses and wires the distributed deployment as docs/operations.md describes.

Docker is not available where the suite runs, so this checks the file's shape, not a running stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def test_every_long_running_service_has_a_health_check_and_one_shots_gate_the_rest(services):
    one_shots = {name for name, svc in services.items() if svc.get("restart") == "no"}
    assert one_shots == {"tls-bootstrap", "cassandra-init", "migrate"}
    for name, svc in services.items():
        assert name in one_shots or "healthcheck" in svc, name
        for dependency, condition in svc.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            expected = "service_completed_successfully" if dependency in one_shots else "service_healthy"
            assert condition["condition"] == expected, (name, dependency)


def test_three_tls_cassandra_nodes_kafka_kraft_redis_and_the_three_csm_processes(services):
    nodes = [f"cassandra-{n}" for n in (1, 2, 3)]
    for node in nodes:
        assert services[node]["image"].startswith("cassandra:4.1")
        assert services[node]["environment"]["CSM_NODE"] == node
        assert services[node]["entrypoint"] == ["bash", "/deploy/tls-entrypoint.sh"]
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert services["api"]["command"] == ["csm", "serve"]
    for name in ("projector", "worker"):  # each with its /metrics inside the compose network (test_monitoring_rules)
        assert services[name]["command"] == ["csm", name, "--metrics-port", "9100", "--metrics-host", "0.0.0.0"]
    for name in ("api", "projector", "worker", "migrate"):
        env = services[name]["environment"]
        assert (env["CSM_STORE"], env["CSM_BUS"], env["CSM_JOBS"]) == ("cassandra", "kafka", "redis")
        assert env["CSM_CASSANDRA_SSL_CERT_FILE"] and env["CSM_CASSANDRA_PASSWORD_FILE"]
    addresses = {services[n]["networks"]["csm"]["ipv4_address"] for n in nodes}
    command = " ".join(services["tls-bootstrap"]["command"])
    assert all(f"{n}={a}" in command for n, a in zip(nodes, sorted(addresses)))  # certificates name the IPs


def test_the_deploy_scripts_exist_and_are_bash(services):
    for script in ("tls-entrypoint.sh", "init-roles.sh"):
        text = (ROOT / "deploy" / "cassandra" / script).read_text()
        assert text.startswith("#!/bin/bash\n") and "set -euo pipefail" in text
