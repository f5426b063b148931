"""Group commit for the other writes: concurrent grants, holds, captures, releases and webhook grants of
one process share a database transaction and one commit.

Each write is a use case as it is (grant_credits, place_hold, capture_hold, release_hold,
apply_payment_event) that takes a unit of work factory. Queued (use_cases.commit_queue), a group of
them runs in ONE unit of work: each use case gets a factory whose units of work are that one
transaction, where commit() only says "this write is done" (the real COMMIT comes once, after the
last). So write k sees writes 1..k-1 as committed before it, and what each caller gets is what the
use case would have answered had the group's writes been made one after another: the same code
decides, on the same rows. A group of one is the use case on its own unit of work.

The writes run in the order of the wallet each locks (`wallet`: known up front, or read in the group's
transaction, e.g. a hold's user), then arrival order: every group takes its wallet locks in ascending
user id order, as batches and spend groups do, so two groups never wait for each other in a circle.

A write that could not be undone alone abandons the group's transaction, since one transaction has no
partial rollback: a write that raised after it began using the unit of work (not enough credits, no
such hold), one that left it without commit() (a replay, an event already applied) or called
rollback(). The transaction is rolled back (nothing of the group is written) and the others run as a
group again without it; it runs on its own unit of work after them (its answer is the one it gets
then: a replay of a key booked earlier in the group answers `replayed`). After ABANDONS abandons in
one group, the writes left run one by one, in arrival order. A write that raises before it uses the
unit of work (bad input) wrote nothing: that error is its answer and the group goes on. When the
group's COMMIT fails, every write of it gets the error (as a single write would: retry with the same
key). Either way each request's writes are in exactly one commit, and every answer is the one its use
case gives when the writes are made one after another in the order they ran.

Only writes that call nothing outside the database belong here (no Stripe call inside the group's
transaction): apply_payment_event for payment_intent.succeeded / payment_failed / canceled, not for
refunds or cards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from wallet_core.money import Credits
from wallet_core.ports import (
    AlertSettings,
    AutoTopUpRules,
    HoldRepository,
    LedgerRepository,
    Outbox,
    PaymentEventLog,
    SavedCards,
    TopUpRepository,
    UnitOfWork,
    UnitOfWorkFactory,
    WebhookDeliveries,
    WebhookEndpoints,
)
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases.commit_queue import DEFAULT_CAP, DEFAULT_GROUPS, DEFAULT_TIMEOUT, CommitQueue, Ticket

ABANDONS = 2  # abandoned transactions in one group before the rest run one by one

R = TypeVar("R")
WalletOf = str | Callable[[UnitOfWork], str | None] | None


@dataclass(frozen=True)
class Write(Generic[R]):
    """A use case bound to its arguments but its unit of work factory, and the wallet it locks."""

    run: Callable[[UnitOfWorkFactory], R]
    wallet: WalletOf = None  # a user id, or read in the group's transaction; None sorts first


class WriteGroup(CommitQueue[Write[Any], Any]):
    """Wallet.grant, hold, capture, release and the webhook's payment events with group commit (see the
    module docstring). Thread-safe; one per process."""

    noun = "request"

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        cap: int = DEFAULT_CAP,
        groups: int = DEFAULT_GROUPS,
        timeout: float = DEFAULT_TIMEOUT,
        on_group: Callable[[int], object] | None = None,
    ) -> None:
        super().__init__(cap=cap, groups=groups, timeout=timeout, on_group=on_group)
        self._uow = uow
        self.abandoned = 0  # group transactions abandoned (tests, measurements)

    def run(self, run: Callable[[UnitOfWorkFactory], R], *, wallet: WalletOf = None) -> R:
        """`run(uow)`'s answer, its writes committed with those of the writes waiting with it."""
        return cast(R, self.submit(Write(run, wallet)))

    def _book(self, group: list[Ticket[Write[Any], Any]]) -> None:
        offenders: list[Ticket[Write[Any], Any]] = []
        left = list(group)
        while len(left) > 1 and len(offenders) < ABANDONS:
            offender = self._together(left)
            if offender is None:
                break
            self.abandoned += 1
            offenders.append(offender)
            left = [ticket for ticket in left if ticket is not offender and not ticket.answered]
        for ticket in group:  # whatever no group answered (the offenders, or all left): alone, in arrival order
            if not ticket.answered:
                _alone(ticket, self._uow)

    def _together(self, group: list[Ticket[Write[Any], Any]]) -> Ticket[Write[Any], Any] | None:
        """Run the group in one unit of work and commit it, answering every ticket; or roll it back and
        return the write that could not be undone alone (no ticket answered but those that raised
        before using the unit of work)."""
        answers: list[tuple[Ticket[Write[Any], Any], Any]] = []
        with self._uow() as tx:
            ordered = sorted(enumerate(group), key=lambda pair: (_wallet_of(pair[1].item, tx), pair[0]))
            for _, ticket in ordered:
                shared = _SharedFactory(tx)
                try:
                    result = ticket.item.run(shared)
                except Exception as exc:  # noqa: BLE001 - the write's own error, raised in its caller's thread
                    if shared.used:
                        return ticket  # leaving the block rolls the group back
                    ticket.error = exc
                    continue
                if shared.undone:
                    return ticket
                answers.append((ticket, result))
            tx.commit()
        for ticket, result in answers:
            ticket.result = result
        return None


def _alone(ticket: Ticket[Write[Any], Any], uow: UnitOfWorkFactory) -> None:
    try:
        ticket.result = ticket.item.run(uow)
    except Exception as exc:  # noqa: BLE001 - the write's own error, raised in its caller's thread
        ticket.error = exc


def _wallet_of(write: Write[Any], tx: UnitOfWork) -> str:
    wallet = write.wallet(tx) if callable(write.wallet) else write.wallet
    return wallet or ""


@dataclass(eq=False)
class _SharedFactory:
    """The unit of work factory one write of a group gets: every unit of work it opens is the group's
    transaction. Notes whether the write used it (`used`) and whether it left anything to undo
    (`undone`: left without commit(), rolled back, or opened one inside another)."""

    tx: UnitOfWork
    used: bool = False
    undone: bool = False
    open: int = 0

    def __call__(self, *, read_only: bool = False) -> UnitOfWork:
        return _Shared(self, read_only)


@dataclass(eq=False)
class _Shared:
    """A unit of work of one write, in the group's transaction (see _SharedFactory)."""

    factory: _SharedFactory
    read_only: bool
    committed: bool = field(default=False)

    def __enter__(self) -> UnitOfWork:
        self.factory.used = True
        self.factory.open += 1
        if self.factory.open > 1:
            self.factory.undone = True  # a unit of work inside another: not one transaction
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.factory.open -= 1
        if not self.committed and not self.read_only:
            self.factory.undone = True  # whatever it wrote was to be rolled back

    def commit(self) -> None:
        if self.read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        self.committed = True

    def rollback(self) -> None:
        self.factory.undone = True

    @property
    def ledger(self) -> LedgerRepository:
        return self.factory.tx.ledger

    @property
    def holds(self) -> HoldRepository:
        return self.factory.tx.holds

    @property
    def top_ups(self) -> TopUpRepository:
        return self.factory.tx.top_ups

    @property
    def events(self) -> PaymentEventLog:
        return self.factory.tx.events

    @property
    def outbox(self) -> Outbox:
        return self.factory.tx.outbox

    @property
    def alerts(self) -> AlertSettings:
        return self.factory.tx.alerts

    @property
    def auto_top_ups(self) -> AutoTopUpRules:
        return self.factory.tx.auto_top_ups

    @property
    def endpoints(self) -> WebhookEndpoints:
        return self.factory.tx.endpoints

    @property
    def deliveries(self) -> WebhookDeliveries:
        return self.factory.tx.deliveries

    @property
    def saved_cards(self) -> SavedCards:
        return self.factory.tx.saved_cards

    @property
    def low_balance_default(self) -> Credits | None:
        return self.factory.tx.low_balance_default

    @property
    def top_up_policy(self) -> TopUpPolicy | None:
        return self.factory.tx.top_up_policy
