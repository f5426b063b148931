"""Over a real waitress socket: the whole top-up loop, and 20 concurrent deliveries of one event."""

from __future__ import annotations

import http.client
import json
import threading
from contextlib import contextmanager

import pytest

from adapters.fake_gateway import FakePaymentGateway
from entrypoints.http.app import create_app
from tests.e2e.conftest import WEBHOOK_SECRET, run_waitress


@contextmanager
def serving(svc):
    yield from run_waitress(create_app(svc.container), threads=8)


def _request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_full_loop_top_up_webhook_balance(service):
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


def _twenty_concurrent_deliveries(svc):
    status, top_up = None, None
    with serving(svc) as server:
        status, top_up = _request(server, "POST", "/api/v1/users/me/wallet/top-up",
                                  json.dumps({"amount_usd": "7.00"}),
                                  {**svc.auth("racer"), "Content-Type": "application/json"})
        assert status == 201
        payload, signature = svc.gateway.succeed(top_up["payment_intent_id"])
        barrier = threading.Barrier(20)
        results: list[tuple[int, str]] = []
        lock = threading.Lock()

        def deliver():
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
    assert sorted(outcome for _, outcome in results) == ["already_granted"] * 19 + ["granted"]
    assert wallet["balance"] == "700.00"
    assert [t["kind"] for t in wallet["transactions"]] == ["top_up"]


def test_twenty_concurrent_deliveries_grant_once_on_sqlite(make_service):
    _twenty_concurrent_deliveries(make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,))))


@pytest.mark.postgres
def test_twenty_concurrent_deliveries_grant_once_on_postgresql(make_service, postgres_url):
    svc = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), database_url=postgres_url)
    _twenty_concurrent_deliveries(svc)
