"""domain/jose.py: flattened JWS parsing, JWKs, RFC 7638 thumbprints, signatures and EAB, with property tests."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import jose
from domain.jose import JoseError, b64url_encode

URL = "https://ca.example/acme/t/new-order"


def jwk_of(key) -> dict:
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        n = public.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[public.curve.name]
        return {"kty": "EC", "crv": crv, "x": b64url_encode(n.x.to_bytes(size, "big")),
                "y": b64url_encode(n.y.to_bytes(size, "big"))}
    if isinstance(public, rsa.RSAPublicKey):
        n = public.public_numbers()
        return {"kty": "RSA", "n": b64url_encode(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
                "e": b64url_encode(n.e.to_bytes(3, "big"))}
    from cryptography.hazmat.primitives import serialization
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def sign(key, alg: str, protected: dict, payload: bytes) -> bytes:
    head, body = b64url_encode(json.dumps(protected).encode()), b64url_encode(payload)
    data = f"{head}.{body}".encode()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        digest = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}[alg]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(data)
    return json.dumps({"protected": head, "payload": body, "signature": b64url_encode(signature)}).encode()


KEYS = {"ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "RS256": lambda: rsa.generate_private_key(65537, 2048), "EdDSA": ed25519.Ed25519PrivateKey.generate}


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_each_accepted_algorithm_verifies_with_its_key(alg):
    key = KEYS[alg]()
    body = sign(key, alg, {"alg": alg, "nonce": "n1", "url": URL, "jwk": jwk_of(key)}, b'{"a": 1}')
    jws = jose.parse_jws(body)
    jose.verify(jws, jose.public_key(jws.jwk))
    assert jws.payload_json() == {"a": 1} and jws.url == URL and jws.nonce == "n1"
    tampered = json.loads(body)
    tampered["payload"] = b64url_encode(b'{"a": 2}')
    with pytest.raises(JoseError) as refused:
        jose.verify(jose.parse_jws(json.dumps(tampered).encode()), jose.public_key(jws.jwk))
    assert refused.value.field == "signature"


@pytest.mark.parametrize("alg", ["none", "HS256", "RS384", "PS256", "ES384"])
def test_none_hmac_unlisted_and_mismatched_algorithms_are_refused(alg):
    key = KEYS["ES256"]()
    jws = jose.parse_jws(sign(key, "ES256", {"alg": alg, "nonce": "n", "url": URL, "jwk": jwk_of(key)}, b"{}"))
    with pytest.raises(JoseError) as refused:
        jose.verify(jws, jose.public_key(jws.jwk))
    assert refused.value.acme_type == "badSignatureAlgorithm" and refused.value.field == "protected.alg"


def test_the_rfc_7638_example_thumbprint():
    jwk = {"kty": "RSA", "e": "AQAB", "kid": "2011-04-29",
           "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
    assert jose.thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert set(jose.public_jwk(jwk)) == {"kty", "e", "n"}


def test_weak_private_and_unknown_keys_are_refused():
    weak = rsa.generate_private_key(65537, 1024)
    with pytest.raises(JoseError) as refused:
        jose.public_key(jwk_of(weak))
    assert refused.value.acme_type == "badPublicKey" and refused.value.field == "jwk.n"
    with pytest.raises(JoseError, match="private"):
        jose.public_key({**jwk_of(KEYS["ES256"]()), "d": "AAAA"})
    with pytest.raises(JoseError):
        jose.public_key({"kty": "oct", "k": "AAAA"})
    with pytest.raises(JoseError):  # a point not on the curve
        jose.public_key({"kty": "EC", "crv": "P-256", "x": b64url_encode(b"\x01" * 32),
                         "y": b64url_encode(b"\x02" * 32)})


def test_an_rsa_key_has_one_spelling_so_one_thumbprint():
    """Security review: RFC 7518 6.3.1 wants n and e in their fewest octets; a zero octet in front spelled the same
    key with another thumbprint, and a thumbprint is what claims a key for one account."""
    jwk = jwk_of(KEYS["RS256"]())
    n, e = jose.b64url_decode(jwk["n"], "n"), jose.b64url_decode(jwk["e"], "e")
    for member, padded in (("n", b"\x00" + n), ("e", b"\x00" + e)):
        with pytest.raises(JoseError) as refused:
            jose.thumbprint({**jwk, member: b64url_encode(padded)})
        assert refused.value.acme_type == "badPublicKey" and refused.value.field == f"jwk.{member}"


@pytest.mark.parametrize("header, field", [
    ({"alg": "ES256", "url": URL, "nonce": "n"}, "protected.jwk"),  # neither jwk nor kid
    ({"alg": "ES256", "url": URL, "nonce": "n", "jwk": {}, "kid": "k"}, "protected.jwk"),  # both
    ({"alg": "ES256", "nonce": "n", "kid": "k"}, "protected.url"),
    ({"alg": "ES256", "url": URL, "kid": "k"}, "protected.nonce"),
    ({"url": URL, "nonce": "n", "kid": "k"}, "protected.alg"),
    ({"alg": "ES256", "url": URL, "nonce": "n", "kid": "k", "crit": ["x"]}, "protected.crit"),
])
def test_header_rules_name_their_field(header, field):
    body = {"protected": b64url_encode(json.dumps(header).encode()), "payload": "", "signature": "AA"}
    with pytest.raises(JoseError) as refused:
        jose.parse_jws(json.dumps(body).encode())
    assert refused.value.field == field


def test_unprotected_headers_and_padding_are_refused():
    head = b64url_encode(json.dumps({"alg": "ES256", "url": URL, "nonce": "n", "kid": "k"}).encode())
    with pytest.raises(JoseError, match="unprotected"):
        jose.parse_jws(json.dumps({"protected": head, "header": {}, "payload": "", "signature": "AA"}).encode())
    with pytest.raises(JoseError, match="base64url"):
        jose.parse_jws(json.dumps({"protected": head + "=", "payload": "", "signature": "AA"}).encode())


def test_external_account_binding():
    account = KEYS["ES256"]()
    secret = b"k" * 32
    url = "https://ca.example/acme/t/new-account"

    def eab(jwk: dict, *, mac_key: bytes = secret, eab_url: str = url, alg: str = "HS256") -> dict:
        head = b64url_encode(json.dumps({"alg": alg, "kid": "key1", "url": eab_url}).encode())
        payload = b64url_encode(json.dumps(jwk).encode())
        mac = hmac.new(mac_key, f"{head}.{payload}".encode(), hashlib.sha256).digest()
        return {"protected": head, "payload": payload, "signature": b64url_encode(mac)}

    jwk = jwk_of(account)
    assert jose.eab_key_id(eab(jwk)) == "key1"
    jose.verify_eab(eab(jwk), account_jwk=jwk, url=url, hmac_key=secret)
    for bad, field in ((eab(jwk, mac_key=b"x" * 32), "externalAccountBinding.signature"),
                       (eab(jwk, eab_url=URL), "externalAccountBinding.url"),
                       (eab(jwk_of(KEYS["ES256"]())), "externalAccountBinding.payload"),
                       (eab(jwk, alg="ES256"), "externalAccountBinding.alg")):
        with pytest.raises(JoseError) as refused:
            jose.verify_eab(bad, account_jwk=jwk, url=url, hmac_key=secret)
        assert refused.value.field == field


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=12)
B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ ", max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_body_parses_or_is_refused_clearly(body):
    try:
        jose.parse_jws(body)
    except JoseError as refused:
        assert refused.field and refused.acme_type


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"protected": B64 | JSON, "payload": B64 | JSON, "signature": B64 | JSON}),
       st.dictionaries(st.sampled_from(["alg", "url", "nonce", "jwk", "kid", "crit"]), JSON, max_size=6))
def test_any_flattened_jws_parses_or_is_refused_clearly(outer, header):
    if isinstance(outer["protected"], str) and outer["protected"] == "":
        outer = {**outer, "protected": b64url_encode(json.dumps(header).encode())}
    try:
        jws = jose.parse_jws(json.dumps(outer).encode())
    except JoseError as refused:
        assert refused.field
    else:
        try:
            jose.verify(jws, jose.public_key(jws.jwk) if jws.jwk is not None else KEYS["ES256"]().public_key())
        except JoseError as refused:
            assert refused.field


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d"]),
                       st.sampled_from(["EC", "RSA", "OKP", "P-256", "P-384", "Ed25519", "AQAB"]) | B64 | JSON,
                       max_size=5))
def test_any_jwk_is_a_key_or_refused_clearly(jwk):
    try:
        jose.thumbprint(jwk)
    except JoseError as refused:
        assert refused.acme_type in ("badPublicKey", "malformed") and refused.field.startswith("jwk")


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=40))
def test_base64url_has_one_spelling_per_value(text):
    """Security review: only the canonical spelling decodes (no set trailing bits), so a signature or payload
    cannot be re-spelled into another accepted request."""
    try:
        decoded = jose.b64url_decode(text, "field")
    except JoseError as exc:
        assert exc.acme_type == "malformed" and exc.field == "field"
        return
    assert b64url_encode(decoded) == text


def test_a_respelled_signature_is_refused():
    key = ec.generate_private_key(ec.SECP256R1())
    outer = json.loads(sign(key, "ES256", {"alg": "ES256", "nonce": "n", "url": URL, "jwk": jwk_of(key)}, b"{}"))
    assert outer["signature"][-1] in "AQgw"  # 64 octets: the last character carries 4 unused bits, all 0
    outer["signature"] = outer["signature"][:-1] + chr(ord(outer["signature"][-1]) + 1)
    with pytest.raises(JoseError) as refused:
        jose.parse_jws(json.dumps(outer).encode())
    assert refused.value.field == "signature"
