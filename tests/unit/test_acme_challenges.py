"""domain/acme_challenges.py: which challenges a name is offered, the dns-01 record name, digest and TXT matching;
the tenant policy's wildcard rule (domain/tenant_policy.py); the resolvers setting (infra/acme/dns01.py)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import acme_challenges as ch
from domain import tenant_policy
from domain.certspec import SubjectAltNames
from domain.tenant_policy import TenantPolicy
from infra.acme.dns01 import parse_resolvers
from infra.bootstrap import initialise
from infra.config import Settings

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
tokens = st.text(B64URL, min_size=16, max_size=64)
key_authorizations = st.builds(lambda t, k: f"{t}.{k}", tokens, st.text(B64URL, min_size=43, max_size=43))


def test_a_wildcard_is_offered_dns_01_alone_and_a_name_dns_01_only_with_resolvers():
    assert ch.offered("*.db.example", dns01=True) == ("dns-01",)
    assert ch.offered("node1.db.example", dns01=True) == ("http-01", "tls-alpn-01", "dns-01")
    assert ch.offered("node1.db.example", dns01=False) == ("http-01", "tls-alpn-01")


def test_the_record_is_under_the_base_name():
    assert ch.record_name("*.db.example") == "_acme-challenge.db.example."
    assert ch.record_name("node1.db.example") == "_acme-challenge.node1.db.example."
    assert ch.base_name("*.db.example") == "db.example" and ch.base_name("db.example") == "db.example"


@settings(max_examples=200)
@given(key_authorizations)
def test_the_digest_is_the_unpadded_base64url_sha256_of_the_key_authorization(key_authorization):
    value = ch.digest(key_authorization)
    assert len(value) == ch.DIGEST_LENGTH and set(value) <= set(B64URL)
    assert base64.urlsafe_b64decode(value + "=") == hashlib.sha256(key_authorization.encode()).digest()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@settings(max_examples=10, deadline=None)
@given(key_authorizations)
def test_the_digest_agrees_with_openssl(key_authorization):
    raw = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=key_authorization.encode(),
                         capture_output=True, check=True).stdout
    assert ch.digest(key_authorization) == base64.urlsafe_b64encode(raw).decode().rstrip("=")


@settings(max_examples=200)
@given(key_authorizations, st.lists(st.binary(max_size=80), max_size=5), st.data())
def test_a_txt_record_matches_only_when_it_is_exactly_the_digest(key_authorization, others, data):
    expected = ch.digest(key_authorization)
    others = [v for v in others if v != expected.encode()]
    assert not ch.txt_matches(others, expected)
    where = data.draw(st.integers(0, len(others)))
    assert ch.txt_matches([*others[:where], expected.encode(), *others[where:]], expected)


@pytest.mark.parametrize("mangle", [
    lambda v: v + "=",  # padded
    lambda v: v + " ",  # trailing space
    lambda v: " " + v,
    lambda v: f'"{v}"',  # quoted, as a zone file writes it
    lambda v: v.upper() if v.upper() != v else v.lower(),  # another case
    lambda v: v[:-1],  # a character short
    lambda v: v.replace("-", "+").replace("_", "/") if ("-" in v or "_" in v) else v[1:],  # standard base64
    lambda v: v + "\n",
])
@settings(max_examples=30)
@given(key_authorizations)
def test_a_nearly_right_txt_record_does_not_match(mangle, key_authorization):
    expected = ch.digest(key_authorization)
    assert not ch.txt_matches([mangle(expected).encode()], expected)


def test_the_strings_of_one_record_are_joined_by_the_caller_not_matched_apart():
    expected = ch.digest("token.thumbprint")
    assert not ch.txt_matches([expected[:20].encode(), expected[20:].encode()], expected)
    assert ch.txt_matches([(expected[:20] + expected[20:]).encode()], expected)


@pytest.mark.parametrize("allow, acme, allowed", [
    (None, False, True), (None, True, False),  # the default: API, CLI and UI as before; ACME orders refused
    (True, False, True), (True, True, True),
    (False, False, False), (False, True, False),
])
def test_the_tenant_policy_decides_wildcards(allow, acme, allowed):
    assert tenant_policy.wildcards_allowed(TenantPolicy(allow_wildcards=allow), acme=acme) is allowed


def test_a_policy_that_refuses_wildcards_names_each_one():
    sans = SubjectAltNames(dns=("node1.db.example", "*.db.example"))
    refused = tenant_policy.tenant_name_violations(sans, "*.db.example", TenantPolicy(allow_wildcards=False))
    assert [(v.field, v.rule) for v in refused] == [("sans.dns[1]", "wildcard_not_allowed"),
                                                    ("subject.common_name", "wildcard_not_allowed")]
    assert tenant_policy.tenant_name_violations(sans, None, TenantPolicy()) == []
    # allowed, but still only within the allowed names, where the "*" is a literal label
    allowed = TenantPolicy(allow_wildcards=True, allowed_dns=(".db.example",))
    assert tenant_policy.tenant_name_violations(sans, None, allowed) == []
    narrow = TenantPolicy(allow_wildcards=True, allowed_dns=("node1.db.example",))
    assert [v.rule for v in tenant_policy.tenant_name_violations(sans, None, narrow)] == ["san_not_allowed"]


def test_resolvers_are_addresses_with_an_optional_port():
    assert parse_resolvers(["127.0.0.1:5353", "10.0.0.2", "[::1]:53", "fd00::1"]) == (
        ("127.0.0.1", 5353), ("10.0.0.2", 53), ("::1", 53), ("fd00::1", 53))
    for bad in ("ns.example:53", "127.0.0.1:0", "127.0.0.1:65536", "[::1", "[::1]x", "1.2.3.4:x"):
        with pytest.raises(ValueError, match="CSM_ACME_DNS_RESOLVERS"):
            parse_resolvers([bad])


def test_the_resolvers_setting_is_read_and_a_bad_one_stops_startup(monkeypatch, tmp_path):
    monkeypatch.setenv("CSM_ACME_DNS_RESOLVERS", " 127.0.0.1:5353, [::1]:53 ,")
    assert Settings.from_env().acme_dns_resolvers == ("127.0.0.1:5353", "[::1]:53")
    monkeypatch.delenv("CSM_ACME_DNS_RESOLVERS")
    assert Settings.from_env().acme_dns_resolvers == ()  # unset: dns-01 is not offered
    with pytest.raises(ValueError, match="CSM_ACME_DNS_RESOLVERS: 'ns.example'"):
        initialise(Settings(data_dir=tmp_path / "data", acme_dns_resolvers=("ns.example",)))
    runtime = initialise(Settings(data_dir=tmp_path / "ok", acme_dns_resolvers=("127.0.0.1:5353",)))
    try:
        assert runtime.services.acme_dns01
    finally:
        runtime.close()
