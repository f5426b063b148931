"""Outbound webhooks end to end, with real processes: `wallet serve` (its delivery thread) and
`wallet worker` on a SQLite file, a grant made over HTTP, and a real receiver on 127.0.0.1 that checks
the Standard Webhooks signature with the `standardwebhooks` library. Then the hard case: events made
while the receiver is down, the server killed with SIGKILL, started again with the receiver up: every
event is delivered, none lost.

Endpoints are registered through the library (the Wallet service on the same database), as the host
application would in-process; private URLs are allowed (WALLET_WEBHOOK_ALLOW_PRIVATE_URLS=true) because
the receiver is on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe
from dependency_injector import providers
from standardwebhooks import Webhook

from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from entrypoints.container import Container
from entrypoints.http.auth import JwtAuthenticator
from entrypoints.settings import Secret, Settings
from tests.fixtures.localstripe import LOCALSTRIPE_KEY
from tests.fixtures.webhook_receiver import Answer, Received, WebhookReceiver, closed_port
from wallet_core.saved_cards import SavedCard
from wallet_core.service import Wallet
from wallet_core.webhooks_out import Delivery, WebhookEndpoint

JWT_SECRET = "webhook-e2e-jwt-secret-" + secrets.token_hex(16)
START_TIMEOUT = 30.0


def free_port() -> int:
    return closed_port()


def env(database_url: str, **overrides: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WALLET_", "STRIPE_"))}
    base.update(
        WALLET_DATABASE_URL=database_url,
        WALLET_JWT_SECRET=JWT_SECRET,
        WALLET_WEBHOOK_ALLOW_PRIVATE_URLS="true",
        WALLET_WEBHOOK_RETRY_SECONDS="1,1,1,1,1,2,2,2,2,2,5,5,5,5,5,5,5,5,5,5",
        PYTHONUNBUFFERED="1",
    )
    base.update(overrides)
    return base


class Process:
    """`wallet <command>` in a subprocess, its output (JSON log lines) in a file."""

    def __init__(self, cwd: Path, environ: dict[str, str], *args: str) -> None:
        self.log_path = cwd / f"{args[0]}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", *args],
            env=environ,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def messages(self) -> list[str]:
        return [json.loads(line)["message"] for line in self.output().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


class Serve(Process):
    def __init__(self, cwd: Path, environ: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(cwd, environ, "serve", "--port", str(self.port))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"wallet serve exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            time.sleep(0.1)
        raise AssertionError(f"wallet serve was not ready within {START_TIMEOUT:.0f} s:\n{self.output()}")

    def grant(self, user: str, credits: str, key: str) -> dict[str, object]:
        token = JwtAuthenticator(Secret(JWT_SECRET)).mint("root", roles=["admin"])
        request = urllib.request.Request(
            f"{self.url}/api/v1/admin/users/{user}/wallet/grant",
            data=json.dumps({"credits": credits, "reason": "webhook e2e"}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Idempotency-Key": key},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 201
                granted: dict[str, object] = json.loads(answer.read())
                return granted
        except urllib.error.HTTPError as err:
            raise AssertionError(f"grant answered {err.code}: {err.read()!r}") from None


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def receivers() -> Iterator[list[WebhookReceiver]]:
    started: list[WebhookReceiver] = []
    yield started
    for receiver in started:
        receiver.close()


@contextlib.contextmanager
def library_wallet(database_url: str) -> Iterator[Wallet]:
    """The Wallet service in this process, on the servers' database, as the host application would
    use it (the HTTP route for endpoints is not part of this test)."""
    container = Container()
    container.settings.override(
        providers.Object(
            Settings(database_url=database_url, jwt_secret=Secret(JWT_SECRET), webhook_allow_private_urls=True)
        )
    )
    try:
        yield container.wallet()
    finally:
        container.shutdown_resources()


def eventually(read: Callable[[], list[Delivery]], timeout: float = 10) -> list[Delivery]:
    """What `read` returns once it is not empty (the worker stores an outcome just after the answer)."""
    deadline = time.monotonic() + timeout
    while not (found := read()):
        assert time.monotonic() < deadline, "nothing came in time"
        time.sleep(0.05)
    return found


def verified(received: list[Received], endpoint: WebhookEndpoint) -> dict[str, dict[str, Any]]:
    """Every body received, by event id, each checked with the endpoint's secret."""
    events: dict[str, dict[str, Any]] = {}
    for got in received:
        body = Webhook(endpoint.secret).verify(got.body, got.headers)
        assert got.headers["webhook-id"] == body["id"]
        events[body["id"]] = body
    return events


def test_wallet_serve_delivers_a_grant_made_over_http_signed_for_the_endpoint(
    tmp_path: Path, processes: list[Process], receivers: list[WebhookReceiver]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'wallet.sqlite3'}"
    receiver = WebhookReceiver().start()
    receivers.append(receiver)
    server = Serve(tmp_path, env(database_url))
    processes.append(server)
    with library_wallet(database_url) as wallet:
        endpoint = wallet.add_webhook_endpoint(receiver.url("/wallet-events"), ["credits.granted"])

        granted = server.grant("alice", "25.00", "e2e-grant-1")

        [got] = receiver.wait_for(1)
        body = Webhook(endpoint.secret).verify(got.body, got.headers)  # raises unless signed with the secret
        assert got.path == "/wallet-events"
        assert body["type"] == "credits.granted" and body["user_id"] == "alice"
        assert body["data"]["transaction_id"] == granted["transaction_id"]
        [delivery] = eventually(lambda: wallet.webhook_deliveries(endpoint.id, status="delivered"))
        assert delivery.event_id == body["id"]
        assert delivery.attempts == 1 and delivery.last_status_code == 200

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=20) == 0
    messages = server.messages()
    assert "webhook delivery worker started" in messages and "webhook delivery worker stopped" in messages
    assert messages.index("webhook delivery worker stopped") < messages.index("wallet stopped")
    assert endpoint.secret not in server.output()


def test_wallet_worker_delivers_for_a_server_whose_thread_is_off_and_exits_0_on_sigterm(
    tmp_path: Path, processes: list[Process], receivers: list[WebhookReceiver]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'wallet.sqlite3'}"
    receiver = WebhookReceiver().start()
    receivers.append(receiver)
    server = Serve(tmp_path, env(database_url, WALLET_WEBHOOK_WORKER="false"))
    processes.append(server)
    with library_wallet(database_url) as wallet:
        endpoint = wallet.add_webhook_endpoint(receiver.url(), ["*"])
        server.grant("bob", "5.00", "e2e-worker-1")
        time.sleep(2)
        assert receiver.received == []  # the server does not deliver

        worker = Process(tmp_path, env(database_url), "worker")
        processes.append(worker)
        [got] = receiver.wait_for(1, timeout=30)
        assert Webhook(endpoint.secret).verify(got.body, got.headers)["user_id"] == "bob"

    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=20) == 0, worker.output()
    assert worker.messages()[-1] == "webhook delivery worker stopped"
    assert "webhook delivery worker started" not in server.messages()


def test_events_made_while_the_receiver_is_down_survive_a_kill_9_and_are_all_delivered(
    tmp_path: Path, processes: list[Process], receivers: list[WebhookReceiver]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'wallet.sqlite3'}"
    port = free_port()  # the receiver's, nothing listening there yet
    first = Serve(tmp_path, env(database_url))
    processes.append(first)
    with library_wallet(database_url) as wallet:
        endpoint = wallet.add_webhook_endpoint(f"http://127.0.0.1:{port}/hooks", ["*"])
        transactions = {str(first.grant(f"user-{n % 3}", "3.00", f"down-{n}")["transaction_id"]) for n in range(8)}

        deadline = time.monotonic() + 30  # every delivery tried (refused) at least once before the kill
        while not all(d.attempts >= 1 for d in wallet.webhook_deliveries(endpoint.id)) or len(
            wallet.webhook_deliveries(endpoint.id)
        ) < len(transactions):
            assert time.monotonic() < deadline, first.output()
            time.sleep(0.1)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        pending = wallet.webhook_deliveries(endpoint.id, status="pending")
        assert len(pending) == len(transactions)  # none delivered, none given up

        receiver = WebhookReceiver(port=port).start()
        receivers.append(receiver)
        second = Serve(tmp_path, env(database_url))
        processes.append(second)

        # A delivery claimed at the moment of the kill waits for its lease (a minute) before its retry.
        deadline = time.monotonic() + 120
        while len(wallet.webhook_deliveries(endpoint.id, status="delivered")) < len(transactions):
            assert time.monotonic() < deadline, second.output()
            time.sleep(0.2)
        events = verified(receiver.received, endpoint)
        assert {str(e["data"]["transaction_id"]) for e in events.values()} == transactions
        assert {e["type"] for e in events.values()} == {"credits.granted"}
        pulled = wallet.events_after(None, limit=500).events
        assert {e.id for e in pulled} == set(events)  # every event the wallet recorded, delivered


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt(
    tmp_path: Path, processes: list[Process], receivers: list[WebhookReceiver]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'wallet.sqlite3'}"
    receiver = WebhookReceiver().start()
    receivers.append(receiver)
    receiver.answer_next(Answer(500), Answer(503))
    server = Serve(tmp_path, env(database_url))
    processes.append(server)
    with library_wallet(database_url) as wallet:
        endpoint = wallet.add_webhook_endpoint(receiver.url(), ["*"])

        server.grant("carol", "1.00", "e2e-third-attempt")

        [delivery] = eventually(lambda: wallet.webhook_deliveries(endpoint.id, status="delivered"), timeout=30)
        assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (3, 200, None)
        attempts = receiver.wait_for(3)
        assert len(attempts) == 3 and len({a.headers["webhook-id"] for a in attempts}) == 1  # one event, 3 tries
        assert all(Webhook(endpoint.secret).verify(a.body, a.headers) for a in attempts)


@pytest.mark.localstripe
def test_wallet_worker_charges_an_automatic_top_up_at_stripe_and_stops_on_sigterm(
    tmp_path: Path, processes: list[Process], localstripe_url: str, localstripe_client: stripe.StripeClient
) -> None:
    """A `wallet worker` process (the same environment as the servers) charges the automatic top-up a spend
    recorded in another process: the saved card at localstripe, off-session, under the top-up's id."""
    database_url = f"sqlite:///{tmp_path / 'wallet.sqlite3'}"
    engine = create_wallet_engine(database_url)
    upgrade(engine)  # what `wallet migrate` (or the first `wallet serve`) does
    with library_wallet(database_url) as wallet:
        wallet.grant("alice", "1000.00", reason="start", granted_by="test")
        customer = localstripe_client.v1.customers.create({"metadata": {"wallet_user_id": "alice"}}).id
        setup = localstripe_client.v1.setup_intents.create({"customer": customer, "usage": "off_session"})
        localstripe_client.v1.setup_intents.confirm(setup.id, {"payment_method": "pm_card_visa"})
        method = localstripe_client.v1.setup_intents.retrieve(setup.id).to_dict()["payment_method"]
        with sql_unit_of_work_factory(engine)() as tx:  # the card as the saved-cards flow stores it
            tx.saved_cards.set_customer("alice", customer, datetime.now(UTC))
            tx.saved_cards.save(SavedCard("alice", customer, method, "visa", "4242", 12, 2034, datetime.now(UTC)))
            tx.commit()
        wallet.put_auto_top_up("alice", "500.00", amount_usd="20.00")
        wallet.spend("alice", "600.00", idempotency_key="s-1", reason="usage")  # recorded, not charged

        stripe_env = env(database_url, STRIPE_SECRET_KEY=LOCALSTRIPE_KEY, STRIPE_API_BASE=localstripe_url)
        worker = Process(tmp_path, stripe_env, "worker", "--poll-seconds", "0.1")
        processes.append(worker)
        deadline = time.monotonic() + START_TIMEOUT
        while (attempt := wallet.auto_top_up("alice").rule.last_attempt) is None or attempt.payment_intent_id is None:
            assert time.monotonic() < deadline and worker.proc.poll() is None, worker.output()
            time.sleep(0.1)

    intent = localstripe_client.v1.payment_intents.retrieve(attempt.payment_intent_id).to_dict()
    assert intent["status"] == "succeeded" and intent["amount"] == 2000
    assert intent["metadata"]["wallet_top_up_id"] == attempt.top_up_id
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=20) == 0
    assert any("automatic top-ups: 1 claimed, 1 charged" in m for m in worker.messages()), worker.output()
    engine.dispose()
