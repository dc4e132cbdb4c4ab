"""The ACME aggregates (domain/acme_eab_key, acme_account, acme_order, acme_authz) and rules: identifiers, the order
and authorization state machine, CSR names, the validation address rule."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import acme_account, acme_authz, acme_challenges, acme_eab_key, acme_networks, acme_order, acme_requests
from domain.acme_authz import ChallengeFailed, ChallengeValidated
from domain.acme_networks import parse_networks
from domain.acme_problems import AcmeProblem
from domain.errors import DomainError

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
LATER = (NOW + timedelta(days=1)).isoformat()


def dns(*names: str) -> list[dict]:
    return [{"type": "dns", "value": name} for name in names]


NO_WILDCARDS = "no wildcards here"


def test_identifiers_are_dns_names_within_the_patterns_lower_cased_and_sorted():
    assert acme_requests.check_identifiers(dns("B.example", "a.example."), ["*.example"],
                                           wildcard_problem=NO_WILDCARDS).dns == ["a.example", "b.example"]
    assert acme_requests.check_identifiers(dns("deep.x.example"), [],  # no patterns: tenant policy's
                                           wildcard_problem=NO_WILDCARDS) == (["deep.x.example"], [])


@pytest.mark.parametrize("identifiers, kind, field", [
    (dns("*.x.example"), "rejectedIdentifier", "identifiers[0].value"),  # wildcards refused (no dns-01, or policy)
    (dns("a.other"), "rejectedIdentifier", "identifiers[0].value"),
    (dns("a.example", "bad_name!.example"), "rejectedIdentifier", "identifiers[1].value"),
    ([{"type": "ip", "value": "10.0.0.1"}], "rejectedIdentifier", "identifiers[0].value"),  # no network listed
    ([{"type": "email", "value": "a@example"}], "unsupportedIdentifier", "identifiers[0].type"),
    ([], "malformed", "identifiers"),
    ("a.example", "malformed", "identifiers"),
    ([{"value": 3}], "malformed", "identifiers[0]"),
])
def test_identifier_refusals_name_the_identifier(identifiers, kind, field):
    with pytest.raises(AcmeProblem) as refused:
        acme_requests.check_identifiers(identifiers, [".example"], wildcard_problem=NO_WILDCARDS)
    assert refused.value.acme_type == kind and refused.value.field == field


def test_a_refused_wildcard_says_why():
    with pytest.raises(AcmeProblem) as refused:
        acme_requests.check_identifiers(dns("a.example", "*.x.example"), [], wildcard_problem=NO_WILDCARDS)
    assert refused.value.field == "identifiers[1].value" and NO_WILDCARDS in refused.value.detail


@pytest.mark.parametrize("name, patterns, allowed", [
    ("*.x.example", [], True),  # the tenant policy (at issuance) decides
    ("*.x.example", [".example"], True),  # any depth below: the wildcard's literal "*" label too
    ("*.x.example", [".x.example"], True),
    ("*.x.example", ["*.x.example"], True),  # one label below: "*" is that label
    ("*.x.example", ["a.x.example"], False),  # a plain name never allows a wildcard
    ("*.x.example", ["*.example"], False),  # two labels below
    ("*.example", [], False),  # a wildcard stands over two labels at least
    ("*", [], False),
    ("a.*.example", [], False),  # only the left-most label
    ("x*.example", [], False),  # a whole label
])
def test_an_allowed_wildcard_is_a_whole_left_most_label_within_the_keys_patterns(name, patterns, allowed):
    try:
        names = acme_requests.check_identifiers(dns(name), patterns, wildcard_problem=None).dns
    except AcmeProblem as refused:
        assert not allowed and refused.acme_type == "rejectedIdentifier", refused.detail
    else:
        assert allowed and names == [name]


def test_name_patterns_are_checked_when_a_key_is_made():
    assert acme_eab_key.check_allowed_names([" Node1.Example ", "*.example", ".example"]) == [
        "node1.example", "*.example", ".example"]
    with pytest.raises(DomainError) as refused:
        acme_eab_key.check_allowed_names(["ok.example", "not a name"])
    assert refused.value.field == "allowed_names[1]"


def _authz(status: str = "pending") -> acme_authz.Authorization:
    challenges = [acme_authz.Challenge(challenge_id="c", challenge_type=acme_challenges.HTTP_01, token="t"),
                  acme_authz.Challenge(challenge_id="d", challenge_type=acme_challenges.TLS_ALPN_01, token="u")]
    created = acme_authz.AuthorizationCreated(authz_id="a", order_id="o", account_id="acct", identifier="n.example",
                                              expires=LATER, challenges=challenges)
    return acme_authz.Authorization(created=created, challenge_status=status)


def test_the_challenge_state_machine():
    state = acme_authz.fold_authz([_authz().created])
    assert acme_authz.authz_status(state, NOW) == "pending"
    with pytest.raises(AcmeProblem) as unknown:
        acme_authz.decide_start_challenge(state, "nope", NOW)
    assert unknown.value.status == 404 and unknown.value.field == "challenge_id"
    started = acme_authz.decide_start_challenge(state, "d", NOW)
    assert [type(e) for e in started] == [acme_authz.ChallengeStarted]
    state = acme_authz.fold_authz(started, start=state)
    assert state.challenge_status == "processing" and state.started == "d"
    assert acme_authz.decide_start_challenge(state, "c", NOW) == []  # the first one started decides
    assert state.status_of("d") == "processing" and state.status_of("c") == "pending"
    assert acme_authz.decide_challenge_result(state, ChallengeValidated(challenge_id="c", address="10.0.0.1"),
                                              NOW) == []
    ok = ChallengeValidated(challenge_id="d", address="10.0.0.1")
    assert acme_authz.decide_challenge_result(state, ok, NOW) == [ok]
    state = acme_authz.fold_authz([ok], start=state)
    assert acme_authz.authz_status(state, NOW) == "valid"
    assert acme_authz.decide_challenge_result(state, ChallengeFailed(challenge_id="d", error_type="x", detail=""),
                                              NOW) == []
    assert acme_authz.authz_status(_authz(), NOW + timedelta(days=2)) == "expired"
    with pytest.raises(AcmeProblem):
        acme_authz.decide_start_challenge(_authz(), "c", NOW + timedelta(days=2))


def _processing() -> acme_authz.Authorization:
    state = acme_authz.fold_authz([_authz().created])
    return acme_authz.fold_authz(acme_authz.decide_start_challenge(state, "d", NOW), start=state)


def test_a_processing_challenge_expires_with_its_authorization_once_and_then_takes_no_result():
    state, expiry = _processing(), datetime.fromisoformat(LATER)
    assert acme_authz.decide_expire(state, expiry - timedelta(seconds=1)) == []  # not yet
    never_started = acme_authz.fold_authz([_authz().created])
    assert acme_authz.decide_expire(never_started, expiry) == []  # never started: nothing runs
    [expired] = acme_authz.decide_expire(state, expiry)
    assert isinstance(expired, acme_authz.AuthorizationExpired) and expired.challenge_id == "d"
    assert LATER in expired.detail and "tls-alpn-01" in expired.detail
    state = acme_authz.fold_authz([expired], start=state)
    assert acme_authz.authz_status(state, NOW) == "expired"  # recorded: expired, whatever the clock says
    assert state.status_of("d") == "invalid" and state.error.error_type == "serverInternal"
    assert acme_authz.decide_expire(state, expiry + timedelta(days=1)) == []  # once
    late = ChallengeValidated(challenge_id="d", address="10.0.0.1")
    assert acme_authz.decide_challenge_result(state, late, expiry + timedelta(days=1)) == []
    order = acme_order.Order(created=acme_order.OrderCreated(order_id="o", account_id="acct", identifiers=["n.example"],
                                                             authorization_ids=["a"], expires=LATER))
    assert acme_order.order_status(order, [state], NOW) == "invalid"


def test_a_result_that_comes_after_the_expiry_is_recorded_as_the_expiry():
    state, expiry = _processing(), datetime.fromisoformat(LATER)
    ok = ChallengeValidated(challenge_id="d", address="10.0.0.1")
    assert acme_authz.decide_challenge_result(state, ok, expiry - timedelta(seconds=1)) == [ok]
    [expired] = acme_authz.decide_challenge_result(state, ok, expiry)
    assert isinstance(expired, acme_authz.AuthorizationExpired)
    failed = ChallengeFailed(challenge_id="d", error_type="dns", detail="NXDOMAIN")
    assert isinstance(acme_authz.decide_challenge_result(state, failed, expiry)[0], acme_authz.AuthorizationExpired)


def test_order_status_follows_its_authorizations():
    order = acme_order.Order(created=acme_order.OrderCreated(order_id="o", account_id="acct", identifiers=["n.example"],
                                                             authorization_ids=["a", "b"], expires=LATER))
    assert acme_order.order_status(order, [_authz("valid"), _authz("processing")], NOW) == "pending"
    assert acme_order.order_status(order, [_authz("valid"), _authz("valid")], NOW) == "ready"
    assert acme_order.order_status(order, [_authz("valid"), _authz("invalid")], NOW) == "invalid"
    assert acme_order.order_status(order, [_authz("valid"), _authz("valid")], NOW + timedelta(days=2)) == "invalid"
    issued = acme_order.fold_order([acme_order.OrderIssued(certificate_id="c1", csr_sha256="00")], start=order)
    assert acme_order.order_status(issued, [], NOW) == "valid"
    assert acme_order.decide_issued(issued, acme_order.OrderIssued(certificate_id="c2", csr_sha256="00")) == []


def test_the_csr_must_name_exactly_the_order():
    acme_requests.check_csr_names(["a.example", "b.example"], ["B.example", "a.example"], None)
    acme_requests.check_csr_names(["a.example"], ["a.example"], "a.example")
    for sans, cn in ((["a.example"], None), (["a.example", "b.example", "c.example"], None),
                     (["a.example", "b.example"], "other.example")):
        with pytest.raises(AcmeProblem) as refused:
            acme_requests.check_csr_names(["a.example", "b.example"], sans, cn)
        assert refused.value.acme_type == "badCSR" and refused.value.field == "csr"


def test_an_eab_key_binds_one_account_once_and_not_after_revocation():
    created = acme_eab_key.EabKeyCreated(key_id="k", ca_id="ca", profile="p", allowed_names=[], description="",
                                         secret_ref="ref")
    state = acme_eab_key.fold_eab([created])
    bound = acme_eab_key.decide_bind_eab(state, "k", "acct1")
    state = acme_eab_key.fold_eab(bound, start=state)
    assert acme_eab_key.decide_bind_eab(state, "k", "acct1") == []  # a retry of the same account's creation
    with pytest.raises(AcmeProblem, match="already bound"):
        acme_eab_key.decide_bind_eab(state, "k", "acct2")
    revoked = acme_eab_key.fold_eab([created, acme_eab_key.EabKeyRevoked(reason="x")])
    with pytest.raises(AcmeProblem, match="revoked"):
        acme_eab_key.usable_eab(revoked, "k")


PRIVATE = parse_networks(("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))


@pytest.mark.parametrize("address, networks, allowed", [
    ("10.1.2.3", PRIVATE, True),
    ("fd00::1", PRIVATE, True),
    ("8.8.8.8", PRIVATE, False),
    ("127.0.0.1", PRIVATE, False),  # loopback only when listed
    ("127.0.0.1", parse_networks(["127.0.0.0/8"]), True),
    ("169.254.169.254", parse_networks(["0.0.0.0/0"]), False),  # cloud metadata: never, whatever is listed
    ("::ffff:169.254.169.254", parse_networks(["0.0.0.0/0", "::/0"]), False),
    ("fe80::1", parse_networks(["::/0"]), False),
    ("0.0.0.0", parse_networks(["0.0.0.0/0"]), False),
    ("224.0.0.1", parse_networks(["0.0.0.0/0"]), False),
    # Security review: a wide network does not list loopback, and an IPv6 address carrying an IPv4 one (NAT64,
    # 6to4, Teredo, IPv4-compatible) is judged by that IPv4 address too.
    ("127.0.0.1", parse_networks(["0.0.0.0/0"]), False),
    ("::1", parse_networks(["::/0"]), False),
    ("::1", parse_networks(["::1/128"]), True),
    ("::ffff:127.0.0.1", parse_networks(["0.0.0.0/0", "::/0"]), False),
    ("64:ff9b::a9fe:a9fe", parse_networks(["0.0.0.0/0", "::/0"]), False),
    ("64:ff9b::7f00:1", parse_networks(["0.0.0.0/0", "::/0"]), False),
    ("64:ff9b::a00:5", parse_networks(["10.0.0.0/8", "::/0"]), True),
    ("64:ff9b::a00:5", parse_networks(["::/0"]), False),  # its IPv4 address is outside the networks
    ("2002:a9fe:a9fe::1", parse_networks(["0.0.0.0/0", "::/0"]), False),
    ("::a9fe:a9fe", parse_networks(["0.0.0.0/0", "::/0"]), False),
    ("2001:0:4136:e378:8000:63bf:5601:5601", parse_networks(["0.0.0.0/0", "::/0"]), False),  # Teredo
    ("2a01:4f8::1", parse_networks(["::/0"]), True),
    # cloud metadata endpoints outside link-local: never, whatever is listed (security review)
    ("fd00:ec2::254", parse_networks(["fd00::/8"]), False),  # AWS IMDS over IPv6
    ("168.63.129.16", parse_networks(["0.0.0.0/0"]), False),  # Azure's wireserver
    ("::ffff:168.63.129.16", parse_networks(["0.0.0.0/0", "::/0"]), False),
    # IANA special-purpose blocks: refused even when everything is listed, like link-local
    ("100.64.0.1", parse_networks(["0.0.0.0/0"]), False),  # carrier-grade NAT (RFC 6598)
    ("100.127.255.254", parse_networks(["100.64.0.0/10"]), False),  # listing it explicitly does not help
    ("::ffff:100.64.0.1", parse_networks(["0.0.0.0/0", "::/0"]), False),
    ("64:ff9b::6440:1", parse_networks(["0.0.0.0/0", "::/0"]), False),  # NAT64 to 100.64.0.1
    ("192.0.0.9", parse_networks(["0.0.0.0/0"]), False),  # PCP anycast (IETF protocol assignments)
    ("192.0.0.170", parse_networks(["0.0.0.0/0"]), False),  # NAT64 discovery
    ("198.18.0.1", parse_networks(["0.0.0.0/0"]), False),  # benchmarking
    ("192.31.196.1", parse_networks(["0.0.0.0/0"]), False),  # AS112
    ("192.88.99.1", parse_networks(["0.0.0.0/0"]), False),  # 6to4 relay anycast
    ("192.0.2.1", parse_networks(["0.0.0.0/0"]), False),  # documentation
    ("240.0.0.1", parse_networks(["0.0.0.0/0"]), False),  # reserved
    ("2001:db8::1", parse_networks(["::/0"]), False),  # documentation
    ("2001:2::1", parse_networks(["::/0"]), False),  # benchmarking (2001::/23, IETF protocol assignments)
    ("64:ff9b:1::a00:1", parse_networks(["::/0", "0.0.0.0/0"]), False),  # local-use NAT64 (RFC 8215)
    ("fec0::1", parse_networks(["::/0"]), False),  # site-local
    ("192.0.1.1", parse_networks(["0.0.0.0/0"]), True),  # just outside 192.0.0.0/24
    ("100.128.0.1", parse_networks(["0.0.0.0/0"]), True),  # just outside 100.64.0.0/10
])
def test_validation_connects_only_into_the_listed_networks(address, networks, allowed):
    problem = acme_networks.validation_address_problem(ipaddress.ip_address(address), networks)
    assert (problem is None) == allowed, problem


SPECIAL = ["0.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24",
           "192.52.193.0/24", "192.88.99.0/24", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24",
           "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "fe80::/10", "ff00::/8", "2001:2::/48", "2001:db8::/32",
           "100::/64", "64:ff9b:1::/48", "2620:4f:8000::/48"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SPECIAL), st.integers(min_value=0), st.booleans())
def test_no_address_of_a_special_purpose_block_is_validated_whatever_is_listed(block, offset, mapped):
    network = ipaddress.ip_network(block)
    address = network[offset % network.num_addresses]
    if mapped and address.version == 4:  # the same address as IPv4-mapped IPv6
        address = ipaddress.IPv6Address(f"::ffff:{address}")
    everything = parse_networks(["0.0.0.0/0", "::/0", block])
    problem = acme_networks.validation_address_problem(address, everything)
    assert problem is not None and "never validated" in problem, (address, problem)


def test_a_bad_network_setting_names_the_setting():
    with pytest.raises(ValueError, match="CSM_ACME_VALIDATION_NETWORKS"):
        parse_networks(["10.0.0.0/8", "nonsense"])


def _account(thumbprint: str = "old") -> acme_account.Account:
    created = acme_account.AccountCreated(account_id=thumbprint, jwk={"kty": "OKP"}, contact=[], eab_key_id="k")
    return acme_account.fold_account([created])


def test_a_key_change_moves_the_account_to_the_new_key_and_keeps_its_id():
    state = _account()
    [changed] = acme_account.decide_change_key(state, "old", "new", {"kty": "EC"})
    after = acme_account.fold_account([changed], state)
    assert after.key_thumbprint == "new" and after.jwk == {"kty": "EC"} and after.created.account_id == "old"
    with pytest.raises(AcmeProblem) as refused:  # the old key is no longer the account's
        acme_account.decide_change_key(after, "old", "newer", {})
    assert refused.value.field == "payload.oldKey"
    with pytest.raises(AcmeProblem) as same:
        acme_account.decide_change_key(after, "new", "new", {})
    assert same.value.field == "payload.jwk"
    deactivated = acme_account.fold_account([acme_account.AccountDeactivated()], after)
    with pytest.raises(AcmeProblem) as gone:
        acme_account.decide_change_key(deactivated, "new", "newer", {})
    assert gone.value.acme_type == "unauthorized"


def test_a_key_is_claimed_by_one_account():
    assert acme_account.decide_claim_key(None, "a") == [acme_account.AccountKeyBound(account_id="a")]
    assert acme_account.decide_claim_key("a", "a") == []  # a retry
    with pytest.raises(acme_account.KeyInUse) as taken:
        acme_account.decide_claim_key("b", "a")
    assert taken.value.account_id == "b" and taken.value.status == 409
    assert acme_account.fold_key([acme_account.AccountKeyBound(account_id="a")]) == "a"
    assert acme_account.fold_key([]) is None


def _one_authz(*events) -> acme_authz.Authorization:
    challenge = acme_authz.Challenge(challenge_id="c1", challenge_type=acme_challenges.HTTP_01, token="t")
    created = acme_authz.AuthorizationCreated(authz_id="a", order_id="o", account_id="acc", identifier="n.example",
                                              expires=LATER, challenges=[challenge])
    return acme_authz.fold_authz([created, *events])


def test_deactivating_an_authorization():
    pending, valid = _one_authz(), _one_authz(acme_authz.ChallengeStarted(challenge_id="c1"),
                                              ChallengeValidated(challenge_id="c1", address="10.0.0.1"))
    invalid = _one_authz(acme_authz.ChallengeStarted(challenge_id="c1"),
                         ChallengeFailed(challenge_id="c1", error_type="connection", detail="x"))
    for state in (pending, valid):
        [done] = acme_authz.decide_deactivate_authz(state, NOW, "client")
        after = acme_authz.fold_authz([done], state)
        assert acme_authz.authz_status(after, NOW) == "deactivated"
        assert acme_authz.decide_deactivate_authz(after, NOW, "client") == []  # once
        with pytest.raises(AcmeProblem):
            acme_authz.decide_start_challenge(after, "c1", NOW)
    with pytest.raises(AcmeProblem) as refused:
        acme_authz.decide_deactivate_authz(invalid, NOW, "client")
    assert refused.value.field == "status"
    # an account's deactivation takes its pending authorizations only, and refuses nothing
    assert acme_authz.decide_deactivate_authz(valid, NOW, "account_deactivated") == []
    assert acme_authz.decide_deactivate_authz(invalid, NOW, "account_deactivated") == []
    processing = _one_authz(acme_authz.ChallengeStarted(challenge_id="c1"))
    [done] = acme_authz.decide_deactivate_authz(processing, NOW, "account_deactivated")
    after = acme_authz.fold_authz([done], processing)
    assert acme_authz.decide_challenge_result(after, ChallengeValidated(challenge_id="c1", address="x"), NOW) == []
    order = acme_order.fold_order([acme_order.OrderCreated(order_id="o", account_id="acc", identifiers=["n.example"],
                                                           authorization_ids=["a"], expires=LATER)])
    assert acme_order.order_status(order, [after], NOW) == "invalid"


def test_not_after_is_honoured_in_whole_days_within_the_maximum():
    assert acme_requests.check_validity(None, None, NOW, 397) is None
    asked = "2027-01-06T10:00:00+01:00"  # 29 days 23 hours away
    assert acme_requests.check_validity(None, asked, NOW, 397) == "2027-01-06T09:00:00Z"
    assert acme_requests.validity_days_until(datetime.fromisoformat(asked), NOW) == 29
    for not_before, not_after, field in ((NOW.isoformat(), None, "notBefore"), (None, "2027-01-06", "notAfter"),
                                         (None, "2027-01-06T10:00:00", "notAfter"), (None, 5, "notAfter"),
                                         (None, (NOW + timedelta(hours=20)).isoformat(), "notAfter"),
                                         (None, (NOW + timedelta(days=500)).isoformat(), "notAfter")):
        with pytest.raises(AcmeProblem) as refused:
            acme_requests.check_validity(not_before, not_after, NOW, 397)
        assert refused.value.field == field and refused.value.acme_type == "malformed"


@given(st.text(max_size=80) | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()))
@settings(max_examples=300)
def test_not_after_parsing_answers_or_refuses_cleanly(text):
    try:
        parsed = acme_requests.check_validity(None, text, NOW, 397)
    except AcmeProblem as refused:
        assert refused.field == "notAfter"
        return
    moment = datetime.fromisoformat(parsed)
    assert 1 <= acme_requests.validity_days_until(moment, NOW) <= 397
    assert moment <= datetime.fromisoformat(text)  # never later than asked (seconds are cut)
