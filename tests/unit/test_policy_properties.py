"""Properties of the policy engine: arbitrary input never crashes it, and name matching agrees with references."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import ipaddress

import pytest
from hypothesis import given, strategies as st

from domain import names
from domain.algorithms import ALGORITHMS
from domain.certspec import DistinguishedName, NameConstraints, SubjectAltNames
from domain.key_rules import check_key
from domain.policy import IssuerFacts, check_certificate
from domain.profile import BUILTIN_PROFILES
from domain.spec_builders import MAX_SERIAL, leaf_spec, serial_from_random
from domain.tenant_policy import TenantPolicy
from domain.violations import PolicyViolation

NOW = datetime(2030, 1, 1, tzinfo=UTC)
NODE = BUILTIN_PROFILES["cassandra-node"]
AVAILABLE = frozenset(ALGORITHMS)
RULES = {"weak_hash", "weak_key", "algorithm_unknown", "algorithm_unavailable", "algorithm_not_allowed",
         "validity_too_long", "validity_beyond_issuer", "validity_invalid", "issuer_disabled", "issuer_path_length",
         "san_required", "san_type_not_allowed", "san_not_allowed", "san_invalid", "name_constraint_violation",
         "common_name_required", "common_name_invalid", "subject_invalid", "serial_invalid", "key_usage_invalid",
         "path_length_invalid", "name_constraints_invalid", "ca_name_constraints_widen", "san_duplicate",
         "san_ip_not_a_host"}

# A small label pool makes matches likely; FRESH is in no generated name, so it stands for "any other label".
POOL = ["a", "b", "db", "node1", "xn--bcher-kva"]
FRESH = "zz"
plain_names = st.lists(st.sampled_from(POOL), min_size=1, max_size=4).map(".".join)
wildcards = st.lists(st.sampled_from(POOL), min_size=2, max_size=3).map(lambda ls: "*." + ".".join(ls))
dns_names = plain_names | wildcards | plain_names.map(str.upper)
patterns = plain_names | plain_names.map(lambda n: "*." + n) | plain_names.map(lambda n: "." + n)
subtrees = plain_names | plain_names.map(lambda n: "." + n)
junk = st.text(max_size=40) | st.text(alphabet="ab.*-_1 \x00é", max_size=20)


def issuer(nc: NameConstraints) -> IssuerFacts:
    return IssuerFacts(ca_id="ica", algorithm="ecdsa-p384", not_before=NOW - timedelta(days=1),
                       not_after=NOW + timedelta(days=900), path_length=None, name_constraints=nc, status="active")


def run(sans: SubjectAltNames, *, tenant=TenantPolicy(), nc=NameConstraints(), cn="node1", algorithm="ecdsa-p256"):
    spec = leaf_spec(NODE, subject=DistinguishedName(common_name=cn), sans=sans, validity_days=None,
                     subject_algorithm=algorithm, issuer_algorithm="ecdsa-p384", serial=1, now=NOW,
                     crl_urls=(), ocsp_urls=(), ca_issuer_urls=())
    return check_certificate(spec, profile=NODE, tenant_policy=tenant, issuer=issuer(nc), subject_algorithm=algorithm,
                             key_bits=None, csr_signature_hash=None, available=AVAILABLE, now=NOW)


def fields_breaking(violations, rule: str) -> set[str]:
    return {v.field for v in violations if v.rule == rule}


# ---- references, written from the definitions over label lists ----------------------------------------------

def ref_pattern(name: str, pattern: str) -> bool:
    labels = name.lower().split(".")
    if pattern.startswith("."):
        base = pattern[1:].split(".")
        return len(labels) > len(base) and labels[-len(base):] == base
    if pattern.startswith("*."):
        return labels[1:] == pattern[2:].split(".")
    return labels == pattern.split(".")


def ref_in_subtree(labels: list[str], tree: str) -> bool:
    """RFC 5280: "x.y" is x.y and every name below it; ".x.y" only the names below it."""
    strict, base = tree.startswith("."), tree.lstrip(".").split(".")
    return len(labels) >= len(base) + strict and labels[-len(base):] == base


def expansions(name: str) -> list[list[str]]:
    """The concrete names a SAN stands for: a wildcard's one label is any of POOL or FRESH."""
    labels = name.lower().split(".")
    return [[x, *labels[1:]] for x in (*POOL, FRESH)] if labels[0] == "*" else [labels]


# ---- properties ----------------------------------------------------------------------------------------------

@given(junk, junk)
def test_matchers_never_crash_on_arbitrary_text(name, pattern):
    for fn in (names.matches_pattern, names.dns_within, names.dns_touches, names.subtree_within):
        assert fn(name, pattern) in (True, False)
    for fn in (names.dns_name_problem, names.pattern_problem, names.ip_problem, names.email_problem, names.uri_problem):
        assert fn(name) is None or isinstance(fn(name), str)


@given(st.lists(junk, max_size=4), st.lists(junk, max_size=3), st.lists(junk, max_size=3), st.lists(junk, max_size=3),
       junk, st.lists(junk, max_size=3), st.lists(junk, max_size=3), junk)
def test_check_certificate_never_crashes_and_only_names_known_rules(dns, ips, emails, uris, cn, tenant_dns, trees,
                                                                    algorithm):
    sans = SubjectAltNames(dns=tuple(dns), ip=tuple(ips), email=tuple(emails), uri=tuple(uris))
    tenant = TenantPolicy(allowed_dns=tuple(tenant_dns), allowed_ip_networks=tuple(trees),
                          allowed_email_domains=tuple(tenant_dns))
    nc = NameConstraints(permitted_dns=tuple(trees), excluded_dns=tuple(tenant_dns), permitted_ip=tuple(trees),
                         excluded_ip=tuple(ips))
    for violation in run(sans, tenant=tenant, nc=nc, cn=cn, algorithm=algorithm):
        assert violation.rule in RULES and violation.field and violation.message


@given(st.lists(dns_names, min_size=1, max_size=5), st.lists(patterns, min_size=1, max_size=3))
def test_san_not_allowed_agrees_with_the_reference(dns, allowed):
    violations = run(SubjectAltNames(dns=tuple(dns)), tenant=TenantPolicy(allowed_dns=tuple(allowed)))
    expected = {f"sans.dns[{i}]" for i, name in enumerate(dns) if not any(ref_pattern(name, p) for p in allowed)}
    assert fields_breaking(violations, "san_not_allowed") == expected
    assert fields_breaking(violations, "san_invalid") == set()


def near(dns: list[str]) -> st.SearchStrategy[str]:
    """Subtrees built from the names' own suffixes, one label more or less, so that they often meet."""
    suffixes = {".".join(labels[i:]) for name in dns for labels in [name.lower().split(".")]
                for i in range(1, len(labels))} | {name.lower() for name in dns if not name.startswith("*")}
    bases = st.sampled_from(sorted(suffixes)) if suffixes else plain_names
    bases = bases | st.tuples(st.sampled_from(POOL), bases).map(".".join) | plain_names
    return bases | bases.map(lambda b: "." + b)


@given(st.lists(dns_names, min_size=1, max_size=5), st.data())
def test_name_constraints_agree_with_rfc5280(dns, data):
    permitted = data.draw(st.lists(near(dns), max_size=3))
    excluded = data.draw(st.lists(near(dns), max_size=3))
    violations = run(SubjectAltNames(dns=tuple(dns)),
                     nc=NameConstraints(permitted_dns=tuple(permitted), excluded_dns=tuple(excluded)))
    expected = set()
    for i, name in enumerate(dns):
        names_ = expansions(name)
        outside = permitted and not all(any(ref_in_subtree(n, t) for t in permitted) for n in names_)
        if outside or any(ref_in_subtree(n, t) for n in names_ for t in excluded):
            expected.add(f"sans.dns[{i}]")
    assert fields_breaking(violations, "name_constraint_violation") == expected


SPECIAL = ("0.0.0.0/8", "240.0.0.0/4", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # no destination,
           "2001:db8::/32", "3fff::/20", "100::/64")  # documentation, discard-only
NOT_HOSTS = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/32", "224.0.0.0/4", "255.255.255.255/32", "::/128", "ff00::/8", *SPECIAL,  # unspecified, multicast, ...
    "::ffff:0.0.0.0/104", "::ffff:224.0.0.0/100", "::ffff:240.0.0.0/100", "::ffff:192.0.2.0/120",  # IPv4-mapped
    "::ffff:198.51.100.0/120", "::ffff:203.0.113.0/120")]
addresses = st.ip_addresses() | st.sampled_from(["0.0.0.0", "::", "255.255.255.255", "::ffff:0.0.0.0"]).map(
    ipaddress.ip_address) | st.ip_addresses(network="224.0.0.0/4") | st.ip_addresses(network="ff00::/8") | \
    st.one_of(*(st.ip_addresses(network=n) for n in SPECIAL))


@given(st.lists(addresses, min_size=1, max_size=6))
def test_ip_sans_are_refused_exactly_when_they_name_no_single_host(ips):
    texts = tuple(dict.fromkeys(str(ip) for ip in ips))  # distinct: duplicates are another rule
    violations = run(SubjectAltNames(dns=("a.b",), ip=texts))
    expected = {f"sans.ip[{i}]" for i, ip in enumerate(map(ipaddress.ip_address, texts))
                if any(ip.version == net.version and ip in net for net in NOT_HOSTS)}
    assert fields_breaking(violations, "san_ip_not_a_host") == expected


@given(st.lists(dns_names, min_size=1, max_size=8))
def test_san_duplicate_names_each_later_copy_of_a_name_compared_without_case(dns):
    violations = run(SubjectAltNames(dns=tuple(dns)))
    expected = {f"sans.dns[{i}]" for i, name in enumerate(dns) if name.lower() in [n.lower() for n in dns[:i]]}
    assert fields_breaking(violations, "san_duplicate") == expected


@given(subtrees, subtrees)
def test_subtree_within_is_exactly_containment(child, parent):
    # A subtree's most exposed name: its base (form "x.y") or a fresh label below it (form ".x.y");
    # every other name it holds lies below that one, so containment hinges on it alone.
    witness = child.lstrip(".").split(".")
    witness = [FRESH, *witness] if child.startswith(".") else witness
    assert names.subtree_within(child, parent) is ref_in_subtree(witness, parent)


@given(st.binary(min_size=20, max_size=20))
def test_serial_from_random_is_the_draw_without_its_top_bit(draw):
    masked = int.from_bytes(draw, "big") % 2**159
    if masked == 0:
        with pytest.raises(ValueError):
            serial_from_random(draw)
    else:
        assert serial_from_random(draw) == masked and 0 < masked < MAX_SERIAL


@given(st.integers(1, MAX_SERIAL - 1))
def test_every_serial_in_range_can_be_drawn(serial):
    assert serial_from_random(serial.to_bytes(20, "big")) == serial


@given(st.integers(-(2**300), 2**300) | st.integers(0, 2**17) | st.integers(2**256 - 2**10, 2**256 + 2**10))
def test_an_rsa_exponent_is_accepted_exactly_when_odd_and_from_65537_below_2_to_the_256(exponent):
    violations = check_key("rsa-4096", 4096, for_ca=True, available=AVAILABLE, rsa_exponent=exponent)
    assert (violations == []) is (exponent % 2 == 1 and 65537 <= exponent < 2**256)
    assert all(v.rule == "weak_key" for v in violations)


@given(st.integers(-(10**12), 10**12))
def test_any_validity_is_either_built_and_judged_or_refused_never_a_crash(days):
    try:
        spec = leaf_spec(NODE, subject=DistinguishedName(common_name="n"), sans=SubjectAltNames(dns=("a.b",)),
                         validity_days=days, subject_algorithm="ecdsa-p256", issuer_algorithm="ecdsa-p384", serial=1,
                         now=NOW, crl_urls=(), ocsp_urls=(), ca_issuer_urls=())
    except PolicyViolation as refused:
        assert refused.field == "validity_days"
        return
    violations = check_certificate(spec, profile=NODE, tenant_policy=TenantPolicy(), issuer=None,
                                   subject_algorithm="ecdsa-p256", key_bits=None, csr_signature_hash=None,
                                   available=AVAILABLE, now=NOW)
    assert (violations == []) is (1 <= days <= NODE.max_validity_days)


@given(default=st.integers(1, 3650), limit=st.none() | st.integers(1, 3650),
       left=st.none() | st.timedeltas(min_value=timedelta(hours=1), max_value=timedelta(days=4000)))
def test_a_default_validity_fits_the_tenants_maximum_and_the_issuer(default, limit, left):
    from domain.spec_builders import CLOCK_SKEW, default_validity_days

    days = default_validity_days(default, now=NOW, limit=limit, issuer_not_after=None if left is None else NOW + left)
    assert 1 <= days <= default and (limit is None or days <= limit)
    if left is not None and left >= timedelta(days=1) - CLOCK_SKEW + timedelta(seconds=1):
        assert NOW - CLOCK_SKEW + timedelta(days=days) <= NOW + left  # within the issuer: never refused for it
