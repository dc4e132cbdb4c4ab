"""The refusal ACME clients read (RFC 8555 6.7): a DomainError carrying its ``urn:ietf:params:acme:error:`` type."""

from __future__ import annotations

from domain.errors import DomainError


class AcmeProblem(DomainError):
    """A refusal that ACME clients read: ``acme_type`` is its ``urn:ietf:params:acme:error:`` type."""

    def __init__(self, acme_type: str, detail: str, *, field: str, status: int = 400) -> None:
        super().__init__(acme_type, detail, field=field)
        self.acme_type = acme_type
        self.status = status
