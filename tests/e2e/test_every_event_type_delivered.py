"""Issue 12's proof that every outbound event type reaches a subscriber: the app on a real waitress socket
(SQL container, fake Stripe), a real HTTP receiver on 127.0.0.1 subscribed to "*", and every one of the
19 event types caused (over HTTP wherever a route exists), delivered, and verified with the
`standardwebhooks` library. The set of types expected is `EventType` itself, so a new type fails this
test until it is caused here too.

Private URLs are allowed (WALLET_WEBHOOK_ALLOW_PRIVATE_URLS=true) because the receiver is on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from adapters.fake_gateway import FakePaymentGateway
from entrypoints.http.app import create_app
from tests.e2e.conftest import WEBHOOK_SECRET, RunningServer, Service, run_waitress
from tests.fixtures.webhook_receiver import WebhookReceiver
from wallet_core.event_types import EventType
from wallet_core.saved_cards import SavedCard

ADMIN_USERS = "/api/v1/admin/users"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    got = WebhookReceiver().start()
    yield got
    got.close()


@pytest.fixture
def dev(make_service: Callable[..., Service]) -> Service:
    return make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), webhook_allow_private_urls=True)


@pytest.fixture
def server(dev: Service) -> Iterator[RunningServer]:
    yield from run_waitress(create_app(dev.container), threads=4)


class Api:
    """JSON requests to the server over its socket, asserting the status each step expects."""

    def __init__(self, svc: Service, server: RunningServer) -> None:
        self.svc = svc
        self.server = server

    def call(
        self,
        method: str,
        path: str,
        expect: int,
        body: object = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> dict[str, Any]:
        sent = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        try:
            conn.request(method, path, body=sent, headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            text = resp.read()
        finally:
            conn.close()
        assert resp.status == expect, f"{method} {path}: {resp.status} {text!r}"
        found: dict[str, Any] = json.loads(text or b"{}")
        return found

    def admin(self, method: str, path: str, expect: int, body: object = None, key: str | None = None) -> dict[str, Any]:
        headers = self.svc.auth("root", admin=True)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.call(method, path, expect, body, headers=headers)

    def grant(self, user: str, credits: str, key: str, **extra: object) -> dict[str, Any]:
        body = {"credits": credits, "reason": "promo", **extra}
        return self.admin("POST", f"{ADMIN_USERS}/{user}/wallet/grant", 201, body, key)

    def spend(self, user: str, credits: str, key: str) -> dict[str, Any]:
        return self.admin("POST", f"{ADMIN_USERS}/{user}/wallet/spend", 201, {"credits": credits, "reason": "use"}, key)

    def hold(self, user: str, credits: str, key: str, **extra: object) -> dict[str, Any]:
        body = {"credits": credits, "reason": "job", **extra}
        return self.admin("POST", f"{ADMIN_USERS}/{user}/wallet/holds", 201, body, key)

    def top_up(self, user: str, usd: str, key: str) -> dict[str, Any]:
        headers = {**self.svc.auth(user), "Idempotency-Key": key}
        return self.call("POST", "/api/v1/users/me/wallet/top-up", 201, {"amount_usd": usd}, headers=headers)

    def stripe(self, signed: tuple[bytes, str] | None) -> str:
        """Post a signed Stripe event to the webhook route; its outcome."""
        assert signed is not None
        payload, signature = signed
        answer = self.call("POST", "/webhooks/stripe", 200, raw=payload, headers={"Stripe-Signature": signature})
        outcome: str = answer["outcome"]
        return outcome

    def spendable(self, user: str) -> str:
        balance: str = self.admin("GET", f"{ADMIN_USERS}/{user}/wallet", 200)["balance"]
        return balance


def save_card(svc: Service, user: str) -> SavedCard:
    """A card saved at the fake Stripe (its PaymentMethod attached to the user's Customer) and in the wallet."""
    gateway = svc.gateway
    customer = gateway.create_customer(user, f"cus-{user}")
    setup = gateway.create_setup_intent(customer, user, f"seti-{user}")
    gateway.succeed_setup_intent(setup.id)
    method = gateway.setup_intents[setup.id].payment_method_id
    assert method is not None
    card = SavedCard(user, customer, method, "visa", "4242", 12, 2034, datetime.now(UTC))
    with svc.container.unit_of_work()() as tx:
        tx.saved_cards.set_customer(user, customer, card.saved_at)
        tx.saved_cards.save(card)
        tx.commit()
    return card


def cause_every_event_type(api: Api, svc: Service) -> None:
    gateway = svc.gateway
    # credits.granted (admin grant): promotional credits that expire in 3 seconds (credits.expired below).
    # Time really passes rather than the wallet's clock being moved on: deliveries are signed with the
    # wallet's time, and `standardwebhooks` refuses a timestamp more than 5 minutes from the real one.
    expires_at = svc.clock() + timedelta(seconds=3)
    api.grant("alice", "500.00", "g-expiring", expires_at=expires_at.astimezone(UTC).isoformat())

    # top_up.succeeded and credits.granted (paid top-up): $10 is 1000 credits.
    paid = api.top_up("alice", "10.00", "order-1")
    assert api.stripe(gateway.succeed(paid["payment_intent_id"])) == "granted"
    # top_up.failed
    declined = api.top_up("alice", "5.00", "order-2")
    api.stripe(gateway.fail(declined["payment_intent_id"]))
    # top_up.refunded: $1 of the paid top-up back.
    api.stripe(gateway.refund(paid["payment_intent_id"], 100))
    # dispute.opened, then dispute.closed (won).
    api.stripe(gateway.dispute(paid["payment_intent_id"], 200))
    api.stripe(gateway.dispute(paid["payment_intent_id"], 200, "won"))

    # credits.spent, then credits.reverted (the spend corrected).
    spent = api.spend("alice", "50.00", "s-1")
    api.admin("POST", f"/api/v1/admin/transactions/{spent['transaction_id']}/revert", 201, {"reason": "oops"}, "r-1")
    # hold.created and hold.captured; hold.created and hold.released.
    captured = api.hold("alice", "30.00", "h-capture")
    api.admin("POST", f"/api/v1/admin/holds/{captured['hold_id']}/capture", 200, {})
    released = api.hold("alice", "20.00", "h-release")
    api.admin("POST", f"/api/v1/admin/holds/{released['hold_id']}/release", 200, {})
    # a hold of one second, left to expire (hold.expired below).
    api.hold("alice", "10.00", "h-expire", expires_in_seconds=1)

    # credits.expired and hold.expired: once both are past, the expiry job runs. No HTTP route runs
    # expiry (it is `wallet expire`, a cron job), so this one step calls the service.
    time.sleep(max(0.0, (expires_at - svc.clock()).total_seconds()) + 1.1)
    report = svc.container.wallet().expire()
    assert (report.wallets_expired, report.holds_released) == (1, 1), report

    # wallet.balance_low, wallet.depleted, wallet.recovered on bob, whose alert is set over HTTP.
    api.admin("PUT", f"{ADMIN_USERS}/bob/wallet/alerts", 200, {"low_balance_credits": "100.00"})
    api.grant("bob", "150.00", "g-bob-1")  # at or above the threshold
    api.spend("bob", "60.00", "s-bob-1")  # 90: below it, balance_low
    api.spend("bob", "90.00", "s-bob-2")  # 0: depleted
    assert api.spendable("bob") == "0.00"
    api.grant("bob", "200.00", "g-bob-2")  # 200: recovered

    # auto_top_up.succeeded, then auto_top_up.failed (three times) and auto_top_up.disabled, on carol, whose
    # rule is put over HTTP. Her card is saved straight through the unit of work, and the charges are the
    # worker's (`wallet serve`'s thread): this step calls the service for both.
    card = save_card(svc, "carol")
    api.grant("carol", "1000.00", "g-carol")
    api.admin("PUT", f"{ADMIN_USERS}/carol/wallet/auto-top-up", 200, {"threshold_credits": "500.00",
                                                                       "amount_usd": "20.00"})
    api.spend("carol", "600.00", "s-carol-1")
    wallet = svc.container.wallet()
    assert wallet.charge_auto_top_ups().accepted == 1
    [intent] = [i for i in gateway.intents.values() if i.metadata.get("wallet_user_id") == "carol"]
    assert api.stripe(gateway.succeed(intent.id)) == "granted"
    gateway.always_decline(card.payment_method_id)
    for n in range(3):
        api.spend("carol", "2000.00" if n == 0 else "1.00", f"s-carol-d{n}")
        assert wallet.charge_auto_top_ups().declined == 1


def deliver_everything(svc: Service) -> None:
    """Delivery rounds until a round finds nothing to do: what `wallet serve`'s worker thread runs, called
    here through the service because the in-test waitress server (the Falcon app alone) has no worker."""
    wallet = svc.container.wallet()
    for _ in range(50):
        done = wallet.deliver_webhooks()
        if done.published == 0 and done.attempted == 0:
            return
        assert done.attempted == done.delivered, f"a delivery was not answered 2xx: {done}"
    raise AssertionError("deliveries were still pending after 50 rounds")


def test_every_event_type_reaches_the_endpoint_once_signed_so_standardwebhooks_verifies_it(
    dev: Service, server: RunningServer, receiver: WebhookReceiver
) -> None:
    api = Api(dev, server)
    endpoint = api.admin("POST", "/api/v1/admin/webhook-endpoints", 201, {"url": receiver.url(), "events": ["*"]})

    cause_every_event_type(api, dev)
    deliver_everything(dev)

    # Every event made, as the pull API lists them; the receiver records a request once it has answered,
    # so wait until it has them all.
    pulled = api.admin("GET", "/api/v1/admin/events?limit=100", 200)
    assert pulled["next_cursor"] is None or len(pulled["events"]) < 100
    made = {e["id"] for e in pulled["events"]}
    got = receiver.wait_for(len(made))
    verifier = Webhook(endpoint["secret"])
    events: list[dict[str, Any]] = []
    for request in got:
        event: dict[str, Any] = verifier.verify(request.body, request.headers)  # raises if the signature is wrong
        assert request.headers["webhook-id"] == event["id"]
        assert event["id"].startswith("evt_")
        events.append(event)

    types = {event["type"] for event in events}
    assert types == {t.value for t in EventType}, (
        f"missing: {sorted({t.value for t in EventType} - types)}; unexpected: {sorted(types - set(EventType))}"
    )
    repeated = {event_id: n for event_id, n in Counter(e["id"] for e in events).items() if n > 1}
    assert not repeated, f"delivered more than once: {repeated}"
    assert {e["id"] for e in events} == made  # nothing was made that was not delivered
    # Both kinds of credits.granted (an admin grant and a paid top-up) were delivered.
    alice_grants = [e for e in events if e["type"] == "credits.granted" and e["user_id"] == "alice"]
    assert len(alice_grants) == 2
    assert all(e["user_id"] in {"alice", "bob", "carol"} for e in events)
    assert datetime.fromisoformat(events[0]["created_at"]).tzinfo is not None
