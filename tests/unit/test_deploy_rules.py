"""What may be deployed to a node (domain.certificate.require_deployable), decided before any key leaves the vault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain import certificate
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
