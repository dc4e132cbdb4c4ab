"""The CA read model: one row per CA, every certificate any CA holds, and chain building over them.

A revoked CA reads ``status`` "revoked" with its own ``revocation_reason``. A CA below it (at any depth) is as
untrusted: its issuers refuse to sign under it and everything under it answers OCSP "revoked", yet its own stream
has no event. It reads ``status`` "revoked" too, ``revocation_reason`` "ca_revoked", ``revoked_ca_id`` the revoked
CA above it and ``revoked_at`` that CA's time, as a certificate below a revoked CA does in the certificates read
model; its own later events (disable, enable, install) keep it so.

A root's link certificates (``new_with_old``, ``old_with_new`` roles: see ``domain.ca.CaKeyRolledOver``) are
rows of its certificates too, but never a step of ``chain_from``: ``with_links`` adds them to a chain that ends
at one of the root's keys, before that root certificate.

A compromise rollover (``compromised`` in ``ca.key_rolled_over``) withdraws every certificate the root held until
then, its links too, from trust: their rows keep their role and get ``distrusted_at``, and from then on no chain
(``chain_from``, ``with_links``), truststore (``truststore_chain``, ``trust_anchors``) or plain caIssuers answer
(``plain_issuer_certificate``) holds one. A chain stops before such a certificate: what was signed under the
withdrawn keys (``untrusted_cas``, ``withdrawn_path``) no longer reaches a root anyone trusts, and must be issued again.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from domain.events import EventEnvelope
from projections.base import Projector

CA_COLUMNS = ("tenant_id", "ca_id", "name", "kind", "origin", "status", "algorithm", "parent_id", "subject_dn",
              "not_before", "not_after", "fingerprint", "path_length", "name_constraints", "csr_pem", "created_at",
              "updated_at", "version", "position", "revocation_reason", "revoked_at", "revoked_ca_id", "key_storage")
LINK_ROLES = ("new_with_old", "old_with_new")
CERT_COLUMNS = ("fingerprint", "tenant_id", "ca_id", "role", "issuer_ca_id", "subject_dn", "issuer_dn",
                "subject_key_id", "authority_key_id", "not_before", "not_after", "certificate_pem", "position",
                "distrusted_at", "serial_hex")


class CasProjector(Projector):
    name = "cas"
    # 2: a rollover updates the CA's algorithm; 3: revocation columns, a CA below a revoked one; 4: distrusted_at;
    # 5: key_storage (vault | hsm: where the CA's keys are made and kept); 6: serial_hex, and a revoked cross or link
    # certificate withdrawn from trust (distrusted_at)
    version = 6
    tables = ("cas", "ca_certificates")
    ddl = (
        """CREATE TABLE IF NOT EXISTS {cas} (
            tenant_id TEXT NOT NULL, ca_id TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
            origin TEXT NOT NULL, status TEXT NOT NULL, algorithm TEXT NOT NULL, parent_id TEXT,
            subject_dn TEXT, not_before TEXT, not_after TEXT, fingerprint TEXT, path_length INTEGER,
            name_constraints TEXT NOT NULL, csr_pem TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            version INTEGER NOT NULL, position INTEGER NOT NULL, revocation_reason TEXT, revoked_at TEXT,
            revoked_ca_id TEXT, key_storage TEXT NOT NULL, PRIMARY KEY (tenant_id, ca_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS {ca_certificates} (
            fingerprint TEXT NOT NULL, tenant_id TEXT NOT NULL, ca_id TEXT NOT NULL, role TEXT NOT NULL,
            issuer_ca_id TEXT, subject_dn TEXT NOT NULL, issuer_dn TEXT NOT NULL, subject_key_id TEXT NOT NULL,
            authority_key_id TEXT, not_before TEXT NOT NULL, not_after TEXT NOT NULL, certificate_pem TEXT NOT NULL,
            position INTEGER NOT NULL, distrusted_at TEXT, serial_hex TEXT,
            PRIMARY KEY (tenant_id, fingerprint)) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS {ix}_ski ON {ca_certificates} (tenant_id, subject_key_id)",
        "CREATE INDEX IF NOT EXISTS {ix}_ca ON {ca_certificates} (tenant_id, ca_id)",
    )

    def apply(self, conn: sqlite3.Connection, event: EventEnvelope) -> None:
        if event.stream_type != "ca":
            return
        p, ca_id = event.payload, event.stream_id.removeprefix("ca-")
        if event.type == "ca.created":
            self._insert_ca(conn, event, ca_id, p, status="active", csr_pem=None)
            self._certificate(conn, event, ca_id, p["certificate"], "current")
            self._inherit(conn, event.tenant_id, ca_id, p.get("parent_id"))
        elif event.type == "ca.intermediate_requested":
            self._insert_ca(conn, event, ca_id, {**p, "kind": "intermediate", "origin": "offline", "path_length": None,
                                                  "name_constraints": {}, "certificate": None},
                            status="pending", csr_pem=p["csr_pem"])
            self._inherit(conn, event.tenant_id, ca_id, p.get("parent_id"))
        elif event.type == "ca.certificate_installed":
            self._update(conn, event, ca_id, status="active", csr_pem=None, path_length=p["path_length"],
                         name_constraints=json.dumps(p["name_constraints"], sort_keys=True))
            self._certificate(conn, event, ca_id, p["certificate"], "current")
            self._current(conn, event, ca_id, p["certificate"])
        elif event.type == "ca.cross_certified":
            self._certificate(conn, event, ca_id, p["certificate"], "cross")
            self._update(conn, event, ca_id)
        elif event.type == "ca.key_rolled_over":
            if p.get("compromised"):  # schema 3: every certificate held so far, and every link, leaves trust
                conn.execute(f"UPDATE {self.t('ca_certificates')} SET distrusted_at = ? WHERE tenant_id = ? "
                             "AND ca_id = ? AND distrusted_at IS NULL", (event.occurred_at, event.tenant_id, ca_id))
            conn.execute(f"UPDATE {self.t('ca_certificates')} SET role = 'previous' "
                         "WHERE tenant_id = ? AND ca_id = ? AND role = 'current'", (event.tenant_id, ca_id))
            self._certificate(conn, event, ca_id, p["certificate"], "current")
            self._current(conn, event, ca_id, p["certificate"])
            for role in LINK_ROLES:  # schema 2, a root's rollover
                if p.get(role):
                    self._certificate(conn, event, ca_id, p[role], role)
            self._update(conn, event, ca_id, algorithm=p["certificate"]["facts"]["algorithm"])
        elif event.type in ("ca.disabled", "ca.enabled"):
            self._update(conn, event, ca_id, status="disabled" if event.type == "ca.disabled" else "active")
        elif event.type == "ca.certificate_revoked" and p.get("subject_ca_id"):
            self._withdraw_revoked(conn, event.tenant_id, ca_id, p)
        elif event.type == "ca.revoked":  # its subtree's certificates: see projections/certificates.py
            self._update(conn, event, ca_id, status="revoked", revocation_reason=p["reason"],
                         revoked_at=p["revoked_at"], revoked_ca_id=None)
            self._untrust_below(conn, event.tenant_id, ca_id, p["revoked_at"])

    def _withdraw_revoked(self, conn, tenant_id: str, issuer_ca_id: str, p: dict) -> None:
        """A CA certificate this CA signed and revoked (a reported key compromise, a compromise rollover): a
        cross-certificate, a root's link certificate or a CA's certificate of a key it rolled away from, withdrawn
        from trust as a compromise rollover withdraws, so no chain, bundle or truststore serves it again. A CA's
        current certificate is left as it is: ``ca.revoked`` on the CA's own stream says what that CA is."""
        conn.execute(
            f"UPDATE {self.t('ca_certificates')} SET distrusted_at = ? WHERE tenant_id = ? AND ca_id = ? "
            "AND serial_hex = ? AND role != 'current' AND distrusted_at IS NULL "
            "AND (issuer_ca_id IS NULL OR issuer_ca_id = ?)",
            (p["revoked_at"], tenant_id, p["subject_ca_id"], p["serial_hex"], issuer_ca_id))

    def _untrust_below(self, conn, tenant_id: str, ca_id: str, revoked_at: str) -> None:
        """Every CA below ``ca_id`` not revoked yet (one revoked earlier keeps its own, or nearer, revocation)."""
        cas = self.t("cas")
        conn.execute(
            f"""WITH RECURSIVE below(ca_id, depth) AS (
                    SELECT ca_id, 1 FROM {cas} WHERE tenant_id = ?1 AND parent_id = ?2
                    UNION ALL SELECT c.ca_id, below.depth + 1 FROM {cas} c
                    JOIN below ON c.parent_id = below.ca_id WHERE c.tenant_id = ?1 AND below.depth < 64)
                UPDATE {cas} SET status = 'revoked', revocation_reason = 'ca_revoked', revoked_at = ?3,
                    revoked_ca_id = ?2
                WHERE tenant_id = ?1 AND status != 'revoked' AND ca_id IN (SELECT ca_id FROM below)""",
            (tenant_id, ca_id, revoked_at))

    def _inherit(self, conn, tenant_id: str, ca_id: str, parent_id: str | None) -> None:
        """A CA recorded after a CA above it was revoked (its creation raced the revocation) is below it too."""
        if parent_id is None:
            return
        parent = conn.execute(f"SELECT status, revocation_reason, revoked_at, revoked_ca_id FROM {self.t('cas')} "
                              "WHERE tenant_id = ? AND ca_id = ?", (tenant_id, parent_id)).fetchone()
        if parent is None or parent[0] != "revoked":
            return
        above = parent[3] if parent[1] == "ca_revoked" else parent_id
        conn.execute(f"UPDATE {self.t('cas')} SET status = 'revoked', revocation_reason = 'ca_revoked', "
                     "revoked_at = ?, revoked_ca_id = ? WHERE tenant_id = ? AND ca_id = ?",
                     (parent[2], above, tenant_id, ca_id))

    def _insert_ca(self, conn, event, ca_id, p, *, status, csr_pem) -> None:
        facts = (p.get("certificate") or {}).get("facts") or {}
        conn.execute(
            f"INSERT OR REPLACE INTO {self.t('cas')} ({', '.join(CA_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(CA_COLUMNS))})",
            (event.tenant_id, ca_id, p["name"], p["kind"], p["origin"], status, p["algorithm"], p.get("parent_id"),
             facts.get("subject_dn"), facts.get("not_before"), facts.get("not_after"),
             facts.get("fingerprint_sha256"), p.get("path_length"),
             json.dumps(p.get("name_constraints") or {}, sort_keys=True), csr_pem, event.occurred_at,
             event.occurred_at, event.version, event.global_position, None, None, None,
             p.get("key_storage", "vault")))

    def _update(self, conn, event, ca_id, **columns) -> None:
        """Set ``columns`` from the CA's own event; a revoked CA's ``status`` stays "revoked" (a CA below a revoked
        one may still be disabled, enabled or installed on its own stream)."""
        columns.update(updated_at=event.occurred_at, version=event.version, position=event.global_position)
        assignments = ", ".join("status = CASE WHEN status = 'revoked' THEN status ELSE ? END"
                                if column == "status" and value != "revoked" else f"{column} = ?"
                                for column, value in columns.items())
        conn.execute(f"UPDATE {self.t('cas')} SET {assignments} WHERE tenant_id = ? AND ca_id = ?",
                     (*columns.values(), event.tenant_id, ca_id))

    def _current(self, conn, event, ca_id, certificate) -> None:
        facts = certificate["facts"]
        self._update(conn, event, ca_id, subject_dn=facts["subject_dn"], not_before=facts["not_before"],
                     not_after=facts["not_after"], fingerprint=facts["fingerprint_sha256"])

    def _certificate(self, conn, event, ca_id, certificate, role) -> None:
        facts = certificate["facts"]
        conn.execute(
            f"INSERT OR REPLACE INTO {self.t('ca_certificates')} ({', '.join(CERT_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(CERT_COLUMNS))})",
            (facts["fingerprint_sha256"], event.tenant_id, ca_id, role, certificate.get("issuer_ca_id"),
             facts["subject_dn"], facts["issuer_dn"], facts["subject_key_identifier"],
             facts.get("authority_key_identifier"), facts["not_before"], facts["not_after"],
             certificate["certificate_pem"], event.global_position, None, facts.get("serial_hex")))


def _ca_row(row: tuple) -> dict:
    item = dict(zip(CA_COLUMNS, row))
    item["name_constraints"] = json.loads(item["name_constraints"])
    return item


def get(conn: sqlite3.Connection, ca_id: str, scope: str | None) -> dict | None:
    """One CA, or None if absent or outside ``scope`` (the caller's tenant, None for platform scope)."""
    sql = f"SELECT {', '.join(CA_COLUMNS)} FROM cas WHERE ca_id = ?"
    args: tuple = (ca_id,)
    if scope is not None:
        sql, args = sql + " AND tenant_id = ?", (ca_id, scope)
    row = conn.execute(sql, args).fetchone()
    return _ca_row(row) if row else None


def search(conn: sqlite3.Connection, scope: str | None, *, tenant_id: str | None = None, status: str | None = None,
           kind: str | None = None, after: str | None = None, limit: int = 100) -> list[dict]:
    """CAs ordered by id (UUIDv7: creation order), keyset-paginated; confined to ``scope`` if set."""
    clauses, args = [], []
    for column, value in (("tenant_id", scope), ("tenant_id", tenant_id), ("status", status), ("kind", kind)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if after:
        clauses.append("ca_id > ?")
        args.append(after)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT {', '.join(CA_COLUMNS)} FROM cas {where} ORDER BY ca_id LIMIT ?",
                        (*args, limit)).fetchall()
    return [_ca_row(row) for row in rows]


def held_count(conn: sqlite3.Connection, tenant_id: str) -> int:
    """The tenant's CAs that are not revoked (nor below a revoked CA): pending, active or disabled."""
    return conn.execute("SELECT count(*) FROM cas WHERE tenant_id = ? AND status != 'revoked'",
                        (tenant_id,)).fetchone()[0]


def certificates_of(conn: sqlite3.Connection, tenant_id: str, ca_id: str) -> list[dict]:
    """The CA's certificates in the order it got them; a rollover's link certificates after its new certificate."""
    rows = conn.execute(f"SELECT {', '.join(CERT_COLUMNS)} FROM ca_certificates WHERE tenant_id = ? AND ca_id = ? "
                        "ORDER BY position, CASE role WHEN 'new_with_old' THEN 1 WHEN 'old_with_new' THEN 2 "
                        "ELSE 0 END", (tenant_id, ca_id)).fetchall()
    return [dict(zip(CERT_COLUMNS, row)) for row in rows]


def plain_issuer_certificate(conn: sqlite3.Connection, tenant_id: str, ca_id: str, now: datetime) -> dict | None:
    """What the CA's plain caIssuers URL (no ``key``) answers. The CA's first key wrote that URL into every
    certificate it signed (after a rollover, each later key's certificates name theirs with ``?key=``), so: the
    own certificate of the oldest key that still has an unexpired certificate (its own or a cross-certificate),
    as the plain CRL URL serves that key's CRL; the current certificate once no such key is left. Never one a
    compromise rollover withdrew: after one, the oldest key still trusted (at first the new, current one)."""
    rows = [row for row in certificates_of(conn, tenant_id, ca_id)
            if row["role"] not in LINK_ROLES and row["distrusted_at"] is None]
    by_key: dict[str, list[dict]] = {}
    for row in rows:
        by_key.setdefault(row["subject_key_id"], []).append(row)
    for held in by_key.values():
        own = [row for row in held if row["role"] != "cross"]
        if own and max(datetime.fromisoformat(row["not_after"]) for row in held) > now:
            return own[-1]
    return next((row for row in rows if row["role"] == "current"), None)


def issuer_chain(conn: sqlite3.Connection, tenant_id: str, issuer_fingerprint: str,
                 now: datetime | None = None) -> list[dict]:
    """A certificate's chain as exports serve it: its issuing CA certificate, then its issuers up to the root, with
    the root's link certificates for that key before the root (``with_links``: unexpired at ``now``, if given)."""
    return with_links(conn, tenant_id, _issuer_path(conn, tenant_id, issuer_fingerprint), now)


def _issuer_path(conn: sqlite3.Connection, tenant_id: str, issuer_fingerprint: str) -> list[dict]:
    issuer = certificate_by_fingerprint(conn, tenant_id, issuer_fingerprint)
    return chain_from(conn, tenant_id, issuer) if issuer else []


def with_links(conn: sqlite3.Connection, tenant_id: str, chain: list[dict], now: datetime | None = None) -> list[dict]:
    """``chain`` (ending at a root certificate) with the link certificates that certify that root's key by the
    root's other keys, and transitively theirs (two rollovers: a path back to the first key), inserted before the
    root certificate: a relying party that trusts only another key of the root then finds a link, not the root
    certificate it does not trust, as the issuer of the certificate below (OpenSSL takes the first untrusted
    candidate that matches and does not backtrack). Where two links certify one key (a middle key, after two
    rollovers), the one the earlier key signed comes first: the relying parties a link is for are those whose
    truststores were exported before a rollover and hold the older keys only (a truststore exported later holds
    every generation, and finds the chain's root itself); one that trusts only a later key does not accept the
    middle key's chains. Links expired at ``now``, or withdrawn by a compromise rollover, are left out."""
    if not chain or not _self_signed(chain[-1]):
        return chain
    root = chain[-1]
    by_key: dict[str, list[dict]] = {}
    for row in certificates_of(conn, tenant_id, root["ca_id"]):  # the earlier rollover's first
        if row["role"] in LINK_ROLES and row["distrusted_at"] is None \
                and (now is None or datetime.fromisoformat(row["not_after"]) > now):
            by_key.setdefault(row["subject_key_id"], []).append(row)
    links, reached, keys = [], {root["subject_key_id"]}, [root["subject_key_id"]]
    while keys:
        for row in by_key.get(keys.pop(0), []):
            if row["authority_key_id"] not in reached:
                reached.add(row["authority_key_id"])
                keys.append(row["authority_key_id"])
                links.append(row)
    return [*chain[:-1], *links, root]


def truststore_chain(conn: sqlite3.Connection, tenant_id: str, issuer_fingerprint: str, now: datetime) -> list[dict]:
    """What a truststore for a certificate holds: its issuer path up to the root, then its root CA's other
    unexpired self-signed certificates (its keys before and after a rollover), so that nodes trusting it accept
    peers whose certificates chain to either key, through a rolling restart. No link certificates: a truststore
    holds the roots themselves, and none a compromise rollover withdrew. A certificate signed under a withdrawn
    key gets the root CA's trusted roots alone, without its own issuer path: Java takes every certificate of a
    truststore as an anchor, and would accept what that path's CAs signed without a trusted root above them."""
    issuer = certificate_by_fingerprint(conn, tenant_id, issuer_fingerprint)
    if issuer is None:
        return []
    path = _walk(conn, tenant_id, issuer)
    root = path[-1]
    chain = path if _trusted(path) == path else []
    return chain + [row for row in certificates_of(conn, tenant_id, root["ca_id"])
                    if row["fingerprint"] != root["fingerprint"] and row["role"] != "cross" and _self_signed(row)
                    and row["distrusted_at"] is None and datetime.fromisoformat(row["not_after"]) > now]


def trust_anchors(conn: sqlite3.Connection, tenant_id: str, issuer_fingerprint: str, now: datetime) -> list[dict]:
    """The root certificates of ``truststore_chain``: what a truststore that must also accept another CA's
    certificates adds (``csm cluster bootstrap-tls --also-trust``)."""
    return [row for row in truststore_chain(conn, tenant_id, issuer_fingerprint, now) if _self_signed(row)]


def certificates_issued_by(conn: sqlite3.Connection, tenant_id: str, ca_id: str) -> list[dict]:
    """The certificates ``ca_id`` signed for other CAs (sub-CAs and cross-certificates), and a root's link
    certificates (its keys certifying each other at a rollover): what its OCSP responder knows as signed by it."""
    rows = conn.execute(f"SELECT {', '.join(CERT_COLUMNS)} FROM ca_certificates WHERE tenant_id = ? "
                        f"AND issuer_ca_id = ? AND (ca_id != ? OR role IN {LINK_ROLES!r})",
                        (tenant_id, ca_id, ca_id)).fetchall()
    return [dict(zip(CERT_COLUMNS, row)) for row in rows]


def certificate_by_fingerprint(conn: sqlite3.Connection, tenant_id: str, fingerprint: str) -> dict | None:
    row = conn.execute(f"SELECT {', '.join(CERT_COLUMNS)} FROM ca_certificates WHERE tenant_id = ? "
                       "AND fingerprint = ?", (tenant_id, fingerprint)).fetchone()
    return dict(zip(CERT_COLUMNS, row)) if row else None


def _self_signed(row: dict) -> bool:
    return row["subject_dn"] == row["issuer_dn"] and row["authority_key_id"] in (None, row["subject_key_id"])


def chain_from(conn: sqlite3.Connection, tenant_id: str, start: dict, *, via: str | None = None) -> list[dict]:
    """``start`` (a CA certificate row) and its issuers up to a self-signed root, leaf first (``_walk``), cut before
    the first certificate a compromise rollover withdrew: a chain signed under a withdrawn key ends without a root
    (empty, if ``start`` is itself withdrawn), and nothing a relying party trusts completes it."""
    return _trusted(_walk(conn, tenant_id, start, via=via))


def _trusted(chain: list[dict]) -> list[dict]:
    """``chain`` up to, not including, its first certificate withdrawn from trust (``distrusted_at``)."""
    return next((chain[:i] for i, row in enumerate(chain) if row["distrusted_at"] is not None), chain)


def _walk(conn: sqlite3.Connection, tenant_id: str, start: dict, *, via: str | None = None) -> list[dict]:
    """``start`` and its issuers up to a self-signed root, withdrawn certificates included.

    Each step takes the certificate whose subject key identifier is the previous one's
    authority key identifier and whose subject is its issuer. ``via`` prefers the path through
    that issuing CA (cross-certification); otherwise, and at every other step, the CA's own
    hierarchy is preferred over cross paths, then the certificate that expires last (rollover
    overlap); a certificate still trusted before all of them.
    """
    chain, seen = [start], {start["fingerprint"]}
    current = start
    while not _self_signed(current):
        rows = conn.execute(f"SELECT {', '.join(CERT_COLUMNS)} FROM ca_certificates WHERE tenant_id = ? "
                            "AND subject_key_id = ? AND subject_dn = ?",
                            (tenant_id, current["authority_key_id"], current["issuer_dn"])).fetchall()
        candidates = [dict(zip(CERT_COLUMNS, row)) for row in rows]
        candidates = [c for c in candidates if c["fingerprint"] not in seen and c["role"] not in LINK_ROLES]
        if not candidates:
            break
        # ``via`` decides only the step it names; every other step still prefers the CA's own hierarchy.
        candidates.sort(key=lambda c: (c["distrusted_at"] is None, bool(via) and c["issuer_ca_id"] == via,
                                       c["role"] != "cross", c["not_after"]), reverse=True)
        current = candidates[0]
        chain.append(current)
        seen.add(current["fingerprint"])
    return chain


def untrusted_cas(conn: sqlite3.Connection, tenant_id: str, root_id: str, now: datetime) -> list[str]:
    """The CAs whose current certificate chains to root ``root_id`` only through a certificate a compromise rollover
    withdrew (``withdrawn_path``): not revoked, not expired, those nearest the root first (each is rolled over under
    its parent's trusted key before its own children are)."""
    found = []
    for ca_id, fingerprint, not_after in conn.execute(
            "SELECT ca_id, fingerprint, not_after FROM cas WHERE tenant_id = ? AND status != 'revoked' "
            "AND fingerprint IS NOT NULL AND ca_id != ? ORDER BY ca_id", (tenant_id, root_id)).fetchall():
        depth = withdrawn_path(conn, tenant_id, fingerprint, root_id)
        if depth is not None and datetime.fromisoformat(not_after) > now:
            found.append((depth, ca_id))
    return [ca_id for _depth, ca_id in sorted(found)]


def withdrawn_path(conn: sqlite3.Connection, tenant_id: str, fingerprint: str, root_id: str) -> int | None:
    """How many certificates the CA certificate ``fingerprint`` and its issuers up to root ``root_id`` are, if one of
    them was withdrawn from trust by a compromise rollover: what it signed validates nowhere any more; None if its
    path is trusted, or ends at another root."""
    start = certificate_by_fingerprint(conn, tenant_id, fingerprint)
    if start is None:
        return None
    path = _walk(conn, tenant_id, start)
    return len(path) if path[-1]["ca_id"] == root_id and _trusted(path) != path else None


def any_on_token(conn: sqlite3.Connection) -> bool:
    """Whether a CA in service (any tenant) keeps its key on the PKCS#11 token: then readiness asks the token too."""
    return conn.execute("SELECT 1 FROM cas WHERE key_storage = 'hsm' AND status IN ('active', 'disabled') "
                        "LIMIT 1").fetchone() is not None
