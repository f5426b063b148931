"""Spend in bulk: up to MAX_BATCH spends (e.g. usage logs replayed into the wallet) in ONE unit of work
and one commit, each item succeeding or failing on its own, with the single spend's rules
(wallet_core.use_cases.spend_credits): exactly once per key, no overdraft, promotional first, a wallet
in debt refuses.

How, so the answer is exactly what the same spends made one by one in request order would answer:

- Each item is checked first; a malformed one is `invalid` (naming the field) and the rest go on.
- Every wallet of the batch is locked, in sorted user id order (two batches touching the same wallets
  take their locks in the same order, so they wait for each other but never deadlock), and its expired
  credits booked out (lock_and_sweep), before anything else is read.
- Then every key's earlier transaction is looked up in one read (find_transactions_by_references):
  under the locks, so a concurrent spend of a key for one of these wallets committed before it.
- The items are then decided in request order with the single spend's domain code (spend_booking on
  the wallet as the items before left it) and recorded together (recording.book_many: one statement
  for all on PostgreSQL, and the credits.spent event and balance alerts of each item, as for a single
  spend). A key used earlier in the batch or before it answers `replayed` (the same request: the first
  transaction and balance) or `conflict` (another request), as check_same_request decides.
- A concurrent request that commits one of the batch's keys for another wallet while it runs (so a
  conflict) makes record() refuse it (DuplicateReference): the whole unit of work is rolled back and
  the batch run again (it then finds the key), at most RETRIES times. Never a partial write.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from wallet_core.bookings import spend_booking
from wallet_core.clock import Clock, utc_now
from wallet_core.errors import (
    DuplicateReference,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidInput,
    StorageUnavailable,
)
from wallet_core.ids import check_idempotency_key, check_reason, check_user_id
from wallet_core.ledger import Booking, CreditTransaction, Source, TransactionKind, WalletState, categories
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWork, UnitOfWorkFactory
from wallet_core.use_cases.idempotency import check_same_request, recorded_request, transaction_request
from wallet_core.use_cases.recording import book_many
from wallet_core.use_cases.spend_credits import check_amount, check_metadata
from wallet_core.use_cases.wallet_lock import lock_and_sweep_many

MAX_BATCH = 1000
RETRIES = 3  # runs of a batch that lost a key to a concurrent request, before giving up (503)
ITEM_FIELDS = ("user_id", "credits", "reason", "idempotency_key", "metadata")
_KEY_FIELD = "idempotency_key"


class BatchStatus(enum.StrEnum):
    SPENT = "spent"
    REPLAYED = "replayed"  # the key was used before (in this batch or earlier) for this same request
    INSUFFICIENT_CREDITS = "insufficient_credits"  # nothing spent: not enough, or the wallet is in debt
    CONFLICT = "conflict"  # the key was used before for another request
    INVALID = "invalid"  # a field is malformed (`error.field` names it)

    @property
    def ok(self) -> bool:
        return self in (BatchStatus.SPENT, BatchStatus.REPLAYED)


@dataclass(frozen=True)
class ItemError:
    message: str
    field: str | None = None  # for `invalid` items: the item's field that is wrong


@dataclass(frozen=True)
class BatchItemResult:
    index: int  # the item's position in the request, from 0
    idempotency_key: str | None  # as sent, when it was a string
    status: BatchStatus
    transaction_id: str | None = None  # spent, replayed: the transaction that spent
    balance: Credits | None = None  # spent, replayed: right after it; insufficient_credits: spendable now
    error: ItemError | None = None  # insufficient_credits, conflict, invalid: why


@dataclass(frozen=True)
class SpendItem:
    """A well-formed item."""

    index: int
    user_id: str
    amount: Credits
    reason: str
    metadata: dict[str, str]
    key: str
    actor: str

    @property
    def reference(self) -> str:
        return f"spend:{self.key}"  # the single spend's reference: one key space for both

    def asked(self) -> dict[str, object]:
        return transaction_request(
            kind=TransactionKind.SPEND,
            user_id=self.user_id,
            credits=-self.amount,
            reason=self.reason,
            metadata=self.metadata,
        )


@dataclass(frozen=True)
class _Spent:
    """A key already spent (committed before the batch, or earlier in it): what a repeat is compared with
    and answers."""

    request: Mapping[str, object]
    transaction_id: str
    balance: Credits

    @classmethod
    def of(cls, booked: CreditTransaction) -> _Spent:
        return cls(recorded_request(booked), booked.id, booked.balance_after)


def _key_of(raw: Mapping[str, object]) -> str | None:
    key = raw.get(_KEY_FIELD)
    return key if isinstance(key, str) else None


def check_item(index: int, raw: object, actor: str) -> SpendItem | BatchItemResult:
    """The item, well formed, or its `invalid` result naming the first field that is wrong."""
    if not isinstance(raw, Mapping):
        return BatchItemResult(index, None, BatchStatus.INVALID, error=ItemError("must be an object", "item"))
    key = _key_of(raw)
    try:
        unknown = sorted(str(name) for name in raw if name not in ITEM_FIELDS)
        if unknown:
            raise InvalidInput("item", f"has unknown field(s): {', '.join(unknown)}"[:240])
        user_id = check_user_id(raw.get("user_id"))
        amount = check_amount(raw.get("credits"))
        reason = check_reason(raw.get("reason"))
        assert reason is not None  # required
        metadata = check_metadata(raw.get("metadata"))
        key = _check_key(raw.get(_KEY_FIELD))
    except InvalidInput as exc:
        problem = exc.description.removeprefix(exc.field).strip()
        return BatchItemResult(index, key, BatchStatus.INVALID, error=ItemError(problem, exc.field))
    return SpendItem(index, user_id, amount, reason, metadata, key, actor)


def _check_key(value: object) -> str:
    if value is None:
        raise InvalidInput(_KEY_FIELD, "is required, so a retry never moves credits twice")
    if not isinstance(value, str):
        raise InvalidInput(_KEY_FIELD, "must be a string of 1-255 printable ASCII characters without spaces")
    try:
        key = check_idempotency_key(value)
    except InvalidInput as exc:
        raise InvalidInput(_KEY_FIELD, exc.description.removeprefix(exc.field).strip()) from None
    assert key is not None
    return key


def spend_many(
    *,
    items: Iterable[object],
    actor: str,
    uow: UnitOfWorkFactory,
    now: Clock = utc_now,
) -> list[BatchItemResult]:
    """One result per item, in request order. Raises InvalidInput when there are no items or more than
    MAX_BATCH (nothing is written), StorageUnavailable when concurrent requests took the batch's keys
    RETRIES times over."""
    checked = [check_item(index, raw, actor) for index, raw in enumerate(items)]
    if not checked:
        raise InvalidInput("spends", f"must hold 1 to {MAX_BATCH} spends")
    if len(checked) > MAX_BATCH:
        raise InvalidInput("spends", f"must hold at most {MAX_BATCH} spends, not {len(checked)}")
    valid = [item for item in checked if isinstance(item, SpendItem)]
    if not valid:
        return [result for result in checked if isinstance(result, BatchItemResult)]
    answered = run_spends(valid, uow=uow, now=now).results
    return [result if isinstance(result, BatchItemResult) else answered[result.index] for result in checked]


@dataclass(frozen=True)
class SpendsRun:
    """What run_spends decided: each item's result by its index and, when asked for, the lots that paid
    each spent or replayed item (a single spend's `sources`)."""

    results: dict[int, BatchItemResult]
    sources: dict[int, tuple[Source, ...]]


def run_spends(
    items: Sequence[SpendItem], *, uow: UnitOfWorkFactory, now: Clock, with_sources: bool = False
) -> SpendsRun:
    """Well-formed spends (distinct indexes) in one unit of work and at most one commit (none when
    nothing is spent); run again when a concurrent request took one of their keys (DuplicateReference),
    at most RETRIES times, then StorageUnavailable. Any other failure propagates: nothing is written."""
    for _ in range(RETRIES):
        with uow() as tx:
            try:
                ran = _run(tx, items, now(), with_sources=with_sources)
            except DuplicateReference:
                continue  # leaving the block rolls everything back; run it again (it replays that key)
            if any(result.status is BatchStatus.SPENT for result in ran.results.values()):
                tx.commit()
        return ran
    raise StorageUnavailable(
        "concurrent requests kept spending these spends' idempotency keys meanwhile; nothing was written, retry"
    )


def _run(tx: UnitOfWork, items: Sequence[SpendItem], at: datetime, *, with_sources: bool) -> SpendsRun:
    # Every wallet of the batch, locked in sorted order before anything is read: a concurrent request
    # can then commit one of the batch's keys for the same wallet only before the lookup below sees it.
    states = lock_and_sweep_many(tx, {item.user_id for item in items}, at)
    found = tx.ledger.find_transactions_by_references(sorted({item.reference for item in items}))
    earlier: dict[str, _Spent] = {ref: _Spent.of(booked) for ref, booked in found.items()}
    # Decide every item in order, on the wallets as the items before it leave them; then record all the
    # spends at once. A key spent earlier in the batch points at its booking until it is recorded.
    answered: dict[int, BatchItemResult] = {}
    sources: dict[int, tuple[Source, ...]] = {}
    bookings: list[Booking] = []
    spenders: list[SpendItem] = []  # the item of each booking
    in_batch: dict[str, tuple[Mapping[str, object], int]] = {}  # reference -> (request, booking's position)
    replays: list[tuple[SpendItem, int]] = []  # items that repeat a spend of this batch, and its position
    for item in items:
        asked = item.asked()
        first = in_batch.get(item.reference)
        before = earlier.get(item.reference)
        stored = first[0] if first is not None else before.request if before is not None else None
        if stored is not None:
            try:
                check_same_request(stored, asked)
            except IdempotencyConflict as exc:
                answered[item.index] = _failed(item, BatchStatus.CONFLICT, exc.description)
                continue
            if first is not None:
                replays.append((item, first[1]))
            elif before is not None:
                answered[item.index] = BatchItemResult(
                    item.index, item.key, BatchStatus.REPLAYED, before.transaction_id, before.balance
                )
                if with_sources:  # as spend_credits replays: the first transaction's lots, read back
                    full = tx.ledger.find_transaction(before.transaction_id)
                    sources[item.index] = full.sources if full is not None else ()
            continue
        state = states[item.user_id]
        try:
            if state.available.minor < 0:
                raise InsufficientCredits(f"the wallet owes {-state.available} credits; top up to spend again")
            booking = spend_booking(
                state,
                credits=item.amount,
                reference_id=item.reference,
                now=at,
                reason=item.reason,
                actor=item.actor,
                metadata=item.metadata,
            )
        except InsufficientCredits as exc:
            balance = _spendable(state, at)
            answered[item.index] = _failed(item, BatchStatus.INSUFFICIENT_CREDITS, exc.description, balance)
            continue
        if with_sources:
            sources[item.index] = booking.sources(categories(state.lots))
        states[item.user_id] = after(state, booking)
        in_batch[item.reference] = (asked, len(bookings))
        bookings.append(booking)
        spenders.append(item)
    booked = book_many(tx, bookings)  # DuplicateReference: a concurrent request took a key; run again
    for item, one in zip(spenders, booked, strict=True):
        answered[item.index] = BatchItemResult(item.index, item.key, BatchStatus.SPENT, one.id, one.balance_after)
    for item, position in replays:
        first_booked = booked[position]
        answered[item.index] = BatchItemResult(
            item.index, item.key, BatchStatus.REPLAYED, first_booked.id, first_booked.balance_after
        )
        if with_sources:
            sources[item.index] = sources[spenders[position].index]
    return SpendsRun(answered, sources)


def _spendable(state: WalletState, at: datetime) -> Credits:
    """What the locked (and swept) wallet can spend at `at`: its credits less those not effective yet."""
    return state.available - Credits(sum(lot.remaining.minor for lot in state.lots if lot.pending(at)))


def _failed(item: SpendItem, status: BatchStatus, message: str, balance: Credits | None = None) -> BatchItemResult:
    return BatchItemResult(item.index, item.key, status, balance=balance, error=ItemError(message))


def after(state: WalletState, booking: Booking) -> WalletState:
    """The locked wallet as `booking` (a spend: no new lots) leaves it, without reading it again."""
    changes: dict[str, tuple[int, int]] = {}
    for change in booking.lot_changes:
        remaining, held = changes.get(change.lot_id, (0, 0))
        changes[change.lot_id] = (remaining + change.remaining.minor, held + change.held.minor)
    lots = tuple(
        replace(lot, remaining=lot.remaining + Credits(changes[lot.id][0]), held=lot.held + Credits(changes[lot.id][1]))
        if lot.id in changes
        else lot
        for lot in state.lots
    )
    return replace(
        state, available=state.available + booking.credits, held=state.held + booking.held_change, lots=lots
    )
