"""Group commit for grants, holds, captures and webhook grants on a real database (use_cases.write_group
over the SQL unit of work): many at once over overlapping wallets, with repeated keys. Each key is
booked once (its twin replays it), no wallet goes below zero, groups larger than one formed (so commits
were shared), no two groups deadlocked (nothing was abandoned but the replays), and the ledger checks
out."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from adapters.fake_gateway import FakePaymentGateway
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.tables import credit_transactions
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.errors import InsufficientCredits, WalletError
from wallet_core.money import Credits, Usd
from wallet_core.payment_outcomes import PaymentEventOutcome
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import GrantResult, HoldResult, grant_credits, verify_ledger
from wallet_core.use_cases.holds import capture_hold, hold_wallet, place_hold
from wallet_core.use_cases.write_group import WriteGroup

USERS = 6
FUNDS = Decimal(10)  # before: each wallet holds 10
GRANT = Decimal(5)  # one grant of 5 per wallet, asked twice with one key
HOLDS = 6  # holds of 3 per wallet: at most 5 fit (15), at most 3 when the grant comes after them
HOLD = Decimal(3)
POLICY = TopUpPolicy(Usd(100), Usd(50_000), Decimal(100))


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def engine(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Engine]:
    url = request.getfixturevalue("fresh_postgres_url") if request.param == "postgresql" else sqlite_url
    made = create_wallet_engine(url, pool_size=8, max_overflow=8)
    upgrade(made)
    try:
        yield made
    finally:
        made.dispose()


def at_once(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Every call in its own thread, started together; each one's result or WalletError."""
    start = threading.Barrier(len(calls))
    outcomes: dict[int, Any] = {}

    def run(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = calls[index]()
        except WalletError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a write never got its answer"
    return [outcomes[n] for n in range(len(calls))]


def spendable_and_held(uow: UnitOfWorkFactory, user: str) -> tuple[Decimal, Decimal]:
    with uow(read_only=True) as tx:
        spendable, held = tx.ledger.balances(user, datetime.now(UTC))
    return spendable.decimal, held.decimal


def test_grants_holds_and_captures_at_once_book_each_key_once_and_never_overdraw(
    engine: Engine, request: pytest.FixtureRequest
) -> None:
    uow = sql_unit_of_work_factory(engine)
    run_id = f"{request.node.callspec.id}-{datetime.now(UTC).timestamp():.0f}"
    users = [f"wg-{run_id}-{n}" for n in range(USERS)]
    for user in users:
        grant_credits(user_id=user, credits=str(FUNDS), reason="funds", granted_by="test", uow=uow)
    sizes: list[int] = []
    group = WriteGroup(uow, on_group=sizes.append)

    def grant(user: str) -> Callable[[], GrantResult]:
        return lambda: group.run(
            lambda u: grant_credits(user_id=user, credits=str(GRANT), reason="promo", granted_by="test", uow=u,
                                    idempotency_key=f"grant-{user}"),
            wallet=user,
        )

    def hold(user: str, n: int) -> Callable[[], HoldResult]:
        return lambda: group.run(
            lambda u: place_hold(user_id=user, credits=str(HOLD), idempotency_key=f"hold-{user}-{n}", reason="job",
                                 actor="test", uow=u),
            wallet=user,
        )

    calls: list[Callable[[], Any]] = [grant(user) for user in users] * 2
    calls += [hold(user, n) for user in users for n in range(HOLDS)]
    random.Random(7).shuffle(calls)
    outcomes = at_once(calls)

    assert not [o for o in outcomes if isinstance(o, WalletError) and not isinstance(o, InsufficientCredits)]
    grants = [o for o in outcomes if isinstance(o, GrantResult)]
    assert len(grants) == 2 * USERS and sum(g.replayed for g in grants) == USERS
    for user in users:
        mine = [g.transaction_id for g in grants if g.user_id == user]
        assert len(set(mine)) == 1  # the twin replayed the one grant
    holds = [o for o in outcomes if isinstance(o, HoldResult)]
    for user in users:
        placed = [h for h in holds if h.user_id == user]
        spendable, held = spendable_and_held(uow, user)
        assert held == HOLD * len(placed) and spendable == FUNDS + GRANT - held >= 0
        assert 3 <= len(placed) <= 5
    assert max(sizes) > 1, "the writes never shared a commit"
    assert group.abandoned <= USERS  # only replays leave a group: no deadlock, no refusal after a lock
    with engine.connect() as conn:
        keys = conn.execute(
            select(func.count(), func.count(func.distinct(credit_transactions.c.reference_id))).where(
                credit_transactions.c.reference_id.like("grant:grant-wg-%"),
                credit_transactions.c.user_id.in_(users),
            )
        ).one()
    assert tuple(keys) == (USERS, USERS)

    # Every hold captured (3 credits) twice at once: once each, the twin replays it.
    def capture(hold_id: str) -> Callable[[], HoldResult]:
        return lambda: group.run(
            lambda u: capture_hold(hold_id=hold_id, actor="test", uow=u), wallet=hold_wallet(hold_id)
        )

    captures = at_once([capture(h.hold_id) for h in holds] * 2)
    assert all(isinstance(c, HoldResult) for c in captures), [c for c in captures if not isinstance(c, HoldResult)]
    assert sum(c.replayed for c in captures) == len(holds)
    for user in users:
        placed = [h for h in holds if h.user_id == user]
        assert spendable_and_held(uow, user) == (FUNDS + GRANT - HOLD * len(placed), Decimal(0))
    assert verify_ledger(uow=uow) == []


def test_webhook_grants_at_once_through_the_service_grant_each_payment_once(engine: Engine) -> None:
    gateway = FakePaymentGateway()
    wallet = Wallet(uow=sql_unit_of_work_factory(engine), gateway=gateway, policy=POLICY, group_commit=True)
    users = [f"wh-{datetime.now(UTC).timestamp():.0f}-{n % 7}" for n in range(42)]
    deliveries = [gateway.succeed(wallet.top_up(user, "1.00").payment_intent_id) for user in users]
    def deliver(payload: bytes, header: str) -> Callable[[], PaymentEventOutcome]:
        return lambda: wallet.handle_stripe_webhook(payload, header).outcome

    outcomes = at_once([deliver(*d) for d in deliveries * 2])
    assert outcomes.count(PaymentEventOutcome.GRANTED) == len(users)
    assert set(outcomes) <= {PaymentEventOutcome.GRANTED, PaymentEventOutcome.DUPLICATE,
                             PaymentEventOutcome.ALREADY_GRANTED}
    for user in set(users):
        assert wallet.wallet(user).balance == Credits(100 * 100 * users.count(user))
    assert wallet.verify() == []
