"""Several disputes of one payment, through the Stripe webhook: together they never freeze more than the
payment granted, and `wallet verify` agrees, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Service
from tests.e2e.test_cli import run

HOOK = "/webhooks/stripe"


def _deliver(svc: Service, signed: tuple[bytes, str]) -> str:
    payload, header = signed
    resp = svc.client.simulate_post(HOOK, body=payload,
                                    headers={"Stripe-Signature": header, "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    outcome: str = resp.json["outcome"]
    return outcome


def _wallet(svc: Service, user: str) -> dict[str, Any]:
    body: dict[str, Any] = svc.client.simulate_get("/api/v1/users/me/wallet", headers=svc.auth(user)).json
    return body


def test_five_disputes_of_a_top_up_freeze_no_more_than_it_bought(
    service_on_each_database: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = service_on_each_database
    resp = svc.client.simulate_post("/api/v1/users/me/wallet/top-up", json={"amount_usd": "10.00"},
                                    headers=svc.auth("dora"))
    pi = resp.json["payment_intent_id"]
    assert _deliver(svc, svc.gateway.succeed(pi)) == "granted"
    spent = svc.client.simulate_post("/api/v1/admin/users/dora/wallet/spend",
                                     json={"credits": "250.00", "reason": "usage"},
                                     headers={**svc.auth("shop", service=True), "Idempotency-Key": "dora-1"})
    assert spent.status_code == 201, spent.text

    outcomes = [_deliver(svc, svc.gateway.dispute(pi, 1000, dispute_id=f"du_{n}")) for n in range(5)]

    assert outcomes == ["dispute_opened"] * 5
    wallet = _wallet(svc, "dora")
    assert (wallet["balance"], wallet["debt"]) == ("-250.00", "250.00")  # 1000 bought, 250 spent: not -4250
    code, out, _ = run(svc, capsys, "verify")
    assert code == 0 and out.startswith("ledger OK"), out

    assert _deliver(svc, svc.gateway.dispute(pi, 1000, "won", dispute_id="du_0")) == "dispute_won"
    assert _deliver(svc, svc.gateway.dispute(pi, 1000, "won", dispute_id="du_3")) == "dispute_won"
    assert _wallet(svc, "dora")["balance"] == "750.00"  # what the first froze came back, once
    code, out, _ = run(svc, capsys, "verify")
    assert code == 0 and out.startswith("ledger OK"), out
