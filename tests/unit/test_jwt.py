"""Access-token signing and verification (PyJWT), the algorithm allow-list, key rotation and the JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.jwt import ALGORITHMS, JwtTokens, SigningKeyError, SigningKeys

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def claims(now: datetime = NOW, ttl: int = 900, **extra) -> dict:
    t = int(now.timestamp())
    return {"sub": "user:_system:alice", "tenant": None, "roles": ["viewer"], "amr": ["pwd"], "iat": t, "nbf": t,
            "exp": t + ttl, "jti": "0190-jti", "sid": "s1", **extra}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> JwtTokens:
    keys = SigningKeys(tmp_path_factory.mktemp("keys") / "jwt", "RS256", publish_for=930)
    return JwtTokens(keys, issuer="https://csm.test", audience="csm-api")


@pytest.fixture(scope="module")
def good(tokens) -> str:
    return tokens.sign(claims(), NOW)


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_signed_token_verifies_and_carries_every_claim(tokens, good):
    verified = tokens.verify(good, NOW)
    assert verified is not None and verified["iss"] == "https://csm.test" and verified["aud"] == "csm-api"
    assert verified["sub"] == "user:_system:alice" and verified["amr"] == ["pwd"]
    header = jwt.get_unverified_header(good)
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt" and header["kid"]


def test_times_are_checked_against_the_given_clock_with_a_small_leeway(tokens, good):
    assert tokens.verify(good, NOW + timedelta(seconds=900 + 29)) is not None
    assert tokens.verify(good, NOW + timedelta(seconds=900 + 31)) is None
    assert tokens.verify(good, NOW - timedelta(seconds=29)) is not None
    assert tokens.verify(good, NOW - timedelta(seconds=31)) is None  # not yet valid


@pytest.mark.parametrize("change", [{"aud": "someone-else"}, {"iss": "https://evil.test"}])
def test_audience_and_issuer_must_match(tokens, change):
    key = tokens.keys.current(NOW.timestamp())
    forged = jwt.encode({**claims(), "iss": tokens.issuer, "aud": tokens.audience, **change}, key.private(),
                        algorithm="RS256", headers={"kid": key.kid, "typ": "at+jwt"})
    assert tokens.verify(forged, NOW) is None


@pytest.mark.parametrize("missing", ["sub", "iat", "nbf", "exp", "jti"])
def test_every_registered_claim_is_required(tokens, missing):
    body = {k: v for k, v in claims().items() if k != missing}
    assert tokens.verify(tokens.sign(body, NOW), NOW) is None


def test_none_hs256_and_algorithm_confusion_are_refused(tokens, good):
    head, body, signature = good.split(".")
    kid = jwt.get_unverified_header(good)["kid"]
    assert tokens.verify(f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{body}.", NOW) is None
    public_pem = tokens.keys.current(NOW.timestamp()).public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_head = b64({"alg": "HS256", "typ": "at+jwt", "kid": kid})  # the classic: the public key as HMAC secret
    mac = hmac.new(public_pem, f"{hs_head}.{body}".encode(), hashlib.sha256).digest()
    assert tokens.verify(f"{hs_head}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}", NOW) is None
    claiming_es384 = f"{b64({'alg': 'ES384', 'typ': 'at+jwt', 'kid': kid})}.{body}.{signature}"
    assert tokens.verify(claiming_es384, NOW) is None  # the key decides the algorithm, never the token
    assert tokens.verify(f"{b64({'alg': 'RS256', 'typ': 'JWT', 'kid': kid})}.{body}.{signature}", NOW) is None


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mangled_token_is_refused_never_raises(tokens, good, data):
    choice = data.draw(st.integers(0, 3))
    if choice == 0:
        token = data.draw(st.text(max_size=400))
    elif choice == 1:  # flip, cut or insert characters of a genuine token
        position = data.draw(st.integers(0, len(good) - 1))
        token = good[:position] + data.draw(st.text(min_size=0, max_size=3)) + good[position + 1:]
    elif choice == 2:  # a genuine signature under a forged header or payload
        head, body, signature = good.split(".")
        part = b64(data.draw(st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(), st.text(
            max_size=5), st.lists(st.integers(), max_size=2)), max_size=5)))
        token = ".".join(data.draw(st.sampled_from([(part, body, signature), (head, part, signature)])))
    else:
        token = ".".join(data.draw(st.lists(st.text(alphabet="AZaz09-_=+/", max_size=30), min_size=1, max_size=5)))
    if token == good:
        return
    assert tokens.verify(token, NOW) is None


def test_rotation_signs_with_the_new_key_and_keeps_the_old_one_until_its_tokens_expire(tmp_path):
    keys = SigningKeys(tmp_path / "jwt", "RS256", publish_for=930)
    tokens = JwtTokens(keys, issuer="i", audience="a")
    old_token = tokens.sign(claims(), NOW)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new, previous = keys.rotate(NOW.timestamp(), "ES384")
    assert previous.kid == old_kid and new.kid != old_kid
    new_token = tokens.sign(claims(), NOW)
    assert jwt.get_unverified_header(new_token) == {"alg": "ES384", "kid": new.kid, "typ": "at+jwt"}
    assert tokens.verify(old_token, NOW) is not None and tokens.verify(new_token, NOW) is not None
    assert {k["kid"] for k in keys.jwks(NOW.timestamp())["keys"]} == {old_kid, new.kid}
    later = NOW + timedelta(seconds=931)
    assert {k["kid"] for k in keys.jwks(later.timestamp())["keys"]} == {new.kid}
    keys.rotate(later.timestamp())  # the next rotation drops the expired key's file too
    assert not (tmp_path / "jwt" / f"{old_kid}.pem").exists()


def test_another_process_sees_a_rotation_at_once(tmp_path):
    server = SigningKeys(tmp_path / "jwt", "RS256")
    first = server.current(NOW.timestamp())
    cli = SigningKeys(tmp_path / "jwt", "RS256")
    new, _ = cli.rotate(NOW.timestamp())
    assert server.current(NOW.timestamp()).kid == new.kid != first.kid


def test_key_files_are_private_and_refused_when_readable_by_others(tmp_path):
    keys = SigningKeys(tmp_path / "jwt", "ES384")
    key = keys.current(NOW.timestamp())
    for path in (tmp_path / "jwt").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    os.chmod(key.path, 0o644)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        SigningKeys(tmp_path / "jwt", "ES384").current(NOW.timestamp())


def test_jwks_entries_are_public_jwks_with_rfc7638_kids(tmp_path):
    for algorithm in ALGORITHMS:
        keys = SigningKeys(tmp_path / algorithm, algorithm)
        keys.current(NOW.timestamp())
        (entry,) = keys.jwks(NOW.timestamp())["keys"]
        assert entry["alg"] == algorithm and entry["use"] == "sig" and "d" not in entry
        assert jwt.PyJWK(entry).key is not None
        assert_json_types(json.loads(json.dumps(entry)), algorithm)


def assert_json_types(jwk: dict, algorithm: str) -> None:
    """RFC 7517: key_ops is an array of strings (section 4.3), every other member a string (it was the Python
    repr "['verify']", which a JOSE library either rejects or reads as one unknown operation)."""
    assert jwk["key_ops"] == ["verify"], jwk
    members = {"kty", "use", "alg", "kid", "key_ops"} | ({"n", "e"} if algorithm == "RS256" else {"crv", "x", "y"})
    assert set(jwk) == members, jwk
    assert all(isinstance(jwk[m], str) and jwk[m] for m in members - {"key_ops"}), jwk


def test_an_unknown_algorithm_setting_is_refused(tmp_path):
    with pytest.raises(ValueError, match="RS256, ES384"):
        SigningKeys(tmp_path, "HS256")
