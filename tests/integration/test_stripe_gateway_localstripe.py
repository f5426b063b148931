"""StripePaymentGateway over real HTTP: against localstripe, and against tiny local servers that
play a broken or recording Stripe. Nothing here talks to api.stripe.com."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from adapters.stripe_gateway import StripePaymentGateway
from tests.fixtures.localstripe import LOCALSTRIPE_KEY, register_webhook
from wallet_core.errors import NotFound, PaymentGatewayFailed, PaymentsNotConfigured
from wallet_core.money import Usd
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID, PaymentIntentRequest

SECRET_KEY = "sk_test_51SuperSecretIntegrationKey0123456789"


def a_request(cents: int = 2500) -> PaymentIntentRequest:
    top_up = f"tu_{uuid.uuid4().hex[:12]}"
    return PaymentIntentRequest(
        amount=Usd(cents),
        currency="usd",
        metadata={META_TOP_UP_ID: top_up, META_USER_ID: "user-it"},
        idempotency_key=f"topup-{top_up}",
    )


# -- a tiny HTTP server in a thread ------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: dict[str, object] = field(default_factory=dict)
    delay: float = 0.0


@contextlib.contextmanager
def local_server(answer: Callable[[Seen], Answer]) -> Iterator[tuple[str, list[Seen]]]:
    """Serve on 127.0.0.1:<free port>; record every request; reply with `answer(request)`."""
    seen: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
            seen.append(request)
            reply = answer(request)
            if reply.delay:
                time.sleep(reply.delay)
            body = json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (timeout test)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def intent_json(pi_id: str = "pi_local_1", amount: int = 2500) -> dict[str, object]:
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "currency": "usd",
        "status": "requires_payment_method",
        "metadata": {META_TOP_UP_ID: "tu_x", META_USER_ID: "user-it"},
        "client_secret": f"{pi_id}_secret_abcdefABCDEF1234",
    }


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nobody listens on it once the socket is closed


# -- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda g: g.create_payment_intent(a_request()), id="create"),
        pytest.param(lambda g: g.retrieve_payment_intent("pi_123"), id="retrieve"),
    ],
)
def test_unreachable_stripe_fails_fast_without_leaking_the_key(
    call: Callable[[StripePaymentGateway], object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = StripePaymentGateway(
        SECRET_KEY, api_base=f"http://127.0.0.1:{closed_port()}", timeout_seconds=1, max_network_retries=0
    )

    started = time.monotonic()
    with pytest.raises(PaymentGatewayFailed) as caught:
        call(gateway)

    assert time.monotonic() - started < 5
    assert "could not be reached" in caught.value.description
    assert SECRET_KEY not in str(caught.value)
    assert SECRET_KEY not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert SECRET_KEY not in caplog.text


def test_slow_stripe_times_out_into_gateway_failed() -> None:
    with local_server(lambda _: Answer(body=intent_json(), delay=3)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, timeout_seconds=0.5, max_network_retries=0)
        started = time.monotonic()
        with pytest.raises(PaymentGatewayFailed, match="could not be reached"):
            gateway.create_payment_intent(a_request())
        assert time.monotonic() - started < 2.5


def test_stripe_error_messages_are_scrubbed_of_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Real Stripe echoes (a masked form of) the key; be safe even if it echoed all of it.
    error = {"error": {"type": "invalid_request_error", "message": f"Invalid API Key provided: {SECRET_KEY}"}}
    with local_server(lambda _: Answer(status=401, body=error)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        with pytest.raises(PaymentGatewayFailed) as caught:
            gateway.create_payment_intent(a_request())

    assert "rejected the API key" in caught.value.description
    assert "HTTP 401" in caught.value.description
    assert SECRET_KEY not in str(caught.value)
    assert SECRET_KEY not in caplog.text


def test_invalid_request_on_create_is_a_gateway_failure_with_the_reason() -> None:
    error = {
        "error": {
            "type": "invalid_request_error",
            "message": "Invalid currency: xyz",
            "param": "currency",
            "code": "parameter_invalid",
        }
    }
    with local_server(lambda _: Answer(status=400, body=error)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        with pytest.raises(PaymentGatewayFailed, match="Invalid currency") as caught:
            gateway.create_payment_intent(a_request())
    assert "code=parameter_invalid" in caught.value.description


def test_resource_missing_on_retrieve_is_not_found() -> None:
    error = {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": "No such payment_intent: 'pi_gone'",
            "param": "intent",
        }
    }
    with local_server(lambda _: Answer(status=404, body=error)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        with pytest.raises(NotFound):
            gateway.retrieve_payment_intent("pi_gone")


def test_server_error_is_a_gateway_failure() -> None:
    error = {"error": {"type": "api_error", "message": "Something went wrong"}}
    with local_server(lambda _: Answer(status=500, body=error)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        with pytest.raises(PaymentGatewayFailed, match="HTTP 500"):
            gateway.retrieve_payment_intent("pi_x")


def test_a_reply_that_is_not_a_payment_intent_is_a_gateway_failure() -> None:
    with local_server(lambda _: Answer(body={"object": "list", "data": []})) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        with pytest.raises(PaymentGatewayFailed, match="not a PaymentIntent"):
            gateway.retrieve_payment_intent("pi_x")


def test_empty_id_is_not_found_without_a_request() -> None:
    with local_server(lambda _: Answer(body=intent_json())) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        with pytest.raises(NotFound):
            gateway.retrieve_payment_intent("")
    assert seen == []


# -- what goes over the wire -------------------------------------------------------------------------


def test_sdk_sends_the_idempotency_key_and_our_params(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    request = a_request(2500)
    with local_server(lambda _: Answer(body=intent_json("pi_local_1", 2500))) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        intent = gateway.create_payment_intent(request)
        again = gateway.create_payment_intent(request)

    assert [s.headers.get("Idempotency-Key") for s in seen] == [request.idempotency_key] * 2
    first = seen[0]
    assert (first.method, first.path) == ("POST", "/v1/payment_intents")
    assert first.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    form = first.body.decode()
    assert "amount=2500" in form and "currency=usd" in form
    assert "payment_method_types[0]=card" in form.replace("%5B", "[").replace("%5D", "]")
    assert f"metadata[{META_TOP_UP_ID}]" in form.replace("%5B", "[").replace("%5D", "]")
    assert intent == again
    assert (intent.id, intent.amount, intent.currency) == ("pi_local_1", Usd(2500), "usd")
    assert intent.client_secret == "pi_local_1_secret_abcdefABCDEF1234"
    # The SDK logs response bodies at DEBUG; neither the key nor the client secret may get through.
    assert "Stripe API response" in caplog.text or "API response body" in caplog.text
    assert "pi_local_1_secret_abcdefABCDEF1234" not in caplog.text
    assert SECRET_KEY not in caplog.text


def test_one_sdk_client_is_reused() -> None:
    with local_server(lambda _: Answer(body=intent_json())) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        gateway.retrieve_payment_intent("pi_local_1")
        client = gateway._client
        gateway.retrieve_payment_intent("pi_local_1")
    assert client is not None and gateway._client is client


def test_repr_masks_the_key() -> None:
    gateway = StripePaymentGateway(SECRET_KEY, ("whsec_abc", "whsec_def"))

    text = repr(gateway)

    assert SECRET_KEY not in text and "SuperSecret" not in text
    assert "whsec_abc" not in text
    assert "sk_test_…****" in text
    assert str(gateway) == text
    assert "unset" in repr(StripePaymentGateway(None))
    assert "***" in repr(StripePaymentGateway("weird-key-format"))
    assert "weird-key-format" not in repr(StripePaymentGateway("weird-key-format"))


@pytest.mark.parametrize("key", [None, "", "   "])
def test_missing_key_is_not_configured_and_makes_no_request(key: str | None) -> None:
    with local_server(lambda _: Answer(body=intent_json())) as (url, seen):
        gateway = StripePaymentGateway(key, api_base=url)
        with pytest.raises(PaymentsNotConfigured, match="STRIPE_SECRET_KEY is not set"):
            gateway.create_payment_intent(a_request())
        with pytest.raises(PaymentsNotConfigured):
            gateway.retrieve_payment_intent("pi_1")
    assert seen == []
    assert not gateway.configured


def test_a_lone_webhook_secret_string_is_not_split_into_characters() -> None:
    assert StripePaymentGateway(SECRET_KEY, "whsec_single").webhook_secrets == ("whsec_single",)


# -- localstripe: the whole card flow ----------------------------------------------------------------


@pytest.fixture
def localstripe_gateway(localstripe_url: str) -> StripePaymentGateway:
    return StripePaymentGateway(
        LOCALSTRIPE_KEY, ("whsec_it_localstripe",), api_base=localstripe_url, max_network_retries=0
    )


@pytest.mark.localstripe
def test_card_payment_succeeds_end_to_end(
    localstripe_gateway: StripePaymentGateway, localstripe_client: stripe.StripeClient
) -> None:
    request = a_request(3300)
    intent = localstripe_gateway.create_payment_intent(request)
    assert intent.status == "requires_payment_method"

    # What the buyer's browser would do with the client secret.
    localstripe_client.v1.payment_intents.update(intent.id, {"payment_method": "pm_card_visa"})
    localstripe_client.v1.payment_intents.confirm(intent.id)

    paid = localstripe_gateway.retrieve_payment_intent(intent.id)
    assert paid.status == "succeeded"
    assert paid.amount == Usd(3300)
    assert paid.metadata == request.metadata
    assert paid.amount_received is None  # localstripe does not report it; real Stripe does


@pytest.mark.localstripe
def test_localstripe_webhook_parses_into_a_succeeded_event(
    localstripe_url: str, localstripe_gateway: StripePaymentGateway, localstripe_client: stripe.StripeClient
) -> None:
    with local_server(lambda _: Answer(body={"received": True})) as (hook_url, seen):
        register_webhook(
            localstripe_url,
            f"it-{uuid.uuid4().hex[:8]}",
            f"{hook_url}/stripe/webhook",
            "whsec_it_localstripe",
        )
        request = a_request(4100)
        intent = localstripe_gateway.create_payment_intent(request)
        localstripe_client.v1.payment_intents.update(intent.id, {"payment_method": "pm_card_visa"})
        localstripe_client.v1.payment_intents.confirm(intent.id)

        deadline = time.monotonic() + 10
        delivered = None
        while delivered is None and time.monotonic() < deadline:
            # localstripe sends every event to every registered hook, a second late: pick ours.
            delivered = next(
                (
                    s
                    for s in list(seen)
                    if intent.id.encode() in s.body and b"payment_intent.succeeded" in s.body
                ),
                None,
            )
            time.sleep(0.1)

    assert delivered is not None, f"no payment_intent.succeeded for {intent.id} within 10s"
    assert delivered.path == "/stripe/webhook"
    event = localstripe_gateway.parse_webhook(delivered.body, delivered.headers.get("Stripe-Signature"))
    assert event.type == "payment_intent.succeeded"
    assert event.id.startswith("evt_")
    assert event.payment_intent is not None
    assert event.payment_intent.id == intent.id
    assert event.payment_intent.status == "succeeded"
    assert event.payment_intent.amount == Usd(4100)
    assert event.payment_intent.metadata == request.metadata
    # The same delivery under a different secret is refused.
    other = StripePaymentGateway(LOCALSTRIPE_KEY, ("whsec_not_it",))
    with pytest.raises(Exception, match="does not match"):
        other.parse_webhook(delivered.body, delivered.headers.get("Stripe-Signature"))
