"""Reading a wallet: the balance and the most recent movements, newest first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork
from wallet_core.errors import InvalidInput
from wallet_core.ledger import TransactionKind
from wallet_core.money import Credits
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import apply_payment_event, grant_credits, read_wallet, request_top_up
from wallet_core.use_cases.read_wallet import RECENT

UowFactory = Callable[..., InMemoryUnitOfWork]


@pytest.fixture
def grant(uow: UowFactory, clock: Callable[[], datetime]) -> Callable[..., None]:
    def call(credits: str, user_id: str = "alice", reason: str = "test") -> None:
        grant_credits(user_id=user_id, credits=credits, reason=reason, granted_by="admin", uow=uow, now=clock)

    return call


def test_a_new_user_has_zero_balance_and_no_transactions(uow: UowFactory, store: InMemoryStore) -> None:
    view = read_wallet(user_id="newcomer", uow=uow)
    assert view.user_id == "newcomer"
    assert view.balance == Credits.zero()
    assert view.held == Credits.zero()
    assert str(view.balance) == "0.00"
    assert view.transactions == []
    assert store.commits == 0  # reading creates nothing
    assert store.state.available == {}  # not even an empty wallet


def test_transactions_are_newest_first_with_the_balance_after_each(
    grant: Callable[..., None], uow: UowFactory
) -> None:
    grant("10", reason="first")
    grant("2.50", reason="second")
    grant("0.25", reason="third")

    view = read_wallet(user_id="alice", uow=uow)

    assert view.balance == Credits.parse("12.75")
    assert [t.reason for t in view.transactions] == ["third", "second", "first"]
    assert [str(t.credits) for t in view.transactions] == ["0.25", "2.50", "10.00"]
    assert [str(t.balance_after) for t in view.transactions] == ["12.75", "12.50", "10.00"]
    assert view.transactions[0].created_at > view.transactions[1].created_at > view.transactions[2].created_at
    assert view.transactions[0].balance_after == view.balance


def test_only_the_users_own_transactions_are_shown(grant: Callable[..., None], uow: UowFactory) -> None:
    grant("10", user_id="alice")
    grant("99", user_id="bob")
    grant("1", user_id="alice")

    alice = read_wallet(user_id="alice", uow=uow)
    assert alice.balance == Credits.parse("11")
    assert {t.user_id for t in alice.transactions} == {"alice"}
    assert len(alice.transactions) == 2


def test_only_the_most_recent_transactions_are_listed(grant: Callable[..., None], uow: UowFactory) -> None:
    for i in range(1, RECENT + 6):
        grant("1", reason=f"grant {i}")

    view = read_wallet(user_id="alice", uow=uow)

    assert len(view.transactions) == RECENT
    assert view.transactions[0].reason == f"grant {RECENT + 5}"
    assert view.transactions[-1].reason == "grant 6"
    assert view.balance == Credits.parse(str(RECENT + 5))  # the balance counts every transaction


def test_the_recent_count_can_be_chosen(grant: Callable[..., None], uow: UowFactory) -> None:
    for i in range(1, 6):
        grant("1", reason=f"grant {i}")
    view = read_wallet(user_id="alice", uow=uow, recent=2)
    assert [t.reason for t in view.transactions] == ["grant 5", "grant 4"]
    assert view.balance == Credits.parse("5")


def test_paid_top_ups_and_grants_both_appear(
    grant: Callable[..., None], uow: UowFactory, policy: TopUpPolicy, gateway: FakePaymentGateway
) -> None:
    grant("5")
    pending = request_top_up(user_id="alice", amount_usd="3.00", policy=policy, gateway=gateway, uow=uow)
    event = gateway.parse_webhook(*gateway.succeed(pending.payment_intent_id))
    apply_payment_event(event, uow=uow)

    view = read_wallet(user_id="alice", uow=uow)
    assert view.balance == Credits.parse("305")
    assert [t.kind for t in view.transactions] == [TransactionKind.TOP_UP, TransactionKind.GRANT]
    assert view.transactions[0].balance_after == Credits.parse("305")


def test_an_unpaid_top_up_does_not_change_the_wallet(
    uow: UowFactory, policy: TopUpPolicy, gateway: FakePaymentGateway
) -> None:
    request_top_up(user_id="alice", amount_usd="3.00", policy=policy, gateway=gateway, uow=uow)
    view = read_wallet(user_id="alice", uow=uow)
    assert view.balance == Credits.zero()
    assert view.transactions == []


@pytest.mark.parametrize("user_id", ["", "has space", "x" * 129, None])
def test_bad_user_id_is_refused(uow: UowFactory, user_id: object) -> None:
    with pytest.raises(InvalidInput) as err:
        read_wallet(user_id=user_id, uow=uow)  # type: ignore[arg-type]
    assert err.value.field == "user_id"
