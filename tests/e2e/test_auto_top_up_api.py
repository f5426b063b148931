"""Automatic top-up over REST (issue 13): PUT/GET/DELETE /api/v1/users/me/wallet/auto-top-up and the same
under /api/v1/admin/users/{user_id}/wallet/auto-top-up, on the SQL container with the fake Stripe; a spend
below the threshold records the automatic top-up, the worker charges the saved card, and the signed
payment_intent.succeeded grants it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.e2e.conftest import Service
from wallet_core.payments import META_TOP_UP_ID
from wallet_core.saved_cards import SavedCard

MINE = "/api/v1/users/me/wallet/auto-top-up"
HOOK = "/webhooks/stripe"


def admin_path(user: str) -> str:
    return f"/api/v1/admin/users/{user}/wallet/auto-top-up"


def save_card(svc: Service, user: str) -> SavedCard:
    gateway = svc.gateway
    customer = gateway.create_customer(user, f"cus-{user}")
    setup = gateway.create_setup_intent(customer, user, f"seti-{user}")
    gateway.succeed_setup_intent(setup.id)
    pm = gateway.setup_intents[setup.id].payment_method_id
    assert pm is not None
    card = SavedCard(user, customer, pm, "visa", "4242", 12, 2034, datetime.now(UTC))
    with svc.container.unit_of_work()() as tx:
        tx.saved_cards.set_customer(user, customer, card.saved_at)
        tx.saved_cards.save(card)
        tx.commit()
    return card


def put(svc: Service, body: dict[str, Any], expect: int = 200) -> dict[str, Any]:
    svc.commits.clear()
    resp = svc.client.simulate_put(MINE, json=body, headers=svc.auth("alice"))
    assert resp.status_code == expect, resp.text
    answer: dict[str, Any] = resp.json
    return answer


def test_a_user_puts_reads_and_removes_their_rule(service: Service) -> None:
    rule = put(service, {"threshold_credits": "500.00", "target_credits": "2000.00", "monthly_limit_usd": "200.00"})
    assert service.commits == ["commit"]
    assert rule == {
        "enabled": True,
        "threshold_credits": "500.00",
        "target_credits": "2000.00",
        "amount_usd": None,
        "monthly_limit_usd": "200.00",
        "status": "paused_no_payment_method",
        "consecutive_failures": 0,
        "charged_this_month_usd": "0.00",
        "last_attempt": None,
    }
    save_card(service, "alice")
    got = service.client.simulate_get(MINE, headers=service.auth("alice"))
    assert got.status_code == 200 and got.json["status"] == "active"
    as_admin = service.client.simulate_get(admin_path("alice"), headers=service.auth("root", admin=True))
    assert as_admin.json == got.json
    assert service.client.simulate_get(admin_path("alice"), headers=service.auth("alice")).status_code == 403

    assert service.client.simulate_delete(MINE, headers=service.auth("alice")).status_code == 204
    assert service.client.simulate_get(MINE, headers=service.auth("alice")).status_code == 404
    assert service.client.simulate_delete(MINE, headers=service.auth("alice")).status_code == 404


def test_a_bad_rule_is_422_naming_the_field_and_writes_nothing(service: Service) -> None:
    for body, field in (
        ({"threshold_credits": "500.00", "target_credits": "500.00"}, "target_credits"),
        ({"threshold_credits": "500.00", "amount_usd": "0.50"}, "amount_usd"),
        ({"threshold_credits": "500.00", "amount_usd": "5000.00"}, "amount_usd"),
        ({"threshold_credits": "500.00"}, "amount_usd"),
        ({"threshold_credits": "500.00", "amount_usd": 20.505}, "amount_usd"),  # read exactly: 3 places
    ):
        answer = put(service, body, 422)
        assert field in answer["description"], (body, answer)
        assert service.commits == []
    assert service.client.simulate_get(MINE, headers=service.auth("alice")).status_code == 404


def test_a_spend_below_the_threshold_is_topped_up_through_the_worker_and_the_webhook(service: Service) -> None:
    admin = service.auth("root", admin=True)
    granted = service.client.simulate_post("/api/v1/admin/users/alice/wallet/grant",
                                           json={"credits": "1000.00", "reason": "start"}, headers=admin)
    assert granted.status_code == 201, granted.text
    save_card(service, "alice")
    resp = service.client.simulate_put(admin_path("alice"), json={"threshold_credits": "500.00", "amount_usd": "20.00"},
                                       headers=admin)
    assert resp.status_code == 200 and resp.json["status"] == "active"

    spent = service.client.simulate_post("/api/v1/admin/users/alice/wallet/spend",
                                         json={"credits": "600.00", "reason": "usage"},
                                         headers={**admin, "Idempotency-Key": "s-1"})
    assert spent.status_code == 201, spent.text
    assert service.gateway.charge_calls == []  # the request did not wait for Stripe
    rule = service.client.simulate_get(MINE, headers=service.auth("alice")).json
    assert rule["last_attempt"]["outcome"] == "pending" and rule["charged_this_month_usd"] == "20.00"

    wallet = service.container.wallet()
    assert wallet.charge_auto_top_ups().accepted == 1
    top_up_id = rule["last_attempt"]["top_up_id"]
    [intent_id] = [i for i, v in service.gateway.intents.items() if v.metadata.get(META_TOP_UP_ID) == top_up_id]
    payload, header = service.gateway.succeed(intent_id)
    hook = service.client.simulate_post(HOOK, body=payload,
                                        headers={"Stripe-Signature": header, "Content-Type": "application/json"})
    assert hook.status_code == 200 and hook.json["outcome"] == "granted"

    mine = service.client.simulate_get("/api/v1/users/me/wallet", headers=service.auth("alice")).json
    assert mine["balance"] == "2400.00"
    rule = service.client.simulate_get(MINE, headers=service.auth("alice")).json
    assert rule["last_attempt"]["outcome"] == "succeeded"
    assert rule["last_attempt"]["payment_intent_id"] == intent_id
    types = [e["type"] for e in service.client.simulate_get("/api/v1/admin/events?limit=100", headers=admin).json[
        "events"]]
    assert "auto_top_up.succeeded" in types
