"""Taking credits back when Stripe takes money back (refunds) or holds it (disputes).

Credits go back in proportion to the money: a refund of 3.00 of a 10.00 top-up that bought 1000
credits takes back 300. The proportion is worked out on the running total (everything refunded so
far), so several partial refunds, in any order, add up to exactly the credits of the top-up when the
whole payment is refunded, without rounding drift.

Credits are taken from the top-up's own lot first, then from the user's other spendable lots in
spending order. What the wallet no longer has becomes a recorded **debt**: the top-up's lot goes
negative. A wallet in debt cannot spend; the next credits that come in repay the debt first.

Whatever refunds and disputes of one payment do, together they never take more than it granted:
credits taken by refunds plus credits frozen by disputes still open or lost <= the credits granted
(`room_to_take_back`). A dispute won gives back exactly what it froze.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from wallet_core.ids import derived_id, new_id
from wallet_core.ledger import (
    Account,
    Booking,
    CreditTransaction,
    Lot,
    LotChange,
    Posting,
    TransactionKind,
    WalletState,
)
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUp


def top_up_lot_id(payment_intent_id: str) -> str:
    """The lot a top-up's credits sit in, named after its payment so refunds can find it."""
    return derived_id("lot", "top_up", payment_intent_id)


def dispute_reference(dispute_id: str) -> str:
    """The ledger reference of the transaction that froze a dispute's credits."""
    return f"dispute:{dispute_id}"


def dispute_closed_reference(dispute_id: str) -> str:
    """The ledger reference of the transaction that closed a dispute (won, lost, or closed before it
    was seen open)."""
    return f"dispute_closed:{dispute_id}"


@dataclass(frozen=True)
class TakenBack:
    """What refunds and disputes of one payment (top-up) took from it, as the ledger records it."""

    by_refunds: Credits = Credits(0)  # noqa: RUF009 (Credits is frozen)
    # Frozen by its disputes still open, or lost (then gone with the money); a dispute won counts 0.
    by_disputes: Credits = Credits(0)  # noqa: RUF009
    # Disputes that gave back more than they froze (never in a sound ledger).
    over_given_back: tuple[str, ...] = field(default=())
    open_disputes: tuple[str, ...] = field(default=())  # frozen and not closed yet

    @property
    def total(self) -> Credits:
        return self.by_refunds + self.by_disputes


def taken_back_by_top_up(transactions: Iterable[CreditTransaction]) -> dict[str, TakenBack]:
    """Sum refund and dispute transactions (LedgerRepository.take_backs) per top-up id. Refunds and
    freezes name their top-up in their metadata; a close is matched to its freeze by the dispute id
    in its reference."""
    refunded: dict[str, int] = {}
    lost_unseen: dict[str, int] = {}  # lost before it was seen open: taken straight from the wallet
    frozen: dict[str, tuple[str, int]] = {}  # dispute id -> (top-up id, credits frozen)
    given_back: dict[str, int] = {}  # dispute id -> credits a win gave back
    closed: set[str] = set()
    for t in transactions:
        if t.kind in (TransactionKind.DISPUTE_WON, TransactionKind.DISPUTE_LOST):
            closed.add(t.reference_id.removeprefix(dispute_closed_reference("")))
        top_up_id = t.metadata.get("top_up_id")
        if t.kind is TransactionKind.REFUND and top_up_id:
            refunded[top_up_id] = refunded.get(top_up_id, 0) - t.credits.minor
        elif t.kind is TransactionKind.DISPUTE and top_up_id:
            frozen[t.reference_id.removeprefix(dispute_reference(""))] = (top_up_id, -t.credits.minor)
        elif t.kind is TransactionKind.DISPUTE_LOST and top_up_id and t.credits.minor:
            lost_unseen[top_up_id] = lost_unseen.get(top_up_id, 0) - t.credits.minor
        elif t.kind is TransactionKind.DISPUTE_WON:
            given_back[t.reference_id.removeprefix(dispute_closed_reference(""))] = t.credits.minor
    disputed = dict(lost_unseen)
    over: dict[str, list[str]] = {}
    still_open: dict[str, list[str]] = {}
    for dispute_id, (top_up_id, credits) in frozen.items():
        back = given_back.get(dispute_id, 0)
        disputed[top_up_id] = disputed.get(top_up_id, 0) + max(0, credits - back)
        if back > credits:
            over.setdefault(top_up_id, []).append(dispute_id)
        if dispute_id not in closed:
            still_open.setdefault(top_up_id, []).append(dispute_id)
    return {
        top_up_id: TakenBack(
            Credits(refunded.get(top_up_id, 0)),
            Credits(disputed.get(top_up_id, 0)),
            tuple(over.get(top_up_id, ())),
            tuple(still_open.get(top_up_id, ())),
        )
        for top_up_id in refunded.keys() | disputed.keys() | over.keys()
    }


def room_to_take_back(top_up: TopUp, taken: TakenBack) -> Credits:
    """The credits refunds and disputes of `top_up` may still take: what it granted less what its
    refunds took and its disputes (open or lost) froze."""
    return Credits(max(0, top_up.credits.minor - taken.total.minor))


def credits_for_refund(top_up: TopUp, refunded_before: Usd, refund: Usd, credits_taken_before: Credits) -> Credits:
    """The credits to take back for `refund`, given what was refunded and taken back before."""
    total = min(refunded_before.cents + refund.cents, top_up.amount.cents)
    if total >= top_up.amount.cents:
        target = top_up.credits.minor
    else:
        exact = Decimal(top_up.credits.minor) * total / top_up.amount.cents
        target = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return Credits(max(0, target - credits_taken_before.minor))


def take_back_booking(
    state: WalletState,
    *,
    lot_id: str,
    credits: Credits,
    to_account: Account,
    kind: TransactionKind,
    reference_id: str,
    now: datetime,
    reason: str,
    metadata: dict[str, str] | None = None,
) -> Booking:
    """Move `credits` out of the user's wallet into `to_account`: the top-up's lot first, then the
    other spendable lots, the rest as debt on the top-up's lot."""
    lots = {lot.id: lot for lot in state.lots}
    order: list[Lot] = []
    if lot_id in lots:
        order.append(lots[lot_id])
    order += sorted((lot for lot in state.lots if lot.id != lot_id and not lot.expired(now)), key=Lot.spend_order)
    left = credits.minor
    taken: dict[str, int] = {}
    for lot in order:
        take = min(left, max(0, lot.remaining.minor))
        if take > 0:
            taken[lot.id] = take
            left -= take
    if left > 0:
        taken[lot_id] = taken.get(lot_id, 0) + left  # the debt
    postings = [Posting(Account.WALLET, Credits(-amount), state.user_id, lid) for lid, amount in taken.items()]
    postings.append(Posting(to_account, credits))
    return Booking(
        id=new_id("ctx"),
        user_id=state.user_id,
        kind=kind,
        reference_id=reference_id,
        created_at=now,
        postings=tuple(postings),
        reason=reason,
        actor="stripe",
        metadata=dict(metadata or {}),
        lot_changes=tuple(LotChange(lid, remaining=Credits(-amount)) for lid, amount in taken.items()),
    )


def give_back_booking(
    state: WalletState,
    *,
    lot_id: str,
    credits: Credits,
    from_account: Account,
    kind: TransactionKind,
    reference_id: str,
    now: datetime,
    reason: str,
    metadata: dict[str, str] | None = None,
) -> Booking:
    """Return frozen credits (a dispute won) to the top-up's lot."""
    return Booking(
        id=new_id("ctx"),
        user_id=state.user_id,
        kind=kind,
        reference_id=reference_id,
        created_at=now,
        postings=(Posting(Account.WALLET, credits, state.user_id, lot_id), Posting(from_account, -credits)),
        reason=reason,
        actor="stripe",
        metadata=dict(metadata or {}),
        lot_changes=(LotChange(lot_id, remaining=credits),),
    )
