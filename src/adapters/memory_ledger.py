"""In-memory repositories (ledger, holds, top-ups, payment events, saved cards, ...) and unit of work: the same
behaviour as the SQL adapter, no database.

One unit of work at a time holds the store's lock (like SQLite's writer lock), works on a copy of the
state and swaps it in on commit, so rollback and "leave without commit" really discard everything.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType

from wallet_core.alerts import AlertState
from wallet_core.auto_top_up import AutoCharge, AutoTopUpRule
from wallet_core.errors import AutoTopUpInFlight, DuplicateReference, DuplicateTopUp, NotFound
from wallet_core.holds import Hold, HoldStatus
from wallet_core.ledger import (
    MONEY_BACK_KINDS,
    TAKE_BACK_KINDS,
    Account,
    Booking,
    CreditTransaction,
    Lot,
    Posting,
    TransactionCursor,
    TransactionKind,
    WalletState,
    explained_debt,
    sources_of,
)
from wallet_core.money import Credits, Usd
from wallet_core.outbound_events import WalletEvent
from wallet_core.ports import AccountAudit, LedgerAudit, RevertAudit, StoredEvent
from wallet_core.saved_cards import SavedCard
from wallet_core.topups import CHARGED_STATUSES, OPEN_STATUSES, TopUp, TopUpActivity, TopUpPolicy, TopUpStatus
from wallet_core.webhooks_out import Delivery, DeliveryStatus, WebhookEndpoint


@dataclass
class _State:
    available: dict[str, Credits] = field(default_factory=dict)
    held: dict[str, Credits] = field(default_factory=dict)
    lots: dict[str, Lot] = field(default_factory=dict)
    transactions: dict[str, CreditTransaction] = field(default_factory=dict)
    by_reference: dict[str, str] = field(default_factory=dict)
    postings: list[tuple[str, Posting]] = field(default_factory=list)
    reverted_by: dict[str, str] = field(default_factory=dict)  # transaction id -> the revert's id
    holds: dict[str, Hold] = field(default_factory=dict)
    top_ups: dict[str, TopUp] = field(default_factory=dict)
    events: dict[str, StoredEvent] = field(default_factory=dict)
    outbox: list[WalletEvent] = field(default_factory=list)  # in commit order (one unit of work at a time)
    published: int = 0  # how many of `outbox` (the first ones) are numbered: number = position + 1
    alerts: dict[str, AlertState] = field(default_factory=dict)
    endpoints: dict[str, WebhookEndpoint] = field(default_factory=dict)
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    customers: dict[str, str] = field(default_factory=dict)  # user id -> Stripe Customer id
    saved_cards: dict[str, SavedCard] = field(default_factory=dict)  # by user id
    auto_rules: dict[str, AutoTopUpRule] = field(default_factory=dict)  # by user id
    auto_charges: dict[str, AutoCharge] = field(default_factory=dict)  # by user id: one in flight at most

    def copy(self) -> _State:
        return _State(
            dict(self.available),
            dict(self.held),
            dict(self.lots),
            dict(self.transactions),
            dict(self.by_reference),
            list(self.postings),
            dict(self.reverted_by),
            dict(self.holds),
            dict(self.top_ups),
            dict(self.events),
            list(self.outbox),
            self.published,
            dict(self.alerts),
            dict(self.endpoints),
            dict(self.deliveries),
            dict(self.customers),
            dict(self.saved_cards),
            dict(self.auto_rules),
            dict(self.auto_charges),
        )


class InMemoryStore:
    """The shared 'database'. Create one per test; hand `in_memory_unit_of_work_factory(store)` to use cases."""

    def __init__(self) -> None:
        self.state = _State()
        self.lock = threading.RLock()
        self.commits = 0


def _newest_first(t: CreditTransaction) -> tuple[datetime, str]:
    return (t.created_at, t.id)


class InMemoryLedgerRepository:
    def __init__(self, state: _State) -> None:
        self._s = state

    # -- reading -------------------------------------------------------------------------------
    def balances(self, user_id: str, at: datetime) -> tuple[Credits, Credits]:
        expired = sum(
            lot.remaining.minor
            for lot in self._s.lots.values()
            if lot.user_id == user_id and lot.expired(at) and lot.remaining.is_positive()
        )
        available = self._s.available.get(user_id, Credits(0))
        pending = self._pending(user_id, at)
        return Credits(available.minor - expired - pending), self._s.held.get(user_id, Credits(0))

    def _pending(self, user_id: str, at: datetime) -> int:
        return sum(
            lot.remaining.minor for lot in self._s.lots.values() if lot.user_id == user_id and lot.pending(at)
        )

    def transactions(
        self, user_id: str, limit: int, before: TransactionCursor | None = None
    ) -> list[CreditTransaction]:
        rows = [t for t in self._s.transactions.values() if t.user_id == user_id]
        if before is not None:
            rows = [t for t in rows if (t.created_at, t.id) < (before.created_at, before.id)]
        return [self._full(t) for t in sorted(rows, key=_newest_first, reverse=True)[:limit]]

    def _with_revert(self, t: CreditTransaction) -> CreditTransaction:
        return replace(t, reverted_by=self._s.reverted_by.get(t.id))

    def _full(self, t: CreditTransaction) -> CreditTransaction:
        categories = {lot.id: lot.kind for lot in self._s.lots.values() if lot.user_id == t.user_id}
        return replace(self._with_revert(t), sources=sources_of(t.kind, self.postings_of(t.id), categories))

    def find_transaction_by_reference(self, reference_id: str) -> CreditTransaction | None:
        found = self._s.by_reference.get(reference_id)
        return None if found is None else self._with_revert(self._s.transactions[found])

    def find_transactions_by_references(self, reference_ids: Collection[str]) -> dict[str, CreditTransaction]:
        found = {ref: self.find_transaction_by_reference(ref) for ref in set(reference_ids)}
        return {ref: booked for ref, booked in found.items() if booked is not None}

    def find_transaction(self, transaction_id: str) -> CreditTransaction | None:
        found = self._s.transactions.get(transaction_id)
        return None if found is None else self._full(found)

    def postings_of(self, transaction_id: str) -> list[Posting]:
        return [p for tx_id, p in self._s.postings if tx_id == transaction_id]

    def lots(self, lot_ids: Collection[str]) -> list[Lot]:
        return [self._s.lots[lot_id] for lot_id in set(lot_ids) if lot_id in self._s.lots]

    def live_lots(self, user_id: str) -> list[Lot]:
        return [
            lot
            for lot in self._s.lots.values()
            if lot.user_id == user_id and (lot.remaining.minor != 0 or lot.held.minor != 0)
        ]

    def take_backs(self, user_id: str | None = None) -> list[CreditTransaction]:
        rows = [
            t
            for t in self._s.transactions.values()
            if t.kind in MONEY_BACK_KINDS and (user_id is None or t.user_id == user_id)
        ]
        return sorted(rows, key=_newest_first)

    # -- writing -------------------------------------------------------------------------------
    def lock_wallet(self, user_id: str, at: datetime) -> WalletState:
        # The unit of work already holds the store's lock.
        self._s.available.setdefault(user_id, Credits(0))
        self._s.held.setdefault(user_id, Credits(0))
        lots = tuple(
            lot
            for lot in self._s.lots.values()
            if lot.user_id == user_id and (lot.remaining.minor != 0 or lot.held.minor != 0)
        )
        return WalletState(user_id, self._s.available[user_id], self._s.held[user_id], lots)

    def lock_wallets(self, user_ids: Collection[str], at: datetime) -> dict[str, WalletState]:
        return {user: self.lock_wallet(user, at) for user in sorted(set(user_ids))}

    def lock_wallet_for_credit(self, user_id: str, at: datetime) -> WalletState:
        state = self.lock_wallet(user_id, at)
        due = tuple(
            lot for lot in state.lots if lot.remaining.minor < 0 or (lot.expired(at) and lot.remaining.is_positive())
        )
        return replace(state, lots=due)

    def record(self, booking: Booking) -> CreditTransaction:
        if booking.reference_id in self._s.by_reference:
            raise DuplicateReference(f"reference {booking.reference_id} is recorded already")
        user = booking.user_id
        available = self._s.available.get(user, Credits(0)) + booking.credits
        self._s.available[user] = available
        self._s.held[user] = self._s.held.get(user, Credits(0)) + booking.held_change
        for lot in booking.new_lots:
            self._s.lots[lot.id] = lot
        for change in booking.lot_changes:
            lot = self._s.lots[change.lot_id]
            expires_at = lot.expires_at
            if change.ends_at is not None and (expires_at is None or change.ends_at < expires_at):
                expires_at = change.ends_at
            self._s.lots[lot.id] = replace(
                lot, remaining=lot.remaining + change.remaining, held=lot.held + change.held, expires_at=expires_at
            )
        booked = CreditTransaction(
            id=booking.id,
            user_id=user,
            kind=booking.kind,
            credits=booking.credits,
            held_change=booking.held_change,
            balance_after=Credits(available.minor - self._pending(user, booking.created_at)),
            reference_id=booking.reference_id,
            created_at=booking.created_at,
            reason=booking.reason,
            actor=booking.actor,
            metadata=dict(booking.metadata),
            hold_id=booking.hold_id,
            reverts=booking.reverts,
        )
        if booking.reverts is not None:
            if booking.reverts in self._s.reverted_by:  # the SQL adapter's unique index on `reverts`
                raise RuntimeError(f"transaction {booking.reverts} is reverted already")
            self._s.reverted_by[booking.reverts] = booking.id
        self._s.transactions[booking.id] = booked
        self._s.by_reference[booking.reference_id] = booking.id
        self._s.postings.extend((booking.id, p) for p in booking.postings)
        return booked

    def record_many(self, bookings: Sequence[Booking]) -> list[CreditTransaction]:
        return [self.record(booking) for booking in bookings]

    # -- expiry and audit ----------------------------------------------------------------------
    def users_with_expired_credits(self, at: datetime, limit: int) -> list[str]:
        users = {lot.user_id for lot in self._s.lots.values() if lot.expired(at) and lot.remaining.is_positive()}
        return sorted(users)[:limit]

    def audit(self) -> LedgerAudit:
        per_tx: dict[str, int] = defaultdict(int)
        posted: dict[tuple[str, Account], int] = defaultdict(int)
        for tx_id, p in self._s.postings:
            per_tx[tx_id] += p.amount.minor
            if p.user_id is not None:
                posted[(p.user_id, p.account)] += p.amount.minor
        taken_back: dict[str, int] = defaultdict(int)  # lot id -> what refunds and disputes took from it
        for tx_id, p in self._s.postings:
            booked = self._s.transactions.get(tx_id)
            if booked is not None and booked.kind in TAKE_BACK_KINDS and p.account is Account.WALLET and p.lot_id:
                taken_back[p.lot_id] -= p.amount.minor
        in_lots: dict[tuple[str, Account], int] = defaultdict(int)
        debt: dict[str, int] = defaultdict(int)
        unexplained: dict[str, int] = defaultdict(int)
        for lot in self._s.lots.values():
            in_lots[(lot.user_id, Account.WALLET)] += lot.remaining.minor
            in_lots[(lot.user_id, Account.HELD)] += lot.held.minor
            owed, beyond = explained_debt(lot.remaining, Credits(taken_back[lot.id]))
            debt[lot.user_id] += owed.minor
            unexplained[lot.user_id] += beyond.minor
        accounts = []
        for user in sorted(set(self._s.available) | {u for u, _ in posted}):
            for account, stored in ((Account.WALLET, self._s.available), (Account.HELD, self._s.held)):
                accounts.append(
                    AccountAudit(
                        user,
                        account,
                        stored.get(user, Credits(0)),
                        Credits(posted[(user, account)]),
                        Credits(in_lots[(user, account)]),
                        Credits(debt[user] if account is Account.WALLET else 0),
                        Credits(unexplained[user] if account is Account.WALLET else 0),
                    )
                )
        return LedgerAudit(
            total_posted=Credits(sum(per_tx.values())),
            unbalanced=[(t, Credits(s)) for t, s in sorted(per_tx.items()) if s != 0],
            accounts=accounts,
        )

    def revert_audit(self) -> list[RevertAudit]:
        reverts = sorted(
            (t for t in self._s.transactions.values() if t.kind is TransactionKind.REVERT), key=_newest_first
        )
        out: list[RevertAudit] = []
        for t in reverts:
            original = self._s.transactions.get(t.reverts or "")
            out.append(
                RevertAudit(
                    self._with_revert(t),
                    self.postings_of(t.id),
                    None if original is None else self._with_revert(original),
                    [] if original is None else self.postings_of(original.id),
                )
            )
        return out


class InMemoryHoldRepository:
    def __init__(self, state: _State) -> None:
        self._s = state

    def add(self, hold: Hold) -> None:
        self._s.holds[hold.id] = hold

    def get(self, hold_id: str) -> Hold | None:
        return self._s.holds.get(hold_id)

    def update(self, hold_id: str, status: HoldStatus, captured: Credits, at: datetime) -> None:
        if hold_id not in self._s.holds:
            raise NotFound(f"no hold {hold_id}")
        self._s.holds[hold_id] = replace(self._s.holds[hold_id], status=status, captured=captured)

    def expired_open(self, at: datetime, limit: int) -> list[Hold]:
        due = [h for h in self._s.holds.values() if h.status is HoldStatus.OPEN and h.expired(at)]
        return sorted(due, key=lambda h: (h.expires_at, h.id))[:limit]


class InMemoryTopUpRepository:
    def __init__(self, state: _State) -> None:
        self._s = state

    def add(self, top_up: TopUp) -> None:
        if top_up.idempotency_key is not None and self.find_by_idempotency_key(top_up.user_id, top_up.idempotency_key):
            raise DuplicateTopUp(f"top-up with key {top_up.idempotency_key} exists")
        if top_up.id in self._s.top_ups or (
            top_up.payment_intent_id is not None and self.find_by_payment_intent(top_up.payment_intent_id)
        ):
            raise DuplicateTopUp(f"top-up {top_up.id} exists")
        self._s.top_ups[top_up.id] = top_up

    def get(self, top_up_id: str) -> TopUp | None:
        return self._s.top_ups.get(top_up_id)

    def find_by_payment_intent(self, payment_intent_id: str) -> TopUp | None:
        return next((t for t in self._s.top_ups.values() if t.payment_intent_id == payment_intent_id), None)

    def find_by_idempotency_key(self, user_id: str, key: str) -> TopUp | None:
        return next(
            (t for t in self._s.top_ups.values() if t.user_id == user_id and t.idempotency_key == key),
            None,
        )

    def set_payment_intent(self, top_up_id: str, payment_intent_id: str, at: datetime) -> None:
        if top_up_id not in self._s.top_ups:
            raise NotFound(f"top-up {top_up_id} does not exist")
        other = self.find_by_payment_intent(payment_intent_id)
        if other is not None and other.id != top_up_id:
            raise DuplicateTopUp(f"top-up {other.id} has PaymentIntent {payment_intent_id}")
        self._s.top_ups[top_up_id] = replace(self._s.top_ups[top_up_id], payment_intent_id=payment_intent_id)

    def set_status(self, top_up_id: str, status: TopUpStatus, at: datetime) -> None:
        if top_up_id not in self._s.top_ups:
            raise NotFound(f"top-up {top_up_id} does not exist")
        self._s.top_ups[top_up_id] = replace(self._s.top_ups[top_up_id], status=status)

    def lock(self, user_id: str) -> None:
        """Nothing to do: a unit of work holds the whole store."""

    def activity(self, user_id: str, *, open_since: datetime, started_since: datetime) -> TopUpActivity:
        mine = [t for t in self._s.top_ups.values() if t.user_id == user_id and not t.automatic]
        opened = [t.created_at for t in mine if t.status in OPEN_STATUSES and t.created_at > open_since]
        started = [t.created_at for t in mine if t.created_at > started_since]
        return TopUpActivity(len(opened), min(opened, default=None), len(started), min(started, default=None))

    def update(self, top_up: TopUp, at: datetime) -> None:
        if top_up.id not in self._s.top_ups:
            raise NotFound(f"top-up {top_up.id} does not exist")
        self._s.top_ups[top_up.id] = replace(
            self._s.top_ups[top_up.id],
            status=top_up.status,
            refunded=top_up.refunded,
            credits_refunded=top_up.credits_refunded,
        )


class InMemoryPaymentEventLog:
    def __init__(self, state: _State) -> None:
        self._s = state

    def find(self, event_id: str) -> StoredEvent | None:
        return self._s.events.get(event_id)

    def find_with_top_up(
        self, event_id: str, payment_intent_id: str | None
    ) -> tuple[StoredEvent | None, TopUp | None]:
        top_up = None if payment_intent_id is None else InMemoryTopUpRepository(self._s).find_by_payment_intent(
            payment_intent_id
        )
        return self.find(event_id), top_up

    def add(self, event: StoredEvent) -> None:
        self._s.events.setdefault(event.event_id, event)

    def for_payment_intent(self, payment_intent_id: str) -> list[StoredEvent]:
        mine = [e for e in self._s.events.values() if e.payment_intent_id == payment_intent_id]
        return sorted(mine, key=lambda e: (e.received_at, e.event_id))


class InMemoryOutbox:
    def __init__(self, state: _State) -> None:
        self._s = state

    def add(self, event: WalletEvent) -> None:
        self._s.outbox.append(event)

    def publish(self, limit: int) -> list[tuple[int, WalletEvent]]:
        start = self._s.published
        fresh = self._s.outbox[start : start + limit]
        self._s.published = start + len(fresh)
        return [(start + i + 1, event) for i, event in enumerate(fresh)]

    def page(
        self, after: int, limit: int, *, type: str | None = None, user_id: str | None = None
    ) -> list[tuple[int, WalletEvent]]:
        numbered = enumerate(self._s.outbox[: self._s.published], start=1)
        chosen = [
            (n, e)
            for n, e in numbered
            if n > after and (type is None or e.type == type) and (user_id is None or e.user_id == user_id)
        ]
        return chosen[:limit]

    def get(self, event_id: str) -> WalletEvent | None:
        return next((e for e in self._s.outbox if e.id == event_id), None)


class InMemoryAlertSettings:
    def __init__(self, state: _State) -> None:
        self._s = state

    def get(self, user_id: str) -> AlertState:
        return self._s.alerts.get(user_id, AlertState())

    def set(self, user_id: str, state: AlertState, at: datetime) -> None:
        self._s.available.setdefault(user_id, Credits(0))
        self._s.held.setdefault(user_id, Credits(0))
        self._s.alerts[user_id] = state


class InMemoryAutoTopUpRules:
    def __init__(self, state: _State) -> None:
        self._s = state

    def get(self, user_id: str) -> AutoTopUpRule | None:
        return self._s.auto_rules.get(user_id)

    def put(self, rule: AutoTopUpRule) -> None:
        self._s.auto_rules[rule.user_id] = rule

    def delete(self, user_id: str) -> bool:
        return self._s.auto_rules.pop(user_id, None) is not None

    def charge_of(self, user_id: str) -> AutoCharge | None:
        return self._s.auto_charges.get(user_id)

    def add_charge(self, charge: AutoCharge) -> None:
        if charge.user_id in self._s.auto_charges:  # the SQL adapter's primary key on the user id
            raise AutoTopUpInFlight(f"wallet {charge.user_id} has an automatic top-up in flight")
        self._s.auto_charges[charge.user_id] = charge

    def claim_charges(self, at: datetime, lease_until: datetime, limit: int) -> list[AutoCharge]:
        due = sorted(
            (c for c in self._s.auto_charges.values() if c.due_at is not None and c.due_at <= at),
            key=lambda c: (c.due_at or at, c.user_id),
        )[:limit]
        claimed = [replace(c, attempts=c.attempts + 1, due_at=lease_until) for c in due]
        for c in claimed:
            self._s.auto_charges[c.user_id] = c
        return claimed

    def save_charge(self, charge: AutoCharge) -> bool:
        current = self._s.auto_charges.get(charge.user_id)
        if current is None or current.top_up_id != charge.top_up_id:
            return False
        self._s.auto_charges[charge.user_id] = charge
        return True

    def finish_charge(self, top_up_id: str) -> AutoCharge | None:
        found = next((c for c in self._s.auto_charges.values() if c.top_up_id == top_up_id), None)
        if found is not None:
            del self._s.auto_charges[found.user_id]
        return found

    def charged_since(self, user_id: str, since: datetime) -> Usd:
        return Usd(
            sum(
                t.amount.cents
                for t in self._s.top_ups.values()
                if t.user_id == user_id and t.automatic and t.created_at >= since and t.status in CHARGED_STATUSES
            )
        )


class InMemoryWebhookEndpoints:
    def __init__(self, state: _State) -> None:
        self._s = state

    def add(self, endpoint: WebhookEndpoint) -> None:
        self._s.endpoints[endpoint.id] = endpoint

    def get(self, endpoint_id: str) -> WebhookEndpoint | None:
        return self._s.endpoints.get(endpoint_id)

    def all(self) -> list[WebhookEndpoint]:
        return sorted(self._s.endpoints.values(), key=lambda e: (e.created_at, e.id))

    def remove(self, endpoint_id: str) -> bool:
        return self._s.endpoints.pop(endpoint_id, None) is not None

    def update(self, endpoint: WebhookEndpoint) -> None:
        if endpoint.id not in self._s.endpoints:
            raise NotFound(f"no webhook endpoint {endpoint.id}")
        self._s.endpoints[endpoint.id] = endpoint


class InMemoryWebhookDeliveries:
    def __init__(self, state: _State) -> None:
        self._s = state

    def add(self, delivery: Delivery) -> None:
        self._s.deliveries[delivery.id] = delivery

    def claim(self, at: datetime, lease_until: datetime, limit: int) -> list[Delivery]:
        due = sorted(
            (
                d
                for d in self._s.deliveries.values()
                if d.status is DeliveryStatus.PENDING and d.next_attempt_at is not None and d.next_attempt_at <= at
            ),
            key=lambda d: (d.next_attempt_at or at, d.id),
        )[:limit]
        claimed = [replace(d, attempts=d.attempts + 1, next_attempt_at=lease_until) for d in due]
        for d in claimed:
            self._s.deliveries[d.id] = d
        return claimed

    def save(self, delivery: Delivery) -> None:
        if delivery.id not in self._s.deliveries:
            raise NotFound(f"no delivery {delivery.id}")
        self._s.deliveries[delivery.id] = delivery

    def get(self, delivery_id: str) -> Delivery | None:
        return self._s.deliveries.get(delivery_id)

    def for_endpoint(self, endpoint_id: str, *, status: DeliveryStatus | None, limit: int) -> list[Delivery]:
        mine = [
            d
            for d in self._s.deliveries.values()
            if d.endpoint_id == endpoint_id and (status is None or d.status is status)
        ]
        return sorted(mine, key=lambda d: (d.created_at, d.id), reverse=True)[:limit]


class InMemorySavedCards:
    def __init__(self, state: _State) -> None:
        self._s = state

    def customer_id(self, user_id: str) -> str | None:
        return self._s.customers.get(user_id)

    def set_customer(self, user_id: str, customer_id: str, at: datetime) -> str:
        return self._s.customers.setdefault(user_id, customer_id)

    def get(self, user_id: str) -> SavedCard | None:
        return self._s.saved_cards.get(user_id)

    def save(self, card: SavedCard) -> None:
        self._s.saved_cards[card.user_id] = card

    def forget(self, user_id: str) -> SavedCard | None:
        return self._s.saved_cards.pop(user_id, None)


class InMemoryUnitOfWork:
    def __init__(
        self,
        store: InMemoryStore,
        *,
        read_only: bool = False,
        low_balance_default: Credits | None = None,
        top_up_policy: TopUpPolicy | None = None,
    ) -> None:
        self._store = store
        self._read_only = read_only
        self._working: _State | None = None
        self.low_balance_default = low_balance_default
        self.top_up_policy = top_up_policy
        self.ledger: InMemoryLedgerRepository
        self.holds: InMemoryHoldRepository
        self.top_ups: InMemoryTopUpRepository
        self.events: InMemoryPaymentEventLog
        self.outbox: InMemoryOutbox
        self.alerts: InMemoryAlertSettings
        self.auto_top_ups: InMemoryAutoTopUpRules
        self.endpoints: InMemoryWebhookEndpoints
        self.deliveries: InMemoryWebhookDeliveries
        self.saved_cards: InMemorySavedCards

    def __enter__(self) -> InMemoryUnitOfWork:
        self._store.lock.acquire()
        self._begin()
        return self

    def _begin(self) -> None:
        self._working = self._store.state.copy()
        self.ledger = InMemoryLedgerRepository(self._working)
        self.holds = InMemoryHoldRepository(self._working)
        self.top_ups = InMemoryTopUpRepository(self._working)
        self.events = InMemoryPaymentEventLog(self._working)
        self.outbox = InMemoryOutbox(self._working)
        self.alerts = InMemoryAlertSettings(self._working)
        self.auto_top_ups = InMemoryAutoTopUpRules(self._working)
        self.endpoints = InMemoryWebhookEndpoints(self._working)
        self.deliveries = InMemoryWebhookDeliveries(self._working)
        self.saved_cards = InMemorySavedCards(self._working)

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
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        self._store.state = self._working
        self._store.commits += 1
        self._begin()

    def rollback(self) -> None:
        self._begin()


class InMemoryUnitOfWorkFactory:
    """What the use cases take as `uow`: each call is a new unit of work on `store`. A class, not a
    closure typed `Callable[..., InMemoryUnitOfWork]`, so that its call signature is a type mypy holds
    to the port `UnitOfWorkFactory`, keyword `read_only` included (tests/typecheck_ports.py)."""

    def __init__(
        self,
        store: InMemoryStore,
        *,
        low_balance_default: Credits | None = None,
        top_up_policy: TopUpPolicy | None = None,
    ) -> None:
        self._store = store
        self._low_balance_default = low_balance_default
        self._top_up_policy = top_up_policy

    def __call__(self, *, read_only: bool = False) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(
            self._store,
            read_only=read_only,
            low_balance_default=self._low_balance_default,
            top_up_policy=self._top_up_policy,
        )


def in_memory_unit_of_work_factory(
    store: InMemoryStore, *, low_balance_default: Credits | None = None, top_up_policy: TopUpPolicy | None = None
) -> InMemoryUnitOfWorkFactory:
    """`top_up_policy`: what automatic top-ups follow (None: automatic top-ups are off)."""
    return InMemoryUnitOfWorkFactory(store, low_balance_default=low_balance_default, top_up_policy=top_up_policy)
