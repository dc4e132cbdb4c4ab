"""docs/security.md prints the role matrix and the route table exactly as the code has them."""

from __future__ import annotations

from api.permissions import DOC, ROUTE_PERMISSIONS, SCOPES, documented, render
from commands.authz import PERMISSIONS, ROLES


def test_the_security_doc_shows_the_current_roles_and_routes():
    assert documented(DOC.read_text()) == render(), (
        "docs/security.md is out of date: run `.venv/bin/python -m api.permissions` and commit the result")


def test_the_route_table_names_only_known_permissions_and_scopes():
    for (method, path), rule in ROUTE_PERMISSIONS.items():
        assert set(rule.permissions) | set(rule.key_permissions) <= PERMISSIONS.keys(), f"{method} {path}"
        assert rule.scope in SCOPES, f"{method} {path}"
        assert rule.permissions or rule.scope in ("public", "self"), \
            f"{method} {path} needs a permission or scope public (or self: the caller's own account)"


def test_least_privilege_roles():
    """The choices docs/security.md explains: trust-moving permissions stay with the admin roles."""
    admins = {"platform-admin", "tenant-admin"}
    for role, granted in ROLES.items():
        if role not in admins:
            assert "key:export" not in granted and "token:issue" not in granted, role
            assert "cert:deploy" not in granted, role  # it hands a private key to a node
            assert not {"tenant:create", "tenant:update", "tenant:suspend"} & granted, role
    assert ROLES["issuer"] == {"cert:issue", "cert:read"}
    assert all(not p.endswith((":issue", ":create", ":manage", ":update", ":revoke", ":export"))
               for p in ROLES["viewer"] | ROLES["auditor"]), "auditor and viewer are read-only"
    assert ROLES["viewer"] < ROLES["auditor"]
