"""Certificate profiles: the built-in ones, and tenants' custom profiles as an event-sourced aggregate."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

import msgspec

from domain.algorithms import ALGORITHMS, AlgorithmText
from domain.certspec import EXTENDED_KEY_USAGES, KEY_USAGES
from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Payload, event, resumable
from domain.renewal import RenewalPolicy, check_policy
from domain.violations import Violation, raise_for

STREAM_TYPE = "profile"
NAME_RE = re.compile(r"[a-z][a-z0-9-]{1,62}")
SAN_TYPES = frozenset({"dns", "ip", "email", "uri"})
# CA/Browser Forum's historic ceiling for leaf certificates; profiles may not go beyond it.
MAX_PROFILE_VALIDITY_DAYS = 825
MAX_TEXT = 200
_Usage = Annotated[str, msgspec.Meta(max_length=32)]  # field limit: key usage, EKU and SAN type names
_CA_USAGES = frozenset({"key_cert_sign", "crl_sign"})  # profiles describe leaves; CAs are built by ca_spec


class Profile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a kind of leaf certificate may and must contain.

    ``allowed_algorithms`` None leaves the choice to tenant and global policy. Key usages are
    those of an RSA subject key: the spec builder drops what other key types cannot do.
    """

    name: Annotated[str, msgspec.Meta(max_length=63)]
    description: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
    key_usage: Annotated[frozenset[_Usage], msgspec.Meta(max_length=16)]
    extended_key_usage: Annotated[tuple[_Usage, ...], msgspec.Meta(max_length=16)]
    allowed_san_types: Annotated[frozenset[_Usage], msgspec.Meta(max_length=8)]
    require_san: bool
    require_common_name: bool
    max_validity_days: int
    default_validity_days: int
    allowed_algorithms: Annotated[tuple[AlgorithmText, ...], msgspec.Meta(max_length=64)] | None
    default_algorithm: AlgorithmText
    ocsp_no_check: bool = False
    renewal: RenewalPolicy = msgspec.field(default_factory=RenewalPolicy)  # when and how the scheduler renews


def _builtin(name: str, description: str, *, key_usage: Iterable[str], eku: tuple[str, ...], sans: Iterable[str],
             require_san: bool, require_common_name: bool, max_days: int = 397, default_days: int = 365,
             ocsp_no_check: bool = False) -> Profile:
    return Profile(name=name, description=description, key_usage=frozenset(key_usage), extended_key_usage=eku,
                   allowed_san_types=frozenset(sans), require_san=require_san,
                   require_common_name=require_common_name, max_validity_days=max_days,
                   default_validity_days=default_days, allowed_algorithms=None, default_algorithm="ecdsa-p256",
                   ocsp_no_check=ocsp_no_check)


_TLS = ("digital_signature", "key_encipherment")
BUILTIN_PROFILES: dict[str, Profile] = {p.name: p for p in (
    _builtin("cassandra-node", "A Cassandra node: client and server TLS, named by DNS and IP",
             key_usage=_TLS, eku=("server_auth", "client_auth"), sans=("dns", "ip"), require_san=True,
             require_common_name=False),
    _builtin("cassandra-client", "An application or driver authenticating to Cassandra",
             key_usage=_TLS, eku=("client_auth",), sans=("dns", "email"), require_san=False,
             require_common_name=True),
    _builtin("internode", "Node-to-node encryption between Cassandra nodes",
             key_usage=_TLS, eku=("server_auth", "client_auth"), sans=("dns", "ip"), require_san=True,
             require_common_name=False),
    _builtin("user", "A person: client authentication and S/MIME",
             key_usage=(*_TLS, "key_agreement"), eku=("client_auth", "email_protection"), sans=("email",),
             require_san=True, require_common_name=True),
    # RFC 6960 4.2.2.2: a delegated responder; id-pkix-ocsp-nocheck and short life replace revocation checks.
    _builtin("ocsp-signing", "A delegated OCSP responder",
             key_usage=("digital_signature",), eku=("ocsp_signing",), sans=(), require_san=False,
             require_common_name=True, max_days=90, default_days=30, ocsp_no_check=True),
)}


@event("profile.created")
class ProfileCreated(Payload, frozen=True, kw_only=True):
    profile: Profile


@event("profile.updated")
class ProfileUpdated(Payload, frozen=True, kw_only=True):
    profile: Profile


@event("profile.retired")
class ProfileRetired(Payload, frozen=True, kw_only=True):
    reason: str


class ProfileState(msgspec.Struct, frozen=True, kw_only=True):
    """A custom profile's state, folded from its events. ``version`` 0 means it does not exist."""

    name: str = ""
    status: str = "absent"  # absent | active | retired
    profile: Profile | None = None
    version: int = 0


def stream_id(name: str) -> str:
    return f"profile-{name}"


def evolve(state: ProfileState, payload: Payload) -> ProfileState:
    replace = msgspec.structs.replace
    match payload:
        case ProfileCreated() | ProfileUpdated():
            state = replace(state, name=payload.profile.name, status="active", profile=payload.profile)
        case ProfileRetired():
            state = replace(state, status="retired")
    return replace(state, version=state.version + 1)


@resumable
def fold(payloads: Iterable[Payload], start: ProfileState | None = None) -> ProfileState:
    state = ProfileState() if start is None else start
    for payload in payloads:
        state = evolve(state, payload)
    return state


def _unknown(field: str, values: Iterable[str], known: Iterable[str], rule: str, what: str, *,
             indexed: bool = False) -> list[Violation]:
    known = set(known)
    return [Violation(f"{field}[{i}]" if indexed else field, rule,
                      f"{v!r} is not a known {what}; known: {', '.join(sorted(known))}")
            for i, v in enumerate(values) if v not in known]


def _check_identity(p: Profile) -> list[Violation]:
    out = []
    if not NAME_RE.fullmatch(p.name):  # match() would let "$" accept a trailing newline
        out.append(Violation("name", "profile_name_invalid", "a profile name is 2-63 characters: lower-case "
                             "letters, digits and '-', starting with a letter"))
    if len(p.description) > MAX_TEXT or not p.description.isprintable():
        out.append(Violation("description", "description_invalid",
                             f"a description is at most {MAX_TEXT} printable characters"))
    return out


def _check_usages(p: Profile) -> list[Violation]:
    out = _unknown("key_usage", sorted(p.key_usage), KEY_USAGES, "key_usage_unknown", "key usage")
    if not p.key_usage & KEY_USAGES:
        out.append(Violation("key_usage", "key_usage_invalid", "a profile needs at least one key usage"))
    if p.key_usage & _CA_USAGES:
        out.append(Violation("key_usage", "key_usage_invalid",
                             "key_cert_sign and crl_sign are for CA certificates, which profiles do not describe"))
    out += _unknown("extended_key_usage", p.extended_key_usage, EXTENDED_KEY_USAGES, "eku_unknown",
                    "extended key usage", indexed=True)
    if p.ocsp_no_check and "ocsp_signing" not in p.extended_key_usage:
        out.append(Violation("ocsp_no_check", "ocsp_no_check_invalid",
                             "ocsp_no_check is only for OCSP signers (extended key usage ocsp_signing)"))
    return out


def _check_sans(p: Profile) -> list[Violation]:
    out = _unknown("allowed_san_types", sorted(p.allowed_san_types), SAN_TYPES, "san_type_unknown", "SAN type")
    if p.require_san and not p.allowed_san_types & SAN_TYPES:
        out.append(Violation("require_san", "san_required", "a profile that requires a SAN must allow a SAN type"))
    return out


def _check_validity(p: Profile) -> list[Violation]:
    out = []
    if p.max_validity_days < 1 or p.default_validity_days < 1:
        out.append(Violation("default_validity_days" if p.max_validity_days >= 1 else "max_validity_days",
                             "validity_invalid", "validity periods are at least one day"))
    elif p.default_validity_days > p.max_validity_days:
        out.append(Violation("default_validity_days", "validity_invalid",
                             f"the default validity ({p.default_validity_days} days) exceeds the maximum "
                             f"({p.max_validity_days} days)"))
    if p.max_validity_days > MAX_PROFILE_VALIDITY_DAYS:
        out.append(Violation("max_validity_days", "validity_too_long",
                             f"profiles allow at most {MAX_PROFILE_VALIDITY_DAYS} days"))
    return out


def _check_algorithms(p: Profile) -> list[Violation]:
    out = [Violation(f"allowed_algorithms[{i}]", "algorithm_unknown", f"{a!r} is not a known algorithm")
           for i, a in enumerate(p.allowed_algorithms or ()) if a not in ALGORITHMS]
    if p.allowed_algorithms == ():
        out.append(Violation("allowed_algorithms", "algorithm_not_allowed",
                             "an empty list allows no algorithm: use null to defer to tenant policy"))
    if p.default_algorithm not in ALGORITHMS:
        out.append(Violation("default_algorithm", "algorithm_unknown",
                             f"{p.default_algorithm!r} is not a known algorithm"))
    elif p.allowed_algorithms and p.default_algorithm not in p.allowed_algorithms:
        out.append(Violation("default_algorithm", "algorithm_not_allowed",
                             f"the default algorithm {p.default_algorithm} is not in allowed_algorithms"))
    return out


def validate_profile(p: Profile) -> list[Violation]:
    """Every way ``p`` is malformed (empty when it is sound); does not check reserved names."""
    return [*_check_identity(p), *_check_usages(p), *_check_sans(p), *_check_validity(p), *_check_algorithms(p),
            *check_policy(p.renewal, p.max_validity_days, p.default_validity_days)]


# Extended key usages only the service's own certificates carry: a delegated OCSP responder certificate (RFC 6960
# 4.2.2.2) signs answers relying parties trust as the CA's own, so one held by a requester could answer "good"
# for a revoked certificate. The service issues them to itself (commands/ocsp.py), never on request.
RESERVED_EKUS = frozenset({"ocsp_signing"})


def _reserved_usages(p: Profile) -> list[Violation]:
    return [Violation(f"extended_key_usage[{i}]", "eku_reserved",
                      f"{eku} is reserved: the service issues its OCSP responders' certificates itself")
            for i, eku in enumerate(p.extended_key_usage) if eku in RESERVED_EKUS]


def require_issuable(p: Profile) -> None:
    """Refuse a request for a certificate under a profile whose usages are the service's own (``RESERVED_EKUS``)."""
    if set(p.extended_key_usage) & RESERVED_EKUS:
        raise DomainError("profile_reserved", f"profile {p.name} is for the service's own OCSP responders; "
                          "certificates under it are never issued on request", field="profile")


def _require(state: ProfileState, name: str) -> None:
    if state.status == "absent" and name in BUILTIN_PROFILES:  # listed by GET /v1/profiles: "does not exist" misled
        raise DomainError("profile_name_reserved", f"{name} is a built-in profile: it cannot be changed or retired; "
                          "create a profile of another name", field="name")
    if state.status == "absent":
        raise NotFound("profile_not_found", f"profile {name} does not exist", field="name")
    if state.status == "retired":
        raise DomainError("profile_retired", f"profile {name} is retired", field="name")


def decide_create(state: ProfileState, profile: Profile) -> list[Payload]:
    violations = validate_profile(profile) + _reserved_usages(profile)
    if profile.name in BUILTIN_PROFILES:
        violations.insert(0, Violation("name", "profile_name_reserved",
                                       f"{profile.name} is a built-in profile's name"))
    raise_for(violations)
    # A retired name stays taken, so certificates issued under it keep one meaning.
    if state.status != "absent":
        raise AlreadyExists("profile_exists", f"profile {profile.name} already exists", field="name")
    return [ProfileCreated(profile=profile)]


def decide_update(state: ProfileState, profile: Profile) -> list[Payload]:
    _require(state, profile.name)
    if profile.name != state.name:
        raise DomainError("profile_name_immutable", f"profile {state.name} cannot be renamed", field="name")
    raise_for(validate_profile(profile) + _reserved_usages(profile))
    if profile == state.profile:
        return []
    return [ProfileUpdated(profile=profile)]


def decide_retire(state: ProfileState, name: str, reason: str) -> list[Payload]:
    _require(state, name)
    reason = reason.strip()
    if not reason or len(reason) > MAX_TEXT or not reason.isprintable():
        raise DomainError("invalid_reason", f"a reason is 1-{MAX_TEXT} printable characters", field="reason")
    return [ProfileRetired(reason=reason)]


def resolve(name: str, custom: ProfileState) -> Profile:
    """The profile a request names: a built-in one, else the tenant's active custom profile ``custom``."""
    if name in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[name]
    if custom.status == "absent" or custom.name != name or custom.profile is None:
        raise NotFound("profile_not_found", f"profile {name} does not exist", field="profile")
    if custom.status == "retired":
        raise DomainError("profile_retired", f"profile {name} is retired", field="profile")
    return custom.profile
