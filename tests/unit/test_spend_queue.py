"""Group commit (use_cases.spend_queue): concurrent single spends of a process share one unit of work
and one commit, and each caller gets exactly what the same spends made one after another answer.

Groups are formed deterministically: a gate holds the first spend's unit of work open (it leads a group
of one), the other spends queue behind it, and when the gate opens they run as one group."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork, in_memory_unit_of_work_factory
from tests.unit.helpers import FakeClock, fund_spenders, in_memory_wallet
from wallet_core.errors import InvalidInput, StorageUnavailable, WalletError
from wallet_core.event_types import EventType
from wallet_core.money import Credits
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import SpendResult
from wallet_core.use_cases.spend_queue import SpendQueue

Spend = dict[str, Any]


class _FailingCommit(InMemoryUnitOfWork):
    def commit(self) -> None:
        raise StorageUnavailable("the database is unavailable: OperationalError")


@dataclass
class GatedUow:
    """The in-memory unit of work factory, except that the first unit of work asked for while `hold`
    is set waits for `gate` (so spends queue behind it), and that units of work fail to commit while
    `failing` is set."""

    store: InMemoryStore
    gate: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    hold: bool = True
    failing: bool = False

    def __call__(self, *, read_only: bool = False) -> InMemoryUnitOfWork:
        if self.hold and not read_only:
            self.hold = False
            self.held.set()
            assert self.gate.wait(10), "the test never opened the gate"
        if self.failing and not read_only:
            return _FailingCommit(self.store)
        return in_memory_unit_of_work_factory(self.store)(read_only=read_only)


def funded_store(policy: TopUpPolicy) -> InMemoryStore:
    """ann: 100 paid + 20 promotional; bob: 15 promotional; debtor: owes 80 (spent 80 of a 100-credit
    top-up that was then refunded in full)."""
    store = InMemoryStore()
    gateway = FakePaymentGateway()
    wallet = in_memory_wallet(store, gateway, policy, FakeClock())
    fund_spenders(wallet, gateway, store)
    return store


def spend(target: SpendQueue | Wallet, item: Spend) -> SpendResult:
    if isinstance(target, Wallet):
        return target.spend(actor="svc", **item)
    return target.spend(actor="svc", **item)


Outcome = SpendResult | WalletError


def grouped(queue: SpendQueue, uow: GatedUow, first: Spend, rest: list[Spend]) -> tuple[Outcome, list[Outcome]]:
    """`first` alone (it holds the gate), then `rest` queued behind it in this order and booked as one
    group; each one's result or error."""
    outcomes: dict[int, Outcome] = {}

    def run(index: int, item: Spend) -> None:
        try:
            outcomes[index] = spend(queue, item)
        except WalletError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(-1, first))]
    threads[0].start()
    assert uow.held.wait(5)
    for index, item in enumerate(rest):  # one at a time, so the queue holds them in this order
        threads.append(threading.Thread(target=run, args=(index, item)))
        threads[-1].start()
        wait_until(lambda: queue.waiting == len(threads) - 1)
    uow.gate.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "a spend never got its answer"
    return outcomes[-1], [outcomes[index] for index in range(len(rest))]


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def one_after_another(wallet: Wallet, items: list[Spend]) -> list[Outcome]:
    out: list[Outcome] = []
    for item in items:
        try:
            out.append(spend(wallet, item))
        except WalletError as exc:
            out.append(exc)
    return out


def comparable(outcomes: list[Outcome], store: InMemoryStore) -> list[tuple[object, ...]]:
    """Each outcome with its transaction named by the key that booked it, and the lots that paid by their
    category (ids differ between ledgers)."""
    names = {tx_id: ref for ref, tx_id in store.state.by_reference.items()}
    return [
        (type(o).__name__, o.description)
        if isinstance(o, WalletError)
        else (
            o.user_id, o.credits_spent, o.balance, names[o.transaction_id], o.replayed,
            [(s.category, s.credits) for s in o.sources],
        )
        for o in outcomes
    ]


def k(n: int, **kw: object) -> Spend:
    return {"user_id": "ann", "credits": "1", "reason": "usage", "idempotency_key": f"k{n}", **kw}


GROUP: list[Spend] = [
    k(1, credits="30", metadata={"job": "7"}),  # 20 promotional + 10 paid
    {"user_id": "bob", "credits": "16", "reason": "usage", "idempotency_key": "b1"},  # has 15
    k(1, credits="30", metadata={"job": "7"}),  # the same request again: replayed
    k(1, credits="31"),  # the same key for another request: a conflict
    {"user_id": "debtor", "credits": "1", "reason": "usage", "idempotency_key": "d1"},  # in debt
    {"user_id": "bob", "credits": "15", "reason": "usage", "idempotency_key": "b2"},
    k(0),  # committed before the group (the gate's spend): replayed
    k(2, credits="95"),  # 89 left: short
    k(3, credits="89"),  # all that is left
    {"user_id": "bob", "credits": "0.01", "reason": "usage", "idempotency_key": "b3"},  # nothing left
]


def test_a_group_answers_and_leaves_what_the_same_spends_one_after_another_would(policy: TopUpPolicy) -> None:
    store = funded_store(policy)
    uow = GatedUow(store)
    sizes: list[int] = []
    queue = SpendQueue(uow, now=FakeClock(), groups=1, on_group=sizes.append)
    commits, told = store.commits, len(store.state.outbox)
    first, got = grouped(queue, uow, k(0), GROUP)

    single_store = funded_store(policy)
    single = in_memory_wallet(single_store, FakePaymentGateway(), policy, FakeClock())
    want = one_after_another(single, [k(0), *GROUP])

    assert sizes == [1, len(GROUP)]
    assert store.commits == commits + 2  # the gate's spend, then the whole group at once
    assert comparable([first, *got], store) == comparable(want, single_store)
    # The answers a caller sees, spelled out for the first few.
    assert isinstance(got[0], SpendResult) and got[0].balance == Credits.parse("89")
    assert [s.category.value for s in got[0].sources] == ["promotional", "paid"]
    assert isinstance(got[2], SpendResult) and got[2].replayed and got[2].transaction_id == got[0].transaction_id
    assert type(got[1]).__name__ == "InsufficientCredits" and type(got[3]).__name__ == "IdempotencyConflict"
    assert "owes" in str(got[4])
    # Every spend booked told the app, as a single spend does; the ledger holds up.
    spent = [e for e in store.state.outbox[told:] if e.type == EventType.CREDITS_SPENT]
    assert sorted((e.user_id, e.data["credits"]) for e in spent) == [
        ("ann", "-1.00"), ("ann", "-30.00"), ("ann", "-89.00"), ("bob", "-15.00")  # k0, then k1, k3 and b2
    ]
    assert in_memory_wallet(store, FakePaymentGateway(), policy, FakeClock()).verify() == []
    assert queue.waiting == 0


def test_when_the_group_fails_every_spend_in_it_gets_the_error_and_none_is_written(policy: TopUpPolicy) -> None:
    store = funded_store(policy)
    uow = GatedUow(store)
    queue = SpendQueue(uow, now=FakeClock(), groups=1)
    uow.failing = True  # the gate's spend and the group both fail to commit
    before = store.state.copy()
    first, got = grouped(queue, uow, k(0), [k(1), k(2), {**k(3), "user_id": "bob"}])

    assert all(isinstance(o, StorageUnavailable) for o in [first, *got])
    assert store.state.by_reference == before.by_reference and store.state.outbox == before.outbox
    # The queue goes on: the next spend leads a group of its own and is booked.
    uow.failing = False
    assert spend(queue, k(1)).balance == Credits.parse("119")


def test_a_spend_waits_for_its_group_at_most_the_timeout_and_then_is_not_written(policy: TopUpPolicy) -> None:
    store = funded_store(policy)
    uow = GatedUow(store)
    queue = SpendQueue(uow, now=FakeClock(), groups=1, timeout=0.2)
    leader: list[Outcome] = []
    lead = threading.Thread(target=lambda: leader.append(spend(queue, k(0))))
    lead.start()
    assert uow.held.wait(5)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="waited too long"):
        spend(queue, k(1))  # stuck behind a group that does not end
    assert 0.2 <= time.monotonic() - started < 2
    assert queue.waiting == 0
    uow.gate.set()
    lead.join(5)
    assert isinstance(leader[0], SpendResult)
    assert "spend:k1" not in store.state.by_reference
    assert spend(queue, k(1)).replayed is False  # not written before: booked now


def test_bad_input_is_refused_in_the_callers_thread_before_queueing(policy: TopUpPolicy) -> None:
    store = funded_store(policy)
    uow = GatedUow(store)
    queue = SpendQueue(uow, now=FakeClock(), groups=1)
    lead = threading.Thread(target=spend, args=(queue, k(0)))
    lead.start()
    assert uow.held.wait(5)
    try:
        with pytest.raises(InvalidInput) as refused:
            spend(queue, k(1, credits="1.001"))
        assert refused.value.field == "credits"
        with pytest.raises(InvalidInput) as no_key:
            spend(queue, {**k(2), "idempotency_key": None})
        assert no_key.value.field == "Idempotency-Key"
        assert queue.waiting == 0
    finally:
        uow.gate.set()
        lead.join(5)


def test_many_threads_spending_at_once_never_overdraw_and_answer_every_spend(policy: TopUpPolicy) -> None:
    store = funded_store(policy)  # ann can spend 120
    sizes: list[int] = []
    queue = SpendQueue(in_memory_unit_of_work_factory(store), now=FakeClock(), groups=2, cap=8, on_group=sizes.append)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        try:
            result: Outcome = spend(queue, k(n % 150, credits="1"))  # 150 keys, 200 spends: 50 repeats
        except WalletError as exc:
            result = exc
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(outcomes) == 200
    booked = {o.transaction_id for o in outcomes if isinstance(o, SpendResult)}
    assert len(booked) == 120  # exactly what ann could afford, each key once
    assert in_memory_wallet(store, FakePaymentGateway(), policy, FakeClock()).wallet("ann").balance == Credits(0)
    assert max(sizes) <= 8 and sum(sizes) == 200


@dataclass
class TwoGates:
    """Units of work that wait: the first for `gates[0]`, the second for `gates[1]`."""

    store: InMemoryStore
    gates: tuple[threading.Event, ...] = field(default_factory=lambda: (threading.Event(), threading.Event()))
    held: tuple[threading.Event, ...] = field(default_factory=lambda: (threading.Event(), threading.Event()))
    calls: int = 0

    def __call__(self, *, read_only: bool = False) -> InMemoryUnitOfWork:
        if not read_only and self.calls < 2:
            n, self.calls = self.calls, self.calls + 1
            self.held[n].set()
            assert self.gates[n].wait(10), "the test never opened the gate"
        return in_memory_unit_of_work_factory(self.store)(read_only=read_only)


def test_a_spend_whose_group_never_ends_is_answered_after_twice_the_timeout(policy: TopUpPolicy) -> None:
    store = funded_store(policy)
    uow = TwoGates(store)
    queue = SpendQueue(uow, now=FakeClock(), groups=1, timeout=0.2)
    answers: dict[str, Outcome] = {}

    def run(n: int) -> None:
        try:
            answers[f"k{n}"] = spend(queue, k(n))
        except WalletError as exc:
            answers[f"k{n}"] = exc

    threads = [threading.Thread(target=run, args=(0,))]
    threads[0].start()
    assert uow.held[0].wait(5)
    for n in (1, 2):
        threads.append(threading.Thread(target=run, args=(n,)))
        threads[-1].start()
        wait_until(lambda: queue.waiting == len(threads) - 1)
    started = time.monotonic()
    uow.gates[0].set()  # k0 is booked; k1 leads a group of k1 and k2, which hangs in the database
    assert uow.held[1].wait(5)
    threads[2].join(5)
    assert 0.2 <= time.monotonic() - started < 2
    assert isinstance(answers["k2"], StorageUnavailable) and "same Idempotency-Key" in str(answers["k2"])
    uow.gates[1].set()  # the database answers at last: the group commits, k2 with it
    threads[1].join(5)
    assert isinstance(answers["k1"], SpendResult)
    retried = spend(queue, k(2))
    assert retried.replayed  # as the error said: the retry answers the spend that was made
