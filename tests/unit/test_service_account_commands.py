"""Disabling a service account through the real runtime (SQLite store, credential vault): its keys stop, and a key
whose issuance the disable lands in the middle of is refused or revoked, never left working.

The races are forced, not hoped for: ``DisableFirst`` is the real store, but before it appends one chosen event it
lets a disable from another writer (its own stream cache and turn-taking, as another process has) land first.
"""

from __future__ import annotations

import dataclasses

import pytest

from commands.authz import SYSTEM, Forbidden, Principal
from commands.runtime import CommandContext, StreamCache, StreamLocks
from commands.service_accounts import (DisableServiceAccount, EnableServiceAccount, disable_service_account,
                                       enable_service_account)
from commands.tokens import (CreateServiceAccount, IssueApiToken, create_service_account, issue_api_token,
                             parse_token)
from domain.errors import DomainError

ADMIN = CommandContext(principal=SYSTEM)


class DisableFirst:
    """The runtime's store; the first append of an event of type ``before`` waits for ``disable`` to land."""

    def __init__(self, store, before: str, disable) -> None:
        self._store, self._before, self._disable, self.fired = store, before, disable, False

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def append(self, request):
        if not self.fired and request.events[0].type == self._before:
            self.fired = True
            await self._disable()
        return await self._store.append(request)


async def _events(runtime, prefix: str) -> list[tuple[str, dict]]:
    return [(e.type, e.payload) for e in await runtime.store.read_all(0, 1000) if e.stream_id.startswith(prefix)]


async def _raced(runtime, before: str, ctx: CommandContext = ADMIN) -> tuple[DomainError, str]:
    """Issue a key of account ``ci`` while a disable from another writer lands just before ``before`` is appended."""
    await create_service_account(CreateServiceAccount(name="ci"), ADMIN, runtime.services)
    other = dataclasses.replace(runtime.services, streams=StreamCache(), locks=StreamLocks())
    store = DisableFirst(runtime.store, before, lambda: disable_service_account(
        DisableServiceAccount(name="ci", reason="leaked"), ADMIN, other, runtime.vault))
    issuing = dataclasses.replace(runtime.services, store=store)
    with pytest.raises(DomainError) as refused:
        await issue_api_token(IssueApiToken(name="k", roles=["viewer"], service_account="ci"), ctx, issuing,
                              runtime.vault)
    assert store.fired
    assert (refused.value.code, refused.value.field) == ("service_account_disabled", "service_account")
    verifiers = {row[0] for row in runtime.vault._conn().execute("SELECT token_id FROM credential_verifiers")}
    return refused.value, verifiers


async def test_a_disable_landing_before_the_key_is_recorded_on_the_account_refuses_it(runtime):
    _, verifiers = await _raced(runtime, "service_account.key_issued")
    assert await _events(runtime, "apitoken-") == []  # no key was issued
    account = await _events(runtime, "serviceaccount-ci")
    assert [t for t, _ in account] == ["service_account.created", "service_account.disabled"]
    assert account[1][1]["keys"] == [] and not verifiers  # its verifier went with the refusal


async def test_a_disable_landing_after_the_key_is_recorded_names_it_and_the_issue_revokes_it(runtime):
    once = CommandContext(principal=SYSTEM, idempotency_key="issue-ci-1")
    _, verifiers = await _raced(runtime, "api_token.issued", once)
    account = await _events(runtime, "serviceaccount-ci")
    assert [t for t, _ in account] == ["service_account.created", "service_account.key_issued",
                                       "service_account.disabled"]
    key = account[1][1]["token_id"]
    assert account[2][1]["keys"] == [key] and key not in verifiers
    assert [t for t, _ in await _events(runtime, f"apitoken-{key}")] == ["api_token.issued", "api_token.revoked"]
    with pytest.raises(DomainError) as again:  # a retry under the same key gets the refusal, not the revoked key
        await issue_api_token(IssueApiToken(name="k", roles=["viewer"], service_account="ci"), once, runtime.services,
                              runtime.vault)
    assert again.value.code == "service_account_disabled"


async def test_disabling_revokes_every_key_and_enabling_brings_none_back(runtime):
    await create_service_account(CreateServiceAccount(name="ci"), ADMIN, runtime.services)
    keys = [await issue_api_token(IssueApiToken(name=f"k{i}", roles=["viewer"], service_account="ci"), ADMIN,
                                  runtime.services, runtime.vault) for i in range(2)]
    disabled = await disable_service_account(DisableServiceAccount(name="ci", reason="leaked"), ADMIN,
                                             runtime.services, runtime.vault)
    assert disabled.changed
    assert all(runtime.vault.get_verifier(k.token_id) is None for k in keys)
    for k in keys:
        assert [t for t, _ in await _events(runtime, f"apitoken-{k.token_id}")][-1] == "api_token.revoked"
    with pytest.raises(DomainError, match="disabled"):
        await issue_api_token(IssueApiToken(name="k9", roles=["viewer"], service_account="ci"), ADMIN,
                              runtime.services, runtime.vault)
    await enable_service_account(EnableServiceAccount(name="ci", reason="rotated"), ADMIN, runtime.services,
                                 runtime.vault)
    assert all(runtime.vault.get_verifier(k.token_id) is None for k in keys)
    fresh = await issue_api_token(IssueApiToken(name="k3", roles=["viewer"], service_account="ci"), ADMIN,
                                  runtime.services, runtime.vault)
    assert runtime.vault.get_verifier(fresh.token_id) is not None
    payloads = str(await _events(runtime, "serviceaccount-ci"))
    assert not any(parse_token(k.token)[1] in payloads for k in [*keys, fresh])  # no secret in an event


async def test_only_a_holder_of_serviceaccount_manage_in_the_tenant_disables(services, runtime):
    await create_service_account(CreateServiceAccount(name="ci", tenant_id="acme"), ADMIN, runtime.services)
    for roles, tenant in (({"ca-operator"}, "acme"), ({"auditor"}, "acme"), ({"tenant-admin"}, "globex")):
        ctx = CommandContext(principal=Principal(id="u", auth_method="t", roles=frozenset(roles), tenant_id=tenant))
        with pytest.raises(Forbidden):
            await disable_service_account(DisableServiceAccount(name="ci", tenant_id="acme", reason="x"), ctx,
                                          runtime.services, runtime.vault)
    own = CommandContext(principal=Principal(id="u", auth_method="t", roles=frozenset({"tenant-admin"}),
                                             tenant_id="acme"))
    done = await disable_service_account(DisableServiceAccount(name="ci", tenant_id="acme", reason="x"), own,
                                         runtime.services, runtime.vault)
    assert done.changed


async def test_enabling_first_finishes_the_revocations_a_disable_did_not_complete(runtime):
    """A disable whose process died after its event (verifiers left), and a key it could not name (the read model was
    rebuilding): enabling the account revokes both before it lets keys be issued again."""
    from commands.runtime import run
    from domain import service_account

    await create_service_account(CreateServiceAccount(name="ci"), ADMIN, runtime.services)
    named, unnamed = [await issue_api_token(IssueApiToken(name=f"k{i}", roles=["viewer"], service_account="ci"), ADMIN,
                                            runtime.services, runtime.vault) for i in range(2)]
    runtime.runner.catch_up_once()  # the api_tokens read model lists both
    halfway = service_account.ServiceAccountDisabled(reason="crashed", keys=[named.token_id])
    await run(runtime.services, ADMIN, halfway, tenant_id="_system", stream_id=service_account.stream_id("ci"),
              stream_type=service_account.STREAM_TYPE, fold=service_account.fold, decide=lambda s: [halfway])
    assert runtime.vault.get_verifier(named.token_id) is not None
    with pytest.raises(DomainError, match="reason"):  # refused before anything is revoked
        await enable_service_account(EnableServiceAccount(name="ci", reason=" "), ADMIN, runtime.services,
                                     runtime.vault)
    assert runtime.vault.get_verifier(named.token_id) is not None
    await enable_service_account(EnableServiceAccount(name="ci", reason="fixed"), ADMIN, runtime.services,
                                 runtime.vault)
    for key in (named, unnamed):
        assert runtime.vault.get_verifier(key.token_id) is None
        assert [t for t, _ in await _events(runtime, f"apitoken-{key.token_id}")][-1] == "api_token.revoked"
    assert [t for t, _ in await _events(runtime, "serviceaccount-ci")][-1] == "service_account.enabled"
