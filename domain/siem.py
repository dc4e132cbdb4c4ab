"""SIEM encodings of an event envelope: CEF, LEEF 2.0, RFC 5424 syslog with structured data, RFC 6587 framing.

Pure functions of the envelope (which carries no secrets, docs/events.md section 10) and a few options: no I/O.
Every encoding is one line (no CR, LF or other control character outside escapes) and at most ``max_bytes``
UTF-8 bytes: the payload is what gets cut, with a marker, and each other field is bounded to ``FIELD_BYTES``.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from typing import Any

import msgspec

from domain.events import EventEnvelope

FORMATS = ("cef", "leef", "rfc5424-json")
VENDOR = "CSM"
PRODUCT = "Cassandra Security Manager"
APP_NAME = "csm"
SD_ID = "csm@32473"  # 32473: the enterprise number RFC 5612 reserves for documentation; override with sd_id
FIELD_BYTES = 256  # each field but the payload: longer values are cut, with TRUNCATED appended
MIN_MESSAGE_BYTES = 1024
TRUNCATED = "...[truncated]"
FACILITIES = {"kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "authpriv": 10, "audit": 13,
              **{f"local{n}": 16 + n for n in range(8)}}
LEEF_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"

# CEF severity (0-10: 0-3 low, 4-6 medium, 7-8 high, 9-10 very high) of each type; others are DEFAULT_SEVERITY.
DEFAULT_SEVERITY = 3
SEVERITY = {
    "key.compromise_recorded": 10, "ca.revoked": 9, "key.compromise_lifted": 8, "access.denied": 7, "auth.account_locked": 7,
    "tenant.suspended": 6, "mfa.totp_removed": 6, "certificate.private_key_exported": 6, "service_account.disabled": 6,
    "service_account.enabled": 5,
    "auth.login_failed": 5, "user.role_granted": 5, "user.password_reset": 5, "user.disabled": 5,
    "user.sessions_ended": 5, "api_token.issued": 5, "ca.created": 5, "ca.disabled": 5, "ca.key_rolled_over": 5,
    "ca.certificate_revoked": 5, "certificate.revoked": 5, "certificate.renewal_failed": 5,
    "certificate.deployment_failed": 5,
    "vault.kek_rotated": 5, "vault.kek_retired": 5, "audit.keys_registered": 5, "auth.signing_key_rotated": 5,
    "webhook.delivery_failed": 4, "acme.challenge_failed": 4, "user.role_revoked": 4, "api_token.revoked": 4,
    "session.revoked": 4, "tenant.policy_set": 4, "certificate.expiry_warned": 4, "acme.eab_key_revoked": 4,
    "certificate.issued": 2, "certificate.renewed": 2, "session.started": 2, "session.refreshed": 1,
    "auth.login_succeeded": 2, "audit.checkpoint": 1, "ca.crl_published": 1, "discovery.observed": 2,
}
COMPROMISE_REASONS = {"key_compromise", "ca_compromise", "aa_compromise"}

_json = msgspec.json.Encoder(order="sorted")


def severity(envelope: EventEnvelope) -> int:
    """The event's CEF severity, 0-10: the type's, raised for what signals a compromise."""
    payload = envelope.payload if isinstance(envelope.payload, dict) else {}
    if envelope.type in ("certificate.revoked", "ca.certificate_revoked") \
            and payload.get("reason") in COMPROMISE_REASONS:
        return 8
    if envelope.type == "ca.key_rolled_over" and payload.get("compromised") is True:
        return 9
    if envelope.type == "session.revoked" and payload.get("reason") == "refresh_token_reuse":
        return 8
    if envelope.type == "certificate.expiry_warned" and payload.get("threshold_days") == 1:
        return 6
    return SEVERITY.get(envelope.type, DEFAULT_SEVERITY)


def syslog_severity(level: int) -> int:
    """RFC 5424 severity of a CEF severity: 9-10 critical, 7-8 warning, 4-6 notice, else informational."""
    return 2 if level >= 9 else 4 if level >= 7 else 5 if level >= 4 else 6


# text helpers -----------------------------------------------------------------------------------------------
def clean(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1), line or paragraph separator and lone surrogate
    replaced by U+FFFD: what a one-line record may hold."""
    if text.isprintable() and text.isascii():
        return text
    return "".join("\ufffd" if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") else ch for ch in text)


def cut(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes of ``text``, never half a character."""
    data = text.encode("utf-8", "replace")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def trim(text: Any, limit: int = FIELD_BYTES) -> str:
    """A field as text of at most ``limit`` bytes (TRUNCATED appended when it was cut); None is empty."""
    text = "" if text is None else str(text)
    if len(text.encode("utf-8", "replace")) <= limit:
        return text
    return cut(text, limit - len(TRUNCATED)) + TRUNCATED


def bound(text: Any, limit: int = FIELD_BYTES) -> str:
    """A field as clean text (see ``clean``) of at most ``limit`` bytes."""
    return clean(trim(text, limit))


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON (sorted keys), on one line: what JSON leaves unescaped (DEL, C1 controls, line
    separators, a lone surrogate) is replaced by U+FFFD."""
    try:
        return clean(_json.encode(value).decode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: msgspec refuses it, the standard library passes it to clean
        return clean(json.dumps(msgspec.to_builtins(value), sort_keys=True, ensure_ascii=False,
                                separators=(",", ":")))


def payload_json(envelope: EventEnvelope) -> str:
    """The payload as canonical JSON."""
    return canonical_json(envelope.payload)


def _fit(build, payload: str, max_bytes: int) -> str:
    """``build(payload)``, the payload cut (TRUNCATED and its original size appended) until the line fits."""
    line = build(payload)
    size = len(line.encode("utf-8"))
    original = len(payload.encode("utf-8"))
    keep = original
    while size > max_bytes and keep > 0:
        keep = max(0, keep - (size - max_bytes) - 64)  # 64: room for the marker, which grows when escaped
        line = build(cut(payload, keep) + f"{TRUNCATED[:-1]} from {original} bytes]")
        size = len(line.encode("utf-8"))
    return line


def timestamp(occurred_at: str) -> datetime | None:
    """``occurred_at`` as an aware UTC datetime, or None if it is not RFC 3339."""
    try:
        parsed = datetime.fromisoformat(occurred_at)
    except (TypeError, ValueError):
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def category(event_type: str) -> str:
    """The aggregate an event type belongs to: ``certificate`` of ``certificate.issued``."""
    return event_type.split(".", 1)[0]


# CEF --------------------------------------------------------------------------------------------------------
def cef_header(text: str) -> str:
    """A CEF header field: backslash and pipe escaped, line breaks made spaces."""
    text = bound(text.replace("\r", " ").replace("\n", " "))
    return text.replace("\\", "\\\\").replace("|", "\\|")


def cef_value(text: Any) -> str:
    """A CEF extension value: backslash, equals sign and line breaks escaped (pipes need none)."""
    text = "" if text is None else str(text)
    text = text.replace("\\", "\\\\").replace("=", "\\=")
    return clean(text.replace("\n", "\\n").replace("\r", "\\r"))


def _cef_fields(envelope: EventEnvelope, hostname: str | None) -> list[tuple[str, Any]]:
    when = timestamp(envelope.occurred_at)
    fields: list[tuple[str, Any]] = []
    if when is not None:
        fields.append(("rt", int(when.timestamp() * 1000)))
    if hostname:
        fields.append(("dvchost", trim(hostname)))
    fields += [("externalId", trim(envelope.event_id)), ("cat", trim(category(envelope.type))),
               ("act", trim(envelope.type)), ("suser", trim(envelope.actor.principal)),
               ("cs1Label", "tenant"), ("cs1", trim(envelope.tenant_id)),
               ("cs2Label", "stream"), ("cs2", trim(envelope.stream_id)),
               ("cs3Label", "hash"), ("cs3", trim(envelope.hash)),
               ("cs4Label", "correlationId"), ("cs4", trim(envelope.correlation_id)),
               ("cs5Label", "authMethod"), ("cs5", trim(envelope.actor.auth_method)),
               ("cn1Label", "globalPosition"), ("cn1", envelope.global_position or 0),
               ("cn2Label", "streamVersion"), ("cn2", envelope.version)]
    return fields


def cef(envelope: EventEnvelope, *, version: int = 0, product_version: str = "", hostname: str | None = None,
        max_bytes: int = 8192) -> str:
    """The event as one ArcSight CEF record (``CEF:0|…`` or ``CEF:1|…``); the payload's JSON is ``cs6``."""
    if version not in (0, 1):
        raise ValueError("CEF version is 0 or 1")
    name = envelope.type.replace(".", " ").replace("_", " ")
    header = "|".join([f"CEF:{version}", VENDOR, cef_header(PRODUCT), cef_header(product_version or "0"),
                       cef_header(envelope.type), cef_header(name), str(severity(envelope))])
    extension = " ".join(f"{key}={cef_value(value)}" for key, value in _cef_fields(envelope, hostname))

    def build(payload: str) -> str:
        return f"{header}|{extension} cs6Label=payload cs6={cef_value(payload)}"

    return _fit(build, payload_json(envelope), max_bytes)


# LEEF -------------------------------------------------------------------------------------------------------
def leef(envelope: EventEnvelope, *, product_version: str = "", max_bytes: int = 8192) -> str:
    """The event as one IBM QRadar LEEF 2.0 record, attributes separated by tabs (delimiter ``x09``)."""
    when = timestamp(envelope.occurred_at)
    header = "|".join(["LEEF:2.0", VENDOR, cef_header(PRODUCT), cef_header(product_version or "0"),
                       cef_header(envelope.type), "x09"])
    attributes: list[tuple[str, Any]] = []
    if when is not None:
        attributes += [("devTime", when.isoformat(timespec="milliseconds")), ("devTimeFormat", LEEF_TIME_FORMAT)]
    attributes += [("cat", envelope.type), ("sev", severity(envelope)), ("usrName", envelope.actor.principal),
                   ("authMethod", envelope.actor.auth_method), ("eventId", envelope.event_id),
                   ("tenant", envelope.tenant_id), ("stream", envelope.stream_id), ("streamVersion", envelope.version),
                   ("position", envelope.global_position or 0), ("hash", envelope.hash),
                   ("correlationId", envelope.correlation_id)]
    body = "\t".join(f"{key}={bound(value)}" for key, value in attributes)

    def build(payload: str) -> str:
        return f"{header}|{body}\tpayload={clean(payload)}"

    return _fit(build, payload_json(envelope), max_bytes)


# RFC 5424 ---------------------------------------------------------------------------------------------------
def _ascii_token(text: str, limit: int) -> str:
    """A header token (HOSTNAME, APP-NAME, MSGID): printable US-ASCII, at most ``limit``; ``-`` when empty."""
    token = "".join(ch for ch in text if 33 <= ord(ch) <= 126)[:limit]
    return token or "-"


def sd_value(text: Any) -> str:
    """An RFC 5424 PARAM-VALUE: quote, backslash and closing bracket escaped; bounded and on one line."""
    return bound(text).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def structured_data(envelope: EventEnvelope, sd_id: str = SD_ID) -> str:
    """One SD-ELEMENT naming the event: id, position, hash and where it belongs."""
    params = [("event_id", envelope.event_id), ("position", envelope.global_position or 0),
              ("hash", envelope.hash), ("tenant", envelope.tenant_id), ("type", envelope.type),
              ("stream", envelope.stream_id), ("version", envelope.version)]
    name = _ascii_token("".join(ch for ch in sd_id if ch not in '="]'), 32)
    return f"[{name} " + " ".join(f'{key}="{sd_value(value)}"' for key, value in params) + "]"


def syslog_timestamp(occurred_at: str) -> str:
    """RFC 5424 TIMESTAMP (UTC, microseconds), or the NILVALUE ``-``."""
    when = timestamp(occurred_at)
    return "-" if when is None else when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_message(envelope: EventEnvelope, max_bytes: int) -> str:
    """The envelope as canonical JSON (sorted keys, ``hash`` included); when it is over ``max_bytes`` the payload
    becomes ``{"json_prefix": …}`` (the start of its JSON) and ``payload_truncated`` its original size."""
    whole = canonical_json(envelope)
    if len(whole.encode("utf-8")) <= max_bytes:
        return whole
    data = msgspec.to_builtins(envelope)
    original = payload_json(envelope)
    data["payload_truncated"] = len(original.encode("utf-8"))

    def build(prefix: str) -> str:
        return canonical_json({**data, "payload": {"json_prefix": prefix}})

    return _fit(build, original, max_bytes)


def syslog(envelope: EventEnvelope, message: str, *, facility: int = FACILITIES["authpriv"], hostname: str = "-",
           procid: str = "-", sd_id: str = SD_ID) -> str:
    """An RFC 5424 message: PRI (facility and the event's severity), VERSION 1, TIMESTAMP ``occurred_at``,
    HOSTNAME, APP-NAME ``csm``, PROCID, MSGID the event type, the event's structured data, then ``message``."""
    if facility not in range(24):
        raise ValueError("a syslog facility is 0-23")
    pri = facility * 8 + syslog_severity(severity(envelope))
    header = " ".join([f"<{pri}>1", syslog_timestamp(envelope.occurred_at), _ascii_token(hostname, 255), APP_NAME,
                       _ascii_token(procid, 128), _ascii_token(envelope.type, 32), structured_data(envelope, sd_id)])
    return f"{header} {message}"


def record(envelope: EventEnvelope, fmt: str, *, product_version: str = "", hostname: str | None = None,
           max_bytes: int = 8192, cef_version: int = 0) -> str:
    """The event in ``fmt`` as it is written to a file: a CEF or LEEF record, or a whole RFC 5424 message."""
    if fmt == "cef":
        return cef(envelope, version=cef_version, product_version=product_version, hostname=hostname,
                   max_bytes=max_bytes)
    if fmt == "leef":
        return leef(envelope, product_version=product_version, max_bytes=max_bytes)
    if fmt == "rfc5424-json":
        return message(envelope, fmt, hostname=hostname or "-", max_bytes=max_bytes)
    raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")


def message(envelope: EventEnvelope, fmt: str, *, product_version: str = "", hostname: str = "-",
            facility: int = FACILITIES["authpriv"], procid: str = "-", sd_id: str = SD_ID,
            max_bytes: int = 8192, cef_version: int = 0) -> str:
    """The event as one RFC 5424 syslog message whose MSG is the event in ``fmt`` (CEF, LEEF, or the JSON
    envelope), at most ``max_bytes`` bytes (at least MIN_MESSAGE_BYTES)."""
    max_bytes = max(max_bytes, MIN_MESSAGE_BYTES)
    empty = syslog(envelope, "", facility=facility, hostname=hostname, procid=procid, sd_id=sd_id)
    room = max(max_bytes - len(empty.encode("utf-8")), MIN_MESSAGE_BYTES // 2)
    if fmt == "cef":
        body = cef(envelope, version=cef_version, product_version=product_version,
                   hostname=None if hostname == "-" else hostname, max_bytes=room)
    elif fmt == "leef":
        body = leef(envelope, product_version=product_version, max_bytes=room)
    elif fmt == "rfc5424-json":
        body = json_message(envelope, room)
    else:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    return empty + body


def octet_counted(message_text: str) -> bytes:
    """RFC 6587 octet-counting framing (the framing RFC 5425 requires over TLS): ``LEN SP MSG``."""
    data = message_text.encode("utf-8")
    return str(len(data)).encode() + b" " + data


def newline_terminated(message_text: str) -> bytes:
    """RFC 6587 non-transparent framing: the message and LF (safe: no message here holds a line break)."""
    return message_text.encode("utf-8") + b"\n"


FRAMINGS = {"octet-counting": octet_counted, "newline": newline_terminated}
