"""SavedCards over one SQLAlchemy connection (tables `stripe_customers` and `saved_cards`, 0009): plain
SQL sent to the driver, one statement per method but set_customer (2).

set_customer inserts if absent (ON CONFLICT DO NOTHING) and reads back the stored row, so of two
concurrent first requests for one user the first to commit wins and the other gets its customer id: on
PostgreSQL the loser's INSERT waits on the winner's uncommitted row and then does nothing; on SQLite
the writer lock makes them take turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from adapters.sql.driver import Driver, Sql
from wallet_core.saved_cards import SavedCard

_CUSTOMER_OF = Sql.of("SELECT customer_id FROM stripe_customers WHERE user_id = :p_user")
_ADD_CUSTOMER = Sql.of(
    """
    INSERT INTO stripe_customers (user_id, customer_id, created_at) VALUES (:p_user, :p_customer, :p_at)
    ON CONFLICT (user_id) DO NOTHING
    """
)
CARD_COLUMNS = "user_id, customer_id, payment_method_id, brand, last4, exp_month, exp_year, saved_at"
_CARD_OF = Sql.of(f"SELECT {CARD_COLUMNS} FROM saved_cards WHERE user_id = :p_user")  # noqa: S608
_SAVE_CARD = Sql.of(
    f"""
    INSERT INTO saved_cards ({CARD_COLUMNS})
    VALUES (:user_id, :customer_id, :payment_method_id, :brand, :last4, :exp_month, :exp_year, :saved_at)
    ON CONFLICT (user_id) DO UPDATE SET customer_id = excluded.customer_id,
        payment_method_id = excluded.payment_method_id, brand = excluded.brand, last4 = excluded.last4,
        exp_month = excluded.exp_month, exp_year = excluded.exp_year, saved_at = excluded.saved_at
    """  # noqa: S608 -- the column list is a constant
)
_FORGET_CARD = Sql.of(f"DELETE FROM saved_cards WHERE user_id = :p_user RETURNING {CARD_COLUMNS}")  # noqa: S608


class SqlSavedCards:
    """The users' Customers and saved cards as seen through the unit of work's driver connection."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    def customer_id(self, user_id: str) -> str | None:
        row = self._driver.one(_CUSTOMER_OF, {"p_user": user_id})
        return None if row is None else str(row[0])

    def set_customer(self, user_id: str, customer_id: str, at: datetime) -> str:
        self._driver.run(_ADD_CUSTOMER, {"p_user": user_id, "p_customer": customer_id, "p_at": self._driver.at(at)})
        stored = self.customer_id(user_id)
        assert stored is not None, "the row was just inserted or was there already"
        return stored

    def get(self, user_id: str) -> SavedCard | None:
        row = self._driver.one(_CARD_OF, {"p_user": user_id})
        return None if row is None else self._card_of(row)

    def save(self, card: SavedCard) -> None:
        self._driver.run(
            _SAVE_CARD,
            {
                "user_id": card.user_id,
                "customer_id": card.customer_id,
                "payment_method_id": card.payment_method_id,
                "brand": card.brand,
                "last4": card.last4,
                "exp_month": card.exp_month,
                "exp_year": card.exp_year,
                "saved_at": self._driver.at(card.saved_at),
            },
        )

    def forget(self, user_id: str) -> SavedCard | None:
        row = self._driver.one(_FORGET_CARD, {"p_user": user_id})
        return None if row is None else self._card_of(row)

    def _card_of(self, row: Sequence[Any]) -> SavedCard:
        user_id, customer_id, pm_id, brand, last4, exp_month, exp_year, saved_at = row
        return SavedCard(
            user_id=user_id,
            customer_id=customer_id,
            payment_method_id=pm_id,
            brand=brand,
            last4=last4,
            exp_month=int(exp_month),
            exp_year=int(exp_year),
            saved_at=self._driver.time(saved_at),
        )
