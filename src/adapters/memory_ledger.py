"""An in-memory LedgerRepository and unit of work: the same behaviour as the SQL adapter, no database.

One unit of work at a time holds the store's lock (like SQLite's writer lock), works on a copy of the
state and swaps it in on commit, so rollback and "leave without commit" really discard everything.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, replace
from types import TracebackType

from wallet_core.errors import DuplicateReference, DuplicateTopUp
from wallet_core.ledger import CreditTransaction, NewTransaction
from wallet_core.money import Credits
from wallet_core.topups import TopUp, TopUpStatus


@dataclass
class _State:
    balances: dict[str, Credits] = field(default_factory=dict)
    transactions: list[CreditTransaction] = field(default_factory=list)
    by_reference: dict[str, CreditTransaction] = field(default_factory=dict)
    top_ups: dict[str, TopUp] = field(default_factory=dict)


class InMemoryStore:
    """The shared 'database'. Create one per test; hand `InMemoryUnitOfWork(store)` to use cases."""

    def __init__(self) -> None:
        self.state = _State()
        self.lock = threading.RLock()
        self.commits = 0


class InMemoryLedgerRepository:
    def __init__(self, state: _State) -> None:
        self._s = state

    def balance(self, user_id: str) -> Credits:
        return self._s.balances.get(user_id, Credits.zero())

    def recent_transactions(self, user_id: str, limit: int) -> list[CreditTransaction]:
        mine = [t for t in self._s.transactions if t.user_id == user_id]
        return list(reversed(mine))[:limit]

    def find_transaction_by_reference(self, reference_id: str) -> CreditTransaction | None:
        return self._s.by_reference.get(reference_id)

    def post(self, entry: NewTransaction) -> CreditTransaction:
        if entry.reference_id in self._s.by_reference:
            raise DuplicateReference(f"reference {entry.reference_id} is booked already")
        after = self.balance(entry.user_id) + entry.credits
        booked = CreditTransaction(
            id=entry.id,
            user_id=entry.user_id,
            kind=entry.kind,
            credits=entry.credits,
            balance_after=after,
            reference_id=entry.reference_id,
            created_at=entry.created_at,
            reason=entry.reason,
            actor=entry.actor,
        )
        self._s.balances[entry.user_id] = after
        self._s.transactions.append(booked)
        self._s.by_reference[entry.reference_id] = booked
        return booked

    def add_top_up(self, top_up: TopUp) -> None:
        if top_up.idempotency_key is not None and self.find_top_up_by_idempotency_key(
            top_up.user_id, top_up.idempotency_key
        ):
            raise DuplicateTopUp(f"top-up with key {top_up.idempotency_key} exists")
        if top_up.id in self._s.top_ups or self.find_top_up_by_payment_intent(top_up.payment_intent_id):
            raise DuplicateTopUp(f"top-up {top_up.id} exists")
        self._s.top_ups[top_up.id] = top_up

    def get_top_up(self, top_up_id: str) -> TopUp | None:
        return self._s.top_ups.get(top_up_id)

    def find_top_up_by_payment_intent(self, payment_intent_id: str) -> TopUp | None:
        return next((t for t in self._s.top_ups.values() if t.payment_intent_id == payment_intent_id), None)

    def find_top_up_by_idempotency_key(self, user_id: str, key: str) -> TopUp | None:
        return next(
            (t for t in self._s.top_ups.values() if t.user_id == user_id and t.idempotency_key == key),
            None,
        )

    def set_top_up_status(self, top_up_id: str, status: TopUpStatus) -> None:
        self._s.top_ups[top_up_id] = replace(self._s.top_ups[top_up_id], status=status)


class InMemoryUnitOfWork:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self._working: _State | None = None
        self.ledger: InMemoryLedgerRepository

    def __enter__(self) -> InMemoryUnitOfWork:
        self._store.lock.acquire()
        self._begin()
        return self

    def _begin(self) -> None:
        self._working = copy.copy(self._store.state)
        self._working.balances = dict(self._store.state.balances)
        self._working.transactions = list(self._store.state.transactions)
        self._working.by_reference = dict(self._store.state.by_reference)
        self._working.top_ups = dict(self._store.state.top_ups)
        self.ledger = InMemoryLedgerRepository(self._working)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._working = None
        self._store.lock.release()

    def commit(self) -> None:
        assert self._working is not None, "commit outside the unit of work"
        self._store.state = self._working
        self._store.commits += 1
        self._begin()

    def rollback(self) -> None:
        self._begin()
