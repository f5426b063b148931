"""Read a wallet: the balance, and the history page by page."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import InvalidInput
from wallet_core.ids import _ID_PATTERN, check_user_id
from wallet_core.ledger import CreditTransaction, TransactionCursor, WalletView
from wallet_core.paging import check_page_size
from wallet_core.ports import UnitOfWorkFactory

RECENT = 20
MAX_PAGE = 100


def read_wallet(
    *, user_id: str, uow: UnitOfWorkFactory, recent: int = RECENT, now: Clock = utc_now, lots: bool = True
) -> WalletView:
    """The balance (spendable and held), what is pending, the spendable credits by category, the live
    lots in spending order (`lots`: False leaves them out) and the most recent transactions, newest
    first, in one read."""
    user_id = check_user_id(user_id)
    at = now()
    with uow(read_only=True) as tx:
        spendable, held = tx.ledger.balances(user_id, at)
        live = tx.ledger.live_lots(user_id) if lots else []
        rows = tx.ledger.transactions(user_id, recent) if recent > 0 else []
    if not lots:
        return WalletView(user_id=user_id, balance=spendable, held=held, transactions=rows)
    # The stored balance is the answer (it is what every write reported); the lots say how it splits.
    return replace(WalletView.of_lots(user_id, live, held=held, now=at, transactions=rows), balance=spendable)


@dataclass(frozen=True)
class HistoryPage:
    transactions: list[CreditTransaction]
    next_cursor: str | None  # pass it back to get the next (older) page; None on the last page


def list_transactions(
    *, user_id: str, uow: UnitOfWorkFactory, limit: object = RECENT, cursor: str | None = None
) -> HistoryPage:
    user_id = check_user_id(user_id)
    size = check_page_size(limit, MAX_PAGE)
    before = decode_cursor(cursor) if cursor else None
    with uow(read_only=True) as tx:
        rows = tx.ledger.transactions(user_id, size + 1, before)
    more = len(rows) > size
    rows = rows[:size]
    return HistoryPage(rows, encode_cursor(rows[-1]) if more else None)


def encode_cursor(row: CreditTransaction) -> str:
    return _cursor_text(TransactionCursor(row.created_at, row.id))


def _cursor_text(at: TransactionCursor) -> str:
    raw = f"{at.created_at.isoformat()}|{at.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> TransactionCursor:
    """The cursor `encode_cursor` wrote, or 422. Only its exact text is taken back: a UTC time (so
    within what every database binds, never out of range once converted) and an id of the id
    charset (no NUL or control character reaches SQL). Cursors are not signed: one only says where
    the caller's own history resumes (the user comes from the token), so a hand-made one that
    passes these checks shows nothing the caller could not page to."""
    try:
        if len(value) > 200:
            raise ValueError
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        at, _, row_id = raw.partition("|")
        created_at = datetime.fromisoformat(at)
        if created_at.utcoffset() != timedelta(0) or not _ID_PATTERN.fullmatch(row_id):
            raise ValueError
        cursor = TransactionCursor(created_at, row_id)
        if _cursor_text(cursor) != value:  # padding, skipped characters, another spelling of the time
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor", "is not a cursor this service gave out") from None
    return cursor
