"""TopUpRepository over one SQLAlchemy connection. Reads, set_status, set_payment_intent and the lock are plain SQL sent
to the driver (adapters.sql.driver_statements); add and update are SQLAlchemy Core. Every method costs
one statement (lock: none on SQLite)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite

from adapters.sql import driver_statements as sql
from adapters.sql.core import at_param
from adapters.sql.driver import Driver
from adapters.sql.tables import top_ups
from wallet_core.errors import DuplicateTopUp, NotFound
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUp, TopUpActivity, TopUpStatus

_tu = top_ups.c

_UPDATE_TOP_UP = (
    update(top_ups)
    .where(_tu.id == bindparam("p_id"))
    .values(
        status=bindparam("p_status"),
        refunded_cents=bindparam("p_refunded"),
        credits_refunded=bindparam("p_credits_refunded"),
        updated_at=at_param("p_at"),
    )
)


@cache
def _add_top_up(dialect_name: str) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id, in the dialect's spelling."""
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return insert(top_ups).on_conflict_do_nothing().returning(_tu.id)


def _advisory_key(*parts: str) -> int:
    """A signed 64-bit number for pg_advisory_xact_lock, the same in every process."""
    digest = hashlib.sha256("\x1f".join(("wallet", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def top_up_of(driver: Driver, row: Sequence[Any]) -> TopUp:
    """A TopUp from a row of driver_statements.TOP_UP_COLUMNS."""
    top_up_id, user_id, cents, currency, credits, status, intent, created_at, key, refunded, taken_back, auto = row
    return TopUp(
        id=top_up_id,
        user_id=user_id,
        amount=Usd(cents),
        currency=currency,
        credits=Credits(credits),
        status=TopUpStatus(status),
        payment_intent_id=intent,
        created_at=driver.time(created_at),
        idempotency_key=key,
        refunded=Usd(refunded),
        credits_refunded=Credits(taken_back),
        automatic=bool(auto),
    )


class SqlTopUpRepository:
    """The top-ups as seen through `connection`; transactions are the unit of work's business."""

    def __init__(self, connection: Connection, driver: Driver) -> None:
        self._conn = connection
        self._driver = driver
        self._add = _add_top_up(connection.dialect.name)

    def add(self, top_up: TopUp) -> None:
        added = self._conn.execute(
            self._add,
            {
                "id": top_up.id,
                "user_id": top_up.user_id,
                "amount_cents": top_up.amount.cents,
                "currency": top_up.currency,
                "credits": top_up.credits.minor,
                "status": top_up.status.value,
                "payment_intent_id": top_up.payment_intent_id,
                "idempotency_key": top_up.idempotency_key,
                "created_at": top_up.created_at,
                "updated_at": top_up.created_at,
                "refunded_cents": top_up.refunded.cents,
                "credits_refunded": top_up.credits_refunded.minor,
                "automatic": int(top_up.automatic),
            },
        ).first()
        if added is None:
            raise DuplicateTopUp(f"top-up {top_up.id} exists already (same id, payment intent or idempotency key)")

    def get(self, top_up_id: str) -> TopUp | None:
        row = self._driver.one(sql.TOP_UP_BY_ID, {"p_id": top_up_id})
        return None if row is None else top_up_of(self._driver, row)

    def find_by_payment_intent(self, payment_intent_id: str) -> TopUp | None:
        row = self._driver.one(sql.TOP_UP_BY_INTENT, {"p_intent": payment_intent_id})
        return None if row is None else top_up_of(self._driver, row)

    def find_by_idempotency_key(self, user_id: str, key: str) -> TopUp | None:
        row = self._driver.one(sql.TOP_UP_BY_KEY, {"p_user": user_id, "p_key": key})
        return None if row is None else top_up_of(self._driver, row)

    def set_payment_intent(self, top_up_id: str, payment_intent_id: str, at: datetime) -> None:
        other = self.find_by_payment_intent(payment_intent_id)
        if other is not None:
            if other.id == top_up_id:
                return
            raise DuplicateTopUp(f"top-up {other.id} has PaymentIntent {payment_intent_id}")
        changed = self._driver.run(
            sql.SET_TOP_UP_INTENT, {"p_id": top_up_id, "p_intent": payment_intent_id, "p_at": self._driver.at(at)}
        )
        if changed == 0:
            if self.get(top_up_id) is None:
                raise NotFound(f"top-up {top_up_id} does not exist")
            raise DuplicateTopUp(f"top-up {top_up_id} has another PaymentIntent already")

    def set_status(self, top_up_id: str, status: TopUpStatus, at: datetime) -> None:
        changed = self._driver.run(
            sql.SET_TOP_UP_STATUS,
            {"p_id": top_up_id, "p_status": status.value, "p_at": self._driver.at(at)},
        )
        if changed == 0:
            raise NotFound(f"top-up {top_up_id} does not exist")

    def lock(self, user_id: str) -> None:
        """PostgreSQL: a transaction-scoped advisory lock on a number made from the user id. SQLite:
        nothing to do, every writing unit of work holds the database's one writer lock already."""
        if self._driver.postgresql:
            self._driver.one(sql.LOCK_TOP_UPS, {"p_key": _advisory_key("top_ups", user_id)})

    def activity(self, user_id: str, *, open_since: datetime, started_since: datetime) -> TopUpActivity:
        at = self._driver.at
        row = self._driver.one(
            sql.TOP_UP_ACTIVITY,
            {"p_user": user_id, "p_open_since": at(open_since), "p_started_since": at(started_since)},
        )
        assert row is not None  # an aggregate always answers one row
        opened, oldest_open, started, oldest_started = row
        return TopUpActivity(
            int(opened), self._maybe_time(oldest_open), int(started), self._maybe_time(oldest_started)
        )

    def _maybe_time(self, value: Any) -> datetime | None:
        return None if value is None else self._driver.time(value)

    def update(self, top_up: TopUp, at: datetime) -> None:
        result = self._conn.execute(
            _UPDATE_TOP_UP,
            {
                "p_id": top_up.id,
                "p_status": top_up.status.value,
                "p_refunded": top_up.refunded.cents,
                "p_credits_refunded": top_up.credits_refunded.minor,
                "p_at": at,
            },
        )
        if result.rowcount == 0:
            raise NotFound(f"top-up {top_up.id} does not exist")
