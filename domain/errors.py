"""Errors the domain raises: each names the rule that was broken and the field it concerns."""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused by a business rule.

    ``code`` is a stable machine-readable rule name (it becomes the problem+json ``type``
    suffix), ``field`` the input that broke it (dotted path, or None), ``detail`` a sentence
    for people, ``members`` extension members of the problem a client acts on (never secrets).
    """

    status = 422

    def __init__(self, code: str, detail: str, field: str | None = None,
                 members: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field
        self.members = members or {}


class NotFound(DomainError):
    status = 404


class AlreadyExists(DomainError):
    status = 409


class QuotaExceeded(DomainError):
    """A command would take a tenant past one of its quotas (``field`` names it: ``quotas.<name>``).

    409 for what a tenant holds (CAs, live certificates): it clears when something is revoked or expires.
    429 with Retry-After for a count per day: it clears at the next UTC midnight.
    """

    def __init__(self, quota: str, detail: str, *, status: int = 409, retry_after_seconds: int | None = None) -> None:
        super().__init__("quota_exceeded", detail, field=f"quotas.{quota}")
        self.status = status
        if retry_after_seconds is not None:
            self.retry_after_seconds = retry_after_seconds


class UsageUnknown(DomainError):
    """A quota could not be checked: the counts it needs are not known to be current. Retry shortly."""

    status = 503
    retry_after_seconds = 1

    def __init__(self, detail: str) -> None:
        super().__init__("usage_unknown", detail, field="tenant_id")


class Contention(DomainError):
    """A command lost the race for its stream too many times in a row; the caller may retry.

    ``field`` names the resource the stream holds as the request names it (``id``, ``ca_id``, ``tenant_id``, ...).
    """

    status = 409
    retry_after_seconds = 1

    def __init__(self, stream_id: str, field: str) -> None:
        super().__init__("contention", f"stream {stream_id} kept changing while this command ran; try again",
                         field=field)


class WrongExpectedVersion(DomainError):
    """An append raced another writer: the stream is not at the version the caller read."""

    status = 409

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        super().__init__(
            "wrong_expected_version",
            f"stream {stream_id} is at version {actual}, not {expected}",
            field="expected_version",
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class IdempotencyKeyReused(DomainError):
    """The same Idempotency-Key was sent with a different request."""

    status = 422

    def __init__(self, key: str) -> None:
        super().__init__(
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request",
            field="Idempotency-Key",
        )
        self.key = key


class KeyUnavailable(DomainError):
    """A private key cannot be used right now: the key-encryption key it is wrapped under, or the PKCS#11 token that
    holds it, does not answer. 503: retry once it is back. What was already recorded stands."""

    status = 503


class DirectoryUnavailable(DomainError):
    """The external directory (LDAP) could not be reached or answered with an error."""

    status = 503
    retry_after_seconds = 5

    def __init__(self, detail: str) -> None:
        super().__init__("directory_unavailable", detail, field="directory")  # what is unavailable: no input is wrong
