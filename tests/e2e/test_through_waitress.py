"""Over a real waitress socket: the whole top-up loop, 20 concurrent deliveries of one event, and
10 concurrent spends from a wallet that covers only 5."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from entrypoints.http.app import create_app
from tests.e2e.conftest import WEBHOOK_SECRET, RunningServer, Service, run_waitress
from wallet_core.use_cases import verify_ledger


@contextmanager
def serving(svc: Service) -> Iterator[RunningServer]:
    yield from run_waitress(create_app(svc.container), threads=8)


def _request(
    server: RunningServer,
    method: str,
    path: str,
    body: str | bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_full_loop_top_up_webhook_balance(service: Service) -> None:
    with serving(service) as server:
        auth = service.auth("alice")
        status, top_up = _request(server, "POST", "/api/v1/users/me/wallet/top-up",
                                  json.dumps({"amount_usd": "10.00"}),
                                  {**auth, "Content-Type": "application/json"})
        assert status == 201
        payload, signature = service.gateway.succeed(top_up["payment_intent_id"])
        status, hook = _request(server, "POST", "/webhooks/stripe", payload,
                                {"Stripe-Signature": signature, "Content-Type": "application/json"})
        assert (status, hook["outcome"]) == (200, "granted")
        status, wallet = _request(server, "GET", "/api/v1/users/me/wallet", headers=auth)
        assert status == 200 and wallet["balance"] == "1000.00"


def _twenty_concurrent_deliveries(svc: Service) -> None:
    status, top_up = None, None
    with serving(svc) as server:
        status, top_up = _request(server, "POST", "/api/v1/users/me/wallet/top-up",
                                  json.dumps({"amount_usd": "7.00"}),
                                  {**svc.auth("racer"), "Content-Type": "application/json"})
        assert status == 201
        payload, signature = svc.gateway.succeed(top_up["payment_intent_id"])
        barrier = threading.Barrier(20)
        results: list[tuple[int, object]] = []
        lock = threading.Lock()

        def deliver() -> None:
            barrier.wait()
            code, body = _request(server, "POST", "/webhooks/stripe", payload,
                                  {"Stripe-Signature": signature, "Content-Type": "application/json"})
            with lock:
                results.append((code, body.get("outcome") if isinstance(body, dict) else body))

        threads = [threading.Thread(target=deliver) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status, wallet = _request(server, "GET", "/api/v1/users/me/wallet", headers=svc.auth("racer"))
    assert all(code == 200 for code, _ in results), results
    outcomes = [outcome for _, outcome in results]
    assert outcomes.count("granted") == 1
    # The others either saw the logged event ("duplicate") or lost the race on the ledger's reference.
    assert set(outcomes) - {"granted"} <= {"duplicate", "already_granted"}
    assert wallet["balance"] == "700.00"
    assert [t["kind"] for t in wallet["transactions"]] == ["top_up"]


def test_twenty_concurrent_deliveries_grant_once_on_sqlite(make_service: Callable[..., Service]) -> None:
    _twenty_concurrent_deliveries(make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,))))


@pytest.mark.postgres
def test_twenty_concurrent_deliveries_grant_once_on_postgresql(
    make_service: Callable[..., Service], fresh_postgres_url: str
) -> None:
    # A database of its own: the fake gateway's PaymentIntent ids start again at 1 in every test, so on
    # the session's database this met pi_fake_1 of an earlier test (when integration tests ran first).
    svc = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), database_url=fresh_postgres_url)
    _twenty_concurrent_deliveries(svc)


def _ten_concurrent_spends(svc: Service, user: str) -> None:
    """10 spends of 1.00 at once from a wallet holding 5.00: exactly 5 succeed, never below zero."""
    with serving(svc) as server:
        status, _ = _request(server, "POST", f"/api/v1/admin/users/{user}/wallet/grant",
                             json.dumps({"credits": "5.00", "reason": "funding"}),
                             {**svc.auth("root", admin=True), "Content-Type": "application/json"})
        assert status == 201
        service_auth = svc.auth("billing", service=True)
        commits = len(svc.commits)
        barrier = threading.Barrier(10)
        results: list[tuple[int, dict[str, Any]]] = []
        lock = threading.Lock()

        def spend(i: int) -> None:
            barrier.wait()
            code, body = _request(server, "POST", f"/api/v1/admin/users/{user}/wallet/spend",
                                  json.dumps({"credits": "1.00", "reason": f"call {i}"}),
                                  {**service_auth, "Content-Type": "application/json",
                                   "Idempotency-Key": f"{user}-call-{i}"})
            with lock:
                results.append((code, body))

        threads = [threading.Thread(target=spend, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        spend_commits = len(svc.commits) - commits
        status, wallet = _request(server, "GET", "/api/v1/users/me/wallet", headers=svc.auth(user))
    assert 1 <= spend_commits <= 5  # each spend in one commit at most; with group commit, several share one
    codes = sorted(code for code, _ in results)
    assert codes == [201] * 5 + [409] * 5, results
    assert sorted(body["balance"] for code, body in results if code == 201) == ["0.00", "1.00", "2.00", "3.00",
                                                                                  "4.00"]
    assert all(body["title"] == "Insufficient credits" for code, body in results if code == 409)
    assert status == 200 and (wallet["balance"], wallet["held"]) == ("0.00", "0.00")
    assert sorted(t["kind"] for t in wallet["transactions"]) == ["grant"] + ["spend"] * 5
    assert verify_ledger(uow=svc.container.unit_of_work()) == []


def test_ten_concurrent_spends_never_overdraw_on_sqlite(make_service: Callable[..., Service]) -> None:
    _ten_concurrent_spends(make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,))), "spender")


def test_ten_concurrent_spends_never_overdraw_on_sqlite_without_group_commit(
    make_service: Callable[..., Service],
) -> None:
    svc = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), group_commit=False)
    assert svc.container.wallet()._spends is None  # WALLET_GROUP_COMMIT=false: each spend its own transaction
    _ten_concurrent_spends(svc, "spender")


@pytest.mark.postgres
def test_ten_concurrent_spends_never_overdraw_on_postgresql(
    make_service: Callable[..., Service], postgres_url: str
) -> None:
    svc = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), database_url=postgres_url)
    assert svc.container.wallet()._spends is not None  # group commit: on by default
    _ten_concurrent_spends(svc, f"spender-{uuid.uuid4().hex[:8]}")


def test_swagger_ui_and_its_bundled_files_are_served_over_the_socket(service: Service) -> None:
    """/docs/ui works with no network beyond this server: the page and Swagger UI's script come from it."""
    from swagger_ui.utils import SWAGGER_UI_PY_ROOT

    with serving(service) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        try:
            conn.request("GET", "/docs/ui")
            page = conn.getresponse()
            text = page.read().decode()
            assert page.status == 200 and page.getheader("Content-Type", "").startswith("text/html")
            assert "/docs/ui/static/swagger-ui-bundle.js" in text and "https://" not in text
            conn.request("GET", "/docs/ui/static/swagger-ui-bundle.js")
            script = conn.getresponse()
            body = script.read()
        finally:
            conn.close()
    assert script.status == 200
    assert body == (SWAGGER_UI_PY_ROOT / "static" / "swagger-ui-bundle.js").read_bytes()


def _writes_at_once(svc: Service, tag: str) -> int:
    """24 top-ups paid at once (each webhook delivered twice), 12 admin grants and 12 holds, all at once
    over the socket: every payment granted once, every grant and hold booked once, balances exact, the
    ledger checks out. The number of commits their requests made."""
    users = [f"{tag}-{n % 6}" for n in range(24)]  # 4 open top-ups each (at most 5 may be)
    with serving(svc) as server:
        paid = []
        for user in users:
            status, top_up = _request(server, "POST", "/api/v1/users/me/wallet/top-up",
                                      json.dumps({"amount_usd": "1.00"}),
                                      {**svc.auth(user), "Content-Type": "application/json"})
            assert status == 201
            paid.append(svc.gateway.succeed(top_up["payment_intent_id"]))
        admin = {**svc.auth("root", admin=True), "Content-Type": "application/json"}
        for user in set(users):  # the holds' 20.00, so none waits for a payment
            status, _ = _request(server, "POST", f"/api/v1/admin/users/{user}/wallet/grant",
                                 json.dumps({"credits": "20.00", "reason": "funding"}), admin)
            assert status == 201
        calls: list[tuple[str, str, str | bytes, dict[str, str]]] = [
            ("POST", "/webhooks/stripe", payload, {"Stripe-Signature": signature, "Content-Type": "application/json"})
            for payload, signature in paid * 2
        ]
        calls += [("POST", f"/api/v1/admin/users/{tag}-{n % 6}/wallet/grant",
                   json.dumps({"credits": "2.50", "reason": "promo"}), {**admin, "Idempotency-Key": f"{tag}-g{n}"})
                  for n in range(12)]
        billing = {**svc.auth("billing", service=True), "Content-Type": "application/json"}
        calls += [("POST", f"/api/v1/admin/users/{tag}-{n % 6}/wallet/holds",
                   json.dumps({"credits": "10.00", "reason": "job"}), {**billing, "Idempotency-Key": f"{tag}-h{n}"})
                  for n in range(12)]
        commits = len(svc.commits)
        barrier = threading.Barrier(len(calls))
        results: list[tuple[int, Any]] = []
        lock = threading.Lock()

        def call(method: str, path: str, body: str | bytes, headers: dict[str, str]) -> None:
            barrier.wait()
            answer = _request(server, method, path, body, headers)
            with lock:
                results.append(answer)

        threads = [threading.Thread(target=call, args=c) for c in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        made = len(svc.commits) - commits
        wallets = {u: _request(server, "GET", "/api/v1/users/me/wallet", headers=svc.auth(u))[1] for u in set(users)}
    assert sorted({code for code, _ in results}) == [200, 201], results
    outcomes = [body["outcome"] for code, body in results if code == 200]
    assert outcomes.count("granted") == 24 and set(outcomes) <= {"granted", "duplicate", "already_granted"}
    for user, wallet in wallets.items():
        # 20.00, then 4 top-ups of 100.00 and 2 grants of 2.50; 2 holds of 10.00 held apart
        assert (wallet["balance"], wallet["held"]) == ("405.00", "20.00"), (user, wallet)
    assert verify_ledger(uow=svc.container.unit_of_work()) == []
    return made


def test_writes_at_once_share_commits_on_sqlite(make_service: Callable[..., Service]) -> None:
    svc = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)))
    assert svc.container.wallet()._writes is not None  # WALLET_GROUP_WRITES=auto: on, on SQLite
    made = _writes_at_once(svc, "writer")
    assert made < 24 + 12 + 12  # 48 writes (the 24 repeated deliveries commit nothing): some shared a commit


@pytest.mark.postgres
def test_writes_at_once_on_postgresql_each_in_its_own_transaction(
    make_service: Callable[..., Service], fresh_postgres_url: str
) -> None:
    # A database of its own: the fake gateway's PaymentIntent ids start again at 1 in every test.
    svc = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), database_url=fresh_postgres_url)
    assert svc.container.wallet()._writes is None  # auto: off on PostgreSQL
    assert _writes_at_once(svc, f"writer-{uuid.uuid4().hex[:8]}") == 24 + 12 + 12
