"""The directory adapter's pure parts: filter escaping, role maps, CSM_LDAP_* settings, construction refusals."""

from __future__ import annotations

import ssl

import pytest

from infra.config import Settings
from infra.service_settings import LDAP_USER_FILTER, LdapSettings, parse_role_map
from infra.ldap import (
    LdapDirectory,
    escape_filter_value,
    normalise_dn,
    parse_endpoints,
    tls_context,
)


@pytest.mark.parametrize(("raw", "escaped"), [
    ("alice", "alice"),
    ("*", r"\2a"),
    ("*)(uid=*", r"\2a\29\28uid=\2a"),
    ("a\\b", r"a\5cb"),
    ("\\2a", r"\5c2a"),  # an escape sequence typed by the user stays literal
    ("nul\x00", r"nul\00"),
    ("jürgen", "jürgen"),  # UTF-8 is a valid assertion value (RFC 4515)
])
def test_filter_values_are_escaped_per_rfc_4515(raw, escaped):
    assert escape_filter_value(raw) == escaped


@pytest.mark.parametrize("raw", ["*)(|(objectClass=*", "x)(", "((()))**\\\\", "\x00*\x00"])
def test_escaped_values_contain_no_filter_syntax(raw):
    escaped = escape_filter_value(raw)
    assert not set(escaped) & {"(", ")", "*", "\x00"}
    assert escaped.count("\\") == sum(raw.count(c) for c in "\\*()\x00")


def test_role_map_in_both_notations():
    text = "cn=CSM Admins,ou=groups,dc=example,dc=org=platform-admin, auditor; auditors=auditor"
    assert parse_role_map(text) == {"cn=CSM Admins,ou=groups,dc=example,dc=org": ("platform-admin", "auditor"),
                                    "auditors": ("auditor",)}
    assert parse_role_map('{"cn=a,dc=x": "viewer", "ops": ["tenant-admin", "auditor"]}') == {
        "cn=a,dc=x": ("viewer",), "ops": ("tenant-admin", "auditor")}
    assert parse_role_map("  ") == {}


@pytest.mark.parametrize("text", ["admins", "=viewer", "admins=", '["admins"]', '{"admins": []}'])
def test_bad_role_maps_are_refused(text):
    with pytest.raises(ValueError, match="CSM_LDAP_ROLE_MAP"):
        parse_role_map(text)


def test_settings_from_the_environment(monkeypatch, tmp_path):
    for name, value in {"URL": "ldaps://dc1.example.org ldaps://dc2.example.org:3269", "STARTTLS": "false",
                        "CA_FILE": "/etc/ssl/ad-ca.pem", "BIND_DN": "cn=svc,dc=example,dc=org",
                        "BIND_PASSWORD_FILE": "/run/secrets/ldap", "USER_BASE": "dc=example,dc=org",
                        "USER_FILTER": "(sAMAccountName={username})", "GROUP_BASE": "ou=groups,dc=example,dc=org",
                        "DISABLED_FILTER": "(userAccountControl:1.2.840.113556.1.4.803:=2)",
                        "ROLE_MAP": "csm-admins=platform-admin", "TENANT": "acme", "TIMEOUT": "2.5"}.items():
        monkeypatch.setenv(f"CSM_LDAP_{name}", value)
    ldap = Settings.from_env(tmp_path).ldap
    assert ldap is not None
    assert ldap.url == "ldaps://dc1.example.org ldaps://dc2.example.org:3269"
    assert ldap.starttls is False and str(ldap.ca_file) == "/etc/ssl/ad-ca.pem"
    assert ldap.bind_dn == "cn=svc,dc=example,dc=org" and str(ldap.bind_password_file) == "/run/secrets/ldap"
    assert ldap.user_filter == "(sAMAccountName={username})" and ldap.group_filter == "(member={dn})"
    assert ldap.role_map == {"csm-admins": ("platform-admin",)}
    assert ldap.tenant == "acme" and ldap.timeout == 2.5


def test_no_url_no_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("CSM_LDAP_URL", raising=False)
    assert Settings.from_env(tmp_path).ldap is None
    monkeypatch.setenv("CSM_LDAP_URL", "ldap://x")
    monkeypatch.setenv("CSM_LDAP_STARTTLS", "yes")
    ldap = Settings.from_env(tmp_path).ldap
    assert ldap.starttls is True and ldap.user_filter == LDAP_USER_FILTER and ldap.group_base is None


def test_endpoints_default_ports_and_refusals():
    first, second = parse_endpoints("ldaps://dc1.example.org ldap://[::1]:1389", starttls=True)
    assert (first.host, first.port, first.implicit_tls) == ("dc1.example.org", 636, True)
    assert (second.host, second.port, second.implicit_tls) == ("::1", 1389, False)
    with pytest.raises(ValueError, match="in the clear"):
        parse_endpoints("ldap://dc1.example.org", starttls=False)
    for bad in ["http://dc1", "ldaps://", "dc1.example.org", ""]:
        with pytest.raises(ValueError):
            parse_endpoints(bad, starttls=True)


@pytest.mark.parametrize(("changes", "message"), [
    ({"bind_dn": "cn=svc,dc=x"}, "CSM_LDAP_BIND_PASSWORD_FILE"),
    ({"user_filter": "(uid=alice)"}, "{username}"),
    ({"group_base": "ou=groups,dc=x", "group_filter": "(objectClass=groupOfNames)"}, "CSM_LDAP_GROUP_FILTER"),
    ({"timeout": 0}, "CSM_LDAP_TIMEOUT"),
])
def test_misconfiguration_is_refused_at_construction(changes, message):
    with pytest.raises(ValueError, match=message):
        LdapDirectory(LdapSettings(url="ldaps://127.0.0.1", **changes))


def test_an_empty_service_password_file_is_refused(tmp_path):
    # An empty password would make the service bind an unauthenticated one, which many servers accept.
    empty = tmp_path / "password"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        LdapDirectory(LdapSettings(url="ldaps://127.0.0.1", bind_dn="cn=svc,dc=x", bind_password_file=empty))


def test_a_missing_ca_file_is_refused_at_construction(tmp_path):
    with pytest.raises(OSError):
        LdapDirectory(LdapSettings(url="ldaps://127.0.0.1", ca_file=tmp_path / "missing.pem"))


def test_tls_context_verifies_and_needs_tls_1_2():
    context = tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_dn_normalisation_ignores_case_and_spaces():
    assert normalise_dn("CN=CSM Admins, OU=Groups,DC=Example,DC=org") == "cn=csm admins,ou=groups,dc=example,dc=org"
    assert normalise_dn("cn=a\\,b,dc=x") == normalise_dn("CN=A\\,B, DC=X")


def test_a_service_password_file_others_can_read_is_reported(tmp_path, caplog):
    loose = tmp_path / "password"
    loose.write_text("s3cret\n")
    loose.chmod(0o644)
    LdapDirectory(LdapSettings(url="ldaps://127.0.0.1", bind_dn="cn=svc,dc=x", bind_password_file=loose)).close()
    assert "chmod 600" in caplog.text and "s3cret" not in caplog.text
