"""Random sequences of everything a wallet does, checked against a small model after every step.

The model keeps its own lots and holds and applies the product's rules (promotional first, soonest expiry
first, then paid oldest first; expired credits never spendable; holds reserve lot by lot). After each step
the ledger must verify clean, all postings must sum to zero, no spendable balance may be negative, every
credit granted or bought must be spendable, held, spent or expired, and every number must match the model.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, MultipleResults, RuleBasedStateMachine, invariant, multiple, rule

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import FakeClock, balances, in_memory_wallet, new_key, sum_of_all_postings, top_up
from wallet_core.errors import HoldNotOpen, IdempotencyConflict, InsufficientCredits, InvalidInput
from wallet_core.holds import HoldStatus
from wallet_core.ledger import Account, CreditKind
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import ExpiryReport

USERS = ("u1", "u2")
POLICY = TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal(100))


@dataclass
class MLot:
    seq: int
    kind: CreditKind
    created_at: datetime
    expires_at: datetime | None
    remaining: int
    held: int = 0

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def order(self) -> tuple[int, int, datetime, datetime, int]:
        return (
            0 if self.kind is CreditKind.PROMOTIONAL else 1,
            0 if self.expires_at is not None else 1,
            self.expires_at or self.created_at,
            self.created_at,
            self.seq,
        )


@dataclass
class MHold:
    user: str
    amount: int
    expires_at: datetime
    allocations: list[tuple[MLot, int]]
    status: HoldStatus = HoldStatus.OPEN
    captured: int = 0


@dataclass
class MUser:
    lots: list[MLot] = field(default_factory=list)
    granted: int = 0
    topped_up: int = 0
    spent: int = 0
    expired: int = 0  # booked out

    def spendable(self, now: datetime) -> int:
        return sum(x.remaining for x in self.lots if not x.expired(now))

    def held(self) -> int:
        return sum(x.held for x in self.lots)

    def pending_expiry(self, now: datetime) -> int:
        return sum(x.remaining for x in self.lots if x.expired(now) and x.remaining > 0)

    def book_out_expired(self, now: datetime) -> int:
        total = 0
        for x in self.lots:
            if x.expired(now) and x.remaining > 0:
                total += x.remaining
                x.remaining = 0
        self.expired += total
        return total

    def allocate(self, amount: int, now: datetime) -> list[tuple[MLot, int]]:
        plan, left = [], amount
        for x in sorted((x for x in self.lots if not x.expired(now)), key=MLot.order):
            take = min(left, x.remaining)
            if take > 0:
                plan.append((x, take))
                left -= take
        assert left == 0
        return plan


@dataclass(frozen=True)
class SpendRef:
    user: str
    amount: int
    key: str


amounts = st.integers(1, 20_000)  # 0.01 to 200.00 credits


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    spends = Bundle("spends")

    def __init__(self) -> None:
        super().__init__()
        self.store = InMemoryStore()
        self.clock = FakeClock()
        self.gateway = FakePaymentGateway()
        self.wallet = in_memory_wallet(self.store, self.gateway, POLICY, self.clock)
        self.users: dict[str, MUser] = defaultdict(MUser)
        self.model_holds: dict[str, MHold] = {}
        self.seq = 0

    # -- money in --------------------------------------------------------------------------------

    def _new_lot(self, user: str, kind: CreditKind, minor: int, expires_at: datetime | None) -> None:
        self.seq += 1
        self.users[user].lots.append(MLot(self.seq, kind, self.clock.now, expires_at, minor))

    @rule(user=st.sampled_from(USERS), minor=amounts, expires_in_hours=st.none() | st.integers(1, 72))
    def grant(self, user: str, minor: int, expires_in_hours: int | None) -> None:
        expires_in = None if expires_in_hours is None else timedelta(hours=expires_in_hours)
        result = self.wallet.grant(
            user,
            str(Credits(minor)),
            reason="promo",
            granted_by="admin",
            expires_at=None if expires_in is None else self.clock.now + expires_in,
        )
        assert result.credits_granted == Credits(minor)
        self.users[user].book_out_expired(self.clock.now)  # every write books expired credits out first
        self._new_lot(user, CreditKind.PROMOTIONAL, minor, None if expires_in is None else self.clock.now + expires_in)
        self.users[user].granted += minor

    @rule(user=st.sampled_from(USERS), cents=st.integers(100, 300))
    def top_up(self, user: str, cents: int) -> None:
        outcome = top_up(self.wallet, self.gateway, str(Usd(cents)), user)
        minor = cents * 100  # 100 credits per USD
        assert outcome.credits_granted == Credits(minor)
        self.users[user].book_out_expired(self.clock.now)
        self._new_lot(user, CreditKind.PAID, minor, None)
        self.users[user].topped_up += minor

    # -- money out -------------------------------------------------------------------------------

    @rule(target=spends, user=st.sampled_from(USERS), minor=amounts)
    def spend(self, user: str, minor: int) -> SpendRef | MultipleResults[SpendRef]:
        model, now = self.users[user], self.clock.now
        key = new_key()
        if model.spendable(now) < minor:
            before = self.store.state.copy()
            with pytest.raises(InsufficientCredits):
                self.wallet.spend(
                    user, str(Credits(minor)), idempotency_key=key or new_key(), reason="usage", actor="service:api"
                )
            assert self.store.state == before  # not even the expired credits are booked out
            return multiple()
        result = self.wallet.spend(
            user, str(Credits(minor)), idempotency_key=key or new_key(), reason="usage", actor="service:api"
        )
        model.book_out_expired(now)
        for lot, take in model.allocate(minor, now):
            lot.remaining -= take
        model.spent += minor
        assert result.replayed is False
        assert result.balance == Credits(model.spendable(now))
        return SpendRef(user, minor, key)

    @rule(earlier=spends, change=st.sampled_from(["same", "amount", "user"]))
    def retry_spend(self, earlier: SpendRef, change: str) -> None:
        before = self.store.state.copy()
        if change == "same":
            assert (
                self.wallet.spend(
                    earlier.user,
                    str(Credits(earlier.amount)),
                    idempotency_key=earlier.key or new_key(),
                    reason="usage",
                    actor="service:api",
                ).replayed
                is True
            )
        else:
            user = earlier.user if change == "amount" else next(u for u in USERS if u != earlier.user)
            minor = earlier.amount + 1 if change == "amount" else earlier.amount
            with pytest.raises(IdempotencyConflict):
                self.wallet.spend(
                    user,
                    str(Credits(minor)),
                    idempotency_key=earlier.key or new_key(),
                    reason="usage",
                    actor="service:api",
                )
        assert self.store.state == before

    @rule(target=holds, user=st.sampled_from(USERS), minor=amounts, ttl=st.sampled_from([60, 3600, 86_400]))
    def hold(self, user: str, minor: int, ttl: int) -> str | MultipleResults[str]:
        model, now = self.users[user], self.clock.now
        if model.spendable(now) < minor:
            before = self.store.state.copy()
            with pytest.raises(InsufficientCredits):
                self.wallet.hold(
                    user,
                    str(Credits(minor)),
                    idempotency_key=new_key(),
                    reason="reserve",
                    expires_in_seconds=ttl,
                    actor="service:api",
                )
            assert self.store.state == before
            return multiple()
        result = self.wallet.hold(
            user,
            str(Credits(minor)),
            idempotency_key=new_key(),
            reason="reserve",
            expires_in_seconds=ttl,
            actor="service:api",
        )
        model.book_out_expired(now)
        plan = model.allocate(minor, now)
        for lot, take in plan:
            lot.remaining -= take
            lot.held += take
        self.model_holds[result.hold_id] = MHold(user, minor, now + timedelta(seconds=ttl), plan)
        assert result.status is HoldStatus.OPEN
        assert result.balance == Credits(model.spendable(now))
        return result.hold_id

    def _settle(self, hold: MHold, capture: int) -> int:
        """Settle like the ledger: what goes back to a lot that expired meanwhile goes to `expired`.
        Returns the credits that lapsed that way."""
        model, now = self.users[hold.user], self.clock.now
        model.book_out_expired(now)
        left, lapsed = capture, 0
        for lot, reserved in hold.allocations:
            taken = min(left, reserved)
            left -= taken
            lot.held -= reserved
            if lot.expired(now):
                lapsed += reserved - taken
            else:
                lot.remaining += reserved - taken
        hold.captured = capture
        model.spent += capture
        model.expired += lapsed
        return lapsed

    @rule(hold_id=holds, how=st.sampled_from(["all", "part", "zero", "too-much"]))
    def capture(self, hold_id: str, how: str) -> None:
        hold = self.model_holds[hold_id]
        capture = {"all": hold.amount, "part": hold.amount // 2, "zero": 0, "too-much": hold.amount + 1}[how]
        credits = None if how == "all" else str(Credits(capture))
        before = self.store.state.copy()
        if capture == 0:
            with pytest.raises(InvalidInput):
                self.wallet.capture(hold_id, credits, actor="service:api")
        elif hold.status is HoldStatus.CAPTURED:
            if hold.captured == capture:
                assert self.wallet.capture(hold_id, credits, actor="service:api").replayed is True
            else:
                with pytest.raises(IdempotencyConflict):
                    self.wallet.capture(hold_id, credits, actor="service:api")
        elif hold.status is not HoldStatus.OPEN or hold.expires_at <= self.clock.now:
            with pytest.raises(HoldNotOpen):
                self.wallet.capture(hold_id, credits, actor="service:api")
        elif capture > hold.amount:
            with pytest.raises(InvalidInput):
                self.wallet.capture(hold_id, credits, actor="service:api")
        else:
            result = self.wallet.capture(hold_id, credits, actor="service:api")
            assert (result.status, result.captured, result.replayed) == (HoldStatus.CAPTURED, Credits(capture), False)
            self._settle(hold, capture)
            hold.status = HoldStatus.CAPTURED
            return
        assert self.store.state == before

    @rule(hold_id=holds)
    def release(self, hold_id: str) -> None:
        hold = self.model_holds[hold_id]
        before = self.store.state.copy()
        if hold.status in (HoldStatus.RELEASED, HoldStatus.EXPIRED):
            assert self.wallet.release(hold_id, actor="service:api").replayed is True
        elif hold.status is not HoldStatus.OPEN:
            with pytest.raises(HoldNotOpen):
                self.wallet.release(hold_id, actor="service:api")
        else:
            result = self.wallet.release(hold_id, actor="service:api")
            assert (result.status, result.captured, result.replayed) == (HoldStatus.RELEASED, Credits(0), False)
            self._settle(hold, 0)
            hold.status = HoldStatus.RELEASED
            return
        assert self.store.state == before

    # -- time ------------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 59, 60, 3600, 6 * 3600, 86_400, 3 * 86_400]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds=seconds)

    @rule(batch=st.sampled_from([1, 2, 500]))
    def expire(self, batch: int) -> None:
        now = self.clock.now
        wallets, credits = 0, 0
        for model in self.users.values():
            booked = model.book_out_expired(now)
            if booked:
                wallets += 1
                credits += booked
        released = 0
        for hold in self.model_holds.values():
            if hold.status is HoldStatus.OPEN and hold.expires_at <= now:
                credits += self._settle(hold, 0)
                hold.status = HoldStatus.EXPIRED
                released += 1
        assert self.wallet.expire(batch=batch) == ExpiryReport(wallets, Credits(credits), released)

    # -- after every step ------------------------------------------------------------------------

    @invariant()
    def ledger_verifies(self) -> None:
        assert self.wallet.verify() == []
        assert sum_of_all_postings(self.store) == Credits(0)

    @invariant()
    def balances_match_the_model_and_every_credit_is_accounted_for(self) -> None:
        now = self.clock.now
        s = self.store.state
        user_of = {t.id: t.user_id for t in s.transactions.values()}
        flows: dict[tuple[str, Account], int] = defaultdict(int)
        for tx_id, p in s.postings:
            if p.user_id is None:
                flows[(user_of[tx_id], p.account)] += p.amount.minor
        for user in USERS:
            model = self.users[user]
            spendable, held = balances(self.wallet, user)
            assert spendable.minor >= 0
            assert held.minor >= 0
            spent = flows[(user, Account.REVENUE)]
            expired = flows[(user, Account.EXPIRED)]
            granted = -flows[(user, Account.PROMOTIONS)]
            topped_up = -flows[(user, Account.STRIPE_FUNDING)]
            pending = sum(
                x.remaining.minor for x in s.lots.values()
                if x.user_id == user and x.expired(now) and x.remaining.minor > 0
            )
            # Conservation, from the ledger's own books.
            assert spendable.minor + held.minor + spent + expired + pending == granted + topped_up
            # And every term as the model expects.
            assert spendable.minor == model.spendable(now)
            assert held.minor == model.held()
            assert (spent, expired, pending) == (model.spent, model.expired, model.pending_expiry(now))
            assert (granted, topped_up) == (model.granted, model.topped_up)
            assert model.spendable(now) + model.held() + model.spent + model.expired + model.pending_expiry(
                now
            ) == model.granted + model.topped_up
        for hold_id, hold in self.model_holds.items():
            stored = s.holds[hold_id]
            assert (stored.status, stored.captured) == (hold.status, Credits(hold.captured))


LedgerMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ledger_against_the_model = LedgerMachine.TestCase
