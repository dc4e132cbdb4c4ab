"""IP address identifiers (RFC 8738): their one text form, the key's networks, the challenges offered, the reverse
name tls-alpn-01 sends, and the CSR's addresses at finalize."""

from __future__ import annotations

import pytest

from domain import acme_challenges, acme_eab_key, acme_requests
from domain.acme_problems import AcmeProblem
from domain.errors import DomainError


def ip(*values: str) -> list[dict]:
    return [{"type": "ip", "value": v} for v in values]


@pytest.mark.parametrize("text, normal", [
    ("10.0.0.5", "10.0.0.5"),
    ("FD00:0:0:0:0:0:0:5", "fd00::5"),  # RFC 5952: compressed, lower case
    ("fd00:0000::0005", "fd00::5"),
    ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  # a single zero field is not compressed
    ("::1", "::1"),
])
def test_an_address_has_one_text_form(text, normal):
    assert acme_requests.ip_identifier(text) == normal


@pytest.mark.parametrize("text, says", [
    ("fe80::1%eth0", "zone id"),
    ("::ffff:10.0.0.5", "IPv4-mapped"),
    ("::FFFF:a00:5", "IPv4-mapped"),
    ("10.0.0.0/24", "not an IPv4 or IPv6 address"),
    ("010.0.0.5", "not an IPv4 or IPv6 address"),  # leading zeros: octal to some parsers
    (" 10.0.0.5", "not an IPv4 or IPv6 address"),
    ("node1.example", "not an IPv4 or IPv6 address"),
    ("10.5", "not an IPv4 or IPv6 address"),
    ("", "not an IPv4 or IPv6 address"),
])
def test_what_is_not_one_address_is_refused_saying_why(text, says):
    with pytest.raises(ValueError, match=says):
        acme_requests.ip_identifier(text)
    with pytest.raises(AcmeProblem) as refused:
        acme_requests.check_identifiers(ip(text), [], wildcard_problem=None)
    assert refused.value.acme_type == "rejectedIdentifier" and refused.value.field == "identifiers[0].value"


@pytest.mark.parametrize("value", ["127.0.0.1", "::1", "FD00::5"])
def test_an_address_sent_as_a_dns_identifier_is_refused_naming_the_ip_type(value):
    """What a client without RFC 8738 sends (Debian's lego 4.9.1 orders ``--domains 127.0.0.1`` so)."""
    with pytest.raises(AcmeProblem) as refused:
        acme_requests.check_identifiers([{"type": "dns", "value": value}], [], wildcard_problem=None)
    assert refused.value.acme_type == "rejectedIdentifier"
    assert "order it as an identifier of type ip (RFC 8738)" in refused.value.detail


def test_an_order_splits_names_and_addresses_each_normalised_sorted_and_once():
    found = acme_requests.check_identifiers(
        [*ip("fd00::0:5", "10.0.0.10", "10.0.0.9", "FD00::5"), {"type": "dns", "value": "Node1.example"}], [],
        wildcard_problem=None)
    assert found == (["node1.example"], ["10.0.0.9", "10.0.0.10", "fd00::5"])  # by value, IPv4 first


@pytest.mark.parametrize("address, why", [("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
                                          ("255.255.255.255", "broadcast"), ("192.0.2.1", "192.0.2.0/24"),
                                          ("ff02::1", "multicast"), ("::", "unspecified")])
def test_an_address_that_names_no_host_is_refused_as_api_issuance_refuses_it(address, why):
    with pytest.raises(AcmeProblem) as refused:
        acme_requests.check_identifiers(ip(address), [], wildcard_problem=None)
    assert why in refused.value.detail


def test_a_key_with_patterns_orders_only_addresses_inside_its_networks():
    patterns = acme_eab_key.check_allowed_names([".example", "10.0.0.0/24", "fd00::5"])
    assert patterns == [".example", "10.0.0.0/24", "fd00::5/128"]
    assert acme_requests.check_identifiers(ip("10.0.0.7", "fd00::5"), patterns, wildcard_problem=None).ip == [
        "10.0.0.7", "fd00::5"]
    for outside in ("10.0.1.7", "fd00::6"):
        with pytest.raises(AcmeProblem) as refused:
            acme_requests.check_identifiers(ip(outside), patterns, wildcard_problem=None)
        assert "outside the networks this account may request" in refused.value.detail
    with pytest.raises(AcmeProblem) as refused:  # networks are not name patterns: a name is still matched by names
        acme_requests.check_identifiers([{"type": "dns", "value": "a.other"}], ["10.0.0.0/24"], wildcard_problem=None)
    assert "(none)" in refused.value.detail
    with pytest.raises(AcmeProblem):  # names only: no address at all
        acme_requests.check_identifiers(ip("10.0.0.7"), [".example"], wildcard_problem=None)


@pytest.mark.parametrize("pattern", ["10.0.0.1/24", "10.0.0.0/33", "fd00::/129", "10.0.0", "1.2.3.4.5"])
def test_a_keys_network_must_be_one(pattern):
    with pytest.raises(DomainError) as refused:
        acme_eab_key.check_allowed_names([pattern])
    assert refused.value.field == "allowed_names[0]"


def test_an_address_is_offered_http_01_and_tls_alpn_01_never_dns_01():
    assert acme_challenges.offered("10.0.0.5", dns01=True, ip=True) == ("http-01", "tls-alpn-01")
    assert acme_challenges.offered("10.0.0.5", dns01=False, ip=True) == ("http-01", "tls-alpn-01")


def test_tls_alpn_01_names_the_reverse_dns_name_of_the_address():
    assert acme_challenges.reverse_name("10.0.0.5") == "5.0.0.10.in-addr.arpa"
    assert acme_challenges.reverse_name("2001:db8::1") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")


def test_the_csrs_addresses_are_exactly_the_orders():
    acme_requests.check_csr_names([], [], None, order_ips=["10.0.0.5", "fd00::5"], csr_ips=["fd00:0::5", "10.0.0.5"])
    acme_requests.check_csr_names(["a.example"], ["a.example"], "10.0.0.5", order_ips=["10.0.0.5"],
                                  csr_ips=["10.0.0.5"])
    for names, csr_dns, cn, csr_ips in (
            ([], [], None, []),  # the order's address missing
            ([], [], None, ["10.0.0.5", "10.0.0.6"]),  # one more
            ([], [], None, ["::ffff:10.0.0.5"]),  # 16 bytes in the certificate, not the order's 4
            ([], [], "10.0.0.6", ["10.0.0.5"]),  # a CN that is another address
            ([], ["10.0.0.5"], None, ["10.0.0.5"]),  # the address as a DNS name
            (["a.example"], [], None, ["10.0.0.5"])):  # the order's name missing
        with pytest.raises(AcmeProblem) as refused:
            acme_requests.check_csr_names(names, csr_dns, cn, order_ips=["10.0.0.5"], csr_ips=csr_ips)
        assert refused.value.acme_type == "badCSR"


def test_the_subject_is_the_csrs_cn_in_the_orders_form_else_the_first_identifier():
    assert acme_requests.subject_name("FD00:0::5", [], ["fd00::5"]) == "fd00::5"
    assert acme_requests.subject_name(None, [], ["10.0.0.5", "fd00::5"]) == "10.0.0.5"
    assert acme_requests.subject_name(None, ["a.example"], ["10.0.0.5"]) == "a.example"
    assert acme_requests.subject_name("A.example.", ["a.example"], []) == "a.example"
