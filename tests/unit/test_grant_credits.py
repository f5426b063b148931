"""An admin grants credits by hand: validated, recorded with who and why, idempotent with a key."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork
from tests.unit.helpers import assert_nothing_written, only_transaction, postings_of
from wallet_core.errors import IdempotencyConflict, InvalidInput
from wallet_core.ledger import Account, CreditKind, Posting, TransactionKind
from wallet_core.money import Credits
from wallet_core.use_cases import GrantResult, grant_credits, read_wallet

UowFactory = Callable[..., InMemoryUnitOfWork]


@pytest.fixture
def grant(uow: UowFactory, clock: Callable[[], datetime]) -> Callable[..., GrantResult]:
    def call(
        credits: object = "50",
        user_id: object = "alice",
        reason: object = "goodwill after outage",
        granted_by: str = "admin@example.com",
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
    ) -> GrantResult:
        return grant_credits(
            user_id=user_id,  # type: ignore[arg-type]
            credits=credits,
            reason=reason,
            granted_by=granted_by,
            uow=uow,
            idempotency_key=idempotency_key,
            expires_at=expires_at,
            now=clock,
        )

    return call


def test_grant_adds_credits_and_returns_the_balance_after(
    grant: Callable[..., GrantResult], uow: UowFactory, store: InMemoryStore
) -> None:
    first = grant("50")
    second = grant("12.34")

    assert first.user_id == "alice"
    assert first.credits_granted == Credits.parse("50")
    assert first.balance == Credits.parse("50")
    assert first.replayed is False
    assert second.balance == Credits.parse("62.34")
    assert first.transaction_id != second.transaction_id
    assert read_wallet(user_id="alice", uow=uow).balance == Credits.parse("62.34")
    assert store.commits == 2


def test_grant_records_who_granted_and_why(grant: Callable[..., GrantResult], store: InMemoryStore) -> None:
    result = grant("5", reason="  refund for ticket #812  ", granted_by="ops:carol")
    booked = only_transaction(store)
    assert booked.id == result.transaction_id
    assert booked.kind is TransactionKind.GRANT
    assert booked.actor == "ops:carol"
    assert booked.reason == "refund for ticket #812"  # surrounding whitespace trimmed
    assert booked.credits == Credits.parse("5")
    assert booked.held_change == Credits(0)
    assert booked.balance_after == Credits.parse("5")

    # A grant is promotional credits, funded by the promotions account, in a lot of its own.
    [lot] = store.state.lots.values()
    assert lot.kind is CreditKind.PROMOTIONAL
    assert lot.user_id == "alice"
    assert lot.granted == lot.remaining == Credits.parse("5")
    assert lot.expires_at is None
    assert result.expires_at is None
    assert sorted(postings_of(store, booked.id), key=lambda p: p.amount) == [
        Posting(Account.PROMOTIONS, Credits.parse("-5")),
        Posting(Account.WALLET, Credits.parse("5"), "alice", lot.id),
    ]


def test_grants_to_different_users_are_separate(grant: Callable[..., GrantResult], uow: UowFactory) -> None:
    grant("10", user_id="alice")
    grant("20", user_id="bob")
    assert read_wallet(user_id="alice", uow=uow).balance == Credits.parse("10")
    assert read_wallet(user_id="bob", uow=uow).balance == Credits.parse("20")


@pytest.mark.parametrize("reason", [None, "", "   ", 42, "\t\n"])
def test_reason_is_required(grant: Callable[..., GrantResult], store: InMemoryStore, reason: object) -> None:
    with pytest.raises(InvalidInput) as err:
        grant(reason=reason)
    assert err.value.field == "reason"
    assert "required" in err.value.description
    assert_nothing_written(store)


@pytest.mark.parametrize(
    "reason",
    ["line one\nline two", "tab\there", "bell\x07", "nul\x00byte", "del\x7f", "c1\x85control", "esc\x1b[31m"],
)
def test_reason_with_control_characters_is_refused(
    grant: Callable[..., GrantResult], store: InMemoryStore, reason: str
) -> None:
    with pytest.raises(InvalidInput, match="control characters") as err:
        grant(reason=reason)
    assert err.value.field == "reason"
    assert_nothing_written(store)


def test_reason_of_500_characters_is_accepted_and_501_refused(
    grant: Callable[..., GrantResult], store: InMemoryStore
) -> None:
    grant(reason="r" * 500)
    assert only_transaction(store).reason == "r" * 500
    with pytest.raises(InvalidInput, match="at most 500"):
        grant(reason="r" * 501)
    with pytest.raises(InvalidInput, match="at most 500"):
        grant(reason="r" * 5000)
    assert len(store.state.transactions) == 1


def test_reason_may_use_non_ascii_text(grant: Callable[..., GrantResult], store: InMemoryStore) -> None:
    grant(reason="Entsch\u00e4digung f\u00fcr St\u00f6rung \u2013 \u65e5\u672c")
    assert only_transaction(store).reason == "Entsch\u00e4digung f\u00fcr St\u00f6rung \u2013 \u65e5\u672c"


@pytest.mark.parametrize(
    ("credits", "problem"),
    [
        ("0", "greater than 0"),
        (0, "greater than 0"),
        ("-5", "greater than 0"),
        ("-0.01", "greater than 0"),
        ("100000000.01", "at most 100000000.00"),
        ("999999999", "at most 100000000.00"),
        ("1e400", "decimal number"),
        ("99999999999999999999", "too large"),
        (1.5, "float"),
        ("0.001", "2 decimal places"),
        ("ten", "decimal number"),
        (None, "decimal number"),
    ],
)
def test_invalid_credit_amounts_are_refused(
    grant: Callable[..., GrantResult], store: InMemoryStore, credits: object, problem: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        grant(credits)
    assert err.value.field == "credits"
    assert problem in err.value.description
    assert_nothing_written(store)


def test_smallest_and_largest_grants_are_accepted(grant: Callable[..., GrantResult]) -> None:
    assert grant("0.01", user_id="tiny").balance == Credits(1)
    assert grant("100000000", user_id="huge").balance == Credits.parse("100000000")


@pytest.mark.parametrize(
    "user_id",
    [
        "",
        " ",
        "has space",
        " alice",
        "alice ",
        "x" * 129,
        "x" * 200,
        "tab\there",
        "nul\x00",
        "esc\x1b",
        "\nalice",
        "_leading_underscore",
        "a/b",
        "semi;colon",
        None,
        42,
    ],
)
def test_bad_user_ids_are_refused(
    grant: Callable[..., GrantResult], store: InMemoryStore, user_id: object
) -> None:
    with pytest.raises(InvalidInput) as err:
        grant(user_id=user_id)
    assert err.value.field == "user_id"
    assert_nothing_written(store)


def test_user_id_with_trailing_newline_is_refused(
    grant: Callable[..., GrantResult], store: InMemoryStore
) -> None:
    with pytest.raises(InvalidInput):
        grant(user_id="alice\n")
    assert_nothing_written(store)


@pytest.mark.parametrize(
    "user_id", ["a", "x" * 128, "user_1", "auth0|5f2b", "alice@example.com", "org:42.team+x-y"]
)
def test_well_formed_user_ids_are_accepted(grant: Callable[..., GrantResult], user_id: str) -> None:
    assert grant(user_id=user_id).user_id == user_id


def test_retry_with_the_same_key_replays_the_first_result(
    grant: Callable[..., GrantResult], uow: UowFactory, store: InMemoryStore
) -> None:
    first = grant("50", idempotency_key="grant-1")
    grant("7", idempotency_key="grant-other")  # something else happens in between
    again = grant("50", idempotency_key="grant-1")

    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert again.credits_granted == first.credits_granted
    assert again.balance == first.balance == Credits.parse("50")  # the balance right after the first grant
    assert read_wallet(user_id="alice", uow=uow).balance == Credits.parse("57")
    assert len(store.state.transactions) == 2
    assert store.commits == 2


def test_replay_matches_the_same_amount_written_differently(grant: Callable[..., GrantResult]) -> None:
    grant("50", idempotency_key="k")
    assert grant(50, idempotency_key="k").replayed is True
    assert grant("50.00", idempotency_key="k").replayed is True


@pytest.mark.parametrize(
    "change",
    [
        {"credits": "51"},
        {"user_id": "bob"},
        {"reason": "a different reason"},
    ],
)
def test_same_key_for_a_different_grant_is_a_conflict(
    grant: Callable[..., GrantResult], uow: UowFactory, store: InMemoryStore, change: dict[str, str]
) -> None:
    grant("50", idempotency_key="grant-1")
    with pytest.raises(IdempotencyConflict):
        grant(**{"credits": "50", "idempotency_key": "grant-1", **change})
    assert len(store.state.transactions) == 1
    assert read_wallet(user_id="alice", uow=uow).balance == Credits.parse("50")
    assert read_wallet(user_id="bob", uow=uow).balance == Credits.zero()


def test_without_a_key_every_grant_is_booked(grant: Callable[..., GrantResult], uow: UowFactory) -> None:
    grant("50")
    grant("50")
    assert read_wallet(user_id="alice", uow=uow).balance == Credits.parse("100")


def test_invalid_idempotency_key_is_refused(grant: Callable[..., GrantResult], store: InMemoryStore) -> None:
    with pytest.raises(InvalidInput) as err:
        grant(idempotency_key="has space")
    assert err.value.field == "Idempotency-Key"
    assert_nothing_written(store)


def test_concurrent_retries_with_the_same_key_grant_once(
    grant: Callable[..., GrantResult], uow: UowFactory, store: InMemoryStore
) -> None:
    results: list[GrantResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(grant("25", idempotency_key="double-submit"))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sum(not r.replayed for r in results) == 1
    assert len({r.transaction_id for r in results}) == 1
    assert read_wallet(user_id="alice", uow=uow).balance == Credits.parse("25")
    assert store.commits == 1


# -- promotional credits that expire -------------------------------------------------------------

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def _grant_at(uow: UowFactory, at: datetime, credits: str = "10", **kw: Any) -> GrantResult:
    return grant_credits(
        user_id="alice", credits=credits, reason="promo", granted_by="admin", uow=uow, now=lambda: at, **kw
    )


def test_a_grant_may_expire_and_its_lot_says_when(uow: UowFactory, store: InMemoryStore) -> None:
    until = T0 + timedelta(days=30)
    result = _grant_at(uow, T0, "10", expires_at=until)

    assert result.expires_at == until
    [lot] = store.state.lots.values()
    assert lot.kind is CreditKind.PROMOTIONAL
    assert lot.expires_at == until
    assert lot.created_at == T0
    # Spendable until the last moment before expiry, not at it.
    assert read_wallet(user_id="alice", uow=uow, now=lambda: until - timedelta(seconds=1)).balance == Credits.parse(
        "10"
    )
    assert read_wallet(user_id="alice", uow=uow, now=lambda: until).balance == Credits(0)


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(seconds=-1), timedelta(days=-365)])
def test_an_expiry_that_is_not_in_the_future_is_refused(
    uow: UowFactory, store: InMemoryStore, offset: timedelta
) -> None:
    with pytest.raises(InvalidInput) as err:
        _grant_at(uow, T0, "10", expires_at=T0 + offset)
    assert err.value.field == "expires_at"
    assert_nothing_written(store)


def test_a_replayed_grant_reports_the_expiry_of_the_first(uow: UowFactory) -> None:
    until = T0 + timedelta(days=1)
    first = _grant_at(uow, T0, "10", idempotency_key="promo-1", expires_at=until)
    again = _grant_at(uow, T0, "10", idempotency_key="promo-1", expires_at=until)
    assert again.replayed is True
    assert again.expires_at == first.expires_at == until


def test_same_key_with_a_different_expiry_is_a_conflict(uow: UowFactory) -> None:
    _grant_at(uow, T0, "10", idempotency_key="promo-1", expires_at=T0 + timedelta(days=1))
    with pytest.raises(IdempotencyConflict):
        _grant_at(uow, T0, "10", idempotency_key="promo-1", expires_at=T0 + timedelta(days=9))


def test_the_balance_after_a_grant_leaves_out_expired_credits(uow: UowFactory, store: InMemoryStore) -> None:
    _grant_at(uow, T0, "10", expires_at=T0 + timedelta(days=1))
    later = T0 + timedelta(days=2)
    result = _grant_at(uow, later, "5")
    spendable = read_wallet(user_id="alice", uow=uow, now=lambda: later).balance
    assert spendable == Credits.parse("5")
    assert result.balance == spendable
