"""Deleting orphaned vault keys: keys stored before a cutoff that no event in the log names (domain/vault.py).

The whole log is read, page by page, and every string in every payload strikes the key it equals off the list:
a key stays if anything names it, whatever the field. The deletion is recorded first (``vault.orphans_deleted``
in the system tenant), then done: a sweep that stops in between leaves keys that the next sweep finds and
deletes again, never a deletion without its record.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from commands import pki
from commands.authz import authorize
from commands.runtime import CommandContext, Services, run
from commands.tenants import allowed_while_suspended
from domain import vault
from domain.errors import DomainError

PAGE = 1000
MIN_AGE = timedelta(hours=1)  # longer than any command takes from its key's put to its append


class SweepOrphanKeys(msgspec.Struct, frozen=True, kw_only=True):
    older_than_hours: int = 24  # only keys stored at least this long ago (at least 1)
    dry_run: bool = False


class SweptKeys(msgspec.Struct, frozen=True, kw_only=True):
    orphans: list[vault.StoredKey]
    stored_before: datetime
    events_read: int
    deleted: int  # 0 on a dry run


@allowed_while_suspended("platform housekeeping in the system tenant: deletes only keys no event names")
async def sweep_orphan_keys(cmd: SweepOrphanKeys, ctx: CommandContext, services: Services) -> SweptKeys:
    """Find the vault keys stored before the cutoff that no event names; unless ``dry_run``, record and delete them."""
    authorize(ctx.principal, "vault:sweep", None)
    age = timedelta(hours=cmd.older_than_hours)
    if age < MIN_AGE:
        raise DomainError("validation_failed", f"only keys at least {MIN_AGE.total_seconds() / 3600:g} hour old are "
                          "swept: a younger one may belong to a command still running", field="older_than_hours")
    keys = pki.vault_of(services)
    stored_before = services.clock.now() - age
    candidates = {key.key_id: key for key in await keys.stored_before(stored_before)}
    position = read = 0
    while candidates and (events := await services.store.read_all(position, PAGE)):
        vault.drop_named(candidates, (event.payload for event in events))
        position, read = events[-1].global_position or position, read + len(events)
    found = vault.oldest_first(candidates.values())
    if cmd.dry_run or not found:
        return SweptKeys(orphans=found, stored_before=stored_before, events_read=read, deleted=0)
    recorded = vault.OrphanKeysDeleted(key_ids=[key.key_id for key in found], stored_before=stored_before,
                                       events_read=read)
    await run(services, ctx, cmd, tenant_id=vault.TENANT, stream_id=vault.STREAM_ID, stream_type=vault.STREAM_TYPE,
              fold=lambda events: None, decide=lambda _state: [recorded])
    deleted = await keys.delete(recorded.key_ids)
    return SweptKeys(orphans=found, stored_before=stored_before, events_read=read, deleted=deleted)
