"""LedgerRepository over one SQLAlchemy Core connection: rows in, wallet_core dataclasses out.

Every method is one statement (post is two), built once and reused, so a request costs few round trips.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Connection, Insert, Row, Select, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from adapters.sql.tables import credit_transactions, top_ups, wallets
from wallet_core.errors import DuplicateReference, DuplicateTopUp, NotFound
from wallet_core.ledger import CreditTransaction, NewTransaction, TransactionKind
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUp, TopUpStatus

T = TypeVar("T")

_tx = credit_transactions.c
_tu = top_ups.c

_BALANCE = select(wallets.c.balance).where(wallets.c.user_id == bindparam("p_user"))
_RECENT = (
    select(credit_transactions)
    .where(_tx.user_id == bindparam("p_user"))
    .order_by(_tx.created_at.desc(), _tx.id.desc())
    .limit(bindparam("p_limit"))
)
_TRANSACTION_BY_REFERENCE = select(credit_transactions).where(_tx.reference_id == bindparam("p_reference"))
_TOP_UP_BY_ID = select(top_ups).where(_tu.id == bindparam("p_id"))
_TOP_UP_BY_INTENT = select(top_ups).where(_tu.payment_intent_id == bindparam("p_intent"))
_TOP_UP_BY_KEY = select(top_ups).where(
    _tu.user_id == bindparam("p_user"), _tu.idempotency_key == bindparam("p_key")
)
_SET_STATUS = update(top_ups).where(_tu.id == bindparam("p_id")).values(
    status=bindparam("p_status"), updated_at=bindparam("p_at", type_=_tu.updated_at.type)
)
# Undoes the balance move of a post whose reference turned out to be booked already.
_TAKE_BACK = update(wallets).where(wallets.c.user_id == bindparam("p_user")).values(
    balance=wallets.c.balance - bindparam("p_credits")
)


@dataclass(frozen=True)
class _Upserts:
    add_to_balance: Insert  # INSERT ... ON CONFLICT (user_id) DO UPDATE ... RETURNING balance
    book: Insert  # INSERT ... ON CONFLICT (reference_id) DO NOTHING RETURNING id
    add_top_up: Insert  # INSERT ... ON CONFLICT DO NOTHING RETURNING id


@cache
def _upserts(dialect_name: str) -> _Upserts:
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    wallet = insert(wallets)
    return _Upserts(
        add_to_balance=wallet.on_conflict_do_update(
            index_elements=[wallets.c.user_id],
            set_={
                "balance": wallets.c.balance + wallet.excluded.balance,
                "updated_at": wallet.excluded.updated_at,
            },
        ).returning(wallets.c.balance),
        book=insert(credit_transactions)
        .on_conflict_do_nothing(index_elements=[_tx.reference_id])
        .returning(_tx.id),
        add_top_up=insert(top_ups).on_conflict_do_nothing().returning(_tu.id),
    )


class SqlLedgerRepository:
    """The ledger as seen through `connection`; transactions are the unit of work's business."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._upserts = _upserts(connection.dialect.name)

    def balance(self, user_id: str) -> Credits:
        minor = self._conn.execute(_BALANCE, {"p_user": user_id}).scalar_one_or_none()
        return Credits(minor or 0)

    def recent_transactions(self, user_id: str, limit: int) -> list[CreditTransaction]:
        rows = self._conn.execute(_RECENT, {"p_user": user_id, "p_limit": limit})
        return [_transaction(row) for row in rows]

    def find_transaction_by_reference(self, reference_id: str) -> CreditTransaction | None:
        return self._one(_TRANSACTION_BY_REFERENCE, {"p_reference": reference_id}, _transaction)

    def post(self, entry: NewTransaction) -> CreditTransaction:
        # The wallet row is locked first (PostgreSQL) or the database is (SQLite, BEGIN IMMEDIATE),
        # so concurrent posts for one user queue here and each sees the others' committed rows.
        after = self._conn.execute(
            self._upserts.add_to_balance,
            {"user_id": entry.user_id, "balance": entry.credits.minor, "updated_at": entry.created_at},
        ).scalar_one()
        booked = self._conn.execute(
            self._upserts.book,
            {
                "id": entry.id,
                "user_id": entry.user_id,
                "kind": entry.kind.value,
                "credits": entry.credits.minor,
                "balance_after": after,
                "reference_id": entry.reference_id,
                "reason": entry.reason,
                "actor": entry.actor,
                "created_at": entry.created_at,
            },
        ).first()
        if booked is None:
            self._conn.execute(_TAKE_BACK, {"p_user": entry.user_id, "p_credits": entry.credits.minor})
            raise DuplicateReference(f"reference {entry.reference_id} is booked already")
        return CreditTransaction(
            id=entry.id,
            user_id=entry.user_id,
            kind=entry.kind,
            credits=entry.credits,
            balance_after=Credits(after),
            reference_id=entry.reference_id,
            created_at=entry.created_at,
            reason=entry.reason,
            actor=entry.actor,
        )

    def add_top_up(self, top_up: TopUp) -> None:
        added = self._conn.execute(
            self._upserts.add_top_up,
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
            },
        ).first()
        if added is None:
            raise DuplicateTopUp(
                f"top-up {top_up.id} exists already (same id, payment intent or idempotency key)"
            )

    def get_top_up(self, top_up_id: str) -> TopUp | None:
        return self._one(_TOP_UP_BY_ID, {"p_id": top_up_id}, _top_up)

    def find_top_up_by_payment_intent(self, payment_intent_id: str) -> TopUp | None:
        return self._one(_TOP_UP_BY_INTENT, {"p_intent": payment_intent_id}, _top_up)

    def find_top_up_by_idempotency_key(self, user_id: str, key: str) -> TopUp | None:
        return self._one(_TOP_UP_BY_KEY, {"p_user": user_id, "p_key": key}, _top_up)

    def set_top_up_status(self, top_up_id: str, status: TopUpStatus) -> None:
        result = self._conn.execute(
            _SET_STATUS, {"p_id": top_up_id, "p_status": status.value, "p_at": datetime.now(UTC)}
        )
        if result.rowcount == 0:
            raise NotFound(f"top-up {top_up_id} does not exist")

    def _one(
        self, statement: Select[Any], params: dict[str, Any], convert: Callable[[Row[Any]], T]
    ) -> T | None:
        row = self._conn.execute(statement, params).first()
        return None if row is None else convert(row)


def _transaction(row: Row[Any]) -> CreditTransaction:
    return CreditTransaction(
        id=row.id,
        user_id=row.user_id,
        kind=TransactionKind(row.kind),
        credits=Credits(row.credits),
        balance_after=Credits(row.balance_after),
        reference_id=row.reference_id,
        created_at=row.created_at,
        reason=row.reason,
        actor=row.actor,
    )


def _top_up(row: Row[Any]) -> TopUp:
    return TopUp(
        id=row.id,
        user_id=row.user_id,
        amount=Usd(row.amount_cents),
        currency=row.currency,
        credits=Credits(row.credits),
        status=TopUpStatus(row.status),
        payment_intent_id=row.payment_intent_id,
        created_at=row.created_at,
        idempotency_key=row.idempotency_key,
    )
