"""A tenant's compromised public keys: recorded by key_compromise revocations, never certified again in the tenant.

One stream per tenant (``compromised-keys``, in the tenant's own scope), so the decision at issuance is made
against the authority itself, never a lagging read model. A key is named by the SHA-256 of its
SubjectPublicKeyInfo DER (``CertificateFacts.public_key_sha256``): no key material beyond that hash is recorded.
The first report of a key is the one kept; reporting it again blocks nothing more (a report of keys known from its
source records only that it was made: ``key.compromise_report_repeated``). A hybrid certificate's report records
both halves (the classical key, and its ML-DSA key as ``alternative_of`` it): either alone certifies the holder.

A block reported in error is lifted by ``key.compromise_lifted`` (permission ``key:unblock``, a reason always): from
then on the key may be certified again, until reported again. Lifting revokes nothing back (a revocation is final),
and a key a compromise rollover rolled away from stays blocked: the rollover's withdrawals and revoked links stand.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
import msgspec

from domain.errors import AlreadyExists, DomainError
from domain.events import Payload, event, resumable

STREAM_TYPE = "compromised_keys"
STREAM_ID = "compromised-keys"  # one per tenant: streams are scoped by tenant, as every query of them is
# The revocation reasons that report the subject's key compromised: a certificate's key_compromise; for a CA
# certificate, ca_compromise says the same of the CA's key (RFC 5280 5.3.1 cACompromise).
CERTIFICATE_REASONS = frozenset({"key_compromise"})
CA_REASONS = frozenset({"key_compromise", "ca_compromise"})


def stream_id() -> str:
    return STREAM_ID


@event("key.compromise_recorded")
class KeyCompromiseRecorded(Payload, frozen=True, kw_only=True):
    """``public_key_sha256`` was reported compromised by revoking a certificate of it (``certificate_id``, under
    ``ca_id``) or a CA holding it (``subject_ca_id``): from then on no command certifies it in this tenant."""

    public_key_sha256: str  # hex SHA-256 of the SubjectPublicKeyInfo DER; never the key itself
    reason: str  # the revocation's reason: key_compromise, or ca_compromise for a CA
    reported_at: datetime
    invalidity_date: datetime | None  # when it was (suspected) compromised, as the revocation said
    certificate_id: str | None = None  # the certificate whose revocation reported it
    ca_id: str | None = None  # that certificate's issuing CA
    subject_ca_id: str | None = None  # or the CA whose revocation reported it (its key, any of them)
    # "revocation": by revoking that certificate or CA; "report": named in a report of a key found compromised
    # after what holds it was revoked for another reason, or of a root (which is not revoked); "rollover": the
    # root ``subject_ca_id`` rolled over away from it, in compromise mode
    through: str = "revocation"
    # a hybrid's ML-DSA half: the classical key (``public_key_sha256`` of its certificate) it was reported with
    alternative_of: str | None = None


@event("key.compromise_lifted")
class KeyCompromiseLifted(Payload, frozen=True, kw_only=True):
    """A block reported in error is lifted: ``public_key_sha256`` may be certified in this tenant again."""

    public_key_sha256: str
    reason: str  # why the report was in error: mandatory, for the audit trail
    lifted_at: datetime
    reported_at: datetime  # of the report it lifts


@event("key.compromise_report_repeated")
class KeyCompromiseReportRepeated(Payload, frozen=True, kw_only=True):
    """A report (POST /v1/tenants/{id}/compromised-keys) named only keys it had recorded already, from the same
    certificate or CA: it blocks nothing new, and is kept as the report's own record (who reported, when; its
    append holds the request's Idempotency-Key, so a retry answers what this report revoked)."""

    public_keys_sha256: tuple[str, ...]  # hex SHA-256 of each SubjectPublicKeyInfo DER named; never a key
    reported_at: datetime
    invalidity_date: datetime | None  # as this report said; the block keeps its first report's
    certificate_id: str | None = None  # the certificate the report named (issued by ``ca_id``)
    ca_id: str | None = None
    subject_ca_id: str | None = None  # or the CA it named


class CompromisedKeys(msgspec.Struct, frozen=True, kw_only=True):
    """Every compromised key of the tenant, by its hash, with its first report; read-only once folded."""

    keys: dict[str, KeyCompromiseRecorded] = {}  # read-only: a fold copies it before adding
    lifted: dict[str, KeyCompromiseLifted] = {}  # the last lift of each key not reported again since; read-only
    # keys a compromise rollover rolled away from (a report through "rollover", first or not): never lifted
    rolled_away: frozenset[str] = frozenset()
    # per blocked key, every source that reported it since its block began (``source``): a lift refuses a key
    # reported again from elsewhere unless it lifts every report (a genuine report racing a lift of one in error)
    sources: dict[str, frozenset[tuple]] = {}  # read-only
    version: int = 0


def source(report: KeyCompromiseRecorded) -> tuple:
    """What reported a key: the certificate or CA, and how; the same source again (a retry, the cascade) is no
    new report."""
    return report.certificate_id, report.ca_id, report.subject_ca_id, report.through


@resumable
def fold(payloads: Iterable[Payload], start: CompromisedKeys | None = None) -> CompromisedKeys:
    state = CompromisedKeys() if start is None else start
    keys, lifted, sources, version, copied = state.keys, state.lifted, state.sources, state.version, False
    rolled_away = state.rolled_away
    for payload in payloads:
        version += 1
        if isinstance(payload, KeyCompromiseRecorded) and payload.through == "rollover":
            rolled_away = rolled_away | {payload.public_key_sha256}
        key = getattr(payload, "public_key_sha256", None)
        new_report = isinstance(payload, KeyCompromiseRecorded) and (
            key not in keys or source(payload) not in sources.get(key, frozenset()))
        if new_report or isinstance(payload, KeyCompromiseLifted) and key in keys:
            if not copied:  # copied once per fold: a kept state is never changed
                keys, lifted, sources, copied = dict(keys), dict(lifted), dict(sources), True
            if isinstance(payload, KeyCompromiseRecorded):
                if key not in keys:
                    keys[key] = payload  # the first report of the block is the one listed
                    lifted.pop(key, None)
                sources[key] = sources.get(key, frozenset()) | {source(payload)}
            else:
                del keys[key]
                sources.pop(key, None)
                lifted[key] = payload
    if not copied:
        if version == state.version:
            return state
        return msgspec.structs.replace(state, version=version, rolled_away=rolled_away)
    return CompromisedKeys(keys=keys, lifted=lifted, rolled_away=rolled_away, sources=sources, version=version)


def blocked_count(state: CompromisedKeys) -> int:
    """How many keys are blocked, a hybrid's two halves counted once: a hybrid's ML-DSA half (``alternative_of``)
    is not counted while the classical key it was reported with is blocked too (they are one report, and lifted
    together); reported on its own (a pure ML-DSA certificate's key), it is a key of its own."""
    return sum(1 for report in state.keys.values()
               if report.alternative_of is None or report.alternative_of not in state.keys)


def decide_record(state: CompromisedKeys, reports: Iterable[KeyCompromiseRecorded]) -> list[Payload]:
    """The reports of keys not yet recorded (the first of each key), and of keys already blocked from a source
    that has not reported them since the block began; nothing if all are known (a retry, the cascade). A
    compromise rollover's report is such a source too: it makes the block final (see ``decide_lift``)."""
    known = {key: set(found) for key, found in state.sources.items()}
    new = []
    for report in reports:
        key, where = report.public_key_sha256, source(report)
        if where not in known.setdefault(key, set()):
            known[key].add(where)
            new.append(report)
    return new


def decide_report(state: CompromisedKeys, reports: list[KeyCompromiseRecorded]) -> list[Payload]:
    """A report's events: ``decide_record``'s, or if every key is known from this source, one
    ``key.compromise_report_repeated`` naming them (a report always leaves its own record)."""
    new = decide_record(state, reports)
    if new or not reports:
        return new
    first = reports[0]
    return [KeyCompromiseReportRepeated(
        public_keys_sha256=tuple(dict.fromkeys(r.public_key_sha256 for r in reports)), reported_at=first.reported_at,
        invalidity_date=first.invalidity_date, certificate_id=first.certificate_id, ca_id=first.ca_id,
        subject_ca_id=first.subject_ca_id)]


def _reported_through(report: KeyCompromiseRecorded) -> str:
    if report.through == "rollover":
        return f"the compromise rollover of CA {report.subject_ca_id}"
    how = "a report naming" if report.through == "report" else "the revocation of"
    if report.certificate_id is not None:
        return f"{how} certificate {report.certificate_id}"
    return f"{how} CA {report.subject_ca_id}"


def check_not_compromised(state: CompromisedKeys, public_key_sha256: str, field: str) -> None:
    """Refuse to certify a key reported compromised in this tenant (422 ``key_compromised``, naming ``field``)."""
    report = state.keys.get(public_key_sha256)
    if report is not None:
        raise DomainError("key_compromised", f"this public key (SHA-256 {public_key_sha256}) was reported compromised "
                          f"on {report.reported_at.isoformat()} by {_reported_through(report)} ({report.reason}): "
                          "it is never certified again in this tenant; make a new key", field=field)


def decide_lift(state: CompromisedKeys, public_key_sha256: str, *, reason: str, now: datetime,
                every_report: bool = False) -> list[Payload]:
    """Lift a block reported in error, and its hybrid partner's (the other half of the same report); 409 for a key not
    blocked (nothing to lift, or lifted already), for one a compromise rollover rolled away from, and for one
    reported from more than one source unless ``every_report`` (each of them was in error)."""
    report = state.keys.get(public_key_sha256)
    if report is None:
        if public_key_sha256 in state.lifted:
            raise AlreadyExists("compromise_already_lifted", f"the block of key {public_key_sha256} was lifted on "
                                f"{state.lifted[public_key_sha256].lifted_at.isoformat()}", field="public_key_sha256")
        raise AlreadyExists("key_not_compromised", f"no key of SHA-256 {public_key_sha256} is blocked in this tenant (GET "
                       "/v1/tenants/{id}/compromised-keys lists them)", field="public_key_sha256")
    partners = {public_key_sha256,
                *(key for key, other in state.keys.items() if other.alternative_of == public_key_sha256)}
    if report.alternative_of is not None and report.alternative_of in state.keys:
        partners.add(report.alternative_of)
    for key in partners:
        if key in state.rolled_away or state.keys[key].through == "rollover":
            raise AlreadyExists("compromise_rollover_final", f"key {key} is the one CA {state.keys[key].subject_ca_id} "
                                "rolled over away from in compromise mode: its certificates stay withdrawn and its "
                                "links revoked, so it stays blocked", field="public_key_sha256")
    for key in partners:
        if len(state.sources.get(key, ())) > 1 and not every_report:
            raise AlreadyExists("compromise_reported_again", f"key {key} was reported compromised from "
                                f"{len(state.sources[key])} sources since its block began (the one listed, and "
                                "others since): lift with every_report true only if every one was in error",
                                field="every_report")
    return [KeyCompromiseLifted(public_key_sha256=key, reason=reason, lifted_at=now,
                                reported_at=state.keys[key].reported_at) for key in sorted(partners)]
