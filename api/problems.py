"""RFC 9457 problem+json: the one shape of every error response, and the exception handlers that build it."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.serialization import encode_json

from api.denials import note_denial
from api.middleware import request_path_var
from domain.errors import DomainError
from infra.eventstore.group_commit import StoreUnavailable
from infra.telemetry import request_id_var
from projections.views_db import ProjectionRebuilding

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://csm.dev/problems/"

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 413: "body_too_large",
                 415: "unsupported_media_type", 429: "too_many_requests", 503: "unavailable"}
# What the request got wrong when Litestar itself refuses it: no route at this path, not this method, ...
_HTTP_FIELDS = {404: "path", 405: "method", 406: "Accept", 413: "body", 415: "content-type"}
_FIELD_NAME = re.compile(r"(?:unknown|missing required) field `([^`]+)`")
_RULES = (("unknown field", "unknown_field"), ("missing required field", "required"), ("matching regex", "pattern"),
          ("of length >=", "min_length"), ("of length <=", "max_length"), ("length >=", "min_length"),
          ("length <=", "max_length"), (">=", "minimum"), ("<=", "maximum"), (">", "minimum"), ("<", "maximum"),
          ("Expected", "type"), ("Invalid RFC3339", "format"))  # a date or time that is no such moment: 2020-02-30


class FieldError(msgspec.Struct, frozen=True):
    field: str
    rule: str
    message: str


class ProblemDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """The documented body of every error (extension members may be added)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str | None = None
    field: str | None = None
    errors: list[FieldError] | None = None


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def documented(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries saying that these statuses answer with a problem document."""
    return {status: ResponseSpec(ProblemDetails, description=_title(status), media_type=PROBLEM_MEDIA_TYPE,
                                 generate_examples=False) for status in statuses}


COMMAND_ERRORS = documented(400, 401, 403, 404, 409, 413, 415, 422, 503)
QUERY_ERRORS = documented(400, 401, 403, 404, 503)


class ApiProblem(Exception):
    """An HTTP-level refusal raised by the API layer (auth, headers, lagging read models)."""

    def __init__(self, status: int, code: str, detail: str, *, field: str | None = None, rule: str | None = None,
                 headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field
        self.rule = rule or code
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(request: Request | None, status: int, code: str, detail: str, *, field: str | None = None,
                     errors: list[FieldError] | None = None, headers: dict[str, str] | None = None,
                     **extensions: Any) -> Response:
    """A problem+json response; ``instance`` is the request path, ``request_id`` the current one."""
    instance = request.url.path if request is not None else request_path_var.get()
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": _title(status), "status": status,
                            "detail": detail, "instance": instance, "request_id": request_id_var.get()}
    if field is not None:
        body["field"] = field
    if errors:
        body["errors"] = [msgspec.structs.asdict(error) for error in errors]
    body.update(extensions)
    return Response(content=encode_json(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE,
                    headers=headers or {})


# what a domain error's extension members may not overwrite
RESERVED_MEMBERS = frozenset(ProblemDetails.__struct_fields__) | {"retry_after"}


def _single(field: str | None, rule: str, message: str) -> list[FieldError] | None:
    return [FieldError(field, rule, message)] if field else None


# handlers ----------------------------------------------------------------------------
def handle_api_problem(request: Request, exc: ApiProblem) -> Response:
    return problem_response(request, exc.status, exc.code, exc.detail, field=exc.field,
                            errors=_single(exc.field, exc.rule, exc.detail), headers=exc.headers, **exc.extensions)


def handle_domain_error(request: Request, exc: DomainError) -> Response:
    field, rule = exc.field, exc.code
    if exc.status == 403:
        note_denial(request, exc)  # access.denied, in the background; never fails this response
        # the rule is the permission refused; the field the tenant or input at fault, else the credential lacking it
        rule = getattr(exc, "permission", None) or rule
        field = field or "Authorization"
    retry_after = getattr(exc, "retry_after_seconds", None)
    violations = getattr(exc, "violations", None)  # a policy refusal names every rule broken, not just one
    errors = ([FieldError(v.field, v.rule, v.message) for v in violations] if violations
              else _single(field, rule, exc.detail))
    members = {k: v for k, v in getattr(exc, "members", {}).items() if k not in RESERVED_MEMBERS}
    return problem_response(request, exc.status, exc.code, exc.detail, field=field, errors=errors,
                            headers={"Retry-After": str(retry_after)} if retry_after else None, **members)


def handle_validation(request: Request, exc: ValidationException) -> Response:
    errors = [_field_error(item) for item in exc.extra or [] if isinstance(item, dict)]
    if not errors:
        errors = [FieldError("body", "invalid", str(exc.detail))]
    detail = "; ".join(f"{error.field}: {error.message}" for error in errors)
    return problem_response(request, 400, "validation_failed", detail, field=errors[0].field, errors=errors)


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, ValidationException):
        return handle_validation(request, exc)
    status = exc.status_code
    if status == 400 and exc.__cause__ is not None and "serializ" in type(exc.__cause__).__name__.lower():
        detail = f"the request body is not valid JSON: {exc.detail}"
        return problem_response(request, 400, "malformed_json", detail, field="body",
                                errors=[FieldError("body", "json", detail)])
    if status >= 500:
        return handle_unexpected(request, exc)
    code = _STATUS_CODES.get(status, "http_error")
    detail = _http_detail(status, exc)
    field = _HTTP_FIELDS.get(status, "request")
    return problem_response(request, status, code, detail, field=field, errors=[FieldError(field, code, detail)],
                            headers=dict(exc.headers or {}))


def handle_store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
    log.error("event store unavailable", extra={"error": str(exc)})
    detail = "the event store cannot accept writes right now"
    # nothing in the request is wrong: the field names what cannot take it
    return problem_response(request, 503, "store_unavailable", detail, field="event_store",
                            errors=_single("event_store", "store_unavailable", detail), headers={"Retry-After": "5"})


def handle_projection_rebuilding(request: Request, exc: ProjectionRebuilding) -> Response:
    """A read of a read model being rebuilt from the log (its code version changed; projections/views_db.py)."""
    return problem_response(request, 503, "projection-rebuilding", str(exc), field="read_model",
                            errors=_single("read_model", "projection-rebuilding", str(exc)), headers={"Retry-After": "5"},
                            projections=list(exc.names))


def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    detail = "an unexpected error occurred; quote the request id when reporting it"
    return problem_response(request, 500, "internal_error", detail)


EXCEPTION_HANDLERS = {
    ApiProblem: handle_api_problem,
    DomainError: handle_domain_error,
    HTTPException: handle_http_exception,
    StoreUnavailable: handle_store_unavailable,
    ProjectionRebuilding: handle_projection_rebuilding,
    Exception: handle_unexpected,
}


# translation of Litestar's validation details -------------------------------------------
def _http_detail(status: int, exc: HTTPException) -> str:
    if status == 404:
        return "no such resource"
    if status == 405:
        return "this method is not allowed on this resource"
    if status == 413:
        return "the request body is larger than the server accepts"
    return str(exc.detail)


def _field_error(item: dict) -> FieldError:
    """Turn ``{"key": "quotas", "message": "Object contains unknown field `x`"}`` into field ``quotas.x``."""
    message = str(item.get("message", "invalid"))
    key = str(item.get("key", ""))
    if item.get("source") == "body":
        key = "" if key == "data" else key
        if message == "'data'":  # no body at all
            return FieldError("body", "required", "a JSON body is required")
    named = _FIELD_NAME.search(message)
    if named:
        key = f"{key}.{named.group(1)}" if key else named.group(1)
    return FieldError(key or "body", _rule(message), message)


def _rule(message: str) -> str:
    for needle, rule in _RULES:
        if needle in message:
            return rule
    return "invalid"
