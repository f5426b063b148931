"""The worker: rounds of `Wallet.deliver_webhooks()` until told to stop, each round first charging the
automatic top-ups due (`Wallet.charge_auto_top_ups()`) when given a `charger`.

It runs as a daemon thread of `wallet serve` (unless WALLET_WEBHOOK_WORKER=false) and in the
foreground as `wallet worker`. A round that filled its batch (more may be waiting) is followed by the
next at once; a round that found some work but emptied the queue by a short pause of `settle_seconds`,
so that the events committed meanwhile are published by one round together (a round's fixed cost, a
few statements and a commit on the one publication row, is then paid four times a second, not per
write: on PostgreSQL, rounds back to back cost the write path 13-18% over HTTP, docs/performance.md);
an idle round by a pause of `poll_seconds`. A round that raises (the database is down, anything) is
logged and the worker backs off and goes on: it never dies silently.

Each round claims at most `batch` deliveries (default one), so `stop()` waits only for the delivery in
flight, bounded by the sender's timeout (10 s): the deliveries not yet claimed stay pending for the
next worker, with no lease to wait out and no attempt counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from wallet_core.errors import WalletError
from wallet_core.use_cases.auto_top_up import ChargeRound
from wallet_core.use_cases.webhook_delivery import PUBLISH_BATCH, DeliveryRound

log = logging.getLogger("wallet.webhooks")

POLL_SECONDS = 1.0
SETTLE_SECONDS = 0.25  # after a round that emptied the queue: how long a new event may wait to be published
MAX_BACKOFF_SECONDS = 30.0
SCHEMA_RECHECK_SECONDS = 2.0  # while the schema is not migrated, try again this often


class Deliverer(Protocol):
    def deliver_webhooks(self, *, limit: int = ...) -> DeliveryRound: ...


class AutoTopUpCharger(Protocol):
    def charge_auto_top_ups(self, *, limit: int = ...) -> ChargeRound: ...


class DeliveryWorker:
    def __init__(
        self,
        wallet: Deliverer,
        *,
        poll_seconds: float = POLL_SECONDS,
        settle_seconds: float = SETTLE_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
        batch: int = 1,
        schema_problem: Callable[[], str | None] | None = None,
        charger: AutoTopUpCharger | None = None,
    ) -> None:
        """`schema_problem` (optional) says why the database cannot be used yet (its schema is not
        migrated), or None: asked after a round fails, so that a server started before `wallet migrate`
        logs one warning and waits, not a traceback every few seconds. `charger` (optional): charges the
        automatic top-ups due at the start of each round (at most `batch`), before the deliveries, so the
        events their outcome tells go out in the same round."""
        self._wallet = wallet
        self._charger = charger
        self._schema_problem = schema_problem
        self._waiting_for: str | None = None  # the schema problem last logged
        self.poll_seconds = poll_seconds
        self.settle_seconds = min(settle_seconds, poll_seconds)
        self.max_backoff_seconds = max_backoff_seconds
        self.batch = batch
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0  # rounds completed, failed ones included
        self.failures = 0  # rounds that raised

    def __repr__(self) -> str:
        return f"DeliveryWorker(poll_seconds={self.poll_seconds:g}, batch={self.batch}, rounds={self.rounds})"

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        """Deliver until stop() is called; returns once the round in flight has ended."""
        log.info("webhook delivery worker started", extra={"poll_seconds": self.poll_seconds})
        backoff = self.poll_seconds
        while not self._stopping.is_set():
            charged = self._charge()
            try:
                done = self._wallet.deliver_webhooks(limit=self.batch)
            except Exception as exc:  # noqa: BLE001 - one bad round must not end the worker (logged below)
                self.rounds += 1
                self.failures += 1
                backoff = min(max(backoff * 2, self.poll_seconds), self.max_backoff_seconds)
                waiting = self._log_failure(exc, backoff)
                self._stopping.wait(min(backoff, SCHEMA_RECHECK_SECONDS) if waiting else backoff)
                continue
            self.rounds += 1
            backoff = self.poll_seconds
            if self._waiting_for is not None:
                log.info("webhook delivery resumes: the database schema is ready")
                self._waiting_for = None
            _log_round(done)
            if charged >= self.batch:
                continue  # more automatic top-ups may be due: the next round at once
            if done.published == 0 and done.attempted == 0 and charged == 0:
                self._stopping.wait(self.poll_seconds)
            elif done.attempted < self.batch and done.published < PUBLISH_BATCH:
                self._stopping.wait(self.settle_seconds)
        log.info("webhook delivery worker stopped")

    def _charge(self) -> int:
        """Charge the automatic top-ups due (their own step: a failure here is logged and never keeps the
        round from delivering). Returns how many were claimed."""
        if self._charger is None:
            return 0
        try:
            done = self._charger.charge_auto_top_ups(limit=self.batch)
        except Exception as exc:  # logged; the charges stay due and are claimed again
            if self._schema_missing():
                return 0  # expected until `wallet migrate`: the delivery step says so, once
            what = f"{type(exc).__name__}: {exc.description}" if isinstance(exc, WalletError) else None
            log.warning("automatic top-up charging failed (%s)", what or f"{type(exc).__name__}, traceback below",
                        exc_info=what is None)
            return 0
        if done.claimed:
            log.info(
                "automatic top-ups: %d claimed, %d charged, %d declined, %d deferred, %d canceled",
                done.claimed, done.accepted, done.declined, done.deferred, done.canceled,
            )
        return done.claimed

    def _schema_missing(self) -> bool:
        try:
            return self._schema_problem is not None and self._schema_problem() is not None
        except Exception:  # noqa: BLE001 - the check is advice: without it the failure is logged in full
            return False

    def _log_failure(self, exc: Exception, backoff: float) -> bool:
        """Log why a round failed; True when it waits for the schema (`wallet migrate`)."""
        try:
            problem = self._schema_problem() if self._schema_problem is not None else None
        except Exception:  # noqa: BLE001 - the check is advice: without it the failure is logged in full
            problem = None
        if problem is not None:  # expected until `wallet migrate` runs: said once, no traceback
            if problem != self._waiting_for:
                log.warning("webhook delivery waits: %s", problem)
                self._waiting_for = problem
            return True
        # A WalletError (the database is down) says what happened; anything else is a bug: its traceback.
        what = f"{type(exc).__name__}: {exc.description}" if isinstance(exc, WalletError) else None
        log.warning(
            "webhook delivery round failed (%s); next try in %g s",
            what or f"{type(exc).__name__}, traceback below",
            backoff,
            exc_info=what is None,
            extra={"retry_in_seconds": backoff},
        )
        return False

    def start(self) -> threading.Thread:
        """Run in a daemon thread (of `wallet serve`)."""
        if self._thread is not None:
            raise RuntimeError("this worker was started already")
        self._thread = threading.Thread(target=self._run_logged, name="webhook-worker", daemon=True)
        self._thread.start()
        return self._thread

    def request_stop(self) -> None:
        """Stop after the round in flight; returns at once."""
        self._stopping.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the worker to stop and wait until the delivery in flight has ended (at most `timeout`
        seconds, None: as long as it takes). True when it has stopped."""
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run_logged(self) -> None:
        try:
            self.run()
        except BaseException:  # not Exception, which run() handles: say so before the thread ends
            log.exception("webhook delivery worker ended unexpectedly")
            raise


def _log_round(done: DeliveryRound) -> None:
    not_delivered = done.attempted - done.delivered
    if not_delivered:
        log.warning(
            "webhook round: %d attempted, %d delivered, %d to be retried, %d failed for good",
            done.attempted,
            done.delivered,
            not_delivered - done.failed,
            done.failed,
            extra={"attempted": done.attempted, "delivered": done.delivered, "failed": done.failed},
        )
    elif done.attempted or done.published:
        log.debug("webhook round: %d published, %d delivered", done.published, done.delivered)


def run_until_signalled(worker: DeliveryWorker) -> None:
    """`wallet worker`: deliver in the foreground until SIGTERM or SIGINT, then let the delivery in
    flight finish and return. The rounds run in the worker's thread; the main thread only waits, so the
    signal handler never interrupts the worker while it holds a lock."""
    import signal

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping on %s: finishing the delivery in flight", signal.Signals(signum).name)
        worker.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        thread = worker.start()
        while thread.is_alive():
            thread.join(0.5)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
