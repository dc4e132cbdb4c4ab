"""What a suspended tenant may still do: every command handler declares it (commands/tenants.py), and the
declared refusals refuse, before anything is written, only where the caller acts in the suspended tenant."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import commands
from commands import tenants
from commands.authz import SYSTEM, Forbidden, Principal
from commands.identity import SetUserStatus, set_user_status
from commands.runtime import CommandContext
from commands.tenants import (WHILE_SUSPENDED, SuspendTenant, refused_while_suspended,
                              suspend_tenant)
from commands.tokens import IssueApiToken, issue_api_token
from domain.errors import DomainError

ADMIN = CommandContext(principal=SYSTEM)
KEYS = "serviceaccount:manage"  # what a tenant-admin issues API keys with (POST /v1/service-accounts/{name}/keys)


def handlers() -> dict[str, object]:
    """Every command handler in commands/: a public coroutine function whose first parameter is the command or
    the context (``handle(cmd, ctx, ...)``; ``start_enrollment(ctx, ...)`` acts on the caller's own account)."""
    found = {}
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"commands.{info.name}")
        for name, function in vars(module).items():
            if (name.startswith("_") or not inspect.iscoroutinefunction(function)
                    or function.__module__ != module.__name__):
                continue
            parameters = list(inspect.signature(function).parameters)
            if parameters and parameters[0] in ("cmd", "ctx"):
                found[f"{info.name}.{name}"] = function
    return found


def test_every_command_handler_says_whether_a_suspended_tenant_may_run_it():
    found = handlers()
    assert len(found) > 40  # the walk sees the handlers at all
    undeclared = sorted(name for name, handler in found.items() if not hasattr(handler, "while_suspended"))
    assert not undeclared, ("command handlers without @refused_while_suspended or @allowed_while_suspended "
                            f"(commands/tenants.py): {undeclared}")
    assert found.keys() <= WHILE_SUSPENDED.keys()
    assert all(rule.reason.strip() for rule in WHILE_SUSPENDED.values())


def test_what_must_go_on_is_allowed_and_what_signs_or_adds_credentials_is_refused():
    allowed = {name for name, rule in WHILE_SUSPENDED.items() if not rule.refused}
    assert {"revoke.revoke_certificate", "revoke.revoke_ca", "crl.install_crl", "tenants.resume_tenant",
            "sessions.password_login", "cas.disable_ca", "tokens.revoke_api_token"} <= allowed
    refused = WHILE_SUSPENDED.keys() - allowed
    assert {"ca_rollover.rollover_ca_key", "cas.cross_certify", "identity.create_user", "tokens.issue_api_token",
            "certificates.export_private_key", "certificates.issue_certificate",
            "renewal.renew_certificate"} <= refused


@pytest.fixture
async def services(services):
    """acme suspended, globex active."""
    await suspend_tenant(SuspendTenant(tenant_id="acme", reason="unpaid"), ADMIN, services)
    return services


def ctx(*roles: str, tenant_id: str | None = None) -> CommandContext:
    return CommandContext(principal=Principal(id="p-1", auth_method="token", roles=frozenset(roles),
                                              tenant_id=tenant_id))


async def test_a_refused_handler_refuses_in_the_suspended_tenant_before_writing(services, runtime):
    head = await services.store.head_position()
    for context in (ctx("tenant-admin", tenant_id="acme"), ADMIN):
        with pytest.raises(DomainError) as refused:
            await issue_api_token(IssueApiToken(name="k", roles=["viewer"], tenant_id="acme"), context, services,
                                  runtime.vault, permission=KEYS)
        assert (refused.value.code, refused.value.field) == ("tenant_suspended", "tenant_id")
    assert await services.store.head_position() == head
    issued = await issue_api_token(IssueApiToken(name="k", roles=["viewer"], tenant_id="globex"),
                                   ctx("tenant-admin", tenant_id="globex"), services, runtime.vault, permission=KEYS)
    assert issued.token  # another tenant is not affected


async def test_another_tenants_caller_is_refused_as_forbidden_not_told_of_the_suspension(services, runtime):
    with pytest.raises(Forbidden):
        await issue_api_token(IssueApiToken(name="k", roles=["viewer"], tenant_id="acme"),
                              ctx("tenant-admin", tenant_id="globex"), services, runtime.vault, permission=KEYS)


async def test_a_conditional_refusal_refuses_only_the_commands_it_selects(services):
    enable = SetUserStatus(username="nobody", enabled=True, tenant_id="acme")
    with pytest.raises(DomainError) as refused:
        await set_user_status(enable, ADMIN, services)
    assert refused.value.code == "tenant_suspended"
    with pytest.raises(DomainError) as disabled:  # disabling is not refused for the suspension: the user is unknown
        await set_user_status(SetUserStatus(username="nobody", enabled=False, tenant_id="acme"), ADMIN, services)
    assert disabled.value.code != "tenant_suspended"


async def test_a_command_without_a_tenant_is_not_checked(services, monkeypatch):
    monkeypatch.setattr(tenants, "WHILE_SUSPENDED", {})  # this test's handler is not one of the service's

    @refused_while_suspended("test")
    async def handler(cmd, ctx, services):
        return "ran"

    assert await handler(IssueApiToken(name="k", roles=[]), ADMIN, services) == "ran"
