"""StripePaymentGateway over real HTTP: against localstripe, and against tiny local servers that
play a broken or recording Stripe. Nothing here talks to api.stripe.com."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from adapters.stripe_gateway import StripePaymentGateway, newest_first
from tests.fixtures.localstripe import LOCALSTRIPE_KEY, register_webhook
from wallet_core.errors import NotFound, PaymentDeclined, PaymentGatewayFailed, PaymentsNotConfigured
from wallet_core.money import Usd
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID, Dispute, OffSessionCharge, PaymentIntentRequest, Refund

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
    body: Mapping[str, object] = field(default_factory=dict)
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


def test_the_timeout_bounds_the_whole_call_retries_included() -> None:
    # Stripe answers nothing for 3 s, every time. With 2 network retries the SDK alone would wait
    # 3 x 1.5 s plus back-off; the budget is the whole call's.
    with local_server(lambda _: Answer(body=intent_json(), delay=3)) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, timeout_seconds=1.5, max_network_retries=2)
        started = time.monotonic()
        with pytest.raises(PaymentGatewayFailed, match="could not be reached"):
            gateway.create_payment_intent(a_request())
        took = time.monotonic() - started
    assert took < 2.5, took
    assert len(seen) == 1  # no time was left for a retry


def test_a_retry_still_happens_when_the_budget_leaves_time_for_it() -> None:
    answers = iter([Answer(status=503, body={"error": {"type": "api_error", "message": "busy"}}),
                    Answer(body=intent_json("pi_second_try"))])
    with local_server(lambda _: next(answers)) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, timeout_seconds=5, max_network_retries=2)
        intent = gateway.create_payment_intent(a_request())
    assert intent.id == "pi_second_try"
    assert len(seen) == 2
    assert seen[0].headers.get("Idempotency-Key") == seen[1].headers.get("Idempotency-Key") is not None


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
    hook = f"it-{uuid.uuid4().hex[:8]}"
    with local_server(lambda _: Answer(body={"received": True})) as (hook_url, seen):
        register_webhook(localstripe_url, hook, f"{hook_url}/stripe/webhook", "whsec_it_localstripe")
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
        # localstripe cannot forget a hook: leave this one listening for an event that never comes.
        register_webhook(
            localstripe_url, hook, f"{hook_url}/stripe/webhook", "whsec_it_localstripe", events=["wallet.test.muted"]
        )

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


# -- listing: pages, order, cutoff -------------------------------------------------------------------


def query(seen: Seen) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(seen.path).query))


def paged(items: Sequence[Mapping[str, object]], page_size: int) -> Callable[[Seen], Answer]:
    """A Stripe list endpoint over `items` (in the order given), honouring limit and starting_after."""

    def answer(request: Seen) -> Answer:
        params = query(request)
        start = 0
        if "starting_after" in params:
            start = next(i for i, item in enumerate(items) if item["id"] == params["starting_after"]) + 1
        size = min(page_size, int(params.get("limit", 10)))
        data = items[start : start + size]
        return Answer(body={"object": "list", "data": data, "has_more": start + size < len(items), "url": "/v1/x"})

    return answer


def listed_intent(n: int, created: int) -> dict[str, object]:
    return {**intent_json(f"pi_list_{n}", 100 + n), "created": created, "status": "succeeded"}


def test_list_payment_intents_follows_every_page_newest_first() -> None:
    items = [listed_intent(n, 1_700_000_000 - n) for n in range(7)]  # Stripe's order: newest first
    with local_server(paged(items, page_size=3)) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        intents = list(gateway.list_payment_intents())

    assert [i.id for i in intents] == [f"pi_list_{n}" for n in range(7)]
    assert [i.amount for i in intents] == [Usd(100 + n) for n in range(7)]
    assert all(s.method == "GET" and urllib.parse.urlsplit(s.path).path == "/v1/payment_intents" for s in seen)
    assert [query(s).get("starting_after") for s in seen] == [None, "pi_list_2", "pi_list_5"]
    assert all(query(s)["limit"] == "100" for s in seen)
    assert not any(k.startswith("created") for s in seen for k in query(s))  # filtered here, not at Stripe


def test_list_payment_intents_stops_at_the_cutoff_without_reading_further_pages() -> None:
    items = [listed_intent(n, 1_700_000_000 - 10 * n) for n in range(9)]
    cutoff = datetime.fromtimestamp(1_700_000_000 - 30, UTC)  # pi_list_0 .. pi_list_3 are at or after it
    with local_server(paged(items, page_size=2)) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        intents = list(gateway.list_payment_intents(created_after=cutoff))

    assert [i.id for i in intents] == ["pi_list_0", "pi_list_1", "pi_list_2", "pi_list_3"]
    assert len(seen) == 3  # the page holding pi_list_4 ends it; no fourth request


def test_list_payment_intents_reverses_a_server_that_lists_oldest_first() -> None:
    """localstripe lists in creation order; the port promises newest first."""
    items = [listed_intent(n, 1_700_000_000 + n // 2) for n in range(5)]  # several share a second
    cutoff = datetime.fromtimestamp(1_700_000_001, UTC)
    with local_server(paged(items, page_size=2)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        everything = [i.id for i in gateway.list_payment_intents()]
        recent = [i.id for i in gateway.list_payment_intents(created_after=cutoff)]

    assert everything == [f"pi_list_{n}" for n in (4, 3, 2, 1, 0)]
    assert recent == ["pi_list_4", "pi_list_3", "pi_list_2"]


def test_newest_first_keeps_what_it_cannot_order_in_the_servers_order() -> None:
    assert list(newest_first([(5, "a"), (5, "b")], None)) == ["a", "b"]
    assert list(newest_first([(5, "a"), (5, "b")], 6)) == []
    assert list(newest_first([(5, "a"), (5, "b"), (4, "c"), (3, "d")], 4)) == ["a", "b", "c"]
    assert list(newest_first([(5, "a"), (5, "b"), (6, "c")], 5)) == ["c", "b", "a"]
    assert list(newest_first([], None)) == []


def test_newest_first_reads_no_further_than_the_first_item_older_than_the_cutoff() -> None:
    read: list[int] = []

    def entries() -> Iterator[tuple[int, int]]:
        for created in range(100, 0, -1):
            read.append(created)
            yield created, created

    assert list(newest_first(entries(), 98)) == [100, 99, 98]
    assert read == [100, 99, 98, 97]


def test_naive_created_after_is_taken_as_utc() -> None:
    items = [listed_intent(n, 1_700_000_000 - 10 * n) for n in range(3)]
    with local_server(paged(items, page_size=10)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        naive = datetime.fromtimestamp(1_700_000_000 - 10, UTC).replace(tzinfo=None)
        assert [i.id for i in gateway.list_payment_intents(created_after=naive)] == ["pi_list_0", "pi_list_1"]


def test_list_refunds_follows_every_page_and_filters_by_intent() -> None:
    refunds = [
        {"id": f"re_{n}", "object": "refund", "amount": 10 * (n + 1), "currency": "USD", "status": "succeeded",
         "payment_intent": "pi_r" if n != 2 else None, "charge": "ch_r"}
        for n in range(5)
    ]
    with local_server(paged(refunds, page_size=2)) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        found = gateway.list_refunds("pi_r")

    assert found == [Refund(f"re_{n}", "pi_r", Usd(10 * (n + 1)), "usd", "succeeded") for n in range(5)]
    assert [urllib.parse.urlsplit(s.path).path for s in seen] == ["/v1/refunds"] * 3
    assert all(query(s)["payment_intent"] == "pi_r" and query(s)["limit"] == "100" for s in seen)
    assert [query(s).get("starting_after") for s in seen] == [None, "re_1", "re_3"]


def test_list_disputes_follows_every_page_and_names_the_intent_when_stripe_does_not() -> None:
    disputes = [
        {"id": f"du_{n}", "object": "dispute", "amount": 100 * (n + 1), "currency": "USD",
         "status": ["needs_response", "under_review", "won", "lost"][n], "charge": "ch_d",
         "payment_intent": "pi_d" if n != 1 else None}
        for n in range(4)
    ]
    with local_server(paged(disputes, page_size=3)) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        found = gateway.list_disputes("pi_d")

    assert found == [
        Dispute(f"du_{n}", "pi_d", Usd(100 * (n + 1)), "usd", str(d["status"])) for n, d in enumerate(disputes)
    ]
    assert [urllib.parse.urlsplit(s.path).path for s in seen] == ["/v1/disputes"] * 2
    assert all(query(s)["payment_intent"] == "pi_d" and query(s)["limit"] == "100" for s in seen)
    assert [query(s).get("starting_after") for s in seen] == [None, "du_2"]


def test_list_refunds_of_an_empty_id_asks_nothing() -> None:
    with local_server(paged([], page_size=10)) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        assert gateway.list_refunds("") == []
    assert seen == []


def test_list_refunds_and_disputes_of_a_missing_intent_are_empty() -> None:
    error = {"error": {"type": "invalid_request_error", "code": "resource_missing",
                       "message": "No such payment_intent: 'pi_gone'", "param": "payment_intent"}}
    with local_server(lambda _: Answer(status=400, body=error)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        assert gateway.list_refunds("pi_gone") == []
        assert gateway.list_disputes("pi_gone") == []


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda g: list(g.list_payment_intents()), id="list_payment_intents"),
        pytest.param(lambda g: g.list_refunds("pi_1"), id="list_refunds"),
        pytest.param(lambda g: g.list_disputes("pi_1"), id="list_disputes"),
    ],
)
@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(Answer(status=500, body={"error": {"type": "api_error", "message": "boom"}}), "HTTP 500",
                     id="server-error"),
        pytest.param(Answer(status=401, body={"error": {"type": "invalid_request_error",
                                                        "message": f"Invalid API Key provided: {SECRET_KEY}"}}),
                     "rejected the API key", id="bad-key"),
        pytest.param(Answer(body={"object": "payment_intent", "id": "pi_1"}), "not a list", id="not-a-list"),
        pytest.param(
            Answer(body={"object": "list", "data": [{"id": "x", "amount": "1", "created": 1}], "has_more": False}),
            "not a", id="bad-item",
        ),
        pytest.param(Answer(body={"object": "list", "data": [{**intent_json(), "id": "re_1", "created": 1,
                                                              "status": "succeeded"}], "has_more": True}),
                     "next page", id="no-progress"),
    ],
)
def test_list_failures_are_gateway_failures_without_the_key(
    call: Callable[[StripePaymentGateway], object], answer: Answer, message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with local_server(lambda _: answer) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        with pytest.raises(PaymentGatewayFailed, match=message) as caught:
            call(gateway)
    assert SECRET_KEY not in str(caught.value) and SECRET_KEY not in caplog.text


def test_unreachable_stripe_fails_when_listing_is_asked_for_not_later() -> None:
    gateway = StripePaymentGateway(
        SECRET_KEY, api_base=f"http://127.0.0.1:{closed_port()}", timeout_seconds=1, max_network_retries=0
    )
    with pytest.raises(PaymentGatewayFailed, match="could not be reached"):
        gateway.list_payment_intents()  # not even iterated


@pytest.mark.parametrize("key", [None, ""])
def test_listing_without_a_key_is_not_configured(key: str | None) -> None:
    with local_server(paged([], page_size=10)) as (url, seen):
        gateway = StripePaymentGateway(key, api_base=url)
        with pytest.raises(PaymentsNotConfigured):
            gateway.list_payment_intents()
        with pytest.raises(PaymentsNotConfigured):
            gateway.list_refunds("pi_1")
        with pytest.raises(PaymentsNotConfigured):
            gateway.list_disputes("pi_1")
    assert seen == []


# -- localstripe: listing what happened --------------------------------------------------------------


@pytest.mark.localstripe
def test_localstripe_lists_more_than_a_page_of_intents_newest_first(
    localstripe_gateway: StripePaymentGateway,
) -> None:
    created = [localstripe_gateway.create_payment_intent(a_request(100)).id]
    time.sleep(1.05)  # two different `created` seconds tell localstripe's order (oldest first) from Stripe's,
    # also when this test runs alone against a fresh localstripe and the rest fit in one second
    created += [localstripe_gateway.create_payment_intent(a_request(101 + n)).id for n in range(104)]
    mine = set(created)

    listed = [i.id for i in localstripe_gateway.list_payment_intents() if i.id in mine]

    assert listed == created[::-1]


@pytest.mark.localstripe
def test_localstripe_refunds_are_listed_with_amount_and_status(
    localstripe_gateway: StripePaymentGateway, localstripe_client: stripe.StripeClient
) -> None:
    intent = localstripe_gateway.create_payment_intent(a_request(2000))
    localstripe_client.v1.payment_intents.update(intent.id, {"payment_method": "pm_card_visa"})
    localstripe_client.v1.payment_intents.confirm(intent.id)
    first = localstripe_client.v1.refunds.create({"payment_intent": intent.id, "amount": 500})
    second = localstripe_client.v1.refunds.create({"payment_intent": intent.id, "amount": 700})

    refunds = localstripe_gateway.list_refunds(intent.id)

    assert sorted((r.id, r.amount, r.status) for r in refunds) == sorted(
        [(first.id, Usd(500), "succeeded"), (second.id, Usd(700), "succeeded")]
    )
    assert {(r.payment_intent_id, r.currency) for r in refunds} == {(intent.id, "usd")}


# -- saving a card: what goes over the wire ------------------------------------------------------------


def _form(seen: Seen) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(seen.body.decode())


def test_customer_and_setup_intent_are_created_with_our_keys_off_session(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    setup = {
        "id": "seti_local_1", "object": "setup_intent", "customer": "cus_local_1", "status": "requires_payment_method",
        "client_secret": "seti_local_1_secret_abcdefABCDEF1234", "payment_method": None, "usage": "off_session",
        "metadata": {META_USER_ID: "user-it"},
    }

    def answer(seen: Seen) -> Answer:
        if seen.path == "/v1/customers":
            return Answer(body={"id": "cus_local_1", "object": "customer", "metadata": {META_USER_ID: "user-it"}})
        return Answer(body=setup)

    with local_server(answer) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        customer = gateway.create_customer("user-it", "customer-user-it")
        intent = gateway.create_setup_intent(customer, "user-it", "setup-123")

    assert customer == "cus_local_1"
    assert [(s.method, s.path, s.headers.get("Idempotency-Key")) for s in seen] == [
        ("POST", "/v1/customers", "customer-user-it"),
        ("POST", "/v1/setup_intents", "setup-123"),
    ]
    assert _form(seen[0]) == {f"metadata[{META_USER_ID}]": ["user-it"]}
    assert _form(seen[1]) == {
        "customer": ["cus_local_1"],
        "usage": ["off_session"],
        "payment_method_types[0]": ["card"],
        f"metadata[{META_USER_ID}]": ["user-it"],
    }
    assert (intent.id, intent.customer_id, intent.user_id) == ("seti_local_1", "cus_local_1", "user-it")
    assert intent.client_secret == "seti_local_1_secret_abcdefABCDEF1234"
    assert "seti_local_1_secret_abcdefABCDEF1234" not in caplog.text  # the SDK's DEBUG body log is scrubbed


@pytest.mark.parametrize(
    "method",
    [
        pytest.param({"id": "pm_1", "object": "payment_method", "type": "sepa_debit", "sepa_debit": {}},
                     id="not-a-card"),
        pytest.param({"id": "pm_1", "object": "payment_method", "type": "card", "card": {"brand": "visa"}},
                     id="no-last4"),
        pytest.param({"id": "pm_1", "object": "payment_method", "type": "card",
                      "card": {"brand": "visa", "last4": "4242", "exp_month": 13, "exp_year": 2030}}, id="month-13"),
    ],
)
def test_card_details_of_something_not_a_whole_card_fail_cleanly(method: dict[str, object]) -> None:
    with local_server(lambda _: Answer(body=method)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        with pytest.raises(PaymentGatewayFailed, match="read a PaymentMethod"):
            gateway.card_details("pm_1")


def test_a_setup_intent_without_a_customer_is_a_gateway_failure() -> None:
    answer = {"id": "seti_1", "object": "setup_intent", "status": "succeeded", "customer": None}
    with local_server(lambda _: Answer(body=answer)) as (url, _seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        with pytest.raises(PaymentGatewayFailed, match="not a SetupIntent of a Customer"):
            gateway.retrieve_setup_intent("seti_1")


@pytest.mark.parametrize("bad_id", ["", "   ", "pm_1/../x"])
def test_an_empty_or_odd_id_is_not_found_without_asking_stripe(bad_id: str) -> None:
    with local_server(lambda _: Answer(body={})) as (url, seen):
        gateway = StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0)
        for call in (gateway.retrieve_setup_intent, gateway.card_details, gateway.detach_payment_method):
            with pytest.raises(NotFound):
                call(bad_id)
    assert seen == []


# -- charging a saved card off-session (automatic top-up) --------------------------------------------


def _saved_card(gateway: StripePaymentGateway, client: stripe.StripeClient, card: str) -> tuple[str, str]:
    """(customer id, payment method id) of a card saved the way the saved-cards flow does: a Customer, a
    SetupIntent confirmed with the card (what the user's browser does)."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    customer = gateway.create_customer(user, f"cus-{user}")
    setup = gateway.create_setup_intent(customer, user, f"seti-{user}")
    client.v1.setup_intents.confirm(setup.id, {"payment_method": card})
    method = gateway.retrieve_setup_intent(setup.id).payment_method_id
    assert method is not None
    return customer, method


def a_charge(customer: str, method: str, cents: int = 2000) -> OffSessionCharge:
    top_up = f"tu_{uuid.uuid4().hex[:12]}"
    return OffSessionCharge(
        amount=Usd(cents),
        currency="usd",
        customer_id=customer,
        payment_method_id=method,
        metadata={META_TOP_UP_ID: top_up, META_USER_ID: "user-it"},
        idempotency_key=top_up,
    )


@pytest.mark.localstripe
def test_a_saved_card_is_charged_off_session(
    localstripe_gateway: StripePaymentGateway, localstripe_client: stripe.StripeClient
) -> None:
    customer, method = _saved_card(localstripe_gateway, localstripe_client, "pm_card_visa")
    request = a_charge(customer, method, 2000)
    intent = localstripe_gateway.charge_off_session(request)
    assert intent.status == "succeeded"
    assert (intent.amount, intent.metadata) == (Usd(2000), request.metadata)
    assert localstripe_gateway.retrieve_payment_intent(intent.id).status == "succeeded"
    # localstripe ignores Idempotency-Key (a second send makes a second intent), so that the same key
    # answers the same intent is Stripe's promise, checked here only as far as the key being sent (below).


@pytest.mark.localstripe
def test_a_card_that_declines_every_charge_is_a_payment_declined_not_an_outage(
    localstripe_gateway: StripePaymentGateway, localstripe_client: stripe.StripeClient
) -> None:
    customer, method = _saved_card(localstripe_gateway, localstripe_client, "pm_card_chargeCustomerFail")
    with pytest.raises(PaymentDeclined) as declined:
        localstripe_gateway.charge_off_session(a_charge(customer, method))
    assert declined.value.code == "card_declined"
    assert not isinstance(declined.value, PaymentGatewayFailed)


def test_an_off_session_charge_sends_customer_method_off_session_confirm_metadata_and_the_key() -> None:
    with local_server(lambda _: Answer(body={**intent_json(amount=1234), "status": "succeeded"})) as (url, seen):
        StripePaymentGateway(SECRET_KEY, api_base=url, max_network_retries=0).charge_off_session(
            a_charge("cus_1", "pm_1", 1234)
        )
    [request] = seen
    form = _form(request)
    assert form["customer"] == ["cus_1"] and form["payment_method"] == ["pm_1"]
    assert form["off_session"] == ["true"] and form["confirm"] == ["true"]
    assert form["amount"] == ["1234"]
    assert form[f"metadata[{META_TOP_UP_ID}]"][0].startswith("tu_")
    assert request.headers["Idempotency-Key"] == form[f"metadata[{META_TOP_UP_ID}]"][0]


def test_an_unreachable_stripe_is_a_gateway_failure_on_an_off_session_charge() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gateway = StripePaymentGateway(SECRET_KEY, api_base=f"http://127.0.0.1:{port}", max_network_retries=0)
    with pytest.raises(PaymentGatewayFailed) as failed:
        gateway.charge_off_session(a_charge("cus_1", "pm_1"))
    assert not isinstance(failed.value, PaymentDeclined) and failed.value.outcome_unknown
