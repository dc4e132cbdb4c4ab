"""The key vault's KEK registry (which KEK wraps a tenant's new data keys, which are retired) and re-wrapping.

Two tables in ``keys.db`` beside ``private_keys``. ``kek_assignments`` is append-only: a tenant's new keys
are wrapped under the newest KEK assigned to it, else under the newest assigned to every tenant (scope
""), else under the provider's own default (``master.key``, the hybrid key file, the tenant's first key
on the token). ``retired_keks`` lists destroyed KEKs: no row may name one (every insert and every
re-wrap checks, in the statement that writes), so a process that read the registry just before a
retirement cannot leave a key under it.

A re-wrap changes only ``kek_provider``, ``kek_id`` and ``wrapped_dek`` of a row, never its data key,
nonce or ciphertext: each row is unwrapped with its old KEK, wrapped under the target, checked by
unwrapping that, and updated by compare-and-set on the old wrap, one row per transaction. A run that
stops (a crash, the token gone) leaves every row under its old KEK or its new one; running again
finishes the rest.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from commands.runtime import rfc3339
from domain.errors import DomainError
from domain.vault import KekInUse, KekRef, KekUsage, NewKek, RewrapCounts, parse_kek_id
from infra.keystore.kek import KekProvider, KekUnavailable, RotatingKekProvider, UnwrapFailed, wipe

log = logging.getLogger(__name__)

BATCH = 64
PASSES = 3  # a row a concurrent put wrapped under the old KEK, behind the cursor, is found by the next pass
SCHEMA = """
CREATE TABLE IF NOT EXISTS kek_assignments (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    provider    TEXT NOT NULL,
    scope       TEXT NOT NULL,
    kek_id      TEXT NOT NULL,
    assigned_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS kek_assignments_scope ON kek_assignments (provider, scope, seq);
CREATE TABLE IF NOT EXISTS retired_keks (
    kek_id     TEXT PRIMARY KEY,
    provider   TEXT NOT NULL,
    retired_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS private_keys_kek ON private_keys (kek_id);
"""
NOT_RETIRED = "NOT EXISTS (SELECT 1 FROM retired_keks WHERE kek_id = ?)"
Progress = Callable[[int, int], None]


def assigned_kek(conn: sqlite3.Connection, provider: str, tenant_id: str) -> str | None:
    """The KEK the registry names for the tenant's new keys under ``provider``, or None (the provider's own)."""
    row = conn.execute("SELECT kek_id FROM kek_assignments WHERE provider = ? AND scope IN (?, '') AND kek_id NOT IN "
                       "(SELECT kek_id FROM retired_keks) ORDER BY scope = '', seq DESC LIMIT 1",
                       (provider, tenant_id)).fetchone()
    return row[0] if row else None


def _now() -> str:
    return rfc3339(datetime.now(UTC))


def _scope_name(scope: str) -> str:
    return scope or "*"


def _on_token(kek_id: str) -> KekRef:
    """A KEK id's token and tenant; both None for a key file's (an id ``parse_kek_id`` does not read)."""
    try:
        return parse_kek_id(kek_id)
    except DomainError:
        return KekRef(provider="", kek_id=kek_id)


class KekAdministration:
    """Rotation, re-wrap, status and retirement, mixed into ``SQLiteKeyVault`` (which supplies the members below)."""

    _lock: threading.Lock
    _first_keks: dict[str, str]  # tenant -> its first KEK on the token (``_stored_first_kek``)
    kek_provider: str

    def _connection(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _provider(self, name: str, *, create: bool = False) -> KekProvider:
        raise NotImplementedError

    def _rotating(self, name: str, *, create: bool = False) -> RotatingKekProvider:
        """The provider ``name``, able to rotate; ``create``: a key-file provider used for the first time (a
        re-wrap to ``hybrid``) makes its key file (the default provider has made its own already)."""
        provider = self._provider(name, create=create)
        if not hasattr(provider, "create_kek"):
            raise KekUnavailable(f"KEK provider {name!r} keeps no versions: it cannot rotate or re-wrap")
        return cast(RotatingKekProvider, provider)

    def _read(self, sql: str, *args: Any) -> list[tuple]:
        with self._lock:
            return self._connection().execute(sql, args).fetchall()

    def _tenants(self, provider: str) -> list[str]:
        return [tenant for (tenant,) in self._read(
            "SELECT tenant_id FROM private_keys UNION SELECT scope FROM kek_assignments "
            "WHERE provider = ? AND scope != '' ORDER BY 1", provider)]

    def _target(self, provider: RotatingKekProvider, tenant_id: str) -> str:
        """The KEK that wraps the tenant's new keys under ``provider`` (the tenant's first key on a token is made
        now if it has none)."""
        with self._lock:
            assigned = assigned_kek(self._connection(), provider.provider, tenant_id)
        return assigned or provider.current_kek_id(tenant_id)

    def _stored_first_kek(self, provider: KekProvider, tenant_id: str) -> str | None:
        """For a provider that makes a tenant's first KEK on first use (a key on the token), the one the tenant's
        rows already name on this token, if any. New keys go under it: a key deleted from the token then fails
        their wrap (503) rather than a new one quietly taking its place, which would hide that the rows under the
        old one are lost. Remembered per tenant once found (one look at the tenant's rows per process)."""
        if not getattr(provider, "per_tenant", False):
            return None
        found = self._first_keks.get(tenant_id)
        if found is None:
            serial = getattr(provider, "serial", None)
            on_token = sorted(kek_id for (kek_id,) in self._read(
                "SELECT DISTINCT kek_id FROM private_keys WHERE tenant_id = ? AND kek_provider = ?", tenant_id,
                provider.provider) if _on_token(kek_id).serial == serial)
            if on_token:
                found = self._first_keks[tenant_id] = on_token[0]  # the smallest CKA_ID, as the provider picks
        return found

    def _replaced(self, provider: RotatingKekProvider, scopes: list[str]) -> list[str]:
        """The KEKs that wrapped these scopes' new keys until a rotation (none made to find out)."""
        found = set()
        for scope in scopes:
            with self._lock:
                assigned = assigned_kek(self._connection(), provider.provider, scope)
            found.add(assigned or provider.existing_kek_id(scope))
        return sorted(kek_id for kek_id in found if kek_id)

    # rotation ----------------------------------------------------------------------------

    def create_keks_sync(self, name: str, tenant_id: str | None) -> list[NewKek]:
        """New KEK material for the tenant (None: every tenant), not yet assigned (``assign_keks_sync``)."""
        provider = self._rotating(name, create=True)
        if tenant_id is not None or getattr(provider, "per_tenant", False):
            tenants = [tenant_id] if tenant_id is not None else self._tenants(name)
            return [NewKek(provider=name, replaces=self._replaced(provider, [tenant]), tenant=tenant,
                           kek_id=provider.create_kek(tenant)) for tenant in tenants]
        scopes = [scope for (scope,) in self._read("SELECT DISTINCT scope FROM kek_assignments WHERE provider = ? "
                                                   "AND scope != ''", name)]
        return [NewKek(provider=name, replaces=self._replaced(provider, [*scopes, ""]), tenant=None,
                       kek_id=provider.create_kek(None))]

    def assign_keks_sync(self, created: list[NewKek]) -> None:
        """From now on new keys of each scope are wrapped under its new KEK (every tenant: its own KEKs of the
        provider are superseded too)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for new in created:
                    scopes = [new.tenant] if new.tenant is not None else ["", *(scope for (scope,) in conn.execute(
                        "SELECT DISTINCT scope FROM kek_assignments WHERE provider = ? AND scope != ''",
                        (new.provider,)))]
                    conn.executemany("INSERT INTO kek_assignments (provider, scope, kek_id, assigned_at) "
                                     "VALUES (?, ?, ?, ?)", [(new.provider, s, new.kek_id, _now()) for s in scopes])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # re-wrap ---------------------------------------------------------------------------

    def rewrap_plan_sync(self, name: str, tenant_id: str | None) -> tuple[dict[str, str], RewrapCounts, int]:
        """Each tenant's target KEK, the KEKs its rows are under now, and how many rows are not under the target."""
        provider = self._rotating(name, create=True)
        targets = {tenant: self._target(provider, tenant)
                   for tenant in ([tenant_id] if tenant_id is not None else self._tenants(name))}
        sources: set[str] = set()
        rows = 0
        for tenant, target in targets.items():
            for kek_id, count in self._read(
                    "SELECT kek_id, COUNT(*) FROM private_keys WHERE tenant_id = ? AND NOT (kek_provider = ? "
                    "AND kek_id = ?) GROUP BY kek_id", tenant, name, target):
                sources.add(kek_id)
                rows += count
        counts = RewrapCounts(to_kek_ids=sorted(set(targets.values())), from_kek_ids=sorted(sources))
        return targets, counts, rows

    def rewrap_sync(self, name: str, targets: dict[str, str], total: int,
                    progress: Progress | None = None) -> RewrapCounts:
        """Re-wrap every row of these tenants that is not under its target KEK; see the module docstring."""
        provider = self._rotating(name)
        done, tally = 0, {"rewrapped": 0, "changed": 0}
        failed: list[str] = []
        sources: set[str] = set()
        stopped = None
        try:
            for tenant, target in targets.items():
                for _ in range(PASSES):
                    moved = 0
                    for row in self._stale_rows(tenant, name, target, failed):
                        sources.add(row[2])
                        outcome = self._rewrap_row(provider, tenant, target, row)
                        if outcome == "failed":
                            failed.append(row[0])
                        else:
                            tally[outcome] += 1
                            moved += 1
                        done += 1
                        if progress is not None:
                            progress(done, max(total, done))
                    if not moved:
                        break
        except KekUnavailable as exc:  # the target does not answer: nothing further can be re-wrapped
            stopped = str(exc)
            log.error("re-wrap stopped: %s", exc)
        remaining = sum(self._read("SELECT COUNT(*) FROM private_keys WHERE tenant_id = ? AND NOT (kek_provider = ? "
                                   "AND kek_id = ?)", tenant, name, target)[0][0] for tenant, target in targets.items())
        return RewrapCounts(to_kek_ids=sorted(set(targets.values())), from_kek_ids=sorted(sources),
                            rewrapped=tally["rewrapped"], changed=tally["changed"], failed=failed,
                            remaining=remaining, stopped=stopped)

    def _stale_rows(self, tenant: str, name: str, target: str, failed: list[str]):
        after = ""
        while rows := self._read("SELECT key_id, kek_provider, kek_id, wrapped_dek FROM private_keys WHERE "
                                 "tenant_id = ? AND key_id > ? AND NOT (kek_provider = ? AND kek_id = ?) "
                                 "ORDER BY key_id LIMIT ?", tenant, after, name, target, BATCH):
            yield from (row for row in rows if row[0] not in failed)
            after = rows[-1][0]

    def _rewrap_row(self, provider: RotatingKekProvider, tenant: str, target: str, row: tuple) -> str:
        """One row: "rewrapped", "changed" (someone else changed or deleted it first) or "failed" (its old KEK
        cannot unwrap it). KekUnavailable from the target propagates: the run stops."""
        key_id, old_provider, old_kek, old_wrapped = row
        dek = check = None
        try:
            try:
                dek = self._provider(old_provider).unwrap(tenant, old_kek, bytes(old_wrapped))
            except (KekUnavailable, UnwrapFailed) as exc:
                log.error("key %s of tenant %s: cannot unwrap under %s: %s", key_id, tenant, old_kek, exc)
                return "failed"
            kek_id, wrapped = provider.wrap(tenant, dek, target)
            check = provider.unwrap(tenant, kek_id, wrapped)
            if kek_id != target or not hmac.compare_digest(bytes(check), bytes(dek)):
                raise KekUnavailable(f"{target} did not give back the data key it wrapped: left {key_id} as it was")
            with self._lock:
                updated = self._connection().execute(
                    "UPDATE private_keys SET kek_provider = ?, kek_id = ?, wrapped_dek = ? WHERE key_id = ? "
                    f"AND tenant_id = ? AND kek_provider = ? AND kek_id = ? AND wrapped_dek = ? AND {NOT_RETIRED}",
                    (provider.provider, kek_id, wrapped, key_id, tenant, old_provider, old_kek, old_wrapped,
                     kek_id)).rowcount
            return "rewrapped" if updated else "changed"
        finally:
            wipe(dek)
            wipe(check)

    # status and retirement -------------------------------------------------------------

    def kek_usage_sync(self) -> list[KekUsage]:
        """Every KEK that rows name, the registry assigns or retired, with its rows per tenant."""
        usage: dict[str, dict[str, Any]] = {}

        def entry(provider: str, kek_id: str) -> dict[str, Any]:
            return usage.setdefault(kek_id, {"provider": provider, "kek_id": kek_id, "rows": {}, "current_for": []})

        for provider, kek_id, tenant, count in self._read(
                "SELECT kek_provider, kek_id, tenant_id, COUNT(*) FROM private_keys GROUP BY 1, 2, 3"):
            entry(provider, kek_id)["rows"][tenant] = count
        for provider, kek_id in self._read("SELECT DISTINCT provider, kek_id FROM kek_assignments"):
            entry(provider, kek_id)
        for provider, scope, kek_id in self._read(
                "SELECT provider, scope, kek_id FROM kek_assignments a WHERE seq = (SELECT MAX(seq) FROM "
                "kek_assignments b WHERE b.provider = a.provider AND b.scope = a.scope) ORDER BY scope"):
            entry(provider, kek_id)["current_for"].append(_scope_name(scope))
        default = self._provider(self.kek_provider)
        for kek_id in getattr(default, "kek_ids_on_disk", list)():  # a rotation that died before it was assigned
            entry(self.kek_provider, kek_id)
        base = getattr(default, "kek_id", None)
        if base:  # master.key or the hybrid key file: every tenant's until a rotation for every tenant
            fallback = not self._read("SELECT 1 FROM kek_assignments WHERE provider = ? AND scope = ''",
                                      self.kek_provider)
            entry(self.kek_provider, base)["current_for"][:0] = ["*"] if fallback else []
        # a tenant's first key on the token (its id names the tenant: known whether or not the token answers)
        assigned = {scope for (scope,) in self._read("SELECT DISTINCT scope FROM kek_assignments WHERE provider = ?",
                                                     self.kek_provider)}
        for fields in usage.values():
            if fields["provider"] == self.kek_provider and not fields["current_for"] and _on_token(fields["kek_id"]).tenant is not None:
                fields["current_for"] = sorted(set(fields["rows"]) - assigned)
        for kek_id, provider, retired_at in self._read("SELECT kek_id, provider, retired_at FROM retired_keks"):
            entry(provider, kek_id)["retired_at"] = datetime.fromisoformat(retired_at)
        unopened: dict[str, str] = {}  # a provider that cannot be opened (a token absent): once per status
        for fields in usage.values():
            if "retired_at" not in fields:
                reason = self._unavailable(fields["provider"], fields["kek_id"], unopened)
                fields["available"], fields["unavailable_reason"] = reason is None, reason
        return [KekUsage(**fields) for _, fields in sorted(usage.items(), key=lambda item: (item[1]["provider"],
                                                                                            item[0]))]

    def _unavailable(self, name: str, kek_id: str, unopened: dict[str, str]) -> str | None:
        """Why ``kek_id`` cannot be used right now (one line), or None: its provider opened the way the vault opens
        it (a token logged in), then asked for that KEK; nothing is unwrapped, and the reasons hold no secret."""
        if name in unopened:
            return unopened[name]
        try:
            provider = self._provider(name)
        except KekUnavailable as exc:
            unopened[name] = " ".join(str(exc).split())
            return unopened[name]
        try:
            check = getattr(provider, "check_kek", None)
            if check is None:
                return f"KEK provider {name!r} cannot be asked whether a KEK is usable"
            check(kek_id)
        except KekUnavailable as exc:
            return " ".join(str(exc).split())
        return None

    def _in_use_for(self, conn: sqlite3.Connection, provider: RotatingKekProvider, kek_id: str) -> list[str]:
        """Whose new keys ``kek_id`` wraps here: none unless its provider is CSM_KEK_PROVIDER (a process configured
        otherwise that tries to write under a retired KEK is refused by the insert's check)."""
        if provider.provider != self.kek_provider:
            return []
        scopes = [_scope_name(scope) for (scope,) in conn.execute(
            "SELECT scope FROM kek_assignments a WHERE provider = ? AND kek_id = ? AND seq = (SELECT MAX(seq) "
            "FROM kek_assignments b WHERE b.provider = a.provider AND b.scope = a.scope)", (provider.provider, kek_id))]
        base = provider.base_scope(kek_id)
        assigned = conn.execute("SELECT 1 FROM kek_assignments WHERE provider = ? AND scope = ? LIMIT 1",
                                (provider.provider, base)).fetchone() if base is not None else True
        if not assigned and provider.existing_kek_id(base or "") == kek_id:  # the provider's own KEK for the scope
            scopes.append(_scope_name(base or ""))
        return scopes

    def mark_kek_retired_sync(self, kek_id: str) -> str:
        """Record ``kek_id`` retired, refused (409) while it wraps new keys of anyone or any row names it; returns
        its provider. From then on no row can be written under it; ``destroy_kek_sync`` then destroys it."""
        name = parse_kek_id(kek_id).provider
        provider = self._rotating(name)
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not conn.execute(f"SELECT {NOT_RETIRED}", (kek_id,)).fetchone()[0]:
                    conn.execute("COMMIT")
                    return name
                users = self._in_use_for(conn, provider, kek_id)
                if users:
                    raise KekInUse("kek_in_use", f"{kek_id} wraps the new keys of {', '.join(users)}: rotate "
                                   "(csm keys rotate-kek) and re-wrap first")
                (rows,) = conn.execute("SELECT COUNT(*) FROM private_keys WHERE kek_id = ?", (kek_id,)).fetchone()
                if rows:
                    raise KekInUse("kek_referenced", f"{rows} stored keys are wrapped under {kek_id}: re-wrap them "
                                   "first (csm keys rewrap)")
                conn.execute("INSERT INTO retired_keks VALUES (?, ?, ?)", (kek_id, name, _now()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return name

    def destroy_kek_sync(self, kek_id: str) -> None:
        """Destroy a KEK ``mark_kek_retired_sync`` retired: delete its file, or its object on the token."""
        if self._read(f"SELECT {NOT_RETIRED}", kek_id)[0][0]:
            raise KekInUse("kek_not_retired", f"{kek_id} is not retired")
        self._rotating(parse_kek_id(kek_id).provider).retire_kek(kek_id)
        log.info("destroyed KEK %s", kek_id)

    # the port, off the event loop ------------------------------------------------------

    async def create_keks(self, provider: str, tenant_id: str | None) -> list[NewKek]:
        return await asyncio.to_thread(self.create_keks_sync, provider, tenant_id)

    async def assign_keks(self, created: list[NewKek]) -> None:
        await asyncio.to_thread(self.assign_keks_sync, created)

    async def rewrap_plan(self, provider: str, tenant_id: str | None) -> tuple[dict[str, str], RewrapCounts, int]:
        return await asyncio.to_thread(self.rewrap_plan_sync, provider, tenant_id)

    async def rewrap(self, provider: str, targets: dict[str, str], total: int,
                     progress: Progress | None = None) -> RewrapCounts:
        return await asyncio.to_thread(self.rewrap_sync, provider, targets, total, progress)

    async def kek_usage(self) -> list[KekUsage]:
        return await asyncio.to_thread(self.kek_usage_sync)

    async def mark_kek_retired(self, kek_id: str) -> str:
        return await asyncio.to_thread(self.mark_kek_retired_sync, kek_id)

    async def destroy_kek(self, kek_id: str) -> None:
        await asyncio.to_thread(self.destroy_kek_sync, kek_id)
