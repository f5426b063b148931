"""Spending in bulk (Wallet.spend_many): every item answers what the same spend made on its own, in
request order, would have answered, and the whole batch is one commit."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import FakeClock, fund_spenders, in_memory_wallet
from wallet_core.errors import (
    DuplicateReference,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidInput,
    StorageUnavailable,
)
from wallet_core.event_types import EventType
from wallet_core.ledger import Booking, CreditTransaction
from wallet_core.money import Credits
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import BatchItemResult, BatchStatus
from wallet_core.use_cases.spend_batch import ItemError

USERS = ("ann", "bob", "cy", "debtor")
KEYS = tuple(f"k{n}" for n in range(8))


def c(text: str) -> Credits:
    return Credits.parse(text)


def new_wallet(policy: TopUpPolicy) -> tuple[Wallet, InMemoryStore]:
    store = InMemoryStore()
    gateway = FakePaymentGateway()
    wallet = in_memory_wallet(store, gateway, policy, FakeClock())
    fund_spenders(wallet, gateway, store)
    return wallet, store


def one_by_one(wallet: Wallet, items: list[dict[str, Any]]) -> list[BatchItemResult]:
    """What each item answers sent alone, in order, as a batch result."""
    out: list[BatchItemResult] = []
    for index, item in enumerate(items):
        key = item.get("idempotency_key")
        shown = key if isinstance(key, str) else None
        try:
            spent = wallet.spend(
                item.get("user_id"),  # type: ignore[arg-type]
                item.get("credits"),
                idempotency_key=key,
                reason=item.get("reason"),  # type: ignore[arg-type]
                metadata=item.get("metadata"),
            )
        except InvalidInput as exc:
            field = "idempotency_key" if exc.field == "Idempotency-Key" else exc.field
            out.append(BatchItemResult(index, shown, BatchStatus.INVALID, error=ItemError(exc.description, field)))
            continue
        except InsufficientCredits:
            balance = wallet.wallet(item["user_id"], recent=0).balance
            out.append(BatchItemResult(index, shown, BatchStatus.INSUFFICIENT_CREDITS, balance=balance))
            continue
        except IdempotencyConflict:
            out.append(BatchItemResult(index, shown, BatchStatus.CONFLICT))
            continue
        status = BatchStatus.REPLAYED if spent.replayed else BatchStatus.SPENT
        out.append(BatchItemResult(index, shown, status, spent.transaction_id, spent.balance))
    return out


def comparable(results: list[BatchItemResult], names: Mapping[str, str]) -> list[tuple[object, ...]]:
    """Each result without what cannot be the same in two ledgers (transaction ids are named by the
    item or earlier spend that made them) nor messages (a batch item's error says it per field)."""
    return [
        (
            r.index,
            r.idempotency_key,
            r.status,
            None if r.transaction_id is None else names[r.transaction_id],
            r.balance,
            None if r.error is None else r.error.field,
        )
        for r in results
    ]


def tx_names(results: list[BatchItemResult], store: InMemoryStore) -> dict[str, str]:
    names = {r.transaction_id: f"item {r.index}" for r in results if r.status is BatchStatus.SPENT and r.transaction_id}
    for ref, tx_id in store.state.by_reference.items():
        names.setdefault(tx_id, ref)
    return names


def spendables(wallet: Wallet) -> dict[str, Credits]:
    return {user: wallet.wallet(user, recent=0).balance for user in USERS}


AMOUNTS = st.sampled_from(["1", "2.50", "7", "15", "19.99", "40", "100", "0", "-1", "1.001", "abc"]) | st.sampled_from(
    [3, Decimal("0.5")]
)
ITEM = st.fixed_dictionaries(
    {
        "user_id": st.sampled_from([*USERS, "bad user"]),
        "credits": AMOUNTS,
        "reason": st.sampled_from(["usage", "export", ""]),
        "idempotency_key": st.sampled_from([*KEYS, "bad key"]) | st.none(),
    },
    optional={"metadata": st.sampled_from([{"job": "1"}, {"job": "2"}, {"": "x"}, None])},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.lists(ITEM, max_size=6),
    batches=st.lists(st.lists(ITEM, min_size=1, max_size=12), min_size=1, max_size=3),
)
def test_a_batch_answers_and_leaves_what_the_same_spends_one_by_one_would(
    policy: TopUpPolicy, before: list[dict[str, Any]], batches: list[list[dict[str, Any]]]
) -> None:
    batched, batched_store = new_wallet(policy)
    single, single_store = new_wallet(policy)
    one_by_one(batched, before)  # keys committed before the batches (replays across requests)
    one_by_one(single, before)

    for items in batches:
        commits = batched_store.commits
        got = batched.spend_many(items)
        want = one_by_one(single, items)

        assert comparable(got, tx_names(got, batched_store)) == comparable(want, tx_names(want, single_store))
        assert spendables(batched) == spendables(single)
        spent = any(r.status is BatchStatus.SPENT for r in got)
        assert batched_store.commits - commits == (1 if spent else 0)
    assert batched.verify() == []


@pytest.fixture
def funded(policy: TopUpPolicy) -> tuple[Wallet, InMemoryStore]:
    return new_wallet(policy)


def test_each_item_succeeds_or_fails_on_its_own_in_one_commit(funded: tuple[Wallet, InMemoryStore]) -> None:
    wallet, store = funded
    commits = store.commits
    results = wallet.spend_many([
        {"user_id": "ann", "credits": "30", "reason": "usage", "idempotency_key": "a1", "metadata": {"job": "7"}},
        {"user_id": "bob", "credits": "16", "reason": "usage", "idempotency_key": "b1"},  # has 15
        {"user_id": "ann", "credits": "30", "reason": "usage", "idempotency_key": "a1", "metadata": {"job": "7"}},
        {"user_id": "ann", "credits": "31", "reason": "usage", "idempotency_key": "a1"},
        {"user_id": "debtor", "credits": "1", "reason": "usage", "idempotency_key": "d1"},
        {"user_id": "ann", "credits": "1.001", "reason": "usage", "idempotency_key": "a2"},
        {"user_id": "bob", "credits": "15", "reason": "usage", "idempotency_key": "b2"},
    ])

    assert [r.status for r in results] == [
        BatchStatus.SPENT,
        BatchStatus.INSUFFICIENT_CREDITS,
        BatchStatus.REPLAYED,
        BatchStatus.CONFLICT,
        BatchStatus.INSUFFICIENT_CREDITS,
        BatchStatus.INVALID,
        BatchStatus.SPENT,
    ]
    assert store.commits == commits + 1
    assert results[0].balance == c("90") and results[2].transaction_id == results[0].transaction_id
    assert results[1].balance == c("15")  # what bob could spend when his item came
    assert results[5].error is not None and results[5].error.field == "credits"
    assert "decimal places" in results[5].error.message
    assert results[3].error is not None and "credits" in results[3].error.message
    assert results[6].balance == c("0")
    assert [r.idempotency_key for r in results] == ["a1", "b1", "a1", "a1", "d1", "a2", "b2"]
    # Promotional first, as a single spend: ann's 20 promotional went before her paid credits.
    assert wallet.wallet("ann").by_category == {"paid": c("90"), "promotional": c("0")}


def test_every_spent_item_tells_the_app_as_a_single_spend_does(funded: tuple[Wallet, InMemoryStore]) -> None:
    wallet, store = funded
    told = len(store.state.outbox)
    wallet.set_low_balance_alert("bob", "10")
    results = wallet.spend_many([
        {"user_id": "bob", "credits": "3", "reason": "usage", "idempotency_key": "b1"},
        {"user_id": "bob", "credits": "3", "reason": "usage", "idempotency_key": "b2"},
        {"user_id": "bob", "credits": "9", "reason": "usage", "idempotency_key": "b3"},
    ])

    assert all(r.status is BatchStatus.SPENT for r in results)
    events = store.state.outbox[told:]
    spent = [e for e in events if e.type is EventType.CREDITS_SPENT]
    assert [e.data["transaction_id"] for e in spent] == [r.transaction_id for r in results]
    assert [e.data["balance"] for e in spent] == ["12.00", "9.00", "0.00"]
    crossings = [e.type for e in events if e.type is not EventType.CREDITS_SPENT]
    assert crossings == [EventType.BALANCE_LOW, EventType.DEPLETED]


def test_an_item_that_is_not_well_formed_names_its_field_and_the_rest_go_on(
    funded: tuple[Wallet, InMemoryStore],
) -> None:
    wallet, _ = funded
    results = wallet.spend_many([
        cast(Any, "not an object"),
        {"user_id": "ann", "credits": "1", "reason": "usage"},
        {"user_id": "ann", "credits": "1", "reason": "usage", "idempotency_key": "a b"},
        {"user_id": "ann", "credits": "1", "reason": "usage", "idempotency_key": "a1", "colour": "red"},
        {"user_id": "ann", "credits": "1", "reason": "usage", "idempotency_key": "a2", "metadata": ["x"]},
        {"user_id": "", "credits": "1", "reason": "usage", "idempotency_key": "a3"},
        {"user_id": "ann", "credits": "1", "reason": "  ", "idempotency_key": "a4"},
        {"user_id": "ann", "credits": "1", "reason": "usage", "idempotency_key": "a5"},
    ])

    fields = [r.error.field if r.error else None for r in results]
    assert fields == ["item", "idempotency_key", "idempotency_key", "item", "metadata", "user_id", "reason", None]
    assert [r.status for r in results[:-1]] == [BatchStatus.INVALID] * 7
    assert results[-1].status is BatchStatus.SPENT and results[-1].balance == c("119")


@pytest.mark.parametrize("count", [0, 1001])
def test_no_items_or_too_many_is_refused_whole(funded: tuple[Wallet, InMemoryStore], count: int) -> None:
    wallet, store = funded
    commits = store.commits
    items = [{"user_id": "ann", "credits": "0.01", "reason": "usage", "idempotency_key": f"k{n}"} for n in range(count)]
    with pytest.raises(InvalidInput) as refused:
        wallet.spend_many(items)
    assert refused.value.field == "spends"
    assert store.commits == commits


def test_a_key_taken_by_a_concurrent_request_mid_batch_reruns_the_batch_which_then_replays_it(
    funded: tuple[Wallet, InMemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other request commits `a1` after the batch looked its keys up: record() refuses it, the whole
    unit of work rolls back, and the second run finds `a1` and answers it as a replay."""
    wallet, store = funded
    from adapters import memory_ledger

    real_record = memory_ledger.InMemoryLedgerRepository.record
    raced: list[str] = []

    def record(self: memory_ledger.InMemoryLedgerRepository, booking: Booking) -> CreditTransaction:
        if booking.reference_id == "spend:a1" and not raced:
            raced.append("yes")
            # What the concurrent single spend committed meanwhile, as the store now holds it.
            other = Wallet(uow=memory_ledger.in_memory_unit_of_work_factory(store), gateway=FakePaymentGateway(),
                           policy=wallet.policy)
            store.lock.release()  # let it commit while this unit of work waits
            try:
                _commit_elsewhere(other)
            finally:
                store.lock.acquire()
            raise DuplicateReference("reference spend:a1 is recorded already")
        return real_record(self, booking)

    monkeypatch.setattr(memory_ledger.InMemoryLedgerRepository, "record", record)
    before = wallet.wallet("ann", recent=0).balance
    results = wallet.spend_many([
        {"user_id": "ann", "credits": "5", "reason": "usage", "idempotency_key": "a0"},
        {"user_id": "ann", "credits": "10", "reason": "usage", "idempotency_key": "a1"},
    ])

    assert [r.status for r in results] == [BatchStatus.SPENT, BatchStatus.REPLAYED]
    assert wallet.wallet("ann", recent=0).balance == before - c("15")  # a0 once, a1 once (by the other)
    assert wallet.verify() == []


def _commit_elsewhere(other: Wallet) -> None:
    import threading

    done = threading.Event()

    def run() -> None:
        other.spend("ann", "10", idempotency_key="a1", reason="usage")
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert done.is_set()


def test_a_batch_that_keeps_losing_its_keys_writes_nothing_and_says_retry(
    funded: tuple[Wallet, InMemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet, store = funded
    from adapters import memory_ledger

    def record(self: memory_ledger.InMemoryLedgerRepository, booking: Booking) -> CreditTransaction:
        raise DuplicateReference("taken")

    monkeypatch.setattr(memory_ledger.InMemoryLedgerRepository, "record", record)
    commits = store.commits
    with pytest.raises(StorageUnavailable):
        wallet.spend_many([{"user_id": "ann", "credits": "5", "reason": "usage", "idempotency_key": "a0"}])
    assert store.commits == commits

