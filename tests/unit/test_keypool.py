"""infra.crypto.keypool: ready RSA keys are handed out once, only for sizes asked for, only once armed."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.crypto.engine import CryptographyPki
from infra.crypto.keypool import RsaKeyPool


def _der(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_an_unarmed_pool_never_generates_and_hands_out_nothing():
    pool = RsaKeyPool(sizes=(3072,), target=2)
    assert pool.take(3072) is None and pool.take(3072) is None
    assert pool.ready(3072) == 0 and not pool.wait_full(0.01)


def test_an_armed_pool_fills_the_sizes_asked_for_and_each_key_goes_out_once():
    pool = RsaKeyPool(sizes=(3072, 4096), target=2)
    pool.arm()
    try:
        assert pool.take(3072) is None  # the first request of a size generates its own key
        assert pool.wait_full(120)
        assert pool.ready(3072) == 2 and pool.ready(4096) == 0  # 4096 was never asked for
        first, second = pool.take(3072), pool.take(3072)
        assert isinstance(first, rsa.RSAPrivateKey) and first.key_size == 3072 and second.key_size == 3072
        assert first.public_key().public_numbers().e == 65537
        assert _der(first) != _der(second)
        assert pool.wait_full(120)  # refilled after being taken
        assert {_der(pool.take(3072)), _der(pool.take(3072))}.isdisjoint({_der(first), _der(second)})
    finally:
        pool.stop()
    assert pool.ready(3072) == 0  # stopping drops the ready keys


def test_sizes_outside_the_pool_and_a_zero_target_are_never_served():
    pool = RsaKeyPool(sizes=(4096,), target=0)
    pool.arm()
    assert pool.take(4096) is None and pool.take(2048) is None
    pool.stop()


def test_the_engine_takes_pooled_keys_for_rsa_and_generates_everything_else():
    pool = RsaKeyPool(sizes=(3072,), target=1)
    pki = CryptographyPki(pool)
    pool.arm()
    try:
        assert pki.generate_key("rsa-3072").primary.key_size == 3072  # generated: the pool was empty
        assert pool.wait_full(120)
        pooled = pool._ready[3072][0]
        issued = pki.generate_key("rsa-3072")
        assert issued.algorithm == "rsa-3072" and issued.primary is pooled
        assert pki.generate_key("ecdsa-p256").algorithm == "ecdsa-p256"
    finally:
        pool.stop()
