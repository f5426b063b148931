"""The webhook delivery worker's loop, on the in-memory wallet and the fake sender: it delivers, pauses
only when a round found nothing, survives rounds that raise (logged, backed off), logs failed
attempts without secrets, and stop() lets the delivery in flight finish."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.fake_webhook_sender import FakeWebhookSender
from adapters.memory_ledger import InMemoryStore, in_memory_unit_of_work_factory
from entrypoints.worker import Deliverer, DeliveryWorker, run_until_signalled
from tests.unit.helpers import new_key
from wallet_core.clock import utc_now
from wallet_core.errors import StorageUnavailable
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases.auto_top_up import ChargeRound
from wallet_core.use_cases.webhook_delivery import PUBLISH_BATCH, DeliveryRound
from wallet_core.webhooks_out import DeliveryStatus, SendResult

URL = "https://hooks.example.com/wallet"


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.005)


@pytest.fixture
def sender() -> FakeWebhookSender:
    return FakeWebhookSender()


@pytest.fixture
def hooks(store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy, sender: FakeWebhookSender) -> Wallet:
    """A wallet on the real clock: the worker runs in real time."""
    return Wallet(
        uow=in_memory_unit_of_work_factory(store),
        gateway=gateway,
        policy=policy,
        clock=utc_now,
        webhook_sender=sender,
        webhook_retry_seconds=(3600,),
    )


@pytest.fixture
def workers() -> Iterator[list[DeliveryWorker]]:
    """Workers a test started; each is stopped afterwards, whatever the test did."""
    started: list[DeliveryWorker] = []
    yield started
    for worker in started:
        worker.stop(timeout=5)


def start(workers: list[DeliveryWorker], wallet: Deliverer, **options: Any) -> DeliveryWorker:
    worker = DeliveryWorker(wallet, **options)
    workers.append(worker)
    worker.start()
    return worker


def grant(wallet: Wallet) -> None:
    wallet.grant("alice", "10", reason="promo", granted_by="admin", idempotency_key=new_key())


def test_the_worker_delivers_what_is_granted_while_it_runs(
    hooks: Wallet, sender: FakeWebhookSender, workers: list[DeliveryWorker]
) -> None:
    endpoint = hooks.add_webhook_endpoint(URL, ["*"])
    worker = start(workers, hooks, poll_seconds=0.01)

    grant(hooks)
    grant(hooks)

    eventually(lambda: len(sender.sent) == 2)
    assert worker.stop(timeout=2)
    assert {d.status for d in hooks.webhook_deliveries(endpoint.id)} == {DeliveryStatus.DELIVERED}


def test_work_found_means_the_next_round_at_once_and_no_work_means_a_pause(
    hooks: Wallet, sender: FakeWebhookSender, workers: list[DeliveryWorker]
) -> None:
    hooks.add_webhook_endpoint(URL, ["*"])
    for _ in range(5):
        grant(hooks)

    started = time.monotonic()
    worker = start(workers, hooks, poll_seconds=30)  # one delivery per round, five rounds, no pause between

    eventually(lambda: len(sender.sent) == 5, timeout=3)
    assert time.monotonic() - started < 3
    eventually(lambda: worker.rounds == 6)  # the sixth found nothing: the worker now waits 30 s
    time.sleep(0.2)
    assert worker.rounds == 6


class Scripted:
    """Rounds as scripted (then idle ones), with when each began."""

    def __init__(self, *rounds: DeliveryRound) -> None:
        self.rounds = list(rounds)
        self.began: list[float] = []

    def deliver_webhooks(self, *, limit: int = 50) -> DeliveryRound:
        self.began.append(time.monotonic())
        return self.rounds.pop(0) if self.rounds else DeliveryRound(0, 0, 0, 0)


def test_a_round_that_emptied_the_queue_lets_new_events_gather_before_the_next(workers: list[DeliveryWorker]) -> None:
    """Events published but nothing left to deliver: the next round waits settle_seconds (so one round
    publishes what commits meanwhile), not poll_seconds; a full batch of events: the next at once."""
    scripted = Scripted(DeliveryRound(PUBLISH_BATCH, 0, 0, 0), DeliveryRound(3, 0, 0, 0))
    worker = start(workers, scripted, poll_seconds=30, settle_seconds=0.3)

    eventually(lambda: worker.rounds == 3)
    first, second, third = scripted.began[:3]
    assert second - first < 0.2  # the batch was full: more may be waiting
    assert 0.3 <= third - second < 5  # the queue was emptied: a short pause, not the 30 s poll
    time.sleep(0.4)
    assert worker.rounds == 3  # the third round found nothing: now the poll's 30 s


class Flaky:
    """Raises on the first calls as scripted, then hands the rounds to the wallet."""

    def __init__(self, wallet: Wallet, *errors: Exception) -> None:
        self.wallet = wallet
        self.errors = list(errors)

    def deliver_webhooks(self, *, limit: int = 50) -> DeliveryRound:
        if self.errors:
            raise self.errors.pop(0)
        return self.wallet.deliver_webhooks(limit=limit)


def test_a_round_that_raises_is_logged_and_the_worker_goes_on(
    hooks: Wallet, sender: FakeWebhookSender, workers: list[DeliveryWorker], caplog: pytest.LogCaptureFixture
) -> None:
    hooks.add_webhook_endpoint(URL, ["*"])
    grant(hooks)
    flaky = Flaky(hooks, StorageUnavailable("the database is locked"), RuntimeError("a bug"))

    with caplog.at_level(logging.WARNING, logger="wallet.webhooks"):
        worker = start(workers, flaky, poll_seconds=0.01, max_backoff_seconds=0.05)
        eventually(lambda: len(sender.sent) == 1)
        worker.stop(timeout=2)

    failures = [r for r in caplog.records if "round failed" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.WARNING]
    assert "StorageUnavailable: the database is locked" in failures[0].getMessage()
    assert not failures[0].exc_info  # a WalletError says what happened; a bug brings its traceback
    assert "RuntimeError" in failures[1].getMessage() and failures[1].exc_info
    assert worker.failures == 2


def test_the_wait_after_failed_rounds_doubles_up_to_the_maximum(
    hooks: Wallet, workers: list[DeliveryWorker], caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(hooks, *(StorageUnavailable("down") for _ in range(5)))

    with caplog.at_level(logging.WARNING, logger="wallet.webhooks"):
        worker = start(workers, flaky, poll_seconds=0.01, max_backoff_seconds=0.04)
        eventually(lambda: worker.failures == 5)

    waits = [r.__dict__["retry_in_seconds"] for r in caplog.records if "round failed" in r.getMessage()]
    assert waits == [0.02, 0.04, 0.04, 0.04, 0.04]


def test_failed_attempts_are_logged_as_a_warning_without_the_secret(
    hooks: Wallet, sender: FakeWebhookSender, workers: list[DeliveryWorker], caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = hooks.add_webhook_endpoint(URL, ["*"])
    grant(hooks)
    sender.answer_next(SendResult(500))

    with caplog.at_level(logging.DEBUG, logger="wallet"):
        worker = start(workers, hooks, poll_seconds=0.01)
        eventually(lambda: len(sender.sent) == 1)
        eventually(lambda: worker.rounds >= 2)
        worker.stop(timeout=2)

    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == "webhook round: 1 attempted, 0 delivered, 1 to be retried, 0 failed for good"
    logged = " ".join(repr(r.__dict__) for r in caplog.records)
    assert endpoint.secret not in logged


class Blocking(FakeWebhookSender):
    """A sender whose sends wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, url: str, *, secrets: tuple[str, ...], message_id: str, body: bytes, at: datetime) -> SendResult:
        self.entered.set()
        assert self.release.wait(10)
        return super().send(url, secrets=secrets, message_id=message_id, body=body, at=at)


def test_stop_waits_for_the_delivery_in_flight_and_starts_no_other(
    store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy, workers: list[DeliveryWorker]
) -> None:
    sender = Blocking()
    wallet = Wallet(uow=in_memory_unit_of_work_factory(store), gateway=gateway, policy=policy, webhook_sender=sender)
    endpoint = wallet.add_webhook_endpoint(URL, ["*"])
    grant(wallet)
    grant(wallet)
    worker = start(workers, wallet, poll_seconds=0.01)
    assert sender.entered.wait(5)

    assert worker.stop(timeout=0.2) is False  # still sending
    sender.release.set()
    assert worker.stop(timeout=5) is True

    assert len(sender.sent) == 1  # the one in flight finished; the second was never claimed
    statuses = sorted(d.status for d in wallet.webhook_deliveries(endpoint.id))
    assert statuses == [DeliveryStatus.DELIVERED, DeliveryStatus.PENDING]
    [pending] = wallet.webhook_deliveries(endpoint.id, status="pending")
    assert pending.attempts == 0  # untouched: the next worker takes it at once, no lease to wait out


def test_stop_returns_at_once_while_the_worker_waits_for_work(hooks: Wallet, workers: list[DeliveryWorker]) -> None:
    worker = start(workers, hooks, poll_seconds=60)
    eventually(lambda: worker.rounds == 1)

    started = time.monotonic()
    assert worker.stop(timeout=5)
    assert time.monotonic() - started < 0.5


def test_sigterm_stops_the_foreground_worker_after_its_round(hooks: Wallet, sender: FakeWebhookSender) -> None:
    hooks.add_webhook_endpoint(URL, ["*"])
    grant(hooks)
    worker = DeliveryWorker(hooks, poll_seconds=60)
    before = signal.getsignal(signal.SIGTERM)

    def terminate_once_delivered() -> None:
        eventually(lambda: len(sender.sent) == 1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_delivered, daemon=True).start()
    started = time.monotonic()
    run_until_signalled(worker)  # returns instead of being killed: the handler asked the worker to stop

    assert time.monotonic() - started < 5
    assert worker.stopping and len(sender.sent) == 1
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


class Unmigrated:
    """Rounds fail as on a database `wallet migrate` has not set up, until `migrated` is set."""

    def __init__(self, wallet: Wallet) -> None:
        self.wallet = wallet
        self.migrated = threading.Event()

    def deliver_webhooks(self, *, limit: int = 50) -> DeliveryRound:
        if not self.migrated.is_set():
            raise LookupError('relation "event_publication" does not exist')
        return self.wallet.deliver_webhooks(limit=limit)

    def charge_auto_top_ups(self, *, limit: int = 10) -> ChargeRound:
        if not self.migrated.is_set():
            raise LookupError('relation "auto_top_up_charges" does not exist')
        return self.wallet.charge_auto_top_ups(limit=limit)

    def problem(self) -> str | None:
        return None if self.migrated.is_set() else "the database schema is not set up: run `wallet migrate`"


def test_a_schema_not_migrated_yet_is_said_once_without_a_traceback_then_delivery_resumes(
    hooks: Wallet, sender: FakeWebhookSender, workers: list[DeliveryWorker], caplog: pytest.LogCaptureFixture
) -> None:
    hooks.add_webhook_endpoint(URL, ["*"])
    grant(hooks)
    unmigrated = Unmigrated(hooks)

    with caplog.at_level(logging.INFO, logger="wallet.webhooks"):
        worker = start(workers, unmigrated, poll_seconds=0.01, schema_problem=unmigrated.problem, charger=unmigrated)
        eventually(lambda: worker.failures >= 3)
        unmigrated.migrated.set()
        eventually(lambda: len(sender.sent) == 1, timeout=10)
        worker.stop(timeout=2)

    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert messages.count("webhook delivery waits: the database schema is not set up: run `wallet migrate`") == 1
    assert "webhook delivery resumes: the database schema is ready" in messages
    assert not any(r.exc_info for r in caplog.records)
    assert not any("round failed" in m or "charging failed" in m for m in messages)
