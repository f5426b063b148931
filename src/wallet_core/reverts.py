"""Corrections: a revert is a new, balanced transaction that names the one it corrects.

Nothing in the ledger is edited or deleted (TigerBeetle's and Formance's rule). What a revert moves:

- an admin **grant**: what is still unspent of the credits it granted goes back to where they came from
  (promotions, or the offline funding of a paid grant); what was spent stays spent. The grant's lot
  ends at the revert (its `expires_at` becomes the revert's time), so credits that come back to it
  later (a hold on it released, a spend from it reverted) lapse into `expired` and never count again.
- a **spend**: the exact mirror of its postings; its credits go back to the lots they came from.
- a **hold capture**: the captured credits go back to the lots they came from, in the hold's order.

Credits that go back to a lot past its expiry come back expired: the revert is followed, in the same
unit of work, by the expiry of those lots (wallet_core.use_cases.revert_transaction).

A Stripe top-up grant, a refund and a dispute movement follow Stripe and are refused (refund at Stripe
instead); so are holds, releases and expiries (release a hold; a lapsed credit stays lapsed), a revert,
and a transaction reverted already. `expected_revert_postings` is the rule `wallet verify` checks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from wallet_core.errors import NotRevertible
from wallet_core.ids import new_id
from wallet_core.ledger import (
    MONEY_BACK_KINDS,
    Account,
    Booking,
    CreditTransaction,
    Lot,
    LotChange,
    Posting,
    TransactionKind,
    sources_of,
)
from wallet_core.money import Credits

REVERTIBLE_KINDS = frozenset({TransactionKind.GRANT, TransactionKind.SPEND, TransactionKind.CAPTURE})

_REFUSED = {
    TransactionKind.TOP_UP: "it is a Stripe top-up: refund the payment at Stripe instead, and the refund "
    "takes the credits back",
    TransactionKind.HOLD: "it is a hold: release the hold instead",
    TransactionKind.RELEASE: "it is a hold's release: holds are not reopened",
    TransactionKind.EXPIRY: "it is an expiry: lapsed credits stay lapsed (grant new credits instead)",
    TransactionKind.REVERT: "it is itself a revert: a correction is not reverted (make a new transaction instead)",
}
_MONEY_BACK = "it follows Stripe (a refund or dispute movement): refund or settle the dispute at Stripe instead"


def check_revertible(original: CreditTransaction) -> None:
    """Raise NotRevertible (409), saying why, unless `original` may be reverted now."""
    if original.reverted_by is not None:
        raise NotRevertible(f"transaction {original.id} was already reverted by {original.reverted_by}")
    if original.kind in MONEY_BACK_KINDS:
        raise NotRevertible(f"transaction {original.id} cannot be reverted: {_MONEY_BACK}")
    if original.kind not in REVERTIBLE_KINDS:
        raise NotRevertible(f"transaction {original.id} cannot be reverted: {_REFUSED[original.kind]}")


def _given_back(original: CreditTransaction, postings: Sequence[Posting]) -> dict[str, int]:
    """What a spend's or capture's revert gives back to each lot (the lots that paid, in their order)."""
    return {s.lot_id: s.credits.minor for s in sources_of(original.kind, postings, {})}


def expected_revert_postings(
    original: CreditTransaction, postings: Sequence[Posting], grant_lot: Lot | None = None
) -> tuple[Posting, ...]:
    """The postings a revert of `original` (with its `postings`) must have. For a spend and a capture
    they are determined by the original alone; for a grant, by what its lot (`grant_lot`, as it stands
    when reverting) still has: pass None to get the rule's upper bound (the whole grant)."""
    user = original.user_id
    if original.kind is TransactionKind.SPEND:
        return tuple(Posting(p.account, -p.amount, p.user_id, p.lot_id) for p in postings)
    if original.kind is TransactionKind.CAPTURE:
        back = _given_back(original, postings)
        legs = [Posting(Account.WALLET, Credits(amount), user, lot_id) for lot_id, amount in back.items()]
        return (*legs, Posting(Account.REVENUE, Credits(-sum(back.values()))))
    if original.kind is TransactionKind.GRANT:
        lot_id, funding = _grant_parts(original, postings)
        left = original.credits.minor if grant_lot is None else max(0, grant_lot.remaining.minor)
        if left == 0:
            return ()
        return (Posting(Account.WALLET, Credits(-left), user, lot_id), Posting(funding, Credits(left)))
    raise NotRevertible(f"transaction {original.id} cannot be reverted")


def _grant_parts(original: CreditTransaction, postings: Sequence[Posting]) -> tuple[str, Account]:
    """A grant's own lot (its first posting: credit_booking writes the new lot's leg first) and the
    system account it was funded from."""
    first = postings[0]
    funding = next(p.account for p in postings if p.user_id is None)
    if first.account is not Account.WALLET or first.lot_id is None or first.amount != original.credits:
        raise ValueError(f"grant {original.id} does not start with its lot's leg")
    return first.lot_id, funding


def grant_lot_id(original: CreditTransaction, postings: Sequence[Posting]) -> str:
    return _grant_parts(original, postings)[0]


def revert_booking(
    original: CreditTransaction,
    postings: Sequence[Posting],
    lots: Mapping[str, Lot],
    *,
    reference_id: str,
    now: datetime,
    reason: str,
    actor: str | None,
    metadata: Mapping[str, str] | None = None,
) -> Booking:
    """The revert of `original` (see the module's rules), from the lots its postings name as they stand
    now (`lots`, read under the wallet's lock). Raises NotRevertible when it may not be reverted or
    there is nothing left to take back."""
    check_revertible(original)
    changes: list[LotChange] = []
    if original.kind is TransactionKind.GRANT:
        lot_id = grant_lot_id(original, postings)
        lot = lots.get(lot_id)
        legs = expected_revert_postings(original, postings, lot)
        if not legs:
            raise NotRevertible(
                f"nothing left to revert: the {original.credits} credits grant {original.id} gave were all "
                "spent, expired or held by holds since captured"
                if lot is None or lot.held.minor == 0
                else f"nothing left to revert: what is left of grant {original.id} is held by open holds "
                "(capture or release them first)"
            )
        changes.append(LotChange(lot_id, remaining=legs[0].amount, ends_at=now))
    else:
        legs = expected_revert_postings(original, postings)
        for p in legs:
            if p.account is Account.WALLET and p.lot_id is not None:
                changes.append(LotChange(p.lot_id, remaining=p.amount))
    booking_id = new_id("ctx")
    return Booking(
        id=booking_id,
        user_id=original.user_id,
        kind=TransactionKind.REVERT,
        reference_id=reference_id,
        created_at=now,
        postings=legs,
        reason=reason,
        actor=actor,
        metadata=dict(metadata or {}),
        lot_changes=tuple(changes),
        reverts=original.id,
    )


def mirrors(
    original: CreditTransaction, original_postings: Sequence[Posting], revert_postings: Sequence[Posting]
) -> str | None:
    """None when `revert_postings` are what a revert of `original` may post; else what is wrong (for
    `wallet verify`). A grant's revert may take back any part of the grant, from the grant's lot only."""

    def legs(postings: Sequence[Posting]) -> Counter[tuple[str, str | None, str | None, int]]:
        return Counter((p.account.value, p.user_id, p.lot_id, p.amount.minor) for p in postings)

    if original.kind not in REVERTIBLE_KINDS:
        return f"reverts a {original.kind.value} transaction, which may not be reverted"
    if original.kind is TransactionKind.GRANT:
        try:
            lot_id, funding = _grant_parts(original, original_postings)
        except (ValueError, IndexError, StopIteration):
            return f"reverts grant {original.id}, whose postings are not a grant's"
        taken = -sum(p.amount.minor for p in revert_postings if p.account is Account.WALLET)
        allowed = {(Account.WALLET, lot_id), (funding, None)}
        if any((p.account, p.lot_id) not in allowed for p in revert_postings):
            return f"moves credits other than grant {original.id}'s lot {lot_id} and its funding"
        if not 0 <= taken <= original.credits.minor:
            return f"takes back {Credits(taken)} of a grant of {original.credits}"
        return None
    if legs(revert_postings) != legs(expected_revert_postings(original, original_postings)):
        return f"does not mirror {original.kind.value} {original.id}'s postings"
    return None


def spendable_after(spendable: Credits, lots: Mapping[str, Lot], booking: Booking, now: datetime) -> Credits:
    """The spendable balance once `booking` is recorded, from the spendable balance before it and the
    lots it changes as they stand (`lots`): credits on a lot past its expiry, or not yet effective, do
    not count. What a dry run answers."""
    change: dict[str, int] = {}
    for c in booking.lot_changes:
        change[c.lot_id] = change.get(c.lot_id, 0) + c.remaining.minor

    def counted(lot: Lot, remaining: int) -> int:
        if lot.pending(now) or (lot.expired(now) and remaining > 0):
            return 0
        return remaining

    total = spendable.minor
    for lot_id, delta in change.items():
        lot = lots[lot_id]
        total += counted(lot, lot.remaining.minor + delta) - counted(lot, lot.remaining.minor)
    return Credits(total)
