"""POST /api/v1/users/me/wallet/top-up through Falcon, on a real SQLite file, Stripe faked at the port."""

from __future__ import annotations

import pytest

from adapters.fake_gateway import FakePaymentGateway
from wallet_core.clock import utc_now
from wallet_core.money import Credits
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID

TOP_UP = "/api/v1/users/me/wallet/top-up"


def test_top_up_creates_a_payment_intent_and_a_pending_top_up(service):
    resp = service.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=service.auth("alice"))

    assert resp.status_code == 201
    body = resp.json
    assert body["amount_usd"] == "10.00"
    assert body["credits"] == "1000.00"
    assert body["status"] == "pending"
    assert body["payment_intent_id"].startswith("pi_fake_")
    assert body["client_secret"].startswith(body["payment_intent_id"] + "_secret_")
    sent = service.gateway.create_calls[-1]
    assert sent.amount.cents == 1000 and sent.currency == "usd"
    assert sent.metadata[META_USER_ID] == "alice" and sent.metadata[META_TOP_UP_ID] == body["top_up_id"]
    with service.container.unit_of_work()() as tx:
        recorded = tx.ledger.get_top_up(body["top_up_id"])
        assert recorded is not None and recorded.payment_intent_id == body["payment_intent_id"]
        assert tx.ledger.balances("alice", utc_now()) == (Credits(0), Credits(0))  # nothing before the money
    assert service.commits == ["commit"]


@pytest.mark.parametrize("amount", ["1.00", "500.00", 1, "250.5", 42.25])
def test_amounts_inside_the_limits_are_accepted(service, amount):
    resp = service.client.simulate_post(TOP_UP, json={"amount_usd": amount}, headers=service.auth("bob"))
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize(
    ("amount", "says"),
    [
        ("0.99", "at least 1.00"),
        ("500.01", "at most 500.00"),
        ("0", "at least 1.00"),
        ("-5.00", "at least 1.00"),
        ("10.001", "2 decimal places"),
        ("ten", "decimal number"),
        (None, "decimal number"),
        (True, "decimal number"),
        ("Infinity", "finite"),
        ("1e400", "decimal number"),
    ],
)
def test_amounts_outside_the_policy_are_refused_with_422_and_nothing_is_created(service, amount, says):
    resp = service.client.simulate_post(TOP_UP, json={"amount_usd": amount}, headers=service.auth("bob"))
    assert resp.status_code == 422
    assert says in resp.json["description"]
    assert service.gateway.create_calls == []
    assert service.commits == []


def test_top_up_answers_503_when_stripe_is_not_configured(make_service):
    svc = make_service(None, stripe_secret_key=None)  # the real Stripe adapter, with no key
    resp = svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("carol"))
    assert resp.status_code == 503
    assert "STRIPE_SECRET_KEY" in resp.json["description"]
    assert svc.commits == []


def test_a_stripe_failure_answers_502_and_records_nothing(service):
    service.gateway.fail_next()
    resp = service.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=service.auth("dave"))
    assert resp.status_code == 502
    assert resp.json["title"] == "Payment provider error"
    assert service.commits == []


def test_a_retry_with_the_same_idempotency_key_returns_the_same_top_up(service):
    headers = {**service.auth("erin"), "Idempotency-Key": "order-17"}
    first = service.client.simulate_post(TOP_UP, json={"amount_usd": "25.00"}, headers=headers)
    again = service.client.simulate_post(TOP_UP, json={"amount_usd": "25.00"}, headers=headers)

    assert first.status_code == 201 and again.status_code == 200
    assert again.json == first.json
    assert len(service.gateway.intents) == 1
    conflict = service.client.simulate_post(TOP_UP, json={"amount_usd": "30.00"}, headers=headers)
    assert conflict.status_code == 409


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"amount_usd": "10.00"', "application/json", 400),
        (b'{"amount_usd": NaN}', "application/json", 400),
        (b'["10.00"]', "application/json", 422),
        (b'{"amount_usd": "10.00", "user_id": "mallory"}', "application/json", 422),
        (b"{}", "application/json", 422),
        (b"amount_usd=10.00", "application/x-www-form-urlencoded", 415),
        (b'{"amount_usd": "' + b"9" * 70000 + b'"}', "application/json", 413),
    ],
)
def test_malformed_bodies_get_a_json_4xx(service, body, content_type, status):
    headers = {**service.auth("frank"), "Content-Type": content_type}
    resp = service.client.simulate_post(TOP_UP, body=body, headers=headers)
    assert resp.status_code == status
    assert set(resp.json) >= {"title"}
    assert service.gateway.create_calls == []


def test_top_up_needs_a_token(service):
    resp = service.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_float_amount_in_json_is_read_exactly(service):
    # 0.1 + 0.2 style drift must not happen: 19.99 USD is exactly 1999 credits-hundredths * 100.
    resp = service.client.simulate_post(
        TOP_UP, body=b'{"amount_usd": 19.99}', headers={**service.auth("gina"), "Content-Type": "application/json"}
    )
    assert resp.status_code == 201
    assert resp.json["credits"] == "1999.00"


def test_unconfigured_gateway_fake_behaves_like_missing_keys(make_service):
    svc = make_service(FakePaymentGateway(configured=False))
    resp = svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("hank"))
    assert resp.status_code == 503
