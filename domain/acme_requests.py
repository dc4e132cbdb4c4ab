"""What an ACME client asks for, checked: a newOrder's identifiers and notBefore/notAfter, a finalize's CSR names."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from domain.acme import AcmeProblem
from domain.acme_challenges import is_wildcard
from domain.names import dns_name_problem, matches_any_pattern
from domain.policy import CLOCK_SKEW

MAX_IDENTIFIERS = 100


def check_identifiers(identifiers: object, allowed: Iterable[str], *, wildcard_problem: str | None) -> list[str]:
    """A newOrder's identifiers: DNS names only, within ``allowed`` (a wildcard is compared as a literal label, so
    ``*.example`` and ``.example`` allow ``*.example.internal``-like names, a plain name does not).
    ``wildcard_problem``: why a wildcard is refused here (no dns-01, the tenant policy), or None when allowed."""
    if not isinstance(identifiers, list) or not identifiers:
        raise AcmeProblem("malformed", "identifiers must be a non-empty list", field="identifiers")
    if len(identifiers) > MAX_IDENTIFIERS:
        raise AcmeProblem("rejectedIdentifier", f"at most {MAX_IDENTIFIERS} identifiers", field="identifiers")
    patterns, names = tuple(allowed), []
    for index, item in enumerate(identifiers):
        where = f"identifiers[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise AcmeProblem("malformed", "an identifier is {type, value}", field=where)
        if item.get("type") != "dns":
            raise AcmeProblem("unsupportedIdentifier", f"identifier type {item.get('type')!r}: only dns is supported",
                              field=f"{where}.type")
        name = item["value"].strip().lower().rstrip(".")
        if is_wildcard(name) and wildcard_problem is not None:
            raise AcmeProblem("rejectedIdentifier", f"{name}: {wildcard_problem}", field=f"{where}.value")
        if problem := dns_name_problem(name, wildcard=True):
            raise AcmeProblem("rejectedIdentifier", f"{name}: {problem}", field=f"{where}.value")
        if patterns and not matches_any_pattern(name, patterns):
            raise AcmeProblem("rejectedIdentifier", f"{name} is outside the names this account may request "
                              f"({', '.join(patterns)})", field=f"{where}.value")
        names.append(name)
    return sorted(set(names))


def check_csr_names(order_names: Iterable[str], csr_dns: Iterable[str], common_name: str | None) -> None:
    """RFC 8555 7.4: the CSR asks for exactly the order's names (its CN, if any, one of them)."""
    wanted = {n.lower() for n in order_names}
    asked = {n.lower().rstrip(".") for n in csr_dns}
    if common_name:
        asked.add(common_name.lower().rstrip("."))
    if asked != wanted:
        raise AcmeProblem("badCSR", f"the CSR names {sorted(asked)}, the order {sorted(wanted)}: they must be the same",
                          field="csr")


def check_validity(not_before: object, not_after: object, now: datetime, max_days: int) -> str | None:
    """A newOrder's notBefore and notAfter (RFC 8555 7.4). A certificate starts when its order is finalized, so
    notBefore is refused; notAfter (RFC 3339 with an offset) is honoured in whole days from then, at least one and
    at most ``max_days`` (the profile's and tenant policy's maximum). Returns it as UTC RFC 3339, or None."""
    if not_before is not None:
        raise AcmeProblem("malformed", "notBefore is not supported: a certificate starts when its order is finalized",
                          field="notBefore")
    if not_after is None:
        return None
    if not isinstance(not_after, str) or len(not_after) > 64:
        raise AcmeProblem("malformed", "notAfter is an RFC 3339 date-time", field="notAfter")
    try:
        moment = datetime.fromisoformat(not_after)
    except ValueError:
        raise AcmeProblem("malformed", "notAfter is an RFC 3339 date-time", field="notAfter") from None
    if moment.tzinfo is None or "T" not in not_after.upper():
        raise AcmeProblem("malformed", "notAfter is an RFC 3339 date-time with a UTC offset", field="notAfter")
    days = validity_days_until(moment, now)
    if days < 1:
        raise AcmeProblem("malformed", "notAfter must be at least a day from now", field="notAfter")
    if days > max_days:
        raise AcmeProblem("malformed", f"notAfter is {days} days away; the profile and policy allow at most "
                          f"{max_days}", field="notAfter")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validity_days_until(not_after: datetime, now: datetime) -> int:
    """Whole days from a certificate's start (``now`` less the clock skew allowance, as issuance starts it) to
    ``not_after``: the certificate then ends no later than asked."""
    return (not_after - (now - CLOCK_SKEW)) // timedelta(days=1)
