"""Group commit for single spends: concurrent spends of one process share a unit of work and a commit.

Each spend a caller makes (Wallet.spend: HTTP, CLI, library) is checked in the caller's thread (bad
input raises InvalidInput as before, nothing queued), then queued. A caller that finds fewer than
`groups` groups running leads one: it takes every spend waiting at that moment (at most `cap`), books
them as ONE unit of work with the batch machinery (spend_batch.run_spends: the wallets locked in sorted
order, every key looked up in one read, the spends recorded in one statement on PostgreSQL, one
commit), hands each waiter its own outcome, and passes the lead to the first spend that arrived
meanwhile (the queue: use_cases.commit_queue). No thread of its own. Two groups running at once are
two units of work: like two concurrent single spends, they take turns on a wallet they share (in
sorted order: no deadlock), and a key both use is booked by the first to commit and replayed (or
refused) by the other.

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

from collections.abc import Callable

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import IdempotencyConflict, InsufficientCredits, InvalidInput
from wallet_core.ids import check_reason, check_user_id
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.use_cases.commit_queue import DEFAULT_CAP, DEFAULT_GROUPS, DEFAULT_TIMEOUT, CommitQueue, Ticket
from wallet_core.use_cases.idempotency import required_key
from wallet_core.use_cases.spend_batch import BatchItemResult, BatchStatus, SpendItem, SpendsRun, run_spends
from wallet_core.use_cases.spend_credits import SpendResult, check_amount, check_metadata, spend_credits

_Ticket = Ticket[SpendItem, SpendResult]


class SpendQueue(CommitQueue[SpendItem, SpendResult]):
    """Wallet.spend with group commit (see the module docstring). Thread-safe; one per process."""

    noun = "spend"

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
        super().__init__(cap=cap, groups=groups, timeout=timeout, on_group=on_group)
        self._uow = uow
        self._now = now

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
        return self.submit(SpendItem(0, checked_user, amount, why, meta, key, actor))

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
