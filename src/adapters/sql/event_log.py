"""PaymentEventLog over one SQLAlchemy connection: plain SQL sent to the driver
(adapters.sql.driver_statements), one statement per method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.sql import driver_statements as sql
from adapters.sql.driver import Driver
from adapters.sql.top_up_repository import top_up_of
from wallet_core.ports import StoredEvent
from wallet_core.topups import TopUp

_EVENT_WIDTH = len(sql.EVENT_COLUMNS.split(","))


# sql.ADD_EVENT with its values written in (Driver.literal), for Driver.defer.
_INSERT_EVENT = f"INSERT INTO payment_events ({sql.EVENT_COLUMNS}) VALUES (".encode()  # noqa: S608 - constant columns
_ON_CONFLICT = b") ON CONFLICT (event_id) DO NOTHING"


class SqlPaymentEventLog:
    """The payment event log as seen through the unit of work's driver connection."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    def find(self, event_id: str) -> StoredEvent | None:
        row = self._driver.one(sql.EVENT_BY_ID, {"p_id": event_id})
        return None if row is None else self._event_of(row)

    def find_with_top_up(
        self, event_id: str, payment_intent_id: str | None
    ) -> tuple[StoredEvent | None, TopUp | None]:
        row = self._driver.one(sql.EVENT_AND_TOP_UP, {"p_event": event_id, "p_intent": payment_intent_id})
        assert row is not None  # the probe row
        event, top_up = row[:_EVENT_WIDTH], row[_EVENT_WIDTH:]
        return (
            None if event[0] is None else self._event_of(event),
            None if top_up[0] is None else top_up_of(self._driver, top_up),
        )

    def add(self, event: StoredEvent) -> None:
        """On PostgreSQL the INSERT is deferred (Driver.defer): it travels with the COMMIT, or with the
        next statement of the transaction, not in a round trip of its own."""
        if self._driver.postgresql:
            text = self._driver.literal_or_null
            values = (text(event.event_id), text(event.type), text(event.payment_intent_id), text(event.top_up_id),
                      self._driver.time_literal(event.received_at), text(event.outcome), text(event.source))
            self._driver.defer(_INSERT_EVENT + b", ".join(values) + _ON_CONFLICT)
            return
        self._driver.run(
            sql.ADD_EVENT,
            {
                "event_id": event.event_id,
                "type": event.type,
                "payment_intent_id": event.payment_intent_id,
                "top_up_id": event.top_up_id,
                "received_at": self._driver.at(event.received_at),
                "outcome": event.outcome,
                "source": event.source,
            },
        )

    def for_payment_intent(self, payment_intent_id: str) -> list[StoredEvent]:
        rows = self._driver.all(sql.EVENTS_FOR_INTENT, {"p_intent": payment_intent_id})
        return [self._event_of(row) for row in rows]

    def _event_of(self, row: Sequence[Any]) -> StoredEvent:
        event_id, event_type, intent, top_up_id, received_at, outcome, source = row
        return StoredEvent(event_id, event_type, intent, top_up_id, self._driver.time(received_at), outcome, source)
