"""Every JSON request body the API decodes is bounded and strict: strings have a maximum length (or a bounded
pattern, or a format such as date-time), arrays a maximum number of items, objects refuse unknown fields. Read from
the route handlers, so a new body is checked too."""

from __future__ import annotations

from msgspec import inspect as mi

from api.app import create_app
from infra.config import Settings

# A body whose type is not a msgspec struct (raw bytes, forms) is checked by its handler; name it here with why.
NOT_STRUCTS: dict[str, str] = {}


def request_bodies(app) -> dict[str, object]:
    found = {}
    for route in app.routes:
        for method, (handler, _) in getattr(route, "route_handler_map", {}).items():
            parameter = handler.parsed_fn_signature.parameters.get("data")
            if parameter is not None:
                found[f"{method} {route.path_format}"] = parameter.annotation
    return found


def bounded(pattern: str | None) -> bool:
    """An anchored pattern without an open-ended repetition bounds the length too."""
    pattern = pattern or ""
    return pattern.startswith("^") and pattern.endswith("$") and not any(c in pattern for c in "*+") \
        and ",}" not in pattern


def unbounded(body_type) -> list[str]:
    """What msgspec would accept without a bound, read from its own type information."""
    problems: list[str] = []
    seen: set[type] = set()

    def walk(node, where: str) -> None:
        if isinstance(node, mi.UnionType):
            for option in node.types:
                walk(option, where)
        elif isinstance(node, mi.StructType):
            if node.cls in seen:
                return
            seen.add(node.cls)
            if not node.forbid_unknown_fields:
                problems.append(f"{node.cls.__name__}: unknown fields are accepted (forbid_unknown_fields=True)")
            for field in node.fields:
                walk(field.type, f"{node.cls.__name__}.{field.name}")
        elif isinstance(node, mi.StrType):
            if node.max_length is None and not bounded(node.pattern):
                problems.append(f"{where}: a string without a maximum length")
        elif isinstance(node, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
            if node.max_length is None:
                problems.append(f"{where}: an array without a maximum number of items")
            walk(node.item_type, f"{where}[]")
        elif isinstance(node, mi.DictType):
            problems.append(f"{where}: a mapping of any keys")

    walk(mi.type_info(body_type), "body")
    return problems


def test_every_request_body_is_bounded_and_strict(tmp_path):
    bodies = request_bodies(create_app(Settings(data_dir=tmp_path)))
    assert len(bodies) >= 20  # the walk found the handlers
    problems = [f"{route}: {problem}" for route, body in sorted(bodies.items()) if route not in NOT_STRUCTS
                for problem in unbounded(body)]
    assert not problems, "request bodies that are not bounded:\n" + "\n".join(problems)
