"""Saving a card for automatic top-up, through the REST app (Falcon TestClient), the SQL container on
SQLite and PostgreSQL, and the real StripePaymentGateway against localstripe: set up, confirm the card
at "Stripe" as Stripe.js would, complete, read it, replay Stripe's webhook, replace it, forget it.

localstripe sends no setup_intent.* webhooks, so the test signs setup_intent.succeeded itself from the
SetupIntent as localstripe holds it, with the secret the app checks (what Stripe would send)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from entrypoints.settings import Secret
from tests.e2e.conftest import LOCALSTRIPE_HOOK_SECRET, Service
from tests.fixtures.localstripe import LOCALSTRIPE_KEY

pytestmark = pytest.mark.localstripe

HOOK_SECRET = LOCALSTRIPE_HOOK_SECRET
CARD = "/api/v1/users/me/wallet/payment-method"
SETUP = f"{CARD}/setup"
HOOK = "/webhooks/stripe"


@pytest.fixture
def svc(localstripe_service: Service) -> Service:
    return localstripe_service


def a_user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"  # localstripe is shared by the session


def setup(svc: Service, user: str) -> dict[str, Any]:
    resp = svc.client.simulate_post(SETUP, headers=svc.auth(user))
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json
    return body


def complete(svc: Service, user: str, setup_intent_id: str) -> tuple[int, dict[str, Any]]:
    resp = svc.client.simulate_post(f"{SETUP}/{setup_intent_id}/complete", headers=svc.auth(user))
    return resp.status_code, resp.json


def saved(svc: Service, user: str) -> dict[str, Any] | None:
    resp = svc.client.simulate_get(CARD, headers=svc.auth(user))
    assert resp.status_code == 200, resp.text
    card: dict[str, Any] | None = resp.json["payment_method"]
    return card


def succeeded_webhook(localstripe: stripe.StripeClient, setup_intent_id: str) -> tuple[bytes, str]:
    """setup_intent.succeeded as Stripe would sign it, from the SetupIntent as localstripe holds it."""
    obj = localstripe.v1.setup_intents.retrieve(setup_intent_id).to_dict()
    event = {
        "id": f"evt_{uuid.uuid4().hex[:20]}",
        "object": "event",
        "type": "setup_intent.succeeded",
        "created": int(time.time()),
        "data": {"object": obj},
    }
    payload = json.dumps(event)
    return payload.encode(), stripe.WebhookSignature.generate_signature_header(payload, HOOK_SECRET)


def deliver(svc: Service, signed: tuple[bytes, str]) -> str:
    payload, header = signed
    resp = svc.client.simulate_post(
        HOOK, body=payload, headers={"Stripe-Signature": header, "Content-Type": "application/json"}
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json["outcome"])


def attached_to(localstripe: stripe.StripeClient, payment_method_id: str) -> str | None:
    customer = localstripe.v1.payment_methods.retrieve(payment_method_id).to_dict().get("customer")
    return customer if isinstance(customer, str) else None


def test_save_a_card_replay_the_webhook_replace_it_and_forget_it(
    svc: Service, localstripe_client: stripe.StripeClient
) -> None:
    alice = a_user()
    assert saved(svc, alice) is None

    started = setup(svc, alice)
    seti = started["setup_intent_id"]
    assert seti.startswith("seti_") and started["customer_id"].startswith("cus_")
    assert started["client_secret"].startswith(f"{seti}_secret_")
    at_stripe = localstripe_client.v1.setup_intents.retrieve(seti).to_dict()
    assert (at_stripe["customer"], at_stripe["usage"]) == (started["customer_id"], "off_session")

    # Not confirmed yet: a conflict, nothing saved.
    status, body = complete(svc, alice, seti)
    assert status == 409, body
    assert "has not succeeded" in body["description"]
    assert saved(svc, alice) is None

    # The browser confirms the card (Stripe.js confirmCardSetup), then tells the wallet.
    localstripe_client.v1.setup_intents.confirm(seti, {"payment_method": "pm_card_visa"})
    status, body = complete(svc, alice, seti)
    assert status == 200, body
    card = body["payment_method"]
    assert card["id"].startswith("pm_")
    assert {k: card[k] for k in ("brand", "last4", "exp_month", "exp_year")} == {
        "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030,
    }
    assert saved(svc, alice) == card
    assert complete(svc, alice, seti) == (200, {"payment_method": card})  # safe to repeat

    # Stripe's webhook for the same SetupIntent, delivered and redelivered: nothing changes.
    webhook = succeeded_webhook(localstripe_client, seti)
    assert deliver(svc, webhook) == "card_already_saved"
    assert deliver(svc, webhook) == "duplicate"
    assert saved(svc, alice) == card

    # A second card, learnt from the webhook alone: it replaces the first, which is detached.
    second = setup(svc, alice)
    assert second["customer_id"] == started["customer_id"]  # one Customer per user
    localstripe_client.v1.setup_intents.confirm(second["setup_intent_id"], {"payment_method": "pm_card_visa"})
    assert deliver(svc, succeeded_webhook(localstripe_client, second["setup_intent_id"])) == "card_saved"
    replaced = saved(svc, alice)
    assert replaced is not None and replaced["id"] != card["id"]
    assert attached_to(localstripe_client, card["id"]) is None
    assert attached_to(localstripe_client, replaced["id"]) == started["customer_id"]
    # The first SetupIntent's webhook, arriving late, does not bring its (detached) card back.
    assert deliver(svc, succeeded_webhook(localstripe_client, seti)) == "ignored_late"
    assert saved(svc, alice) == replaced

    # Forget it: gone from the wallet, detached at Stripe; forgetting again is the same answer.
    for _ in range(2):
        resp = svc.client.simulate_delete(CARD, headers=svc.auth(alice))
        assert (resp.status_code, resp.json) == (200, {"payment_method": None})
    assert saved(svc, alice) is None
    assert attached_to(localstripe_client, replaced["id"]) is None


def test_concurrent_first_setups_of_a_user_end_with_one_stored_customer(
    svc: Service, localstripe_client: stripe.StripeClient
) -> None:
    # localstripe ignores Idempotency-Key, so each request may make its own Customer there: the database's
    # insert-if-absent alone must leave one, and every SetupIntent must be for that one.
    alice = a_user()
    answers: list[dict[str, Any]] = []
    barrier = threading.Barrier(4)

    def first_setup() -> None:
        barrier.wait(timeout=10)
        answers.append(setup(svc, alice))

    threads = [threading.Thread(target=first_setup) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert len(answers) == 4
    customers = {a["customer_id"] for a in answers}
    assert len(customers) == 1
    with svc.container.unit_of_work()(read_only=True) as tx:
        assert tx.saved_cards.customer_id(alice) == customers.pop()
    assert {
        localstripe_client.v1.setup_intents.retrieve(a["setup_intent_id"]).to_dict()["customer"] for a in answers
    } == {answers[0]["customer_id"]}


def test_another_users_setup_intent_is_not_found(svc: Service, localstripe_client: stripe.StripeClient) -> None:
    alice, bob = a_user(), a_user()
    seti = setup(svc, alice)["setup_intent_id"]
    localstripe_client.v1.setup_intents.confirm(seti, {"payment_method": "pm_card_visa"})
    setup(svc, bob)  # bob has a Customer too

    status, body = complete(svc, bob, seti)

    assert status == 404, body
    assert saved(svc, bob) is None and saved(svc, alice) is None
    assert complete(svc, bob, "seti_doesnotexist0000")[0] == 404
    assert complete(svc, alice, "not-a-setup-intent")[0] == 422


def test_admins_read_and_forget_a_users_card(svc: Service, localstripe_client: stripe.StripeClient) -> None:
    alice = a_user()
    seti = setup(svc, alice)["setup_intent_id"]
    localstripe_client.v1.setup_intents.confirm(seti, {"payment_method": "pm_card_visa"})
    status, body = complete(svc, alice, seti)
    assert status == 200, body
    admin_path = f"/api/v1/admin/users/{alice}/wallet/payment-method"

    assert svc.client.simulate_get(admin_path, headers=svc.auth(alice)).status_code == 403
    shown = svc.client.simulate_get(admin_path, headers=svc.auth("support", admin=True))
    assert (shown.status_code, shown.json) == (200, body)
    gone = svc.client.simulate_delete(admin_path, headers=svc.auth("support", admin=True))
    assert (gone.status_code, gone.json) == (200, {"payment_method": None})
    assert saved(svc, alice) is None
    assert attached_to(localstripe_client, body["payment_method"]["id"]) is None


def test_stripe_unreachable_is_a_502_and_saves_nothing(make_service: Callable[..., Service]) -> None:
    svc = make_service(None, stripe_secret_key=Secret(LOCALSTRIPE_KEY), stripe_api_base="http://127.0.0.1:9")
    user = a_user()

    resp = svc.client.simulate_post(SETUP, headers=svc.auth(user))

    assert resp.status_code == 502, resp.text
    assert resp.json["title"] == "Payment provider error"
    with svc.container.unit_of_work()(read_only=True) as tx:
        assert tx.saved_cards.customer_id(user) is None


def test_without_stripe_keys_saving_a_card_is_a_503(make_service: Callable[..., Service]) -> None:
    svc = make_service(None, stripe_secret_key=None)

    resp = svc.client.simulate_post(SETUP, headers=svc.auth(a_user()))

    assert resp.status_code == 503, resp.text
    assert "STRIPE_SECRET_KEY" in resp.json["description"]
