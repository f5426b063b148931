"""SavedCards over one SQL connection: NOT IMPLEMENTED YET.

Placeholder so the SQL unit of work fits the UnitOfWork port while the tables (migration 0009) and
the real repository are written: every method raises NotImplementedError, so nothing can mistake it
for a working store."""

from __future__ import annotations

from datetime import datetime

from adapters.sql.driver import Driver
from wallet_core.saved_cards import SavedCard

_NOT_YET = "saved cards are not stored in SQL yet (migration 0009 and SqlSavedCards come next)"


class SqlSavedCards:
    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    def customer_id(self, user_id: str) -> str | None:
        raise NotImplementedError(_NOT_YET)

    def set_customer(self, user_id: str, customer_id: str, at: datetime) -> str:
        raise NotImplementedError(_NOT_YET)

    def get(self, user_id: str) -> SavedCard | None:
        raise NotImplementedError(_NOT_YET)

    def save(self, card: SavedCard) -> None:
        raise NotImplementedError(_NOT_YET)

    def forget(self, user_id: str) -> SavedCard | None:
        raise NotImplementedError(_NOT_YET)
