"""Taking credits back when Stripe takes money back (refunds) or holds it (disputes).

Credits go back in proportion to the money: a refund of 3.00 of a 10.00 top-up that bought 1000
credits takes back 300. The proportion is worked out on the running total (everything refunded so
far), so several partial refunds, in any order, add up to exactly the credits of the top-up when the
whole payment is refunded, without rounding drift.

Credits are taken from the top-up's own lot first, then from the user's other spendable lots in
spending order. What the wallet no longer has becomes a recorded **debt**: the top-up's lot goes
negative. A wallet in debt cannot spend; the next credits that come in repay the debt first.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from wallet_core.ids import derived_id, new_id
from wallet_core.ledger import Account, Booking, Lot, LotChange, Posting, TransactionKind, WalletState
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUp


def top_up_lot_id(payment_intent_id: str) -> str:
    """The lot a top-up's credits sit in, named after its payment so refunds can find it."""
    return derived_id("lot", "top_up", payment_intent_id)


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
        lot_changes=(LotChange(lot_id, remaining=credits),),
    )
