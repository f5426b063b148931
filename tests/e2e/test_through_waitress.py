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
    make_service: Callable[..., Service], postgres_url: str
) -> None:
    svc = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), database_url=postgres_url)
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
