"""Request bodies: a route's JSON body must say it is JSON, and is decoded straight into its declared type.

Litestar decodes a body to Python values and then converts every handler argument at once with
msgspec's lax rules (``strict=False``), which query parameters need (they are strings on the wire)
but which also turn a JSON ``"30"`` into ``30`` and ``"true"`` into ``True`` in a body. Here the
request class decodes a body into the handler's ``data`` type strictly instead; Litestar's later
conversion finds an instance of that type and keeps it as it is, and query parameters are converted
as before. A body sent with another media type than ``application/json`` or ``application/*+json``
(a ``charset`` parameter allowed) is a 415 before it is read; one sent without a Content-Type is taken
as JSON.

msgspec (like the stdlib) decodes nested arrays and objects recursively, so ``[[[[…]]]]`` a thousand levels
deep raises RecursionError, which no exception handler reads as the client's fault: every decoder here (the
request class, ``decode`` for the sign-in route and the rate limiter's peek at it) turns it into the error of
any other malformed body.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException, ValidationException
from litestar.types import Empty

from api.problems import ApiProblem

TOO_DEEP = "JSON nested too deeply"

_JSON_MEDIA = re.compile(r"application/(?:[!#$&^_.+\w-]+\+)?json")
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def decode(body: bytes | str) -> Any:
    """The JSON value of ``body``; msgspec.DecodeError when it is not JSON or is nested too deeply."""
    try:
        return msgspec.json.decode(body)
    except RecursionError:
        raise msgspec.DecodeError(TOO_DEEP) from None


class JsonBodyRequest(Request):
    """The app's request class (``Litestar(request_class=...)``)."""

    async def json(self) -> Any:
        data_field = self.route_handler.parsed_data_field
        if data_field is None:  # no declared body (the token endpoint reads its own): Litestar's decoding
            try:
                return await super().json()
            except RecursionError:
                # Litestar's decoder raises a SerializationException for any malformed body: the route turns it
                # into a 400 ClientException, and api/problems.py answers that as malformed_json
                raise SerializationException(TOO_DEEP) from None
        if self._json is Empty:
            require_json(self.headers.get("content-type"))
            body = await self.body()
            self._json = decode_strictly(body or b"null", data_field.annotation)
        return self._json


def require_json(content_type: str | None) -> None:
    """415 unless ``content_type`` (when given) is JSON: ``application/json`` or ``application/*+json``."""
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not _JSON_MEDIA.fullmatch(media_type):
        raise ApiProblem(415, "unsupported_media_type", f"this route takes a JSON body (application/json), not "
                         f"{media_type or 'an empty media type'}", field="content-type", rule="media_type")


def decode_strictly(body: bytes, annotation: Any) -> Any:
    """``body`` decoded into ``annotation`` with no coercion; a type error is a 400 naming the field, rule type."""
    try:
        return msgspec.json.decode(body, type=annotation, strict=True)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        message, path = (match.group("message"), match.group("path") or "") if match else (str(exc), "")
        # the same shape as Litestar's own validation errors, which api/problems.py turns into field and rule
        raise ValidationException(detail="Validation failed", extra=[
            {"key": path.removeprefix("."), "message": message, "source": "body"}]) from None
    except msgspec.DecodeError as exc:  # not JSON at all: Litestar's 400 for a malformed body
        raise SerializationException(str(exc)) from exc
    except RecursionError:  # nested too deeply for the decoder: malformed too, never a 500
        raise SerializationException(TOO_DEEP) from None
