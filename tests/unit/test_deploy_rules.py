"""What may be deployed to a node (domain.certificate.require_deployable), decided before any key leaves the vault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
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


def _rolled_back(restored: str | None, node: str = "db-1", digest: str = "b",
                 undone: str | None = None) -> certificate.DeploymentRolledBack:
    """A rollback that put back keystore ``digest`` over keystore ``undone`` (None: none was there)."""
    return certificate.DeploymentRolledBack(
        certificate_id="c", node=node, user="cassandra", host="10.0.0.1", port=22,
        files=(certificate.RestoredFile(path=KEYSTORE, sha256=digest * 64, rolled_back_sha256=undone and undone * 64),
               certificate.RestoredFile(path=TRUSTSTORE, sha256="t" * 64,
                                        rolled_back_sha256=undone and "t" * 64)),
        restored_certificate_id=restored, forced=False, host_key_type="ssh-ed25519", host_key_fingerprint="SHA256:x",
        reload_exit_status=None)


def _node(current: str | None = "a", previous: str | None = "b") -> list[deployment.NodeFile]:
    return [deployment.NodeFile(path=KEYSTORE, sha256=current and current * 64,
                                generations=(previous and previous * 64,)),
            deployment.NodeFile(path=TRUSTSTORE, sha256="t" * 64, generations=("t" * 64,))]


def test_the_state_keeps_each_nodes_deployments_and_a_rollback_drops_the_one_it_undid():
    state = certificate.fold([_deployed(digest=d) for d in "abc"] + [_deployed(node="db-2")],
                             start=_state())
    assert deployment.last_deployment(state, "db-1").files[0].sha256 == "c" * 64
    assert [d.files[0].sha256 for d in deployment.earlier_deployments(state, "db-1")] == ["b" * 64, "a" * 64]
    assert deployment.earlier_deployments(state, "db-2") == []
    back = certificate.fold([_rolled_back(restored="c", undone="c")], start=state)  # the earlier one is back
    assert deployment.last_deployment(back, "db-1").files[0].sha256 == "b" * 64
    # another certificate's files put back: the earlier deployments stay, as the node's older generations hold them
    elsewhere = certificate.fold([_rolled_back(restored="other", undone="c")], start=state)
    assert [d.files[0].sha256 for d in deployment.deployments_to(elsewhere, "db-1")] == ["b" * 64, "a" * 64]
    assert deployment.last_deployment(elsewhere, "db-2") is not None
    # b was in place (a rollback on another stream had put it back) and is undone: c, newer, is gone from the node
    undid_b = certificate.fold([_rolled_back(restored="other", undone="b")], start=state)
    assert [d.files[0].sha256 for d in deployment.deployments_to(undid_b, "db-1")] == ["a" * 64]
    undid_a = certificate.fold([_rolled_back(restored="other", undone="a")], start=state)
    with pytest.raises(NotFound) as refused:
        deployment.require_deployed(undid_a, "c", "db-1")
    assert refused.value.code == "not_deployed"


def test_the_deployment_in_place_is_the_newest_whose_files_the_node_holds_not_always_the_last():
    state = certificate.fold([_deployed(digest=d) for d in "abc"], start=_state())
    assert deployment.in_place(state, "db-1", _node(current="c")).files[0].sha256 == "c" * 64
    assert deployment.in_place(state, "db-1", _node(current="a")).files[0].sha256 == "a" * 64
    assert deployment.in_place(state, "db-1", _node(current="z")) is None  # changed by hand
    assert deployment.in_place(state, "db-2", _node(current="a")) is None


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


def _generations(*digests: str | None) -> list[deployment.NodeFile]:
    """A node whose keystore is "c" now and whose generations 1, 2 ... hold ``digests``."""
    return [deployment.NodeFile(path=KEYSTORE, sha256="c" * 64,
                                generations=tuple(d and d * 64 for d in digests)),
            deployment.NodeFile(path=TRUSTSTORE, sha256="t" * 64, generations=("t" * 64,) * len(digests))]


def test_a_rollback_of_several_generations_needs_that_generation_and_finds_what_it_holds():
    observed = _generations("b", "a")
    assert deployment.check_rollback(_deployed(digest="c"), observed, force=False, generation=2) is False
    with pytest.raises(DomainError) as refused:
        deployment.check_rollback(_deployed(digest="c"), observed, force=True, generation=3)
    assert refused.value.code == "no_previous" and "keystore.jks.previous.3" in refused.value.detail
    candidates = [_deployed("y", digest="b"), _deployed("x", digest="a")]
    assert deployment.restored_by(candidates, observed, generation=2) == "x"
    assert deployment.restored_by(candidates, observed, generation=1) == "y"


def test_the_state_drops_to_the_deployment_a_rollback_of_several_generations_restored():
    state = certificate.fold([_deployed(digest=d) for d in "abc"], start=_state())
    back = certificate.fold([_rolled_back(restored="c", digest="a")], start=state)
    assert deployment.last_deployment(back, "db-1").files[0].sha256 == "a" * 64
    assert deployment.earlier_deployments(back, "db-1") == []


def _started(digest: str = "n") -> certificate.DeploymentStarted:
    return certificate.DeploymentStarted(
        certificate_id="n", node="db-1", user="cassandra", host="10.0.0.1", port=22, format="jks",
        files=(certificate.DeployedFile(path=KEYSTORE, sha256=digest * 64),
               certificate.DeployedFile(path=TRUSTSTORE, sha256="u" * 64)),
        keep=3, host_key_type="ssh-ed25519", host_key_fingerprint="SHA256:x")


def test_a_deployment_started_and_not_completed_is_unfinished_until_a_deployment_to_the_node():
    state = certificate.fold([_started()], start=_state())
    assert deployment.unfinished(state, "db-1") == _started()
    assert deployment.unfinished(state, "db-2") is None
    assert deployment.unfinished(certificate.fold([_deployed()], start=state), "db-1") is None


def test_a_half_done_deployment_says_file_by_file_what_the_node_holds_and_stops_a_rollback_unless_forced():
    half = [deployment.NodeFile(path=KEYSTORE, sha256="n" * 64, generations=("b" * 64,)),
            deployment.NodeFile(path=TRUSTSTORE, sha256="t" * 64, generations=("t" * 64,))]
    states = deployment.half_done({f.path: f.sha256 for f in _started().files},
                                  {f.path: f.sha256 for f in _deployed().files}, half)
    assert states == {KEYSTORE: "new", TRUSTSTORE: "old"}
    assert deployment.describe(states) == f"{KEYSTORE}: new, {TRUSTSTORE}: old"
    assert deployment.describe({KEYSTORE: "new"}).startswith("every file is the new one")
    with pytest.raises(DomainError) as refused:
        deployment.check_rollback(_deployed(), _node(), force=False, unfinished=_started())
    assert refused.value.code == "deployment_unfinished" and f"{KEYSTORE}: absent" not in refused.value.detail
    assert deployment.check_rollback(_deployed(), _node(), force=True, unfinished=_started()) is True


def test_old_deployment_events_read_as_keeping_one_generation_and_rolling_back_one():
    from domain.events import Actor, EventEnvelope, decode_payload
    common = dict(event_id="e", stream_id="certificate-c", stream_type="certificate", version=2, global_position=2,
                  tenant_id="t", occurred_at="2027-01-01T00:00:00Z", actor=Actor(principal="p", auth_method="cli"),
                  correlation_id=None, causation_id=None, prev_hash="", schema_version=1)
    deployed = {k: v for k, v in msgspec.to_builtins(_deployed()).items() if k != "keep"}
    assert decode_payload(EventEnvelope(type="certificate.deployed", payload=deployed, **common)).keep == 1
    rolled = {k: v for k, v in msgspec.to_builtins(_rolled_back("c")).items() if k != "generation"}
    assert decode_payload(EventEnvelope(type="certificate.deployment_rolled_back", payload=rolled,
                                        **common)).generation == 1


def test_a_failure_is_recorded_on_one_bounded_line_without_a_password_or_a_pem_block():
    key = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w\n-----END ENCRYPTED PRIVATE KEY-----"
    failure = deployment.failed(_started(), "commit", f"mv: failed\n{key}\npassword s3cret-pw " + "x" * 500,
                                secrets=("s3cret-pw",))
    assert (failure.certificate_id, failure.node, failure.step) == ("n", "db-1", "commit")
    assert failure.reason.startswith("mv: failed [PEM removed] password [redacted] x")
    assert "MIIF" not in failure.reason and "s3cret" not in failure.reason and len(failure.reason) == 300
    cut = deployment.failed(_started(), "deliver", "-----BEGIN PRIVATE KEY-----\nMIIE cut short")
    assert cut.reason == "[PEM removed]"
    with pytest.raises(DomainError) as refused:
        deployment.failed(_started(), "reload", "no")
    assert refused.value.field == "step"
