"""An admin reverts a grant, a spend or a capture: a new transaction that names the one it corrects
(the rules: wallet_core.reverts). Idempotent with a required key; `dry_run` says what it would do and
writes nothing.

The wallet is locked before the transaction is checked, so of concurrent reverts of one transaction
(whatever their keys) one books it and the others find it reverted; the ledger's unique `reverts`
column stands behind that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import DuplicateReference, NotFound
from wallet_core.ids import check_reason, check_transaction_id
from wallet_core.ledger import CreditTransaction, Lot, Source
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWork, UnitOfWorkFactory
from wallet_core.reverts import revert_booking, spendable_after
from wallet_core.use_cases.idempotency import check_same_request, race_winner, required_key
from wallet_core.use_cases.recording import book
from wallet_core.use_cases.wallet_lock import lock_and_sweep


@dataclass(frozen=True)
class RevertResult:
    transaction_id: str | None  # the revert's id (None for a dry run: nothing was written)
    reverts: str  # the transaction reverted
    credits_reverted: Credits  # taken back (a grant) or given back (a spend, a capture); >= 0
    user_id: str
    balance: Credits  # spendable right after (for a dry run: what it would be)
    sources: tuple[Source, ...]  # the lots credits were taken from or given back to
    dry_run: bool = False
    replayed: bool = False


def revert_transaction(
    *,
    transaction_id: str,
    reason: object,
    idempotency_key: str | None,
    actor: str,
    uow: UnitOfWorkFactory,
    dry_run: bool = False,
    now: Clock = utc_now,
) -> RevertResult:
    """Raises NotFound (unknown transaction), NotRevertible (409: already reverted, a revert, a Stripe
    movement, nothing left), IdempotencyConflict (the key was used for another revert)."""
    original_id = check_transaction_id(transaction_id)
    why = check_reason(reason)
    assert why is not None  # required
    key = required_key(idempotency_key)
    reference = f"revert:{key}"
    asked: dict[str, object] = {"transaction_id": original_id, "reason": why}

    def replay(tx: UnitOfWork, earlier: CreditTransaction) -> RevertResult:
        check_same_request({"transaction_id": earlier.reverts, "reason": earlier.reason}, asked)
        full = tx.ledger.find_transaction(earlier.id)
        assert full is not None and full.reverts is not None
        back = {s.lot_id: s.credits.minor for s in full.sources} if full.credits.is_positive() else {}
        ended = {lot.id: lot for lot in tx.ledger.lots(back)}
        return RevertResult(
            full.id,
            full.reverts,
            Credits(abs(full.credits.minor)),
            full.user_id,
            _answered_balance(full.balance_after, back, ended, full.created_at),
            full.sources,
            replayed=True,
        )

    with uow() as tx:
        # A dry run only says what a revert would do now (a used key does not make it answer that revert).
        earlier = None if dry_run else tx.ledger.find_transaction_by_reference(reference)
        if earlier is not None:
            return replay(tx, earlier)
        found = tx.ledger.find_transaction(original_id)
        if found is None:
            raise NotFound(f"no transaction {original_id}")
        at = now()
        state = lock_and_sweep(tx, found.user_id, at)
        # A request with this key may have booked the revert while this one waited for the lock (on
        # PostgreSQL the first look above does not wait): it is a retry, so it answers the same.
        earlier = None if dry_run else tx.ledger.find_transaction_by_reference(reference)
        if earlier is not None:
            return replay(tx, earlier)
        original = tx.ledger.find_transaction(original_id)  # as it stands under the lock
        assert original is not None
        postings = tx.ledger.postings_of(original.id)
        lots = {lot.id: lot for lot in tx.ledger.lots({p.lot_id for p in postings if p.lot_id is not None})}
        booking = revert_booking(original, postings, lots, reference_id=reference, now=at, reason=why, actor=actor)
        sources = booking.sources({lot_id: lot.kind for lot_id, lot in lots.items()})
        credits = Credits(abs(booking.credits.minor))
        if dry_run:
            balance = spendable_after(state.spendable(at), lots, booking, at)
            return RevertResult(None, original.id, credits, original.user_id, balance, sources, dry_run=True)
        back = {c.lot_id: c.remaining.minor for c in booking.lot_changes if c.remaining.is_positive()}
        lapsing = _answered_balance(Credits(0), back, lots, at)  # minus what lapses right after
        try:
            booked = book(tx, booking, unspendable=-lapsing)
        except DuplicateReference as lost:
            return replay(tx, race_winner(tx, reference, lost))
        balance = _answered_balance(booked.balance_after, back, lots, at)
        if balance != booked.balance_after:
            # Credits given back to a lot past its expiry come back expired: book them out now.
            lock_and_sweep(tx, original.user_id, at)
        tx.commit()
    return RevertResult(booked.id, original.id, credits, original.user_id, balance, sources)


def _answered_balance(after: Credits, given_back: Mapping[str, int], lots: Mapping[str, Lot], at: datetime) -> Credits:
    """The spendable balance right after a revert: its row's balance less what it gave back to lots
    already past their expiry at `at` (those credits are booked out as expired in the same unit of
    work). The same on a replay, so a retry answers what the first request did."""
    lapsed = sum(amount for lot_id, amount in given_back.items() if lot_id in lots and lots[lot_id].expired(at))
    return Credits(after.minor - lapsed)
