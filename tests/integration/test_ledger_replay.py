"""The same random operation sequences against the in-memory fake and the SQL adapter (SQLite, PostgreSQL)
must give the same answers: every result, every balance after every step, the same history and a clean verify.

Sequences come from seeded random.Random, so a failure names a seed that reproduces it. All sequences of one
backend share one database: each has its own user ids and idempotency keys, and runs at an earlier time than
the one before (1000 days apart, each spanning at most 90), so no expiry run can reach another sequence's
credits or holds.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, in_memory_unit_of_work_factory
from wallet_core.errors import WalletError
from wallet_core.ledger import Source
from wallet_core.money import Credits, Usd
from wallet_core.ports import UnitOfWork
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import (
    apply_payment_event,
    capture_hold,
    expire_credits,
    grant_credits,
    list_transactions,
    place_hold,
    read_wallet,
    release_hold,
    request_top_up,
    revert_transaction,
    spend_credits,
    verify_ledger,
)

SEQUENCES = 30
STEPS = 30
USERS = ("u1", "u2")
BASE = datetime(2030, 1, 1, tzinfo=UTC)
SPACING = timedelta(days=1000)
POLICY = TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal(100))

Uow = Callable[..., UnitOfWork]
Op = tuple[Any, ...]


def generate(seed: int) -> list[Op]:
    """A random sequence of operations; keys and hold references are indexes, made concrete when run."""
    rng = random.Random(seed)
    ops: list[Op] = []
    spends: list[tuple[str, int, int]] = []  # (user, minor, key number)
    holds = 0
    for n in range(STEPS):
        user = rng.choice(USERS)
        kind = rng.choices(
            ["grant", "top_up", "spend", "retry", "hold", "capture", "release", "advance", "expire", "revert"],
            weights=[4, 2, 5, 2, 3, 3, 2, 3, 2, 3],
        )[0]
        if kind == "grant":
            ops.append((
                "grant", user, rng.randint(1, 20_000), rng.choice([None, 1, 6, 24, 72]),
                rng.choice([None, None, None, 1, 12, 48]),  # effective in so many hours
                rng.choice([50, 50, 0, 90]), rng.choice(["promotional", "promotional", "paid"]),
            ))
        elif kind == "top_up":
            ops.append(("top_up", user, rng.randint(100, 300)))
        elif kind == "spend" or (kind == "retry" and not spends):
            minor = rng.randint(1, 20_000)
            spends.append((user, minor, n))
            ops.append(("spend", user, minor, n))
        elif kind == "retry":
            earlier_user, minor, key = rng.choice(spends)
            change = rng.choice(["same", "same", "amount", "user"])
            if change == "amount":
                minor += 1
            if change == "user":
                earlier_user = next(u for u in USERS if u != earlier_user)
            ops.append(("spend", earlier_user, minor, key))
        elif kind == "hold" or (kind in ("capture", "release") and not holds):
            holds += 1
            ops.append(("hold", user, rng.randint(1, 20_000), rng.choice([60, 3600, 86_400]), n))
        elif kind == "capture":
            ops.append(("capture", rng.randrange(holds), rng.choice(["all", "half", "zero", "too-much", "10"])))
        elif kind == "release":
            ops.append(("release", rng.randrange(holds)))
        elif kind == "advance":
            ops.append(("advance", rng.choice([1, 60, 3600, 6 * 3600, 86_400, 3 * 86_400])))
        elif kind == "revert":
            # the n-th transaction booked so far (made concrete when run), a new key or one used before
            ops.append(("revert", rng.randrange(1000), rng.choice(["new", "new", "new", "again"]), n,
                        rng.random() < 0.2))
        else:
            ops.append(("expire", rng.choice([1, 500])))
    return ops


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Trace:
    steps: list[tuple[Any, ...]]  # per operation: what it answered, then every user's (spendable, held)
    history: dict[str, list[tuple[Any, ...]]]  # per user: every row, read page by page
    holds: list[tuple[Any, ...]]
    violations: list[Any]


def run(ops: list[Op], uow: Uow, gateway: FakePaymentGateway, number: int) -> Trace:
    """Apply `ops` through the use cases and record everything a user could see."""
    prefix = f"s{number}-"
    clock = Clock(BASE - number * SPACING)
    users = {u: f"{prefix}{u}" for u in USERS}
    hold_ids: list[tuple[str, str | None]] = []  # (key, hold id once placed)
    booked: list[str] = []  # transaction ids, in the order they were booked (what reverts pick from)
    revert_keys: list[str] = []
    steps: list[tuple[Any, ...]] = []

    def booking(result: Any) -> Any:
        if not result.replayed and result.transaction_id is not None:
            booked.append(result.transaction_id)
        return result

    def attempt(call: Callable[[], Any], fields: Callable[[Any], tuple[Any, ...]]) -> tuple[Any, ...]:
        try:
            return ("ok", *fields(call()))
        except WalletError as error:
            return ("refused", type(error).__name__)

    for op in ops:
        name = op[0]
        if name == "grant":
            _, user, minor, hours, effective_hours, priority, category = op
            expires_at = None if hours is None else clock.now + timedelta(hours=hours)
            effective_at = None if effective_hours is None else clock.now + timedelta(hours=effective_hours)
            answer = attempt(
                lambda: booking(grant_credits(
                    user_id=users[user], credits=str(Credits(minor)), reason="promo", granted_by="admin", uow=uow,
                    expires_at=expires_at, effective_at=effective_at, priority=priority, category=category,
                    now=clock,
                )),
                lambda r: (r.credits_granted, r.balance, r.expires_at, r.replayed),
            )
        elif name == "top_up":
            _, user, cents = op
            pending = request_top_up(
                user_id=users[user], amount_usd=str(Usd(cents)), policy=POLICY, gateway=gateway, uow=uow, now=clock
            )
            event = gateway.parse_webhook(*gateway.succeed(pending.payment_intent_id))
            outcome = apply_payment_event(event, uow=uow, now=clock)
            answer = (outcome.outcome, outcome.credits_granted, pending.credits)
        elif name == "spend":
            _, user, minor, key = op
            answer = attempt(
                lambda: booking(spend_credits(
                    user_id=users[user], credits=str(Credits(minor)), idempotency_key=f"{prefix}spend-{key}",
                    reason="usage", actor="replay", uow=uow, metadata={"step": str(key)}, now=clock,
                )),
                lambda r: (r.credits_spent, r.balance, r.replayed, _sources(r.sources)),
            )
        elif name == "hold":
            _, user, minor, ttl, key = op
            hold_key = f"{prefix}hold-{key}"
            answer = attempt(
                lambda: place_hold(
                    user_id=users[user], credits=str(Credits(minor)), idempotency_key=hold_key,
                    reason="reserve", actor="replay", uow=uow, expires_in_seconds=ttl, now=clock,
                ),
                lambda r: (r.status, r.amount, r.captured, r.balance, r.expires_at, r.replayed),
            )
            placed = answer[0] == "ok"
            hold_ids.append((hold_key, _placed_hold_id(uow, users[user], hold_key) if placed else None))
        elif name in ("capture", "release"):
            hold_key, hold_id = hold_ids[op[1]]
            target = hold_id or f"hold_never_placed_{hold_key}"
            if name == "capture":
                how = op[2]
                credits = {"all": None, "half": "__half__", "zero": "0", "too-much": "__more__", "10": "10"}[how]
                credits = _capture_amount(uow, hold_id, credits)
                answer = attempt(
                    lambda: booking(
                        capture_hold(hold_id=target, credits=credits, actor="replay", uow=uow, now=clock)
                    ),
                    lambda r: (r.status, r.amount, r.captured, r.balance, r.replayed, _sources(r.sources)),
                )
            else:
                answer = attempt(
                    lambda: release_hold(hold_id=target, actor="replay", uow=uow, now=clock),
                    lambda r: (r.status, r.amount, r.captured, r.balance, r.replayed),
                )
        elif name == "revert":
            _, pick, key_mode, n, dry_run = op
            if not booked:
                answer = ("nothing booked yet",)
            else:
                key = revert_keys[pick % len(revert_keys)] if key_mode == "again" and revert_keys else f"{prefix}r{n}"
                if not dry_run:
                    revert_keys.append(key)
                answer = attempt(
                    lambda: booking(revert_transaction(
                        transaction_id=booked[pick % len(booked)], reason="support", idempotency_key=key,
                        actor="admin", uow=uow, dry_run=dry_run, now=clock,
                    )),
                    lambda r: (r.credits_reverted, r.balance, r.replayed, r.dry_run, _sources(r.sources)),
                )
        elif name == "advance":
            clock.now += timedelta(seconds=op[1])
            answer = (clock.now,)
        else:
            report = expire_credits(uow=uow, now=clock, batch=op[1])
            answer = (report.wallets_expired, report.credits_expired, report.holds_released)
        balances = []
        for u in USERS:
            view = read_wallet(user_id=users[u], uow=uow, recent=0, now=clock)
            # Lots tied in spending order come in the order of their (random) ids: compared as a set.
            lots = sorted(
                (lot.kind.value, lot.granted.minor, lot.remaining.minor, lot.held.minor, lot.priority,
                 lot.effective_at, lot.expires_at, lot.source_transaction_id in booked)
                for lot in view.lots
            )
            by_category = tuple(sorted((kind.value, amount) for kind, amount in view.by_category.items()))
            balances.append((view.balance, view.held, view.pending, by_category, tuple(lots)))
        steps.append((op, answer, tuple(balances)))

    history = {u: _history(uow, users[u]) for u in USERS}
    holds = []
    with uow() as tx:
        for key, hold_id in hold_ids:
            hold = tx.holds.get(hold_id) if hold_id else None
            # Which of several lots that expire together and were made at the same moment a hold reserved
            # is a tie broken by random lot ids, so only the total reserved is compared.
            holds.append(
                (key, None) if hold is None
                else (key, hold.status, hold.amount, hold.captured, hold.expires_at,
                      Credits(sum(a.minor for _, a in hold.allocations)))
            )
    return Trace(steps, history, holds, verify_ledger(uow=uow))


def _placed_hold_id(uow: Uow, user_id: str, reference_key: str) -> str:
    with uow() as tx:
        booked = tx.ledger.find_transaction_by_reference(f"hold:{reference_key}")
    assert booked is not None and booked.user_id == user_id and booked.hold_id
    return booked.hold_id


def _capture_amount(uow: Uow, hold_id: str | None, credits: str | None) -> str | None:
    if credits not in ("__half__", "__more__"):
        return credits
    if hold_id is None:
        return "1"
    with uow() as tx:
        hold = tx.holds.get(hold_id)
    assert hold is not None
    return str(Credits(hold.amount.minor // 2 if credits == "__half__" else hold.amount.minor + 1))


def _history(uow: Uow, user_id: str) -> list[tuple[Any, ...]]:
    """Every row, read 7 at a time. Rows with the same time may come in any order, so they are sorted."""
    rows = []
    cursor = None
    while True:
        page = list_transactions(user_id=user_id, uow=uow, limit=7, cursor=cursor)
        rows.extend(page.transactions)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len({t.id for t in rows}) == len(rows), "a row came twice"
    seen = [
        (t.created_at, t.kind, t.credits, t.held_change, t.balance_after, _no_top_up_id(t.reason), t.actor,
         {k: _no_top_up_id(v) for k, v in t.metadata.items()}, t.reverts is not None, t.reverted_by is not None,
         _sources(t.sources))
        for t in rows
    ]
    assert [s[0] for s in seen] == sorted((s[0] for s in seen), reverse=True), "history is not newest first"
    return sorted(seen, key=lambda s: (s[0], s[1].value, s[2].minor, s[3].minor, s[4].minor))


def _sources(sources: tuple[Source, ...]) -> tuple[tuple[str, Credits], ...]:
    """Which lots paid, by category and amount (lot ids are random)."""
    return tuple((s.category.value, s.credits) for s in sources)


def _no_top_up_id(text: str | None) -> str | None:
    """Top-up ids are random; the rest of the text must match."""
    return None if text is None else re.sub(r"tu_[0-9a-f]{32}", "tu_*", text)


def run_all(make_uow: Callable[[int], Uow]) -> list[Trace]:
    gateway = FakePaymentGateway()  # one for all sequences, so payment ids never repeat in one database
    return [run(generate(seed), make_uow(seed), gateway, seed) for seed in range(SEQUENCES)]


def _memory_uow(_: int) -> Uow:
    store = InMemoryStore()
    return in_memory_unit_of_work_factory(store)


@pytest.fixture(scope="module")
def memory_traces() -> list[Trace]:
    return run_all(_memory_uow)


def _first_difference(expected: Trace, actual: Trace) -> str:
    for i, (want, got) in enumerate(zip(expected.steps, actual.steps, strict=True)):
        if want != got:
            return f"step {i} {want[0]}:\n  memory: {want[1:]}\n  sql:    {got[1:]}"
    for part in ("history", "holds", "violations"):
        if getattr(expected, part) != getattr(actual, part):
            return f"{part}:\n  memory: {getattr(expected, part)}\n  sql:    {getattr(actual, part)}"
    return "no difference"


def test_the_memory_fake_is_deterministic_and_healthy(memory_traces: list[Trace]) -> None:
    again = run_all(_memory_uow)
    assert again == memory_traces
    assert all(t.violations == [] for t in memory_traces)
    # The sequences do exercise the ledger: spends, refusals, holds settled and expired, credits expired.
    answers = [(step[0][0], step[1]) for t in memory_traces for step in t.steps]
    assert any(name == "spend" and a[0] == "ok" for name, a in answers)
    assert any(name == "spend" and a == ("refused", "InsufficientCredits") for name, a in answers)
    assert any(name == "spend" and a == ("refused", "IdempotencyConflict") for name, a in answers)
    assert any(name == "spend" and a[0] == "ok" and a[3] is True for name, a in answers)
    assert any(name == "capture" and a[0] == "ok" for name, a in answers)
    assert any(name == "capture" and a == ("refused", "HoldNotOpen") for name, a in answers)
    assert any(name == "release" and a[0] == "ok" for name, a in answers)
    assert any(name == "expire" and a[0] > 0 for name, a in answers)
    assert any(name == "expire" and a[2] > 0 for name, a in answers)
    # ... and corrections: reverts booked, replayed, dry runs, refusals; grants pending, by priority, paid
    assert any(name == "revert" and a[0] == "ok" and a[3:5] == (False, False) for name, a in answers)
    assert any(name == "revert" and a[0] == "ok" and a[3] is True for name, a in answers)
    assert any(name == "revert" and a[0] == "ok" and a[4] is True for name, a in answers)
    assert any(name == "revert" and a == ("refused", "NotRevertible") for name, a in answers)
    seen = [balances for t in memory_traces for step in t.steps for balances in step[2]]
    assert any(pending.is_positive() for _, _, pending, _, _ in seen)
    assert any(lot[0] == "paid" and lot[4] != 50 for *_, lots in seen for lot in lots)


@pytest.fixture
def own_postgres_url(fresh_postgres_url: str) -> str:
    """An empty database of its own: other tests' rows must not be swept by these expiry runs."""
    return fresh_postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_uow(request: pytest.FixtureRequest) -> Iterator[Uow]:
    from adapters.sql.engine import create_wallet_engine
    from adapters.sql.migrate import upgrade
    from adapters.sql.unit_of_work import sql_unit_of_work_factory

    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "own_postgres_url")
    engine = create_wallet_engine(url)
    upgrade(engine)
    yield sql_unit_of_work_factory(engine)
    engine.dispose()


def test_the_sql_adapter_answers_exactly_like_the_memory_fake(sql_uow: Uow, memory_traces: list[Trace]) -> None:
    traces = run_all(lambda _: sql_uow)
    differing = [
        f"seed {seed}: {_first_difference(want, got)}"
        for seed, (want, got) in enumerate(zip(memory_traces, traces, strict=True))
        if want != got
    ]
    assert differing == [], "\n".join(differing[:3])
    assert traces[-1].violations == []
