"""commands.authz: the role table, permission checks and tenant confinement."""

from __future__ import annotations

import pytest

from commands.authz import (PERMISSIONS, ROLES, SYSTEM, Forbidden, Principal, authorize, authorize_search,
                            visible_tenants)
from domain.events import Actor


def principal(*roles: str, tenant_id: str | None = None) -> Principal:
    return Principal(id="p-1", auth_method="token", roles=frozenset(roles), tenant_id=tenant_id)


def forbidden(p: Principal, permission: str, tenant_id: str | None = None) -> Forbidden:
    with pytest.raises(Forbidden) as caught:
        authorize(p, permission, tenant_id)
    err = caught.value
    assert (err.status, err.code, err.permission) == (403, "forbidden", permission)
    return err


def test_roles_grant_only_known_permissions():
    for role, granted in ROLES.items():
        assert granted <= set(PERMISSIONS), role


def test_platform_admin_holds_every_permission():
    assert principal("platform-admin").permissions == frozenset(PERMISSIONS)
    assert SYSTEM.permissions == frozenset(PERMISSIONS) and SYSTEM.tenant_id is None


@pytest.mark.parametrize("role, allowed, denied", [
    ("viewer", {"tenant:read"}, {"tenant:update", "audit:read", "token:issue", "tenant:create"}),
    ("auditor", {"audit:read", "audit:verify", "events:stream"}, {"tenant:update", "token:issue"}),
    ("tenant-admin", {"tenant:update", "audit:read"}, {"tenant:create", "tenant:suspend", "token:issue",
                                                       "audit:verify", "projection:admin"}),
])
def test_each_role_allows_its_permissions_and_nothing_else(role, allowed, denied):
    p = principal(role)
    for permission in allowed:
        authorize(p, permission)
    for permission in denied:
        assert "lacks the permission" in forbidden(p, permission).detail


def test_roles_combine_and_unknown_roles_grant_nothing():
    assert principal("viewer", "auditor").permissions == ROLES["viewer"] | ROLES["auditor"]
    assert principal("root").permissions == frozenset()
    forbidden(principal("root"), "tenant:read")
    assert principal().permissions == frozenset()


def test_an_unknown_permission_is_a_programming_error():
    with pytest.raises(ValueError, match="tenant:destroy"):
        authorize(SYSTEM, "tenant:destroy")


def test_a_tenant_scoped_principal_acts_only_within_its_tenant():
    p = principal("tenant-admin", tenant_id="acme")
    authorize(p, "tenant:update", "acme")
    assert "own tenant" in forbidden(p, "tenant:update", "globex").detail
    forbidden(p, "tenant:read", None)  # platform-wide scope is not its tenant
    forbidden(p, "tenant:create", "acme")  # confinement never adds permissions


def test_a_search_naming_no_tenant_by_an_empty_id_is_not_the_callers_own():
    p = principal("auditor", tenant_id="acme")
    authorize_search(p, "audit:read", None)  # not naming one: its own
    authorize_search(p, "audit:read", "acme")
    for named in ("", "globex"):
        with pytest.raises(Forbidden):
            authorize_search(p, "audit:read", named)


def test_a_platform_principal_may_act_in_any_tenant():
    p = principal("auditor")
    authorize(p, "audit:read", "acme")
    authorize(p, "audit:read", "globex")
    authorize(p, "audit:read", None)


def test_visible_tenants_and_actor():
    assert visible_tenants(principal("viewer", tenant_id="acme")) == "acme"
    assert visible_tenants(principal("viewer")) is None
    assert principal("viewer").actor() == Actor(principal="p-1", auth_method="token")


def test_permissions_are_derived_not_settable():
    with pytest.raises(TypeError):
        Principal(id="x", auth_method="t", roles=frozenset(), permissions=frozenset(PERMISSIONS))
