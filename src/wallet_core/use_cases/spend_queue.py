"""Group commit for single spends: concurrent spends of one process share a unit of work and a commit.

Each spend a caller makes (Wallet.spend: HTTP, CLI, library) is checked in the caller's thread (bad
input raises InvalidInput as before, nothing queued), then queued. A caller that finds fewer than
`groups` groups running leads one: it takes every spend waiting at that moment (at most `cap`), books
them as ONE unit of work with the batch machinery (spend_batch.run_spends: the wallets locked in sorted
order, every key looked up in one read, the spends recorded in one statement on PostgreSQL, one
commit), hands each waiter its own outcome, and passes the lead to the first spend that arrived
meanwhile. No thread of its own. Two groups running at once are two units of work: like two concurrent
single spends, they take turns on a wallet they share (in sorted order: no deadlock), and a key both
use is booked by the first to commit and replayed (or refused) by the other.

What each caller gets is what spend_credits would have answered had the spends of its group been made
one after another in arrival order: its SpendResult (the balance right after ITS spend, its transaction,
the lots that paid it), `replayed` for a key seen before (earlier in the group too), InsufficientCredits
(the same message: not enough, or the wallet in debt) or IdempotencyConflict. Its credits.spent event
and balance alerts are recorded as for a single spend (recording.book_many). A spend is in exactly one
commit; when the group's unit of work fails (the database down, any error), every spend of the group
gets that error and none of them is written. A DuplicateReference (another process committed one of
the group's keys meanwhile) runs the group again, as spend_many does.

A group of one is a plain spend_credits. Waiting is bounded: a spend still queued after `timeout`
seconds leaves the queue unwritten (StorageUnavailable).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import IdempotencyConflict, InsufficientCredits, InvalidInput, StorageUnavailable
from wallet_core.ids import check_reason, check_user_id
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.use_cases.idempotency import required_key
from wallet_core.use_cases.spend_batch import BatchItemResult, BatchStatus, SpendItem, SpendsRun, run_spends
from wallet_core.use_cases.spend_credits import SpendResult, check_amount, check_metadata, spend_credits

DEFAULT_CAP = 64  # spends per group
# Groups booked at once: 2, so one group's statements run in PostgreSQL while the next is prepared in
# Python (docs/performance.md: 1 left the CPU idle between groups; more make groups smaller).
DEFAULT_GROUPS = 2
DEFAULT_TIMEOUT = 30.0  # seconds a spend may wait for its group before it gives up


@dataclass(eq=False)
class _Ticket:
    """One caller's spend, from queueing to its answer."""

    item: SpendItem
    wake: threading.Event = field(default_factory=threading.Event)
    taken: bool = False  # in a group (its outcome will come)
    lead: bool = False  # handed the lead: run the next group
    result: SpendResult | None = None
    error: BaseException | None = None

    def answer(self) -> SpendResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None, "a spend of a finished group has an outcome"
        return self.result


class SpendQueue:
    """Wallet.spend with group commit (see the module docstring). Thread-safe; one per process."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        now: Clock = utc_now,
        cap: int = DEFAULT_CAP,
        groups: int = DEFAULT_GROUPS,
        timeout: float = DEFAULT_TIMEOUT,
        on_group: Callable[[int], object] | None = None,
    ) -> None:
        if cap < 1 or groups < 1:
            raise ValueError("cap and groups must be at least 1")
        self._uow = uow
        self._now = now
        self._cap = cap
        self._timeout = timeout
        self._on_group = on_group  # told each group's size (tests, measurements)
        self._lock = threading.Lock()
        self._waiting: list[_Ticket] = []
        self._groups = groups  # groups that may run at once
        self._leaders = 0  # groups running, or waiters handed the lead

    @property
    def waiting(self) -> int:
        """Spends queued for the next group (not yet taken by one)."""
        with self._lock:
            return len(self._waiting)

    def spend(
        self,
        *,
        user_id: str,
        credits: object,
        idempotency_key: str | None,
        reason: object,
        actor: str,
        metadata: object = None,
    ) -> SpendResult:
        """spend_credits' answer for this spend, booked together with the spends waiting with it."""
        checked_user = check_user_id(user_id)
        amount = check_amount(credits)
        why = check_reason(reason)
        assert why is not None  # required
        meta = check_metadata(metadata)
        key = required_key(idempotency_key)
        ticket = _Ticket(SpendItem(0, checked_user, amount, why, meta, key, actor))
        with self._lock:
            self._waiting.append(ticket)
            lead = self._leaders < self._groups
            if lead:
                self._leaders += 1
        if not lead:
            self._wait(ticket)
        if ticket.lead or lead:
            self._run_group()
        return ticket.answer()

    def _wait(self, ticket: _Ticket) -> None:
        """Until the ticket is answered or handed the lead. Bounded: still queued after the timeout, it
        leaves the queue unwritten; taken by a group that never ends, the caller is told so."""
        if ticket.wake.wait(self._timeout):
            return
        with self._lock:
            if not ticket.taken and not ticket.lead:
                self._waiting.remove(ticket)
                raise StorageUnavailable("the spend waited too long for its turn; nothing was written, retry")
        if ticket.lead or ticket.wake.wait(self._timeout):
            return
        raise StorageUnavailable(
            "the database did not answer in time; retry with the same Idempotency-Key (it answers the spend if "
            "it was made)"
        )

    def _run_group(self) -> None:
        with self._lock:
            group = self._waiting[: self._cap]
            del self._waiting[: self._cap]
            for ticket in group:
                ticket.taken = True
        try:
            if self._on_group is not None:
                self._on_group(len(group))
            self._book(group)
        except BaseException as exc:  # noqa: BLE001 - every spend of the group gets the group's failure
            for ticket in group:
                if ticket.result is None and ticket.error is None:
                    ticket.error = exc
        finally:
            with self._lock:
                if self._waiting:
                    self._waiting[0].lead = True
                    self._waiting[0].wake.set()
                else:
                    self._leaders -= 1
            for ticket in group:
                ticket.wake.set()

    def _book(self, group: list[_Ticket]) -> None:
        if len(group) == 1:
            only, item = group[0], group[0].item
            try:
                only.result = spend_credits(
                    user_id=item.user_id,
                    credits=item.amount.decimal,
                    idempotency_key=item.key,
                    reason=item.reason,
                    actor=item.actor,
                    uow=self._uow,
                    metadata=item.metadata,
                    now=self._now,
                )
            except Exception as exc:  # noqa: BLE001 - the caller's own error, raised in its thread
                only.error = exc
            return
        items = [_indexed(ticket.item, index) for index, ticket in enumerate(group)]
        ran = run_spends(items, uow=self._uow, now=self._now, with_sources=True)
        for index, ticket in enumerate(group):
            ticket.result, ticket.error = _outcome(ticket.item, ran.results[index], ran, index)


def _indexed(item: SpendItem, index: int) -> SpendItem:
    return SpendItem(index, item.user_id, item.amount, item.reason, item.metadata, item.key, item.actor)


def _outcome(
    item: SpendItem, result: BatchItemResult, ran: SpendsRun, index: int
) -> tuple[SpendResult | None, BaseException | None]:
    """A batch item's result as spend_credits answers it: a SpendResult or the exception it raises."""
    message = result.error.message if result.error is not None else ""
    if result.status.ok:
        assert result.transaction_id is not None and result.balance is not None
        spent = SpendResult(
            item.user_id,
            item.amount,
            result.balance,
            result.transaction_id,
            replayed=result.status is BatchStatus.REPLAYED,
            sources=ran.sources.get(index, ()),
        )
        return spent, None
    if result.status is BatchStatus.INSUFFICIENT_CREDITS:
        return None, InsufficientCredits(message)
    if result.status is BatchStatus.CONFLICT:
        return None, IdempotencyConflict(message)
    field_name = result.error.field if result.error is not None and result.error.field else "spend"
    return None, InvalidInput(field_name, message)  # not reached: every item was checked before queueing
