"""Real `wallet serve` processes: killed in the middle of a burst of webhooks, and several of them on
one PostgreSQL database (scaled out behind a load balancer).

- Kill mid-burst: pending top-ups are recorded through the SQL adapter, signed
  payment_intent.succeeded deliveries are fired from threads, the server is SIGKILLed partway, started
  again, and everything is delivered again (retried like Stripe until 200). Every payment is granted
  exactly once and `wallet verify` passes. On PostgreSQL and on SQLite.
- Scale-out: three `wallet serve` processes on one PostgreSQL database. The same event delivered 10
  times at once over the three grants once; 60 concurrent spends of 1.00 from a wallet holding 50.00
  succeed exactly 50 times; retries with the same Idempotency-Key answer the first result.

Each test makes its own database (PostgreSQL: a throw-away database on WALLET_TEST_POSTGRES_URL's
server) and stops every process it started, whatever happens.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import jwt
import pytest
import stripe
from sqlalchemy import text

from adapters.sql.engine import create_wallet_engine
from adapters.sql.unit_of_work import SqlUnitOfWork
from tests.e2e.conftest import parallel
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUp, TopUpStatus

_SCRIPT = Path(sys.executable).with_name("wallet")
WALLET = str(_SCRIPT) if _SCRIPT.exists() else (shutil.which("wallet") or "wallet")
WEBHOOK_SECRET = "whsec_multiprocess_" + secrets.token_hex(8)
JWT_SECRET = "multiprocess-jwt-secret-" + secrets.token_hex(16)
AMOUNT_CENTS = 1000  # 10.00 USD each
CREDITS_MINOR = AMOUNT_CENTS * 100  # 1000.00 credits at the default 100 per dollar
START_TIMEOUT = 30.0


# -- processes ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALLET_", "STRIPE_"))}
    env.update(
        WALLET_DATABASE_URL=database_url,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        WALLET_JWT_SECRET=JWT_SECRET,
        WALLET_ENV="production",
    )
    return env


def _wallet(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WALLET, *args], env=_env(database_url), cwd=cwd, capture_output=True, text=True, timeout=120
    )


class Server:
    """`wallet serve` in a subprocess on `port`, its output in a log file."""

    def __init__(self, database_url: str, cwd: Path, name: str, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.log_path = cwd / f"{name}-{self.port}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [WALLET, "serve", "--port", str(self.port), "--threads", "8"],
            env=_env(database_url), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"wallet serve exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError):
                if _request(self.port, "GET", "/healthz", timeout=2)[0] == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"wallet serve did not answer /healthz within {START_TIMEOUT:.0f} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def _servers(database_url: str, cwd: Path, count: int) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for n in range(count):
            started.append(Server(database_url, cwd, f"server{n}"))
        yield [server.wait_ready() for server in started]
    finally:
        for server in started:
            server.stop()


# -- HTTP --------------------------------------------------------------------------------------
def _request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data or b"null")
        except ValueError:
            return resp.status, data.decode(errors="replace")
    finally:
        conn.close()


def _token(user: str, roles: list[str]) -> str:
    return jwt.encode({"sub": user, "roles": roles, "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")


@dataclass(frozen=True)
class Payment:
    payment_intent_id: str
    top_up_id: str
    user_id: str

    def event(self, event_id: str) -> tuple[bytes, dict[str, str]]:
        """A signed payment_intent.succeeded, signed now (as Stripe signs each delivery attempt)."""
        body = json.dumps({
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {"object": {
                "id": self.payment_intent_id,
                "object": "payment_intent",
                "amount": AMOUNT_CENTS,
                "amount_received": AMOUNT_CENTS,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {"wallet_top_up_id": self.top_up_id, "wallet_user_id": self.user_id},
            }},
        })
        signature = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
        return body.encode(), {"Stripe-Signature": signature, "Content-Type": "application/json"}


def _deliver(port: int, payment: Payment, event_id: str, timeout: float = 30) -> tuple[int, Any]:
    body, headers = payment.event(event_id)
    return _request(port, "POST", "/webhooks/stripe", body, headers, timeout=timeout)


def _deliver_until_ok(port: int, payment: Payment, event_id: str, deadline: float) -> str:
    """Retry like Stripe (after a 5xx or a connection error) until a 200; its outcome."""
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = _deliver(port, payment, event_id)
        except OSError as exc:
            last = exc
        else:
            if status == 200:
                return str(body["outcome"])
            assert status >= 500, (status, body)  # a 4xx would stop Stripe retrying: never for these
            last = (status, body)
        time.sleep(0.1)
    raise AssertionError(f"{payment.payment_intent_id} never answered 200; last: {last!r}")


# -- databases ---------------------------------------------------------------------------------
@pytest.fixture
def fresh_pg_url(fresh_postgres_url: str) -> str:
    """A new, empty database on the test server for this test alone, dropped afterwards."""
    return fresh_postgres_url


def _migrate(database_url: str, cwd: Path) -> None:
    done = _wallet(database_url, cwd, "migrate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database schema is up to date" in done.stdout


def _pending_top_ups(database_url: str, count: int, users: int, tag: str) -> list[Payment]:
    """`count` pending top-ups of 10.00 USD, round-robin over `users` wallets, recorded straight
    through the SQL adapter (as request_top_up would after Stripe created the PaymentIntent)."""
    engine = create_wallet_engine(database_url)
    payments = [
        Payment(f"pi_{tag}_{i:05d}", f"tu_{tag}_{i:05d}", f"{tag}-user{i % users:03d}") for i in range(count)
    ]
    try:
        with SqlUnitOfWork(engine) as tx:
            for p in payments:
                tx.top_ups.add(TopUp(
                    id=p.top_up_id, user_id=p.user_id, amount=Usd(AMOUNT_CENTS), currency="usd",
                    credits=Credits(CREDITS_MINOR), status=TopUpStatus.PENDING,
                    payment_intent_id=p.payment_intent_id, created_at=datetime.now(UTC),
                ))
            tx.commit()
    finally:
        engine.dispose()
    return payments


def _query(database_url: str, sql: str, **params: object) -> list[tuple[Any, ...]]:
    engine = create_wallet_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def _assert_granted_exactly_once(database_url: str, payments: list[Payment], tag: str) -> None:
    """One top-up ledger row per PaymentIntent, every top-up succeeded, balances add up."""
    pis = sorted(p.payment_intent_id for p in payments)
    refs = [r[0] for r in _query(
        database_url, "SELECT reference_id FROM credit_transactions WHERE kind = 'top_up' AND reference_id LIKE :t",
        t=f"pi_{tag}_%",
    )]
    assert sorted(refs) == pis, f"{len(refs)} top-up rows for {len(pis)} payments; twice: " + str(
        [r for r, n in Counter(refs).items() if n > 1][:5]
    )
    statuses = Counter(r[0] for r in _query(
        database_url, "SELECT status FROM top_ups WHERE payment_intent_id LIKE :t", t=f"pi_{tag}_%"
    ))
    assert statuses == Counter({"succeeded": len(pis)})
    expected: Counter[str] = Counter()
    for p in payments:
        expected[p.user_id] += CREDITS_MINOR
    balances = {u: int(a) for u, a, h in _query(
        database_url, "SELECT user_id, available, held FROM wallets WHERE user_id LIKE :t", t=f"{tag}-%"
    )}
    assert balances == dict(expected)


def _verify(database_url: str, cwd: Path) -> None:
    done = _wallet(database_url, cwd, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ledger OK"), done.stdout


# -- kill mid-burst ----------------------------------------------------------------------------
BURST = 200
BURST_USERS = 20
BURST_THREADS = 16
KILL_AFTER = 60  # 200 answers seen, then SIGKILL while the other deliveries are in flight


def _kill_mid_burst_then_redeliver(database_url: str, cwd: Path, tag: str) -> None:
    _migrate(database_url, cwd)
    payments = _pending_top_ups(database_url, BURST, BURST_USERS, tag)
    event_of = {p.payment_intent_id: f"evt_{tag}_{p.payment_intent_id}" for p in payments}

    first_answers: dict[str, str] = {}  # pi -> outcome, for the deliveries answered 200 before the kill
    failed: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()
    queue = list(reversed(payments))
    in_flight = [0]  # deliveries sent and not answered yet

    server = Server(database_url, cwd, f"{tag}-first").wait_ready()
    port = server.port
    try:
        def burst_worker() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    p = queue.pop()
                    in_flight[0] += 1
                try:
                    status, body = _deliver(port, p, event_of[p.payment_intent_id], timeout=10)
                except (OSError, http.client.HTTPException):  # killed mid-answer: IncompleteRead
                    status, body = None, None
                with lock:
                    in_flight[0] -= 1
                    if status == 200:
                        first_answers[p.payment_intent_id] = body["outcome"]
                        if len(first_answers) >= KILL_AFTER:
                            enough.set()
                    else:
                        failed.append(p.payment_intent_id)

        workers = [threading.Thread(target=burst_worker, daemon=True) for _ in range(BURST_THREADS)]
        for w in workers:
            w.start()
        assert enough.wait(timeout=60), f"only {len(first_answers)} answers before the kill:\n{server.output()}"
        with lock:
            in_flight_at_kill = in_flight[0]
        server.kill()
        for w in workers:
            w.join(timeout=60)
    finally:
        server.stop()

    assert KILL_AFTER <= len(first_answers) < BURST, len(first_answers)
    assert in_flight_at_kill > 0 and failed, "the kill interrupted nothing"
    assert set(first_answers.values()) == {"granted"}

    # Start again (same port, as a supervisor would) and let "Stripe" redeliver every event until 200.
    server = Server(database_url, cwd, f"{tag}-second", port=port).wait_ready()
    try:
        second_answers: dict[str, str] = {}
        deadline = time.monotonic() + 45
        shares = [payments[i::8] for i in range(8)]

        def redeliver(share: list[Payment]) -> None:
            for p in share:
                outcome = _deliver_until_ok(port, p, event_of[p.payment_intent_id], deadline)
                with lock:
                    second_answers[p.payment_intent_id] = outcome

        parallel([partial(redeliver, share) for share in shares])
        assert len(second_answers) == BURST
        # Answered "granted" before the kill: the redelivery is a duplicate. Never granted twice.
        for pi in first_answers:
            assert second_answers[pi] == "duplicate", (pi, second_answers[pi])
        assert set(second_answers.values()) <= {"granted", "duplicate"}, Counter(second_answers.values())
        granted = [pi for pi, o in first_answers.items() if o == "granted"]
        granted += [pi for pi, o in second_answers.items() if o == "granted"]
        assert sorted(granted) == sorted(set(granted))
        # Committed before the kill but the answer was lost: a duplicate now, without a "granted" answer.
        lost_answers = {pi for pi, o in second_answers.items() if o == "duplicate"} - set(first_answers)
        assert len(granted) + len(lost_answers) == BURST

        # One more round on a sample: the same event ids are duplicates; new ones find it granted.
        for p in payments[::20]:
            assert _deliver(port, p, event_of[p.payment_intent_id])[1]["outcome"] == "duplicate"
            assert _deliver(port, p, f"evt_{tag}_again_{p.payment_intent_id}")[1]["outcome"] == "already_granted"
    finally:
        server.stop()

    _assert_granted_exactly_once(database_url, payments, tag)
    events = _query(database_url, "SELECT event_id, outcome FROM payment_events WHERE event_id LIKE :t",
                    t=f"evt_{tag}_pi_%")
    assert sorted(e for e, _ in events) == sorted(event_of.values())
    assert {o for _, o in events} == {"granted"}
    _verify(database_url, cwd)


@pytest.mark.postgres
def test_kill_mid_burst_restart_redeliver_grants_each_payment_once_on_postgresql(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    _kill_mid_burst_then_redeliver(fresh_pg_url, tmp_path, "pgkill")


def test_kill_mid_burst_restart_redeliver_grants_each_payment_once_on_sqlite(tmp_path: Path) -> None:
    _kill_mid_burst_then_redeliver(f"sqlite:///{tmp_path / 'wallet.sqlite3'}", tmp_path, "sqlkill")


# -- scale-out: three servers on one PostgreSQL database ----------------------------------------
@pytest.mark.postgres
def test_three_servers_concurrent_duplicate_webhooks_grant_each_payment_once(fresh_pg_url: str, tmp_path: Path) -> None:
    _migrate(fresh_pg_url, tmp_path)
    tag = "scale"
    payments = _pending_top_ups(fresh_pg_url, 20, 4, tag)  # 5 payments per wallet: they contend for its lock
    with _servers(fresh_pg_url, tmp_path, 3) as servers:
        answers: dict[str, list[tuple[int, str]]] = {p.payment_intent_id: [] for p in payments}
        lock = threading.Lock()
        jobs: list[Callable[[], None]] = []
        for i, p in enumerate(payments):
            barrier = threading.Barrier(10)
            for j in range(10):
                def deliver(p: Payment = p, port: int = servers[(i + j) % 3].port,
                            barrier: threading.Barrier = barrier) -> None:
                    barrier.wait(timeout=30)
                    status, body = _deliver(port, p, f"evt_{tag}_{p.payment_intent_id}")
                    with lock:
                        answers[p.payment_intent_id].append((status, body.get("outcome", body)))
                jobs.append(deliver)
        parallel(jobs)

    for pi, got in answers.items():
        assert [s for s, _ in got] == [200] * 10, (pi, got)
        outcomes = Counter(o for _, o in got)
        assert outcomes["granted"] == 1, (pi, outcomes)
        assert set(outcomes) - {"granted"} <= {"duplicate", "already_granted"}, (pi, outcomes)
    _assert_granted_exactly_once(fresh_pg_url, payments, tag)
    _verify(fresh_pg_url, tmp_path)


def _spend(port: int, user: str, key: str, reason: str, credits: str = "1.00") -> tuple[int, Any]:
    headers = {
        "Authorization": f"Bearer {_token('billing', ['service'])}",
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }
    return _request(port, "POST", f"/api/v1/admin/users/{user}/wallet/spend",
                    json.dumps({"credits": credits, "reason": reason}).encode(), headers)


def _grant(port: int, user: str, credits: str) -> None:
    headers = {
        "Authorization": f"Bearer {_token('root', ['admin'])}",
        "Content-Type": "application/json",
        "Idempotency-Key": f"funding-{user}",
    }
    status, body = _request(port, "POST", f"/api/v1/admin/users/{user}/wallet/grant",
                            json.dumps({"credits": credits, "reason": "funding"}).encode(), headers)
    assert status == 201, body


def _balance(port: int, user: str) -> dict[str, Any]:
    body: dict[str, Any]
    status, body = _request(port, "GET", "/api/v1/users/me/wallet",
                            headers={"Authorization": f"Bearer {_token(user, [])}"})
    assert status == 200, body
    return body


@pytest.mark.postgres
def test_three_servers_concurrent_spends_never_overdraw_and_retries_answer_the_first_result(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    _migrate(fresh_pg_url, tmp_path)
    user, same_key_user = "spender", "one-key"
    with _servers(fresh_pg_url, tmp_path, 3) as servers:
        ports = [s.port for s in servers]
        _grant(ports[0], user, "50.00")
        _grant(ports[1], same_key_user, "5.00")

        # 60 distinct spends of 1.00 at once, spread over the three servers.
        first: dict[int, tuple[int, Any]] = {}
        lock = threading.Lock()
        barrier = threading.Barrier(60)

        def spend(i: int, port: int, into: dict[int, tuple[int, Any]]) -> None:
            barrier.wait(timeout=30)
            result = _spend(port, user, f"call-{i}", f"call {i}")
            with lock:
                into[i] = result

        parallel([partial(spend, i, ports[i % 3], first) for i in range(60)])
        codes = Counter(code for code, _ in first.values())
        assert codes == Counter({201: 50, 409: 10}), first
        assert sorted(body["balance"] for code, body in first.values() if code == 201) == sorted(
            f"{n}.00" for n in range(50)
        )
        assert all(body["title"] == "Insufficient credits" for code, body in first.values() if code == 409)

        # Every key again, at once, each on another server: the spends answer 200 with the first
        # body; the refused ones are still refused (nothing left); nothing moves.
        again: dict[int, tuple[int, Any]] = {}
        barrier = threading.Barrier(60)
        parallel([partial(spend, i, ports[(i + 1) % 3], again) for i in range(60)])
        for i, (code, body) in first.items():
            if code == 201:
                assert again[i] == (200, body), (i, body, again[i])
            else:
                assert again[i][0] == 409, again[i]

        wallet = _balance(ports[2], user)
        assert (wallet["balance"], wallet["held"], wallet["debt"]) == ("0.00", "0.00", "0.00")

        # One key sent 9 times at once over the three servers: spent once, the rest replay it.
        same: list[tuple[int, Any]] = []
        barrier9 = threading.Barrier(9)

        def same_key(port: int) -> None:
            barrier9.wait(timeout=30)
            result = _spend(port, same_key_user, "the-one-key", "one call", credits="2.00")
            with lock:
                same.append(result)

        parallel([partial(same_key, ports[n % 3]) for n in range(9)])
        assert sorted(code for code, _ in same) == [200] * 8 + [201], same
        assert len({json.dumps(body, sort_keys=True) for _, body in same}) == 1, same
        assert _balance(ports[0], same_key_user)["balance"] == "3.00"

    spends = _query(fresh_pg_url, "SELECT user_id, count(*), sum(credits) FROM credit_transactions "
                                  "WHERE kind = 'spend' GROUP BY user_id ORDER BY user_id")
    assert spends == [(same_key_user, 1, -200), (user, 50, -5000)]
    assert _query(fresh_pg_url, "SELECT available, held FROM wallets WHERE user_id = :u", u=user) == [(0, 0)]
    _verify(fresh_pg_url, tmp_path)
