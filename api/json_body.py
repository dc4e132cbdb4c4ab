"""JSON request bodies: one decoder, under every route, for which a body nested too deeply is malformed JSON.

msgspec (like the stdlib) decodes nested arrays and objects recursively, so ``[[[[…]]]]`` a thousand levels
deep raises RecursionError, which no exception handler reads as the client's fault. Litestar decodes every
JSON body through ``Request.json`` and the rest of the API through ``decode``: both turn it into the error of
any other malformed body.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException

TOO_DEEP = "JSON nested too deeply"


def decode(body: bytes | str) -> Any:
    """The JSON value of ``body``; msgspec.DecodeError when it is not JSON or is nested too deeply."""
    try:
        return msgspec.json.decode(body)
    except RecursionError:
        raise msgspec.DecodeError(TOO_DEEP) from None


class JsonRequest(Request):
    """The app's request class: ``json()`` answers a too-deep body as Litestar answers malformed JSON."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            # a SerializationException is what Litestar's decoder raises for any malformed body: the route
            # turns it into a 400 ClientException, and api/problems.py answers that as malformed_json
            raise SerializationException(TOO_DEEP) from None
