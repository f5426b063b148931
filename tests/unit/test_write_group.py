"""Group commit for grants, holds, captures, releases and webhook grants (use_cases.write_group): the
use cases run as they are in one shared transaction, committed once; a write that cannot be undone
alone (a replay, a refusal after it locked its wallet) is taken out of the group and run on its own
after it, so nothing of another request is lost or doubled.

Groups are formed deterministically as in test_spend_queue: a gate holds the first write's unit of work
open, the others queue behind it, and when the gate opens they run as one group."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, in_memory_unit_of_work_factory
from tests.unit.helpers import FakeClock, in_memory_wallet
from tests.unit.test_spend_queue import GatedUow, funded_store, wait_until
from wallet_core.errors import InsufficientCredits, InvalidInput, NotFound, StorageUnavailable, WalletError
from wallet_core.holds import HoldStatus
from wallet_core.money import Credits, Usd
from wallet_core.payment_outcomes import PaymentEventOutcome
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import GrantResult, HoldResult, grant_credits
from wallet_core.use_cases.holds import capture_hold, hold_wallet, place_hold, release_hold
from wallet_core.use_cases.write_group import WriteGroup

POLICY = TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal(100))
Run = Callable[[UnitOfWorkFactory], Any]
CLOCK = FakeClock()


def grant(user: str, credits: str, key: str | None) -> tuple[Run, str]:
    return (
        lambda uow: grant_credits(
            user_id=user, credits=credits, reason="promo", granted_by="admin", uow=uow, idempotency_key=key, now=CLOCK
        ),
        user,
    )


def hold(user: str, credits: str, key: str) -> tuple[Run, str]:
    return (
        lambda uow: place_hold(
            user_id=user, credits=credits, idempotency_key=key, reason="job", actor="svc", uow=uow, now=CLOCK
        ),
        user,
    )


def capture(hold_id: str, credits: str | None = None) -> tuple[Run, Callable[..., str | None]]:
    return (lambda uow: capture_hold(hold_id=hold_id, credits=credits, actor="svc", uow=uow, now=CLOCK)), hold_wallet(
        hold_id
    )


def release(hold_id: str) -> tuple[Run, Callable[..., str | None]]:
    return (lambda uow: release_hold(hold_id=hold_id, actor="svc", uow=uow, now=CLOCK)), hold_wallet(hold_id)


Outcome = Any


def grouped(group: WriteGroup, uow: GatedUow, writes: list[tuple[Run, Any]]) -> list[Outcome]:
    """The first write alone (it holds the gate), then the others queued behind it in this order and
    run as one group; each one's result or error."""
    outcomes: dict[int, Outcome] = {}

    def run(index: int, write: tuple[Run, Any]) -> None:
        try:
            outcomes[index] = group.run(write[0], wallet=write[1])
        except WalletError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(0, writes[0]))]
    threads[0].start()
    assert uow.held.wait(5)
    for index, write in enumerate(writes[1:], start=1):
        threads.append(threading.Thread(target=run, args=(index, write)))
        threads[-1].start()
        wait_until(lambda: group.waiting == len(threads) - 1)
    uow.gate.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "a write never got its answer"
    return [outcomes[index] for index in range(len(writes))]


def balance(store: InMemoryStore, user: str) -> Decimal:
    """Spendable now."""
    return in_memory_wallet(store, FakePaymentGateway(), POLICY, FakeClock()).wallet(user).balance.decimal


def test_writes_of_one_group_share_one_commit_and_each_gets_its_own_answer(policy: TopUpPolicy) -> None:
    store = funded_store(policy)  # ann 120, bob 15
    uow = GatedUow(store)
    sizes: list[int] = []
    group = WriteGroup(uow, groups=1, on_group=sizes.append)
    commits = store.commits
    got = grouped(
        group,
        uow,
        [
            grant("cy", "1", "g0"),  # the gate's write: a group of one
            grant("cy", "10", "g1"),
            hold("bob", "5", "h1"),
            grant("ann", "2.50", None),  # no key: a new grant each time
            hold("cy", "4", "h2"),  # after g1 in cy's order: 11 there
            grant("bob", "-3", "bad"),  # refused before it touches the unit of work
        ],
    )
    assert sizes == [1, 5]
    assert store.commits == commits + 2  # the gate's write, then the whole group at once
    assert group.abandoned == 0
    first, g1, h1, g_ann, h2, bad = got
    assert isinstance(first, GrantResult) and first.balance == Credits.parse("1")
    assert isinstance(g1, GrantResult) and g1.balance == Credits.parse("11") and not g1.replayed
    assert isinstance(h1, HoldResult) and h1.balance == Credits.parse("10") and h1.status is HoldStatus.OPEN
    assert isinstance(g_ann, GrantResult) and g_ann.balance == Credits.parse("122.50")
    assert isinstance(h2, HoldResult) and h2.balance == Credits.parse("7")
    assert isinstance(bad, InvalidInput) and bad.field == "credits"
    assert (balance(store, "ann"), balance(store, "bob"), balance(store, "cy")) == (
        Decimal("122.50"), Decimal("10"), Decimal("7")
    )
    assert in_memory_wallet(store, FakePaymentGateway(), policy, FakeClock()).verify() == []


def test_a_replay_or_a_refusal_leaves_the_group_and_is_answered_on_its_own(policy: TopUpPolicy) -> None:
    store = funded_store(policy)
    uow = GatedUow(store)
    group = WriteGroup(uow, groups=1)
    got = grouped(
        group,
        uow,
        [
            hold("bob", "5", "h0"),  # the gate's write: bob 15 -> 10 spendable
            grant("cy", "10", "g1"),
            grant("cy", "10", "g1"),  # the same request again: replayed, after g1 committed
            hold("cy", "50", "h-short"),  # cy has 10: refused, nothing written
            capture("hold_nope"),  # no such hold
            grant("ann", "1", "g2"),
        ],
    )
    _, g1, again, short, missing, g2 = got
    assert isinstance(g1, GrantResult) and not g1.replayed and g1.balance == Credits.parse("10")
    assert isinstance(again, GrantResult) and again.replayed and again.transaction_id == g1.transaction_id
    assert isinstance(short, InsufficientCredits)
    assert isinstance(missing, NotFound)
    assert isinstance(g2, GrantResult) and g2.balance == Credits.parse("121")
    assert group.abandoned == 2  # the replay and the refusal left; then the rest run one by one
    assert balance(store, "cy") == Decimal("10")  # granted once
    assert in_memory_wallet(store, FakePaymentGateway(), policy, FakeClock()).verify() == []


def test_captures_and_releases_of_holds_on_several_wallets_in_one_group(policy: TopUpPolicy) -> None:
    store = funded_store(policy)
    wallet = in_memory_wallet(store, FakePaymentGateway(), policy, FakeClock())
    ann = wallet.hold("ann", "30", idempotency_key="a", reason="job")
    bob = wallet.hold("bob", "15", idempotency_key="b", reason="job")
    ann2 = wallet.hold("ann", "10", idempotency_key="a2", reason="job")
    uow = GatedUow(store)
    group = WriteGroup(uow, groups=1)
    commits = store.commits
    got = grouped(
        group,
        uow,
        [grant("cy", "1", "gate"), capture(bob.hold_id, "5"), capture(ann.hold_id), release(ann2.hold_id)],
    )
    _, bob_captured, ann_captured, ann_released = got
    assert store.commits == commits + 2 and group.abandoned == 0
    assert isinstance(bob_captured, HoldResult) and bob_captured.captured == Credits.parse("5")
    assert isinstance(ann_captured, HoldResult) and ann_captured.status is HoldStatus.CAPTURED
    assert isinstance(ann_released, HoldResult) and ann_released.status is HoldStatus.RELEASED
    assert (balance(store, "ann"), balance(store, "bob")) == (Decimal("90"), Decimal("10"))
    assert in_memory_wallet(store, FakePaymentGateway(), policy, FakeClock()).verify() == []


def test_when_the_groups_commit_fails_every_write_in_it_gets_the_error_and_none_is_written(
    policy: TopUpPolicy,
) -> None:
    store = funded_store(policy)
    uow = GatedUow(store)
    group = WriteGroup(uow, groups=1)
    uow.failing = True
    before = store.state.copy()
    got = grouped(group, uow, [grant("cy", "1", "g0"), grant("cy", "2", "g1"), hold("ann", "5", "h1")])
    assert all(isinstance(o, StorageUnavailable) for o in got)
    assert store.state.by_reference == before.by_reference and store.state.outbox == before.outbox
    uow.failing = False
    run, user = grant("cy", "2", "g1")
    assert group.run(run, wallet=user).balance == Credits.parse("2")  # nothing was written: granted now


def test_a_wallet_with_group_commit_grants_every_webhook_once_under_concurrency(policy: TopUpPolicy) -> None:
    """Through the application service, as HTTP calls it: 40 top-ups paid at once, each webhook
    delivered twice from 8 threads; every top-up granted once, the second delivery a duplicate."""
    store = InMemoryStore()
    gateway = FakePaymentGateway()
    wallet = Wallet(
        uow=in_memory_unit_of_work_factory(store), gateway=gateway, policy=policy, clock=FakeClock(), group_commit=True
    )
    users = [f"u{n % 5}" for n in range(40)]
    deliveries = [gateway.succeed(wallet.top_up(user, "1.00").payment_intent_id) for user in users]
    outcomes: list[str] = []
    lock = threading.Lock()

    def deliver(batch: list[tuple[bytes, str]]) -> None:
        for payload, header in batch:
            outcome = wallet.handle_stripe_webhook(payload, header).outcome
            with lock:
                outcomes.append(outcome)

    work = deliveries + deliveries
    threads = [threading.Thread(target=deliver, args=(work[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(set(outcomes)) == sorted({PaymentEventOutcome.GRANTED, PaymentEventOutcome.DUPLICATE})
    assert outcomes.count(PaymentEventOutcome.GRANTED) == 40 and len(outcomes) == 80
    for user in set(users):
        assert wallet.wallet(user).balance.decimal == Decimal(users.count(user) * 100)
    assert wallet.verify() == []


def test_only_payment_events_that_ask_stripe_nothing_are_grouped() -> None:
    from wallet_core.payments import PaymentEvent
    from wallet_core.use_cases.apply_payment_event import groupable

    def event(kind: str) -> PaymentEvent:
        return PaymentEvent(id="evt_1", type=kind)

    assert groupable(event("payment_intent.succeeded")) and groupable(event("payment_intent.payment_failed"))
    assert not groupable(event("charge.refunded")) and not groupable(event("setup_intent.succeeded"))
