"""A tenant's compromised public keys: recorded by key_compromise revocations, never certified again in the tenant.

One stream per tenant (``compromised-keys``, in the tenant's own scope), so the decision at issuance is made
against the authority itself, never a lagging read model. A key is named by the SHA-256 of its
SubjectPublicKeyInfo DER (``CertificateFacts.public_key_sha256``): no key material beyond that hash is recorded.
The first report of a key is the one kept; reporting it again records nothing. A hybrid certificate's report records
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


class CompromisedKeys(msgspec.Struct, frozen=True, kw_only=True):
    """Every compromised key of the tenant, by its hash, with its first report; read-only once folded."""

    keys: dict[str, KeyCompromiseRecorded] = {}  # read-only: a fold copies it before adding
    lifted: dict[str, KeyCompromiseLifted] = {}  # the last lift of each key not reported again since; read-only
    # keys a compromise rollover rolled away from (a report through "rollover", first or not): never lifted
    rolled_away: frozenset[str] = frozenset()
    version: int = 0


@resumable
def fold(payloads: Iterable[Payload], start: CompromisedKeys | None = None) -> CompromisedKeys:
    state = CompromisedKeys() if start is None else start
    keys, lifted, version, copied = state.keys, state.lifted, state.version, False
    rolled_away = state.rolled_away
    for payload in payloads:
        version += 1
        if isinstance(payload, KeyCompromiseRecorded) and payload.through == "rollover":
            rolled_away = rolled_away | {payload.public_key_sha256}
        if isinstance(payload, KeyCompromiseRecorded) and payload.public_key_sha256 not in keys \
                or isinstance(payload, KeyCompromiseLifted) and payload.public_key_sha256 in keys:
            if not copied:  # copied once per fold: a kept state is never changed
                keys, lifted, copied = dict(keys), dict(lifted), True
            if isinstance(payload, KeyCompromiseRecorded):
                keys[payload.public_key_sha256] = payload
                lifted.pop(payload.public_key_sha256, None)
            else:
                del keys[payload.public_key_sha256]
                lifted[payload.public_key_sha256] = payload
    if not copied:
        if version == state.version:
            return state
        return msgspec.structs.replace(state, version=version, rolled_away=rolled_away)
    return CompromisedKeys(keys=keys, lifted=lifted, rolled_away=rolled_away, version=version)


def decide_record(state: CompromisedKeys, reports: Iterable[KeyCompromiseRecorded]) -> list[Payload]:
    """The reports of keys not yet recorded, the first of each key; nothing if all are (a retry, the cascade). A
    compromise rollover's report is recorded also for a key already reported otherwise (it makes the block final,
    see ``decide_lift``), once."""
    seen, final, new = set(state.keys), set(state.rolled_away), []
    for report in reports:
        key = report.public_key_sha256
        if key not in seen or report.through == "rollover" and key not in final:
            seen.add(key)
            if report.through == "rollover":
                final.add(key)
            new.append(report)
    return new


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


def decide_lift(state: CompromisedKeys, public_key_sha256: str, *, reason: str, now: datetime) -> list[Payload]:
    """Lift a block reported in error, and its hybrid partner's (the other half of the same report); 409 for a key not
    blocked (nothing to lift, or lifted already) and for one a compromise rollover rolled away from."""
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
    return [KeyCompromiseLifted(public_key_sha256=key, reason=reason, lifted_at=now,
                                reported_at=state.keys[key].reported_at) for key in sorted(partners)]
