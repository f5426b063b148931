"""What several unit-test modules share: the application service on the in-memory fakes, scenario
steps (a paid top-up, a payment event), and assertions about the in-memory store."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, in_memory_unit_of_work_factory
from wallet_core.ledger import Account, CreditTransaction, Lot, Posting
from wallet_core.money import Credits, Usd
from wallet_core.payments import Dispute, OffSessionCharge, PaymentEvent, PaymentIntent, Refund
from wallet_core.ports import PaymentGateway, StoredEvent
from wallet_core.saved_cards import CardDetails, SetupIntent
from wallet_core.service import Wallet
from wallet_core.topups import TopUp, TopUpPolicy
from wallet_core.use_cases import WebhookOutcome


def assert_nothing_written(store: InMemoryStore) -> None:
    """The store is exactly as a new one: no commit, no transaction, posting, lot, hold, balance, top-up
    or logged payment event."""
    s = store.state
    assert store.commits == 0
    assert s.events == {}
    assert s.transactions == {}
    assert s.by_reference == {}
    assert s.postings == []
    assert s.lots == {}
    assert s.holds == {}
    assert s.available == {}
    assert s.held == {}
    assert s.top_ups == {}


def assert_no_credits_moved(store: InMemoryStore) -> None:
    """Nothing in the ledger (top-ups and logged payment events may exist): no transaction, posting, lot,
    hold or balance."""
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


def system_balance(store: InMemoryStore, account: Account) -> Credits:
    """The sum of the postings on a system account (stripe_funding, disputed, revenue, ...)."""
    return Credits(sum(p.amount.minor for _, p in store.state.postings if p.account is account))


def debt_of(store: InMemoryStore, user_id: str) -> Credits:
    """What the user's lots in debt owe (>= 0)."""
    return Credits(sum(-lot.remaining.minor for lot in store.state.lots.values()
                       if lot.user_id == user_id and lot.remaining.minor < 0))


def events_logged(store: InMemoryStore) -> list[StoredEvent]:
    """The payment event log, in the order the events were stored."""
    return list(store.state.events.values())


def snapshot(store: InMemoryStore) -> tuple[Any, int]:
    """(a copy of every row, the commit count): compare with assert_store_unchanged."""
    return store.state.copy(), store.commits


def assert_store_unchanged(store: InMemoryStore, before: tuple[Any, int]) -> None:
    """Nothing at all changed since `before = snapshot(store)`: no commit, no row of any kind (events too)."""
    state, commits = before
    assert store.commits == commits
    assert store.state == state


# -- payment events, as the gateway adapter would hand them to the core -------------------------------

DEFAULT_POLICY = TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal(100))

_event_numbers = itertools.count(1)


def next_event_id() -> str:
    return f"evt_test_{next(_event_numbers)}"


def refund(refund_id: str, payment_intent_id: str | None, cents: int, status: str = "succeeded",
           currency: str = "usd") -> Refund:
    return Refund(refund_id, payment_intent_id, Usd(cents), currency, status)


def refund_event(payment_intent_id: str | None, *refunds: Refund, event_type: str = "charge.refunded",
                 event_id: str | None = None, listed: bool = True) -> PaymentEvent:
    """A refund event about `payment_intent_id` (charge.refunded lists every refund of the charge)."""
    return PaymentEvent(
        event_id or next_event_id(),
        event_type,
        refunds=tuple(refunds),
        payment_intent_id=payment_intent_id,
        refunds_listed=listed,
    )


def dispute_event(payment_intent_id: str | None, dispute_id: str, cents: int, status: str, *,
                  event_type: str | None = None, event_id: str | None = None, currency: str = "usd") -> PaymentEvent:
    """charge.dispute.created for an open status, charge.dispute.closed for won/lost (unless told)."""
    if event_type is None:
        closed = status in ("won", "lost", "warning_closed")
        event_type = "charge.dispute.closed" if closed else "charge.dispute.created"
    return PaymentEvent(
        event_id or next_event_id(),
        event_type,
        dispute=Dispute(dispute_id, payment_intent_id, Usd(cents), currency, status),
        payment_intent_id=payment_intent_id,
    )


class StubGateway:
    """The listing calls of the PaymentGateway port, answering what the test put in; the others fail.

    Records every call, so tests can see what was asked."""

    def __init__(self, intents: list[PaymentIntent] | None = None,
                 refunds: dict[str, list[Refund]] | None = None,
                 disputes: dict[str, list[Dispute]] | None = None) -> None:
        self.intents = list(intents or [])
        self.refunds = dict(refunds or {})
        self.disputes = dict(disputes or {})
        self.listed_since: list[datetime | None] = []
        self.refund_calls: list[str] = []
        self.dispute_calls: list[str] = []

    def list_payment_intents(self, created_after: datetime | None = None) -> Iterator[PaymentIntent]:
        self.listed_since.append(created_after)
        yield from self.intents

    def list_refunds(self, payment_intent_id: str) -> list[Refund]:
        self.refund_calls.append(payment_intent_id)
        return list(self.refunds.get(payment_intent_id, []))

    def list_disputes(self, payment_intent_id: str) -> list[Dispute]:
        self.dispute_calls.append(payment_intent_id)
        return list(self.disputes.get(payment_intent_id, []))

    def create_payment_intent(self, request: object) -> PaymentIntent:
        raise AssertionError("reconciliation must not create payments")

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        raise AssertionError("not used by these tests")

    def cancel_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        raise AssertionError("reconciliation must not cancel payments")

    def parse_webhook(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        raise AssertionError("not used by these tests")

    def charge_off_session(self, request: OffSessionCharge) -> PaymentIntent:
        raise AssertionError("reconciliation must not charge cards")

    def create_customer(self, user_id: str, idempotency_key: str) -> str:
        raise AssertionError("reconciliation must not create customers")

    def create_setup_intent(self, customer_id: str, user_id: str, idempotency_key: str) -> SetupIntent:
        raise AssertionError("reconciliation must not create SetupIntents")

    def retrieve_setup_intent(self, setup_intent_id: str) -> SetupIntent:
        raise AssertionError("not used by these tests")

    def card_details(self, payment_method_id: str) -> CardDetails:
        raise AssertionError("not used by these tests")

    def detach_payment_method(self, payment_method_id: str) -> None:
        raise AssertionError("reconciliation must not detach cards")


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


_keys = itertools.count(1)


def new_key() -> str:
    """A fresh Idempotency-Key, for writes whose key the test does not care about."""
    return f"key-{next(_keys)}"


def in_memory_wallet(store: InMemoryStore, gateway: PaymentGateway, policy: TopUpPolicy, clock: FakeClock) -> Wallet:
    """The application service (what HTTP, the CLI and the library call) on the in-memory fakes."""
    return Wallet(uow=in_memory_unit_of_work_factory(store), gateway=gateway, policy=policy, clock=clock)


def top_up(wallet: Wallet, gateway: FakePaymentGateway, usd: str, user: str = "alice") -> WebhookOutcome:
    """A paid top-up, all the way: request it, Stripe succeeds, the signed webhook is handled."""
    pending = wallet.top_up(user, usd)
    outcome = wallet.handle_stripe_webhook(*gateway.succeed(pending.payment_intent_id))
    assert outcome.outcome == "granted"
    return outcome


@dataclass(frozen=True)
class ChargedTopUp(TopUp):
    """A stored top-up that has its PaymentIntent (every top-up but an automatic one not yet charged)."""

    payment_intent_id: str


def charged(top_up: TopUp) -> ChargedTopUp:
    assert top_up.payment_intent_id is not None, f"top-up {top_up.id} has no PaymentIntent yet"
    return ChargedTopUp(**{f.name: getattr(top_up, f.name) for f in fields(TopUp)})


def paid_top_up(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, usd: str, user: str = "alice"
) -> ChargedTopUp:
    """A top-up whose credits were granted; returns its stored record."""
    return top_up_record(store, top_up(wallet, gateway, usd, user).top_up_id or "")


def top_up_record(store: InMemoryStore, top_up_id: str) -> ChargedTopUp:
    return charged(store.state.top_ups[top_up_id])


def top_up_of(store: InMemoryStore, payment_intent_id: str) -> ChargedTopUp:
    [found] = [t for t in store.state.top_ups.values() if t.payment_intent_id == payment_intent_id]
    return charged(found)


def intent_event(gateway: FakePaymentGateway, payment_intent_id: str, event_type: str, *, status: str | None = None,
                 event_id: str | None = None) -> PaymentEvent:
    """A payment_intent.* event carrying the fake gateway's intent (status as the event type implies)."""
    implied = {
        "payment_intent.succeeded": "succeeded",
        "payment_intent.payment_failed": "requires_payment_method",
        "payment_intent.canceled": "canceled",
    }
    intent = gateway.intents[payment_intent_id]
    intent = replace(intent, status=status or implied.get(event_type, intent.status))
    return PaymentEvent(event_id or next_event_id(), event_type, payment_intent=intent)


def balances(wallet: Wallet, user: str = "alice") -> tuple[Credits, Credits]:
    """(spendable, held) as the user sees them now."""
    view = wallet.wallet(user, recent=0)
    return view.balance, view.held


def spendable(wallet: Wallet, user: str = "alice") -> Credits:
    return balances(wallet, user)[0]


def held(wallet: Wallet, user: str = "alice") -> Credits:
    return balances(wallet, user)[1]


def history(wallet: Wallet, user: str = "alice") -> list[CreditTransaction]:
    """Every transaction of the user, newest first, read page by page."""
    rows: list[CreditTransaction] = []
    cursor: str | None = None
    while True:
        page = wallet.transactions(user, limit=100, cursor=cursor)
        rows.extend(page.transactions)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


def lots(store: InMemoryStore, user: str = "alice") -> list[Lot]:
    return [lot for lot in store.state.lots.values() if lot.user_id == user]


def fund_spenders(wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore) -> None:
    """The wallets the batch and group-commit tests spend from. ann: 100 paid + 20 promotional; bob: 15
    promotional; cy: nothing; debtor: owes 80 (spent 80 of a 100-credit top-up then refunded in full)."""
    top_up(wallet, gateway, "1.00", "ann")
    wallet.grant("ann", "20", reason="promo", granted_by="admin")
    wallet.grant("bob", "15", reason="promo", granted_by="admin")
    top_up(wallet, gateway, "1.00", "debtor")
    wallet.spend("debtor", "80", idempotency_key="debtor-spend", reason="before the refund")
    [intent] = [t.intent_id for t in store.state.top_ups.values() if t.user_id == "debtor"]
    refunded = gateway.refund(intent, 100)
    assert refunded is not None
    wallet.handle_stripe_webhook(*refunded)
    assert wallet.wallet("debtor").debt.is_positive()
