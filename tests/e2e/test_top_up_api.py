"""POST /api/v1/users/me/wallet/top-up through Falcon, on a real SQLite file, Stripe faked at the port."""

from __future__ import annotations

from collections.abc import Callable

import jsonschema_rs
import pytest

from adapters.fake_gateway import FakePaymentGateway
from tests.e2e.conftest import WEBHOOK_SECRET, Service
from wallet_core.clock import utc_now
from wallet_core.errors import PaymentGatewayFailed
from wallet_core.money import Credits
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID
from wallet_core.topups import TopUpLimits

TOP_UP = "/api/v1/users/me/wallet/top-up"


def test_top_up_creates_a_payment_intent_and_a_pending_top_up(service: Service) -> None:
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
        recorded = tx.top_ups.get(body["top_up_id"])
        assert recorded is not None and recorded.payment_intent_id == body["payment_intent_id"]
        assert tx.ledger.balances("alice", utc_now()) == (Credits(0), Credits(0))  # nothing before the money
    assert service.commits == ["commit"]


@pytest.mark.parametrize("amount", ["1.00", "500.00", 1, "250.5", 42.25])
def test_amounts_inside_the_limits_are_accepted(service: Service, amount: str | int | float) -> None:
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
def test_amounts_outside_the_policy_are_refused_with_422_and_nothing_is_created(
    service: Service, amount: object, says: str
) -> None:
    resp = service.client.simulate_post(TOP_UP, json={"amount_usd": amount}, headers=service.auth("bob"))
    assert resp.status_code == 422
    assert says in resp.json["description"]
    assert service.gateway.create_calls == []
    assert service.commits == []


def test_top_up_answers_503_when_stripe_is_not_configured(make_service: Callable[..., Service]) -> None:
    svc = make_service(None, stripe_secret_key=None)  # the real Stripe adapter, with no key
    resp = svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("carol"))
    assert resp.status_code == 503
    assert "STRIPE_SECRET_KEY" in resp.json["description"]
    assert svc.commits == []


def test_a_stripe_failure_answers_502_and_records_nothing(service: Service) -> None:
    service.gateway.fail_next(PaymentGatewayFailed("Stripe refused the request", outcome_unknown=False))
    resp = service.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=service.auth("dave"))
    assert resp.status_code == 502
    assert resp.json["title"] == "Payment provider error"
    assert service.commits == []
    assert service.gateway.intents == {}


def test_a_payment_intent_already_recorded_for_another_top_up_is_a_409_not_a_500(
    make_service: Callable[..., Service],
) -> None:
    """Stripe never hands out one PaymentIntent twice, but a gateway that did (two fake gateways on one
    database both start at pi_fake_1) must not make the wallet answer 500: the second top-up is refused
    as a conflict and nothing is recorded for it."""
    first = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)))
    made = first.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=first.auth("ann"))
    assert made.status_code == 201
    again = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)))  # the same SQLite file
    resp = again.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=again.auth("bob"))
    assert resp.status_code == 409, resp.text
    assert resp.json["title"] == "Duplicate top-up"
    assert again.commits == []


def test_a_timed_out_stripe_call_without_a_key_leaves_its_intent_canceled_and_records_nothing(service: Service) -> None:
    service.gateway.time_out_next_create()
    resp = service.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=service.auth("dave"))
    assert resp.status_code == 502, resp.text
    assert "client_secret" not in resp.text
    (intent,) = service.gateway.intents.values()
    assert intent.status == "canceled"  # Stripe made it, the answer was lost: nobody can ever pay it
    with service.container.unit_of_work()() as tx:
        assert tx.top_ups.get(intent.metadata[META_TOP_UP_ID]) is None
    assert service.commits == []


def test_a_retry_with_the_same_idempotency_key_returns_the_same_top_up(service: Service) -> None:
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
def test_malformed_bodies_get_a_json_4xx(service: Service, body: bytes, content_type: str, status: int) -> None:
    headers = {**service.auth("frank"), "Content-Type": content_type}
    resp = service.client.simulate_post(TOP_UP, body=body, headers=headers)
    assert resp.status_code == status
    assert set(resp.json) >= {"title"}
    assert service.gateway.create_calls == []


def test_top_up_needs_a_token(service: Service) -> None:
    resp = service.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_float_amount_in_json_is_read_exactly(service: Service) -> None:
    # 0.1 + 0.2 style drift must not happen: 19.99 USD is exactly 1999 credits-hundredths * 100.
    resp = service.client.simulate_post(
        TOP_UP, body=b'{"amount_usd": 19.99}', headers={**service.auth("gina"), "Content-Type": "application/json"}
    )
    assert resp.status_code == 201
    assert resp.json["credits"] == "1999.00"


def test_unconfigured_gateway_fake_behaves_like_missing_keys(make_service: Callable[..., Service]) -> None:
    svc = make_service(FakePaymentGateway(configured=False))
    resp = svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("hank"))
    assert resp.status_code == 503


# -- per-user limits: 429 with Retry-After -------------------------------------------------------


def test_a_user_with_too_many_unpaid_top_ups_gets_429_with_retry_after_and_nothing_is_written(
    make_service: Callable[..., Service],
) -> None:
    svc = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)),
                       top_up_limits=TopUpLimits(max_open=2, max_per_hour=100))
    first = svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"},
                                     headers={**svc.auth("fay"), "Idempotency-Key": "order-1"})
    assert first.status_code == 201
    assert svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("fay")).status_code == 201
    assert svc.commits == ["commit"] * 2  # one per top-up
    svc.commits.clear()
    calls = len(svc.gateway.create_calls)

    refused = svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("fay"))

    assert refused.status_code == 429, refused.text
    assert refused.json["title"] == "Too many top-ups"
    assert "at most 2" in refused.json["description"]
    retry_after = int(refused.headers["Retry-After"])
    assert 24 * 3600 - 60 < retry_after <= 24 * 3600  # when the oldest unpaid one stops counting
    assert refused.json["retry_after_seconds"] == retry_after
    # The answer is the documented Error (the OpenAPI document lists retry_after_seconds).
    documented = svc.client.simulate_get("/openapi.json").json["components"]["schemas"]["Error"]
    assert jsonschema_rs.validator_for(documented).is_valid(refused.json)
    assert svc.commits == [] and len(svc.gateway.create_calls) == calls  # nothing written, Stripe not asked
    # A retry of a recorded top-up is still answered at the limit; another user is not limited.
    again = svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"},
                                     headers={**svc.auth("fay"), "Idempotency-Key": "order-1"})
    assert again.status_code == 200 and again.json == first.json
    assert svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("gus")).status_code == 201
    # Paid, a top-up no longer waits: there is room for one more.
    payload, signature = svc.gateway.succeed(first.json["payment_intent_id"])
    paid = svc.client.simulate_post("/webhooks/stripe", body=payload,
                                    headers={"Stripe-Signature": signature, "Content-Type": "application/json"})
    assert paid.status_code == 200, paid.text
    assert svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("fay")).status_code == 201


def test_a_user_starting_too_many_top_ups_in_an_hour_gets_429_until_the_oldest_is_an_hour_old(
    make_service: Callable[..., Service],
) -> None:
    svc = make_service(FakePaymentGateway(), top_up_limits=TopUpLimits(max_open=100, max_per_hour=3))
    for _ in range(3):
        created = svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("hal"))
        assert created.status_code == 201
        svc.clock.advance(minutes=10)
    assert svc.commits == ["commit"] * 3

    refused = svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("hal"))
    assert refused.status_code == 429, refused.text
    assert 30 * 60 - 60 < int(refused.headers["Retry-After"]) <= 30 * 60
    svc.clock.advance(seconds=int(refused.headers["Retry-After"]))
    assert svc.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=svc.auth("hal")).status_code == 201


def test_the_default_limits_refuse_the_sixth_unpaid_top_up(service: Service) -> None:
    codes = [service.client.simulate_post(TOP_UP, json={"amount_usd": "10.00"}, headers=service.auth("ida")).status_code
             for _ in range(6)]
    assert codes == [201] * 5 + [429]
    assert service.commits == ["commit"] * 5  # one per top-up, none for the refused one
