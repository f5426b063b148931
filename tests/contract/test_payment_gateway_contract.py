"""The PaymentGateway contract: FakePaymentGateway and StripePaymentGateway (against localstripe)
must behave the same, so tests that use the fake say something true about Stripe."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
import stripe

from adapters.fake_gateway import FakePaymentGateway
from adapters.stripe_gateway import StripePaymentGateway
from tests.fixtures.localstripe import LOCALSTRIPE_KEY, open_dispute
from wallet_core.errors import (
    InvalidWebhook,
    NotFound,
    PaymentGatewayFailed,
    PaymentsNotConfigured,
    WebhooksNotConfigured,
)
from wallet_core.money import Usd
from wallet_core.payments import (
    META_TOP_UP_ID,
    META_USER_ID,
    Dispute,
    PaymentEvent,
    PaymentIntent,
    PaymentIntentRequest,
    Refund,
)
from wallet_core.ports import PaymentGateway
from wallet_core.saved_cards import CardDetails, SetupIntent

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


def test_cancel_makes_an_unpaid_intent_unpayable(gateway: PaymentGateway, side: StripeSide) -> None:
    intent = gateway.create_payment_intent(a_request(1500))

    canceled = gateway.cancel_payment_intent(intent.id)

    assert (canceled.id, canceled.status, canceled.amount) == (intent.id, "canceled", Usd(1500))
    assert gateway.retrieve_payment_intent(intent.id).status == "canceled"
    with pytest.raises(PaymentGatewayFailed, match="cancel"):
        gateway.cancel_payment_intent(intent.id)  # once only


def test_cancel_refuses_a_paid_intent_and_an_unknown_one(gateway: PaymentGateway, side: StripeSide) -> None:
    paid = gateway.create_payment_intent(a_request(1500))
    side.pay(paid)

    with pytest.raises(PaymentGatewayFailed, match="cancel"):
        gateway.cancel_payment_intent(paid.id)
    assert gateway.retrieve_payment_intent(paid.id).status == "succeeded"
    with pytest.raises(NotFound):
        gateway.cancel_payment_intent("pi_doesnotexist000000")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda g: g.create_payment_intent(a_request()), id="create"),
        pytest.param(lambda g: g.cancel_payment_intent("pi_anything"), id="cancel"),
        pytest.param(lambda g: g.retrieve_payment_intent("pi_anything"), id="retrieve"),
        pytest.param(lambda g: g.list_payment_intents(), id="list_payment_intents"),
        pytest.param(lambda g: g.list_refunds("pi_anything"), id="list_refunds"),
        pytest.param(lambda g: g.list_disputes("pi_anything"), id="list_disputes"),
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


# -- listing: what reconciliation reads ----------------------------------------------------------------


@dataclass
class StripeSide:
    """What happens at "Stripe" outside the gateway's port: the buyer pays, support refunds. On the
    fake through its test controls; on localstripe through the stripe SDK, as a browser or the
    dashboard would."""

    gateway: PaymentGateway

    @property
    def _client(self) -> stripe.StripeClient:
        assert isinstance(self.gateway, StripePaymentGateway) and self.gateway.api_base
        return stripe.StripeClient(
            LOCALSTRIPE_KEY, base_addresses={"api": self.gateway.api_base}, max_network_retries=0
        )

    def pay(self, intent: PaymentIntent) -> None:
        if isinstance(self.gateway, FakePaymentGateway):
            self.gateway.succeed(intent.id)
            return
        self._client.v1.payment_intents.update(intent.id, {"payment_method": "pm_card_visa"})
        self._client.v1.payment_intents.confirm(intent.id)

    def refund(self, intent: PaymentIntent, cents: int) -> None:
        if isinstance(self.gateway, FakePaymentGateway):
            self.gateway.refund(intent.id, cents, event=None)
            return
        self._client.v1.refunds.create({"payment_intent": intent.id, "amount": cents})

    def dispute(self, intent: PaymentIntent, cents: int, status: str = "needs_response",
                dispute_id: str | None = None) -> str:
        """The buyer's bank disputes the payment (or moves the dispute `dispute_id` to `status`); no
        webhook is delivered. Returns the dispute's id."""
        if isinstance(self.gateway, FakePaymentGateway):
            self.gateway.dispute(intent.id, cents, status, dispute_id=dispute_id)
            return dispute_id or [d.id for d in self.gateway.disputes.values() if d.payment_intent_id == intent.id][-1]
        assert isinstance(self.gateway, StripePaymentGateway) and self.gateway.api_base
        return str(open_dispute(self.gateway.api_base, intent.id, cents, status, dispute_id)["id"])

    def created(self, intent: PaymentIntent) -> datetime:
        if isinstance(self.gateway, FakePaymentGateway):
            return self.gateway.created_at[intent.id]
        return datetime.fromtimestamp(self._client.v1.payment_intents.retrieve(intent.id).created, UTC)

    def confirm_setup(self, intent: SetupIntent) -> None:
        """The user confirms the SetupIntent with a new test Visa card (Stripe.js would)."""
        if isinstance(self.gateway, FakePaymentGateway):
            self.gateway.succeed_setup_intent(intent.id, brand="visa", last4="4242", exp_month=12, exp_year=2030)
            return
        self._client.v1.setup_intents.confirm(intent.id, {"payment_method": "pm_card_visa"})

    def pause(self) -> None:
        """Long enough for Stripe's `created` (whole seconds) to tell two intents apart."""
        time.sleep(1.05 if isinstance(self.gateway, StripePaymentGateway) else 0.002)


@pytest.fixture
def side(gateway: PaymentGateway) -> StripeSide:
    return StripeSide(gateway)


def listed(gateway: PaymentGateway, ids: set[str], created_after: datetime | None = None) -> list[PaymentIntent]:
    """Ours among everything listed (a shared localstripe holds other tests' intents too)."""
    return [i for i in gateway.list_payment_intents(created_after=created_after) if i.id in ids]


def test_list_payment_intents_returns_them_newest_first_with_metadata(
    gateway: PaymentGateway, side: StripeSide
) -> None:
    older = gateway.create_payment_intent(a_request(1100, note="older"))
    side.pause()
    newer = gateway.create_payment_intent(a_request(2200, note="newer"))
    side.pay(newer)

    found = listed(gateway, {older.id, newer.id})

    assert [i.id for i in found] == [newer.id, older.id]
    assert [i.amount for i in found] == [Usd(2200), Usd(1100)]
    assert [i.metadata for i in found] == [newer.metadata, older.metadata]
    assert [i.status for i in found] == ["succeeded", "requires_payment_method"]
    assert all(i.currency == "usd" for i in found)


def test_list_payment_intents_stops_at_created_after(gateway: PaymentGateway, side: StripeSide) -> None:
    first = gateway.create_payment_intent(a_request(1300))
    side.pause()
    second = gateway.create_payment_intent(a_request(1400))
    ours = {first.id, second.id}

    assert [i.id for i in listed(gateway, ours, created_after=side.created(first))] == [second.id, first.id]
    assert [i.id for i in listed(gateway, ours, created_after=side.created(second))] == [second.id]
    assert listed(gateway, ours, created_after=datetime.now(UTC) + timedelta(hours=1)) == []
    assert [i.id for i in listed(gateway, ours, created_after=None)] == [second.id, first.id]


def test_list_payment_intents_returns_an_iterator(gateway: PaymentGateway) -> None:
    gateway.create_payment_intent(a_request(1500))

    intents = gateway.list_payment_intents()

    assert iter(intents) is intents
    assert isinstance(next(intents), PaymentIntent)


def test_list_refunds_returns_each_refund_of_the_intent(gateway: PaymentGateway, side: StripeSide) -> None:
    intent = gateway.create_payment_intent(a_request(5000))
    other = gateway.create_payment_intent(a_request(5000))
    side.pay(intent)
    side.pay(other)
    assert gateway.list_refunds(intent.id) == []

    side.refund(intent, 1200)
    side.refund(intent, 300)
    side.refund(other, 999)

    refunds = gateway.list_refunds(intent.id)

    assert all(isinstance(r, Refund) for r in refunds)
    assert sorted(r.amount.cents for r in refunds) == [300, 1200]
    assert {(r.payment_intent_id, r.currency, r.status) for r in refunds} == {(intent.id, "usd", "succeeded")}
    assert len({r.id for r in refunds}) == 2 and all(r.id.startswith("re_") for r in refunds)
    assert [r.amount.cents for r in gateway.list_refunds(other.id)] == [999]


def test_list_refunds_of_an_unknown_intent_is_empty(gateway: PaymentGateway) -> None:
    assert gateway.list_refunds("pi_doesnotexist000000") == []


def test_list_disputes_returns_each_dispute_of_the_intent_as_it_stands(
    gateway: PaymentGateway, side: StripeSide
) -> None:
    intent = gateway.create_payment_intent(a_request(5000))
    other = gateway.create_payment_intent(a_request(5000))
    side.pay(intent)
    side.pay(other)
    assert gateway.list_disputes(intent.id) == []

    first = side.dispute(intent, 5000)
    side.dispute(other, 700)
    side.dispute(intent, 5000, "lost", dispute_id=first)

    disputes = gateway.list_disputes(intent.id)

    assert disputes == [Dispute(first, intent.id, Usd(5000), "usd", "lost")]
    assert [(d.amount.cents, d.status) for d in gateway.list_disputes(other.id)] == [(700, "needs_response")]


def test_list_disputes_of_an_unknown_or_empty_intent_is_empty(gateway: PaymentGateway) -> None:
    assert gateway.list_disputes("pi_doesnotexist000000") == []
    assert gateway.list_disputes("") == []


# -- the payment lifecycle events, as Stripe documents their objects ------------------------------------


def an_event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "api_version": "2024-06-20",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def refund_json(
    refund_id: str = "re_1", cents: int = 300, pi: str | None = "pi_life", status: str = "succeeded"
) -> dict[str, Any]:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": cents,
        "charge": "ch_life",
        "created": 1700000000,
        "currency": "usd",
        "metadata": {},
        "payment_intent": pi,
        "reason": "requested_by_customer",
        "status": status,
    }


def charge_json(refunds: list[dict[str, Any]] | None, *, has_more: bool = False) -> dict[str, Any]:
    charge: dict[str, Any] = {
        "id": "ch_life",
        "object": "charge",
        "amount": 1000,
        "amount_captured": 1000,
        "amount_refunded": sum(r["amount"] for r in refunds or [] if isinstance(r["amount"], int)),
        "captured": True,
        "currency": "usd",
        "paid": True,
        "payment_intent": "pi_life",
        "refunded": False,
        "status": "succeeded",
    }
    if refunds is not None:  # API versions before 2022-11-15 include the charge's refunds
        charge["refunds"] = {
            "object": "list",
            "data": refunds,
            "has_more": has_more,
            "total_count": len(refunds),
            "url": "/v1/charges/ch_life/refunds",
        }
    return charge


def dispute_json(status: str = "needs_response", cents: int = 1000) -> dict[str, Any]:
    return {
        "id": "du_life",
        "object": "dispute",
        "amount": cents,
        "charge": "ch_life",
        "created": 1700000000,
        "currency": "USD",
        "is_charge_refundable": False,
        "metadata": {},
        "payment_intent": "pi_life",
        "reason": "fraudulent",
        "status": status,
    }


def intent_json(status: str) -> dict[str, Any]:
    return {
        "id": "pi_life",
        "object": "payment_intent",
        "amount": 1000,
        "amount_received": 0,
        "currency": "usd",
        "status": status,
        "metadata": {META_TOP_UP_ID: "tu_life", META_USER_ID: "user-1"},
        "last_payment_error": {"code": "card_declined", "type": "card_error"} if status != "canceled" else None,
    }


def parse(gateway: PaymentGateway, event: dict[str, Any]) -> PaymentEvent:
    return gateway.parse_webhook(*signed(event))


def test_charge_refunded_with_its_refunds_lists_every_refund(gateway: PaymentGateway) -> None:
    event = an_event("charge.refunded", charge_json([refund_json("re_2", 200), refund_json("re_1", 300, pi=None)]))

    parsed = parse(gateway, event)

    assert (parsed.id, parsed.type, parsed.about, parsed.payment_intent) == (
        event["id"], "charge.refunded", "pi_life", None
    )
    assert parsed.refunds_listed is True
    assert parsed.refunds == (
        Refund("re_2", "pi_life", Usd(200), "usd", "succeeded"),
        Refund("re_1", "pi_life", Usd(300), "usd", "succeeded"),  # the charge's intent stands in
    )


def test_charge_refunded_without_refunds_says_they_are_not_listed(gateway: PaymentGateway) -> None:
    parsed = parse(gateway, an_event("charge.refunded", charge_json(None)))

    assert (parsed.refunds, parsed.refunds_listed, parsed.about) == ((), False, "pi_life")


def test_charge_refunded_with_a_partial_page_of_refunds_is_not_fully_listed(gateway: PaymentGateway) -> None:
    parsed = parse(gateway, an_event("charge.refunded", charge_json([refund_json("re_9")], has_more=True)))

    assert parsed.refunds_listed is False
    assert [r.id for r in parsed.refunds] == ["re_9"]


def test_charge_refunded_of_a_charge_without_intent_is_about_nothing(gateway: PaymentGateway) -> None:
    charge = {**charge_json(None), "payment_intent": None}

    assert parse(gateway, an_event("charge.refunded", charge)).about is None


@pytest.mark.parametrize("event_type", ["refund.created", "refund.updated", "charge.refund.updated"])
def test_refund_events_carry_the_refund(gateway: PaymentGateway, event_type: str) -> None:
    parsed = parse(gateway, an_event(event_type, refund_json("re_7", 450, status="pending")))

    assert parsed.type == event_type
    assert parsed.refunds == (Refund("re_7", "pi_life", Usd(450), "usd", "pending"),)
    assert parsed.payment_intent_id == parsed.about == "pi_life"
    assert parsed.dispute is None and parsed.payment_intent is None


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.updated", "under_review"),
        ("charge.dispute.closed", "won"),
        ("charge.dispute.closed", "lost"),
    ],
)
def test_dispute_events_carry_the_dispute(gateway: PaymentGateway, event_type: str, status: str) -> None:
    parsed = parse(gateway, an_event(event_type, dispute_json(status, 800)))

    assert parsed.type == event_type
    assert parsed.dispute == Dispute("du_life", "pi_life", Usd(800), "usd", status)
    assert parsed.about == "pi_life"
    assert parsed.refunds == ()


@pytest.mark.parametrize(
    ("event_type", "status"),
    [("payment_intent.payment_failed", "requires_payment_method"), ("payment_intent.canceled", "canceled")],
)
def test_failed_and_canceled_intent_events_carry_the_intent(
    gateway: PaymentGateway, event_type: str, status: str
) -> None:
    parsed = parse(gateway, an_event(event_type, intent_json(status)))

    assert parsed.payment_intent is not None
    assert (parsed.payment_intent.id, parsed.payment_intent.status) == ("pi_life", status)
    assert parsed.payment_intent.metadata[META_TOP_UP_ID] == "tu_life"
    assert parsed.about == "pi_life"


def test_an_expanded_payment_intent_reference_is_read_by_its_id(gateway: PaymentGateway) -> None:
    refund = {**refund_json(), "payment_intent": intent_json("succeeded")}

    assert parse(gateway, an_event("refund.created", refund)).about == "pi_life"


MALFORMED = [
    ("charge.refunded", {**charge_json(None), "id": None}),
    ("charge.refunded", {**charge_json(None), "payment_intent": 42}),
    ("charge.refunded", {**charge_json(None), "refunds": ["re_1"]}),
    ("charge.refunded", charge_json([{**refund_json(), "amount": "300"}])),
    ("refund.created", {**refund_json(), "amount": 3.5}),
    ("refund.created", {**refund_json(), "amount": 300.0}),
    ("refund.created", {**refund_json(), "amount": -300}),
    ("refund.created", {**refund_json(), "amount": True}),
    ("refund.updated", {k: v for k, v in refund_json().items() if k != "status"}),
    ("charge.refund.updated", {**refund_json(), "currency": None}),
    ("charge.dispute.created", {k: v for k, v in dispute_json().items() if k != "amount"}),
    ("charge.dispute.closed", {**dispute_json("lost"), "id": ""}),
    ("charge.dispute.closed", {**dispute_json("won"), "amount": "1000"}),
    ("payment_intent.payment_failed", {**intent_json("requires_payment_method"), "amount": 10.5}),
    ("payment_intent.canceled", {k: v for k, v in intent_json("canceled").items() if k != "currency"}),
]


@pytest.mark.parametrize(
    ("event_type", "obj"), MALFORMED, ids=[f"{t}-{i}" for i, (t, _) in enumerate(MALFORMED)]
)
def test_malformed_lifecycle_objects_are_refused(gateway: PaymentGateway, event_type: str, obj: Any) -> None:
    with pytest.raises(InvalidWebhook):
        parse(gateway, an_event(event_type, obj))


@pytest.mark.parametrize(
    "event_type",
    ["charge.refunded", "refund.created", "charge.dispute.created", "payment_intent.payment_failed"],
)
def test_a_lifecycle_event_without_its_object_is_refused(gateway: PaymentGateway, event_type: str) -> None:
    event = an_event(event_type, {})
    del event["data"]

    with pytest.raises(InvalidWebhook):
        parse(gateway, event)


# -- the fake's lifecycle controls produce what the real parser reads -----------------------------------


def paid_fake_intent(cents: int = 1000) -> tuple[FakePaymentGateway, PaymentIntent]:
    fake = FakePaymentGateway((SECRET,))
    intent = fake.create_payment_intent(a_request(cents))
    fake.succeed(intent.id)
    return fake, intent


def test_fake_fail_and_cancel_sign_the_intent_events() -> None:
    fake = FakePaymentGateway((SECRET,))
    intent = fake.create_payment_intent(a_request(1000))

    failed = fake.parse_webhook(*fake.fail(intent.id))
    canceled = fake.parse_webhook(*fake.cancel(intent.id))

    assert failed.type == "payment_intent.payment_failed" and failed.about == intent.id
    assert failed.payment_intent is not None and failed.payment_intent.status == "requires_payment_method"
    assert canceled.type == "payment_intent.canceled" and canceled.about == intent.id
    assert fake.retrieve_payment_intent(intent.id).status == "canceled"
    assert failed.id != canceled.id


def test_fake_refund_events_and_listing() -> None:
    fake, intent = paid_fake_intent()

    first = fake.refund(intent.id, 300, refund_id="re_first")
    second = fake.refund(intent.id, 200, event="refund.created")
    missed = fake.refund(intent.id, 100, event=None)
    bare = fake.refund(intent.id, 50, include_refunds=False)

    assert first is not None and second is not None and bare is not None and missed is None
    charge = fake.parse_webhook(*first)
    assert (charge.type, charge.about, charge.refunds_listed) == ("charge.refunded", intent.id, True)
    assert charge.refunds == (Refund("re_first", intent.id, Usd(300), "usd", "succeeded"),)
    created = fake.parse_webhook(*second)
    assert created.type == "refund.created" and [r.amount.cents for r in created.refunds] == [200]
    unlisted = fake.parse_webhook(*bare)
    assert (unlisted.refunds, unlisted.refunds_listed, unlisted.about) == ((), False, intent.id)
    assert [r.amount.cents for r in fake.list_refunds(intent.id)] == [50, 100, 200, 300]  # newest first


def test_fake_charge_refunded_lists_every_refund_of_the_charge() -> None:
    fake, intent = paid_fake_intent()
    fake.refund(intent.id, 300, event=None)

    event = fake.refund(intent.id, 200)

    assert event is not None
    assert sorted(r.amount.cents for r in fake.parse_webhook(*event).refunds) == [200, 300]


def test_fake_dispute_opens_then_closes_the_same_dispute() -> None:
    fake, intent = paid_fake_intent()

    opened = fake.parse_webhook(*fake.dispute(intent.id, 1000))
    updated = fake.parse_webhook(*fake.dispute(intent.id, 1000, "under_review"))
    closed = fake.parse_webhook(*fake.dispute(intent.id, 1000, "lost"))

    assert [e.type for e in (opened, updated, closed)] == [
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
    ]
    assert opened.dispute is not None and closed.dispute is not None
    assert opened.dispute.id == closed.dispute.id
    assert (opened.dispute.status, closed.dispute.status) == ("needs_response", "lost")
    assert closed.about == intent.id and closed.dispute.amount == Usd(1000)


def test_fake_lists_respect_outages_and_created_after() -> None:
    moments = iter([datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)])
    fake = FakePaymentGateway((SECRET,), clock=lambda: next(moments))
    old = fake.create_payment_intent(a_request(1000))
    new = fake.create_payment_intent(a_request(1000))

    assert [i.id for i in fake.list_payment_intents(datetime(2024, 1, 1, 12, tzinfo=UTC))] == [new.id]
    assert [i.id for i in fake.list_payment_intents()] == [new.id, old.id]
    fake.fail_next()
    with pytest.raises(PaymentGatewayFailed):
        fake.list_refunds(old.id)


# -- saving a card: Customers, SetupIntents, PaymentMethods ---------------------------------------------


def a_user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


def test_a_setup_intent_for_a_new_customer_carries_the_user_and_waits_for_a_card(gateway: PaymentGateway) -> None:
    user = a_user()
    customer = gateway.create_customer(user, f"customer-{user}")
    intent = gateway.create_setup_intent(customer, user, f"setup-{uuid.uuid4().hex}")

    assert customer.startswith("cus_")
    assert intent.id.startswith("seti_")
    assert (intent.customer_id, intent.user_id, intent.payment_method_id) == (customer, user, None)
    assert intent.status == "requires_payment_method"
    assert intent.client_secret and intent.client_secret.startswith(intent.id)
    assert intent.client_secret not in repr(intent)
    found = gateway.retrieve_setup_intent(intent.id)
    assert (found.id, found.customer_id, found.user_id, found.status) == (intent.id, customer, user, intent.status)


def test_a_confirmed_setup_intent_names_its_card_attached_to_the_customer(
    gateway: PaymentGateway, side: StripeSide
) -> None:
    user = a_user()
    customer = gateway.create_customer(user, f"customer-{user}")
    intent = gateway.create_setup_intent(customer, user, f"setup-{uuid.uuid4().hex}")

    side.confirm_setup(intent)

    done = gateway.retrieve_setup_intent(intent.id)
    assert done.status == "succeeded"
    assert done.payment_method_id is not None and done.payment_method_id.startswith("pm_")
    card = gateway.card_details(done.payment_method_id)
    assert card == CardDetails(done.payment_method_id, "visa", "4242", 12, 2030, customer_id=customer)


def test_a_detached_card_belongs_to_no_customer_and_cannot_be_detached_again(
    gateway: PaymentGateway, side: StripeSide
) -> None:
    user = a_user()
    customer = gateway.create_customer(user, f"customer-{user}")
    intent = gateway.create_setup_intent(customer, user, f"setup-{uuid.uuid4().hex}")
    side.confirm_setup(intent)
    pm_id = gateway.retrieve_setup_intent(intent.id).payment_method_id
    assert pm_id is not None

    gateway.detach_payment_method(pm_id)

    assert gateway.card_details(pm_id).customer_id is None
    with pytest.raises(PaymentGatewayFailed, match="detach"):
        gateway.detach_payment_method(pm_id)


def test_unknown_setup_intents_and_cards_are_not_found(gateway: PaymentGateway) -> None:
    with pytest.raises(NotFound):
        gateway.retrieve_setup_intent("seti_doesnotexist000000")
    with pytest.raises(NotFound):
        gateway.card_details("pm_doesnotexist000000")
    with pytest.raises(NotFound):
        gateway.detach_payment_method("pm_doesnotexist000000")


def test_fake_refuses_a_setup_intent_for_an_unknown_customer() -> None:
    """As Stripe does (No such customer, 400); localstripe does not check."""
    gateway = FakePaymentGateway((SECRET,))
    with pytest.raises(PaymentGatewayFailed) as failed:
        gateway.create_setup_intent("cus_doesnotexist000000", "user-1", f"setup-{uuid.uuid4().hex}")
    assert failed.value.outcome_unknown is False


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda g: g.create_customer("user-1", "customer-user-1"), id="create_customer"),
        pytest.param(lambda g: g.create_setup_intent("cus_1", "user-1", "k"), id="create_setup_intent"),
        pytest.param(lambda g: g.retrieve_setup_intent("seti_1"), id="retrieve_setup_intent"),
        pytest.param(lambda g: g.card_details("pm_1"), id="card_details"),
        pytest.param(lambda g: g.detach_payment_method("pm_1"), id="detach_payment_method"),
    ],
)
def test_unconfigured_gateway_refuses_saving_cards(
    make_gateway: MakeGateway, call: Callable[[PaymentGateway], object]
) -> None:
    with pytest.raises(PaymentsNotConfigured, match="STRIPE_SECRET_KEY"):
        call(make_gateway(configured=False))


def setup_succeeded_event(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": "setup_intent.succeeded",
        "created": int(time.time()),
        "data": {"object": obj},
    }


SETUP_OBJECT: dict[str, Any] = {
    "id": "seti_contract_1",
    "object": "setup_intent",
    "customer": "cus_contract_1",
    "client_secret": "seti_contract_1_secret_abc",
    "status": "succeeded",
    "usage": "off_session",
    "payment_method": "pm_contract_1",
    "metadata": {META_USER_ID: "user-1"},
}


def test_setup_intent_succeeded_parses_into_its_setup_intent(gateway: PaymentGateway) -> None:
    payload, header = signed(setup_succeeded_event(SETUP_OBJECT))

    parsed = gateway.parse_webhook(payload, header)

    assert parsed.type == "setup_intent.succeeded"
    assert (parsed.payment_intent, parsed.about) == (None, None)
    assert parsed.setup_intent == SetupIntent(
        id="seti_contract_1",
        customer_id="cus_contract_1",
        client_secret="seti_contract_1_secret_abc",
        status="succeeded",
        payment_method_id="pm_contract_1",
        user_id="user-1",
    )


def test_setup_intent_with_expanded_references_parses_too(gateway: PaymentGateway) -> None:
    expanded = {**SETUP_OBJECT, "customer": {"id": "cus_x", "object": "customer"},
                "payment_method": {"id": "pm_x", "object": "payment_method"}, "metadata": {}}
    payload, header = signed(setup_succeeded_event(expanded))

    parsed = gateway.parse_webhook(payload, header).setup_intent

    assert parsed is not None
    assert (parsed.customer_id, parsed.payment_method_id, parsed.user_id) == ("cus_x", "pm_x", None)


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(setup_succeeded_event({**SETUP_OBJECT, "customer": None}), id="no-customer"),
        pytest.param({**setup_succeeded_event(SETUP_OBJECT), "type": "setup_intent.created"}, id="created"),
        pytest.param({**setup_succeeded_event(SETUP_OBJECT), "type": "setup_intent.setup_failed",
                      "data": {}}, id="failed-without-object"),
    ],
)
def test_setup_intent_events_the_wallet_does_not_read_pass_bare(
    gateway: PaymentGateway, event: dict[str, Any]
) -> None:
    payload, header = signed(event)

    parsed = gateway.parse_webhook(payload, header)

    assert (parsed.setup_intent, parsed.payment_intent) == (None, None)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(None, id="no-object"),
        pytest.param({**SETUP_OBJECT, "id": None}, id="no-id"),
        pytest.param({k: v for k, v in SETUP_OBJECT.items() if k != "status"}, id="no-status"),
        pytest.param({**SETUP_OBJECT, "payment_method": 12}, id="payment-method-not-an-id"),
    ],
)
def test_a_malformed_setup_intent_succeeded_is_invalid(gateway: PaymentGateway, obj: dict[str, Any] | None) -> None:
    payload, header = signed(setup_succeeded_event(obj))  # type: ignore[arg-type]

    with pytest.raises(InvalidWebhook):
        gateway.parse_webhook(payload, header)


# -- idempotency of Customers and SetupIntents: only the fake honours keys (see above) ------------------


def test_fake_same_customer_key_returns_the_same_customer_and_setup_key_the_same_intent() -> None:
    gateway = FakePaymentGateway((SECRET,))
    first = gateway.create_customer("alice", "customer-alice")
    assert gateway.create_customer("alice", "customer-alice") == first
    assert gateway.create_customer("bob", "customer-bob") != first
    with pytest.raises(PaymentGatewayFailed, match="idempotency key"):
        gateway.create_customer("mallory", "customer-alice")
    intent = gateway.create_setup_intent(first, "alice", "setup-1")
    assert gateway.create_setup_intent(first, "alice", "setup-1") == intent
    assert gateway.create_setup_intent(first, "alice", "setup-2").id != intent.id
