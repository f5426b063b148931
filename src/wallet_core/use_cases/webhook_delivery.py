"""Deliver outbound events to subscribed endpoints, at least once, and manage the endpoints.

One round of the worker (`deliver_webhooks`), each step its own short unit of work and no network call
inside one:
1. publish: number the events committed since the last round and queue a delivery of each to every
   endpoint subscribed to its type;
2. claim: take due deliveries (a lease: a worker killed mid-delivery leaves them to be tried again);
3. send each (no unit of work open), then store its outcome: delivered, retried later, or failed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import InvalidInput, NotFound
from wallet_core.ids import check_user_id
from wallet_core.outbound_events import WalletEvent
from wallet_core.paging import check_page_size
from wallet_core.ports import UnitOfWork, UnitOfWorkFactory, WebhookSender
from wallet_core.webhooks_out import (
    DELIVERY_TIMEOUT_SECONDS,
    MAX_ENDPOINTS,
    Delivery,
    DeliveryStatus,
    SendResult,
    WebhookEndpoint,
    after_attempt,
    check_description,
    check_endpoint_url,
    check_event_types,
    new_delivery,
    new_endpoint,
)

LEASE = timedelta(seconds=DELIVERY_TIMEOUT_SECONDS * 6)  # far longer than one attempt may take
BATCH = 50
PUBLISH_BATCH = 1000
MAX_DELIVERIES_PAGE = 500


@dataclass(frozen=True)
class DeliveryRound:
    published: int  # events numbered and queued this round
    attempted: int
    delivered: int
    failed: int  # deliveries that used up their schedule this round


def queue_deliveries(tx: UnitOfWork, events: Sequence[WalletEvent]) -> int:
    """A pending delivery of each event to each endpoint subscribed to its type (in the caller's unit
    of work). Returns how many were queued."""
    if not events:
        return 0
    endpoints = tx.endpoints.all()
    queued = 0
    for event in events:
        for endpoint in endpoints:
            if endpoint.subscribed(event.type.value):
                tx.deliveries.add(new_delivery(event.id, event.type.value, endpoint.id, event.created_at))
                queued += 1
    return queued


def publish_and_queue(tx: UnitOfWork, limit: int = PUBLISH_BATCH) -> int:
    """Number the newly committed events and queue their deliveries (the caller commits)."""
    published = tx.outbox.publish(limit)
    queue_deliveries(tx, [event for _, event in published])
    return len(published)


def deliver_webhooks(
    *,
    uow: UnitOfWorkFactory,
    sender: WebhookSender,
    schedule: tuple[int, ...],
    now: Clock = utc_now,
    limit: int = BATCH,
) -> DeliveryRound:
    with uow() as tx:
        published = publish_and_queue(tx)
        if published:
            tx.commit()
    at = now()
    with uow() as tx:
        claimed = tx.deliveries.claim(at, at + LEASE, limit)
        if claimed:
            tx.commit()
    delivered = failed = 0
    for delivery in claimed:
        done = _attempt(delivery, uow=uow, sender=sender, schedule=schedule, now=now)
        delivered += done.status is DeliveryStatus.DELIVERED
        failed += done.status is DeliveryStatus.FAILED
    return DeliveryRound(published, len(claimed), delivered, failed)


def _attempt(
    delivery: Delivery, *, uow: UnitOfWorkFactory, sender: WebhookSender, schedule: tuple[int, ...], now: Clock
) -> Delivery:
    with uow(read_only=True) as tx:
        endpoint = tx.endpoints.get(delivery.endpoint_id)
        event = tx.outbox.get(delivery.event_id)
    if endpoint is None or event is None:
        result = SendResult(None, "the endpoint was removed" if endpoint is None else "the event is gone")
        done = replace(after_attempt(delivery, result, (), now()), status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        body = encode_event(event)
        result = sender.send(
            endpoint.url, secrets=endpoint.signing_secrets(now()), message_id=event.id, body=body, at=now()
        )
        done = after_attempt(delivery, result, schedule, now())
    with uow() as tx:
        tx.deliveries.save(done)
        tx.commit()
    return done


def encode_event(event: WalletEvent) -> bytes:
    return json.dumps(event.body(), ensure_ascii=False, separators=(",", ":")).encode()


# -- managing endpoints ------------------------------------------------------------------------


def add_endpoint(
    *,
    url: object,
    events: object,
    description: object = None,
    uow: UnitOfWorkFactory,
    sender: WebhookSender,
    allow_private: bool,
    now: Clock = utc_now,
) -> WebhookEndpoint:
    """Register an endpoint; the answer holds its secret (shown only here). Raises InvalidInput for a
    URL that is not https:// or points into the private network."""
    checked = check_endpoint_url(url, allow_private=allow_private)
    types = check_event_types(events)
    text = check_description(description)
    sender.check_url(checked)  # resolves the host: outside any unit of work
    with uow() as tx:
        if len(tx.endpoints.all()) >= MAX_ENDPOINTS:
            raise InvalidInput("url", f"at most {MAX_ENDPOINTS} endpoints may be registered; remove one first")
        endpoint = new_endpoint(checked, types, text, now())
        tx.endpoints.add(endpoint)
        tx.commit()
    return endpoint


def list_endpoints(*, uow: UnitOfWorkFactory) -> list[WebhookEndpoint]:
    with uow(read_only=True) as tx:
        return tx.endpoints.all()


def remove_endpoint(*, endpoint_id: str, uow: UnitOfWorkFactory) -> None:
    endpoint_id = check_user_id(endpoint_id, "endpoint_id")
    with uow() as tx:
        if not tx.endpoints.remove(endpoint_id):
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        tx.commit()


def rotate_secret(*, endpoint_id: str, uow: UnitOfWorkFactory, now: Clock = utc_now) -> WebhookEndpoint:
    """A new secret (returned, shown only here); the old one also signs for 24 hours."""
    endpoint_id = check_user_id(endpoint_id, "endpoint_id")
    with uow() as tx:
        endpoint = tx.endpoints.get(endpoint_id)
        if endpoint is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        rotated = endpoint.rotated(now())
        tx.endpoints.update(rotated)
        tx.commit()
    return rotated


def list_deliveries(
    *, endpoint_id: str, status: object = None, limit: object = 100, uow: UnitOfWorkFactory
) -> list[Delivery]:
    endpoint_id = check_user_id(endpoint_id, "endpoint_id")
    chosen: DeliveryStatus | None = None
    if status is not None:
        if not isinstance(status, str) or status not in {s.value for s in DeliveryStatus}:
            raise InvalidInput("status", "must be pending, delivered or failed")
        chosen = DeliveryStatus(status)
    size = check_page_size(limit, MAX_DELIVERIES_PAGE)
    with uow(read_only=True) as tx:
        if tx.endpoints.get(endpoint_id) is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        return tx.deliveries.for_endpoint(endpoint_id, status=chosen, limit=size)


def redeliver(*, event_id: str, uow: UnitOfWorkFactory, now: Clock = utc_now) -> int:
    """Queue the event again for every endpoint subscribed to it now. Returns how many deliveries."""
    event_id = check_user_id(event_id, "event_id")
    with uow() as tx:
        publish_and_queue(tx)  # an event committed a moment ago gets its number (and first delivery) first
        event = tx.outbox.get(event_id)
        if event is None:
            raise NotFound(f"no event {event_id}")
        queued = queue_deliveries(tx, [replace(event, created_at=now())])
        tx.commit()
    return queued
