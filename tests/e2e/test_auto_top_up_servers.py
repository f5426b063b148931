"""Automatic top-up (issue 13) with real processes: `wallet serve` subprocesses, each with its worker thread
as shipped, the real Stripe adapter pointed at localstripe, and localstripe's own signed webhooks delivered
to one server's /webhooks/stripe. Nothing is signed or called in-process by the test.

- Two servers on one fresh PostgreSQL database: a card saved over HTTP (setup, confirmed at localstripe as
  Stripe.js would, complete), a rule put over HTTP, then 20 concurrent spends split over both servers that
  take the wallet below the threshold: localstripe holds exactly one PaymentIntent for the user, and the
  balance reaches the target through the webhook, granted once (`wallet verify`, the history, the rule).
- The monthly limit through the servers: the first crossing is charged, the second skipped
  (`skipped_monthly_limit`), and localstripe never sees a second PaymentIntent.
- A card that declines every charge (pm_card_chargeCustomerFail): three crossings, three failed attempts
  (the worker's answer and localstripe's payment_intent.payment_failed race; each counts once), the third
  disables the rule, and a fourth crossing charges nothing.
- The first scenario on SQLite with one server.

localstripe is shared by the test session and ignores idempotency keys: two charges sent for one top-up
would be two PaymentIntents there, which is what these tests count. It sends every event to every hook
ever registered; each test mutes its hook afterwards (localstripe cannot forget one).
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
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest
import stripe

from tests.e2e.conftest import parallel
from tests.fixtures.localstripe import LOCALSTRIPE_KEY, register_webhook

pytestmark = pytest.mark.localstripe

_SCRIPT = Path(sys.executable).with_name("wallet")
WALLET = str(_SCRIPT) if _SCRIPT.exists() else (shutil.which("wallet") or "wallet")
HOOK_SECRET = "whsec_auto_top_up_servers_" + secrets.token_hex(8)
JWT_SECRET = "auto-top-up-servers-jwt-secret-" + secrets.token_hex(16)
START_TIMEOUT = 30.0
WAIT_SECONDS = 20.0  # for the worker's round (about a second) and localstripe's webhook (a second late)
CREDITS_PER_USD = 100  # the default rate
SETUP = "/api/v1/users/me/wallet/payment-method/setup"
RULE = "/api/v1/users/me/wallet/auto-top-up"
WALLET_PATH = "/api/v1/users/me/wallet"
T = TypeVar("T")


# -- processes ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(database_url: str, localstripe_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALLET_", "STRIPE_"))}
    env.update(
        WALLET_DATABASE_URL=database_url,
        WALLET_JWT_SECRET=JWT_SECRET,
        WALLET_ENV="production",
        STRIPE_SECRET_KEY=LOCALSTRIPE_KEY,
        STRIPE_API_BASE=localstripe_url,
        STRIPE_WEBHOOK_SECRET=HOOK_SECRET,
        PYTHONUNBUFFERED="1",
    )
    return env


def _request(
    port: int, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=sent)
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


def _as(user: str, roles: list[str] | None = None, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {_token(user, roles or [])}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


class Server:
    """`wallet serve` in a subprocess (its worker thread on, as shipped), its output in a log file."""

    def __init__(self, env: dict[str, str], cwd: Path, name: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = cwd / f"{name}-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [WALLET, "serve", "--port", str(self.port), "--threads", "8"],
            env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"wallet serve exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError):
                if _request(self.port, "GET", "/readyz")[0] == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"wallet serve was not ready within {START_TIMEOUT:.0f} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@dataclass
class Cluster:
    """Servers on one database, localstripe's webhooks going to the first."""

    database_url: str
    env: dict[str, str]
    cwd: Path
    servers: list[Server]
    stripe: stripe.StripeClient  # the browser (Stripe.js) and the dashboard, at localstripe

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def call(self, method: str, path: str, body: object = None, *, user: str, roles: list[str] | None = None,
             key: str | None = None, on: int = 0, expect: tuple[int, ...] = (200, 201)) -> Any:
        status, answer = _request(self.ports[on % len(self.ports)], method, path, body, _as(user, roles, key))
        assert status in expect, (method, path, status, answer)
        return answer

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WALLET, *args], env=self.env, cwd=self.cwd, capture_output=True, text=True,
                              timeout=120)

    def logs(self) -> str:
        return "\n".join(f"--- {s.log_path.name}\n{s.output()}" for s in self.servers)


@contextlib.contextmanager
def _cluster(database_url: str, count: int, localstripe_url: str, client: stripe.StripeClient,
             cwd: Path) -> Iterator[Cluster]:
    env = _env(database_url, localstripe_url)
    migrated = subprocess.run([WALLET, "migrate"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    started: list[Server] = []
    hook = f"auto-top-up-servers-{uuid.uuid4().hex[:8]}"
    try:
        for n in range(count):
            started.append(Server(env, cwd, f"server{n}"))
        servers = [s.wait_ready() for s in started]
        hook_url = f"{servers[0].url}/webhooks/stripe"
        register_webhook(localstripe_url, hook, hook_url, HOOK_SECRET)
        try:
            yield Cluster(database_url, env, cwd, servers, client)
        finally:
            # localstripe cannot forget a hook: leave this one listening for an event that never comes.
            register_webhook(localstripe_url, hook, hook_url, HOOK_SECRET, events=["wallet.test.muted"])
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def two_servers_on_postgres(
    fresh_postgres_url: str, localstripe_url: str, localstripe_client: stripe.StripeClient, tmp_path: Path
) -> Iterator[Cluster]:
    with _cluster(fresh_postgres_url, 2, localstripe_url, localstripe_client, tmp_path) as cluster:
        yield cluster


@pytest.fixture
def one_server_on_sqlite(
    sqlite_url: str, localstripe_url: str, localstripe_client: stripe.StripeClient, tmp_path: Path
) -> Iterator[Cluster]:
    with _cluster(sqlite_url, 1, localstripe_url, localstripe_client, tmp_path) as cluster:
        yield cluster


# -- steps -------------------------------------------------------------------------------------
def wait_for(cluster: Cluster, what: str, probe: Callable[[], T], done: Callable[[T], bool]) -> T:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still {result!r} after {WAIT_SECONDS:.0f} s\n{cluster.logs()}")
        time.sleep(0.2)


def save_card(cluster: Cluster, user: str, card: str) -> str:
    """Save `card` as the frontend does: setup on one server, confirmCardSetup at Stripe, complete on the
    other. Returns the user's Stripe Customer id."""
    started = cluster.call("POST", SETUP, user=user, on=0, expect=(201,))
    cluster.stripe.v1.setup_intents.confirm(started["setup_intent_id"], {"payment_method": card})  # Stripe.js
    done = cluster.call("POST", f"{SETUP}/{started['setup_intent_id']}/complete", user=user, on=1)
    assert done["payment_method"]["id"].startswith("pm_"), done
    return str(started["customer_id"])


def grant(cluster: Cluster, user: str, credits: str) -> None:
    cluster.call("POST", f"/api/v1/admin/users/{user}/wallet/grant", {"credits": credits, "reason": "start"},
                 user="root", roles=["admin"], key=f"start-{user}", expect=(201,))


def spend(cluster: Cluster, user: str, credits: str, key: str, on: int = 0) -> None:
    cluster.call("POST", f"/api/v1/admin/users/{user}/wallet/spend", {"credits": credits, "reason": key},
                 user="billing", roles=["service"], key=key, on=on)


def put_rule(cluster: Cluster, user: str, rule: dict[str, str], on: int = 0) -> dict[str, Any]:
    answer: dict[str, Any] = cluster.call("PUT", RULE, rule, user=user, on=on)
    assert answer["status"] == "active", answer
    return answer


def rule_of(cluster: Cluster, user: str) -> dict[str, Any]:
    answer: dict[str, Any] = cluster.call("GET", RULE, user=user)
    return answer


def my_wallet(cluster: Cluster, user: str) -> dict[str, Any]:
    answer: dict[str, Any] = cluster.call("GET", WALLET_PATH, user=user)
    return answer


def intents_at_stripe(cluster: Cluster, customer_id: str) -> list[dict[str, Any]]:
    """Every PaymentIntent localstripe holds for the customer (it lists all of them; filtered here)."""
    listed = cluster.stripe.v1.payment_intents.list({"limit": 100})
    return [pi.to_dict() for pi in listed.auto_paging_iter() if pi.customer == customer_id]


def verify(cluster: Cluster) -> None:
    done = cluster.cli("verify")
    assert done.returncode == 0 and done.stdout.startswith("ledger OK"), done.stdout + done.stderr


def events_of(cluster: Cluster, user: str, type_: str) -> list[dict[str, Any]]:
    answer = cluster.call("GET", f"/api/v1/admin/events?user_id={user}&type={type_}", user="root", roles=["admin"])
    events: list[dict[str, Any]] = answer["events"]
    return events


def has_failures(count: int, rule: dict[str, Any]) -> bool:
    return bool(rule["consecutive_failures"] == count)


def cents(usd: Decimal) -> int:
    return int(usd * 100)


# -- the scenarios ------------------------------------------------------------------------------
def concurrent_spends_below_the_threshold_make_one_charge(cluster: Cluster) -> None:
    """Start 510.00, rule 500 -> 2000, 20 spends of 5.00 at once over every server: the third spend (in the
    order the wallet's lock serialises them) leaves 495.00 and records the one automatic top-up (15.05 USD,
    the 1505.00 credits missing); the 17 after it find it in flight (or, once granted, the wallet above the
    threshold). The balance ends at the target less the spends after the crossing, whenever the webhook came."""
    user = f"auto-{uuid.uuid4().hex[:10]}"
    start, threshold, target, each, count = Decimal("510.00"), Decimal("500.00"), Decimal("2000.00"), Decimal(5), 20
    grant(cluster, user, str(start))
    customer = save_card(cluster, user, "pm_card_visa")
    put_rule(cluster, user, {"threshold_credits": str(threshold), "target_credits": str(target)}, on=1)
    assert intents_at_stripe(cluster, customer) == []

    parallel([partial(spend, cluster, user, str(each), f"use-{i}", i) for i in range(count)], timeout=60)

    crossed_at = start - each * ((start - threshold) // each + 1)  # the first balance below the threshold
    missing = target - crossed_at
    expected_balance = start - each * count + missing
    done = wait_for(cluster, "the balance after the automatic top-up", lambda: my_wallet(cluster, user),
                    lambda w: Decimal(w["balance"]) == expected_balance)

    intents = intents_at_stripe(cluster, customer)
    assert len(intents) == 1, intents
    intent = intents[0]
    rule = rule_of(cluster, user)
    attempt = rule["last_attempt"]
    assert (attempt["outcome"], attempt["payment_intent_id"]) == ("succeeded", intent["id"]), rule
    assert (intent["status"], intent["amount"], intent["metadata"]["wallet_top_up_id"]) == (
        "succeeded", cents(missing / CREDITS_PER_USD), attempt["top_up_id"])
    saved = cluster.call("GET", "/api/v1/users/me/wallet/payment-method", user=user)["payment_method"]
    assert (intent["customer"], intent["payment_method"]) == (customer, saved["id"])
    top_ups = [t for t in done["transactions"] if t["kind"] == "top_up"]
    assert [(t["credits"], t["reference_id"]) for t in top_ups] == [(str(missing), intent["id"])]
    assert rule["charged_this_month_usd"] == str(missing / CREDITS_PER_USD)

    # The webhook localstripe delivered is what granted it, once.
    log = cluster.call("GET", f"/api/v1/admin/payments/{intent['id']}/events", user="root", roles=["admin"])
    assert [(e["type"], e["source"], e["outcome"]) for e in log["events"]] == [
        ("payment_intent.succeeded", "webhook", "granted")
    ], log
    told = events_of(cluster, user, "auto_top_up.succeeded")
    assert [e["data"]["top_up_id"] for e in told] == [attempt["top_up_id"]], told

    # One more worker round on each server later, still one charge and the same balance.
    time.sleep(2.5)
    assert len(intents_at_stripe(cluster, customer)) == 1
    assert Decimal(my_wallet(cluster, user)["balance"]) == expected_balance
    verify(cluster)


@pytest.mark.postgres
def test_two_servers_twenty_concurrent_spends_below_the_threshold_make_one_charge_granted_by_the_webhook(
    two_servers_on_postgres: Cluster,
) -> None:
    concurrent_spends_below_the_threshold_make_one_charge(two_servers_on_postgres)


def test_one_server_on_sqlite_twenty_concurrent_spends_make_one_charge_granted_by_the_webhook(
    one_server_on_sqlite: Cluster,
) -> None:
    concurrent_spends_below_the_threshold_make_one_charge(one_server_on_sqlite)


@pytest.mark.postgres
def test_the_monthly_limit_holds_through_the_servers(two_servers_on_postgres: Cluster) -> None:
    cluster = two_servers_on_postgres
    user = f"capped-{uuid.uuid4().hex[:10]}"
    grant(cluster, user, "600.00")
    customer = save_card(cluster, user, "pm_card_visa")
    put_rule(cluster, user, {"threshold_credits": "500.00", "amount_usd": "10.00", "monthly_limit_usd": "15.00"})

    spend(cluster, user, "200.00", "first-crossing", on=1)  # 400.00: 10.00 USD charged, 1000.00 credits
    wait_for(cluster, "the first automatic top-up", lambda: my_wallet(cluster, user)["balance"],
             lambda b: b == "1400.00")
    assert rule_of(cluster, user)["last_attempt"]["outcome"] == "succeeded"

    spend(cluster, user, "1000.00", "second-crossing", on=0)  # 400.00 again: 10.00 more would make 20.00 > 15.00
    rule = rule_of(cluster, user)
    assert rule["last_attempt"]["outcome"] == "skipped_monthly_limit", rule
    assert (rule["status"], rule["charged_this_month_usd"], rule["last_attempt"]["amount_usd"]) == (
        "active", "10.00", "10.00")
    assert rule["last_attempt"]["top_up_id"] is None

    time.sleep(2.5)  # worker rounds on both servers: nothing to charge
    intents = intents_at_stripe(cluster, customer)
    assert [(i["amount"], i["status"]) for i in intents] == [(1000, "succeeded")], intents
    assert my_wallet(cluster, user)["balance"] == "400.00"
    assert rule_of(cluster, user)["last_attempt"]["outcome"] == "skipped_monthly_limit"
    verify(cluster)


@pytest.mark.postgres
def test_a_card_that_declines_every_charge_disables_the_rule_after_three_through_the_servers(
    two_servers_on_postgres: Cluster,
) -> None:
    cluster = two_servers_on_postgres
    user = f"declined-{uuid.uuid4().hex[:10]}"
    grant(cluster, user, "600.00")
    customer = save_card(cluster, user, "pm_card_chargeCustomerFail")
    put_rule(cluster, user, {"threshold_credits": "500.00", "amount_usd": "20.00"})

    for n in range(1, 4):
        spend(cluster, user, "200.00" if n == 1 else "1.00", f"crossing-{n}", on=n)
        rule = wait_for(cluster, f"failed attempt {n}", partial(rule_of, cluster, user),
                        partial(has_failures, n))
        assert (rule["last_attempt"]["outcome"], rule["last_attempt"]["error_code"]) == ("failed", "card_declined")
    assert (rule["status"], rule["enabled"]) == ("disabled_after_failures", False)
    intents = intents_at_stripe(cluster, customer)
    assert len(intents) == 3 and {i["status"] for i in intents} == {"requires_payment_method"}, intents

    spend(cluster, user, "1.00", "crossing-4")  # disabled: nothing recorded, nothing charged
    time.sleep(2.5)  # the payment_failed webhooks (a second late) and worker rounds on both servers
    rule = rule_of(cluster, user)
    assert (rule["status"], rule["consecutive_failures"]) == ("disabled_after_failures", 3)
    assert len(intents_at_stripe(cluster, customer)) == 3
    for intent in intents:  # localstripe's payment_failed reached a server too, and counted no more failures
        log = cluster.call("GET", f"/api/v1/admin/payments/{intent['id']}/events", user="root", roles=["admin"])
        received = [(e["type"], e["source"]) for e in log["events"]]
        assert received == [("payment_intent.payment_failed", "webhook")], log
        assert log["events"][0]["outcome"] in ("failed", "ignored_late"), log  # whoever learnt it first
    assert len(events_of(cluster, user, "auto_top_up.failed")) == 3
    assert len(events_of(cluster, user, "auto_top_up.disabled")) == 1
    assert my_wallet(cluster, user)["balance"] == "397.00"
    verify(cluster)
