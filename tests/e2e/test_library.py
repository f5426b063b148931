"""The wallet in-process: open_wallet() wired by the real container (SQL adapter, real migrations),
Stripe faked at the port."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from dependency_injector import providers

from adapters.fake_gateway import FakePaymentGateway
from adapters.sql.migrate import current_revision
from entrypoints.container import Container
from entrypoints.library import Wallet, open_wallet
from entrypoints.settings import Secret
from tests.e2e.conftest import JWT_SECRET, WEBHOOK_SECRET, MovableClock, head_revision, make_settings
from wallet_core.errors import (
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidInput,
    InvalidWebhook,
    PaymentsNotConfigured,
)
from wallet_core.holds import HoldStatus
from wallet_core.ledger import TransactionKind
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUpStatus
from wallet_core.use_cases import HistoryPage, HoldResult, SpendResult

STRIPE_KEY = "sk_test_library_0123456789abcdefghij"
DB_PASSWORD = "library-db-passw0rd-42"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "fresh_postgres_url")
    return url


@pytest.fixture
def make_container() -> Iterator[Callable[..., Container]]:
    built: list[Container] = []

    def _make(database_url: str, gateway: FakePaymentGateway | None = None, **changes: object) -> Container:
        container = Container()
        container.settings.override(make_settings(database_url, **changes))
        if gateway is not None:
            container.gateway.override(gateway)
        built.append(container)
        return container

    yield _make
    for container in built:
        container.shutdown_resources()


@pytest.fixture
def gateway() -> FakePaymentGateway:
    return FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,))


@pytest.fixture
def wallet(make_container: Callable[..., Container], database_url: str, gateway: FakePaymentGateway) -> Wallet:
    return open_wallet(make_container(database_url, gateway))


# -- open_wallet ---------------------------------------------------------------------------------


def test_open_wallet_migrates_the_schema(
    make_container: Callable[..., Container], database_url: str, gateway: FakePaymentGateway
) -> None:
    container = make_container(database_url, gateway)
    opened = open_wallet(container)

    assert isinstance(opened, Wallet)
    assert current_revision(container.engine()) == head_revision()
    assert opened is container.wallet()  # the container's one Wallet


def test_open_wallet_without_migrating_leaves_the_schema_alone(
    make_container: Callable[..., Container], sqlite_url: str, gateway: FakePaymentGateway
) -> None:
    container = make_container(sqlite_url, gateway)
    open_wallet(container, migrate=False)
    assert current_revision(container.engine()) is None


def test_open_wallet_takes_its_policy_from_the_settings(
    make_container: Callable[..., Container], sqlite_url: str, gateway: FakePaymentGateway
) -> None:
    opened = open_wallet(make_container(sqlite_url, gateway, top_up_min=Usd(500), credits_per_usd=Decimal(7)))
    assert opened.policy.min_amount == Usd(500)
    with pytest.raises(InvalidInput, match=r"at least 5\.00"):
        opened.top_up("alice", "4.99")
    assert opened.top_up("alice", "5.00").credits == Credits(3500)


def test_open_wallet_reads_the_environment(
    make_container: Callable[..., Container], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "WALLET_JWT_SECRET",
                 "WALLET_ENV", "TOP_UP_MIN_USD", "TOP_UP_MAX_USD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WALLET_DATABASE_URL", f"sqlite:///{tmp_path / 'from-env.sqlite3'}")
    monkeypatch.setenv("CREDITS_PER_USD", "3")
    monkeypatch.chdir(tmp_path)
    container = Container()
    try:
        opened = open_wallet(container)
        assert opened.policy.credits_per_usd == Decimal(3)
        opened.grant("alice", "5.00", reason="beta tester", granted_by="ops")
        assert opened.balance("alice") == Decimal("5.00")
        assert (tmp_path / "from-env.sqlite3").is_file()
    finally:
        container.shutdown_resources()


# -- top-up, webhook, balance --------------------------------------------------------------------


def test_top_up_then_webhook_grants_the_credits(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    user = "lib-alice"
    top_up = wallet.top_up(user, "10.00")

    assert top_up.status is TopUpStatus.PENDING
    assert top_up.amount == Usd(1000)
    assert top_up.credits == Credits(100_000)
    assert top_up.client_secret and top_up.client_secret.startswith(top_up.payment_intent_id + "_secret_")
    assert wallet.balance(user) == Decimal("0.00")  # nothing before the money arrives

    payload, header = gateway.succeed(top_up.payment_intent_id)
    outcome = wallet.handle_stripe_webhook(payload, header)

    assert outcome.outcome == "granted"
    assert outcome.event_type == "payment_intent.succeeded"
    assert outcome.top_up_id == top_up.top_up_id
    assert outcome.credits_granted == Credits(100_000)
    assert wallet.balance(user) == Decimal("1000.00")
    assert isinstance(wallet.balance(user), Decimal)

    again = wallet.handle_stripe_webhook(payload, header)
    assert again.outcome == "duplicate"  # the same event id: already in the event log
    assert wallet.balance(user) == Decimal("1000.00")
    another = wallet.handle_stripe_webhook(*gateway.succeed(top_up.payment_intent_id))
    assert another.outcome == "already_granted"  # a new event about a granted payment
    assert wallet.balance(user) == Decimal("1000.00")


def test_top_up_with_an_idempotency_key_returns_the_same_top_up(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    first = wallet.top_up("lib-bob", "10.00", idempotency_key="order-1")
    second = wallet.top_up("lib-bob", "10.00", idempotency_key="order-1")

    assert second.top_up_id == first.top_up_id
    assert second.payment_intent_id == first.payment_intent_id
    assert second.client_secret == first.client_secret
    assert second.replayed and not first.replayed
    assert len(gateway.intents) == 1
    with pytest.raises(IdempotencyConflict):
        wallet.top_up("lib-bob", "11.00", idempotency_key="order-1")


def test_a_webhook_with_a_bad_signature_is_refused_and_grants_nothing(
    wallet: Wallet, gateway: FakePaymentGateway
) -> None:
    top_up = wallet.top_up("lib-carol", "10.00")
    payload, _ = gateway.succeed(top_up.payment_intent_id)
    _, forged = gateway.signed_event("payment_intent.succeeded", {}, secret="whsec_someone_else")

    with pytest.raises(InvalidWebhook):
        wallet.handle_stripe_webhook(payload, forged)
    with pytest.raises(InvalidWebhook):
        wallet.handle_stripe_webhook(payload, None)
    assert wallet.balance("lib-carol") == Decimal("0.00")


# -- grant, wallet -------------------------------------------------------------------------------


def test_grant_then_balance(wallet: Wallet) -> None:
    result = wallet.grant("lib-dave", "5.00", reason="welcome bonus", granted_by="support@example.com")

    assert result.user_id == "lib-dave"
    assert result.credits_granted == Credits(500)
    assert result.balance == Credits(500)
    assert wallet.balance("lib-dave") == Decimal("5.00")

    again = wallet.grant("lib-dave", "5.00", reason="welcome bonus", granted_by="support@example.com")
    assert wallet.balance("lib-dave") == Decimal("10.00")
    assert again.transaction_id != result.transaction_id


def test_grant_with_an_idempotency_key_grants_once(wallet: Wallet) -> None:
    first = wallet.grant("lib-erin", "5.00", reason="r", granted_by="ops", idempotency_key="t-1")
    second = wallet.grant("lib-erin", "5.00", reason="r", granted_by="ops", idempotency_key="t-1")

    assert second.transaction_id == first.transaction_id
    assert second.replayed
    assert wallet.balance("lib-erin") == Decimal("5.00")


def test_wallet_returns_the_transactions_newest_first(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    user = "lib-frank"
    top_up = wallet.top_up(user, "10.00")
    wallet.handle_stripe_webhook(*gateway.succeed(top_up.payment_intent_id))
    granted = wallet.grant(user, "2.50", reason="sorry for the outage", granted_by="ops")

    view = wallet.wallet(user)

    assert view.user_id == user
    assert view.balance == Credits(100_250)
    assert [str(t.kind) for t in view.transactions] == ["grant", "top_up"]
    newest, oldest = view.transactions
    assert newest.id == granted.transaction_id
    assert newest.credits == Credits(250) and newest.balance_after == Credits(100_250)
    assert newest.reason == "sorry for the outage"
    assert oldest.credits == Credits(100_000) and oldest.balance_after == Credits(100_000)
    assert oldest.reference_id == top_up.payment_intent_id

    assert [t.id for t in wallet.wallet(user, recent=1).transactions] == [granted.transaction_id]
    assert wallet.wallet(user, recent=0).transactions == []


def test_wallet_of_an_unknown_user_is_empty(wallet: Wallet) -> None:
    view = wallet.wallet("lib-nobody")
    assert view.balance == Credits(0)
    assert view.transactions == []
    assert wallet.balance("lib-nobody") == Decimal("0.00")


# -- invalid input -------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", ["abc", "0.99", "500.01", "-10.00", "10.001", 10.0, None, "NaN"])
def test_an_invalid_top_up_amount_raises_invalid_input_and_records_nothing(
    wallet: Wallet, gateway: FakePaymentGateway, amount: object
) -> None:
    with pytest.raises(InvalidInput) as caught:
        wallet.top_up("lib-gina", amount)
    assert caught.value.field == "amount_usd"
    assert gateway.create_calls == []
    assert wallet.wallet("lib-gina").transactions == []


@pytest.mark.parametrize("credits", ["abc", "0", "-1.00", "1.001", 1.5, None])
def test_an_invalid_grant_raises_invalid_input_and_records_nothing(wallet: Wallet, credits: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        wallet.grant("lib-hank", credits, reason="x", granted_by="ops")
    assert caught.value.field == "credits"
    assert wallet.balance("lib-hank") == Decimal("0.00")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda w: w.grant("bad user", "1.00", reason="x", granted_by="ops"), "user_id"),
        (lambda w: w.grant("lib-ivan", "1.00", reason="  ", granted_by="ops"), "reason"),
        (lambda w: w.top_up("bad user", "10.00"), "user_id"),
        (lambda w: w.top_up("lib-ivan", "10.00", idempotency_key="has space"), "Idempotency-Key"),
        (lambda w: w.balance(""), "user_id"),
    ],
)
def test_other_invalid_input_raises_invalid_input(wallet: Wallet, call: Callable[[Wallet], object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        call(wallet)
    assert caught.value.field == field


# -- no secrets shown ----------------------------------------------------------------------------


def test_repr_of_the_wallet_shows_no_secret(wallet: Wallet) -> None:
    shown = repr(wallet) + str(wallet)
    for secret in (WEBHOOK_SECRET, JWT_SECRET, "sk_test_e2e"):
        assert secret not in shown
    assert "FakePaymentGateway" in shown


def test_repr_of_a_wallet_with_the_real_stripe_gateway_shows_no_secret(
    make_container: Callable[..., Container], tmp_path: Path
) -> None:
    url = f"postgresql://wallet:{DB_PASSWORD}@127.0.0.1:1/wallet"
    container = make_container(url, stripe_secret_key=Secret(STRIPE_KEY))
    opened = open_wallet(container, migrate=False)  # nothing connects: the URL is never dialled

    shown = repr(opened) + str(opened) + repr(container.settings())
    for secret in (STRIPE_KEY, WEBHOOK_SECRET, JWT_SECRET, DB_PASSWORD):
        assert secret not in shown
    assert "StripePaymentGateway" in shown


# -- spending, holds, expiry, verify, history ----------------------------------------------------


def test_spend_takes_credits_once_per_key(wallet: Wallet) -> None:
    wallet.grant("lib-kim", "5.00", reason="r", granted_by="ops")
    spent = wallet.spend("lib-kim", "1.50", idempotency_key="s-1", reason="export", metadata={"job": "7"})
    again = wallet.spend("lib-kim", "1.50", idempotency_key="s-1", reason="export", metadata={"job": "7"})

    assert isinstance(spent, SpendResult)
    assert (spent.credits_spent, spent.balance, spent.replayed) == (Credits(150), Credits(350), False)
    assert again.replayed and again.transaction_id == spent.transaction_id
    assert wallet.balance("lib-kim") == Decimal("3.50")
    newest = wallet.wallet("lib-kim").transactions[0]
    assert (newest.kind, newest.actor, dict(newest.metadata)) == (TransactionKind.SPEND, "library", {"job": "7"})
    with pytest.raises(IdempotencyConflict):
        wallet.spend("lib-kim", "2.00", idempotency_key="s-1", reason="export")


def test_spend_beyond_the_balance_raises_and_writes_nothing(wallet: Wallet) -> None:
    wallet.grant("lib-lee", "1.00", reason="r", granted_by="ops")
    with pytest.raises(InsufficientCredits, match=r"1\.00"):
        wallet.spend("lib-lee", "1.01", idempotency_key="s-2", reason="x", actor="billing")
    with pytest.raises(InvalidInput) as caught:
        wallet.spend("lib-lee", "0.50", idempotency_key=None, reason="x")
    assert caught.value.field == "Idempotency-Key"
    assert wallet.balance("lib-lee") == Decimal("1.00")
    assert [t.kind for t in wallet.wallet("lib-lee").transactions] == [TransactionKind.GRANT]


def test_hold_capture_release(wallet: Wallet) -> None:
    wallet.grant("lib-max", "10.00", reason="r", granted_by="ops")
    first = wallet.hold("lib-max", "4.00", idempotency_key="h-1", reason="job", expires_in_seconds=600)
    second = wallet.hold("lib-max", "3.00", idempotency_key="h-2", reason="job")

    assert isinstance(first, HoldResult) and first.status is HoldStatus.OPEN
    view = wallet.wallet("lib-max")
    assert (view.balance, view.held) == (Credits(300), Credits(700))
    assert wallet.balance("lib-max") == Decimal("3.00")

    captured = wallet.capture(first.hold_id, "2.50", reason="final cost")
    released = wallet.release(second.hold_id)
    assert (captured.status, captured.captured, captured.balance) == (HoldStatus.CAPTURED, Credits(250), Credits(450))
    assert (released.status, released.balance) == (HoldStatus.RELEASED, Credits(750))
    assert wallet.capture(first.hold_id, "2.50").replayed
    with pytest.raises(HoldNotOpen):
        wallet.capture(second.hold_id)
    view = wallet.wallet("lib-max")
    assert (view.balance, view.held) == (Credits(750), Credits(0))
    assert wallet.verify() == []


def test_capture_without_an_amount_captures_the_whole_hold(wallet: Wallet) -> None:
    wallet.grant("lib-ned", "10.00", reason="r", granted_by="ops")
    held = wallet.hold("lib-ned", "4.00", idempotency_key="h-3", reason="job")
    assert wallet.capture(held.hold_id).captured == Credits(400)
    assert wallet.balance("lib-ned") == Decimal("6.00")


def test_expired_grants_and_holds_go_with_the_expiry_run(
    make_container: Callable[..., Container], database_url: str, gateway: FakePaymentGateway
) -> None:
    clock = MovableClock()
    container = make_container(database_url, gateway)
    container.clock.override(providers.Object(clock))
    wallet = open_wallet(container)
    user = f"lib-exp-{uuid.uuid4().hex[:8]}"  # the expiry run sees every wallet in the database
    granted = wallet.grant(user, "5.00", reason="promo", granted_by="ops", expires_at=clock() + timedelta(hours=1))
    wallet.grant(user, "2.00", reason="forever", granted_by="ops")
    wallet.hold(user, "1.00", idempotency_key=f"{user}-h", reason="job", expires_in_seconds=60)
    assert granted.expires_at is not None
    assert wallet.balance(user) == Decimal("6.00")

    clock.advance(hours=2)
    assert wallet.balance(user) == Decimal("2.00")  # the expired promotional 4.00 stop counting at once
    report = wallet.expire()
    assert report.holds_released >= 1 and report.wallets_expired >= 1
    view = wallet.wallet(user)
    # The hold took the promotional credits first; released after their expiry, they are booked out too.
    assert (view.balance, view.held) == (Credits(200), Credits(0))
    assert wallet.verify() == []
    assert len(wallet.audit().accounts) >= 2


def test_transactions_page_through_the_history(wallet: Wallet) -> None:
    for i in range(5):
        wallet.grant("lib-ola", "1.00", reason=f"g{i}", granted_by="ops")
    first = wallet.transactions("lib-ola", limit=2)
    assert isinstance(first, HistoryPage) and first.next_cursor
    rest = wallet.transactions("lib-ola", limit=10, cursor=first.next_cursor)
    assert rest.next_cursor is None
    assert [t.reason for t in first.transactions + rest.transactions] == ["g4", "g3", "g2", "g1", "g0"]
    with pytest.raises(InvalidInput):
        wallet.transactions("lib-ola", limit=0)


# -- payment lifecycle: the event log, debt, reconcile -----------------------------------------------


def test_a_charge_refunded_without_its_refunds_is_completed_from_stripe(
    wallet: Wallet, gateway: FakePaymentGateway
) -> None:
    top_up = wallet.top_up("lib-pia", "10.00")
    wallet.handle_stripe_webhook(*gateway.succeed(top_up.payment_intent_id))
    signed = gateway.refund(top_up.payment_intent_id, 400, include_refunds=False)
    assert signed is not None and b'"refunds"' not in signed[0]  # Stripe's newer API versions leave them out

    outcome = wallet.handle_stripe_webhook(*signed)

    assert outcome.outcome == "refunded"  # the wallet asked the gateway for the charge's refunds
    assert wallet.balance("lib-pia") == Decimal("600.00")
    assert wallet.handle_stripe_webhook(*signed).outcome == "duplicate"
    assert wallet.balance("lib-pia") == Decimal("600.00")


def test_events_are_the_payment_log_oldest_first(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    top_up = wallet.top_up("lib-quy", "10.00")
    pi = top_up.payment_intent_id
    assert wallet.events(pi) == []
    failed = wallet.handle_stripe_webhook(*gateway.fail(pi))
    granted = wallet.handle_stripe_webhook(*gateway.succeed(pi))

    events = wallet.events(pi)

    assert [e.event_id for e in events] == [failed.event_id, granted.event_id]
    assert [(e.type, e.outcome, e.source) for e in events] == [
        ("payment_intent.payment_failed", "failed", "webhook"),
        ("payment_intent.succeeded", "granted", "webhook"),
    ]
    assert all(e.top_up_id == top_up.top_up_id and e.payment_intent_id == pi for e in events)
    assert events[0].received_at <= events[1].received_at and events[0].received_at.tzinfo is not None
    for bad in ("", " pi_1", "pi\n1", "x" * 256):
        with pytest.raises(InvalidInput) as caught:
            wallet.events(bad)
        assert caught.value.field == "payment_intent_id"


@pytest.mark.parametrize("candidate", ["pi_3N4x", "pi-1", "pi.1", "pi 1", "pi_\u00e9", "x" * 255, "x" * 256, ""])
def test_the_library_and_the_rest_schema_accept_the_same_payment_intent_ids(wallet: Wallet, candidate: str) -> None:
    """One rule (wallet_core.ids): what the REST path refuses (422), the library refuses too."""
    from entrypoints.http.schemas import PAYMENT_INTENT_ID_PATTERN

    schema_accepts = re.fullmatch(PAYMENT_INTENT_ID_PATTERN, candidate) is not None
    try:
        wallet.events(candidate)
        library_accepts = True
    except InvalidInput as exc:
        assert exc.field == "payment_intent_id"
        library_accepts = False
    assert library_accepts == schema_accepts == (candidate == "pi_3N4x" or candidate == "x" * 255)


def test_a_wallet_is_the_core_service_and_debt_a_domain_rule() -> None:
    """`entrypoints.library` re-exports the core's application service and the view it answers."""
    from entrypoints import library
    from wallet_core.ledger import WalletView
    from wallet_core.service import Wallet as CoreWallet

    assert library.Wallet is CoreWallet and library.Balance is WalletView
    assert WalletView("u", Credits(-250)).debt == Credits(250)
    assert WalletView("u", Credits(250)).debt == Credits(0)


def test_debt_is_what_a_refund_of_spent_credits_leaves_owing(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    top_up = wallet.top_up("lib-rex", "10.00")
    wallet.handle_stripe_webhook(*gateway.succeed(top_up.payment_intent_id))
    assert wallet.wallet("lib-rex").debt == Credits(0)
    wallet.spend("lib-rex", "750.00", idempotency_key="r-1", reason="usage")

    refund_event = gateway.refund(top_up.payment_intent_id, 1000)
    assert refund_event is not None  # for the type checker: None only when asked for no event
    wallet.handle_stripe_webhook(*refund_event)

    view = wallet.wallet("lib-rex")
    assert (view.balance, view.debt) == (Credits(-75_000), Credits(75_000))
    assert wallet.balance("lib-rex") == Decimal("-750.00")
    assert [t.kind for t in view.transactions][:1] == [TransactionKind.REFUND]
    assert wallet.verify() == []
    with pytest.raises(InsufficientCredits, match=r"750\.00"):
        wallet.spend("lib-rex", "1.00", idempotency_key="r-2", reason="usage")
    wallet.grant("lib-rex", "1000.00", reason="goodwill", granted_by="ops")  # new credits repay it first
    view = wallet.wallet("lib-rex")
    assert (view.balance, view.debt) == (Credits(25_000), Credits(0))
    assert wallet.verify() == []


def test_reconcile_reports_progress_repairs_once_and_dry_run_changes_nothing(
    wallet: Wallet, gateway: FakePaymentGateway
) -> None:
    missed = wallet.top_up("lib-sue", "10.00")
    gateway.succeed(missed.payment_intent_id)  # no webhook
    seen: list[str] = []

    planned = wallet.reconcile(dry_run=True, progress=lambda intent: seen.append(intent.id))
    assert seen == [missed.payment_intent_id]
    assert (planned.checked, planned.repaired, planned.needs_review) == (1, 1, 0)
    assert wallet.balance("lib-sue") == Decimal("0.00")

    report = wallet.reconcile()
    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 0, 1, 0)
    assert wallet.balance("lib-sue") == Decimal("1000.00")
    assert [(e.outcome, e.source) for e in wallet.events(missed.payment_intent_id)] == [("granted", "reconcile")]
    assert wallet.reconcile().repaired == 0
    assert wallet.reconcile(since=datetime.now(UTC) + timedelta(days=1)).checked == 0
    with pytest.raises(InvalidInput) as caught:
        wallet.reconcile(since=datetime(2025, 1, 1))  # a naive time is refused
    assert caught.value.field == "since"
    assert wallet.verify() == []


def test_reconcile_without_stripe_raises_payments_not_configured(
    make_container: Callable[..., Container], sqlite_url: str
) -> None:
    opened = open_wallet(make_container(sqlite_url, FakePaymentGateway(configured=False)))
    with pytest.raises(PaymentsNotConfigured):
        opened.reconcile()


# -- corrections and lots --------------------------------------------------------------------------


def test_open_wallet_reverts_and_lists_the_lots_on_each_database(wallet: Wallet) -> None:
    from wallet_core.errors import NotRevertible
    from wallet_core.ledger import CreditKind

    promo = wallet.grant("lib-rev", "100.00", reason="promo", granted_by="ops", priority=10)
    wallet.grant("lib-rev", "50.00", reason="bank transfer", granted_by="ops", category="paid")
    spent = wallet.spend("lib-rev", "130.00", idempotency_key="lib-s-1", reason="usage")
    assert [(s.category, s.credits) for s in spent.sources] == [
        (CreditKind.PROMOTIONAL, Credits(10_000)), (CreditKind.PAID, Credits(3_000))]

    dry = wallet.revert(spent.transaction_id, reason="charged twice", idempotency_key="lib-r-1", dry_run=True)
    assert (dry.transaction_id, dry.dry_run, dry.balance) == (None, True, Credits(15_000))
    assert wallet.balance("lib-rev") == Decimal("20.00")
    reverted = wallet.revert(spent.transaction_id, reason="charged twice", idempotency_key="lib-r-1")
    assert (reverted.credits_reverted, reverted.balance, reverted.sources) == (Credits(13_000), Credits(15_000),
                                                                               spent.sources)
    taken = wallet.revert(promo.transaction_id, reason="wrong user", idempotency_key="lib-r-2")
    assert (taken.credits_reverted, taken.balance) == (Credits(10_000), Credits(5_000))
    with pytest.raises(NotRevertible, match="already reverted"):
        wallet.revert(promo.transaction_id, reason="again", idempotency_key="lib-r-3")

    view = wallet.wallet("lib-rev")
    assert [(lot.kind, lot.remaining) for lot in view.lots] == [(CreditKind.PAID, Credits(5_000))]
    history = {t.id: t for t in wallet.transactions("lib-rev").transactions}
    assert history[spent.transaction_id].reverted_by == reverted.transaction_id
    assert history[str(taken.transaction_id)].reverts == promo.transaction_id
    assert wallet.verify() == []
