"""What may be deployed to a node (domain.certificate.require_deployable), decided before any key leaves the vault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain import certificate, deployment
from domain.certspec import CertificateFacts, DistinguishedName, SubjectAltNames
from domain.errors import DomainError, NotFound

NOW = datetime(2027, 1, 1, tzinfo=UTC)


def _state(status: str = "issued", key_ref: str | None = "key-1",
           not_after: datetime = NOW + timedelta(days=30)) -> certificate.Certificate:
    facts = CertificateFacts(serial_hex="1", fingerprint_sha256="f", subject_dn="CN=db-1", issuer_dn="CN=ca",
                             not_before=NOW - timedelta(days=1), not_after=not_after, algorithm="ecdsa-p256",
                             public_key_sha256="k", subject_key_identifier="s", authority_key_identifier="a")
    issued = certificate.CertificateIssued(
        certificate_id="c", ca_id="ca", issuer_fingerprint="i", profile="cassandra-node",
        subject=DistinguishedName(common_name="db-1"), sans=SubjectAltNames(),
        key_source="server" if key_ref else "csr",
        key_ref=key_ref, csr_sha256=None, certificate_pem="", facts=facts)
    return certificate.Certificate(certificate_id="c", status=status, issued=None if status == "absent" else issued)


def test_an_issued_unexpired_certificate_with_its_key_here_is_deployable():
    assert certificate.require_deployable(_state(), "c", NOW).key_ref == "key-1"


@pytest.mark.parametrize("state, code", [
    (_state(status="revoked"), "certificate_revoked"),
    (_state(not_after=NOW), "certificate_expired"),
    (_state(key_ref=None), "no_private_key"),
])
def test_revoked_expired_and_keyless_certificates_are_refused_naming_the_id(state, code):
    with pytest.raises(DomainError) as refused:
        certificate.require_deployable(state, "c", NOW)
    assert (refused.value.code, refused.value.field) == (code, "id")


def test_an_unknown_certificate_is_not_found():
    with pytest.raises(NotFound):
        certificate.require_deployable(_state(status="absent"), "c", NOW)


def test_a_deployment_that_happened_is_recorded_whatever_the_certificate_became():
    deployed = certificate.CertificateDeployed(
        certificate_id="c", node="db-1", user="cassandra", host="10.0.0.1", port=22, format="jks",
        files=(certificate.DeployedFile(path="/etc/cassandra/tls/keystore.jks", sha256="0" * 64),),
        host_key_type="ssh-ed25519", host_key_fingerprint="SHA256:x", host_key_first_use=False,
        reload_exit_status=None)
    assert certificate.decide_deployed(_state(status="revoked"), deployed) == [deployed]
    with pytest.raises(NotFound):
        certificate.decide_deployed(_state(status="absent"), deployed)


# Rollback and verification (domain.deployment) ------------------------------------------------------------------

KEYSTORE, TRUSTSTORE = "/etc/cassandra/tls/keystore.jks", "/etc/cassandra/tls/truststore.jks"


def _deployed(certificate_id: str = "c", node: str = "db-1", digest: str = "a") -> certificate.CertificateDeployed:
    return certificate.CertificateDeployed(
        certificate_id=certificate_id, node=node, user="cassandra", host="10.0.0.1", port=22, format="jks",
        files=(certificate.DeployedFile(path=KEYSTORE, sha256=digest * 64),
               certificate.DeployedFile(path=TRUSTSTORE, sha256="t" * 64)),
        host_key_type="ssh-ed25519", host_key_fingerprint="SHA256:x", host_key_first_use=False,
        reload_exit_status=None)


def _rolled_back(restored: str | None, node: str = "db-1") -> certificate.DeploymentRolledBack:
    return certificate.DeploymentRolledBack(
        certificate_id="c", node=node, user="cassandra", host="10.0.0.1", port=22, files=(),
        restored_certificate_id=restored, forced=False, host_key_type="ssh-ed25519", host_key_fingerprint="SHA256:x",
        reload_exit_status=None)


def _node(current: str | None = "a", previous: str | None = "b") -> list[deployment.NodeFile]:
    return [deployment.NodeFile(path=KEYSTORE, sha256=current and current * 64,
                                previous_sha256=previous and previous * 64),
            deployment.NodeFile(path=TRUSTSTORE, sha256="t" * 64, previous_sha256="t" * 64)]


def test_the_state_keeps_each_nodes_last_two_deployments_and_a_rollback_drops_the_last():
    state = certificate.fold([_deployed(digest=d) for d in "abc"] + [_deployed(node="db-2")],
                             start=_state())
    assert deployment.last_deployment(state, "db-1").files[0].sha256 == "c" * 64
    assert deployment.earlier_deployment(state, "db-1").files[0].sha256 == "b" * 64
    assert deployment.earlier_deployment(state, "db-2") is None
    back = certificate.fold([_rolled_back(restored="c")], start=state)  # the earlier one is back on the node
    assert deployment.last_deployment(back, "db-1").files[0].sha256 == "b" * 64
    elsewhere = certificate.fold([_rolled_back(restored="other")], start=state)
    assert deployment.last_deployment(elsewhere, "db-1") is None
    assert deployment.last_deployment(elsewhere, "db-2") is not None
    with pytest.raises(NotFound) as refused:
        deployment.require_deployed(elsewhere, "c", "db-1")
    assert refused.value.code == "not_deployed"


@pytest.mark.parametrize("observed, force, code", [
    (_node(previous=None), True, "no_previous"),
    (_node(current="z"), False, "files_changed"),
    (_node(current=None), False, "files_changed"),
])
def test_a_rollback_is_refused_without_previous_files_or_over_files_changed_by_hand(observed, force, code):
    with pytest.raises(DomainError) as refused:
        deployment.check_rollback(_deployed(), observed, force)
    assert refused.value.code == code and refused.value.status == 409


def test_a_rollback_over_changed_files_goes_ahead_only_when_forced_and_says_so():
    assert deployment.check_rollback(_deployed(), _node(), force=False) is False
    assert deployment.check_rollback(_deployed(), _node(current="z"), force=True) is True


def test_the_restored_files_are_the_first_recorded_deployment_they_match_byte_for_byte():
    observed = _node(previous="b")
    assert deployment.restored_by([None, _deployed("x", digest="q"), _deployed("y", digest="b")], observed) == "y"
    assert deployment.restored_by([_deployed("x", digest="q")], observed) is None


def test_a_node_is_verified_only_if_every_port_checked_served_the_certificate():
    served = certificate.VerifiedPort(port=9142, served_fingerprint="f", matched=True, attempts=1)
    other = certificate.VerifiedPort(port=7001, served_fingerprint="g", matched=False, attempts=3)
    assert deployment.is_verified([served]) and not deployment.is_verified([served, other])
    assert not deployment.is_verified([])
