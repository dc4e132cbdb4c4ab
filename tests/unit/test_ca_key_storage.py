"""domain.ca: where a CA's keys live (vault or the PKCS#11 token); events before token keys read as vault."""

from __future__ import annotations

import msgspec
import pytest

from domain import ca
from domain.errors import DomainError
from test_ca_link_certificates import OLD, created


def test_a_ca_created_before_token_keys_reads_as_kept_in_the_vault():
    stored = msgspec.to_builtins(created("root"))
    del stored["key_storage"]  # as events recorded before the field existed
    decoded = msgspec.convert(stored, ca.CaCreated)
    assert decoded.key_storage == "vault" and ca.fold([decoded]).key_storage == "vault"


def test_a_ca_on_the_token_stays_there_through_a_rollover():
    on_token = msgspec.structs.replace(created("root"), key_storage="hsm")
    state = ca.fold([on_token, ca.CaKeyRolledOver(certificate=OLD, reason="key update")])
    assert state.key_storage == "hsm"
    requested = ca.CaIntermediateRequested(ca_id="i1", name="I", algorithm="ecdsa-p256", subject=on_token.subject,
                                           key_ref="key_x", csr_pem="", parent_id="r1", key_storage="hsm")
    assert ca.fold([requested]).key_storage == "hsm"


@pytest.mark.parametrize("algorithm", ["rsa-3072", "ecdsa-p521", "ed25519", "ml-dsa-65", "hybrid-p384-ml-dsa-65"])
def test_only_ecdsa_p256_p384_and_rsa_4096_keys_go_on_the_token(algorithm):
    with pytest.raises(DomainError) as refused:
        ca.require_token_algorithm("hsm", algorithm, "algorithm")
    assert (refused.value.code, refused.value.field) == ("algorithm_not_on_token", "algorithm")
    ca.require_token_algorithm("vault", algorithm)  # the vault holds any algorithm
    for allowed in ca.TOKEN_ALGORITHMS:
        ca.require_token_algorithm("hsm", allowed)
    assert set(ca.TOKEN_ALGORITHMS) == {"ecdsa-p256", "ecdsa-p384", "rsa-4096"}
