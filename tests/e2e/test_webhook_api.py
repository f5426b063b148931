"""POST /webhooks/stripe: signed events grant exactly once; anything else moves no credits.

Every verified event is stored once in the payment event log (even one that does nothing), so a
redelivery of the same event id answers "duplicate" and writes nothing at all."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import stripe
from falcon.testing import Result

from adapters.fake_gateway import FakePaymentGateway
from tests.e2e.conftest import WEBHOOK_SECRET, Service
from wallet_core.ports import StoredEvent

TOP_UP = "/api/v1/users/me/wallet/top-up"
HOOK = "/webhooks/stripe"


def _top_up(svc: Service, user: str, amount: str = "10.00") -> dict[str, Any]:
    resp = svc.client.simulate_post(TOP_UP, json={"amount_usd": amount}, headers=svc.auth(user))
    assert resp.status_code == 201
    body: dict[str, Any] = resp.json
    return body


def _deliver(svc: Service, payload: bytes, header: str) -> Result:
    return svc.client.simulate_post(
        HOOK, body=payload, headers={"Stripe-Signature": header, "Content-Type": "application/json"}
    )


def _balance(svc: Service, user: str) -> str:
    balance: str = svc.client.simulate_get("/api/v1/users/me/wallet", headers=svc.auth(user)).json["balance"]
    return balance


def test_succeeded_webhook_grants_the_top_up_credits(service: Service) -> None:
    top_up = _top_up(service, "alice", "12.34")
    service.commits.clear()
    resp = _deliver(service, *service.gateway.succeed(top_up["payment_intent_id"]))

    assert resp.status_code == 200
    assert resp.json["outcome"] == "granted"
    assert service.commits == ["commit"]
    wallet = service.client.simulate_get("/api/v1/users/me/wallet", headers=service.auth("alice")).json
    assert wallet["balance"] == "1234.00"
    assert wallet["transactions"][0]["kind"] == "top_up"
    assert wallet["transactions"][0]["reference_id"] == top_up["payment_intent_id"]


def _events(svc: Service, payment_intent_id: str) -> list[StoredEvent]:
    return svc.container.wallet().events(payment_intent_id)


def test_redelivery_of_the_same_event_grants_nothing_more(service: Service) -> None:
    top_up = _top_up(service, "bob")
    pi = top_up["payment_intent_id"]
    payload, header = service.gateway.succeed(pi)
    assert _deliver(service, payload, header).json["outcome"] == "granted"
    service.commits.clear()
    again = _deliver(service, payload, header)

    assert again.status_code == 200 and again.json["outcome"] == "duplicate"
    assert again.json["event_id"] == json.loads(payload)["id"]
    assert service.commits == []  # the same event id: nothing written, not even to the event log
    other_event = _deliver(service, *service.gateway.succeed(pi))
    assert other_event.status_code == 200 and other_event.json["outcome"] == "already_granted"
    assert _balance(service, "bob") == "1000.00"
    wallet = service.client.simulate_get("/api/v1/users/me/wallet", headers=service.auth("bob")).json
    assert [t["kind"] for t in wallet["transactions"]] == ["top_up"]
    logged = _events(service, pi)
    assert [e.outcome for e in logged] == ["granted", "already_granted"]  # one row per event id


def test_bad_signature_is_refused_with_400_and_grants_nothing(service: Service) -> None:
    top_up = _top_up(service, "carol")
    payload, _ = service.gateway.succeed(top_up["payment_intent_id"])
    forged = stripe.WebhookSignature.generate_signature_header(payload.decode(), "whsec_not_ours")
    stale = stripe.WebhookSignature.generate_signature_header(
        payload.decode(), WEBHOOK_SECRET, int(time.time()) - 600
    )
    for header in (forged, stale, "t=1,v1=deadbeef", ""):
        resp = _deliver(service, payload, header)
        assert resp.status_code == 400, header
        assert resp.json["title"] == "Invalid webhook"
    tampered = payload.replace(b'"amount": 1000', b'"amount": 9000')
    _, good_header = service.gateway.signed_event("payment_intent.succeeded", {})
    assert _deliver(service, tampered, good_header).status_code == 400
    assert _balance(service, "carol") == "0.00"
    assert _events(service, top_up["payment_intent_id"]) == []  # a refused event is not logged either


def test_amount_that_does_not_match_the_top_up_is_not_granted(service: Service) -> None:
    top_up = _top_up(service, "dave")
    resp = _deliver(service, *service.gateway.succeed(top_up["payment_intent_id"], amount_received=1))
    assert resp.status_code == 200 and resp.json["outcome"] == "needs_review"
    assert _balance(service, "dave") == "0.00"
    # A later, correct-looking event does not overrule it: a person decides.
    again = _deliver(service, *service.gateway.succeed(top_up["payment_intent_id"]))
    assert again.status_code == 200 and again.json["outcome"] == "needs_review"
    assert _balance(service, "dave") == "0.00"


def test_other_event_types_answer_200_and_change_nothing(service: Service) -> None:
    top_up = _top_up(service, "erin")
    intent = service.gateway.intents[top_up["payment_intent_id"]]
    payload, header = service.gateway.signed_event(
        "payment_intent.created", FakePaymentGateway.intent_object(intent)
    )
    service.commits.clear()
    resp = _deliver(service, payload, header)
    assert resp.status_code == 200 and resp.json["outcome"] == "ignored"
    assert service.commits == ["commit"]  # the event log row, and nothing else
    assert _balance(service, "erin") == "0.00"
    assert service.client.simulate_get("/api/v1/users/me/wallet", headers=service.auth("erin")).json[
        "transactions"
    ] == []
    [logged] = _events(service, top_up["payment_intent_id"])
    assert (logged.type, logged.outcome, logged.source) == ("payment_intent.created", "ignored", "webhook")
    service.commits.clear()
    again = _deliver(service, payload, header)
    assert again.status_code == 200 and again.json["outcome"] == "duplicate"
    assert service.commits == []


def test_an_event_about_no_payment_intent_answers_200_and_moves_nothing(service: Service) -> None:
    payload, header = service.gateway.signed_event("customer.created", {"id": "cus_1", "object": "customer"})
    resp = _deliver(service, payload, header)
    assert resp.status_code == 200
    assert resp.json == {"received": True, "event_id": json.loads(payload)["id"], "type": "customer.created",
                         "outcome": "ignored"}
    assert service.container.wallet().verify() == []


def test_without_a_webhook_secret_production_answers_503(make_service: Callable[..., Service]) -> None:
    gateway = FakePaymentGateway(webhook_secrets=())
    svc = make_service(gateway)
    resp = _deliver(svc, b'{"id": "evt_1", "type": "payment_intent.succeeded"}', "")
    assert resp.status_code == 503
    assert "STRIPE_WEBHOOK_SECRET" in resp.json["description"]


def test_development_accepts_unsigned_events_when_no_secret_is_set(
    make_service: Callable[..., Service], caplog: pytest.LogCaptureFixture
) -> None:
    svc = make_service(None, env="development", stripe_webhook_secrets=())
    # The real Stripe adapter (no network needed for webhooks): grant a top-up recorded directly.
    from wallet_core.clock import utc_now
    from wallet_core.money import Credits, Usd
    from wallet_core.topups import TopUp, TopUpStatus

    with svc.container.unit_of_work()() as tx:
        tx.top_ups.add(TopUp("tu_dev", "zoe", Usd(500), "usd", Credits(50000), TopUpStatus.PENDING,
                             "pi_dev_1", utc_now()))
        tx.commit()
    payload = (b'{"id": "evt_dev", "type": "payment_intent.succeeded", "data": {"object": '
               b'{"id": "pi_dev_1", "amount": 500, "amount_received": 500, "currency": "usd", "metadata": {}}}}')
    resp = svc.client.simulate_post(HOOK, body=payload, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200 and resp.json["outcome"] == "granted"
    assert "UNSIGNED" in caplog.text


def test_a_signed_body_that_is_not_json_is_400(service: Service) -> None:
    payload = b"not json at all"
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), WEBHOOK_SECRET)
    resp = _deliver(service, payload, header)
    assert resp.status_code == 400
