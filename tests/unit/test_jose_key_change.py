"""domain/jose.py's keyChange parser (RFC 8555 7.3.5, a JWS inside the payload of a JWS), with property tests:
a well-formed change parses for any key pair, anything else is a ``JoseError`` (never another exception), and any
change to what the new key signed is refused."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_jose import jwk_of, sign

from domain import jose
from domain.jose import JoseError, b64url_encode

URL = "https://ca.example/acme/t/key-change"
KID = "https://ca.example/acme/t/acct/abc"
KEYS = [(ec.generate_private_key(ec.SECP256R1()), "ES256"), (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA")]


def inner(new, alg: str, old_jwk, *, url: str = URL, kid: str = KID, extra: dict | None = None,
          body: dict | None = None) -> bytes:
    payload = json.dumps(body if body is not None else {"account": kid, "oldKey": old_jwk}).encode()
    return sign(new, alg, {"alg": alg, "url": url, "jwk": jwk_of(new), **(extra or {})}, payload)


@given(new=st.sampled_from(KEYS), old=st.sampled_from(KEYS), nonce=st.none() | st.text(min_size=1, max_size=20))
@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
def test_a_well_formed_key_change_parses(new, old, nonce):
    extra = {"nonce": nonce} if nonce else {}  # an inner nonce is ignored (RFC 8555 7.3.5)
    change = jose.parse_key_change(inner(new[0], new[1], jwk_of(old[0]), extra=extra), url=URL, kid=KID)
    assert change.new_jwk == jose.public_jwk(jwk_of(new[0]))
    assert jose.thumbprint(change.old_jwk) == jose.thumbprint(jwk_of(old[0]))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.sampled_from(["protected", "payload", "signature", "header", "x"]),
                                      children, max_size=4), max_leaves=12))
@settings(max_examples=200)
def test_any_json_payload_is_parsed_or_refused_cleanly(value):
    with pytest.raises(JoseError):
        jose.parse_key_change(json.dumps(value).encode(), url=URL, kid=KID)


@given(part=st.sampled_from(["protected", "payload", "signature"]), index=st.integers(min_value=0),
       flip=st.integers(min_value=1, max_value=255))
@settings(max_examples=150)
def test_any_change_to_the_inner_jws_is_refused(part, index, flip):
    new, alg = KEYS[0]
    document = json.loads(inner(new, alg, jwk_of(KEYS[1][0])))
    raw = bytearray(jose.b64url_decode(document[part], part))
    if not raw:
        return
    raw[index % len(raw)] ^= flip
    document[part] = b64url_encode(bytes(raw))
    with pytest.raises(JoseError):
        jose.parse_key_change(json.dumps(document).encode(), url=URL, kid=KID)


def test_each_rule_names_its_field():
    new, alg = KEYS[0]
    old = jwk_of(KEYS[1][0])
    cases = [
        (inner(new, alg, old, url=URL + "x"), "payload.protected.url"),
        (inner(new, alg, old, kid=KID + "x"), "payload.account"),
        (inner(new, alg, old, body={"account": KID}), "payload.oldKey"),
        (sign(new, alg, {"alg": alg, "url": URL, "kid": KID}, b"{}"), "payload.protected.kid"),
        (sign(KEYS[2][0], alg, {"alg": alg, "url": URL, "jwk": jwk_of(new)},
              json.dumps({"account": KID, "oldKey": old}).encode()), "payload.signature"),  # not the jwk's signature
        (sign(new, "ES384", {"alg": "ES384", "url": URL, "jwk": jwk_of(new)}, b"{}"), "payload.protected.alg"),
        (b"[]", "payload"),
    ]
    for body, field in cases:
        with pytest.raises(JoseError) as refused:
            jose.parse_key_change(body, url=URL, kid=KID)
        assert refused.value.field == field, (field, refused.value.detail)
