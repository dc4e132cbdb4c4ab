"""The certificate search read model: one row per certificate, its SANs and tags (its queries: certificate_queries).

Renewal links a certificate to its successor (``superseded_by``) and back (``supersedes``);
``renew_at`` is when its profile's renewal policy (built-in, or the tenant's own profile as
last seen here) makes it due, ``renew_class`` the class of its lead time (``renew_class``: what bounds the
scheduler's ranges), and ``auto_renew`` whether the scheduler renews it. The renewal scheduler and the expiry gauges
read these columns (the gauges through ``certificate_expiry_counts``, kept here too); they decide from the streams.

Revocation shows here in two ways. A certificate revoked itself has ``status`` "revoked" and
its own reason. A certificate under a revoked CA (the CA, or any CA above it) is untrusted
without an event of its own: ``status`` "revoked", ``revocation_reason`` "ca_revoked",
``revoked_ca_id`` the revoked CA, ``revoked_at`` that CA's revocation time.

``not_before`` and ``not_after`` hold X.509 times as the events carry them: whole seconds, ``Z``
("2027-01-01T00:00:00Z"). Every other time here is ``rfc3339`` (microseconds). The two formats do not
compare as their instants do, so a moment compared with a validity column goes through ``validity_time``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta

import msgspec
from cryptography import x509

from commands.pki import der_of_pem
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
           "last_rolled_back_at", "alternative_key_sha256")
class CertificatesProjector(Projector):
    name = "certificates"
    # 2: revocation columns and the CA tree; 3: renewal links, renew_at, expiry warnings; 4: counts for quotas;
    # 5: the subject's public key, so a key_compromise revocation finds every certificate of that key;
    # 6: renew_at of a certificate whose profile's lead time is not shorter than its lifetime
    # (domain.renewal.renew_at); 7: when and to which node it was last deployed (certificate.deployed);
    # 8: its last verification (certificate.deployment_verified) and rollback (certificate.deployment_rolled_back);
    # 9: a hybrid's ML-DSA key (alternative_key_sha256), so a compromise of that half finds every certificate of it;
    # 10: indexes for the searches and reports that read a big tenant's every row (docs/architecture.md, "Query plans"):
    # folded common names, the position index carrying not_after and status, the renewal candidates' index covering the
    # scheduler's query, revocations by time, the fingerprint index covering discovery's join;
    # 11: live certificates counted by day of expiry, tenant and CA (certificate_expiry_counts: the expiry gauges),
    # renew_class (the renewal candidates' index skips certificates that expired unrenewed), the live index covering
    # the compliance report and live_by_issuer, certificate_id in the position and expiry indexes (the walks in order
    # test a name's matches without reading the rows);
    # 12: the quota's live count read from certificate_expiry_counts (summed over CAs, through its (tenant_id, day)
    # index): certificate_counts keeps issuances only, where it kept the same live count a second time
    version = 12
    tables = ("certificates", "certificate_names", "certificate_tags", "certificate_cas", "certificate_policies",
              "certificate_counts", "certificate_expiry_counts")
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
            last_verified_at TEXT, last_verified INTEGER, last_rolled_back_at TEXT, alternative_key_sha256 TEXT,
            renew_class INTEGER NOT NULL, PRIMARY KEY (tenant_id, certificate_id))""",
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
        # Per tenant, issuances by UTC day of issuance (kind ``issued``: the quota on issuances per day, issued_on).
        # Up to read model 11 it also kept kind ``live``, which certificate_expiry_counts counts now.
        """CREATE TABLE IF NOT EXISTS {certificate_counts} (
            tenant_id TEXT NOT NULL, kind TEXT NOT NULL, day TEXT NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, kind, day)) WITHOUT ROWID""",
        # Live certificates (``live()``: issued, not revoked, not renewed) by UTC day of expiry, tenant and CA, kept in
        # the transaction that changes the rows: what the expiry gauges count (certificate_queries.expiring_counts), by
        # day, and, summed over CAs, the quota's live certificates (live_count, through {ix}_expiry_counts_tenant).
        """CREATE TABLE IF NOT EXISTS {certificate_expiry_counts} (
            day TEXT NOT NULL, tenant_id TEXT NOT NULL, ca_id TEXT NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (day, tenant_id, ca_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {certificate_policies} (
            tenant_id TEXT NOT NULL, profile TEXT NOT NULL, renewal TEXT NOT NULL,
            PRIMARY KEY (tenant_id, profile)) WITHOUT ROWID""",
    )
    # (tenant_id, ca_id) alone, up to version 4: the prefix of _serial, so one more b-tree written per issuance for nothing
    # and (tenant_id, last_deployed_node), up to version 8: what a node holds is the deployments read model's now
    retired = ("DROP INDEX IF EXISTS {ix}_ca", "DROP INDEX IF EXISTS {ix}_node")
    # only queries read through these (search, expiry, renewal and quota counts): a rebuild makes them last
    deferred = (
        # the renewal scheduler's candidates (renewal_candidates), read from the index alone. Expired certificates
        # never renewed stay in it (no event marks an expiry): by renew_class, each class's due range is bounded below
        # (renew_at > now - its longest lead), which leaves out those that expired more than a lead time ago
        "CREATE INDEX IF NOT EXISTS {ix}_renewal ON {certificates} (renew_class, renew_at, tenant_id, certificate_id, "
        "not_after, renewal_failed_at, status, superseded_by, auto_renew) WHERE status = 'issued' "
        "AND superseded_by IS NULL AND auto_renew = 1",
        "CREATE INDEX IF NOT EXISTS {ix}_not_after ON {certificates} (not_after) WHERE status = 'issued' "
        "AND superseded_by IS NULL",
        # certificate_id, not_after and status too: the search's order in full (position, certificate_id), and a search
        # by status (valid, expired, revoked) or by a name matching many walks it in order testing them without
        # reading the rows it passes over
        "CREATE INDEX IF NOT EXISTS {ix}_position ON {certificates} (tenant_id, position, certificate_id, not_after, "
        "status)",
        "CREATE INDEX IF NOT EXISTS {ix}_expiry ON {certificates} (tenant_id, not_after, certificate_id)",
        # a tenant's live certificates by day of expiry (live_count, the quota check): a range of the tenant's days,
        # where the primary key (day first) would read every tenant's; each count's row then read by its key. Not
        # with ``n`` in it: read from the index alone the count took 0.04 ms instead of 0.11, but with statistics the
        # expiry gauges' range of days over every tenant then skip-scanned it, tenant by tenant, instead of the
        # primary key's range (docs/architecture.md, "Query plans"); and a count's change leaves this index alone
        "CREATE INDEX IF NOT EXISTS {ix}_expiry_counts_tenant ON {certificate_expiry_counts} (tenant_id, day)",
        # a tenant's live certificates: those that expire today counted (live_count), and what the compliance report
        # (compliance.facts) and a compromise rollover (live_by_issuer) read of every one, from the index alone
        # (status and superseded_by too: SQLite reads the row for a column of the WHERE the index does not hold)
        "CREATE INDEX IF NOT EXISTS {ix}_live ON {certificates} (tenant_id, not_after, certificate_id, ca_id, profile, "
        "common_name, algorithm, key_source, not_before, sans, key_exports, auto_renew, renew_at, renewal_failed_at, "
        "renewal_failure, issuer_fingerprint, position, status, superseded_by) WHERE status = 'issued' "
        "AND superseded_by IS NULL",
        # with what a discovered endpoint's listing and the compliance report join of its certificate: the join reads
        # the index alone, not 45,000 rows of a tenant's (discovery.records: 575-1,090 -> 274-516 ms)
        "CREATE INDEX IF NOT EXISTS {ix}_fingerprint ON {certificates} (fingerprint, tenant_id, certificate_id, ca_id, "
        "status, revocation_reason, superseded_by)",
        # common names as LIKE compares them (ASCII letters folded): an exact name, and a prefix's range
        "CREATE INDEX IF NOT EXISTS {ix}_cn_folded ON {certificates} (tenant_id, lower(common_name))",
        # the compliance report's revocations of the last 30 days, by reason, from the index alone
        "CREATE INDEX IF NOT EXISTS {ix}_revoked ON {certificates} (tenant_id, revoked_at, revocation_reason, "
        "status) WHERE status = 'revoked'",
        # get() by id alone (a platform-wide caller has no tenant scope): without it, a full scan per read
        "CREATE INDEX IF NOT EXISTS {ix}_id ON {certificates} (certificate_id)",
        # a compromised key's certificates that are still trusted (holding_key): of it as their subject key, or as
        # their ML-DSA half (a hybrid's)
        "CREATE INDEX IF NOT EXISTS {ix}_key ON {certificates} (tenant_id, public_key_sha256) "
        "WHERE status = 'issued'",
        "CREATE INDEX IF NOT EXISTS {ix}_alternative_key ON {certificates} (tenant_id, alternative_key_sha256) "
        "WHERE status = 'issued' AND alternative_key_sha256 IS NOT NULL",
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
            self._count_expiry(conn, event.tenant_id, p["ca_id"], facts["not_after"][:10], 1)
            due = _renew_at(policy, facts["not_before"], facts["not_after"])
            conn.execute(
                f"INSERT OR REPLACE INTO {self.t('certificates')} ({', '.join(COLUMNS)}, renew_class) "
                f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
                (event.tenant_id, p["certificate_id"], p["ca_id"], p["profile"], facts["serial_hex"],
                 facts["fingerprint_sha256"], facts["subject_dn"], p["subject"].get("common_name"),
                 facts["issuer_dn"], p["issuer_fingerprint"], facts["algorithm"], "issued", p["key_source"],
                 int(p.get("key_ref") is not None), facts["not_before"], facts["not_after"],
                 json.dumps(sans, sort_keys=True), json.dumps(p.get("tags", [])), p["certificate_pem"],
                 event.occurred_at, 0, event.version, event.global_position, None, None, None, None, None, None,
                 due, int(policy.auto), None, None, None, facts["public_key_sha256"], None, None, None, None, None,
                 alternative_key_sha256(p["certificate_pem"]), renew_class(due, facts["not_after"])))
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
        due = {cid: _renew_at(policy, nb, na) for cid, nb, na in rows}
        conn.executemany(f"UPDATE {certificates} SET renew_at = ?, renew_class = ?, auto_renew = ? WHERE tenant_id = ? "
                         "AND certificate_id = ?",
                         [(due[cid], renew_class(due[cid], na), int(policy.auto), event.tenant_id, cid)
                          for cid, _nb, na in rows])


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

    def _count_expiry(self, conn: sqlite3.Connection, tenant_id: str, ca_id: str, day: str, n: int) -> None:
        conn.execute(f"INSERT INTO {self.t('certificate_expiry_counts')} VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (day, tenant_id, ca_id) DO UPDATE SET n = n + excluded.n", (day, tenant_id, ca_id, n))

    def _unlive(self, conn: sqlite3.Connection, where: str, params: tuple, with_: str = "") -> None:
        """Take the live rows ``where`` selects (they are about to stop being live) out of the expiry counts."""
        rows = conn.execute(f"{with_} SELECT tenant_id, ca_id, substr(not_after, 1, 10), count(*) FROM "
                            f"{self.t('certificates')} WHERE {where} AND {_LIVE} GROUP BY 1, 2, 3", params).fetchall()
        for tenant_id, ca_id, day, n in rows:
            self._count_expiry(conn, tenant_id, ca_id, day, -n)


# extension 2.5.29.72 (subjectAltPublicKeyInfo) as its OID is encoded: a certificate without these bytes has none
_ALTERNATIVE_KEY_OID = x509.ObjectIdentifier("2.5.29.72")
_ALTERNATIVE_KEY_DER = b"\x06\x03\x55\x1d\x48"


def alternative_key_sha256(certificate_pem: str) -> str | None:
    """The hex SHA-256 of a hybrid certificate's ML-DSA SubjectPublicKeyInfo (the extension's value, as
    commands/compromised_keys.py hashes it); None for a certificate without one. Only a certificate whose DER holds the
    extension's OID is parsed: a rebuild folds every certificate ever issued."""
    der = der_of_pem(certificate_pem)
    if _ALTERNATIVE_KEY_DER not in der:
        return None
    try:
        value = x509.load_der_x509_certificate(der).extensions.get_extension_for_oid(_ALTERNATIVE_KEY_OID).value
    except x509.ExtensionNotFound:
        return None
    return hashlib.sha256(value.value).hexdigest() if isinstance(value, x509.UnrecognizedExtension) else None


def _renew_at(policy: RenewalPolicy, not_before: str, not_after: str) -> str:
    return rfc3339(renew_at(policy, datetime.fromisoformat(not_before), datetime.fromisoformat(not_after)))


RENEW_CLASSES = 21  # 0-20: a lead time up to 2**20 hours (119 years) has its own class; a longer one is in the last


def renew_class(renew_at: str, not_after: str) -> int:
    """The class of a certificate's renewal lead time (``not_after - renew_at``): the least ``k`` with a lead of at
    most ``2**k`` hours (0 for an hour or less), at most ``RENEW_CLASSES - 1``. A certificate still valid at ``now``
    has ``renew_at > now - lead >= now - 2**k`` hours: the bound ``renewal_candidates`` puts on each class's range,
    so that it does not walk the certificates that expired unrenewed long ago."""
    lead = datetime.fromisoformat(not_after) - datetime.fromisoformat(renew_at)
    hours = -(-lead // timedelta(hours=1))  # rounded up
    return min(max(0, hours - 1).bit_length(), RENEW_CLASSES - 1)


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
