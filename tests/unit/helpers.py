"""Assertions about the in-memory store that several unit-test modules share."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork
from wallet_core.ledger import Account, CreditTransaction, Lot, Posting
from wallet_core.money import Credits
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import (
    ExpiryReport,
    GrantResult,
    HoldResult,
    SpendResult,
    Violation,
    WebhookOutcome,
    apply_payment_event,
    capture_hold,
    expire_credits,
    grant_credits,
    list_transactions,
    place_hold,
    read_wallet,
    release_hold,
    request_top_up,
    spend_credits,
    verify_ledger,
)


def assert_nothing_written(store: InMemoryStore) -> None:
    """The store is exactly as a new one: no commit, no transaction, posting, lot, hold, balance or top-up."""
    s = store.state
    assert store.commits == 0
    assert s.transactions == {}
    assert s.by_reference == {}
    assert s.postings == []
    assert s.lots == {}
    assert s.holds == {}
    assert s.available == {}
    assert s.held == {}
    assert s.top_ups == {}


def assert_no_credits_moved(store: InMemoryStore) -> None:
    """Nothing in the ledger (top-ups may exist): no transaction, posting, lot, hold or balance."""
    s = store.state
    assert s.transactions == {}
    assert s.by_reference == {}
    assert s.postings == []
    assert s.lots == {}
    assert s.holds == {}
    assert s.available == {}
    assert s.held == {}


def only_transaction(store: InMemoryStore) -> CreditTransaction:
    [booked] = store.state.transactions.values()
    return booked


def transactions_of(store: InMemoryStore, user_id: str) -> list[CreditTransaction]:
    """A user's transactions in the order they were recorded."""
    return [t for t in store.state.transactions.values() if t.user_id == user_id]


def postings_of(store: InMemoryStore, transaction_id: str) -> list[Posting]:
    return [p for tx_id, p in store.state.postings if tx_id == transaction_id]


def account_totals(store: InMemoryStore) -> dict[tuple[Account, str | None], Credits]:
    """The sum of the postings on each (account, user) pair; system accounts have user None."""
    totals: dict[tuple[Account, str | None], int] = defaultdict(int)
    for _, p in store.state.postings:
        totals[(p.account, p.user_id)] += p.amount.minor
    return {k: Credits(v) for k, v in totals.items()}


def sum_of_all_postings(store: InMemoryStore) -> Credits:
    return Credits(sum(p.amount.minor for _, p in store.state.postings))


T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock that stands still until told to move: `clock()` reads it, `clock.advance(...)` moves it."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | None = None, **kw: float) -> datetime:
        self.now += delta if delta is not None else timedelta(**kw)
        return self.now


class WalletDriver:
    """Drives the use cases against one in-memory store with a fake clock, the way the entrypoints do."""

    def __init__(self, store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy, clock: FakeClock):
        self.store = store
        self.gateway = gateway
        self.policy = policy
        self.clock = clock
        self._keys = itertools.count(1)

    def uow(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self.store)

    def key(self) -> str:
        return f"key-{next(self._keys)}"

    def grant(
        self, credits: str, user: str = "alice", *, expires_in: timedelta | None = None, key: str | None = None
    ) -> GrantResult:
        return grant_credits(
            user_id=user,
            credits=credits,
            reason="promo",
            granted_by="admin",
            uow=self.uow,
            idempotency_key=key,
            expires_at=None if expires_in is None else self.clock.now + expires_in,
            now=self.clock,
        )

    def top_up(self, usd: str, user: str = "alice") -> WebhookOutcome:
        """A paid top-up, all the way: request it, Stripe succeeds, the signed webhook is applied."""
        pending = request_top_up(
            user_id=user, amount_usd=usd, policy=self.policy, gateway=self.gateway, uow=self.uow, now=self.clock
        )
        event = self.gateway.parse_webhook(*self.gateway.succeed(pending.payment_intent_id))
        outcome = apply_payment_event(event, uow=self.uow, now=self.clock)
        assert outcome.outcome == "granted"
        return outcome

    def spend(
        self,
        credits: object,
        user: str = "alice",
        *,
        key: str | None = None,
        reason: object = "usage",
        metadata: object = None,
    ) -> SpendResult:
        return spend_credits(
            user_id=user,
            credits=credits,
            idempotency_key=key or self.key(),
            reason=reason,
            actor="service:api",
            uow=self.uow,
            metadata=metadata,
            now=self.clock,
        )

    def hold(
        self,
        credits: object,
        user: str = "alice",
        *,
        key: str | None = None,
        ttl: object = None,
        reason: object = "reserve",
    ) -> HoldResult:
        return place_hold(
            user_id=user,
            credits=credits,
            idempotency_key=key or self.key(),
            reason=reason,
            actor="service:api",
            uow=self.uow,
            expires_in_seconds=ttl,
            now=self.clock,
        )

    def capture(self, hold_id: str, credits: object = None) -> HoldResult:
        return capture_hold(hold_id=hold_id, credits=credits, actor="service:api", uow=self.uow, now=self.clock)

    def release(self, hold_id: str) -> HoldResult:
        return release_hold(hold_id=hold_id, actor="service:api", uow=self.uow, now=self.clock)

    def expire(self, batch: int = 500) -> ExpiryReport:
        return expire_credits(uow=self.uow, now=self.clock, batch=batch)

    def balances(self, user: str = "alice") -> tuple[Credits, Credits]:
        """(spendable, held) as the user sees them now."""
        view = read_wallet(user_id=user, uow=self.uow, recent=0, now=self.clock)
        return view.balance, view.held

    def spendable(self, user: str = "alice") -> Credits:
        return self.balances(user)[0]

    def held(self, user: str = "alice") -> Credits:
        return self.balances(user)[1]

    def history(self, user: str = "alice") -> list[CreditTransaction]:
        """Every transaction of the user, newest first, read page by page."""
        rows: list[CreditTransaction] = []
        cursor: str | None = None
        while True:
            page = list_transactions(user_id=user, uow=self.uow, limit=100, cursor=cursor)
            rows.extend(page.transactions)
            if page.next_cursor is None:
                return rows
            cursor = page.next_cursor

    def verify(self) -> list[Violation]:
        return verify_ledger(uow=self.uow)

    def lots(self, user: str = "alice") -> list[Lot]:
        return [lot for lot in self.store.state.lots.values() if lot.user_id == user]
