"""The transaction history: newest first, page by page with cursors, every row exactly once."""

from __future__ import annotations

import base64
import itertools
from datetime import timedelta
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import FakeClock, new_key, spendable, top_up
from wallet_core.errors import InvalidInput
from wallet_core.ledger import CreditTransaction, TransactionKind
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.service import Wallet
from wallet_core.use_cases import HistoryPage, read_wallet
from wallet_core.use_cases.read_wallet import MAX_PAGE


def c(text: str) -> Credits:
    return Credits.parse(text)


def _page(wallet: Wallet, limit: Any = 20, cursor: str | None = None, user: str = "alice") -> HistoryPage:
    return wallet.transactions(user, limit, cursor)


def _all_pages(wallet: Wallet, limit: int, user: str = "alice") -> list[list[CreditTransaction]]:
    pages: list[list[CreditTransaction]] = []
    cursor: str | None = None
    while True:
        page = _page(wallet, limit, cursor, user)
        pages.append(page.transactions)
        if page.next_cursor is None:
            return pages
        assert page.transactions, "a page with a next cursor must not be empty"
        cursor = page.next_cursor


def _newest_first(rows: list[CreditTransaction]) -> list[str]:
    return [t.id for t in sorted(rows, key=lambda t: (t.created_at, t.id), reverse=True)]


def test_a_new_user_has_an_empty_history(wallet: Wallet, store: InMemoryStore, uow: UnitOfWorkFactory) -> None:
    page = _page(wallet, user="newcomer")
    assert page.transactions == []
    assert page.next_cursor is None
    view = read_wallet(user_id="newcomer", uow=uow)
    assert (view.balance, view.held) == (c("0"), c("0"))
    assert store.commits == 0


def test_history_is_newest_first_with_every_kind_of_movement(
    wallet: Wallet, fake_clock: FakeClock, gateway: FakePaymentGateway
) -> None:
    top_up(wallet, gateway, "1.00", "alice")
    fake_clock.advance(seconds=1)
    wallet.grant("alice", "10", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(hours=1))
    fake_clock.advance(seconds=1)
    wallet.spend("alice", "5", idempotency_key=new_key(), reason="usage", metadata={"job": "1"}, actor="service:api")
    fake_clock.advance(seconds=1)
    hold = wallet.hold(
        "alice", "20", idempotency_key=new_key(), reason="reserve", expires_in_seconds=60, actor="service:api"
    )
    fake_clock.advance(seconds=1)
    wallet.capture(hold.hold_id, "15", actor="service:api")
    fake_clock.advance(seconds=1)
    released = wallet.hold(
        "alice", "1", idempotency_key=new_key(), reason="reserve", expires_in_seconds=60, actor="service:api"
    )
    fake_clock.advance(seconds=1)
    wallet.release(released.hold_id, actor="service:api")
    fake_clock.advance(hours=1)
    wallet.expire()  # nothing promotional is left: the hold took it all and the capture spent it
    wallet.grant("alice", "3", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(seconds=1))
    fake_clock.advance(seconds=1)
    wallet.expire()

    rows = _page(wallet).transactions

    assert [t.kind for t in rows] == [
        TransactionKind.EXPIRY, TransactionKind.GRANT, TransactionKind.RELEASE, TransactionKind.HOLD,
        TransactionKind.CAPTURE, TransactionKind.HOLD, TransactionKind.SPEND, TransactionKind.GRANT,
        TransactionKind.TOP_UP,
    ]
    assert [str(t.credits) for t in rows] == ["-3.00", "3.00", "1.00", "-1.00", "5.00", "-20.00", "-5.00", "10.00",
                                              "100.00"]
    assert [str(t.held_change) for t in rows] == ["0.00", "0.00", "-1.00", "1.00", "-20.00", "20.00", "0.00",
                                                  "0.00", "0.00"]
    assert [str(t.balance_after) for t in rows] == ["90.00", "93.00", "90.00", "89.00", "90.00", "85.00", "105.00",
                                                    "110.00", "100.00"]
    assert rows[0].balance_after == spendable(wallet)
    assert {t.hold_id for t in rows[2:6]} == {hold.hold_id, released.hold_id}
    assert dict(rows[6].metadata) == {"job": "1"}
    # Each row's balance follows from the one before it.
    for newer, older in itertools.pairwise(rows):
        assert newer.balance_after - newer.credits == older.balance_after


def test_history_shows_only_the_users_own_rows(wallet: Wallet, fake_clock: FakeClock) -> None:
    wallet.grant("alice", "1", reason="promo", granted_by="admin")
    fake_clock.advance(seconds=1)
    wallet.grant("bob", "2", reason="promo", granted_by="admin")
    fake_clock.advance(seconds=1)
    wallet.grant("alice", "3", reason="promo", granted_by="admin")
    assert [str(t.credits) for t in _page(wallet).transactions] == ["3.00", "1.00"]
    assert [str(t.credits) for t in _page(wallet, user="bob").transactions] == ["2.00"]


@pytest.mark.parametrize("limit", [1, 2, 5, 10, 36, 37, 38, 100])
def test_pages_cover_every_row_once_even_when_all_share_one_timestamp(
    wallet: Wallet, limit: int, store: InMemoryStore
) -> None:
    # The fake clock stands still: all 37 rows have the same created_at.
    for i in range(37):
        wallet.grant("alice", f"{i + 1}", reason="promo", granted_by="admin")
    wallet.grant("bob", "1000", reason="promo", granted_by="admin")
    every = [t.id for t in store.state.transactions.values() if t.user_id == "alice"]

    pages = _all_pages(wallet, limit)
    seen = [t.id for page in pages for t in page]

    assert len(seen) == len(set(seen)) == 37
    assert set(seen) == set(every)
    assert seen == _newest_first([store.state.transactions[i] for i in every])
    assert all(len(page) == limit for page in pages[:-1])
    assert len(pages) == max(1, -(-37 // limit))


def test_pages_cover_every_row_once_with_mixed_timestamps(
    wallet: Wallet, fake_clock: FakeClock, store: InMemoryStore
) -> None:
    for i in range(30):
        wallet.grant("alice", "1", reason="promo", granted_by="admin")
        if i % 3 == 0:
            fake_clock.advance(seconds=1)
        if i % 7 == 0:
            fake_clock.advance(microseconds=1)
    seen = [t.id for page in _all_pages(wallet, 4) for t in page]
    rows = list(store.state.transactions.values())
    assert seen == _newest_first(rows)
    assert len(set(seen)) == 30


def test_the_last_page_has_no_cursor_even_when_it_is_exactly_full(wallet: Wallet) -> None:
    for _ in range(10):
        wallet.grant("alice", "1", reason="promo", granted_by="admin")
    first = _page(wallet, 10)
    assert len(first.transactions) == 10
    assert first.next_cursor is None
    half = _page(wallet, 5)
    assert half.next_cursor is not None
    rest = _page(wallet, 5, half.next_cursor)
    assert len(rest.transactions) == 5
    assert rest.next_cursor is None


def test_rows_added_while_paging_do_not_repeat_or_hide_older_rows(
    wallet: Wallet, fake_clock: FakeClock, store: InMemoryStore
) -> None:
    for _ in range(6):
        wallet.grant("alice", "1", reason="promo", granted_by="admin")
        fake_clock.advance(seconds=1)
    older = {t.id for t in store.state.transactions.values()}
    first = _page(wallet, 3)
    wallet.grant("alice", "500", reason="promo", granted_by="admin")  # newer than everything
    rest = _page(wallet, 3, first.next_cursor)
    ids = [t.id for t in first.transactions + rest.transactions]
    assert len(ids) == len(set(ids)) == 6
    assert set(ids) == older
    assert rest.next_cursor is None


def test_a_cursor_from_another_users_history_shows_none_of_their_rows(wallet: Wallet) -> None:
    for _ in range(3):
        wallet.grant("bob", "1", reason="promo", granted_by="admin")
        wallet.grant("alice", "2", reason="promo", granted_by="admin")
    bobs = _page(wallet, 1, user="bob")
    assert bobs.next_cursor is not None
    alices = _page(wallet, 20, bobs.next_cursor)
    assert alices.transactions
    assert {t.user_id for t in alices.transactions} == {"alice"}


@pytest.mark.parametrize(
    "limit", [0, -1, 101, 1000, "abc", "", "1.5", " 5", True, False, None, 1.0, "\u0665", "00100", "9" * 5000]
)
def test_invalid_page_sizes_are_refused(wallet: Wallet, limit: object) -> None:
    with pytest.raises(InvalidInput) as err:
        _page(wallet, limit)
    assert err.value.field == "limit"
    assert "1 to 100" in err.value.description


@pytest.mark.parametrize(("limit", "size"), [(1, 1), ("7", 7), (MAX_PAGE, 100), ("100", 100)])
def test_page_sizes_from_1_to_100_are_accepted(wallet: Wallet, limit: object, size: int) -> None:
    for _ in range(120):
        wallet.grant("alice", "1", reason="promo", granted_by="admin")
    assert len(_page(wallet, limit).transactions) == size


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "a",  # not a whole base64 quantum
        _b64(b"no separator"),
        _b64(b"2025-01-01T12:00:00+00:00|"),  # no id
        _b64(b"2025-01-01T12:00:00|ctx_1"),  # no time zone
        _b64(b"yesterday|ctx_1"),
        _b64(b"\xff\xfe|ctx_1"),  # not UTF-8
        _b64(b"2025-01-01T12:00:00+00:00|" + b"x" * 200),  # longer than any cursor we give out
        _b64(b"9999-12-31T23:59:59-14:00|x"),  # out of datetime's range once made UTC
        _b64(b"0001-01-01T00:00:00+14:00|x"),
        _b64(b"2025-01-01T14:00:00+02:00|ctx_1"),  # the service gives out UTC times only
        _b64(b"2025-01-01T12:00:00+00:00|ctx\x001"),  # not an id: a NUL
        _b64(b"2025-01-01T12:00:00+00:00|ctx_1") + "==",  # not the text the service wrote
    ],
)
def test_a_cursor_the_service_did_not_give_out_is_refused(wallet: Wallet, cursor: str) -> None:
    wallet.grant("alice", "1", reason="promo", granted_by="admin")
    with pytest.raises(InvalidInput) as err:
        _page(wallet, 10, cursor)
    assert err.value.field == "cursor"


def test_a_well_formed_cursor_pages_from_where_it_points(wallet: Wallet, fake_clock: FakeClock) -> None:
    wallet.grant("alice", "1", reason="promo", granted_by="admin")
    fake_clock.advance(seconds=10)
    wallet.grant("alice", "2", reason="promo", granted_by="admin")
    between = _b64(f"{(fake_clock.now - timedelta(seconds=5)).isoformat()}|ctx_any".encode())
    assert [str(t.credits) for t in _page(wallet, 10, between).transactions] == ["1.00"]
