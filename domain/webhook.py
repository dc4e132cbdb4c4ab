"""The Webhook aggregate: a tenant's subscription to lifecycle notifications, its URL rules, and the signature.

The signing secret never enters an event: events name it by ``secret_ref`` (its id in the key
vault). ``sign``/``verify`` define the ``X-CSM-Signature`` header that receivers check.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import msgspec

from domain.errors import AlreadyExists, DomainError, NotFound
from domain.events import Payload, event, resumable
from domain.names import dns_name_problem, embedded_ipv4, local_nat64_ipv4s, metadata_problem

STREAM_TYPE = "webhook"
MAX_URL = 2048
MAX_DESCRIPTION = 200
# What a subscription may ask for: the certificate lifecycle events an operator acts on.
NOTIFIABLE = ("certificate.expiry_warned", "certificate.renewed", "certificate.renewal_failed",
              "certificate.revoked", "ca.revoked")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_LOOPBACK_ONLY = "(allowed only where the service allows loopback webhooks, for tests and development)"
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # what resolvers read as a part of an IPv4 address
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.x.y.z to this host
SIGNATURE_HEADER = "X-CSM-Signature"
DEFAULT_TOLERANCE_SECONDS = 300
# How the delivery's HTTP client writes a host name into its requests (ASCII: A-labels), raising ValueError (or
# UnicodeError) for a name it cannot send to; infra supplies its own (infra/webhooks/delivery.encode_host).
HostEncoder = Callable[[str], str]
# Payload fields a receiver has no use for (vault references), dropped from notification data.
_INTERNAL_FIELDS = frozenset({"key_ref", "secret_ref", "password_ref"})


class InvalidWebhook(DomainError):
    """A subscription's input is malformed (bad URL, unknown event type): the caller's request, so 400."""

    status = 400


@event("webhook.subscribed")
class WebhookSubscribed(Payload, frozen=True, kw_only=True):
    webhook_id: str
    url: str
    event_types: list[str]
    enabled: bool
    description: str
    secret_ref: str  # the HMAC secret's id in the key vault (purpose "webhook-signing"); never the secret


@event("webhook.updated")
class WebhookUpdated(Payload, frozen=True, kw_only=True):
    url: str
    event_types: list[str]
    enabled: bool
    description: str


@event("webhook.secret_rotated")
class WebhookSecretRotated(Payload, frozen=True, kw_only=True):
    secret_ref: str


@event("webhook.deleted")
class WebhookDeleted(Payload, frozen=True, kw_only=True):
    reason: str


@event("webhook.delivery_failed")
class WebhookDeliveryFailed(Payload, frozen=True, kw_only=True):
    """Every attempt to deliver one notification failed; no response body is ever recorded."""

    delivery_id: str
    event_id: str
    event_type: str
    attempts: int
    status_code: int | None
    error: str


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: str = ""
    status: str = "absent"  # absent | active | deleted
    url: str = ""
    event_types: tuple[str, ...] = ()
    enabled: bool = False
    description: str = ""
    secret_ref: str = ""
    version: int = 0


def stream_id(webhook_id: str) -> str:
    return f"webhook-{webhook_id}"


@resumable
def fold(payloads: Iterable[Payload], start: Webhook | None = None) -> Webhook:
    state = Webhook() if start is None else start
    for payload in payloads:
        match payload:
            case WebhookSubscribed():
                state = Webhook(webhook_id=payload.webhook_id, status="active", url=payload.url,
                                event_types=tuple(payload.event_types), enabled=payload.enabled,
                                description=payload.description, secret_ref=payload.secret_ref,
                                version=state.version)
            case WebhookUpdated():
                state = msgspec.structs.replace(state, url=payload.url, event_types=tuple(payload.event_types),
                                                enabled=payload.enabled, description=payload.description)
            case WebhookSecretRotated():
                state = msgspec.structs.replace(state, secret_ref=payload.secret_ref)
            case WebhookDeleted():
                state = msgspec.structs.replace(state, status="deleted", enabled=False)
        state = msgspec.structs.replace(state, version=state.version + 1)
    return state


# rules ------------------------------------------------------------------------------------
def check_url(url: str, *, allow_loopback_http: bool = False, encode_host: HostEncoder | None = None) -> str:
    """``url`` if a notification may be sent there: https (http only to loopback, when allowed), no credentials,
    a valid DNS name or an IP address that is not loopback (unless allowed), link-local, unspecified or multicast.

    A name must be one ``encode_host``, the delivery's HTTP client, can send to (httpx: IDNA 2008), so that what
    is saved can be delivered; None: the standard library's IDNA 2003 codec, a structural check only.

    Private (RFC 1918, unique local) addresses are allowed: internal receivers are normal. Names are not
    resolved here: the delivery job applies ``address_problem`` to every address a name resolves to.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise InvalidWebhook("invalid_url", f"url must be 1-{MAX_URL} printable characters without spaces",
                             field="url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise InvalidWebhook("invalid_url", f"url cannot be parsed: {exc}", field="url") from None
    if parts.scheme not in ("https", "http"):
        raise InvalidWebhook("url_scheme", "url must use https", field="url")
    if not host:
        raise InvalidWebhook("invalid_url", "url must name a host", field="url")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidWebhook("url_credentials", "url must not carry credentials (user:password@)", field="url")
    if parts.fragment:
        raise InvalidWebhook("invalid_url", "url must not have a fragment", field="url")
    address = _address(host)
    if address is None:
        _check_dns_name(host, encode_host or _idna_2003)
    if parts.scheme == "http" and not (allow_loopback_http and _loopback(host)):
        raise InvalidWebhook("url_scheme", "url must use https (plain http only to a loopback address, and only "
                             "where the service allows it)", field="url")
    if address is None and _loopback(host) and not allow_loopback_http:
        raise InvalidWebhook("url_host", f"url must not name a loopback host ({host}) {_LOOPBACK_ONLY}",
                             field="url")
    problem = address_problem(address, allow_loopback=allow_loopback_http) if address is not None else None
    if problem:
        raise InvalidWebhook("url_host", f"url must not name {problem}", field="url")
    return url


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> str | None:
    """Why no notification may go to ``address``, or None: the one rule for a URL's literal address and for
    every address its name resolves to when a notification is sent (infra/webhooks/delivery.py). An IPv6 address
    that carries an IPv4 one (NAT64's ``64:ff9b::a9fe:a9fe`` is the metadata address) must pass as that one too."""
    address = getattr(address, "ipv4_mapped", None) or address
    if address.is_loopback and not allow_loopback:
        return f"a loopback address ({address}) {_LOOPBACK_ONLY}"
    if address.is_link_local or address.is_unspecified or address.is_multicast or address in _THIS_NETWORK:
        return f"a link-local, unspecified or multicast address ({address})"
    if problem := metadata_problem(address):
        return problem
    if address.version == 4:
        return None
    embedded = embedded_ipv4(address)
    for reached in ((embedded,) if embedded is not None else local_nat64_ipv4s(address)):
        if problem := address_problem(reached, allow_loopback=allow_loopback):
            return (f"{address}, which reaches {reached} (NAT64, 6to4, Teredo, SIIT or IPv4-compatible): "
                    f"{problem}")
    return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` is written as (an IPv4-mapped IPv6 address as its IPv4 one), or None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return getattr(address, "ipv4_mapped", None) or address


def _idna_2003(name: str) -> str:
    return name.encode("idna").decode("ascii")  # the standard library's codec: U-labels to A-labels


def _check_dns_name(host: str, encode_host: HostEncoder) -> None:
    """``host`` (not an IP address) must be a DNS name the delivery can send to: encodable by its HTTP client,
    labels of 1-63 letters, digits and hyphens, 253 characters at most (one trailing dot allowed). Checked here
    because the delivery job cannot send to anything else (a 64-character label failed every attempt in the idna
    codec, a symbol IDNA 2003 maps but IDNA 2008 refuses every attempt in the HTTP client)."""
    name = host[:-1] if host.endswith(".") else host
    try:
        name = encode_host(name)
    except ValueError as exc:  # UnicodeError too
        raise InvalidWebhook("invalid_url", f"url host is not a name the delivery can send to (an internationalised "
                             f"name must be valid IDNA 2008): {exc}", field="url") from None
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1].lower()):
        # 127.1, 2130706433, 0x7f.0.0.1: resolvers read these as IPv4 addresses, which the rules below must see
        raise InvalidWebhook("invalid_url", "url host is neither a DNS name nor an IP address in its usual form "
                             "(dotted decimal IPv4, or IPv6 in brackets)", field="url")
    problem = dns_name_problem(name, wildcard=False)
    if problem:
        raise InvalidWebhook("invalid_url", f"url host is not a valid DNS name: {problem}", field="url")


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS or host.rstrip(".").endswith(".localhost") or host.rstrip(".") == "localhost":
        return True  # RFC 6761: every name under localhost. is the loopback interface
    address = _address(host)
    return address is not None and address.is_loopback


def check_event_types(event_types: list[str] | None) -> list[str]:
    """The subscription's filter, sorted and without duplicates; None (or empty) means every notifiable type."""
    if not event_types:
        return sorted(NOTIFIABLE)
    unknown = sorted(set(event_types) - set(NOTIFIABLE))
    if unknown:
        raise InvalidWebhook("unknown_event_type", f"cannot subscribe to {', '.join(unknown)}; one of "
                             f"{', '.join(NOTIFIABLE)}", field="event_types")
    return sorted(set(event_types))


def _check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION or not description.isprintable():
        raise InvalidWebhook("invalid_description", f"description must be at most {MAX_DESCRIPTION} printable "
                             "characters", field="description")
    return description


def decide_subscribe(state: Webhook, subscribed: WebhookSubscribed, *, allow_loopback_http: bool,
                     encode_host: HostEncoder | None = None) -> list[Payload]:
    if state.status != "absent":
        raise AlreadyExists("webhook_exists", "a webhook with this id exists", field="webhook_id")
    check_url(subscribed.url, allow_loopback_http=allow_loopback_http, encode_host=encode_host)
    _check_description(subscribed.description)
    return [msgspec.structs.replace(subscribed, event_types=check_event_types(subscribed.event_types))]


def _existing(state: Webhook) -> Webhook:
    if state.status != "active":
        raise NotFound("webhook_not_found", "no such webhook", field="webhook_id")
    return state


def decide_update(state: Webhook, *, url: str | None, event_types: list[str] | None, enabled: bool | None,
                  description: str | None, allow_loopback_http: bool,
                  encode_host: HostEncoder | None = None) -> list[Payload]:
    current = _existing(state)
    new = WebhookUpdated(
        url=(check_url(url, allow_loopback_http=allow_loopback_http, encode_host=encode_host) if url is not None
             else current.url),
        event_types=check_event_types(event_types) if event_types is not None else list(current.event_types),
        enabled=current.enabled if enabled is None else enabled,
        description=_check_description(description) if description is not None else current.description)
    if (new.url, tuple(new.event_types), new.enabled, new.description) == (
            current.url, current.event_types, current.enabled, current.description):
        return []
    return [new]


def decide_rotate(state: Webhook, secret_ref: str) -> list[Payload]:
    _existing(state)
    return [WebhookSecretRotated(secret_ref=secret_ref)]


def decide_delete(state: Webhook, reason: str) -> list[Payload]:
    if state.status == "deleted":
        return []  # deleting twice is the same request
    _existing(state)
    return [WebhookDeleted(reason=reason[:200] or "deleted")]


def decide_delivery_failed(state: Webhook, failed: WebhookDeliveryFailed) -> list[Payload]:
    if state.status == "absent":
        raise NotFound("webhook_not_found", "no such webhook", field="webhook_id")
    return [failed]


# the notification and its signature -------------------------------------------------------
def subject_of(stream_id_: str) -> str:
    """The certificate (or CA) an event is about: its stream id without the type prefix."""
    return stream_id_.split("-", 1)[1] if "-" in stream_id_ else stream_id_


def notification(*, event_id: str, event_type: str, source: str, occurred_at: str, tenant_id: str,
                 stream_id_: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The delivered document, CloudEvents 1.0 shaped (structured mode) with a ``tenant`` extension."""
    return {"specversion": "1.0", "id": event_id, "type": event_type, "source": source, "time": occurred_at,
            "tenant": tenant_id, "subject": subject_of(stream_id_), "datacontenttype": "application/json",
            "data": {k: v for k, v in payload.items() if k not in _INTERNAL_FIELDS}}


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-CSM-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA-256(secret, "<t>." + body)>``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, now: int, tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> bool:
    """What a receiver does: parse the header, check the timestamp window, compare in constant time."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
