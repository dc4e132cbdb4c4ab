"""A refused policy rule (``Violation``), and the 422 error that carries every rule a request broke."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from domain.errors import DomainError


class Violation(msgspec.Struct, frozen=True):
    field: str
    rule: str
    message: str


class PolicyViolation(DomainError):
    """One or more policy rules were broken; ``violations`` lists every one found."""

    status = 422

    def __init__(self, violations: list[Violation]) -> None:
        if not violations:
            raise ValueError("PolicyViolation needs at least one violation")
        super().__init__("policy_violation", "; ".join(v.message for v in violations), field=violations[0].field)
        self.violations = list(violations)


def raise_for(violations: Iterable[Violation]) -> None:
    found = list(violations)
    if found:
        raise PolicyViolation(found)
