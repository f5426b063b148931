"""Two-phase spending: hold credits before the cost is known, then capture (all or part) or release.

An open hold reserves credits: they leave the spendable balance for the user's held account. Capture
moves up to the held amount into revenue and gives the rest back; release gives it all back. A hold
nobody settles expires (the `expire` run releases it): past its expiry it can no longer be captured,
but it can still be released.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from wallet_core.bookings import hold_booking, settle_hold_booking
from wallet_core.clock import Clock, utc_now
from wallet_core.errors import (
    DuplicateReference,
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidInput,
    NotFound,
)
from wallet_core.event_types import EventType
from wallet_core.holds import DEFAULT_HOLD_TTL, MAX_HOLD_TTL, Hold, HoldStatus
from wallet_core.ids import check_reason, check_user_id, derived_id
from wallet_core.ledger import CreditTransaction, Source, TransactionKind, WalletState, categories
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWork, UnitOfWorkFactory
from wallet_core.use_cases.idempotency import (
    check_same_request,
    race_winner,
    recorded_request,
    required_key,
    transaction_request,
)
from wallet_core.use_cases.recording import book
from wallet_core.use_cases.spend_credits import check_amount, check_metadata
from wallet_core.use_cases.wallet_lock import lock_and_sweep

EXPIRES_IN_SECONDS = "expires_in_seconds"  # a request field, compared on an idempotent retry


@dataclass(frozen=True)
class HoldResult:
    hold_id: str
    user_id: str
    status: HoldStatus
    amount: Credits  # reserved
    captured: Credits
    balance: Credits  # spendable right after
    expires_at: datetime
    transaction_id: str
    replayed: bool = False
    # The lots its transaction moved: reserved (a hold), paid (a capture) or given back to (a release).
    sources: tuple[Source, ...] = ()


def place_hold(
    *,
    user_id: str,
    credits: object,
    idempotency_key: str | None,
    reason: object,
    actor: str,
    uow: UnitOfWorkFactory,
    expires_in_seconds: object = None,
    metadata: object = None,
    now: Clock = utc_now,
) -> HoldResult:
    user_id = check_user_id(user_id)
    amount = check_amount(credits)
    why = check_reason(reason)
    meta = check_metadata(metadata)
    ttl = _ttl(expires_in_seconds)
    key = required_key(idempotency_key)
    reference = f"hold:{key}"
    hold_id = derived_id("hold", key)

    asked = transaction_request(kind=TransactionKind.HOLD, user_id=user_id, credits=-amount, reason=why, metadata=meta)
    asked[EXPIRES_IN_SECONDS] = _seconds(ttl)

    def replay(earlier: CreditTransaction, tx: UnitOfWork) -> HoldResult:
        hold = tx.holds.get(hold_id)
        assert hold is not None
        check_same_request({**recorded_request(earlier), EXPIRES_IN_SECONDS: _seconds(hold.ttl)}, asked)
        return _result(hold, earlier, replayed=True, sources=_sources_of(tx, earlier))

    with uow() as tx:
        earlier = tx.ledger.find_transaction_by_reference(reference)
        if earlier is not None:
            return replay(earlier, tx)
        at = now()
        state = lock_and_sweep(tx, user_id, at)
        if state.available.minor < 0:
            raise InsufficientCredits(f"the wallet owes {-state.available} credits; top up to spend again")
        booking, allocations = hold_booking(
            state,
            hold_id=hold_id,
            credits=amount,
            reference_id=reference,
            now=at,
            reason=why,
            actor=actor,
            metadata=meta,
        )
        hold = Hold(
            id=hold_id,
            user_id=user_id,
            amount=amount,
            status=HoldStatus.OPEN,
            created_at=at,
            expires_at=at + ttl,
            allocations=allocations,
            reference_id=reference,
            reason=why,
        )
        try:
            booked = book(tx, booking)
        except DuplicateReference as lost:
            return replay(race_winner(tx, reference, lost), tx)
        tx.holds.add(hold)
        tx.commit()
    return _result(hold, booked, sources=booking.sources(categories(state.lots)))


def hold_wallet(hold_id: str) -> Callable[[UnitOfWork], str | None]:
    """The wallet of a hold (None: no such hold), read in a group's transaction for its lock order
    (use_cases.write_group)."""

    def wallet(tx: UnitOfWork) -> str | None:
        try:
            checked = check_user_id(hold_id, "hold_id")
        except InvalidInput:
            return None  # refused by the capture itself, before it reads anything
        hold = tx.holds.get(checked)
        return hold.user_id if hold is not None else None

    return wallet


def capture_hold(
    *,
    hold_id: str,
    credits: object = None,
    actor: str,
    uow: UnitOfWorkFactory,
    reason: object = None,
    now: Clock = utc_now,
) -> HoldResult:
    """Capture `credits` (at most the held amount; all of it when None) and release the rest."""
    hold_id = check_user_id(hold_id, "hold_id")
    amount = None if credits is None else Credits.amount(credits, "credits")
    if amount is not None and not amount.is_positive():
        raise InvalidInput("credits", "must be greater than 0 (to capture nothing, release the hold)")
    why = check_reason(reason, required=False)
    return _settle(hold_id, amount, TransactionKind.CAPTURE, why, actor, uow, now)


def release_hold(
    *, hold_id: str, actor: str, uow: UnitOfWorkFactory, reason: object = None, now: Clock = utc_now
) -> HoldResult:
    hold_id = check_user_id(hold_id, "hold_id")
    why = check_reason(reason, required=False)
    return _settle(hold_id, Credits(0), TransactionKind.RELEASE, why, actor, uow, now)


def expire_hold(hold: Hold, *, tx: UnitOfWork, at: datetime) -> CreditTransaction | None:
    """Release an expired open hold inside the caller's unit of work (used by the expiry run)."""
    state = lock_and_sweep(tx, hold.user_id, at)
    fresh = tx.holds.get(hold.id)
    if fresh is None or fresh.status is not HoldStatus.OPEN or not fresh.expired(at):
        return None
    booking = settle_hold_booking(
        fresh,
        capture=Credits(0),
        kind=TransactionKind.RELEASE,
        reference_id=f"release:{fresh.id}",
        now=at,
        reason="hold expired",
        actor="system",
        expired_lots=_expired_lots(state, at),
    )
    booked = book(tx, booking, event=EventType.HOLD_EXPIRED)
    tx.holds.update(fresh.id, HoldStatus.EXPIRED, Credits(0), at)
    return booked


def _settle(
    hold_id: str,
    amount: Credits | None,
    kind: TransactionKind,
    reason: str | None,
    actor: str,
    uow: UnitOfWorkFactory,
    now: Clock,
) -> HoldResult:
    reference = f"{'capture' if kind is TransactionKind.CAPTURE else 'release'}:{hold_id}"
    with uow() as tx:
        hold = tx.holds.get(hold_id)
        if hold is None:
            raise NotFound(f"no hold {hold_id}")
        at = now()
        state = lock_and_sweep(tx, hold.user_id, at)
        hold = tx.holds.get(hold_id)  # read again under the wallet's lock
        assert hold is not None
        capture = hold.amount if amount is None else amount
        earlier = tx.ledger.find_transaction_by_reference(reference)
        if earlier is not None:
            if kind is TransactionKind.CAPTURE and hold.captured != capture:
                raise IdempotencyConflict(f"hold {hold_id} was captured for {hold.captured}, not {capture}")
            tx.rollback()  # a replay writes nothing, not even the expiry sweep
            return _result(hold, earlier, replayed=True, sources=_sources_of(tx, earlier))
        if hold.status is not HoldStatus.OPEN:
            raise HoldNotOpen(f"hold {hold_id} is {hold.status}")
        if hold.expired(at) and kind is TransactionKind.CAPTURE:
            raise HoldNotOpen(f"hold {hold_id} expired at {hold.expires_at.isoformat()}")
        if capture > hold.amount:
            raise InvalidInput("credits", f"must be at most the held {hold.amount}")
        booking = settle_hold_booking(
            hold,
            capture=capture,
            kind=kind,
            reference_id=reference,
            now=at,
            reason=reason,
            actor=actor,
            expired_lots=_expired_lots(state, at),
        )
        try:
            booked = book(tx, booking)
        except DuplicateReference:
            tx.rollback()
            raise HoldNotOpen(f"hold {hold_id} was settled by another request") from None
        status = HoldStatus.CAPTURED if kind is TransactionKind.CAPTURE else HoldStatus.RELEASED
        tx.holds.update(hold_id, status, capture, at)
        tx.commit()
    sources = booking.sources(categories(state.lots))
    return _result(replace(hold, status=status, captured=capture), booked, sources=sources)


def _sources_of(tx: UnitOfWork, booked: CreditTransaction) -> tuple[Source, ...]:
    full = tx.ledger.find_transaction(booked.id)
    return full.sources if full is not None else ()


def _expired_lots(state: WalletState, now: datetime) -> frozenset[str]:
    return frozenset(lot.id for lot in state.lots if lot.expired(now))


def _result(
    hold: Hold, booked: CreditTransaction, *, replayed: bool = False, sources: tuple[Source, ...] = ()
) -> HoldResult:
    return HoldResult(
        hold_id=hold.id,
        user_id=hold.user_id,
        status=hold.status,
        amount=hold.amount,
        captured=hold.captured,
        balance=booked.balance_after,
        expires_at=hold.expires_at,
        transaction_id=booked.id,
        replayed=replayed,
        sources=sources,
    )


def _seconds(ttl: timedelta) -> int:
    return round(ttl.total_seconds())


def _ttl(value: object) -> timedelta:
    if value is None:
        return DEFAULT_HOLD_TTL
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_HOLD_TTL.total_seconds():
        raise InvalidInput(
            "expires_in_seconds", f"must be a whole number of seconds from 1 to {int(MAX_HOLD_TTL.total_seconds())}"
        )
    return timedelta(seconds=value)
