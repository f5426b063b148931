"""LedgerRepository over one SQLAlchemy connection: rows in, wallet_core dataclasses out.

The write path (what every grant, spend and webhook runs: the wallet lock, record,
find_transaction_by_reference) and every read of transactions are plain SQL sent to the driver
(adapters.sql.driver, adapters.sql.driver_statements); balances, the expiry query and the audit are
SQLAlchemy Core statements built once per dialect. The unit of work's other repositories
(hold_repository, top_up_repository, event_log) share its connection and driver. What each call
costs, in statements sent:

- balances, find_transaction_by_reference, find_transactions_by_references, take_backs,
  users_with_expired_credits, postings_of, lots, live_lots: 1. balances sums credits not effective
  yet only while the wallet's pending_until is ahead (over the partial index of future-dated lots): a
  wallet never granted any pays nothing more.
  Every read of a transaction finds its revert, if any, through the partial unique index on
  `reverts` (a LEFT JOIN in the same statement).
- transactions, find_transaction: 2 (the rows, then their postings, each with its lot's kind, for
  `sources`: one statement for a whole page; a page with no rows costs 1)
- lock_wallets (a batch's wallets): on PostgreSQL 3 for all of them when every one has a row (which
  exist, their rows locked in order, their live lots), else lock_wallet each in order; on SQLite
  lock_wallet each.
- lock_wallet, lock_wallet_for_credit: 2 (the wallet row read FOR UPDATE, then the lots: the live
  ones through the partial index ix_credit_lots_user_live, or only those due), 3 for a user's first
  write (the read finds no row; an upsert creates and locks it). The wallet row brings its alert
  settings along, kept for tx.alerts (adapters.sql.alert_repository).
- record_many (bookings that create no lots, e.g. a batch of spends): 1 on PostgreSQL for all of them
  (PG_BOOK_MANY); on SQLite, record for each.
- record: 1 on PostgreSQL (wallet upsert, transaction row and, only when that went in, the lots,
  lot changes and postings; the balance after leaves out pending credits in the same statement); on
  SQLite, where a statement is a function call and no round trip, 2 plus one executemany each for the
  postings, new lots and lot changes the booking has, plus 1 while the user has credits pending at the
  booking's time (its balance after is then corrected once its lots are written). A refused duplicate
  costs one more (the wallet change is undone).
- audit: 4; revert_audit: 2 (every revert beside what it reverts, then all their postings), 1 when
  there are none

(tests/integration/test_sql_ledger.py counts these.)

On PostgreSQL, values that are sorted or compared as text (ids, user ids) use the "C" collation, so the
order is by code point, the same as Python's (and the in-memory fake's) whatever the database locale.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Select,
    bindparam,
    case,
    func,
    literal_column,
    select,
    text,
    union,
)

from adapters.sql import driver_statements as sql
from adapters.sql.alert_repository import alert_state
from adapters.sql.core import at_param
from adapters.sql.core import bytewise as code_point_order
from adapters.sql.driver import Driver, Sql
from adapters.sql.tables import (
    credit_lots,
    credit_transactions,
    postings,
    wallets,
)
from wallet_core.alerts import AlertState
from wallet_core.errors import DuplicateReference
from wallet_core.ledger import (
    TAKE_BACK_KINDS,
    Account,
    Booking,
    CreditKind,
    CreditTransaction,
    Lot,
    Posting,
    Source,
    TransactionCursor,
    TransactionKind,
    WalletState,
    explained_debt,
    sources_of,
)
from wallet_core.money import Credits
from wallet_core.ports import AccountAudit, LedgerAudit, RevertAudit

# Enum members by stored value: a dict lookup, where calling the enum costs a few microseconds a row.
_ACCOUNTS = {account.value: account for account in Account}
_CREDIT_KINDS = {kind.value: kind for kind in CreditKind}
_TRANSACTION_KINDS = {kind.value: kind for kind in TransactionKind}

_w = wallets.c
_tx = credit_transactions.c
_p = postings.c
_lot = credit_lots.c


# -- statements that are the same on every database ----------------------------------------------
_TOTAL_POSTED = select(func.coalesce(func.sum(_p.amount), 0))
# Lots in debt (the partial index ix_credit_lots_user_debt), each with what refunds and disputes took
# from it: a lot may owe that much and no more (wallet_core.ledger.explained_debt).
_LOTS_IN_DEBT = text(
    f"""
    SELECT l.user_id, l.remaining, taken.amount AS taken_back
    FROM credit_lots AS l
    LEFT JOIN (
        SELECT p.lot_id, -SUM(p.amount) AS amount
        FROM postings AS p JOIN credit_transactions AS t ON t.id = p.transaction_id
        WHERE p.account = '{Account.WALLET.value}'
          AND t.kind IN ({", ".join(f"'{kind.value}'" for kind in sorted(TAKE_BACK_KINDS))})
          AND p.lot_id IN (SELECT id FROM credit_lots WHERE remaining < 0)
        GROUP BY p.lot_id
    ) AS taken ON taken.lot_id = l.id
    WHERE l.remaining < 0
    """  # noqa: S608 - constants of the domain, never a value
)


@dataclass(frozen=True)
class _Statements:
    """What differs by dialect: ordering by code point, and SQLite's index hint."""

    balances: Select[Any]
    users_with_expired_credits: Executable
    unbalanced: Select[Any]
    accounts: Select[Any]


@cache
def _statements(dialect_name: str) -> _Statements:
    pg = dialect_name == "postgresql"

    def bytewise(column: ColumnElement[Any]) -> ColumnElement[Any]:
        return code_point_order(column, dialect_name)

    expired_unswept = (
        select(func.coalesce(func.sum(_lot.remaining), 0))
        .where(
            _lot.user_id == _w.user_id,
            _lot.expires_at <= at_param("p_now"),
            _lot.remaining > literal_column("0"),
        )
        .scalar_subquery()
    )
    # Credits of lots not effective yet: summed (partial index ix_credit_lots_user_pending) only while the
    # wallet's pending_until is ahead, so a wallet never granted future-dated credits pays nothing for it.
    pending = case(
        (
            _w.pending_until > at_param("p_now"),
            select(func.coalesce(func.sum(_lot.remaining), 0))
            .where(_lot.user_id == _w.user_id, _lot.effective_at > at_param("p_now"))
            .scalar_subquery(),
        ),
        else_=literal_column("0"),
    )
    expired_user = bytewise(_lot.user_id).label("user_id")
    # `remaining > 0` is spelled literally and `expires_at <= ?` implies NOT NULL, so both databases
    # can read the partial index ix_credit_lots_live_expiry instead of every lot. SQLite without
    # ANALYZE statistics prefers walking all of (user_id, expires_at) to skip a sort, so it is told
    # (SQLAlchemy renders no table hints for SQLite, hence the text).
    users_with_expired: Executable = (
        select(expired_user)
        .where(_lot.expires_at <= at_param("p_now"), _lot.remaining > literal_column("0"))
        .distinct()
        .order_by(expired_user)
        .limit(bindparam("p_limit"))
        if pg
        else text(
            "SELECT DISTINCT user_id FROM credit_lots INDEXED BY ix_credit_lots_live_expiry "
            "WHERE expires_at <= :p_now AND remaining > 0 ORDER BY user_id LIMIT :p_limit"
        )
        .bindparams(at_param("p_now"))
        .columns(_lot.user_id)
    )
    tx_total = func.sum(_p.amount)
    unbalanced = (
        select(_p.transaction_id, tx_total.label("total"))
        .group_by(_p.transaction_id)
        .having(tx_total != 0)
        .order_by(bytewise(_p.transaction_id))
    )
    posted = (
        select(
            _p.user_id,
            func.sum(case((_p.account == Account.WALLET.value, _p.amount), else_=0)).label("wallet"),
            func.sum(case((_p.account == Account.HELD.value, _p.amount), else_=0)).label("held"),
        )
        .where(_p.user_id.is_not(None))
        .group_by(_p.user_id)
        .subquery("posted")
    )
    in_lots = (
        select(
            _lot.user_id,
            func.sum(_lot.remaining).label("remaining"),
            func.sum(_lot.held).label("held"),
        )
        .group_by(_lot.user_id)
        .subquery("in_lots")
    )
    users = union(select(_w.user_id), select(posted.c.user_id)).subquery("users")
    accounts = (
        select(
            users.c.user_id,
            _w.available.label("stored_wallet"),
            _w.held.label("stored_held"),
            posted.c.wallet.label("posted_wallet"),
            posted.c.held.label("posted_held"),
            in_lots.c.remaining.label("lots_wallet"),
            in_lots.c.held.label("lots_held"),
        )
        .select_from(
            users.outerjoin(wallets, _w.user_id == users.c.user_id)
            .outerjoin(posted, posted.c.user_id == users.c.user_id)
            .outerjoin(in_lots, in_lots.c.user_id == users.c.user_id)
        )
        .order_by(bytewise(users.c.user_id))
    )

    return _Statements(
        balances=select((_w.available - expired_unswept - pending).label("spendable"), _w.held).where(
            _w.user_id == bindparam("p_user")
        ),
        users_with_expired_credits=users_with_expired,
        unbalanced=unbalanced,
        accounts=accounts,
    )


class SqlLedgerRepository:
    """The ledger as seen through `connection`; transactions are the unit of work's business."""

    def __init__(
        self,
        connection: Connection,
        driver: Driver,
        locked_alerts: dict[str, AlertState] | None = None,
        locked_rules: dict[str, bool] | None = None,
    ) -> None:
        self._conn = connection
        self._sql = _statements(connection.dialect.name)
        self._pg = connection.dialect.name == "postgresql"
        self._driver = driver
        # The alert settings of each wallet this unit of work locked, as the lock read them (shared
        # with tx.alerts, which answers from here: adapters.sql.alert_repository).
        self._locked_alerts: dict[str, AlertState] = {} if locked_alerts is None else locked_alerts
        # Whether each wallet this unit of work locked (an existing one) has an automatic top-up rule
        # (shared with tx.auto_top_ups: adapters.sql.auto_top_up_repository).
        self._locked_rules: dict[str, bool] = {} if locked_rules is None else locked_rules

    # -- reading -------------------------------------------------------------------------------
    def balances(self, user_id: str, at: datetime) -> tuple[Credits, Credits]:
        row = self._conn.execute(self._sql.balances, {"p_user": user_id, "p_now": at}).first()
        if row is None:
            return Credits(0), Credits(0)
        return Credits(int(row.spendable)), Credits(int(row.held))

    def transactions(
        self, user_id: str, limit: int, before: TransactionCursor | None = None
    ) -> list[CreditTransaction]:
        params: dict[str, Any] = {"p_user": user_id, "p_limit": limit}
        statement = sql.TRANSACTIONS
        if before is not None:
            statement = sql.TRANSACTIONS_BEFORE
            params.update(p_before_at=self._driver.at(before.created_at), p_before_id=before.id)
        return self._with_sources(self._driver.all(statement, params))

    def find_transaction_by_reference(self, reference_id: str) -> CreditTransaction | None:
        row = self._driver.one(sql.TRANSACTION_BY_REFERENCE, {"p_reference": reference_id})
        return None if row is None else self._transaction_of(row)

    def find_transactions_by_references(self, reference_ids: Collection[str]) -> dict[str, CreditTransaction]:
        wanted = sorted(set(reference_ids))
        if not wanted:
            return {}
        rows = self._driver.all(sql.TRANSACTIONS_BY_REFERENCES, {"p_references": self._ids(wanted)})
        return {booked.reference_id: booked for booked in map(self._transaction_of, rows)}

    def find_transaction(self, transaction_id: str) -> CreditTransaction | None:
        row = self._driver.one(sql.TRANSACTION_BY_ID, {"p_id": transaction_id})
        return None if row is None else self._with_sources([row])[0]

    def postings_of(self, transaction_id: str) -> list[Posting]:
        return [_posting_of(row) for row in self._driver.all(sql.POSTINGS_OF, {"p_id": transaction_id})]

    def lots(self, lot_ids: Collection[str]) -> list[Lot]:
        wanted = sorted(set(lot_ids))
        if not wanted:
            return []
        return [self._lot_of(row) for row in self._driver.all(sql.LOTS_BY_ID, {"p_ids": self._ids(wanted)})]

    def live_lots(self, user_id: str) -> list[Lot]:
        return [self._lot_of(row) for row in self._driver.all(sql.LIVE_LOTS, {"p_user": user_id})]

    def _ids(self, ids: list[str]) -> Any:
        """A list of ids as one parameter: an array on PostgreSQL, a JSON array on SQLite (json_each)."""
        return ids if self._pg else json.dumps(ids)

    def _with_sources(self, rows: Sequence[Sequence[Any]]) -> list[CreditTransaction]:
        """The transactions of `rows` with their sources, from their postings (each with its lot's kind),
        read in one statement for all of them."""
        if not rows:
            return []
        legs: dict[str, list[Posting]] = {}
        categories: dict[str, CreditKind] = {}
        for tx_id, account, user_id, lot_id, amount, kind in self._driver.all(
            sql.POSTINGS_OF_MANY, {"p_ids": self._ids([row[0] for row in rows])}
        ):
            legs.setdefault(tx_id, []).append(Posting(_ACCOUNTS[account], Credits(amount), user_id, lot_id))
            if kind is not None:
                categories[lot_id] = _CREDIT_KINDS[kind]
        return [
            self._transaction_of(row, sources_of(_TRANSACTION_KINDS[row[2]], legs.get(row[0], ()), categories))
            for row in rows
        ]

    def take_backs(self, user_id: str | None = None) -> list[CreditTransaction]:
        if user_id is None:
            rows = self._driver.all(sql.TAKE_BACKS, {})
        else:
            rows = self._driver.all(sql.TAKE_BACKS_OF_USER, {"p_user": user_id})
        return [self._transaction_of(row) for row in rows]

    # -- writing -------------------------------------------------------------------------------
    def lock_wallet(self, user_id: str, at: datetime) -> WalletState:
        return self._lock(user_id, at, sql.LIVE_LOTS, {"p_user": user_id})

    def lock_wallets(self, user_ids: Collection[str], at: datetime) -> dict[str, WalletState]:
        users = sorted(set(user_ids))
        if not self._pg or not users:
            return {user: self.lock_wallet(user, at) for user in users}
        existing = {row[0] for row in self._driver.all(sql.EXISTING_WALLETS, {"p_users": users})}
        if len(existing) < len(users):  # a first write: one by one, in order, creating the missing rows
            return {user: self.lock_wallet(user, at) for user in users}
        wallets = self._driver.all(sql.LOCK_EXISTING_WALLETS, {"p_users": users})
        lots: dict[str, list[Lot]] = {user: [] for user in users}
        for row in self._driver.all(sql.LIVE_LOTS_OF_USERS, {"p_users": users}):
            lot = self._lot_of(row)
            lots[lot.user_id].append(lot)
        states = {}
        for user, available, held, low_balance, level, has_rule in wallets:
            self._locked_alerts[user] = alert_state(low_balance, level)
            self._locked_rules[user] = has_rule is not None
            states[user] = WalletState(user, Credits(available), Credits(held), tuple(lots[user]))
        return states

    def lock_wallet_for_credit(self, user_id: str, at: datetime) -> WalletState:
        state = self._lock(user_id, at, sql.DUE_LOTS, {"p_user": user_id, "p_now": self._driver.at(at)})
        return replace(state, lots=tuple(sorted(state.lots, key=lambda lot: (lot.created_at, lot.id))))

    def _lock(self, user_id: str, at: datetime, lots: Sql, params: dict[str, Any]) -> WalletState:
        """The lock, then the lots: two statements, so the lots are read after the lock is held (on
        PostgreSQL each statement sees what was committed when it began)."""
        wallet = self._driver.one(sql.LOCK_EXISTING_WALLET, {"p_user": user_id})
        if wallet is not None:
            self._locked_rules[user_id] = wallet[4] is not None
        else:
            wallet = self._driver.one(sql.LOCK_WALLET, {"p_user": user_id, "p_at": self._driver.at(at)})
            assert wallet is not None  # an upsert with RETURNING always returns its row
        self._locked_alerts[user_id] = alert_state(wallet[2], wallet[3])
        rows = self._driver.all(lots, params)
        return WalletState(user_id, Credits(wallet[0]), Credits(wallet[1]), tuple(self._lot_of(r) for r in rows))

    def record(self, booking: Booking) -> CreditTransaction:
        user, credits, held = booking.user_id, booking.credits, booking.held_change
        at = self._driver.at(booking.created_at)
        wallet_change = {
            "p_user": user,
            "p_credits": credits.minor,
            "p_held": held.minor,
            "p_at": at,
            "p_pending_until": self._driver.at(_pending_until(booking)),
        }
        row = {
            "id": booking.id,
            "user_id": user,
            "kind": booking.kind.value,
            "credits": credits.minor,
            "held_change": held.minor,
            "reference_id": booking.reference_id,
            "reason": booking.reason,
            "actor": booking.actor,
            "metadata": _metadata_json(booking.metadata),
            "hold_id": booking.hold_id,
            "created_at": at,
            "reverts": booking.reverts,
        }
        if self._pg:
            answer = self._driver.one(sql.PG_BOOK, {**wallet_change, **row, **_pg_rest_params(booking)})
            assert answer is not None
            after, booked = int(answer[0]), bool(answer[1])
        else:
            # The upsert comes first: it returns the balance after this booking, and whether the user's
            # lots may hold credits not effective yet then.
            wallet = self._driver.one(sql.ADD_TO_WALLET, wallet_change)
            assert wallet is not None
            after = int(wallet[0])
            pending_until = self._driver.maybe_time(wallet[1])
            booked = self._driver.one(sql.BOOK, {**row, "balance_after": after}) is not None
            if booked:
                self._book_the_rest(booking)
                if pending_until is not None and pending_until > booking.created_at:
                    left = self._driver.one(sql.LEAVE_OUT_PENDING, {"p_user": user, "p_at": at, "p_id": booking.id})
                    assert left is not None
                    after = int(left[0])
        if not booked:
            self._driver.run(sql.TAKE_BACK, {"p_user": user, "p_credits": credits.minor, "p_held": held.minor})
            raise DuplicateReference(f"reference {booking.reference_id} is recorded already")
        return CreditTransaction(
            id=booking.id,
            user_id=user,
            kind=booking.kind,
            credits=credits,
            held_change=held,
            balance_after=Credits(after),
            reference_id=booking.reference_id,
            created_at=booking.created_at,
            reason=booking.reason,
            actor=booking.actor,
            metadata=dict(booking.metadata),
            hold_id=booking.hold_id,
            reverts=booking.reverts,
        )

    def record_many(self, bookings: Sequence[Booking]) -> list[CreditTransaction]:
        if not self._pg or any(booking.new_lots for booking in bookings):
            return [self.record(booking) for booking in bookings]  # SQLite: statements are function calls
        if not bookings:
            return []
        rows: list[dict[str, Any]] = []
        legs: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for order, booking in enumerate(bookings):
            rows.append({
                "ord": order,
                "id": booking.id,
                "user_id": booking.user_id,
                "kind": booking.kind.value,
                "credits": booking.credits.minor,
                "held_change": booking.held_change.minor,
                "reference_id": booking.reference_id,
                "created_at": _iso(booking.created_at),
                "reason": booking.reason,
                "actor": booking.actor,
                "metadata": _metadata_json(booking.metadata),
                "hold_id": booking.hold_id,
                "reverts": booking.reverts,
            })
            legs.extend(
                {"transaction_id": booking.id, "account": p.account.value, "user_id": p.user_id,
                 "lot_id": p.lot_id, "amount": p.amount.minor}
                for p in booking.postings
            )
            changes.extend(
                {"id": c.lot_id, "remaining": c.remaining.minor, "held": c.held.minor,
                 "ends_at": None if c.ends_at is None else _iso(c.ends_at)}
                for c in booking.lot_changes
            )
        answer = self._driver.all(
            sql.PG_BOOK_MANY, {"transactions": _json(rows), "legs": _json(legs), "changes": _json(changes)}
        )
        after = {row[0]: int(row[1]) for row in answer}
        if len(after) != len(bookings):
            taken = next(b.reference_id for b in bookings if b.id not in after)
            raise DuplicateReference(f"reference {taken} is recorded already")
        return [
            CreditTransaction(
                id=b.id,
                user_id=b.user_id,
                kind=b.kind,
                credits=b.credits,
                held_change=b.held_change,
                balance_after=Credits(after[b.id]),
                reference_id=b.reference_id,
                created_at=b.created_at,
                reason=b.reason,
                actor=b.actor,
                metadata=dict(b.metadata),
                hold_id=b.hold_id,
                reverts=b.reverts,
            )
            for b in bookings
        ]

    def _book_the_rest(self, booking: Booking) -> None:
        """Postings, new lots, lot changes: an executemany each (SQLite, where statements cost no round trip)."""
        self._driver.many(
            sql.ADD_POSTING,
            (
                {
                    "transaction_id": booking.id,
                    "account": p.account.value,
                    "user_id": p.user_id,
                    "lot_id": p.lot_id,
                    "amount": p.amount.minor,
                }
                for p in booking.postings
            ),
        )
        self._driver.many(
            sql.ADD_LOT,
            (
                {
                    **_lot_row(lot),
                    "created_at": self._driver.at(lot.created_at),
                    "expires_at": self._driver.at(lot.expires_at),
                    "effective_at": self._driver.at(lot.effective_at),
                }
                for lot in booking.new_lots
            ),
        )
        self._driver.many(
            sql.CHANGE_LOT,
            (
                {
                    "p_lot": c.lot_id,
                    "p_remaining": c.remaining.minor,
                    "p_held": c.held.minor,
                    "p_ends": self._driver.at(c.ends_at),
                }
                for c in booking.lot_changes
            ),
        )

    def _lot_of(self, row: Sequence[Any]) -> Lot:
        lot_id, user_id, kind, granted, remaining, held, created_at, expires_at, priority, effective_at, source = row
        return Lot(
            id=lot_id,
            user_id=user_id,
            kind=_CREDIT_KINDS[kind],
            granted=Credits(granted),
            remaining=Credits(remaining),
            held=Credits(held),
            created_at=self._driver.time(created_at),
            expires_at=self._driver.maybe_time(expires_at),
            priority=int(priority),
            effective_at=self._driver.maybe_time(effective_at),
            source_transaction_id=source,
        )

    def _transaction_of(self, row: Sequence[Any], sources: tuple[Source, ...] = ()) -> CreditTransaction:
        """A row of driver_statements._TRANSACTION_ROWS: the transaction's columns, then its revert's id."""
        (tx_id, user_id, kind, credits, held_change, after, reference, created_at, reason, actor, meta, hold,
         reverts, reverted_by) = row
        return CreditTransaction(
            id=tx_id,
            user_id=user_id,
            kind=_TRANSACTION_KINDS[kind],
            credits=Credits(credits),
            held_change=Credits(held_change),
            balance_after=Credits(after),
            reference_id=reference,
            created_at=self._driver.time(created_at),
            reason=reason,
            actor=actor,
            metadata=_metadata(meta),
            hold_id=hold,
            reverts=reverts,
            reverted_by=reverted_by,
            sources=sources,
        )

    # -- expiry and audit ----------------------------------------------------------------------
    def users_with_expired_credits(self, at: datetime, limit: int) -> list[str]:
        rows = self._conn.execute(self._sql.users_with_expired_credits, {"p_now": at, "p_limit": limit})
        return [row.user_id for row in rows]

    def audit(self) -> LedgerAudit:
        total = self._conn.execute(_TOTAL_POSTED).scalar_one()
        unbalanced = [
            (row.transaction_id, Credits(int(row.total))) for row in self._conn.execute(self._sql.unbalanced)
        ]
        debt: dict[str, int] = {}
        unexplained: dict[str, int] = {}
        for lot in self._conn.execute(_LOTS_IN_DEBT):
            part, beyond = explained_debt(Credits(int(lot.remaining)), _credits(lot.taken_back))
            debt[lot.user_id] = debt.get(lot.user_id, 0) + part.minor
            unexplained[lot.user_id] = unexplained.get(lot.user_id, 0) + beyond.minor
        accounts: list[AccountAudit] = []
        for row in self._conn.execute(self._sql.accounts):
            user = row.user_id
            accounts.append(AccountAudit(
                user, Account.WALLET, _credits(row.stored_wallet), _credits(row.posted_wallet),
                _credits(row.lots_wallet), Credits(debt.get(user, 0)), Credits(unexplained.get(user, 0)),
            ))
            accounts.append(AccountAudit(
                user, Account.HELD, _credits(row.stored_held), _credits(row.posted_held), _credits(row.lots_held),
            ))
        return LedgerAudit(total_posted=Credits(int(total)), unbalanced=unbalanced, accounts=accounts)

    def revert_audit(self) -> list[RevertAudit]:
        pairs = self._driver.all(sql.REVERT_PAIRS, {})
        if not pairs:
            return []
        legs: dict[str, list[Posting]] = {}
        for row in self._driver.all(sql.REVERT_PAIR_POSTINGS, {}):
            legs.setdefault(row[0], []).append(_posting_of(row[1:]))
        width = len(pairs[0]) // 2
        out: list[RevertAudit] = []
        for row in pairs:
            revert = self._transaction_of(row[:width])
            original = None if row[width] is None else self._transaction_of(row[width:])
            out.append(
                RevertAudit(
                    revert,
                    legs.get(revert.id, []),
                    original,
                    [] if original is None else legs.get(original.id, []),
                )
            )
        return out

def _lot_row(lot: Lot) -> dict[str, Any]:
    return {
        "id": lot.id,
        "user_id": lot.user_id,
        "kind": lot.kind.value,
        "granted": lot.granted.minor,
        "remaining": lot.remaining.minor,
        "held": lot.held.minor,
        "created_at": lot.created_at,
        "expires_at": lot.expires_at,
        "priority": lot.priority,
        "effective_at": lot.effective_at,
        "source_transaction_id": lot.source_transaction_id,
    }


def _pending_until(booking: Booking) -> datetime | None:
    """The latest effective date of the lots this booking creates (None when none has one): the wallet's
    pending_until moves up to it."""
    return max((lot.effective_at for lot in booking.new_lots if lot.effective_at is not None), default=None)


def _posting_of(row: Sequence[Any]) -> Posting:
    account, user_id, lot_id, amount = row
    return Posting(_ACCOUNTS[account], Credits(amount), user_id, lot_id)




def _pg_rest_params(booking: Booking) -> dict[str, Any]:
    """PG_BOOK's legs, new lots and lot changes, each a JSON array of records (three parameters,
    cheap to send, however many rows), and the credits of its new lots not effective yet at its time.
    Its parts see one snapshot, so changes to one lot are summed first (the soonest `ends_at` kept),
    and changes to a lot this booking creates are applied to the new lot before it is inserted."""
    new_lots = {lot.id: _lot_row(lot) for lot in booking.new_lots}
    changes: dict[str, dict[str, Any]] = {}
    for change in booking.lot_changes:
        target = new_lots.get(change.lot_id) or changes.setdefault(
            change.lot_id, {"id": change.lot_id, "remaining": 0, "held": 0, "ends_at": None}
        )
        target["remaining"] += change.remaining.minor
        target["held"] += change.held.minor
        ends_at, field = change.ends_at, "expires_at" if change.lot_id in new_lots else "ends_at"
        if ends_at is not None and (target[field] is None or ends_at < target[field]):
            target[field] = ends_at
    new_pending = sum(
        row["remaining"]
        for row in new_lots.values()
        if row["effective_at"] is not None and row["effective_at"] > booking.created_at
    )
    for row in (*new_lots.values(), *changes.values()):
        for name in ("created_at", "expires_at", "effective_at", "ends_at"):
            if row.get(name) is not None:
                if row[name].tzinfo is None:
                    raise ValueError("naive datetime: the ledger stores timezone-aware datetimes only")
                row[name] = row[name].isoformat()
    legs = [
        {"account": p.account.value, "user_id": p.user_id, "lot_id": p.lot_id, "amount": p.amount.minor}
        for p in booking.postings
    ]
    return {
        "legs": _json(legs),
        "new_lots": _json(list(new_lots.values())),
        "changes": _json(list(changes.values())),
        "p_new_pending": new_pending,
    }


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("naive datetime: the ledger stores timezone-aware datetimes only")
    return at.isoformat()


def _json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def _credits(value: Any) -> Credits:
    """A sum from the database: None when nothing was summed; Decimal from PostgreSQL's SUM(bigint)."""
    return Credits(0 if value is None else int(value))


def _metadata_json(metadata: Mapping[str, str]) -> str | None:
    # Keys keep their order, as they do in memory.
    return json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":")) if metadata else None


def _metadata(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    loaded = json.loads(text)
    return {str(k): str(v) for k, v in loaded.items()}
