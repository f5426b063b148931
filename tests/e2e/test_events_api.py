"""The outbound-events admin API through the REST app and the SQL container (docs/events.md): webhook
endpoints registered, listed, removed and rotated over HTTP; a grant and a spend made over HTTP reach a
real receiver on 127.0.0.1 signed so that `standardwebhooks` verifies them; deliveries listed and an
event redelivered; events pulled page by page; low-balance alerts set, read and cleared, and a spend
crossing one shows wallet.balance_low in the pull."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from falcon import testing
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from adapters.fake_gateway import FakePaymentGateway
from tests.e2e.conftest import WEBHOOK_SECRET, Service
from tests.fixtures.webhook_receiver import Answer, WebhookReceiver
from wallet_core.money import Credits

ENDPOINTS = "/api/v1/admin/webhook-endpoints"
EVENTS = "/api/v1/admin/events"
ENDPOINT_FIELDS = {"id", "url", "events", "description", "created_at"}
DELIVERY_FIELDS = {
    "id",
    "event_id",
    "event_type",
    "status",
    "attempts",
    "last_status_code",
    "last_error",
    "next_attempt_at",
    "delivered_at",
    "created_at",
}


def alerts_url(user: str) -> str:
    return f"/api/v1/admin/users/{user}/wallet/alerts"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    got = WebhookReceiver().start()
    yield got
    got.close()


@pytest.fixture
def dev(make_service: Callable[..., Service]) -> Service:
    """WALLET_WEBHOOK_ALLOW_PRIVATE_URLS=true, so an endpoint may be the receiver on 127.0.0.1."""
    return make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), webhook_allow_private_urls=True)


def admin(svc: Service) -> dict[str, str]:
    return svc.auth("root", admin=True)


def body_of(resp: testing.Result, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    found: dict[str, Any] = resp.json
    return found


def register(svc: Service, url: str, events: list[str] | None = None, **extra: object) -> dict[str, Any]:
    resp = svc.client.simulate_post(
        ENDPOINTS, json={"url": url, "events": events or ["*"], **extra}, headers=admin(svc)
    )
    return body_of(resp, 201)


def grant(svc: Service, user: str, credits: str) -> dict[str, Any]:
    resp = svc.client.simulate_post(
        f"/api/v1/admin/users/{user}/wallet/grant", json={"credits": credits, "reason": "promo"}, headers=admin(svc)
    )
    return body_of(resp, 201)


def spend(svc: Service, user: str, credits: str, key: str) -> dict[str, Any]:
    resp = svc.client.simulate_post(
        f"/api/v1/admin/users/{user}/wallet/spend",
        json={"credits": credits, "reason": "usage"},
        headers={**svc.auth("billing", service=True), "Idempotency-Key": key},
    )
    return body_of(resp, 201)


def pull(svc: Service, **query: str) -> dict[str, Any]:
    return body_of(svc.client.simulate_get(EVENTS, params=query, headers=admin(svc)), 200)


def deliveries(svc: Service, endpoint_id: str, **query: str) -> list[dict[str, Any]]:
    resp = svc.client.simulate_get(f"{ENDPOINTS}/{endpoint_id}/deliveries", params=query, headers=admin(svc))
    found: list[dict[str, Any]] = body_of(resp, 200)["deliveries"]
    return found


def verified(secret: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(body, headers)
    return payload


# -- endpoints and delivery --------------------------------------------------------------------------


def test_a_grant_and_a_spend_over_http_reach_the_endpoint_signed_with_its_secret(
    dev: Service, receiver: WebhookReceiver
) -> None:
    made = register(dev, receiver.url(), description="billing app")
    assert set(made) == ENDPOINT_FIELDS | {"secret"} and made["secret"].startswith("whsec_")
    assert made["id"].startswith("we_") and made["events"] == ["*"] and made["description"] == "billing app"
    granted = grant(dev, "alice", "50.00")
    spent = spend(dev, "alice", "20.00", "s-1")

    dev.container.wallet().deliver_webhooks()

    got = receiver.wait_for(2)
    events = [verified(made["secret"], r.body, r.headers) for r in got]
    assert [e["type"] for e in events] == ["credits.granted", "credits.spent"]
    assert events[0]["data"]["transaction_id"] == granted["transaction_id"]
    assert events[1]["data"]["transaction_id"] == spent["transaction_id"]
    assert all(e["user_id"] == "alice" for e in events)
    assert [r.headers["webhook-id"] for r in got] == [e["id"] for e in events]
    with pytest.raises(WebhookVerificationError):  # another endpoint's secret does not verify them
        Webhook(register(dev, receiver.url("/other"))["secret"]).verify(got[0].body, got[0].headers)
    listed = deliveries(dev, made["id"])
    assert {d["event_id"] for d in listed} == {e["id"] for e in events}
    for d in listed:
        assert set(d) == DELIVERY_FIELDS
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("delivered", 1, 200)
        assert d["delivered_at"].endswith("Z") and d["next_attempt_at"] is None


def test_endpoints_are_listed_without_secrets_rotated_and_removed(dev: Service, receiver: WebhookReceiver) -> None:
    first = register(dev, receiver.url("/a"), ["credits.granted", "credits.spent"])
    second = register(dev, receiver.url("/b"))
    listed = body_of(dev.client.simulate_get(ENDPOINTS, headers=admin(dev)), 200)["endpoints"]
    assert [e["id"] for e in listed] == [first["id"], second["id"]]
    assert all(set(e) == ENDPOINT_FIELDS for e in listed)
    assert first["secret"] not in json.dumps(listed) and second["secret"] not in json.dumps(listed)
    assert listed[0]["events"] == ["credits.granted", "credits.spent"]

    rotated = body_of(dev.client.simulate_post(f"{ENDPOINTS}/{first['id']}/rotate-secret", headers=admin(dev)), 200)
    assert rotated["id"] == first["id"] and rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != first["secret"]
    grant(dev, "bob", "5.00")
    dev.container.wallet().deliver_webhooks()
    got = [r for r in receiver.wait_for(2) if r.path == "/a"]
    assert len(got) == 1
    verified(rotated["secret"], got[0].body, got[0].headers)  # the new secret verifies it
    verified(first["secret"], got[0].body, got[0].headers)  # and the old one still does, for 24 hours

    gone = dev.client.simulate_delete(f"{ENDPOINTS}/{first['id']}", headers=admin(dev))
    assert gone.status_code == 204 and not gone.content
    listed = body_of(dev.client.simulate_get(ENDPOINTS, headers=admin(dev)), 200)["endpoints"]
    assert [e["id"] for e in listed] == [second["id"]]
    again = dev.client.simulate_delete(f"{ENDPOINTS}/{first['id']}", headers=admin(dev))
    assert again.status_code == 404 and again.json["description"]
    missing = dev.client.simulate_post(f"{ENDPOINTS}/we_nope/rotate-secret", headers=admin(dev))
    assert missing.status_code == 404


def test_a_failed_attempt_shows_in_the_deliveries_and_redeliver_queues_the_event_again(
    dev: Service, receiver: WebhookReceiver
) -> None:
    made = register(dev, receiver.url(), ["credits.granted"])
    grant(dev, "carol", "5.00")
    receiver.answer_next(Answer(status=500))
    dev.container.wallet().deliver_webhooks()
    receiver.wait_for(1)
    pending = deliveries(dev, made["id"], status="pending")
    assert len(pending) == 1 and pending[0]["last_status_code"] == 500 and pending[0]["attempts"] == 1
    assert pending[0]["next_attempt_at"] is not None and pending[0]["delivered_at"] is None
    assert deliveries(dev, made["id"], status="delivered") == []
    event_id = pending[0]["event_id"]

    resp = dev.client.simulate_post(f"{EVENTS}/{event_id}/redeliver", headers=admin(dev))
    assert body_of(resp, 202) == {"event_id": event_id, "deliveries_queued": 1}
    dev.container.wallet().deliver_webhooks()
    got = receiver.wait_for(2)
    assert verified(made["secret"], got[1].body, got[1].headers)["id"] == event_id
    assert [d["event_id"] for d in deliveries(dev, made["id"], status="delivered")] == [event_id]

    assert dev.client.simulate_post(f"{EVENTS}/evt_nope/redeliver", headers=admin(dev)).status_code == 404
    assert dev.client.simulate_get(f"{ENDPOINTS}/we_nope/deliveries", headers=admin(dev)).status_code == 404
    bad = dev.client.simulate_get(f"{ENDPOINTS}/{made['id']}/deliveries", params={"status": "lost"}, headers=admin(dev))
    assert bad.status_code == 422 and "status" in bad.json["description"]


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hooks",
        "https://127.0.0.1/hooks",
        "https://10.0.0.7/hooks",
        "https://169.254.169.254/latest",
        "https://localhost/hooks",
        "ftp://example.com/x",
    ],
)
def test_plain_http_and_private_addresses_are_refused_with_422_unless_allowed(service: Service, url: str) -> None:
    resp = service.client.simulate_post(ENDPOINTS, json={"url": url, "events": ["*"]}, headers=admin(service))
    assert resp.status_code == 422, resp.text
    assert resp.headers["Content-Type"].startswith("application/json") and resp.json["description"]
    assert body_of(service.client.simulate_get(ENDPOINTS, headers=admin(service)), 200)["endpoints"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://example.com/x", "events": ["credits.gifted"]},
        {"url": "https://example.com/x", "events": []},
        {"url": "https://example.com/x"},
        {"url": "https://example.com/x", "events": ["*"], "secret": "whsec_mine"},
    ],
)
def test_unknown_event_types_and_malformed_bodies_are_422(dev: Service, body: dict[str, object]) -> None:
    resp = dev.client.simulate_post(ENDPOINTS, json=body, headers=admin(dev))
    assert resp.status_code == 422, resp.text
    assert resp.json["description"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", ENDPOINTS),
        ("GET", ENDPOINTS),
        ("DELETE", f"{ENDPOINTS}/we_1"),
        ("POST", f"{ENDPOINTS}/we_1/rotate-secret"),
        ("GET", f"{ENDPOINTS}/we_1/deliveries"),
        ("POST", f"{EVENTS}/evt_1/redeliver"),
        ("GET", EVENTS),
        ("PUT", alerts_url("alice")),
        ("GET", alerts_url("alice")),
        ("DELETE", alerts_url("alice")),
    ],
)
def test_every_events_route_is_admin_only(dev: Service, method: str, path: str) -> None:
    body = {"url": "http://127.0.0.1:9/x", "events": ["*"]} if path == ENDPOINTS else {"low_balance_credits": "1"}
    for who in (dev.auth("alice"), dev.auth("billing", service=True)):
        resp = dev.client.simulate_request(method, path, json=body if method in ("POST", "PUT") else None, headers=who)
        assert resp.status_code == 403, resp.text
        assert resp.json["description"]
    assert dev.client.simulate_request(method, path).status_code == 401
    assert body_of(dev.client.simulate_get(ENDPOINTS, headers=admin(dev)), 200)["endpoints"] == []


# -- the pull ---------------------------------------------------------------------------------------


def test_events_are_pulled_oldest_first_page_by_page_and_filtered(dev: Service) -> None:
    grant(dev, "dora", "10.00")
    grant(dev, "erin", "10.00")
    spend(dev, "dora", "1.00", "d-1")
    spend(dev, "dora", "2.00", "d-2")
    dev.container.wallet().deliver_webhooks()  # the worker numbers committed events (the pull's order)

    seen: list[dict[str, Any]] = []
    page = pull(dev, limit="3")
    while page["events"]:
        assert len(page["events"]) <= 3
        seen += page["events"]
        page = pull(dev, limit="3", after=page["next_cursor"])
    assert [(e["type"], e["user_id"], e["data"]["credits"]) for e in seen] == [
        ("credits.granted", "dora", "10.00"),
        ("credits.granted", "erin", "10.00"),
        ("credits.spent", "dora", "-1.00"),
        ("credits.spent", "dora", "-2.00"),  # the ledger's signed change
    ]
    assert len({e["id"] for e in seen}) == 4 and all(e["created_at"].endswith("Z") for e in seen)
    assert pull(dev, after=page["next_cursor"])["events"] == []  # nothing new: the same cursor again

    spent = pull(dev, type="credits.spent", user_id="dora")["events"]
    assert [e["data"]["credits"] for e in spent] == ["-1.00", "-2.00"]
    assert [e["user_id"] for e in pull(dev, user_id="erin")["events"]] == ["erin"]
    for query in (
        {"after": "nonsense"},
        {"type": "credits.gifted"},
        {"limit": "0"},
        {"limit": "501"},
        {"colour": "red"},
    ):
        resp = dev.client.simulate_get(EVENTS, params=query, headers=admin(dev))
        assert resp.status_code == 422, (query, resp.text)


# -- balance alerts -----------------------------------------------------------------------------------


def test_an_alert_is_set_read_and_cleared_and_the_default_applies_after(make_service: Callable[..., Service]) -> None:
    svc = make_service(
        FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)),
        low_balance_credits=Credits.amount("5.00", "low_balance_credits"),
    )
    url = alerts_url("fay")
    before = body_of(svc.client.simulate_get(url, headers=admin(svc)), 200)
    assert before == {
        "user_id": "fay",
        "low_balance_credits": None,
        "default_low_balance_credits": "5.00",
        "effective_low_balance_credits": "5.00",
        "level": None,
    }
    put = body_of(svc.client.simulate_put(url, json={"low_balance_credits": "100"}, headers=admin(svc)), 200)
    assert put["low_balance_credits"] == "100.00" and put["effective_low_balance_credits"] == "100.00"
    assert body_of(svc.client.simulate_get(url, headers=admin(svc)), 200) == put
    cleared = body_of(svc.client.simulate_delete(url, headers=admin(svc)), 200)
    assert cleared["low_balance_credits"] is None and cleared["effective_low_balance_credits"] == "5.00"
    for bad in (
        {"low_balance_credits": "0"},
        {"low_balance_credits": "1.001"},
        {"low_balance_credits": 1.5e400},
        {},
        {"low_balance_credits": "-3"},
        {"low_balance_credits": "1", "extra": 1},
    ):
        resp = svc.client.simulate_put(url, json=bad, headers=admin(svc))
        assert resp.status_code in (400, 422), (bad, resp.text)


def test_a_spend_crossing_the_threshold_fires_balance_low_once_and_shows_in_the_pull(dev: Service) -> None:
    grant(dev, "gus", "150.00")
    put = dev.client.simulate_put(alerts_url("gus"), json={"low_balance_credits": "100.00"}, headers=admin(dev))
    assert body_of(put, 200)["level"] == "ok"
    spend(dev, "gus", "40.00", "g-1")  # 110: still at or above
    spend(dev, "gus", "20.00", "g-2")  # 90: crosses
    spend(dev, "gus", "10.00", "g-3")  # 80: below already, nothing more
    dev.container.wallet().deliver_webhooks()

    low = pull(dev, type="wallet.balance_low", user_id="gus")["events"]
    assert len(low) == 1
    spends = pull(dev, type="credits.spent", user_id="gus")["events"]
    assert low[0]["data"]["transaction_id"] == spends[1]["data"]["transaction_id"]
    assert body_of(dev.client.simulate_get(alerts_url("gus"), headers=admin(dev)), 200)["level"] == "low"
