"""The server under pressure, through a real waitress socket (the server `wallet serve` builds):
idle or slow clients, a locked database and a hanging Stripe must not take /healthz or the other
routes down, and waitress's own error answers are JSON like the app's (issue 9, items 7, 8, 10, 12).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from adapters.fake_gateway import FakePaymentGateway
from adapters.sql.engine import create_wallet_engine
from entrypoints.http.app import create_app
from entrypoints.http.auth import JwtAuthenticator
from entrypoints.log_throttle import Throttle
from entrypoints.server import GracefulServer
from entrypoints.settings import Secret
from entrypoints.waitress_server import ServerLimits, create_wallet_server
from tests.e2e.conftest import WEBHOOK_SECRET, Service
from tests.e2e.test_faults import SlowStripe

WALLET = "/api/v1/users/me/wallet"
TOP_UP = "/api/v1/users/me/wallet/top-up"
FAST = 1.0  # seconds: what "answers at once" means here (it takes milliseconds)


@dataclass
class Running:
    host: str
    port: int


@contextlib.contextmanager
def wallet_server(svc: Service, **limits: int) -> Iterator[Running]:
    """The server `wallet serve` runs (create_wallet_server + GracefulServer), on a free port, in a thread."""
    server = create_wallet_server(create_app(svc.container), "127.0.0.1", 0, ServerLimits(**limits))
    graceful = GracefulServer(server, shutdown_timeout=2)
    thread = threading.Thread(target=graceful.run, daemon=True)
    thread.start()
    try:
        yield Running("127.0.0.1", int(server.effective_port))
    finally:
        graceful.stop()
        thread.join(timeout=10)


def request(server: Running, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict[str, str], bytes, float]:
    """Status, headers, body and the seconds it took; status 0 when no answer came within `timeout`."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read(), time.monotonic() - started
    except (TimeoutError, ConnectionError):
        return 0, {}, b"", time.monotonic() - started
    finally:
        conn.close()


def raw(server: Running, data: bytes, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    """Send `data` as is; the parsed answer."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def fake() -> FakePaymentGateway:
    return FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,))


def spend(
    svc: Service, server: Running, user: str, key: str, timeout: float = 30
) -> tuple[int, dict[str, str], bytes, float]:
    return request(server, "POST", f"/api/v1/admin/users/{user}/wallet/spend",
                   json.dumps({"credits": "1.00", "reason": "a call"}).encode(),
                   {**svc.auth("billing", service=True), "Content-Type": "application/json", "Idempotency-Key": key},
                   timeout=timeout)


@contextlib.contextmanager
def idle_connections(server: Running, count: int) -> Iterator[list[socket.socket]]:
    """`count` clients that connect and send nothing."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(5)
            sock.connect((server.host, server.port))
            socks.append(sock)
        time.sleep(0.3)  # the server has accepted what it will accept
        yield socks
    finally:
        for sock in socks:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


# -- item 7: idle connections ---------------------------------------------------------------------
def test_150_idle_connections_leave_healthz_and_the_wallet_routes_answering(
    make_service: Callable[..., Service],
) -> None:
    svc = make_service(fake())
    with wallet_server(svc) as server, idle_connections(server, 150):
        status, _, body, took = request(server, "GET", "/healthz", timeout=5)
        assert (status, json.loads(body)) == (200, {"status": "ok"}) and took < FAST, (status, took)
        status, _, body, took = request(server, "GET", WALLET, headers=svc.auth("alice"), timeout=5)
        assert status == 200 and took < FAST, (status, took)


def test_at_the_connection_limit_idle_connections_make_room_for_new_ones(make_service: Callable[..., Service]) -> None:
    svc = make_service(fake())
    with wallet_server(svc, connection_limit=20) as server, idle_connections(server, 60) as socks:
        for _ in range(3):
            status, _, _, took = request(server, "GET", "/healthz", timeout=5)
            assert status == 200 and took < FAST, (status, took)
        status, _, _, took = request(server, "GET", WALLET, headers=svc.auth("alice"), timeout=5)
        assert status == 200 and took < FAST, (status, took)
        # The longest idle were closed to make room; the server never holds more than its limit.
        assert closed_by_server(socks[0])


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(make_service: Callable[..., Service]) -> None:
    svc = make_service(fake())
    with wallet_server(svc, idle_timeout=1) as server, idle_connections(server, 1) as (sock,):
        deadline = time.monotonic() + 4
        while not closed_by_server(sock):
            assert time.monotonic() < deadline, "the idle connection is still open after 4 s"
            time.sleep(0.1)


# -- item 8: a locked database, a hanging Stripe --------------------------------------------------
@contextlib.contextmanager
def sqlite_writer_lock(sqlite_url: str) -> Iterator[None]:
    """Another process's writer holds SQLite's write lock on the wallet's file."""
    path = make_url(sqlite_url).database
    assert path
    other = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_sqlite_locked_healthz_answers_at_once_and_spends_503_within_the_lock_timeout(
    make_service: Callable[..., Service], sqlite_url: str
) -> None:
    bound = 1.5
    svc = make_service(fake(), db_lock_timeout_seconds=bound)
    with wallet_server(svc, threads=2) as server, sqlite_writer_lock(sqlite_url), ThreadPoolExecutor(4) as pool:
        spends = [pool.submit(spend, svc, server, "alice", f"k{i}") for i in range(4)]  # more than the workers
        time.sleep(0.3)
        status, _, _, took = request(server, "GET", "/healthz", timeout=5)
        assert status == 200 and took < FAST, (status, took)
        results = [f.result() for f in spends]
    for status, headers, body, took in results:
        assert status == 503, body
        assert headers.get("Retry-After") == "5"
        assert "locked" in json.loads(body)["description"]
        # Its own wait is bounded by the lock timeout; the last two also waited for a worker first.
        assert took < 2 * bound + 1.5, took
    assert min(r[3] for r in results) >= bound - 0.2
    assert svc.container.wallet().verify() == []


@pytest.mark.postgres
def test_postgresql_row_locked_spend_answers_503_within_the_lock_timeout(
    make_service: Callable[..., Service], postgres_url: str
) -> None:
    bound = 1.0
    svc = make_service(fake(), database_url=postgres_url, db_lock_timeout_seconds=bound)
    user = f"locked-{time.monotonic_ns()}"
    locker = create_wallet_engine(postgres_url)
    try:
        with wallet_server(svc, threads=2) as server:
            status, _, body, _ = request(server, "POST", f"/api/v1/admin/users/{user}/wallet/grant",
                                         json.dumps({"credits": "5.00", "reason": "funding"}).encode(),
                                         {**svc.auth("root", admin=True), "Content-Type": "application/json"})
            assert status == 201, body
            with locker.connect() as other:
                other.exec_driver_sql("SELECT * FROM wallets WHERE user_id = %(u)s FOR UPDATE", {"u": user})
                try:
                    status, headers, body, took = spend(svc, server, user, "k1", timeout=10)
                    health, _, _, health_took = request(server, "GET", "/healthz", timeout=5)
                finally:
                    other.rollback()
            assert status == 503, body
            assert headers.get("Retry-After") == "5"
            assert bound - 0.2 <= took < bound + 2, took
            assert health == 200 and health_took < FAST
            # The lock is gone: the client's retry with the same key spends once.
            status, _, body, _ = spend(svc, server, user, "k1")
            assert status == 201 and json.loads(body)["balance"] == "4.00", body
    finally:
        locker.dispose()


JWT = "liveness-jwt-secret-that-is-long-enough-0123456789"


def test_stripe_hanging_takes_at_most_half_the_workers_and_extra_top_ups_get_503(tmp_path: Path) -> None:
    """`wallet serve --threads 4` with a Stripe that never answers: at most 2 top-ups wait for it
    (half the threads, the default), the others get 503 Retry-After at once, and /healthz, the wallet
    and spends keep answering."""
    from tests.e2e.test_operations import clean_env, free_port

    with SlowStripe(delay=60) as stripe_server:
        port = free_port()
        env = clean_env(WALLET_JWT_SECRET=JWT, STRIPE_SECRET_KEY="sk_test_liveness_0123456789",
                        STRIPE_API_BASE=stripe_server.url, STRIPE_TIMEOUT_SECONDS="30")
        proc = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port),
                                 "--threads", "4"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            server = Running("127.0.0.1", port)
            deadline = time.monotonic() + 30
            while request(server, "GET", "/healthz", timeout=1)[0] != 200:
                assert proc.poll() is None and time.monotonic() < deadline, "wallet serve did not start"
                time.sleep(0.1)
            auth = JwtAuthenticator(Secret(JWT))
            buyer = {"Authorization": f"Bearer {auth.mint('buyer')}", "Content-Type": "application/json"}
            with ThreadPoolExecutor(6) as pool:
                top_ups = [pool.submit(request, server, "POST", TOP_UP, json.dumps({"amount_usd": "10.00"}).encode(),
                                       buyer, 5) for _ in range(6)]
                deadline = time.monotonic() + 5  # generous: the machine may be busy; each answer's own time is checked
                while sum(f.done() for f in top_ups) < 4 and time.monotonic() < deadline:
                    time.sleep(0.05)
                refused = [f.result() for f in top_ups if f.done()]
                health = request(server, "GET", "/healthz", timeout=5)
                wallet = request(server, "GET", WALLET, headers=buyer, timeout=5)
                spent = request(server, "POST", "/api/v1/admin/users/buyer/wallet/spend",
                                json.dumps({"credits": "1.00", "reason": "a call"}).encode(),
                                {"Authorization": f"Bearer {auth.mint('billing', roles=['service'])}",
                                 "Content-Type": "application/json", "Idempotency-Key": "k1"}, timeout=5)
            assert len(refused) == 4, [r[0] for r in refused]
            for status, headers, body, took in refused:
                assert status == 503 and headers.get("Retry-After") == "5", body
                assert json.loads(body)["title"] == "Payment provider busy"
                assert took < FAST, took
            assert len(stripe_server.requests) == 2, stripe_server.requests
            assert health[0] == 200 and health[3] < FAST, health
            assert wallet[0] == 200 and wallet[3] < FAST, wallet
            assert spent[0] == 409 and spent[3] < FAST, spent  # answered (nothing to spend), not stuck
        finally:
            proc.kill()
            proc.wait(timeout=10)


# -- item 10: waitress's own errors are JSON -------------------------------------------------------
def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict[str, str]:
    assert status == expected, (status, body[:200])
    assert headers.get("Content-Type") == "application/json", headers
    payload: dict[str, str] = json.loads(body)
    assert set(payload) == {"title", "description"} and all(payload.values()), payload
    return payload


def test_a_body_too_large_for_the_server_gets_a_json_413(service: Service) -> None:
    with wallet_server(service) as server:
        for size in (65_537, 66_560, 1_000_000):  # the app refuses the first, waitress the others
            status, headers, body, _ = request(server, "POST", TOP_UP, b"{" + b" " * (size - 2) + b"}",
                                               {**service.auth("alice"), "Content-Type": "application/json"})
            payload = assert_json_error(status, headers, body, 413)
            # The same answer the app gives a body of 65,537 bytes, which waitress lets through.
            assert payload == {"title": "Body too large", "description": "the body must be at most 65536 bytes"}


def test_a_batch_of_spends_may_be_up_to_1_mib_and_the_server_says_so_above(service: Service) -> None:
    with wallet_server(service) as server:
        auth = {**service.auth("billing", service=True), "Content-Type": "application/json"}
        item = {"user_id": "alice", "credits": "1.00", "reason": "x" * 500, "idempotency_key": "k"}
        fits = json.dumps({"spends": [item] * 1000}).encode()  # ~570 KB: over 64 KiB, under 1 MiB
        status, _, body, _ = request(server, "POST", "/api/v1/admin/spends", fits, auth)
        assert status == 200, body[:300]
        assert {r["status"] for r in json.loads(body)["results"]} == {"insufficient_credits"}  # alice has nothing
        for size in (1_048_577, 1_049_601, 2_000_000):  # the app refuses the first, waitress the others
            status, headers, body, _ = request(server, "POST", "/api/v1/admin/spends",
                                               b"{" + b" " * (size - 2) + b"}", auth)
            payload = assert_json_error(status, headers, body, 413)
            assert payload == {"title": "Body too large", "description": "the body must be at most 1048576 bytes"}


def test_headers_too_large_get_a_json_431(service: Service) -> None:
    with wallet_server(service) as server:
        for size in (70_000, 300_000):
            status, headers, body = raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size
                                        + b"\r\n\r\n")
            assert_json_error(status, headers, body, 431)


@pytest.mark.parametrize("data", [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET\x00 / HTTP/1.1\r\n\r\n",
    b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
])
def test_a_malformed_request_gets_a_json_400(service: Service, data: bytes) -> None:
    with wallet_server(service) as server:
        status, headers, body = raw(server, data)
        assert_json_error(status, headers, body, 400)


# -- item 12: one log line per cause --------------------------------------------------------------
def test_database_503s_log_the_cause_once_not_once_per_request(
    make_service: Callable[..., Service], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc = make_service(fake(), db_lock_timeout_seconds=0.2)
    with wallet_server(svc, threads=2) as server, sqlite_writer_lock(sqlite_url), \
            caplog.at_level(logging.WARNING, logger="entrypoints.http.errors"):
        statuses = [spend(svc, server, "alice", f"k{i}")[0] for i in range(5)]
    assert statuses == [503] * 5
    lines = [r.getMessage() for r in caplog.records if r.name == "entrypoints.http.errors"]
    assert len(lines) == 1, lines
    assert "database is locked" in lines[0] and "OperationalError" in lines[0], lines


def test_the_throttle_logs_a_cause_again_after_its_interval_saying_how_many_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttle = Throttle(logging.getLogger("test.throttle"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        assert throttle.warning("locked", "db: %s", "locked")
        assert not throttle.warning("locked", "db: %s", "locked")
        assert not throttle.warning("locked", "db: %s", "locked")
        assert throttle.warning("down", "db: %s", "down")  # another cause is logged at once
        now[0] = 61.0
        assert throttle.warning("locked", "db: %s", "locked")
    assert [r.getMessage() for r in caplog.records] == [
        "db: locked", "db: down", "db: locked (2 more like it in the last 60s not logged)",
    ]
