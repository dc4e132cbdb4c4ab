"""Hardening wired into the app: CORS only for listed origins, an OpenAPI schema as strict as the decoding,
OPTIONS answers that name every method a path serves, and no query parameter that no handler reads."""

from __future__ import annotations

import re

import msgspec
from litestar import Litestar, Request
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.config.cors import CORSConfig
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.routes import HTTPRoute

from api.deps import IDEMPOTENCY_KEY
from api.problems import ApiProblem
from infra.config import Settings

_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?")
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "Last-Event-ID",
                   "X-Export-Password"]
EXPOSED_HEADERS = ["Location", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
                   "RateLimit-Policy", "X-Request-ID", "Content-Disposition"]


def cors_config(settings: Settings) -> CORSConfig | None:
    """None (no CORS headers at all) unless ``CSM_CORS_ORIGINS`` lists exact origins; never a wildcard."""
    if not settings.cors_origins:
        return None
    for origin in settings.cors_origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(f"CSM_CORS_ORIGINS: {origin!r} is not an exact origin like https://ui.example.com "
                             "(no wildcards, paths or trailing slashes)")
    # Credentials are bearer tokens in a header, never cookies: allow_credentials stays off.
    return CORSConfig(allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "PUT", "DELETE"],
                      allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS, allow_credentials=False,
                      max_age=600)


_CONSTRAINTS = {"minimum": "minimum", "maximum": "maximum", "exclusiveMinimum": "exclusive_minimum",
                "exclusiveMaximum": "exclusive_maximum", "minLength": "min_length", "maxLength": "max_length",
                "pattern": "pattern", "minItems": "min_items", "maxItems": "max_items"}


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Struct schemas that say what msgspec enforces when it decodes them.

    Litestar's own plugin leaves ``additionalProperties`` open (the API answers 400 to unknown
    fields), drops bounds of 0 (``ge=0``) and the bounds of optional fields, and renders
    ``tuple[X, ...]`` items as ``oneOf [X, {}]`` (which no value can satisfy exactly once). Each
    property is completed from msgspec's own JSON schema of the struct.
    """

    def to_openapi_schema(self, field_definition, schema_creator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if not isinstance(schema, Schema):
            return schema
        if getattr(info, "forbid_unknown_fields", False):
            schema.additional_properties = False
        (ref,), definitions = msgspec.json.schema_components([field_definition.type_])
        source = definitions.get(ref.get("$ref", "").rsplit("/", 1)[-1], {})
        for name, node in (source.get("properties") or {}).items():
            target = (schema.properties or {}).get(name)
            if isinstance(target, Schema):
                _complete(target, node)
        return schema


def _is_any(schema) -> bool:
    return isinstance(schema, Schema) and not schema.to_schema()


def _complete(target: Schema, source: dict) -> None:
    """Copy the bounds of msgspec's schema ``source`` into Litestar's ``target`` where they are missing."""
    if "$ref" in source:
        return  # a nested struct: its own component is completed when it is generated
    options = [option for option in source.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1 and target.one_of:
        for branch in target.one_of:
            if isinstance(branch, Schema) and branch.type != OpenAPIType.NULL and not _is_any(branch):
                _complete(branch, options[0])
        return
    for key, attribute in _CONSTRAINTS.items():
        if key in source and getattr(target, attribute) is None:
            setattr(target, attribute, source[key])
    items = target.items
    if isinstance(items, Schema) and items.one_of and any(_is_any(option) for option in items.one_of):
        kept = [option for option in items.one_of if not _is_any(option)]
        target.items = items = kept[0] if len(kept) == 1 else Schema(one_of=kept)
    if isinstance(items, Schema) and isinstance(source.get("items"), dict):
        _complete(items, source["items"])


def tighten_parameters(app: Litestar) -> None:
    """Query, header and path parameters as the handlers decode them.

    A query string has no JSON null, so an optional parameter is the non-null schema, not
    ``oneOf [X, null]``; bounds Litestar drops (``ge=0``) are put back from the parameter's
    declaration, and ``Idempotency-Key`` says what ``api.deps`` accepts.
    """
    declared = {}
    for route in app.routes:
        for handler, _ in getattr(route, "route_handler_map", {}).values():
            for parameter in handler.parsed_fn_signature.parameters.values():
                kwarg = parameter.kwarg_definition
                if kwarg is not None:
                    alias = getattr(kwarg, "query", None) or getattr(kwarg, "header", None) or parameter.name
                    declared[(route.path_format, alias.lower())] = kwarg
    for path, item in (app.openapi_schema.paths or {}).items():
        for operation in (getattr(item, method, None) for method in ("get", "put", "post", "delete", "patch")):
            for parameter in (operation.parameters or []) if operation else []:
                if not isinstance(parameter.schema, Schema):
                    continue
                schema = parameter.schema
                if schema.one_of:
                    kept = [o for o in schema.one_of if not (isinstance(o, Schema) and o.type == OpenAPIType.NULL)]
                    if len(kept) == 1 and isinstance(kept[0], Schema):
                        kept[0].description = kept[0].description or schema.description
                        parameter.schema = schema = kept[0]
                kwarg = declared.get((path, parameter.name.lower()))
                for attribute in ("ge", "le", "gt", "lt", "min_length", "max_length", "pattern"):
                    value = getattr(kwarg, attribute, None)
                    target = {"ge": "minimum", "le": "maximum", "gt": "exclusive_minimum",
                              "lt": "exclusive_maximum"}.get(attribute, attribute)
                    if value is not None and getattr(schema, target) is None:
                        setattr(schema, target, value)
                if parameter.name == "Idempotency-Key":
                    schema.pattern, schema.max_length, schema.min_length = f"^{IDEMPOTENCY_KEY.pattern}$", 255, 1


def correct_options_allow(app: Litestar) -> None:
    """Make Litestar's automatic OPTIONS handlers list every method of their path in ``Allow``.

    Litestar 2 builds the handler for the first route registered at a path and keeps it when more
    methods join that path (Litestar issue 4169, fixed in 3.x), so ``OPTIONS /v1/tenants`` said
    ``OPTIONS, POST`` while GET is served too. The handler reads the methods of the route it closes
    over: point it at the route the app really serves.
    """
    for route in app.routes:
        entry = getattr(route, "route_handler_map", {}).get("OPTIONS")
        if entry is None or entry[0].handler_name != "options_handler":
            continue
        for cell in getattr(entry[0].fn, "__closure__", None) or ():
            if isinstance(cell.cell_contents, HTTPRoute):
                cell.cell_contents = route


CHECKED_PREFIXES = ("/v1/", "/ocsp/")  # the API; health, metrics and the schema take what probes send


def _read_by_handlers(app: Litestar) -> dict[object, frozenset[str]]:
    return {handler: frozenset(p.field_alias for p in model.expected_query_params)
            for route in app.routes for handler, model in getattr(route, "route_handler_map", {}).values()}


async def refuse_unknown_query_parameters(request: Request) -> None:
    """A ``before_request`` hook: 400 for a query parameter the route's handler does not read.

    Ignored, a misspelt filter (``?stauts=revoked``) answers every row, and a list paged with the wrong name
    (``?cursor=`` where it pages by ``after``) answers its first page again and again: a client loops for ever.
    The names come from each handler's own signature (Litestar's kwargs model), so they cannot drift."""
    if not request.scope["path"].startswith(CHECKED_PREFIXES):
        return
    state = request.app.state
    known = state.get("query_parameters") or state.setdefault("query_parameters", _read_by_handlers(request.app))
    allowed = known.get(request.scope["route_handler"])
    if allowed is None:
        return
    for name in request.query_params:
        if name not in allowed:
            reads = ", ".join(sorted(allowed)) or "none"
            raise ApiProblem(400, "validation_failed", f"unknown query parameter {name!r}; this route reads {reads}",
                             field=name, rule="unknown_parameter")
