"""WebhookEndpoints and WebhookDeliveries over one SQLAlchemy connection (tables `webhook_endpoints`
and `webhook_deliveries`, 0008): plain SQL sent to the driver, one statement per method (claim: 2 on
SQLite).

Claiming: on PostgreSQL the due deliveries are picked and locked with FOR UPDATE SKIP LOCKED and
leased in the same statement, so concurrent workers claim different deliveries and none waits for
another; a delivery another worker has just claimed and committed is no longer due (its next attempt
is its lease's end) and is not taken again. On SQLite the transaction holds the writer lock, so the
pick and the lease (two statements) see no other worker.
"""

# ruff: noqa: S608 -- the f-strings splice in the constant column lists below, never a value

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from adapters.sql.driver import Driver, Sql
from adapters.sql.lease_claim import LeaseClaim
from wallet_core.errors import NotFound
from wallet_core.webhooks_out import Delivery, DeliveryStatus, WebhookEndpoint

ENDPOINT_COLUMNS = "id, url, events, description, secret, previous_secret, previous_secret_expires_at, created_at"
DELIVERY_COLUMNS = (
    "id, event_id, event_type, endpoint_id, status, attempts, next_attempt_at, last_status_code, last_error, "
    "delivered_at, created_at"
)


# -- endpoints -----------------------------------------------------------------------------------------
_ADD_ENDPOINT = Sql.of(
    f"""
    INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS})
    VALUES (:id, :url, :events, :description, :secret, :previous_secret, :previous_secret_expires_at, :created_at)
    """
)
_ENDPOINT = Sql.of(f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = :p_id")
_ALL_ENDPOINTS = Sql.of(
    f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id",
    postgresql=f'SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id COLLATE "C"',
)
_REMOVE_ENDPOINT = Sql.of("DELETE FROM webhook_endpoints WHERE id = :p_id")
_UPDATE_ENDPOINT = Sql.of(
    """
    UPDATE webhook_endpoints SET url = :url, events = :events, description = :description, secret = :secret,
        previous_secret = :previous_secret, previous_secret_expires_at = :previous_secret_expires_at,
        created_at = :created_at
    WHERE id = :id
    """
)

# -- deliveries ----------------------------------------------------------------------------------------
_ADD_DELIVERY = Sql.of(
    f"""
    INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS})
    VALUES (:id, :event_id, :event_type, :endpoint_id, :status, :attempts, :next_attempt_at, :last_status_code,
            :last_error, :delivered_at, :created_at)
    """
)
_DELIVERY = Sql.of(f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = :p_id")
_SAVE_DELIVERY = Sql.of(
    """
    UPDATE webhook_deliveries SET event_id = :event_id, event_type = :event_type, endpoint_id = :endpoint_id,
        status = :status, attempts = :attempts, next_attempt_at = :next_attempt_at,
        last_status_code = :last_status_code, last_error = :last_error, delivered_at = :delivered_at,
        created_at = :created_at
    WHERE id = :id
    """
)
# Due deliveries, oldest due first, claimed with a lease (adapters.sql.lease_claim); the partial index
# ix_webhook_deliveries_due needs `status = 'pending'` spelled literally.
_CLAIM = LeaseClaim.of(
    table="webhook_deliveries", columns=DELIVERY_COLUMNS, due="next_attempt_at", pending="status = 'pending'"
)
# An endpoint's deliveries, newest first (ix_webhook_deliveries_endpoint_created).
_FOR_ENDPOINT = (
    "SELECT {columns} FROM webhook_deliveries WHERE endpoint_id = :p_endpoint{status} "
    "ORDER BY created_at DESC, {id} DESC LIMIT :p_limit"
)
_FOR_ENDPOINT_SQL = {
    with_status: Sql.of(
        _FOR_ENDPOINT.format(
            columns=DELIVERY_COLUMNS, status=" AND status = :p_status" if with_status else "", id="id"
        ),
        postgresql=_FOR_ENDPOINT.format(
            columns=DELIVERY_COLUMNS, status=" AND status = :p_status" if with_status else "", id='id COLLATE "C"'
        ),
    )
    for with_status in (False, True)
}


class SqlWebhookEndpoints:
    """The endpoints as seen through the unit of work's driver connection."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    def add(self, endpoint: WebhookEndpoint) -> None:
        self._driver.run(_ADD_ENDPOINT, self._row(endpoint))

    def get(self, endpoint_id: str) -> WebhookEndpoint | None:
        row = self._driver.one(_ENDPOINT, {"p_id": endpoint_id})
        return None if row is None else self._endpoint_of(row)

    def all(self) -> list[WebhookEndpoint]:
        return [self._endpoint_of(row) for row in self._driver.all(_ALL_ENDPOINTS, {})]

    def remove(self, endpoint_id: str) -> bool:
        return self._driver.run(_REMOVE_ENDPOINT, {"p_id": endpoint_id}) > 0

    def update(self, endpoint: WebhookEndpoint) -> None:
        if self._driver.run(_UPDATE_ENDPOINT, self._row(endpoint)) == 0:
            raise NotFound(f"no webhook endpoint {endpoint.id}")

    def _row(self, endpoint: WebhookEndpoint) -> dict[str, Any]:
        return {
            "id": endpoint.id,
            "url": endpoint.url,
            "events": json.dumps(list(endpoint.events)),
            "description": endpoint.description,
            "secret": endpoint.secret,
            "previous_secret": endpoint.previous_secret,
            "previous_secret_expires_at": self._driver.at(endpoint.previous_secret_expires_at),
            "created_at": self._driver.at(endpoint.created_at),
        }

    def _endpoint_of(self, row: Sequence[Any]) -> WebhookEndpoint:
        endpoint_id, url, events, description, secret, previous, previous_expires_at, created_at = row
        return WebhookEndpoint(
            id=endpoint_id,
            url=url,
            events=tuple(json.loads(events)),
            created_at=self._driver.time(created_at),
            secret=secret,
            description=description,
            previous_secret=previous,
            previous_secret_expires_at=self._driver.maybe_time(previous_expires_at),
        )


class SqlWebhookDeliveries:
    """The deliveries as seen through the unit of work's driver connection."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    def add(self, delivery: Delivery) -> None:
        self._driver.run(_ADD_DELIVERY, self._row(delivery))

    def claim(self, at: datetime, lease_until: datetime, limit: int) -> list[Delivery]:
        return [self._delivery_of(row) for row in _CLAIM.claim(self._driver, at, lease_until, limit)]

    def save(self, delivery: Delivery) -> None:
        if self._driver.run(_SAVE_DELIVERY, self._row(delivery)) == 0:
            raise NotFound(f"no delivery {delivery.id}")

    def get(self, delivery_id: str) -> Delivery | None:
        row = self._driver.one(_DELIVERY, {"p_id": delivery_id})
        return None if row is None else self._delivery_of(row)

    def for_endpoint(self, endpoint_id: str, *, status: DeliveryStatus | None, limit: int) -> list[Delivery]:
        rows = self._driver.all(
            _FOR_ENDPOINT_SQL[status is not None],
            {"p_endpoint": endpoint_id, "p_status": None if status is None else status.value, "p_limit": limit},
        )
        return [self._delivery_of(row) for row in rows]

    def _row(self, delivery: Delivery) -> dict[str, Any]:
        at = self._driver.at
        return {
            "id": delivery.id,
            "event_id": delivery.event_id,
            "event_type": delivery.event_type,
            "endpoint_id": delivery.endpoint_id,
            "status": delivery.status.value,
            "attempts": delivery.attempts,
            "next_attempt_at": at(delivery.next_attempt_at),
            "last_status_code": delivery.last_status_code,
            "last_error": delivery.last_error,
            "delivered_at": at(delivery.delivered_at),
            "created_at": at(delivery.created_at),
        }

    def _delivery_of(self, row: Sequence[Any]) -> Delivery:
        (
            delivery_id,
            event_id,
            event_type,
            endpoint_id,
            status,
            attempts,
            next_attempt_at,
            last_status_code,
            last_error,
            delivered_at,
            created_at,
        ) = row
        return Delivery(
            id=delivery_id,
            event_id=event_id,
            event_type=event_type,
            endpoint_id=endpoint_id,
            status=DeliveryStatus(status),
            next_attempt_at=self._driver.maybe_time(next_attempt_at),
            created_at=self._driver.time(created_at),
            attempts=int(attempts),
            last_status_code=None if last_status_code is None else int(last_status_code),
            last_error=last_error,
            delivered_at=self._driver.maybe_time(delivered_at),
        )
