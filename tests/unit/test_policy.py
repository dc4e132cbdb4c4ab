"""The policy engine (domain.policy, key_rules, subject_rules, tenant_policy) and domain.names: one row per rule,
each naming its exact rule and field; the spec builders (domain.spec_builders)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from domain import names
from domain.algorithms import ALGORITHMS
from domain.certspec import CertificateSpec, DistinguishedName, NameConstraints, SubjectAltNames
from domain.errors import DomainError
from domain.key_rules import check_key
from domain.policy import IssuerFacts, check_ca, check_certificate
from domain.profile import BUILTIN_PROFILES
from domain.spec_builders import CA_KEY_USAGE, CLOCK_SKEW, ca_spec, leaf_spec, serial_from_random
from domain.tenant_policy import TenantPolicy, validate_tenant_policy
from domain.violations import PolicyViolation, Violation, raise_for

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
AVAILABLE = frozenset(name for name, a in ALGORITHMS.items() if a.provider == "cryptography")
NODE, CLIENT, USER, OCSP = (BUILTIN_PROFILES[n] for n in ("cassandra-node", "cassandra-client", "user", "ocsp-signing"))
ISSUER = IssuerFacts(ca_id="ica", algorithm="ecdsa-p384", not_before=NOW - timedelta(days=30),
                     not_after=NOW + timedelta(days=3000), path_length=None, name_constraints=NameConstraints(),
                     status="active")
URLS = {"crl_urls": ("http://ca/crl",), "ocsp_urls": ("http://ca/ocsp",), "ca_issuer_urls": ("http://ca/cert",)}
replace = msgspec.structs.replace


def leaf(profile=NODE, cn="node1.db.example.com", sans=None, algorithm="ecdsa-p256", days=None, **changes):
    sans = SubjectAltNames(dns=("node1.db.example.com",), ip=("10.1.2.3",)) if sans is None else sans
    spec = leaf_spec(profile, subject=DistinguishedName(common_name=cn), sans=sans, validity_days=days,
                     subject_algorithm=algorithm, issuer_algorithm="ecdsa-p384", serial=2**100, now=NOW, **URLS)
    return replace(spec, **changes)


def check(spec=None, *, profile=NODE, tenant=TenantPolicy(), issuer=ISSUER, algorithm="ecdsa-p256", key_bits=None,
          csr_hash="sha256", **key):
    return check_certificate(spec or leaf(profile), profile=profile, tenant_policy=tenant, issuer=issuer,
                             subject_algorithm=algorithm, key_bits=key_bits, csr_signature_hash=csr_hash,
                             available=AVAILABLE, now=NOW, **key)


def found(violations: list[Violation]) -> list[tuple[str, str]]:
    return [(v.rule, v.field) for v in violations]


def test_a_sound_request_for_every_builtin_profile_passes():
    sans = {"cassandra-node": SubjectAltNames(dns=("a.example.com",)), "internode": SubjectAltNames(ip=("10.0.0.1",)),
            "cassandra-client": SubjectAltNames(), "user": SubjectAltNames(email=("ann@example.com",)),
            "ocsp-signing": SubjectAltNames()}
    for name, profile in BUILTIN_PROFILES.items():
        assert check(leaf(profile, cn="app", sans=sans[name]), profile=profile) == [], name


NARROW = replace(NODE, allowed_algorithms=("ecdsa-p384",), default_algorithm="ecdsa-p384")
RSA_LEAF = leaf(algorithm="rsa-2048")
NC = NameConstraints(permitted_dns=("example.com",), excluded_dns=("secret.example.com",),
                     permitted_ip=("10.0.0.0/8",), excluded_ip=("10.9.0.0/16",))
CONSTRAINED = replace(ISSUER, name_constraints=NC)
HOSTLESS = dict(cn="node1")  # a common name that is not read as a host name
PROD_ONLY = TenantPolicy(allowed_dns=(".prod.example.com",))

CERTIFICATE_RULES = [
    ("csr signed with sha1", dict(csr_hash="sha1"), ("weak_hash", "csr")),
    ("csr signed with md5", dict(csr_hash="MD5"), ("weak_hash", "csr")),
    ("classical issuer signing with sha256", dict(spec=leaf(signature_hash="sha256")), ("weak_hash", "issuer_id")),
    ("classical issuer with no hash", dict(spec=leaf(signature_hash=None)), ("weak_hash", "issuer_id")),
    ("rsa-2048 leaf", dict(spec=RSA_LEAF, algorithm="rsa-2048"), ("weak_key", "algorithm")),
    ("rsa-3072 catalogued but 2048 bits", dict(spec=RSA_LEAF, algorithm="rsa-3072", key_bits=2048),
     ("weak_key", "algorithm")),
    ("dsa", dict(spec=leaf(algorithm="dsa-3072"), algorithm="dsa-3072"), ("weak_key", "algorithm")),
    ("csr with RSA exponent 3", dict(spec=leaf(algorithm="rsa-3072"), algorithm="rsa-3072", key_bits=3072,
                                     rsa_exponent=3, key_field="csr"), ("weak_key", "csr")),
    ("secp256k1", dict(algorithm="ecdsa-secp256k1"), ("weak_key", "algorithm")),
    ("unknown algorithm", dict(spec=leaf(algorithm="rsa-8192"), algorithm="rsa-8192"),
     ("algorithm_unknown", "algorithm")),
    ("liboqs algorithm not installed", dict(spec=leaf(algorithm="falcon-512"), algorithm="falcon-512"),
     ("algorithm_unavailable", "algorithm")),
    ("profile allow-list", dict(spec=leaf(NARROW), profile=NARROW), ("algorithm_not_allowed", "algorithm")),
    ("tenant allow-list", dict(tenant=TenantPolicy(allowed_algorithms=("ed25519",))),
     ("algorithm_not_allowed", "algorithm")),
    ("beyond profile maximum", dict(spec=leaf(days=398)), ("validity_too_long", "validity_days")),
    ("beyond tenant maximum", dict(tenant=TenantPolicy(max_validity_days=90)), ("validity_too_long", "validity_days")),
    ("outlives issuer", dict(issuer=replace(ISSUER, not_after=NOW + timedelta(days=100))),
     ("validity_beyond_issuer", "validity_days")),
    ("starts before issuer", dict(issuer=replace(ISSUER, not_before=NOW)), ("validity_beyond_issuer", "validity_days")),
    ("ends when it starts", dict(spec=leaf(days=0)), ("validity_invalid", "validity_days")),
    ("ends before it starts", dict(spec=leaf(days=-1)), ("validity_invalid", "validity_days")),
    ("back-dated two hours", dict(spec=leaf(not_before=NOW - timedelta(hours=2))),
     ("validity_invalid", "validity_days")),
    ("naive datetimes", dict(spec=leaf(not_before=datetime(2030, 1, 1), not_after=datetime(2030, 6, 1))),
     ("validity_invalid", "validity_days")),
    ("issuer disabled", dict(issuer=replace(ISSUER, status="disabled")), ("issuer_disabled", "issuer_id")),
    ("no SAN", dict(spec=leaf(sans=SubjectAltNames())), ("san_required", "sans")),
    ("SAN of a type the profile forbids", dict(spec=leaf(sans=SubjectAltNames(dns=("a.example.com",),
                                                                              uri=("spiffe://x/y",)))),
     ("san_type_not_allowed", "sans.uri")),
    ("dns outside tenant patterns", dict(spec=leaf(**HOSTLESS), tenant=PROD_ONLY),
     ("san_not_allowed", "sans.dns[0]")),
    ("host-like CN outside tenant patterns",
     dict(spec=leaf(sans=SubjectAltNames(dns=("a.prod.example.com",))), tenant=PROD_ONLY),
     ("san_not_allowed", "subject.common_name")),
    ("ip outside tenant networks", dict(tenant=TenantPolicy(allowed_ip_networks=("192.168.0.0/16",))),
     ("san_not_allowed", "sans.ip[0]")),
    ("email outside tenant domains", dict(spec=leaf(USER, cn="Ann", sans=SubjectAltNames(email=("ann@evil.test",))),
                                          profile=USER, tenant=TenantPolicy(allowed_email_domains=("example.com",))),
     ("san_not_allowed", "sans.email[0]")),
    ("malformed third DNS name",
     dict(spec=leaf(sans=SubjectAltNames(dns=("a.example.com", "b.example.com", "c_d.example.com")))),
     ("san_invalid", "sans.dns[2]")),
    ("malformed IP", dict(spec=leaf(sans=SubjectAltNames(ip=("10.0.0.256",)))), ("san_invalid", "sans.ip[0]")),
    ("email without @", dict(spec=leaf(USER, cn="Ann", sans=SubjectAltNames(email=("ann.example.com",))), profile=USER),
     ("san_invalid", "sans.email[0]")),
    ("unspecified IPv4 address", dict(spec=leaf(sans=SubjectAltNames(ip=("0.0.0.0",)))),
     ("san_ip_not_a_host", "sans.ip[0]")),
    ("unspecified IPv6 address", dict(spec=leaf(sans=SubjectAltNames(ip=("10.0.0.1", "::")))),
     ("san_ip_not_a_host", "sans.ip[1]")),
    ("IPv4 multicast", dict(spec=leaf(sans=SubjectAltNames(ip=("224.0.0.1",)))), ("san_ip_not_a_host", "sans.ip[0]")),
    ("IPv6 multicast", dict(spec=leaf(sans=SubjectAltNames(ip=("ff02::1",)))), ("san_ip_not_a_host", "sans.ip[0]")),
    ("limited broadcast", dict(spec=leaf(sans=SubjectAltNames(ip=("255.255.255.255",)))),
     ("san_ip_not_a_host", "sans.ip[0]")),
    ("unspecified as IPv4-mapped IPv6", dict(spec=leaf(sans=SubjectAltNames(ip=("::ffff:0.0.0.0",)))),
     ("san_ip_not_a_host", "sans.ip[0]")),
    ("DNS name repeated in another case", dict(spec=leaf(sans=SubjectAltNames(dns=("a.example.com", "b.example.com",
                                                                                  "A.Example.COM")))),
     ("san_duplicate", "sans.dns[2]")),
    ("IP repeated in another spelling", dict(spec=leaf(sans=SubjectAltNames(ip=("fd00::1", "fd00:0::1")))),
     ("san_duplicate", "sans.ip[1]")),
    ("email repeated with its domain in capitals", dict(
        spec=leaf(USER, cn="Ann", sans=SubjectAltNames(email=("ann@example.com", "ann@EXAMPLE.com"))), profile=USER),
     ("san_duplicate", "sans.email[1]")),
    ("too many SANs", dict(spec=leaf(sans=SubjectAltNames(ip=tuple(f"10.0.0.{i}" for i in range(101))))),
     ("san_invalid", "sans")),
    ("dns outside permitted subtree", dict(spec=leaf(**HOSTLESS, sans=SubjectAltNames(dns=("node1.example.org",))),
                                           issuer=CONSTRAINED), ("name_constraint_violation", "sans.dns[0]")),
    ("dns in excluded subtree", dict(spec=leaf(**HOSTLESS, sans=SubjectAltNames(dns=("x.secret.example.com",))),
                                     issuer=CONSTRAINED), ("name_constraint_violation", "sans.dns[0]")),
    ("wildcard reaching into an excluded name",
     dict(spec=leaf(**HOSTLESS, sans=SubjectAltNames(dns=("*.example.com",))),
                                                     issuer=CONSTRAINED), ("name_constraint_violation", "sans.dns[0]")),
    ("CN-as-DNS outside permitted subtree", dict(spec=leaf(cn="db.example.org"), issuer=CONSTRAINED),
     ("name_constraint_violation", "subject.common_name")),
    ("ip outside permitted network", dict(spec=leaf(sans=SubjectAltNames(ip=("192.168.1.1",))), issuer=CONSTRAINED),
     ("name_constraint_violation", "sans.ip[0]")),
    ("ip in excluded network", dict(spec=leaf(sans=SubjectAltNames(ip=("10.9.1.1",))), issuer=CONSTRAINED),
     ("name_constraint_violation", "sans.ip[0]")),
    ("client without CN", dict(spec=leaf(CLIENT, cn=" ", sans=SubjectAltNames()), profile=CLIENT),
     ("common_name_required", "subject.common_name")),
    ("empty CN", dict(spec=leaf(cn="")), ("common_name_invalid", "subject.common_name")),
    ("CN of 65 characters", dict(spec=leaf(cn="x" * 65)), ("common_name_invalid", "subject.common_name")),
    ("CN with a control character", dict(spec=leaf(cn="node\x001")), ("common_name_invalid", "subject.common_name")),
    ("country of three letters", dict(spec=leaf(subject=DistinguishedName(common_name="n", country="USA"))),
     ("subject_invalid", "subject.country")),
    ("country with a digit", dict(spec=leaf(subject=DistinguishedName(common_name="n", country="U1"))),
     ("subject_invalid", "subject.country")),
    ("organization blank", dict(spec=leaf(subject=DistinguishedName(common_name="n", organization=" "))),
     ("subject_invalid", "subject.organization")),
    ("serial zero", dict(spec=leaf(serial=0)), ("serial_invalid", "serial")),
    ("serial negative", dict(spec=leaf(serial=-5)), ("serial_invalid", "serial")),
    ("serial of 160 bits", dict(spec=leaf(serial=2**159)), ("serial_invalid", "serial")),
    ("leaf with key_cert_sign", dict(spec=leaf(key_usage=frozenset({"digital_signature", "key_cert_sign"}))),
     ("key_usage_invalid", "key_usage")),
    ("EC key with key_encipherment", dict(spec=leaf(key_usage=frozenset({"digital_signature", "key_encipherment"}))),
     ("key_usage_invalid", "key_usage")),
    ("unknown extended key usage", dict(spec=leaf(extended_key_usage=("server_auth", "teleport"))),
     ("key_usage_invalid", "extended_key_usage")),
    ("leaf with a path length", dict(spec=leaf(path_length=0)), ("path_length_invalid", "path_length")),
    ("leaf with name constraints", dict(spec=leaf(name_constraints=NC)),
     ("name_constraints_invalid", "name_constraints")),
]


@pytest.mark.parametrize("changes, expected", [row[1:] for row in CERTIFICATE_RULES],
                         ids=[row[0] for row in CERTIFICATE_RULES])
def test_check_certificate_reports_exactly_the_broken_rule(changes, expected):
    assert found(check(**changes)) == [expected]


def test_a_request_with_three_problems_reports_all_three():
    spec = leaf(days=500, sans=SubjectAltNames(dns=("ok.example.com", "bad..example.com")))
    violations = check(spec, csr_hash="sha1")
    assert sorted(found(violations)) == [("san_invalid", "sans.dns[1]"), ("validity_too_long", "validity_days"),
                                         ("weak_hash", "csr")]
    with pytest.raises(PolicyViolation) as caught:
        raise_for(violations)
    err = caught.value
    assert (err.code, err.status, err.field) == ("policy_violation", 422, violations[0].field)
    assert err.violations == violations and isinstance(err, DomainError)
    assert all(v.message in err.detail for v in violations)


def test_loopback_private_and_link_local_addresses_are_hosts():
    hosts = ("127.0.0.1", "10.1.2.3", "192.168.0.10", "172.16.5.4", "::1", "fd00::7", "fe80::1", "8.8.8.8",
             "223.255.255.254", "::ffff:10.0.0.1", "169.254.10.20", "100.64.0.1", "64:ff9b::a00:1")
    assert check(leaf(sans=SubjectAltNames(dns=("node1.db.example.com",), ip=hosts))) == []


def test_a_hundred_copies_of_one_name_report_each_copy():
    violations = check(leaf(sans=SubjectAltNames(dns=("x.example.com",) * 100)))
    assert found(violations) == [("san_duplicate", f"sans.dns[{i}]") for i in range(1, 100)]
    assert violations[0].message == "'x.example.com' repeats sans.dns[0]"


def test_raise_for_nothing_is_silent_and_an_empty_violation_is_a_bug():
    raise_for([])
    with pytest.raises(ValueError):
        PolicyViolation([])


def test_a_self_signed_leaf_hashes_with_its_own_key():
    assert found(check(leaf(algorithm="ed25519", signature_hash=None), issuer=None, algorithm="ed25519")) == []
    assert found(check(leaf(signature_hash=None), issuer=None)) == [("weak_hash", "issuer_id")]


def test_eddsa_and_ml_dsa_issuers_need_no_hash():
    for algorithm in ("ed25519", "ml-dsa-65"):
        assert check(leaf(signature_hash=None), issuer=replace(ISSUER, algorithm=algorithm)) == []


def test_name_constraints_accept_names_inside_and_other_types_are_unconstrained():
    spec = leaf(sans=SubjectAltNames(dns=("example.com", "a.b.example.com")), cn="x.example.com")
    assert check(spec, issuer=CONSTRAINED) == []
    only_dns = replace(ISSUER, name_constraints=NameConstraints(permitted_dns=("example.com",)))
    assert check(leaf(sans=SubjectAltNames(dns=("a.example.com",), ip=("8.8.8.8",)), cn="n"), issuer=only_dns) == []


# ---- CA certificates ------------------------------------------------------------------------------------

ROOT = replace(ISSUER, ca_id="root", not_after=NOW + timedelta(days=7300))


def intermediate(days=3650, path_length=0, nc=NameConstraints(), cn="Acme Intermediate CA", **changes):
    spec = ca_spec(subject=DistinguishedName(common_name=cn), validity_days=days, path_length=path_length,
                   name_constraints=nc, issuer_algorithm="ecdsa-p384", serial=77, now=NOW, **URLS)
    return replace(spec, **changes)


def check_a_ca(spec=None, *, issuer=ROOT, algorithm="ecdsa-p384", key_bits=None, tenant=TenantPolicy(), **key):
    return check_ca(spec or intermediate(), issuer=issuer, subject_algorithm=algorithm, key_bits=key_bits,
                    available=AVAILABLE, now=NOW, tenant_policy=tenant, **key)


def root_spec(days=7300, algorithm="ml-dsa-65", **changes):
    spec = ca_spec(subject=DistinguishedName(common_name="Acme Root CA"), validity_days=days, path_length=None,
                   name_constraints=NameConstraints(), issuer_algorithm=algorithm, serial=1, now=NOW)
    return replace(spec, **changes)


PARENT_NC = replace(ROOT, name_constraints=NameConstraints(permitted_dns=("example.com",),
                                                           permitted_ip=("10.0.0.0/8",)))
CA_RULES = [
    ("intermediate over 10 years", dict(spec=intermediate(days=3654)), ("validity_too_long", "validity_days")),
    ("root over 20 years", dict(spec=root_spec(days=7306), issuer=None, algorithm="ml-dsa-65"),
     ("validity_too_long", "validity_days")),
    ("rsa-3072 CA", dict(algorithm="rsa-3072"), ("weak_key", "algorithm")),
    ("CA CSR with an even RSA exponent", dict(algorithm="rsa-4096", rsa_exponent=65538, key_field="csr"),
     ("weak_key", "csr")),
    ("root signing with sha256", dict(spec=root_spec(algorithm="rsa-4096", signature_hash="sha256"), issuer=None,
                                      algorithm="rsa-4096"), ("weak_hash", "algorithm")),
    ("tenant allow-list", dict(tenant=TenantPolicy(allowed_algorithms=("ml-dsa-65",))),
     ("algorithm_not_allowed", "algorithm")),
    ("issuer with path length 0", dict(issuer=replace(ROOT, path_length=0)), ("issuer_path_length", "path_length")),
    ("unlimited child of a limited issuer",
     dict(spec=intermediate(path_length=None), issuer=replace(ROOT, path_length=1)),
     ("issuer_path_length", "path_length")),
    ("issuer disabled", dict(issuer=replace(ROOT, status="disabled")), ("issuer_disabled", "issuer_id")),
    ("outlives the root", dict(issuer=replace(ROOT, not_after=NOW + timedelta(days=1000))),
     ("validity_beyond_issuer", "validity_days")),
    ("CA without key_cert_sign", dict(spec=intermediate(key_usage=frozenset({"crl_sign", "digital_signature"}))),
     ("key_usage_invalid", "key_usage")),
    ("negative path length", dict(spec=intermediate(path_length=-1)), ("path_length_invalid", "path_length")),
    ("CA without a name", dict(spec=intermediate(cn="")), ("common_name_required", "subject.common_name")),
    ("host-like CA name outside parent constraints", dict(spec=intermediate(cn="ca.example.org",
                                                                            nc=PARENT_NC.name_constraints),
                                                          issuer=PARENT_NC),
     ("name_constraint_violation", "subject.common_name")),
    ("malformed own network", dict(spec=intermediate(nc=NameConstraints(permitted_ip=("10.0.0.1/8",)))),
     ("name_constraints_invalid", "name_constraints")),
    ("malformed own DNS subtree", dict(spec=intermediate(nc=NameConstraints(excluded_dns=("*.example.com",)))),
     ("name_constraints_invalid", "name_constraints")),
    ("DNS subtree outside the parent's", dict(spec=intermediate(nc=NameConstraints(permitted_dns=("example.org",),
                                                                                   permitted_ip=("10.1.0.0/16",))),
                                              issuer=PARENT_NC), ("ca_name_constraints_widen", "name_constraints")),
    ("no DNS subtree under a constrained parent",
     dict(spec=intermediate(nc=NameConstraints(permitted_ip=("10.1.0.0/16",))), issuer=PARENT_NC),
     ("ca_name_constraints_widen", "name_constraints")),
    ("network outside the parent's", dict(spec=intermediate(nc=NameConstraints(permitted_dns=(".db.example.com",),
                                                                               permitted_ip=("11.0.0.0/16",))),
                                          issuer=PARENT_NC), ("ca_name_constraints_widen", "name_constraints")),
]


@pytest.mark.parametrize("changes, expected", [row[1:] for row in CA_RULES], ids=[row[0] for row in CA_RULES])
def test_check_ca_reports_exactly_the_broken_rule(changes, expected):
    assert found(check_a_ca(**changes)) == [expected]


@pytest.mark.parametrize("algorithm", ["rsa-4096", "ecdsa-p384", "ed25519", "ml-dsa-65", "hybrid-p384-ml-dsa-65"])
def test_sound_roots_pass(algorithm):
    assert check_a_ca(root_spec(algorithm=algorithm), issuer=None, algorithm=algorithm) == []


def test_sound_intermediates_pass_including_narrowed_constraints():
    assert check_a_ca() == []
    assert check_a_ca(intermediate(path_length=0), issuer=replace(ROOT, path_length=1)) == []
    narrowed = NameConstraints(permitted_dns=(".db.example.com", "example.com"), permitted_ip=("10.1.0.0/16",),
                               excluded_dns=("anything.org",))
    assert check_a_ca(intermediate(nc=narrowed), issuer=PARENT_NC) == []


# ---- keys -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm, bits, for_ca, expected", [
    ("rsa-3072", None, False, []),
    ("rsa-3072", None, True, ["weak_key"]),
    ("rsa-4096", None, True, []),
    ("rsa-4096", 2048, False, ["weak_key"]),
    ("rsa-2048", 2048, False, ["weak_key"]),
    ("rsa-1024", None, True, ["weak_key"]),
    ("dsa-1024", 1024, False, ["weak_key"]),
    ("ecdsa-secp256k1", 256, False, ["weak_key"]),
    ("ecdsa-brainpoolP256r1", 256, False, ["weak_key"]),
    ("ecdsa-p256", 256, True, []),
    ("ecdsa-secp384r1", 384, False, ["algorithm_unknown"]),  # a good curve spelled unlike the catalogue
    ("rsa-8192", 8192, True, ["algorithm_unknown"]),
    ("rot13", None, False, ["algorithm_unknown"]),
    ("", None, False, ["algorithm_unknown"]),
    ("slh-dsa-sha2-128s", None, True, ["algorithm_unavailable"]),
    ("ml-dsa-87", None, True, []),
])
def test_check_key(algorithm, bits, for_ca, expected):
    violations = check_key(algorithm, bits, for_ca=for_ca, available=AVAILABLE, field="csr.algorithm")
    assert [v.rule for v in violations] == expected
    assert all(v.field == "csr.algorithm" for v in violations)


@pytest.mark.parametrize("exponent, ok", [
    (None, True), (3, False), (17, False), (65535, False), (65536, False), (65537, True), (65538, False),
    (2**255 + 1, True), (2**256 - 1, True), (2**256 + 1, False), (2**4000 + 1, False),
], ids=lambda value: f"{value.bit_length()}-bit" if isinstance(value, int) and value > 2**64 else None)
def test_rsa_public_exponents_follow_sp_800_56b(exponent, ok):
    violations = check_key("rsa-3072", 3072, for_ca=False, available=AVAILABLE, field="csr", rsa_exponent=exponent)
    assert found(violations) == ([] if ok else [("weak_key", "csr")])
    assert all("exponent" in v.message and len(v.message) < 200 for v in violations)


def test_a_small_rsa_key_with_exponent_3_reports_both_weaknesses_and_other_families_have_no_exponent():
    violations = check_key("rsa-2048", 2048, for_ca=False, available=AVAILABLE, rsa_exponent=3)
    assert [v.rule for v in violations] == ["weak_key", "weak_key"]
    assert "2048" in violations[0].message and "exponent" in violations[1].message
    assert check_key("ecdsa-p256", 256, for_ca=False, available=AVAILABLE, rsa_exponent=3) == []


def test_a_weak_key_that_is_also_unavailable_reports_both():
    assert [v.rule for v in check_key("rsa-3072", None, for_ca=True, available=frozenset())] == [
        "weak_key", "algorithm_unavailable"]


# ---- tenant policy ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, expected", [
    (TenantPolicy(allowed_algorithms=("ecdsa-p256", "rsa-1024")), [("algorithm_unknown", "allowed_algorithms[1]")]),
    (TenantPolicy(allowed_dns=("a.example.com", "bad_.example.com")), [("pattern_invalid", "allowed_dns[1]")]),
    (TenantPolicy(allowed_dns=("**.example.com",)), [("pattern_invalid", "allowed_dns[0]")]),
    (TenantPolicy(allowed_ip_networks=("10.0.0.0/33",)), [("pattern_invalid", "allowed_ip_networks[0]")]),
    (TenantPolicy(allowed_email_domains=("@example.com",)), [("pattern_invalid", "allowed_email_domains[0]")]),
    (TenantPolicy(max_validity_days=0), [("validity_invalid", "max_validity_days")]),
    (TenantPolicy(allowed_dns=("x.example.com", "*.example.com", ".example.com"), allowed_ip_networks=("::/0",),
                  allowed_email_domains=("example.com",), max_validity_days=30), []),
])
def test_validate_tenant_policy(policy, expected):
    assert found(validate_tenant_policy(policy)) == expected


# ---- spec builders --------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile, algorithm, usages", [
    (NODE, "rsa-3072", {"digital_signature", "key_encipherment"}),
    (NODE, "ecdsa-p256", {"digital_signature"}),
    (NODE, "ed25519", {"digital_signature"}),
    (NODE, "ml-dsa-65", {"digital_signature"}),
    (USER, "rsa-4096", {"digital_signature", "key_encipherment"}),
    (USER, "ecdsa-p384", {"digital_signature", "key_agreement"}),
    (USER, "hybrid-p256-ml-dsa-44", {"digital_signature", "key_agreement"}),
    (USER, "ed448", {"digital_signature"}),
])
def test_leaf_key_usage_fits_the_subject_key(profile, algorithm, usages):
    assert leaf(profile, algorithm=algorithm).key_usage == usages


def test_leaf_spec_takes_clock_skew_defaults_and_the_profile():
    spec = leaf(OCSP, cn="OCSP responder", sans=SubjectAltNames())
    assert spec.not_before == NOW - CLOCK_SKEW
    assert spec.not_after - spec.not_before == timedelta(days=30)
    assert (spec.is_ca, spec.ocsp_no_check, spec.extended_key_usage) == (False, True, ("ocsp_signing",))
    assert (spec.serial, spec.crl_urls, spec.ocsp_urls, spec.ca_issuer_urls) == (2**100, *URLS.values())
    assert leaf(days=10).not_after - leaf(days=10).not_before == timedelta(days=10)


@pytest.mark.parametrize("issuer_algorithm, expected", [("ecdsa-p384", "sha384"), ("ecdsa-p521", "sha512"),
                                                        ("rsa-4096", "sha384"), ("ed25519", None), ("ml-dsa-87", None)])
def test_leaf_spec_signature_hash_follows_the_issuer(issuer_algorithm, expected):
    spec = leaf_spec(NODE, subject=DistinguishedName(common_name="n"), sans=SubjectAltNames(), validity_days=1,
                     subject_algorithm="ecdsa-p256", issuer_algorithm=issuer_algorithm, serial=1, now=NOW, **URLS)
    assert spec.signature_hash == expected


@pytest.mark.parametrize("days, rule", [(10**9, "validity_too_long"), (-(10**9), "validity_invalid")])
def test_builders_refuse_unrepresentable_validity_instead_of_overflowing(days, rule):
    with pytest.raises(PolicyViolation) as caught:
        leaf(days=days)
    assert found(caught.value.violations) == [(rule, "validity_days")]
    with pytest.raises(PolicyViolation):
        intermediate(days=days)


def test_ca_spec():
    spec = intermediate(path_length=2, nc=NameConstraints(permitted_dns=("example.com",)))
    assert isinstance(spec, CertificateSpec)
    assert (spec.is_ca, spec.path_length, spec.key_usage, spec.signature_hash) == (True, 2, CA_KEY_USAGE, "sha384")
    assert spec.name_constraints.permitted_dns == ("example.com",)
    assert spec.not_after - spec.not_before == timedelta(days=3650) and spec.not_before == NOW - CLOCK_SKEW


# ---- serials ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("draw, expected", [
    (b"\xff" * 20, 2**159 - 1),
    (b"\x00" * 19 + b"\x01", 1),
    (b"\x80" + b"\x00" * 18 + b"\x02", 2),
])
def test_serial_from_random(draw, expected):
    assert serial_from_random(draw) == expected


@pytest.mark.parametrize("draw", [b"\x00" * 20, b"\x80" + b"\x00" * 19, b"\x01" * 19, b"\x01" * 21])
def test_serial_from_random_refuses_zero_and_wrong_lengths(draw):
    with pytest.raises(ValueError):
        serial_from_random(draw)


# ---- names ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["example.com", "node1", "a-b.c-d.example", "*.db.example.com",
                                  "xn--bcher-kva.example", "A.Example.COM", "a" * 63 + ".com", "1.example.com"])
def test_dns_names_accepted(name):
    assert names.dns_name_problem(name) is None


@pytest.mark.parametrize("name", ["", ".", "example.com.", "a..b", "-a.com", "a-.com", "a_b.com", "a b.com",
                                  "*.com", "*", "a.*.com", "f*.example.com", "**.example.com", "bücher.example",
                                  "ab--cd.example", "xn--a.example", "1.2.3.4", "a" * 64 + ".com",
                                  ".".join(["a" * 63] * 4), "example.com\n"])
def test_dns_names_refused(name):
    assert names.dns_name_problem(name) is not None


@pytest.mark.parametrize("name, pattern, expected", [
    ("a.example.com", "a.example.com", True), ("A.EXAMPLE.com", "a.example.com", True),
    ("b.example.com", "a.example.com", False),
    ("a.example.com", "*.example.com", True), ("a.b.example.com", "*.example.com", False),
    ("example.com", "*.example.com", False), ("*.example.com", "*.example.com", True),
    ("a.b.example.com", ".example.com", True), ("example.com", ".example.com", False),
    ("*.example.com", ".example.com", True), ("*.example.com", "a.example.com", False),
    ("aexample.com", ".example.com", False),
])
def test_tenant_pattern_matching(name, pattern, expected):
    assert names.matches_pattern(name, pattern) is expected


@pytest.mark.parametrize("name, subtree, within, touches", [
    ("example.com", "example.com", True, True), ("a.example.com", "example.com", True, True),
    ("example.com", ".example.com", False, False), ("a.example.com", ".example.com", True, True),
    ("badexample.com", "example.com", False, False),
    ("*.example.com", "example.com", True, True), ("*.example.com", ".example.com", True, True),
    ("*.example.com", "a.example.com", False, True), ("*.example.com", "a.b.example.com", False, False),
    ("*.example.com", ".a.example.com", False, False), ("*.a.example.com", "example.com", True, True),
])
def test_rfc5280_dns_subtrees(name, subtree, within, touches):
    assert (names.dns_within(name, subtree), names.dns_touches(name, subtree)) == (within, touches)


@pytest.mark.parametrize("text, ok", [("10.0.0.1", True), ("::1", True), ("fe80::1%eth0", False), ("10.0.0", False),
                                      ("010.0.0.1", False), ("host", False)])
def test_ip_syntax(text, ok):
    assert (names.ip_problem(text) is None) is ok


@pytest.mark.parametrize("text, host", [("0.0.0.0", False), ("::", False), ("0:0::0", False), ("224.0.0.251", False),
                                        ("239.255.255.250", False), ("ff05::1:3", False), ("255.255.255.255", False),
                                        ("::ffff:224.0.0.1", False), ("::ffff:255.255.255.255", False),
                                        ("0.0.0.1", False), ("0.255.255.255", False),  # 'this network'
                                        ("240.0.0.1", False), ("255.255.255.254", False),  # reserved
                                        ("::ffff:240.0.0.1", False), ("192.0.2.1", False), ("198.51.100.7", False),
                                        ("203.0.113.255", False), ("2001:db8::1", False), ("3fff:fff::1", False),
                                        ("100::1", False),  # documentation, discard-only
                                        ("1.0.0.1", True), ("223.255.255.255", True), ("127.0.0.1", True),
                                        ("192.0.3.1", True), ("2001:db9::1", True), ("100:0:0:1::1", True),
                                        ("::1", True), ("fe00::1", True)])
def test_ip_host(text, host):
    assert (names.ip_host_problem(text) is None) is host


@pytest.mark.parametrize("text, ok", [("ann@example.com", True), ("a.b+c@db.example.com", True), ("ann@", False),
                                      ("@example.com", False), ("ann@localhost", False), ("a@b@example.com", False),
                                      ("änn@example.com", False), (".ann@example.com", False)])
def test_email_syntax(text, ok):
    assert (names.email_problem(text) is None) is ok


@pytest.mark.parametrize("text, ok", [("spiffe://cluster/ns/db/sa/app", True), ("https://x/%C3%A9", True),
                                      ("no-scheme", False), ("https://x/é", False), ("https://a b", False)])
def test_uri_syntax(text, ok):
    assert (names.uri_problem(text) is None) is ok
