"""Faults from outside: the database locked or down, Stripe slow or down.

What must hold (the issue): while the database is locked or unreachable, a signed webhook answers 5xx
(so Stripe retries) and grants nothing, and a top-up answers 503; when the database comes back the
same service recovers by itself and the redelivered webhook grants exactly once. While Stripe is slow
or down a top-up answers 502 within the configured timeout and records nothing, so no pending top-up
is ever left without its PaymentIntent id.

SQLite is locked by a second connection holding BEGIN IMMEDIATE on the wallet's file. PostgreSQL is
"down" behind a TCP forwarder in this file (`TcpProxy`) that the test stops and starts, dropping
every connection; the real server is never touched. Stripe is a local HTTP server that answers too
late, or a port nobody listens on, behind the real `StripePaymentGateway`.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from sqlalchemy import text
from sqlalchemy.engine import make_url

from adapters.fake_gateway import FakePaymentGateway
from adapters.sql.engine import create_wallet_engine
from entrypoints.http.app import create_app
from tests.e2e.conftest import WEBHOOK_SECRET, RunningServer, Service, build_service, make_settings, run_waitress

TOP_UP = "/api/v1/users/me/wallet/top-up"
WEBHOOK = "/webhooks/stripe"
WALLET = "/api/v1/users/me/wallet"
SHORT_BUSY_TIMEOUT = 0.5  # seconds SQLite waits for a lock before "database is locked"


# -- helpers -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fake() -> FakePaymentGateway:
    return FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,))


def _deliver(client: testing.TestClient, payload: bytes, signature: str) -> testing.Result:
    return client.simulate_post(
        WEBHOOK, body=payload, headers={"Stripe-Signature": signature, "Content-Type": "application/json"}
    )


def _top_up(svc: Service, user: str, amount: str = "10.00", key: str | None = None) -> testing.Result:
    headers = svc.auth(user)
    if key is not None:
        headers["Idempotency-Key"] = key
    return svc.client.simulate_post(TOP_UP, json={"amount_usd": amount}, headers=headers)


def _rows(engine_url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_wallet_engine(engine_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


@contextlib.contextmanager
def _short_timeout_sqlite_service(sqlite_url: str, gateway: FakePaymentGateway) -> Iterator[Service]:
    """A service wired like production (container, migrations, the wallet's SQLite engine: WAL,
    BEGIN IMMEDIATE) with a short lock timeout, as WALLET_DB_LOCK_TIMEOUT_SECONDS sets it."""
    svc = build_service(make_settings(sqlite_url, db_lock_timeout_seconds=SHORT_BUSY_TIMEOUT), gateway)
    try:
        yield svc
    finally:
        svc.container.shutdown_resources()


@contextlib.contextmanager
def _sqlite_writer_lock(sqlite_url: str) -> Iterator[sqlite3.Connection]:
    """Another process's writer: BEGIN IMMEDIATE on the wallet's file, held until the block ends."""
    path = make_url(sqlite_url).database
    assert path
    other = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
        other.execute("ROLLBACK")
    finally:
        other.close()


def _sqlite_count(sqlite_url: str, sql: str) -> int:
    path = make_url(sqlite_url).database
    assert path
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(sql).fetchone()[0])


# -- SQLite locked ------------------------------------------------------------------------------
def test_sqlite_locked_webhook_answers_503_grants_nothing_then_grants_once_when_released(sqlite_url: str) -> None:
    gateway = _fake()
    with _short_timeout_sqlite_service(sqlite_url, gateway) as svc:
        pending = _top_up(svc, "alice", key="order-1")
        assert pending.status_code == 201, pending.text
        payload, signature = gateway.succeed(pending.json["payment_intent_id"])

        with _sqlite_writer_lock(sqlite_url):
            started = time.monotonic()
            resp = _deliver(svc.client, payload, signature)
            took = time.monotonic() - started
            assert resp.status_code == 503, resp.text
            assert resp.headers.get("Retry-After") == "5"
            assert "locked" in resp.json["description"]
            assert took < SHORT_BUSY_TIMEOUT + 3, took
            # Stripe retries: still locked, still 503.
            assert _deliver(svc.client, payload, signature).status_code == 503

        assert _sqlite_count(sqlite_url, "SELECT count(*) FROM credit_transactions") == 0
        assert _sqlite_count(sqlite_url, "SELECT count(*) FROM payment_events") == 0
        assert _sqlite_count(sqlite_url, "SELECT count(*) FROM top_ups WHERE status = 'pending'") == 1

        # The lock is gone: Stripe's next retry grants, and only once.
        first = _deliver(svc.client, payload, signature)
        assert (first.status_code, first.json["outcome"]) == (200, "granted"), first.text
        again = _deliver(svc.client, payload, signature)
        assert (again.status_code, again.json["outcome"]) == (200, "duplicate")
        wallet = svc.client.simulate_get(WALLET, headers=svc.auth("alice"))
        assert wallet.json["balance"] == "1000.00"
        assert [t["kind"] for t in wallet.json["transactions"]] == ["top_up"]
        assert svc.container.wallet().verify() == []


def test_sqlite_locked_top_up_answers_503_and_leaves_no_top_up_without_its_intent(sqlite_url: str) -> None:
    gateway = _fake()
    with _short_timeout_sqlite_service(sqlite_url, gateway) as svc, _sqlite_writer_lock(sqlite_url):
        # With a key or without, the earlier top-up and the user's limits are read first, in a writing
        # unit of work: the lock answers 503 before Stripe is asked for anything, so no PaymentIntent
        # exists that the wallet does not know. (An intent made before recording its top-up failed is
        # canceled when there was no key: tests/unit/test_request_top_up.py.)
        keyed = _top_up(svc, "bob", key="order-7")
        assert keyed.status_code == 503, keyed.text
        unkeyed = _top_up(svc, "bob")
        assert unkeyed.status_code == 503, unkeyed.text
        assert "client_secret" not in unkeyed.text
        assert gateway.create_calls == []

    with _short_timeout_sqlite_service(sqlite_url, gateway) as svc:
        assert _sqlite_count(sqlite_url, "SELECT count(*) FROM top_ups") == 0
        # The buyer's retry with the same key now works: one top-up, with its PaymentIntent id.
        retry = _top_up(svc, "bob", key="order-7")
        assert retry.status_code == 201, retry.text
        rows = _rows(sqlite_url, "SELECT status, payment_intent_id FROM top_ups")
        assert rows == [("pending", retry.json["payment_intent_id"])]


def test_sqlite_locked_answers_503_after_the_configured_lock_timeout(
    make_service: Callable[..., Service], sqlite_url: str
) -> None:
    """WALLET_DB_LOCK_TIMEOUT_SECONDS bounds the wait for SQLite's write lock (default 5 s): the
    request waits that long, then 503; nothing is written."""
    gateway = _fake()
    svc = make_service(gateway, db_lock_timeout_seconds=2.0)
    pending = _top_up(svc, "carol", key="order-1")
    assert pending.status_code == 201
    payload, signature = gateway.succeed(pending.json["payment_intent_id"])
    with _sqlite_writer_lock(sqlite_url):
        started = time.monotonic()
        resp = _deliver(svc.client, payload, signature)
        took = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert 1.8 <= took < 4, took
    assert _sqlite_count(sqlite_url, "SELECT count(*) FROM credit_transactions") == 0
    assert _deliver(svc.client, payload, signature).json["outcome"] == "granted"


# -- PostgreSQL down (behind a TCP proxy the test controls) -------------------------------------
class TcpProxy:
    """Forwards 127.0.0.1:port to target. stop() closes the listener and every forwarded connection
    (the database "goes away"); start() listens again on the same port (it "comes back").
    freeze() keeps the connections open but forwards nothing, and accepts new ones without ever
    connecting them (a host that stopped answering: power loss, network partition)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._frozen = threading.Event()
        self._thread: threading.Thread | None = None
        self.accepted = 0

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._frozen.clear()
        self._running.set()
        self._thread = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def freeze(self) -> None:
        self._frozen.set()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            client.settimeout(None)
            self._track(client)
            if self._frozen.is_set():
                continue  # accepted, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._track(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self._frozen.is_set() and self._running.is_set():
                    time.sleep(0.05)  # hold the bytes: the peer hears nothing
                if not self._running.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def pg_url(fresh_postgres_url: str) -> str:
    """A new, empty database for this test alone (the fake gateway's ids restart at pi_fake_1 for
    every service, so services must not share one), dropped afterwards."""
    return fresh_postgres_url


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A running TcpProxy in front of the test database's server, and the database URL through it."""
    url = make_url(pg_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    try:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    finally:
        proxy.stop()


def _warm_pool(svc: Service, connections: int) -> None:
    """Leave `connections` open connections in the engine's pool, as a busy server would."""
    engine = svc.container.engine()
    held = [engine.connect() for _ in range(connections)]
    for conn in held:
        conn.exec_driver_sql("SELECT 1")
    for conn in held:
        conn.close()


def _until_ok(request: Callable[[], testing.Result], *, attempts: int) -> tuple[testing.Result, list[int]]:
    """Send like Stripe would (again after a 5xx), at most `attempts` times; the last answer and
    every status seen."""
    seen: list[int] = []
    for _ in range(attempts):
        resp = request()
        seen.append(resp.status_code)
        if resp.status_code < 500:
            return resp, seen
    return resp, seen


@pytest.mark.postgres
def test_postgresql_down_webhook_and_top_up_answer_503_then_the_service_recovers_by_itself(
    make_service: Callable[..., Service], pg_proxy: tuple[TcpProxy, str], pg_url: str
) -> None:
    proxy, url = pg_proxy
    gateway = _fake()
    svc = make_service(gateway, database_url=url)
    user = f"pg-down-{time.monotonic_ns()}"
    pending = _top_up(svc, user, key="order-1")
    assert pending.status_code == 201, pending.text
    pi = pending.json["payment_intent_id"]
    payload, signature = gateway.succeed(pi)
    _warm_pool(svc, 3)
    calls_before = len(gateway.create_calls)

    proxy.stop()
    try:
        for _ in range(3):  # Stripe retrying: each answer is a 5xx, none grants
            resp = _deliver(svc.client, payload, signature)
            assert resp.status_code == 503, resp.text
            assert resp.headers.get("Retry-After") == "5"
            assert "127.0.0.1" not in resp.text and str(proxy.port) not in resp.text  # no host or URL leaks
        keyed = _top_up(svc, user, key="order-2")
        assert keyed.status_code == 503, keyed.text
        unkeyed = _top_up(svc, user)
        assert unkeyed.status_code == 503, unkeyed.text
        assert "client_secret" not in unkeyed.text
        # The earlier top-up and the limits are read before Stripe is asked: with the database down,
        # Stripe never is.
        assert len(gateway.create_calls) == calls_before
        assert svc.client.simulate_get(WALLET, headers=svc.auth(user)).status_code == 503
    finally:
        proxy.start()

    # Nothing was written while it was down (checked on the real server, not through the proxy).
    assert _rows(pg_url, f"SELECT count(*) FROM credit_transactions WHERE user_id = '{user}'") == [(0,)]
    assert _rows(pg_url, f"SELECT count(*) FROM payment_events WHERE payment_intent_id = '{pi}'") == [(0,)]

    # Back: no restart of the service; at most the first request may still meet a dead connection.
    first, seen = _until_ok(lambda: _deliver(svc.client, payload, signature), attempts=2)
    assert (first.status_code, first.json.get("outcome")) == (200, "granted"), (seen, first.text)
    again = _deliver(svc.client, payload, signature)
    assert (again.status_code, again.json["outcome"]) == (200, "duplicate")
    retried = _top_up(svc, user, key="order-2")
    assert retried.status_code == 201, retried.text
    wallet = svc.client.simulate_get(WALLET, headers=svc.auth(user))
    assert wallet.status_code == 200 and wallet.json["balance"] == "1000.00"
    assert [t["kind"] for t in wallet.json["transactions"]] == ["top_up"]
    rows = _rows(pg_url, f"SELECT status, payment_intent_id FROM top_ups WHERE user_id = '{user}' ORDER BY id")
    assert sorted(rows) == sorted([("succeeded", pi), ("pending", retried.json["payment_intent_id"])])


@pytest.mark.postgres
def test_postgresql_restart_while_idle_fails_at_most_the_first_request(
    make_service: Callable[..., Service], pg_proxy: tuple[TcpProxy, str], pg_url: str
) -> None:
    """A database restart while the server is idle leaves a pool of dead connections: the first
    request may fail with 503, every later one must succeed (no pre-ping needed)."""
    proxy, url = pg_proxy
    gateway = _fake()
    svc = make_service(gateway, database_url=url)
    user = f"pg-restart-{time.monotonic_ns()}"
    events = []
    for n in range(4):
        resp = _top_up(svc, user, key=f"order-{n}")
        assert resp.status_code == 201, resp.text
        events.append(gateway.succeed(resp.json["payment_intent_id"]))
    _warm_pool(svc, 5)

    proxy.restart()  # every pooled connection is now dead

    statuses = []
    outcomes = []
    for payload, signature in events:
        resp, seen = _until_ok(partial(_deliver, svc.client, payload, signature), attempts=3)
        statuses += seen
        outcomes.append(resp.json.get("outcome"))
    wallet = svc.client.simulate_get(WALLET, headers=svc.auth(user))
    statuses.append(wallet.status_code)
    failures = [i for i, code in enumerate(statuses) if code >= 500]
    assert failures in ([], [0]), statuses
    assert outcomes == ["granted"] * 4
    assert wallet.json["balance"] == "4000.00"
    assert svc.container.wallet().verify() == []


@contextlib.contextmanager
def _serving(svc: Service) -> Iterator[RunningServer]:
    yield from run_waitress(create_app(svc.container), threads=4)


def _post_with_timeout(
    server: RunningServer, path: str, body: bytes, headers: dict[str, str], timeout: float
) -> int | None:
    """The status, or None when no answer came within `timeout` seconds."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except TimeoutError:
        return None
    finally:
        conn.close()


BOUND = 15.0  # seconds within which a locked or unreachable PostgreSQL must have been answered 5xx


@pytest.mark.postgres
def test_postgresql_locked_webhook_answers_5xx_within_a_bound(
    make_service: Callable[..., Service], pg_url: str
) -> None:
    gateway = _fake()
    svc = make_service(gateway, database_url=pg_url)
    user = f"pg-locked-{time.monotonic_ns()}"
    pending = _top_up(svc, user, key="order-1")
    assert pending.status_code == 201
    payload, signature = gateway.succeed(pending.json["payment_intent_id"])
    locker = create_wallet_engine(pg_url)
    status: int | None = None
    try:
        with _serving(svc) as server, locker.connect() as other:
            # e.g. a long migration, or an operator's open transaction: the tables are locked.
            other.exec_driver_sql("LOCK TABLE payment_events, top_ups, wallets IN ACCESS EXCLUSIVE MODE")
            try:
                status = _post_with_timeout(
                    server, WEBHOOK, payload,
                    {"Stripe-Signature": signature, "Content-Type": "application/json"}, BOUND,
                )
            finally:
                other.rollback()  # let the stuck request finish before the server stops
            time.sleep(0.5)
    finally:
        locker.dispose()
    assert status is not None and status >= 500, f"no answer within {BOUND:.0f} s" if status is None else status


@pytest.mark.postgres
def test_postgresql_host_not_answering_new_connections_answers_5xx_within_a_bound(
    make_service: Callable[..., Service], pg_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, url = pg_proxy
    gateway = _fake()
    svc = make_service(gateway, database_url=url)
    user = f"pg-gone-{time.monotonic_ns()}"
    pending = _top_up(svc, user, key="order-1")
    assert pending.status_code == 201
    payload, signature = gateway.succeed(pending.json["payment_intent_id"])
    with _serving(svc) as server:
        # The host stops answering (connections are accepted by its kernel, then silence), and the
        # pool holds nothing usable: as after a restart whose dead connections were thrown away.
        proxy.freeze()
        svc.container.engine().dispose()
        try:
            status = _post_with_timeout(
                server, WEBHOOK, payload, {"Stripe-Signature": signature, "Content-Type": "application/json"}, BOUND
            )
        finally:
            proxy.restart()  # resets the stuck connections, so the stuck request ends
            time.sleep(0.5)
    assert status is not None and status >= 500, f"no answer within {BOUND:.0f} s" if status is None else status


# -- Stripe slow or down ------------------------------------------------------------------------
class SlowStripe:
    """An HTTP server that answers every request only after `delay` seconds (or when stopped)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests: list[str] = []
        self._release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _slow(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer._release.wait(outer.delay)
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b"{}")

            do_GET = do_POST = _slow

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> SlowStripe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def _real_stripe_service(make_service: Callable[..., Service], api_base: str, timeout: float) -> Service:
    """The production gateway (StripePaymentGateway, the `stripe` SDK) pointed at `api_base`."""
    return make_service(None, stripe_api_base=api_base, stripe_timeout_seconds=timeout)


def test_stripe_slow_top_up_answers_502_within_the_timeout_and_records_nothing(
    make_service: Callable[..., Service], sqlite_url: str
) -> None:
    with SlowStripe(delay=30) as stripe_server:
        svc = _real_stripe_service(make_service, stripe_server.url, timeout=1.0)
        for key, calls in (("order-1", 1), (None, 2)):
            started = time.monotonic()
            resp = _top_up(svc, "dora", key=key)
            took = time.monotonic() - started
            assert resp.status_code == 502, resp.text
            assert "timed out" in resp.json["description"] or "could not be reached" in resp.json["description"]
            # The timeout bounds the whole call, the SDK's retries included (adapters/stripe_http.py):
            # about 1 s, not the 30 s Stripe would take, nor 3 attempts of 1 s and their back-off.
            # Without a key the create is sent once more, to cancel the intent it may have made.
            assert took < 1.5 * calls + 1, took
        # One attempt for the keyed top-up; two for the other, under the same Stripe idempotency key.
        assert len(stripe_server.requests) == 3, stripe_server.requests
        assert all(r.startswith("POST /v1/payment_intents") for r in stripe_server.requests)
    assert _sqlite_count(sqlite_url, "SELECT count(*) FROM top_ups") == 0
    assert _sqlite_count(sqlite_url, "SELECT count(*) FROM credit_transactions") == 0


def test_stripe_down_top_up_answers_502_and_records_nothing(
    make_service: Callable[..., Service], sqlite_url: str
) -> None:
    closed = _free_port()  # bound, then released: nobody listens there
    svc = _real_stripe_service(make_service, f"http://127.0.0.1:{closed}", timeout=1.0)
    started = time.monotonic()
    resp = _top_up(svc, "erin", key="order-1")
    took = time.monotonic() - started
    assert resp.status_code == 502, resp.text
    assert "could not be reached" in resp.json["description"]
    assert "sk_test" not in resp.text
    assert took < 8, took
    assert _sqlite_count(sqlite_url, "SELECT count(*) FROM top_ups") == 0


def test_stripe_timeout_setting_reaches_the_gateway(make_service: Callable[..., Service], tmp_path: Path) -> None:
    svc = _real_stripe_service(make_service, "http://127.0.0.1:9", timeout=2.5)
    gateway = svc.container.gateway()
    assert gateway.timeout_seconds == 2.5
    default = make_service(None, database_url=f"sqlite:///{tmp_path / 'other.sqlite3'}")
    assert default.container.gateway().timeout_seconds == 10.0
