"""Pull outbound events: every event, oldest first, page by page, so a consumer can catch up after an
outage instead of (or besides) receiving pushes. A cursor is the number of the last event seen."""

from __future__ import annotations

from dataclasses import dataclass

from wallet_core.errors import InvalidInput
from wallet_core.event_types import EVENT_TYPES
from wallet_core.ids import check_user_id
from wallet_core.outbound_events import WalletEvent
from wallet_core.paging import check_page_size
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.use_cases.webhook_delivery import publish_and_queue

MAX_PAGE = 500


@dataclass(frozen=True)
class EventPage:
    events: list[WalletEvent]
    next_cursor: str  # pass it back to get what came after (the same cursor when nothing did)


def list_events(
    *,
    uow: UnitOfWorkFactory,
    after: str | None = None,
    type: str | None = None,
    user_id: str | None = None,
    limit: object = 100,
) -> EventPage:
    start = _cursor(after)
    size = check_page_size(limit, MAX_PAGE)
    if type is not None and type not in EVENT_TYPES:
        raise InvalidInput("type", f"must be one of {', '.join(sorted(EVENT_TYPES))}")
    user = check_user_id(user_id) if user_id is not None else None
    with uow() as tx:  # events committed since the worker last ran get their numbers (and deliveries) now
        if publish_and_queue(tx):
            tx.commit()
    with uow(read_only=True) as tx:
        rows = tx.outbox.page(start, size, type=type, user_id=user)
    return EventPage([event for _, event in rows], str(rows[-1][0]) if rows else str(start))


def _cursor(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise InvalidInput("after", "is not a cursor this service gave out")
    return int(value)


