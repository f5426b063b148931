"""Webhook endpoints the host application subscribes, and deliveries of outbound events to them.

Deliveries follow the Standard Webhooks specification (https://www.standardwebhooks.com): headers
`webhook-id` (the event id), `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">` under a secret `whsec_` + base64. A 2xx answer within the timeout is delivered;
anything else is retried on the schedule (seconds between attempts), then the delivery is `failed`.
After a secret is rotated, deliveries are signed with the new and the old secret for 24 hours.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from wallet_core.errors import InvalidInput
from wallet_core.event_types import EVENT_TYPES
from wallet_core.ids import has_control_characters, new_id

ALL_EVENTS = "*"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix every secret has, not a secret
OLD_SECRET_GRACE = timedelta(hours=24)
DEFAULT_RETRY_SECONDS = (5, 30, 120, 600, 3600, 21600, 86400)
DELIVERY_TIMEOUT_SECONDS = 10
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION = 500
MAX_ENDPOINTS = 50


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def _masked(secret: str | None) -> str:
    return "None" if secret is None else f"'{SECRET_PREFIX}…'"


@dataclass(frozen=True)
class WebhookEndpoint:
    id: str
    url: str
    events: tuple[str, ...]  # event types, or ("*",) for all
    created_at: datetime
    secret: str = field(repr=False)
    description: str | None = None
    previous_secret: str | None = field(default=None, repr=False)
    previous_secret_expires_at: datetime | None = None

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return (
            f"WebhookEndpoint(id={self.id!r}, url={self.url!r}, events={self.events!r}, "
            f"secret={_masked(self.secret)}, previous_secret={_masked(self.previous_secret)})"
        )

    def subscribed(self, event_type: str) -> bool:
        return ALL_EVENTS in self.events or event_type in self.events

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets a delivery is signed with now: the current one, and the one before it for
        24 hours after a rotation (receivers accept either while they switch)."""
        if self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > now:
            return (self.secret, self.previous_secret)
        return (self.secret,)

    def rotated(self, now: datetime) -> WebhookEndpoint:
        return replace(
            self, secret=new_secret(), previous_secret=self.secret, previous_secret_expires_at=now + OLD_SECRET_GRACE
        )


def new_endpoint(url: str, events: tuple[str, ...], description: str | None, now: datetime) -> WebhookEndpoint:
    return WebhookEndpoint(new_id("we"), url, events, now, new_secret(), description)


def check_endpoint_url(value: object, *, allow_private: bool) -> str:
    """The URL's form: https (http only where private URLs are allowed, in development and tests), a
    host, no user or password, no fragment. Where it points (public addresses only) the sender checks."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH or has_control_characters(value):
        raise InvalidInput("url", f"must be an https:// URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidInput("url", "is not a URL") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise InvalidInput("url", "must start with https://")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise InvalidInput("url", "must name a host, and no user or password")
    if parts.fragment or (port is not None and not 0 < port < 65536) or " " in value:
        raise InvalidInput("url", "must have no fragment, spaces or bad port")
    return value


def check_event_types(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > len(EVENT_TYPES) + 1:
        raise InvalidInput("events", 'must be ["*"] or a list of event types')
    chosen: list[str] = []
    for item in value:
        if not isinstance(item, str) or (item != ALL_EVENTS and item not in EVENT_TYPES):
            raise InvalidInput("events", f'must be "*" or event types: {", ".join(sorted(EVENT_TYPES))}')
        if item not in chosen:
            chosen.append(item)
    return (ALL_EVENTS,) if ALL_EVENTS in chosen else tuple(chosen)


def check_description(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION or has_control_characters(value):
        raise InvalidInput("description", f"must be text of at most {MAX_DESCRIPTION} characters")
    return value


def parse_retry_schedule(value: str | None) -> tuple[int, ...]:
    """WALLET_WEBHOOK_RETRY_SECONDS: comma-separated whole seconds between attempts (1 to 7 days each,
    at most 20 of them)."""
    if value is None or not value.strip():
        return DEFAULT_RETRY_SECONDS
    parts = [p.strip() for p in value.split(",")]
    if len(parts) > 20 or not all(p.isascii() and p.isdigit() and 1 <= int(p) <= 7 * 86400 for p in parts):
        raise InvalidInput(
            "WALLET_WEBHOOK_RETRY_SECONDS", "must be 1-20 whole numbers of seconds (1 to 604800) separated by commas"
        )
    return tuple(int(p) for p in parts)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Delivery:
    """One event to one endpoint. `attempts` counts the attempts started (a claimed delivery whose
    worker died counts as one, and is tried again when its lease ends)."""

    id: str
    event_id: str
    event_type: str
    endpoint_id: str
    status: DeliveryStatus
    next_attempt_at: datetime | None
    created_at: datetime
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


def new_delivery(event_id: str, event_type: str, endpoint_id: str, now: datetime) -> Delivery:
    return Delivery(new_id("whd"), event_id, event_type, endpoint_id, DeliveryStatus.PENDING, now, now)


@dataclass(frozen=True)
class SendResult:
    """What the receiver answered: its status code, or why there was no answer (timeout, refused)."""

    status_code: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def after_attempt(delivery: Delivery, result: SendResult, schedule: tuple[int, ...], now: datetime) -> Delivery:
    """The delivery once an attempt ended: delivered, retried after the schedule's next wait, or failed
    when the schedule is used up. `delivery.attempts` already counts this attempt."""
    if result.delivered:
        return replace(
            delivery,
            status=DeliveryStatus.DELIVERED,
            next_attempt_at=None,
            delivered_at=now,
            last_status_code=result.status_code,
            last_error=None,
        )
    error = result.error or f"answered {result.status_code}"
    if delivery.attempts > len(schedule):
        return replace(
            delivery,
            status=DeliveryStatus.FAILED,
            next_attempt_at=None,
            last_status_code=result.status_code,
            last_error=error[:500],
        )
    wait = timedelta(seconds=schedule[delivery.attempts - 1])
    return replace(
        delivery,
        status=DeliveryStatus.PENDING,
        next_attempt_at=now + wait,
        last_status_code=result.status_code,
        last_error=error[:500],
    )
