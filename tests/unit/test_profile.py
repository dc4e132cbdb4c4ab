"""domain.profile: the built-in profiles, profile validation row by row, and the custom-profile aggregate."""

from __future__ import annotations

import msgspec
import pytest

from domain import profile as profiles
from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Actor, EventEnvelope, decode_payload, to_payload_dict
from domain.profile import (BUILTIN_PROFILES, Profile, ProfileCreated, ProfileRetired, ProfileState, ProfileUpdated,
                            validate_profile)
from domain.violations import PolicyViolation

replace = msgspec.structs.replace
DB = replace(BUILTIN_PROFILES["cassandra-node"], name="db-node", description="Nodes of the db cluster",
             max_validity_days=90, default_validity_days=30, allowed_algorithms=("ecdsa-p384", "ecdsa-p256"),
             default_algorithm="ecdsa-p384")
ABSENT = ProfileState()
ACTIVE = profiles.fold([ProfileCreated(profile=DB)])
RETIRED = profiles.evolve(ACTIVE, ProfileRetired(reason="replaced"))


def refusal(fn, *args) -> DomainError:
    with pytest.raises(DomainError) as caught:
        fn(*args)
    return caught.value


def found(violations) -> list[tuple[str, str]]:
    return [(v.rule, v.field) for v in violations]


# ---- built-ins --------------------------------------------------------------------------------------------

def test_every_builtin_profile_is_valid_and_named_by_its_key():
    for name, builtin in BUILTIN_PROFILES.items():
        assert builtin.name == name
        assert validate_profile(builtin) == [], name


@pytest.mark.parametrize("name, eku, sans, require_san, require_cn, days", [
    ("cassandra-node", ("server_auth", "client_auth"), {"dns", "ip"}, True, False, (397, 365)),
    ("cassandra-client", ("client_auth",), {"dns", "email"}, False, True, (397, 365)),
    ("internode", ("server_auth", "client_auth"), {"dns", "ip"}, True, False, (397, 365)),
    ("user", ("client_auth", "email_protection"), {"email"}, True, True, (397, 365)),
    ("ocsp-signing", ("ocsp_signing",), set(), False, True, (90, 30)),
])
def test_builtin_profiles(name, eku, sans, require_san, require_cn, days):
    p = BUILTIN_PROFILES[name]
    assert (p.extended_key_usage, p.allowed_san_types, p.require_san, p.require_common_name) == (
        eku, sans, require_san, require_cn)
    assert (p.max_validity_days, p.default_validity_days) == days
    assert p.default_algorithm == "ecdsa-p256" and p.allowed_algorithms is None
    assert "key_cert_sign" not in p.key_usage and "digital_signature" in p.key_usage
    assert p.ocsp_no_check is (name == "ocsp-signing")


def test_node_profile_key_usage_and_ocsp_signer_has_signature_only():
    assert BUILTIN_PROFILES["cassandra-node"].key_usage == {"digital_signature", "key_encipherment"}
    assert BUILTIN_PROFILES["ocsp-signing"].key_usage == {"digital_signature"}


# ---- validation -------------------------------------------------------------------------------------------

PROFILE_RULES = [
    ("name with capitals", dict(name="Db-node"), ("profile_name_invalid", "name")),
    ("name of one letter", dict(name="d"), ("profile_name_invalid", "name")),
    ("name of 64 characters", dict(name="d" * 64), ("profile_name_invalid", "name")),
    ("name with a trailing newline", dict(name="db-node\n"), ("profile_name_invalid", "name")),
    ("description with a control character", dict(description="a\tb"), ("description_invalid", "description")),
    ("unknown key usage", dict(key_usage=frozenset({"digital_signature", "telepathy"})),
     ("key_usage_unknown", "key_usage")),
    ("no key usage", dict(key_usage=frozenset()), ("key_usage_invalid", "key_usage")),
    ("CA key usage", dict(key_usage=frozenset({"digital_signature", "key_cert_sign"})),
     ("key_usage_invalid", "key_usage")),
    ("unknown EKU", dict(extended_key_usage=("server_auth", "wifi")), ("eku_unknown", "extended_key_usage[1]")),
    ("ocsp no-check without the OCSP EKU", dict(ocsp_no_check=True), ("ocsp_no_check_invalid", "ocsp_no_check")),
    ("unknown SAN type", dict(allowed_san_types=frozenset({"dns", "x400"})), ("san_type_unknown", "allowed_san_types")),
    ("SAN required but no type allowed", dict(allowed_san_types=frozenset()), ("san_required", "require_san")),
    ("default longer than maximum", dict(default_validity_days=91), ("validity_invalid", "default_validity_days")),
    ("zero default", dict(default_validity_days=0), ("validity_invalid", "default_validity_days")),
    ("zero maximum", dict(max_validity_days=0), ("validity_invalid", "max_validity_days")),
    ("maximum beyond 825 days", dict(max_validity_days=826), ("validity_too_long", "max_validity_days")),
    ("unknown allowed algorithm", dict(allowed_algorithms=("ecdsa-p384", "rsa-1024")),
     ("algorithm_unknown", "allowed_algorithms[1]")),
    ("empty allowed algorithms", dict(allowed_algorithms=(), default_algorithm="ecdsa-p384"),
     ("algorithm_not_allowed", "allowed_algorithms")),
    ("unknown default algorithm", dict(default_algorithm="rsa-1024"), ("algorithm_unknown", "default_algorithm")),
    ("default algorithm not allowed", dict(default_algorithm="ed25519"),
     ("algorithm_not_allowed", "default_algorithm")),
]


@pytest.mark.parametrize("changes, expected", [row[1:] for row in PROFILE_RULES], ids=[row[0] for row in PROFILE_RULES])
def test_validate_profile_names_the_bad_field(changes, expected):
    assert found(validate_profile(replace(DB, **changes))) == [expected]


def test_validate_profile_names_every_bad_field_at_once():
    bad = replace(DB, name="X", extended_key_usage=("wifi",), default_validity_days=900, max_validity_days=900,
                  default_algorithm="md5")
    assert found(validate_profile(bad)) == [("profile_name_invalid", "name"), ("eku_unknown", "extended_key_usage[0]"),
                                            ("validity_too_long", "max_validity_days"),
                                            ("algorithm_unknown", "default_algorithm")]


def test_profile_decoding_refuses_unknown_fields():
    data = msgspec.json.encode(DB)
    assert msgspec.json.decode(data, type=Profile) == DB
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(data[:-1] + b',"surprise":1}', type=Profile)


# ---- the aggregate ----------------------------------------------------------------------------------------

def test_create_records_the_whole_profile():
    assert profiles.decide_create(ABSENT, DB) == [ProfileCreated(profile=DB)]
    assert (ACTIVE.name, ACTIVE.status, ACTIVE.profile, ACTIVE.version) == ("db-node", "active", DB, 1)
    assert profiles.stream_id("db-node") == "profile-db-node" and profiles.STREAM_TYPE == "profile"


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
def test_create_refuses_builtin_names(name):
    err = refusal(profiles.decide_create, ABSENT, replace(DB, name=name))
    assert isinstance(err, PolicyViolation)
    assert found(err.violations) == [("profile_name_reserved", "name")] and err.field == "name"


def test_create_lists_the_reserved_name_with_the_other_problems():
    err = refusal(profiles.decide_create, ABSENT, replace(DB, name="user", default_validity_days=91))
    assert found(err.violations) == [("profile_name_reserved", "name"), ("validity_invalid", "default_validity_days")]


@pytest.mark.parametrize("state", [ACTIVE, RETIRED], ids=["active", "retired"])
def test_create_refuses_an_existing_or_retired_name(state):
    err = refusal(profiles.decide_create, state, DB)
    assert isinstance(err, AlreadyExists)
    assert (err.code, err.field, err.status) == ("profile_exists", "name", 409)


def test_create_refuses_an_invalid_profile_with_every_violation():
    err = refusal(profiles.decide_create, ABSENT, replace(DB, max_validity_days=0, default_algorithm="x"))
    assert (err.code, err.status) == ("policy_violation", 422)
    assert [v.rule for v in err.violations] == ["validity_invalid", "algorithm_unknown"]


def test_update_records_the_new_profile_and_is_a_no_op_when_unchanged():
    longer = replace(DB, max_validity_days=120)
    [updated] = profiles.decide_update(ACTIVE, longer)
    assert updated == ProfileUpdated(profile=longer)
    state = profiles.evolve(ACTIVE, updated)
    assert (state.profile, state.version) == (longer, 2)
    assert profiles.decide_update(ACTIVE, DB) == []


@pytest.mark.parametrize("state, changes, code, field", [
    (ABSENT, {}, "profile_not_found", "name"),
    (RETIRED, {}, "profile_retired", "name"),
    (ACTIVE, {"name": "other-name"}, "profile_name_immutable", "name"),
    (ACTIVE, {"default_validity_days": 91}, "policy_violation", "default_validity_days"),
])
def test_update_refusals(state, changes, code, field):
    err = refusal(profiles.decide_update, state, replace(DB, **changes))
    assert (err.code, err.field) == (code, field)


def test_absent_is_not_found():
    assert isinstance(refusal(profiles.decide_update, ABSENT, DB), NotFound)


def test_retire():
    assert profiles.decide_retire(ACTIVE, "db-node", "  replaced by db-node-2 ") == [
        ProfileRetired(reason="replaced by db-node-2")]
    assert (RETIRED.status, RETIRED.profile, RETIRED.version) == ("retired", DB, 2)


@pytest.mark.parametrize("state, reason, code, field", [
    (ABSENT, "why", "profile_not_found", "name"),
    (RETIRED, "why", "profile_retired", "name"),
    (ACTIVE, "  ", "invalid_reason", "reason"),
    (ACTIVE, "x" * 201, "invalid_reason", "reason"),
    (ACTIVE, "bad\nreason", "invalid_reason", "reason"),
])
def test_retire_refusals(state, reason, code, field):
    err = refusal(profiles.decide_retire, state, "db-node", reason)
    assert (err.code, err.field) == (code, field)


def test_resolve_prefers_builtins_then_active_custom_profiles():
    assert profiles.resolve("cassandra-node", ABSENT) is BUILTIN_PROFILES["cassandra-node"]
    assert profiles.resolve("db-node", ACTIVE) == DB
    assert refusal(profiles.resolve, "db-node", RETIRED).code == "profile_retired"
    err = refusal(profiles.resolve, "ghost", ABSENT)
    assert isinstance(err, NotFound) and (err.code, err.field) == ("profile_not_found", "profile")
    assert refusal(profiles.resolve, "ghost", ACTIVE).code == "profile_not_found"


@pytest.mark.parametrize("payload", [ProfileCreated(profile=DB), ProfileUpdated(profile=DB),
                                     ProfileRetired(reason="done")])
def test_events_round_trip_through_the_envelope(payload):
    envelope = EventEnvelope(event_id="e", stream_id="profile-db-node", stream_type="profile", version=1,
                             global_position=None, tenant_id="acme", type=payload.event_type,
                             schema_version=payload.schema_version, occurred_at="2030-01-01T00:00:00Z",
                             actor=Actor(principal="p", auth_method="token"), correlation_id=None, causation_id=None,
                             payload=msgspec.json.decode(msgspec.json.encode(to_payload_dict(payload))), prev_hash="")
    assert decode_payload(envelope) == payload
    assert payload.event_type.startswith("profile.")
