"""Automatic top-up with the real StripePaymentGateway against localstripe, through the REST app on SQLite
and PostgreSQL: a card saved over REST (confirmed at "Stripe" as Stripe.js would), the rule put over
REST, a spend below the threshold, the worker's off-session charge, and Stripe's signed
payment_intent.succeeded granting it once; then a card that declines every charge
(pm_card_chargeCustomerFail) disabling the rule after three attempts.

localstripe sends no webhooks here, so the test signs payment_intent.succeeded itself from the intent as
localstripe holds it, with the secret the app checks (what Stripe would send)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import stripe

from tests.e2e.conftest import LOCALSTRIPE_HOOK_SECRET, Service

pytestmark = pytest.mark.localstripe

HOOK_SECRET = LOCALSTRIPE_HOOK_SECRET
SETUP = "/api/v1/users/me/wallet/payment-method/setup"
RULE = "/api/v1/users/me/wallet/auto-top-up"
HOOK = "/webhooks/stripe"


@pytest.fixture
def svc(localstripe_service: Service) -> Service:
    return localstripe_service


def save_card(svc: Service, localstripe: stripe.StripeClient, user: str, card: str) -> None:
    started = svc.client.simulate_post(SETUP, headers=svc.auth(user))
    assert started.status_code == 201, started.text
    setup_intent_id = started.json["setup_intent_id"]
    localstripe.v1.setup_intents.confirm(setup_intent_id, {"payment_method": card})  # what Stripe.js does
    done = svc.client.simulate_post(f"{SETUP}/{setup_intent_id}/complete", headers=svc.auth(user))
    assert done.status_code in (200, 201), done.text


def signed_succeeded(localstripe: stripe.StripeClient, payment_intent_id: str) -> tuple[bytes, str]:
    obj = localstripe.v1.payment_intents.retrieve(payment_intent_id).to_dict()
    event = {
        "id": f"evt_{uuid.uuid4().hex[:20]}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "data": {"object": obj},
    }
    payload = json.dumps(event)
    return payload.encode(), stripe.WebhookSignature.generate_signature_header(payload, HOOK_SECRET)


def admin(svc: Service, method: str, path: str, body: object, key: str | None = None) -> dict[str, Any]:
    headers = svc.auth("root", admin=True)
    if key is not None:
        headers["Idempotency-Key"] = key
    resp = svc.client.simulate_request(method, path, json=body, headers=headers)
    assert resp.status_code in (200, 201), resp.text
    answer: dict[str, Any] = resp.json
    return answer


def test_a_saved_card_is_charged_off_session_at_stripe_and_the_webhook_grants_once(
    svc: Service, localstripe_client: stripe.StripeClient
) -> None:
    user = f"user-{uuid.uuid4().hex[:10]}"
    admin(svc, "POST", f"/api/v1/admin/users/{user}/wallet/grant", {"credits": "1000.00", "reason": "start"})
    save_card(svc, localstripe_client, user, "pm_card_visa")
    put = svc.client.simulate_put(RULE, json={"threshold_credits": "500.00", "target_credits": "2000.00"},
                                  headers=svc.auth(user))
    assert put.status_code == 200 and put.json["status"] == "active", put.text
    admin(svc, "POST", f"/api/v1/admin/users/{user}/wallet/spend", {"credits": "600.00", "reason": "usage"}, "s-1")

    assert svc.container.wallet().charge_auto_top_ups().accepted == 1
    rule = svc.client.simulate_get(RULE, headers=svc.auth(user)).json
    attempt = rule["last_attempt"]
    assert attempt["outcome"] == "pending" and attempt["amount_usd"] == "16.00"
    intent_id = attempt["payment_intent_id"]
    intent = localstripe_client.v1.payment_intents.retrieve(intent_id).to_dict()
    assert intent["status"] == "succeeded" and intent["metadata"]["wallet_top_up_id"] == attempt["top_up_id"]

    signed = signed_succeeded(localstripe_client, intent_id)
    for expected in ("granted", "duplicate"):
        resp = svc.client.simulate_post(HOOK, body=signed[0],
                                        headers={"Stripe-Signature": signed[1], "Content-Type": "application/json"})
        assert resp.status_code == 200 and resp.json["outcome"] == expected
    mine = svc.client.simulate_get("/api/v1/users/me/wallet", headers=svc.auth(user)).json
    assert mine["balance"] == "2000.00"
    assert svc.client.simulate_get(RULE, headers=svc.auth(user)).json["last_attempt"]["outcome"] == "succeeded"


def test_a_card_that_declines_every_charge_disables_the_rule_after_three(
    svc: Service, localstripe_client: stripe.StripeClient
) -> None:
    user = f"user-{uuid.uuid4().hex[:10]}"
    admin(svc, "POST", f"/api/v1/admin/users/{user}/wallet/grant", {"credits": "1000.00", "reason": "start"})
    save_card(svc, localstripe_client, user, "pm_card_chargeCustomerFail")
    assert svc.client.simulate_put(RULE, json={"threshold_credits": "500.00", "amount_usd": "20.00"},
                                   headers=svc.auth(user)).status_code == 200
    wallet = svc.container.wallet()
    for n in range(3):
        admin(svc, "POST", f"/api/v1/admin/users/{user}/wallet/spend",
              {"credits": "600.00" if n == 0 else "1.00", "reason": "usage"}, f"s-{n}")
        assert wallet.charge_auto_top_ups().declined == 1
    rule = svc.client.simulate_get(RULE, headers=svc.auth(user)).json
    assert (rule["status"], rule["enabled"], rule["consecutive_failures"]) == ("disabled_after_failures", False, 3)
    assert rule["last_attempt"]["error_code"] == "card_declined"
    types = [e.type.value for e in wallet.events_after(None, user_id=user).events]
    assert types.count("auto_top_up.failed") == 3 and types.count("auto_top_up.disabled") == 1
