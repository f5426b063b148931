"""The PaymentGateway contract: FakePaymentGateway and StripePaymentGateway (against localstripe)
must behave the same, so tests that use the fake say something true about Stripe."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pytest
import stripe

from adapters.fake_gateway import FakePaymentGateway
from adapters.stripe_gateway import StripePaymentGateway
from tests.fixtures.localstripe import LOCALSTRIPE_KEY
from wallet_core.errors import InvalidWebhook, NotFound, PaymentsNotConfigured, WebhooksNotConfigured
from wallet_core.money import Usd
from wallet_core.payments import (
    META_TOP_UP_ID,
    META_USER_ID,
    PaymentEvent,
    PaymentIntent,
    PaymentIntentRequest,
)
from wallet_core.ports import PaymentGateway

SECRET = "whsec_contract_primary"
OTHER_SECRET = "whsec_contract_rolled"


class MakeGateway(Protocol):
    def __call__(
        self,
        *,
        configured: bool = True,
        webhook_secrets: Sequence[str] = (SECRET,),
        allow_unsigned: bool = False,
    ) -> PaymentGateway: ...


@pytest.fixture(params=["fake", pytest.param("stripe", marks=pytest.mark.localstripe)])
def make_gateway(request: pytest.FixtureRequest) -> MakeGateway:
    def make(
        *,
        configured: bool = True,
        webhook_secrets: Sequence[str] = (SECRET,),
        allow_unsigned: bool = False,
    ) -> PaymentGateway:
        if request.param == "fake":
            return FakePaymentGateway(
                webhook_secrets, configured=configured, allow_unsigned_webhooks=allow_unsigned
            )
        api_base: str = request.getfixturevalue("localstripe_url")
        return StripePaymentGateway(
            LOCALSTRIPE_KEY if configured else None,
            webhook_secrets,
            api_base=api_base,
            allow_unsigned_webhooks=allow_unsigned,
            timeout_seconds=10,
            max_network_retries=0,
        )

    return make


@pytest.fixture
def gateway(make_gateway: MakeGateway) -> PaymentGateway:
    return make_gateway()


def a_request(cents: int = 1250, **metadata: str) -> PaymentIntentRequest:
    top_up = f"tu_{uuid.uuid4().hex[:12]}"
    return PaymentIntentRequest(
        amount=Usd(cents),
        currency="usd",
        metadata={META_TOP_UP_ID: top_up, META_USER_ID: "user-1", **metadata},
        idempotency_key=f"topup-{top_up}",
    )


def signed(event: dict[str, Any], secret: str = SECRET, timestamp: int | None = None) -> tuple[bytes, str]:
    payload = json.dumps(event)
    return payload.encode(), stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)


def succeeded_event(intent_id: str = "pi_contract_1", cents: int = 1250) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": intent_id,
                "object": "payment_intent",
                "amount": cents,
                "amount_received": cents,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {META_TOP_UP_ID: "tu_1", META_USER_ID: "user-1"},
            }
        },
    }


# -- create / retrieve -------------------------------------------------------------------------------


def test_create_returns_a_new_intent_with_what_was_asked(gateway: PaymentGateway) -> None:
    request = a_request(1250, note="first")

    intent = gateway.create_payment_intent(request)

    assert isinstance(intent, PaymentIntent)
    assert intent.id.startswith("pi_")
    assert intent.amount == Usd(1250)
    assert intent.currency == "usd"
    assert intent.status == "requires_payment_method"
    assert intent.metadata == request.metadata
    assert intent.client_secret and intent.client_secret.startswith(intent.id)
    assert intent.client_secret not in repr(intent)


def test_currency_comes_back_lowercase(gateway: PaymentGateway) -> None:
    request = a_request(800)
    upper = PaymentIntentRequest(request.amount, "USD", request.metadata, request.idempotency_key)

    assert gateway.create_payment_intent(upper).currency == "usd"


def test_each_new_key_creates_a_distinct_intent(gateway: PaymentGateway) -> None:
    first = gateway.create_payment_intent(a_request(500))
    second = gateway.create_payment_intent(a_request(700))

    assert first.id != second.id
    assert (first.amount, second.amount) == (Usd(500), Usd(700))


def test_retrieve_returns_the_same_amount_and_metadata(gateway: PaymentGateway) -> None:
    created = gateway.create_payment_intent(a_request(4200))

    found = gateway.retrieve_payment_intent(created.id)

    assert found.id == created.id
    assert found.amount == Usd(4200)
    assert found.currency == "usd"
    assert found.metadata == created.metadata
    assert found.status == "requires_payment_method"


def test_retrieve_of_an_unknown_id_is_not_found(gateway: PaymentGateway) -> None:
    with pytest.raises(NotFound):
        gateway.retrieve_payment_intent("pi_doesnotexist000000")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda g: g.create_payment_intent(a_request()), id="create"),
        pytest.param(lambda g: g.retrieve_payment_intent("pi_anything"), id="retrieve"),
    ],
)
def test_unconfigured_gateway_refuses_payments(
    make_gateway: MakeGateway, call: Callable[[PaymentGateway], object]
) -> None:
    gateway = make_gateway(configured=False)

    with pytest.raises(PaymentsNotConfigured, match="STRIPE_SECRET_KEY"):
        call(gateway)


# -- webhooks ----------------------------------------------------------------------------------------


def test_correctly_signed_event_parses_into_a_payment_event(gateway: PaymentGateway) -> None:
    event = succeeded_event("pi_contract_ok", 990)
    payload, header = signed(event)

    parsed = gateway.parse_webhook(payload, header)

    assert isinstance(parsed, PaymentEvent)
    assert parsed.id == event["id"]
    assert parsed.type == "payment_intent.succeeded"
    assert parsed.payment_intent is not None
    assert parsed.payment_intent.id == "pi_contract_ok"
    assert parsed.payment_intent.amount == Usd(990)
    assert parsed.payment_intent.amount_received == Usd(990)
    assert parsed.payment_intent.currency == "usd"
    assert parsed.payment_intent.status == "succeeded"
    assert parsed.payment_intent.metadata == {META_TOP_UP_ID: "tu_1", META_USER_ID: "user-1"}


def test_wrong_secret_is_refused(gateway: PaymentGateway) -> None:
    payload, header = signed(succeeded_event(), secret="whsec_someone_else")

    with pytest.raises(InvalidWebhook, match="does not match"):
        gateway.parse_webhook(payload, header)


def test_tampered_body_is_refused(gateway: PaymentGateway) -> None:
    payload, header = signed(succeeded_event(cents=100))
    tampered = payload.replace(b'"amount": 100', b'"amount": 100000')
    assert tampered != payload

    with pytest.raises(InvalidWebhook):
        gateway.parse_webhook(tampered, header)


@pytest.mark.parametrize("header", [None, ""])
def test_missing_signature_header_is_refused(gateway: PaymentGateway, header: str | None) -> None:
    payload, _ = signed(succeeded_event())

    with pytest.raises(InvalidWebhook, match="missing"):
        gateway.parse_webhook(payload, header)


def test_stale_timestamp_is_refused_as_a_replay(gateway: PaymentGateway) -> None:
    payload, header = signed(succeeded_event(), timestamp=int(time.time()) - 301)

    with pytest.raises(InvalidWebhook, match="too old"):
        gateway.parse_webhook(payload, header)


def test_recent_timestamp_within_tolerance_is_accepted(gateway: PaymentGateway) -> None:
    payload, header = signed(succeeded_event(), timestamp=int(time.time()) - 200)

    assert gateway.parse_webhook(payload, header).type == "payment_intent.succeeded"


@pytest.mark.parametrize("signing_secret", [SECRET, OTHER_SECRET])
def test_either_secret_of_a_roll_is_accepted(make_gateway: MakeGateway, signing_secret: str) -> None:
    gateway = make_gateway(webhook_secrets=(SECRET, OTHER_SECRET))
    payload, header = signed(succeeded_event(), secret=signing_secret)

    assert gateway.parse_webhook(payload, header).payment_intent is not None


def test_stale_event_during_a_roll_is_still_reported_as_stale(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(webhook_secrets=(SECRET, OTHER_SECRET))
    payload, header = signed(succeeded_event(), secret=SECRET, timestamp=int(time.time()) - 3600)

    with pytest.raises(InvalidWebhook, match="too old"):
        gateway.parse_webhook(payload, header)


def test_no_secret_means_webhooks_are_not_configured(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(webhook_secrets=())
    payload, header = signed(succeeded_event())

    with pytest.raises(WebhooksNotConfigured):
        gateway.parse_webhook(payload, header)
    with pytest.raises(WebhooksNotConfigured):
        gateway.parse_webhook(payload, None)


def test_no_secret_but_unsigned_allowed_parses_the_event(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(webhook_secrets=(), allow_unsigned=True)
    event = succeeded_event("pi_unsigned")

    parsed = gateway.parse_webhook(json.dumps(event).encode(), None)

    assert parsed.payment_intent is not None
    assert parsed.payment_intent.id == "pi_unsigned"


def test_allow_unsigned_does_not_bypass_configured_secrets(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(webhook_secrets=(SECRET,), allow_unsigned=True)

    with pytest.raises(InvalidWebhook):
        gateway.parse_webhook(json.dumps(succeeded_event()).encode(), None)


@pytest.mark.parametrize("body", ["this is not json", '{"id": ', "[1, 2, 3]", '{"type": "x"}'])
def test_validly_signed_but_unreadable_body_is_refused(gateway: PaymentGateway, body: str) -> None:
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET)

    with pytest.raises(InvalidWebhook):
        gateway.parse_webhook(body.encode(), header)


def test_non_payment_intent_events_parse_without_an_intent(gateway: PaymentGateway) -> None:
    event = {
        "id": "evt_other",
        "object": "event",
        "type": "customer.created",
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    }
    payload, header = signed(event)

    parsed = gateway.parse_webhook(payload, header)

    assert (parsed.id, parsed.type, parsed.payment_intent) == ("evt_other", "customer.created", None)


# -- idempotency: only the fake honours keys (localstripe ignores Idempotency-Key) ---------------------


def test_fake_same_idempotency_key_returns_the_same_intent() -> None:
    gateway = FakePaymentGateway((SECRET,))
    request = a_request(1500)

    first = gateway.create_payment_intent(request)
    again = gateway.create_payment_intent(request)

    assert again == first
    assert len(gateway.intents) == 1
