"""Directory sign-in against a real slapd: TLS only, groups to roles, indistinguishable refusals, outages."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time

import pytest
from ldap_fixture import BASE, PASSWORDS, READER_DN, Slapd, free_port, slapd  # noqa: F401 - slapd is a fixture

from domain.errors import DirectoryUnavailable
from infra.service_settings import LdapSettings
from infra.ldap import LdapDirectory

ADMINS = f"cn=csm-admins,ou=groups,{BASE}"
AUDITORS = f"cn=auditors,ou=groups,{BASE}"


def settings_for(server: Slapd, **changes) -> LdapSettings:
    """OpenLDAP style: inetOrgPerson users, groupOfNames searched by member, a disabled marker attribute."""
    settings = LdapSettings(
        url=server.ldaps_url, ca_file=server.ca_file, bind_dn=READER_DN,
        bind_password_file=server.reader_password_file, user_base=f"ou=people,{BASE}",
        group_base=f"ou=groups,{BASE}", disabled_filter="(employeeType=disabled)",
        role_map={ADMINS: ("platform-admin",), "Auditors": ("auditor", "viewer")}, tenant="acme", timeout=3)
    return dataclasses.replace(settings, **changes)


def active_directory_settings(server: Slapd, **changes) -> LdapSettings:
    """AD style: sAMAccountName, the userAccountControl ACCOUNTDISABLE bit, memberOf on the user."""
    ad = {"user_base": f"ou=ad,{BASE}", "user_filter": "(&(objectClass=user)(sAMAccountName={username}))",
          "disabled_filter": "(userAccountControl:1.2.840.113556.1.4.803:=2)", "group_base": None}
    return settings_for(server, **(ad | changes))


@pytest.fixture
def directory(slapd):  # noqa: F811 - pytest fixture injection
    adapter = LdapDirectory(settings_for(slapd))
    yield adapter
    adapter.close()


async def sign_in(settings: LdapSettings, username: str, password: str):
    adapter = LdapDirectory(settings)
    try:
        return await adapter.authenticate(username, password)
    finally:
        adapter.close()


async def test_good_login_over_ldaps_maps_groups_to_roles(directory):
    identity = await directory.authenticate("alice", PASSWORDS["alice"])
    assert identity is not None
    assert identity.username == "alice"
    assert identity.dn == f"uid=alice,ou=people,{BASE}"
    assert identity.display_name == "Alice Admin"
    assert identity.email == "alice@example.org"
    assert identity.groups == (AUDITORS, ADMINS)
    # One group mapped by DN, one by CN (case-insensitively), the roles merged and sorted.
    assert identity.roles == ("auditor", "platform-admin", "viewer")
    assert identity.tenant_id == "acme"


async def test_starttls_on_the_plain_port(slapd):  # noqa: F811
    # The plain listener refuses everything but StartTLS (security tls=1), so success proves the bind was encrypted.
    identity = await sign_in(settings_for(slapd, url=slapd.ldap_url, starttls=True), "bob", PASSWORDS["bob"])
    assert identity is not None and identity.roles == ("auditor", "viewer")


async def test_username_comes_back_as_the_directory_spells_it(directory):
    identity = await directory.authenticate("ALICE", PASSWORDS["alice"])
    assert identity is not None and identity.username == "alice"


async def test_a_user_in_no_mapped_group_has_no_roles(directory):
    identity = await directory.authenticate("carol", PASSWORDS["carol"])
    assert identity is not None
    assert identity.groups == (f"cn=unmapped,ou=groups,{BASE}",)
    assert identity.roles == ()
    assert identity.email is None


@pytest.mark.parametrize(("username", "password"), [
    ("alice", "wrong-password"),
    ("alice", PASSWORDS["bob"]),
    ("nobody", "whatever-1"),
    ("dave", PASSWORDS["dave"]),  # disabled: the right password does not help
], ids=["wrong-password", "another-users-password", "unknown-user", "disabled"])
async def test_refusals_are_none_and_never_log_the_password(directory, caplog, username, password):
    caplog.set_level(logging.DEBUG)
    assert await directory.authenticate(username, password) is None
    assert password not in caplog.text
    assert "refused" in caplog.text


@pytest.mark.parametrize("username", ["*)(uid=*", "*", "al*", "alice)(uid=*", "*)(|(uid=*", "alice)(|(objectClass=*",
                                      "\\2a", "alice\x00", "(uid=alice)"])
async def test_filter_metacharacters_match_no_one(directory, username):
    assert await directory.authenticate(username, PASSWORDS["alice"]) is None


async def test_a_name_made_of_metacharacters_matches_exactly_its_owner(directory):
    identity = await directory.authenticate("gr*ce(ops)", PASSWORDS["gr*ce(ops)"])
    assert identity is not None and identity.username == "gr*ce(ops)"
    assert await directory.authenticate("gr*", PASSWORDS["gr*ce(ops)"]) is None


async def test_active_directory_style_filters_and_member_of(slapd):  # noqa: F811
    settings = active_directory_settings(slapd)
    identity = await sign_in(settings, "erin", PASSWORDS["erin"])
    assert identity is not None
    assert identity.username == "erin" and identity.dn == f"cn=Erin AD,ou=ad,{BASE}"
    assert identity.groups == (ADMINS,) and identity.roles == ("platform-admin",)
    # userAccountControl 514 = NORMAL_ACCOUNT | ACCOUNTDISABLE
    assert await sign_in(settings, "frank", PASSWORDS["frank"]) is None


async def test_member_of_can_be_chosen_explicitly(slapd):  # noqa: F811
    identity = await sign_in(active_directory_settings(slapd, group_base=f"ou=groups,{BASE}", group_filter="memberOf"),
                             "erin", PASSWORDS["erin"])
    assert identity is not None and identity.groups == (ADMINS,)


async def test_empty_credentials_are_refused_before_any_connection():
    # Nothing listens on this port: a None (not DirectoryUnavailable) shows no connection was tried.
    settings = LdapSettings(url=f"ldaps://127.0.0.1:{free_port('127.0.0.1')}", timeout=1)
    assert await sign_in(settings, "alice", "") is None
    assert await sign_in(settings, "", "secret") is None
    assert await sign_in(settings, "a" * 300, "secret") is None


async def test_server_down_is_unavailable(slapd):  # noqa: F811
    with pytest.raises(DirectoryUnavailable) as caught:
        await sign_in(settings_for(slapd, url=f"ldaps://127.0.0.1:{free_port('127.0.0.1')}"), "alice",
                      PASSWORDS["alice"])
    assert (caught.value.status, caught.value.field) == (503, "directory")
    assert "127.0.0.1" not in caught.value.detail  # details go to the log, not to whoever asked


async def test_the_next_url_is_tried_when_the_first_is_down(slapd):  # noqa: F811
    urls = f"ldaps://127.0.0.1:{free_port('127.0.0.1')} {slapd.ldaps_url}"
    identity = await sign_in(settings_for(slapd, url=urls), "alice", PASSWORDS["alice"])
    assert identity is not None


@pytest.mark.parametrize("variant", ["ldaps", "starttls"])
async def test_untrusted_server_certificate_is_unavailable(slapd, variant):  # noqa: F811
    changes = {"url": slapd.ldap_url, "starttls": True} if variant == "starttls" else {}
    with pytest.raises(DirectoryUnavailable):
        await sign_in(settings_for(slapd, ca_file=slapd.other_ca_file, **changes), "alice", PASSWORDS["alice"])


async def test_system_trust_store_does_not_trust_the_test_ca(slapd):  # noqa: F811
    with pytest.raises(DirectoryUnavailable):
        await sign_in(settings_for(slapd, ca_file=None), "alice", PASSWORDS["alice"])


async def test_certificate_for_another_host_name_is_unavailable(slapd):  # noqa: F811
    if slapd.mismatch_url is None:
        pytest.skip("127.0.0.2 is not available on this machine")
    with pytest.raises(DirectoryUnavailable):
        await sign_in(settings_for(slapd, url=slapd.mismatch_url), "alice", PASSWORDS["alice"])


async def test_wrong_service_account_password_is_unavailable(slapd, tmp_path):  # noqa: F811
    wrong = tmp_path / "reader-password"
    wrong.write_text("not-the-reader-password\n")
    with pytest.raises(DirectoryUnavailable):
        await sign_in(settings_for(slapd, bind_password_file=wrong), "alice", PASSWORDS["alice"])


async def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the TCP handshake; nothing ever speaks TLS
        settings = LdapSettings(url=f"ldaps://127.0.0.1:{silent.getsockname()[1]}", timeout=1)
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            await sign_in(settings, "alice", "secret")
        assert time.monotonic() - started < 10


def test_plain_ldap_without_starttls_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="in the clear"):
        LdapDirectory(LdapSettings(url="ldap://127.0.0.1:389"))
    with pytest.raises(ValueError, match="in the clear"):
        LdapDirectory(LdapSettings(url="ldaps://127.0.0.1:636 ldap://127.0.0.1:389"))


async def test_concurrent_sign_ins(directory):
    users = ["alice", "bob", "carol", "alice", "bob", "carol", "nobody", "dave"]
    results = await asyncio.gather(*(directory.authenticate(user, PASSWORDS.get(user, "x")) for user in users))
    assert [result.username if result else None for result in results] == \
        ["alice", "bob", "carol", "alice", "bob", "carol", None, None]
