"""Outbound webhooks: endpoints, deliveries at least once on the retry schedule, secrets rotated with a
grace period, and nothing lost when a worker dies mid-delivery (core with the fakes)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.fake_webhook_sender import FakeWebhookSender
from adapters.memory_ledger import InMemoryStore, in_memory_unit_of_work_factory
from tests.unit.helpers import FakeClock, new_key
from wallet_core.errors import InvalidInput, NotFound, WebhooksNotConfigured
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases.webhook_delivery import LEASE, publish_and_queue
from wallet_core.webhooks_out import DeliveryStatus, SendResult

URL = "https://hooks.example.com/wallet"


@pytest.fixture
def sender() -> FakeWebhookSender:
    return FakeWebhookSender()


@pytest.fixture
def hooks(
    store: InMemoryStore,
    gateway: FakePaymentGateway,
    policy: TopUpPolicy,
    fake_clock: FakeClock,
    sender: FakeWebhookSender,
) -> Wallet:
    return Wallet(
        uow=in_memory_unit_of_work_factory(store),
        gateway=gateway,
        policy=policy,
        clock=fake_clock,
        webhook_sender=sender,
        webhook_retry_seconds=(5, 30),
    )


def grant(wallet: Wallet, credits: str = "10") -> None:
    wallet.grant("alice", credits, reason="promo", granted_by="admin", idempotency_key=new_key())


def test_an_event_is_delivered_signed_with_the_endpoints_secret(hooks: Wallet, sender: FakeWebhookSender) -> None:
    endpoint = hooks.add_webhook_endpoint(URL, ["*"], "billing")
    assert endpoint.secret.startswith("whsec_") and endpoint.secret not in repr(endpoint)
    grant(hooks)

    round_ = hooks.deliver_webhooks()

    assert (round_.published, round_.attempted, round_.delivered) == (1, 1, 1)
    [sent] = sender.sent
    body = json.loads(sent.body)
    assert body["type"] == "credits.granted" and sent.message_id == body["id"]
    assert sent.secrets == (endpoint.secret,) and sent.url == URL
    [delivery] = hooks.webhook_deliveries(endpoint.id)
    assert delivery.status is DeliveryStatus.DELIVERED and delivery.attempts == 1
    assert hooks.deliver_webhooks().attempted == 0  # delivered once, not again


def test_a_failing_receiver_gets_it_on_the_schedule_then_it_fails(
    hooks: Wallet, sender: FakeWebhookSender, fake_clock: FakeClock
) -> None:
    endpoint = hooks.add_webhook_endpoint(URL, ["*"])
    grant(hooks)
    sender.answer_next(SendResult(500), SendResult(None, "timed out"))

    hooks.deliver_webhooks()
    [d] = hooks.webhook_deliveries(endpoint.id, status="pending")
    assert (d.attempts, d.last_status_code, d.next_attempt_at) == (1, 500, fake_clock() + timedelta(seconds=5))
    fake_clock.advance(seconds=4)
    assert hooks.deliver_webhooks().attempted == 0  # not due yet
    fake_clock.advance(seconds=1)
    hooks.deliver_webhooks()
    fake_clock.advance(seconds=30)
    assert hooks.deliver_webhooks().delivered == 1  # the third attempt
    [d] = hooks.webhook_deliveries(endpoint.id)
    assert (d.status, d.attempts) == (DeliveryStatus.DELIVERED, 3)

    grant(hooks)
    sender.answer_next(*[SendResult(503)] * 3)
    for wait in (0, 5, 30):
        fake_clock.advance(seconds=wait)
        hooks.deliver_webhooks()
    [failed] = hooks.webhook_deliveries(endpoint.id, status="failed")
    assert failed.attempts == 3 and failed.last_error == "answered 503"
    assert len(sender.sent) == 6


def test_endpoints_get_only_the_types_they_subscribed(hooks: Wallet, sender: FakeWebhookSender) -> None:
    spends = hooks.add_webhook_endpoint(URL, ["credits.spent"])
    grant(hooks)
    hooks.spend("alice", "1", idempotency_key=new_key(), reason="usage")
    hooks.deliver_webhooks()
    assert [json.loads(s.body)["type"] for s in sender.sent] == ["credits.spent"]
    assert len(hooks.webhook_deliveries(spends.id)) == 1


def test_a_worker_that_dies_mid_delivery_loses_nothing(
    hooks: Wallet, store: InMemoryStore, sender: FakeWebhookSender, fake_clock: FakeClock
) -> None:
    endpoint = hooks.add_webhook_endpoint(URL, ["*"])
    grant(hooks)
    uow = in_memory_unit_of_work_factory(store)
    with uow() as tx:  # a worker publishes and claims, then dies before sending
        publish_and_queue(tx)
        tx.commit()
    with uow() as tx:
        assert len(tx.deliveries.claim(fake_clock(), fake_clock() + LEASE, 10)) == 1
        tx.commit()
    assert hooks.deliver_webhooks().attempted == 0  # leased to the dead worker
    fake_clock.advance(LEASE)
    assert hooks.deliver_webhooks().delivered == 1
    [d] = hooks.webhook_deliveries(endpoint.id)
    assert d.attempts == 2 and len(sender.sent) == 1


def test_rotating_a_secret_signs_with_both_for_a_day(
    hooks: Wallet, sender: FakeWebhookSender, fake_clock: FakeClock
) -> None:
    endpoint = hooks.add_webhook_endpoint(URL, ["*"])
    rotated = hooks.rotate_webhook_secret(endpoint.id)
    assert rotated.secret != endpoint.secret
    grant(hooks)
    hooks.deliver_webhooks()
    fake_clock.advance(hours=24)
    grant(hooks)
    hooks.deliver_webhooks()
    assert [s.secrets for s in sender.sent] == [(rotated.secret, endpoint.secret), (rotated.secret,)]


def test_removed_endpoints_redelivery_and_unknown_ids(hooks: Wallet, sender: FakeWebhookSender) -> None:
    kept = hooks.add_webhook_endpoint(URL, ["*"])
    gone = hooks.add_webhook_endpoint("https://other.example.com/x", ["*"])
    grant(hooks)
    hooks.remove_webhook_endpoint(gone.id)
    hooks.deliver_webhooks()
    assert [s.url for s in sender.sent] == [URL]
    assert [e.id for e in hooks.webhook_endpoints()] == [kept.id]
    event_id = json.loads(sender.sent[0].body)["id"]

    assert hooks.redeliver_event(event_id) == 1
    hooks.deliver_webhooks()
    assert [json.loads(s.body)["id"] for s in sender.sent] == [event_id, event_id]
    with pytest.raises(NotFound):
        hooks.redeliver_event("evt_nope")
    with pytest.raises(NotFound):
        hooks.remove_webhook_endpoint(gone.id)
    with pytest.raises(NotFound):
        hooks.webhook_deliveries("we_nope")


@pytest.mark.parametrize(
    ("url", "events"),
    [
        ("http://hooks.example.com/x", ["*"]),
        ("https://127.0.0.1/x", ["*"]),
        ("https://localhost/x", ["*"]),
        ("https://user:pw@hooks.example.com/x", ["*"]),
        ("ftp://hooks.example.com/x", ["*"]),
        ("https://hooks.example.com/x", []),
        ("https://hooks.example.com/x", ["credits.stolen"]),
        ("https://hooks.example.com/x", "*"),
        (None, ["*"]),
    ],
)
def test_bad_endpoints_are_refused(hooks: Wallet, store: InMemoryStore, url: object, events: object) -> None:
    with pytest.raises(InvalidInput):
        hooks.add_webhook_endpoint(url, events)
    assert store.state.endpoints == {}


def test_a_wallet_without_a_sender_says_so(wallet: Wallet) -> None:
    with pytest.raises(WebhooksNotConfigured):
        wallet.add_webhook_endpoint(URL, ["*"])
