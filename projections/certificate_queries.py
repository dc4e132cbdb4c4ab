"""Queries of the certificate read model (projections/certificates.py): one certificate, the search with its
cursor, and what the renewal scheduler, the expiry gauges, quotas and key holders count.

Times: ``not_before`` and ``not_after`` are X.509 times, compared through ``validity_time``; "live" is ``live()``.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, date, datetime, timedelta


from commands.runtime import rfc3339
from projections.certificates import COLUMNS, RENEW_CLASSES, live, validity_time

_LIVE = live()

SORTS = {"issued": "position", "expiry": "not_after"}
# The ``status`` filters of :func:`search` (GET /v1/certificates?status=, `csm cert list --status`).
SEARCH_STATUSES = ("issued", "valid", "expired", "revoked")


def _row(row: tuple) -> dict:
    item = dict(zip(COLUMNS, row))
    item["sans"] = json.loads(item["sans"])
    item["tags"] = json.loads(item["tags"])
    item["has_key"] = bool(item["has_key"])
    item["auto_renew"] = bool(item["auto_renew"])
    item["last_verified"] = None if item["last_verified"] is None else bool(item["last_verified"])
    return item


def get(conn: sqlite3.Connection, certificate_id: str, scope: str | None) -> dict | None:
    """One certificate, or None if absent or outside ``scope``."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM certificates WHERE certificate_id = ?"
    args: tuple = (certificate_id,)
    if scope is not None:
        sql, args = sql + " AND tenant_id = ?", (certificate_id, scope)
    row = conn.execute(sql, args).fetchone()
    return _row(row) if row else None


def encode_cursor(row: dict, sort: str) -> str:
    raw = json.dumps([row[SORTS[sort]], row["certificate_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple:
    """The (sort key, certificate id) a cursor points after; ValueError if it is not one of ours."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor from this API") from exc
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)
            and isinstance(value[0], (int, str))):
        raise ValueError("not a cursor from this API")
    return tuple(value)


def search(conn: sqlite3.Connection, scope: str | None, *, tenant_id: str | None = None, ca_id: str | None = None,
           common_name: str | None = None, san: str | None = None, serial: str | None = None,
           fingerprint: str | None = None, issuer: str | None = None, status: str | None = None,
           algorithm: str | None = None, profile: str | None = None, tag: str | None = None,
           expires_after: datetime | None = None, expires_before: datetime | None = None,
           now: datetime | None = None, live_only: bool = False,
           sort: str = "issued", cursor: tuple | None = None, limit: int = 100) -> list[dict]:
    """Certificates matching every given filter, keyset-paginated by ``sort``; confined to ``scope`` if set.

    ``status`` "expired" and "valid" compare ``not_after`` with ``now``; ``issuer`` is a CA id
    or an issuer DN; ``common_name`` and ``san`` accept a trailing ``*`` as a prefix match. ``live_only`` keeps the
    live certificates (:func:`live`: what ``expiring_counts`` counts).
    """
    clauses, args = [], []

    def where(clause: str, *values) -> None:
        clauses.append(clause)
        args.extend(values)

    # A fingerprint is found through its own index, a serial through (tenant, CA, serial) for each of the CAs
    # (certificate_cas: every CA a certificate can be issued under). Without statistics SQLite otherwise walked the
    # tenant's whole common-name index for them (100 ms for 56,000 certificates, on the event loop: is_selective),
    # or, across tenants, scanned the table (docs/architecture.md, "Query plans").
    tenant = "+c.tenant_id = ?" if fingerprint else "c.tenant_id = ?"
    if scope is not None:
        where(tenant, scope)
    if tenant_id is not None:
        where(tenant, tenant_id)
    if serial:
        where("(c.tenant_id, c.ca_id) IN (SELECT tenant_id, ca_id FROM certificate_cas)")
    for column, value in (("ca_id", ca_id), ("serial_hex", serial and serial.lower().lstrip("0").rjust(40, "0")),
                          ("fingerprint", fingerprint and fingerprint.lower().replace(":", "")),
                          ("algorithm", algorithm), ("profile", profile)):
        if value:
            where(f"c.{column} = ?", value)
    # An exact common name is found through the tenant's folded common names (the index's lower() is ASCII's, as
    # LIKE's). A common-name prefix or a SAN that matches few of the tenant's certificates is looked up in its own index
    # and its rows sorted; one that matches many keeps the walk in order, which stops at the page's end
    # (docs/architecture.md, "Query plans").
    tenant_of = scope if scope is not None else tenant_id
    few = _few(conn, tenant_of, common_name if tenant_of is not None else None, san)
    if common_name and not common_name.endswith("*"):  # "+": SQLite put the value in lower() and lost the index
        where("+c.common_name = ? AND lower(c.common_name) = ?", common_name, _fold(common_name))
    elif common_name:
        where(*_text_match("c.common_name", common_name))
        if "common_name" in few:
            for clause, bound in _prefix_range("lower(c.common_name)", _fold(common_name[:-1])):
                where(clause, bound)
    if san:
        # The names' key is (tenant, value, certificate): a certificate's own names cannot be looked up by it, and a
        # prefix tested row by row scanned the tenant's every name for each certificate walked (844 s for a prefix of
        # few names in a tenant of 56,000 certificates). The names matching are read once, through the key's range;
        # when many match, "+" keeps the walk in order, testing each certificate against them.
        column, value = _text_match("n.value", san.lower())
        ranged = _prefix_range("n.value", san.lower()[:-1]) if san.endswith("*") else [("n.value = ?", value)]
        matching = f"{' AND '.join(clause for clause, _ in ranged)} AND {column}"
        plus = "" if "san" in few else "+"
        if tenant_of is not None:
            where(f"{plus}c.certificate_id IN (SELECT n.certificate_id FROM certificate_names n WHERE n.tenant_id = ? "
                  f"AND {matching})", tenant_of, *(bound for _, bound in ranged), value)
        else:
            where(f"({plus}c.tenant_id, {plus}c.certificate_id) IN (SELECT n.tenant_id, n.certificate_id "
                  f"FROM certificate_names n WHERE n.tenant_id IN {_TENANTS} AND {matching})",
                  *(bound for _, bound in ranged), value)
    if tag:
        where("EXISTS (SELECT 1 FROM certificate_tags t WHERE t.tenant_id = c.tenant_id "
              "AND t.certificate_id = c.certificate_id AND t.tag = ?)", tag)
    if issuer:
        where("(c.ca_id = ? OR c.issuer_dn = ?)", issuer, issuer)
    if status in ("expired", "valid"):
        if now is None:
            raise ValueError(f"status {status!r} needs now")
        # In issuance order, the tenant is walked in order and each row tested, which stops at the page's end; given
        # the plain column, SQLite read the tenant's whole expiry range and sorted it (65-95 ms for 56,000
        # certificates). The walk reads the position index's own copy of not_after and status (DeferredSeek).
        expiry = "c.not_after" if sort == "expiry" else "+c.not_after"
        if status == "expired":
            where(f"{expiry} < ?", validity_time(now, up=True))
        else:
            where(f"{expiry} >= ? AND c.status = 'issued'", validity_time(now, up=True))
    elif status:
        where("c.status = ?", status)
    if live_only:
        where(live("c"))
    if expires_after:  # with expires_before: the bounds of expiring_bounds, so the list and the gauge agree
        where("c.not_after >= ?", validity_time(expires_after, up=True))
    if expires_before:
        where("c.not_after < ?", validity_time(expires_before, up=True))
    order = SORTS[sort]
    if cursor is not None:
        where(f"(c.{order}, c.certificate_id) > (?, ?)", *cursor)
    # An exact common name, serial or fingerprint (or a name matching few: ``_few``) picks a few rows through its
    # own index. Given a plain column to order by, SQLite walks the tenant's whole position (or expiry) index
    # instead and tests every row; the "+" (same order, same rows) keeps it on the selective index.
    selective = bool(few) or is_selective(common_name=common_name, serial=serial, fingerprint=fingerprint)
    if scope is None and tenant_id is None and not selective:
        # Across tenants no index is in this order: SQLite sorted the whole table for each page (2 s for 173,000
        # certificates). Each tenant's first ``limit`` rows come in order from its (tenant, position or expiry)
        # index; the page is the first ``limit`` of those (docs/architecture.md, "Query plans").
        within = f" AND {' AND '.join(clauses)}" if clauses else ""
        sql = (f"SELECT {', '.join('o.' + c for c in COLUMNS)} FROM (SELECT DISTINCT tenant_id FROM certificate_cas) t "
               f"JOIN certificates o ON o.rowid IN (SELECT c.rowid FROM certificates c WHERE c.tenant_id = t.tenant_id"
               f"{within} ORDER BY c.{order}, c.certificate_id LIMIT ?) ORDER BY o.{order}, o.certificate_id LIMIT ?")
        return [_row(row) for row in conn.execute(sql, (*args, limit, limit)).fetchall()]
    sql = (f"SELECT {', '.join('c.' + c for c in COLUMNS)} FROM certificates c "
           f"{'WHERE ' + ' AND '.join(clauses) if clauses else ''} "
           f"ORDER BY {'+' if selective else ''}c.{order}, c.certificate_id LIMIT ?")
    return [_row(row) for row in conn.execute(sql, (*args, limit)).fetchall()]


def is_selective(*, common_name: str | None = None, serial: str | None = None, fingerprint: str | None = None) -> bool:
    """True when ``search`` finds its rows through an exact name's, serial's or fingerprint's own index: a few
    index lookups, whatever the size of the table."""
    return bool(serial or fingerprint or (common_name and not common_name.endswith("*")))


# every tenant, so that a name is sought in each tenant's part of a (tenant, ...) key: without statistics, a name
# across tenants scanned the whole index (certificate_cas: every CA a certificate can be issued under)
_TENANTS = "(SELECT DISTINCT tenant_id FROM certificate_cas)"
FEW = 1000  # a name matching fewer of a tenant's certificates than this is looked up; more, the tenant is walked


def _few(conn: sqlite3.Connection, tenant_id: str | None, common_name: str | None, san: str | None) -> set[str]:
    """Which of a search's common-name prefix and SAN match fewer than FEW index entries of the tenant (of every
    tenant if None) ("common_name", "san"): counted from each index alone, at most FEW entries read."""
    probes = []
    if common_name and common_name.endswith("*"):
        probes.append(("common_name", "certificates", "lower(common_name)", _fold(common_name[:-1]), True))
    if san:
        probes.append(("san", "certificate_names", "value", san.lower().removesuffix("*"), san.endswith("*")))
    found = set()
    for name, table, column, text, prefix in probes:
        ranged = _prefix_range(column, text) if prefix else [(f"{column} = ?", text)]
        tenant = ["tenant_id = ?"] if tenant_id is not None else [f"tenant_id IN {_TENANTS}"]
        n = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE "
                         f"{' AND '.join(tenant + [clause for clause, _ in ranged])} LIMIT {FEW})",
                         (*([tenant_id] if tenant_id is not None else []), *(bound for _, bound in ranged))).fetchone()[0]
        if n < FEW:
            found.add(name)
    return found


def _fold(text: str) -> str:
    """``text`` with ASCII letters in lower case, as SQLite's lower() and LIKE fold them (and nothing else)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _prefix_range(column: str, prefix: str) -> list[tuple[str, str]]:
    """The conditions of ``column`` starting with ``prefix``, as a range an index can seek: ``>= prefix`` and
    ``<`` the least string above every one that starts with it (text compares by code point, as UTF-8 bytes do)."""
    bounds = [(f"{column} >= ?", prefix)]
    head = prefix
    while head:
        last = ord(head[-1]) + 1
        if last <= 0x10FFFF:
            bounds.append((f"{column} < ?", head[:-1] + chr(0xE000 if 0xD800 <= last < 0xE000 else last)))
            break
        head = head[:-1]
    return bounds


def _text_match(column: str, pattern: str) -> tuple[str, str]:
    if pattern.endswith("*"):
        prefix = pattern[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"{column} LIKE ? ESCAPE '\\'", prefix + "%"
    return f"{column} = ?", pattern


def renewal_candidates(conn: sqlite3.Connection, now: datetime, failed_before: datetime,
                       limit: int = 500) -> list[tuple]:
    """(tenant, certificate) pairs the scheduler renews: live, due by ``renew_at``, not failed since ``failed_before``;
    the first ``limit`` by ``renew_at`` (then tenant and certificate).

    Expired certificates that were never renewed stay due forever (no event marks an expiry), so the range of
    ``renew_at`` up to ``now`` holds every one of them. Each class of lead time (``renew_class``) is read in its own
    range, bounded below by its longest lead: a certificate still valid cannot have come due earlier. What is walked is
    what came due within a lead time, however long the history."""
    valid_from = datetime.fromisoformat(validity_time(now))  # not_after > this: valid at ``now``
    branches, args = [], []
    for k in range(RENEW_CLASSES):
        bound = "" if k == RENEW_CLASSES - 1 else "AND renew_at >= ? "
        branches.append(
            "SELECT * FROM (SELECT renew_at, tenant_id, certificate_id FROM certificates "
            f"WHERE {_LIVE} AND auto_renew = 1 AND renew_class = ? AND renew_at <= ? {bound}AND not_after > ? "
            "AND (renewal_failed_at IS NULL OR renewal_failed_at <= ?) ORDER BY renew_at, tenant_id, certificate_id "
            "LIMIT ?)")
        args += [k, rfc3339(now), *([rfc3339(valid_from - timedelta(hours=2 ** k))] if bound else []),
                 validity_time(now), rfc3339(failed_before), limit]
    rows = conn.execute(f"SELECT tenant_id, certificate_id FROM ({' UNION ALL '.join(branches)}) "
                        "ORDER BY renew_at, tenant_id, certificate_id LIMIT ?", (*args, limit)).fetchall()
    return rows


def warning_candidates(conn: sqlite3.Connection, now: datetime, thresholds: tuple[int, ...],
                       limit: int = 500) -> list[tuple]:
    """(tenant, certificate) pairs that crossed an expiry threshold (days) not yet warned of."""
    found: dict[tuple, None] = {}
    for days in sorted(thresholds):
        horizon = validity_time(now + timedelta(days=days))
        rows = conn.execute(
            f"SELECT tenant_id, certificate_id FROM certificates WHERE {_LIVE} AND not_after > ? AND not_after <= ? "
            "AND (expiry_warned_days IS NULL OR expiry_warned_days > ?) ORDER BY not_after LIMIT ?",
            (validity_time(now), horizon, days, limit)).fetchall()
        found.update(dict.fromkeys(map(tuple, rows)))
    return list(found)[:limit]


def holding_key(conn: sqlite3.Connection, tenant_id: str, public_key_sha256: str, now: datetime) -> list[str]:
    """The tenant's certificates of that public key that relying parties still trust: not revoked (nor under a
    revoked CA), not expired; superseded ones too, as a renewal does not end a certificate's validity. The key is their
    subject key, or a hybrid's ML-DSA half (each found through its own partial index)."""
    # sorted here, and not_after kept off the indexes (+): so each half is read through its own key index, not
    # the tenant's whole expiry or position index
    trusted = "tenant_id = ?1 AND status = 'issued' AND +not_after > ?3"
    rows = conn.execute(
        f"SELECT certificate_id, position FROM certificates WHERE {trusted} AND public_key_sha256 = ?2 UNION "
        f"SELECT certificate_id, position FROM certificates WHERE {trusted} AND alternative_key_sha256 = ?2 "
        "AND alternative_key_sha256 IS NOT NULL", (tenant_id, public_key_sha256, validity_time(now))).fetchall()
    return [certificate_id for certificate_id, _position in sorted(rows, key=lambda row: row[1])]


def live_by_issuer(conn: sqlite3.Connection, tenant_id: str, now: datetime) -> dict[str, list[str]]:
    """The tenant's live, unexpired certificates by the fingerprint of the CA certificate they were signed under,
    oldest first: what a compromise rollover asks to find those signed under a key it withdrew from trust."""
    found: dict[str, list[str]] = {}
    # every live row is read, from the live index alone (it holds these columns), and sorted here: SQLite's sort of
    # 26,000 rows took longer than reading them. With statistics and an ORDER BY, SQLite walked the tenant's position
    # index instead, reading its expired and renewed rows too (1.4x-4x slower)
    rows = conn.execute(f"SELECT position, issuer_fingerprint, certificate_id FROM certificates WHERE tenant_id = ? "
                        f"AND not_after > ? AND {_LIVE}", (tenant_id, validity_time(now))).fetchall()
    rows.sort()  # by position, which is each certificate's own (its issuance's place in the log)
    for _position, issuer, certificate_id in rows:
        found.setdefault(issuer, []).append(certificate_id)
    return found


def expiring_bounds(now: datetime, window: timedelta) -> tuple[str, str]:
    """The one definition of "expiring within ``window``", for the list (``?expiring_within=``, through
    ``search``'s ``expires_after``/``expires_before``) and the gauges (``expiring_counts``): not expired at ``now``
    (valid through its notAfter second, as ``status=valid`` says) and expiring before ``now + window``. Returned as
    the bounds of ``not_after >= lower AND not_after < upper``, in the validity columns' format."""
    return validity_time(now, up=True), validity_time(now + window, up=True)


def expiring_counts(conn: sqlite3.Connection, now: datetime, windows: tuple[int, ...]) -> list[tuple]:
    """(tenant, CA, window days, count) of live certificates expiring within each window (``expiring_bounds``);
    one row per tenant×CA with any expiring within the longest window, by tenant and CA.

    Whole days come from the counts the projector keeps by day of expiry (certificate_expiry_counts); the window's
    first and last day, which it covers in part, from the rows themselves: a few hundred rows and a few thousand
    counts read, where every certificate expiring within the windows was (56-112 ms for 174,000 certificates)."""
    bounds = [expiring_bounds(now, timedelta(days=days)) for days in windows]
    lower = bounds[0][0]  # the same for every window
    first = lower[:10]
    after_first = f"{date.fromisoformat(first) + timedelta(days=1)}T00:00:00Z"
    counts: dict[tuple[str, str], list[int]] = {}
    edges: dict[tuple[str, str], list[tuple]] = {}

    def add(i: int, rows: list[tuple]) -> None:
        for tenant_id, ca_id, n in rows:
            counts.setdefault((tenant_id, ca_id), [0] * len(windows))[i] += n

    def rows_between(start: str, end: str) -> list[tuple]:  # [start, end), each part of a day read once
        if (start, end) not in edges:
            edges[start, end] = conn.execute(
                f"SELECT tenant_id, ca_id, count(*) FROM certificates WHERE {_LIVE} AND not_after >= ? "
                "AND not_after < ? GROUP BY 1, 2", (start, end)).fetchall()
        return edges[start, end]

    lasts = [upper[:10] for _lower, upper in bounds]
    whole = conn.execute(
        f"SELECT tenant_id, ca_id, {', '.join('sum(n * (day < ?))' for _ in windows)} FROM certificate_expiry_counts "
        "WHERE day > ? AND day < ? GROUP BY 1, 2", (*lasts, first, max(lasts))).fetchall()
    for i, (_lower, upper) in enumerate(bounds):
        add(i, rows_between(lower, min(upper, after_first)))
        if lasts[i] > first:
            add(i, rows_between(f"{lasts[i]}T00:00:00Z", upper))
            add(i, [(tenant_id, ca_id, ns[i]) for tenant_id, ca_id, *ns in whole])
    longest = max(range(len(windows)), key=lambda i: bounds[i][1])
    return [(tenant_id, ca_id, days, found[i]) for (tenant_id, ca_id), found in sorted(counts.items())
            if found[longest] > 0 for i, days in enumerate(windows)]


def live_count(conn: sqlite3.Connection, tenant_id: str, now: datetime) -> int:
    """The tenant's live certificates: issued, not revoked (nor under a revoked CA), not expired, not renewed.

    Those expiring after today come from the counts the expiry gauges read (certificate_expiry_counts, by day of
    expiry and CA: a range of the tenant's days through its (tenant_id, day) index), today's from the rows
    themselves: a few hundred counts and a few dozen rows read, however many certificates the tenant holds.
    """
    today, tomorrow = now.astimezone(UTC).date(), now.astimezone(UTC).date() + timedelta(days=1)
    later = conn.execute("SELECT coalesce(sum(n), 0) FROM certificate_expiry_counts WHERE tenant_id = ? AND day > ?",
                         (tenant_id, today.isoformat())).fetchone()[0]
    expiring = conn.execute(f"SELECT count(*) FROM certificates WHERE tenant_id = ? AND not_after > ? "
                            f"AND not_after < ? AND {_LIVE}",
                            (tenant_id, validity_time(now), tomorrow.isoformat())).fetchone()[0]
    return later + expiring


def issued_on(conn: sqlite3.Connection, tenant_id: str, day: date) -> int:
    """Certificates the tenant was issued on ``day`` (UTC; renewals included)."""
    row = conn.execute("SELECT n FROM certificate_counts WHERE tenant_id = ? AND kind = 'issued' AND day = ?",
                       (tenant_id, day.isoformat())).fetchone()
    return row[0] if row else 0
