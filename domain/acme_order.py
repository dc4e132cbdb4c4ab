"""The ACME order aggregate (RFC 8555 7.1.3, 7.4): its events (the identifiers ordered, DNS names and RFC 8738 IP
addresses, and the certificate issued), its fold, its status from its authorizations', and the issue decision."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.acme_authz import Authorization
from domain.events import Payload, event, resumable

ORDER_STREAM_TYPE = "acme_order"


@event("acme.order_created")
class OrderCreated(Payload, frozen=True, kw_only=True):
    order_id: str
    account_id: str
    identifiers: list[str]  # DNS names
    authorization_ids: list[str]  # the DNS names' (in their order), then the IP addresses'
    expires: str
    not_after: str | None = None  # the certificate's requested end (RFC 3339 UTC), within the profile's maximum
    ip_identifiers: list[str] = []  # IP addresses (RFC 8738), compressed text form; absent from older events


@event("acme.order_issued")
class OrderIssued(Payload, frozen=True, kw_only=True):
    certificate_id: str
    csr_sha256: str


class Order(msgspec.Struct, frozen=True, kw_only=True):
    created: OrderCreated | None = None
    certificate_id: str | None = None


def order_stream_id(order_id: str) -> str:
    return f"acme-order-{order_id}"


@resumable
def fold_order(payloads: Iterable[Payload], start: Order | None = None) -> Order:
    state = start or Order()
    for payload in payloads:
        match payload:
            case OrderCreated():
                state = Order(created=payload)
            case OrderIssued():
                state = msgspec.structs.replace(state, certificate_id=payload.certificate_id)
    return state


def order_status(order: Order, authorizations: Iterable[Authorization], now: datetime) -> str:
    """RFC 8555 7.1.6: valid once issued; invalid if an authorization failed or was deactivated, or the order expired; ready when every
    authorization is valid; pending otherwise (finalizing happens within one request: no "processing")."""
    if order.certificate_id is not None:
        return "valid"
    statuses = [("deactivated" if authz.deactivated else authz.challenge_status) for authz in authorizations]
    if "invalid" in statuses or "deactivated" in statuses or datetime.fromisoformat(order.created.expires) <= now:
        return "invalid"
    return "ready" if all(s == "valid" for s in statuses) else "pending"


def decide_issued(state: Order, issued: OrderIssued) -> list[Payload]:
    if state.certificate_id is not None:
        return []
    return [issued]
