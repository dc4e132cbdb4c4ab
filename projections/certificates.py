"""The certificate search read model: one row per certificate, its SANs and tags, and the search query.

Renewal links a certificate to its successor (``superseded_by``) and back (``supersedes``);
``renew_at`` is when its profile's renewal policy (built-in, or the tenant's own profile as
last seen here) makes it due, and ``auto_renew`` whether the scheduler renews it. The
renewal scheduler and the expiry gauges read these columns; they decide from the streams.

Revocation shows here in two ways. A certificate revoked itself has ``status`` "revoked" and
its own reason. A certificate under a revoked CA (the CA, or any CA above it) is untrusted
without an event of its own: ``status`` "revoked", ``revocation_reason`` "ca_revoked",
``revoked_ca_id`` the revoked CA, ``revoked_at`` that CA's revocation time.

``not_before`` and ``not_after`` hold X.509 times as the events carry them: whole seconds, ``Z``
("2027-01-01T00:00:00Z"). Every other time here is ``rfc3339`` (microseconds). The two formats do not
compare as their instants do, so a moment compared with a validity column goes through ``validity_time``.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, date, datetime, timedelta

import msgspec

from commands.runtime import rfc3339
from domain.events import EventEnvelope
from domain.profile import BUILTIN_PROFILES
from domain.renewal import DEFAULT_POLICY, RenewalPolicy, renew_at
from projections.base import Projector

COLUMNS = ("tenant_id", "certificate_id", "ca_id", "profile", "serial_hex", "fingerprint", "subject_dn",
           "common_name", "issuer_dn", "issuer_fingerprint", "algorithm", "status", "key_source", "has_key",
           "not_before", "not_after", "sans", "tags", "certificate_pem", "issued_at", "key_exports", "version",
           "position", "revocation_reason", "revoked_at", "invalidity_date", "revoked_ca_id", "superseded_by",
           "supersedes", "renew_at", "auto_renew", "expiry_warned_days", "renewal_failed_at", "renewal_failure",
           "public_key_sha256", "last_deployed_at", "last_deployed_node", "last_verified_at", "last_verified",
           "last_rolled_back_at")
SORTS = {"issued": "position", "expiry": "not_after"}
# The ``status`` filters of :func:`search` (GET /v1/certificates?status=, `csm cert list --status`).
SEARCH_STATUSES = ("issued", "valid", "expired", "revoked")


class CertificatesProjector(Projector):
    name = "certificates"
    # 2: revocation columns and the CA tree; 3: renewal links, renew_at, expiry warnings; 4: counts for quotas;
    # 5: the subject's public key, so a key_compromise revocation finds every certificate of that key;
    # 6: renew_at of a certificate whose profile's lead time is not shorter than its lifetime
    # (domain.renewal.renew_at); 7: when and to which node it was last deployed (certificate.deployed);
    # 8: its last verification (certificate.deployment_verified) and rollback (certificate.deployment_rolled_back)
    version = 8
    tables = ("certificates", "certificate_names", "certificate_tags", "certificate_cas", "certificate_policies",
              "certificate_counts")
    ddl = (
        """CREATE TABLE IF NOT EXISTS {certificates} (
            tenant_id TEXT NOT NULL, certificate_id TEXT NOT NULL, ca_id TEXT NOT NULL, profile TEXT NOT NULL,
            serial_hex TEXT NOT NULL, fingerprint TEXT NOT NULL, subject_dn TEXT NOT NULL, common_name TEXT,
            issuer_dn TEXT NOT NULL, issuer_fingerprint TEXT NOT NULL, algorithm TEXT NOT NULL,
            status TEXT NOT NULL, key_source TEXT NOT NULL, has_key INTEGER NOT NULL, not_before TEXT NOT NULL,
            not_after TEXT NOT NULL, sans TEXT NOT NULL, tags TEXT NOT NULL, certificate_pem TEXT NOT NULL,
            issued_at TEXT NOT NULL, key_exports INTEGER NOT NULL, version INTEGER NOT NULL,
            position INTEGER NOT NULL, revocation_reason TEXT, revoked_at TEXT, invalidity_date TEXT,
            revoked_ca_id TEXT, superseded_by TEXT, supersedes TEXT, renew_at TEXT NOT NULL,
            auto_renew INTEGER NOT NULL, expiry_warned_days INTEGER, renewal_failed_at TEXT, renewal_failure TEXT,
            public_key_sha256 TEXT NOT NULL, last_deployed_at TEXT, last_deployed_node TEXT,
            last_verified_at TEXT, last_verified INTEGER, last_rolled_back_at TEXT,
            PRIMARY KEY (tenant_id, certificate_id))""",
        # a constraint, and how _untrust finds a CA's certificates: (tenant_id, ca_id) is its prefix
        "CREATE UNIQUE INDEX IF NOT EXISTS {ix}_serial ON {certificates} (tenant_id, ca_id, serial_hex)",
        """CREATE TABLE IF NOT EXISTS {certificate_names} (
            tenant_id TEXT NOT NULL, value TEXT NOT NULL, certificate_id TEXT NOT NULL,
            PRIMARY KEY (tenant_id, value, certificate_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {certificate_tags} (
            tenant_id TEXT NOT NULL, tag TEXT NOT NULL, certificate_id TEXT NOT NULL,
            PRIMARY KEY (tenant_id, tag, certificate_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {certificate_cas} (
            tenant_id TEXT NOT NULL, ca_id TEXT NOT NULL, parent_id TEXT, revoked_at TEXT,
            PRIMARY KEY (tenant_id, ca_id)) WITHOUT ROWID""",
        # Per tenant, what its quotas are checked against, kept as events arrive: ``issued`` by UTC day of
        # issuance; ``live`` (issued, not revoked, not renewed) by UTC day of expiry (see live_count).
        """CREATE TABLE IF NOT EXISTS {certificate_counts} (
            tenant_id TEXT NOT NULL, kind TEXT NOT NULL, day TEXT NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, kind, day)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {certificate_policies} (
            tenant_id TEXT NOT NULL, profile TEXT NOT NULL, renewal TEXT NOT NULL,
            PRIMARY KEY (tenant_id, profile)) WITHOUT ROWID""",
    )
    # (tenant_id, ca_id) alone, up to version 4: the prefix of _serial, so one more b-tree written per issuance for nothing
    retired = ("DROP INDEX IF EXISTS {ix}_ca",)
    # only queries read through these (search, expiry, renewal and quota counts): a rebuild makes them last
    deferred = (
        "CREATE INDEX IF NOT EXISTS {ix}_renew_at ON {certificates} (renew_at) WHERE status = 'issued' "
        "AND superseded_by IS NULL",
        "CREATE INDEX IF NOT EXISTS {ix}_not_after ON {certificates} (not_after) WHERE status = 'issued' "
        "AND superseded_by IS NULL",
        "CREATE INDEX IF NOT EXISTS {ix}_position ON {certificates} (tenant_id, position)",
        "CREATE INDEX IF NOT EXISTS {ix}_expiry ON {certificates} (tenant_id, not_after)",
        # a tenant's live certificates that expire today, counted from the index alone (see live_count)
        "CREATE INDEX IF NOT EXISTS {ix}_live ON {certificates} (tenant_id, not_after) WHERE status = 'issued' "
        "AND superseded_by IS NULL",
        "CREATE INDEX IF NOT EXISTS {ix}_fingerprint ON {certificates} (fingerprint)",
        "CREATE INDEX IF NOT EXISTS {ix}_cn ON {certificates} (tenant_id, common_name)",
        # get() by id alone (a platform-wide caller has no tenant scope): without it, a full scan per read
        "CREATE INDEX IF NOT EXISTS {ix}_id ON {certificates} (certificate_id)",
        # a compromised key's certificates that are still trusted (holding_key)
        "CREATE INDEX IF NOT EXISTS {ix}_key ON {certificates} (tenant_id, public_key_sha256) "
        "WHERE status = 'issued'",
        # what a node holds, as far as the store knows (deployed_to: csm cluster verify and rollback)
        "CREATE INDEX IF NOT EXISTS {ix}_node ON {certificates} (tenant_id, last_deployed_node, last_deployed_at) "
        "WHERE last_deployed_node IS NOT NULL",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        if event.stream_type == "ca":
            self._apply_ca(conn, event)
            return
        if event.stream_type == "profile":
            self._apply_profile(conn, event)
            return
        if event.stream_type != "certificate":
            return
        p = event.payload
        if event.type == "certificate.issued":
            facts, sans = p["facts"], p["sans"]
            policy = self._policy(conn, event.tenant_id, p["profile"])
            names = sorted({v.lower() for kind in ("dns", "ip", "email", "uri") for v in sans.get(kind, ())})
            self._unlive(conn, "tenant_id = ?1 AND certificate_id = ?2", (event.tenant_id, p["certificate_id"]))
            self._count(conn, event.tenant_id, "issued", event.occurred_at[:10], 1)
            self._count(conn, event.tenant_id, "live", facts["not_after"][:10], 1)
            conn.execute(
                f"INSERT OR REPLACE INTO {self.t('certificates')} ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                (event.tenant_id, p["certificate_id"], p["ca_id"], p["profile"], facts["serial_hex"],
                 facts["fingerprint_sha256"], facts["subject_dn"], p["subject"].get("common_name"),
                 facts["issuer_dn"], p["issuer_fingerprint"], facts["algorithm"], "issued", p["key_source"],
                 int(p.get("key_ref") is not None), facts["not_before"], facts["not_after"],
                 json.dumps(sans, sort_keys=True), json.dumps(p.get("tags", [])), p["certificate_pem"],
                 event.occurred_at, 0, event.version, event.global_position, None, None, None, None, None, None,
                 _renew_at(policy, facts["not_before"], facts["not_after"]), int(policy.auto), None, None, None,
                 facts["public_key_sha256"], None, None, None, None, None))
            conn.executemany(f"INSERT OR IGNORE INTO {self.t('certificate_names')} VALUES (?,?,?)",
                             [(event.tenant_id, name, p["certificate_id"]) for name in names])
            conn.executemany(f"INSERT OR IGNORE INTO {self.t('certificate_tags')} VALUES (?,?,?)",
                             [(event.tenant_id, tag, p["certificate_id"]) for tag in p.get("tags", [])])
            # Issued in a race with its CA's revocation (or a CA above it): untrusted from the start.
            self._untrust(conn, event.tenant_id, p["ca_id"], certificate_id=p["certificate_id"])
        elif event.type == "certificate.revoked":
            self._unlive(conn, "tenant_id = ?1 AND certificate_id = ?2",
                         (event.tenant_id, event.stream_id.removeprefix("certificate-")))
            conn.execute(f"UPDATE {self.t('certificates')} SET status = 'revoked', revocation_reason = ?, "
                         "revoked_at = ?, invalidity_date = ?, revoked_ca_id = NULL, version = ? "
                         "WHERE tenant_id = ? AND certificate_id = ?",
                         (p["reason"], p["revoked_at"], p.get("invalidity_date"), event.version, event.tenant_id,
                          event.stream_id.removeprefix("certificate-")))
        elif event.type in ("certificate.deployed", "certificate.deployment_verified",
                            "certificate.deployment_rolled_back"):
            self._apply_deployment(conn, event)
        elif event.type == "certificate.private_key_exported":
            conn.execute(f"UPDATE {self.t('certificates')} SET key_exports = key_exports + 1, version = ? "
                         "WHERE tenant_id = ? AND certificate_id = ?",
                         (event.version, event.tenant_id, event.stream_id.removeprefix("certificate-")))
        else:
            self._apply_renewal(conn, event)

    def _apply_deployment(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        """A deployment (it clears an earlier rollback), a verification, or a rollback: the rolled-back certificate is
        no longer on the node, and the one restored (if known) is, since the rollback."""
        p, certificates = event.payload, self.t("certificates")
        key = (event.tenant_id, event.stream_id.removeprefix("certificate-"))
        if event.type == "certificate.deployment_verified":
            conn.execute(f"UPDATE {certificates} SET last_verified_at = ?, last_verified = ?, version = ? "
                         "WHERE tenant_id = ? AND certificate_id = ?",
                         (event.occurred_at, int(p["verified"]), event.version, *key))
            return
        restored = p.get("restored_certificate_id") if event.type == "certificate.deployment_rolled_back" else None
        if event.type == "certificate.deployment_rolled_back":
            conn.execute(f"UPDATE {certificates} SET last_rolled_back_at = ?, version = ? "
                         "WHERE tenant_id = ? AND certificate_id = ?", (event.occurred_at, event.version, *key))
        else:
            conn.execute(f"UPDATE {certificates} SET last_deployed_at = ?, last_deployed_node = ?, "
                         "last_rolled_back_at = NULL, version = ? WHERE tenant_id = ? AND certificate_id = ?",
                         (event.occurred_at, p["node"], event.version, *key))
        if restored is not None:  # its version is its own stream's: left alone
            conn.execute(f"UPDATE {certificates} SET last_deployed_at = ?, last_deployed_node = ?, "
                         "last_rolled_back_at = NULL WHERE tenant_id = ? AND certificate_id = ?",
                         (event.occurred_at, p["node"], event.tenant_id, restored))

    def _apply_renewal(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        p, certificates = event.payload, self.t("certificates")
        changes = {"certificate.renewed": {"superseded_by": p.get("new_certificate_id")},
                   "certificate.expiry_warned": {"expiry_warned_days": p.get("threshold_days")},
                   "certificate.renewal_failed": {"renewal_failed_at": p.get("failed_at"),
                                                  "renewal_failure": p.get("reason")},
                   "certificate.renewal_started": {}}.get(event.type)
        if changes is None:
            return
        if event.type == "certificate.renewed":
            self._unlive(conn, "tenant_id = ?1 AND certificate_id = ?2",
                         (event.tenant_id, event.stream_id.removeprefix("certificate-")))
        assignments = "".join(f"{column} = ?, " for column in changes)
        conn.execute(f"UPDATE {certificates} SET {assignments}version = ? WHERE tenant_id = ? AND certificate_id = ?",
                     (*changes.values(), event.version, event.tenant_id, event.stream_id.removeprefix("certificate-")))
        if event.type == "certificate.renewed":  # the successor was issued (earlier in the log) before this link
            conn.execute(f"UPDATE {certificates} SET supersedes = ? WHERE tenant_id = ? AND certificate_id = ?",
                         (event.stream_id.removeprefix("certificate-"), event.tenant_id, p["new_certificate_id"]))

    def _policy(self, conn: sqlite3.Connection, tenant_id: str, profile: str) -> RenewalPolicy:
        if profile in BUILTIN_PROFILES:
            return BUILTIN_PROFILES[profile].renewal
        row = conn.execute(f"SELECT renewal FROM {self.t('certificate_policies')} WHERE tenant_id = ? AND profile = ?",
                           (tenant_id, profile)).fetchone()
        return msgspec.json.decode(row[0], type=RenewalPolicy) if row else DEFAULT_POLICY

    def _apply_profile(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        """A tenant's profile (re)defines its renewal policy: its live certificates' renew_at follow."""
        if event.type not in ("profile.created", "profile.updated"):
            return
        name = event.payload["profile"]["name"]
        policy = msgspec.convert(event.payload["profile"].get("renewal") or {}, RenewalPolicy)
        conn.execute(f"INSERT OR REPLACE INTO {self.t('certificate_policies')} VALUES (?, ?, ?)",
                     (event.tenant_id, name, msgspec.json.encode(policy).decode()))
        certificates = self.t("certificates")
        rows = conn.execute(f"SELECT certificate_id, not_before, not_after FROM {certificates} WHERE tenant_id = ? "
                            "AND profile = ? AND status = 'issued' AND superseded_by IS NULL",
                            (event.tenant_id, name)).fetchall()
        conn.executemany(f"UPDATE {certificates} SET renew_at = ?, auto_renew = ? WHERE tenant_id = ? "
                         "AND certificate_id = ?",
                         [(_renew_at(policy, nb, na), int(policy.auto), event.tenant_id, cid) for cid, nb, na in rows])


    def _apply_ca(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        ca_id = event.stream_id.removeprefix("ca-")
        if event.type in ("ca.created", "ca.intermediate_requested"):
            conn.execute(f"INSERT OR REPLACE INTO {self.t('certificate_cas')} VALUES (?, ?, ?, NULL)",
                         (event.tenant_id, ca_id, event.payload.get("parent_id")))
        elif event.type == "ca.revoked":
            conn.execute(f"UPDATE {self.t('certificate_cas')} SET revoked_at = ? WHERE tenant_id = ? AND ca_id = ?",
                         (event.payload["revoked_at"], event.tenant_id, ca_id))
            self._untrust(conn, event.tenant_id, ca_id)

    def _untrust(self, conn: sqlite3.Connection, tenant_id: str, ca_id: str, certificate_id: str | None = None) -> None:
        """Mark certificates under the nearest revoked CA at or above ``ca_id`` (just one, if given)."""
        tree, certificates = self.t("certificate_cas"), self.t("certificates")
        revoked = conn.execute(
            f"""WITH RECURSIVE up(ca_id, parent_id, revoked_at, depth) AS (
                    SELECT ca_id, parent_id, revoked_at, 0 FROM {tree} WHERE tenant_id = ?1 AND ca_id = ?2
                    UNION ALL SELECT t.ca_id, t.parent_id, t.revoked_at, up.depth + 1 FROM {tree} t
                    JOIN up ON t.ca_id = up.parent_id WHERE t.tenant_id = ?1 AND up.depth < 64)
                SELECT ca_id, revoked_at FROM up WHERE revoked_at IS NOT NULL ORDER BY depth LIMIT 1""",
            (tenant_id, ca_id)).fetchone()
        if revoked is None:
            return
        # Every CA below (and including) ca_id; for one new certificate, only that row.
        below = f"""WITH RECURSIVE below(ca_id, depth) AS (
                    SELECT ?2, 0 UNION ALL SELECT t.ca_id, below.depth + 1 FROM {tree} t
                    JOIN below ON t.parent_id = below.ca_id WHERE t.tenant_id = ?1 AND below.depth < 64)"""
        untrusted = ("tenant_id = ?1 AND status != 'revoked' AND ca_id IN (SELECT ca_id FROM below) "
                     "AND (?3 IS NULL OR certificate_id = ?3)")
        self._unlive(conn, untrusted, (tenant_id, ca_id, certificate_id), below)
        conn.execute(
            f"""{below} UPDATE {certificates} SET status = 'revoked', revocation_reason = 'ca_revoked',
                    revoked_at = ?4, revoked_ca_id = ?5 WHERE {untrusted}""",
            (tenant_id, ca_id, certificate_id, revoked[1], revoked[0]))

    def _count(self, conn: sqlite3.Connection, tenant_id: str, kind: str, day: str, n: int) -> None:
        conn.execute(f"INSERT INTO {self.t('certificate_counts')} VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (tenant_id, kind, day) DO UPDATE SET n = n + excluded.n", (tenant_id, kind, day, n))

    def _unlive(self, conn: sqlite3.Connection, where: str, params: tuple, with_: str = "") -> None:
        """Take the live rows ``where`` selects (they are about to stop being live) out of the ``live`` counts."""
        rows = conn.execute(f"{with_} SELECT tenant_id, substr(not_after, 1, 10), count(*) FROM "
                            f"{self.t('certificates')} WHERE {where} AND {_LIVE} GROUP BY 1, 2", params).fetchall()
        for tenant_id, day, n in rows:
            self._count(conn, tenant_id, "live", day, -n)


def _renew_at(policy: RenewalPolicy, not_before: str, not_after: str) -> str:
    return rfc3339(renew_at(policy, datetime.fromisoformat(not_before), datetime.fromisoformat(not_after)))


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


def deployed_to(conn: sqlite3.Connection, tenant_id: str, node: str) -> list[dict]:
    """The certificates whose last deployment went to ``node`` and was not rolled back, the newest first: the first
    is what the node holds as far as the store knows."""
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM certificates WHERE tenant_id = ? AND last_deployed_node = ? "
                        "AND last_rolled_back_at IS NULL ORDER BY last_deployed_at DESC, position DESC LIMIT 32",
                        (tenant_id, node)).fetchall()
    return [_row(row) for row in rows]


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

    if scope is not None:
        where("c.tenant_id = ?", scope)
    if tenant_id is not None:
        where("c.tenant_id = ?", tenant_id)
    for column, value in (("ca_id", ca_id), ("serial_hex", serial and serial.lower().lstrip("0").rjust(40, "0")),
                          ("fingerprint", fingerprint and fingerprint.lower().replace(":", "")),
                          ("algorithm", algorithm), ("profile", profile)):
        if value:
            where(f"c.{column} = ?", value)
    if common_name:
        where(*_text_match("c.common_name", common_name))
    if san:
        column, value = _text_match("n.value", san.lower())
        where(f"EXISTS (SELECT 1 FROM certificate_names n WHERE n.tenant_id = c.tenant_id "
              f"AND n.certificate_id = c.certificate_id AND {column})", value)
    if tag:
        where("EXISTS (SELECT 1 FROM certificate_tags t WHERE t.tenant_id = c.tenant_id "
              "AND t.certificate_id = c.certificate_id AND t.tag = ?)", tag)
    if issuer:
        where("(c.ca_id = ? OR c.issuer_dn = ?)", issuer, issuer)
    if status in ("expired", "valid"):
        if now is None:
            raise ValueError(f"status {status!r} needs now")
        if status == "expired":
            where("c.not_after < ?", validity_time(now, up=True))
        else:
            where("c.not_after >= ? AND c.status = 'issued'", validity_time(now, up=True))
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
    # An exact common name, serial or fingerprint picks a few rows through its own index. Given a plain column
    # to order by, SQLite walks the tenant's whole position (or expiry) index instead and tests every row; the
    # "+" (same order, same rows) keeps it on the selective index.
    selective = is_selective(common_name=common_name, serial=serial, fingerprint=fingerprint)
    sql = (f"SELECT {', '.join('c.' + c for c in COLUMNS)} FROM certificates c "
           f"{'WHERE ' + ' AND '.join(clauses) if clauses else ''} "
           f"ORDER BY {'+' if selective else ''}c.{order}, c.certificate_id LIMIT ?")
    return [_row(row) for row in conn.execute(sql, (*args, limit)).fetchall()]


def is_selective(*, common_name: str | None = None, serial: str | None = None, fingerprint: str | None = None) -> bool:
    """True when ``search`` finds its rows through an exact name's, serial's or fingerprint's own index: a few
    index lookups, whatever the size of the table."""
    return bool(serial or fingerprint or (common_name and not common_name.endswith("*")))


def _text_match(column: str, pattern: str) -> tuple[str, str]:
    if pattern.endswith("*"):
        prefix = pattern[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"{column} LIKE ? ESCAPE '\\'", prefix + "%"
    return f"{column} = ?", pattern


def live(alias: str = "") -> str:
    """The SQL condition of a live certificate, the one definition for the expiry list, the expiry gauges, renewal,
    warnings and the quota counts: issued, not revoked (nor under a revoked CA: its ``status`` says so too), not
    superseded by a renewal. The partial indexes above spell the same condition, so that these queries use them.
    ``alias`` qualifies the columns ("c" for ``c.status``)."""
    prefix = f"{alias}." if alias else ""
    return f"{prefix}status = 'issued' AND {prefix}superseded_by IS NULL"


_LIVE = live()


def validity_time(moment: datetime, *, up: bool = False) -> str:
    """``moment`` in the validity columns' format (whole seconds, ``Z``), rounded down, or up with ``up``.

    A validity time ``s`` is a whole second, so against a moment ``t``: ``s > t`` and ``s <= t`` hold exactly
    when they do against ``t`` rounded down; ``s >= t`` and ``s < t``, rounded up.
    """
    utc = moment.astimezone(UTC)
    if up and utc.microsecond:
        utc += timedelta(seconds=1)
    return utc.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def renewal_candidates(conn: sqlite3.Connection, now: datetime, failed_before: datetime,
                       limit: int = 500) -> list[tuple]:
    """(tenant, certificate) pairs the scheduler renews: live, due by ``renew_at``, not failed since ``failed_before``."""
    return conn.execute(
        f"SELECT tenant_id, certificate_id FROM certificates WHERE {_LIVE} AND auto_renew = 1 AND renew_at <= ? "
        "AND not_after > ? AND (renewal_failed_at IS NULL OR renewal_failed_at <= ?) ORDER BY renew_at LIMIT ?",
        (rfc3339(now), validity_time(now), rfc3339(failed_before), limit)).fetchall()


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
    revoked CA), not expired; superseded ones too, as a renewal does not end a certificate's validity."""
    return [certificate_id for (certificate_id,) in conn.execute(
        "SELECT certificate_id FROM certificates WHERE tenant_id = ? AND public_key_sha256 = ? AND status = 'issued' "
        "AND not_after > ? ORDER BY position", (tenant_id, public_key_sha256, validity_time(now))).fetchall()]


def live_by_issuer(conn: sqlite3.Connection, tenant_id: str, now: datetime) -> dict[str, list[str]]:
    """The tenant's live, unexpired certificates by the fingerprint of the CA certificate they were signed under,
    oldest first: what a compromise rollover asks to find those signed under a key it withdrew from trust."""
    found: dict[str, list[str]] = {}
    for issuer, certificate_id in conn.execute(
            f"SELECT issuer_fingerprint, certificate_id FROM certificates WHERE tenant_id = ? AND not_after > ? "
            f"AND {_LIVE} ORDER BY position", (tenant_id, validity_time(now))).fetchall():
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
    one row per tenant×CA."""
    bounds = [expiring_bounds(now, timedelta(days=days)) for days in windows]
    sums = ", ".join("SUM(not_after < ?)" for _ in windows)
    rows = conn.execute(
        f"SELECT tenant_id, ca_id, {sums} FROM certificates WHERE {_LIVE} AND not_after >= ? AND not_after < ? "
        "GROUP BY tenant_id, ca_id",
        (*(upper for _lower, upper in bounds), bounds[0][0], max(upper for _lower, upper in bounds))).fetchall()
    return [(tenant, ca, days, count) for tenant, ca, *counts in rows for days, count in zip(windows, counts)]


def live_count(conn: sqlite3.Connection, tenant_id: str, now: datetime) -> int:
    """The tenant's live certificates: issued, not revoked (nor under a revoked CA), not expired, not renewed.

    Those expiring after today come from the per-day counts, today's from the rows themselves: a few dozen
    rows read, however many certificates the tenant holds.
    """
    today, tomorrow = now.astimezone(UTC).date(), now.astimezone(UTC).date() + timedelta(days=1)
    later = conn.execute("SELECT coalesce(sum(n), 0) FROM certificate_counts WHERE tenant_id = ? AND kind = 'live' "
                         "AND day > ?", (tenant_id, today.isoformat())).fetchone()[0]
    expiring = conn.execute(f"SELECT count(*) FROM certificates WHERE tenant_id = ? AND not_after > ? "
                            f"AND not_after < ? AND {_LIVE}",
                            (tenant_id, validity_time(now), tomorrow.isoformat())).fetchone()[0]
    return later + expiring


def issued_on(conn: sqlite3.Connection, tenant_id: str, day: date) -> int:
    """Certificates the tenant was issued on ``day`` (UTC; renewals included)."""
    row = conn.execute("SELECT n FROM certificate_counts WHERE tenant_id = ? AND kind = 'issued' AND day = ?",
                       (tenant_id, day.isoformat())).fetchone()
    return row[0] if row else 0
