"""Grants with `effective_at`, `priority` and `category` over HTTP, and the wallet's lots: what is
pending, what is spendable by category, and the order lots are spent in (GET /api/v1/users/me/wallet,
its admin twin, and the sources of a spend)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from falcon import testing

from entrypoints.timestamps import parse_instant
from tests.e2e.conftest import Service

WALLET = "/api/v1/users/me/wallet"
LOT_FIELDS = {
    "lot_id",
    "category",
    "granted",
    "remaining",
    "held",
    "priority",
    "effective_at",
    "expires_at",
    "source_transaction_id",
}


def grant_url(user: str) -> str:
    return f"/api/v1/admin/users/{user}/wallet/grant"


def post_grant(svc: Service, user: str, credits: str, key: str | None = None, **options: object) -> testing.Result:
    headers = {**svc.auth("root", admin=True), **({"Idempotency-Key": key} if key else {})}
    return svc.client.simulate_post(
        grant_url(user), json={"credits": credits, "reason": "promo", **options}, headers=headers
    )


def grant(svc: Service, user: str, credits: str, key: str, **options: object) -> dict[str, Any]:
    resp = post_grant(svc, user, credits, key, **options)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json
    return body


def iso_in(svc: Service, **delta: float) -> str:
    """A time `delta` from the wallet's clock, as a client writes it (with Z)."""
    return (svc.clock() + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def as_answered(text: str) -> str:
    """How the wallet writes back a time a client sent: ISO 8601 in UTC."""
    return parse_instant(text, "t").isoformat()


def wallet(svc: Service, user: str) -> dict[str, Any]:
    resp = svc.client.simulate_get(WALLET, headers=svc.auth(user))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json
    return body


def test_a_grant_answers_its_effective_at_priority_and_category_and_a_retry_the_same(service: Service) -> None:
    effective, expires = iso_in(service, hours=2), iso_in(service, days=30)
    body = {"effective_at": effective, "expires_at": expires, "priority": 7, "category": "paid"}

    first = post_grant(service, "alice", "25.00", "g-1", **body)
    again = post_grant(service, "alice", "25.00", "g-1", **body)
    other = post_grant(service, "alice", "25.00", "g-1", **{**body, "priority": 8})

    assert first.status_code == 201, first.text
    assert first.json == {
        "user_id": "alice",
        "credits_granted": "25.00",
        "balance": "0.00",  # pending: not spendable before effective_at
        "transaction_id": first.json["transaction_id"],
        "expires_at": as_answered(expires),
        "effective_at": as_answered(effective),
        "priority": 7,
        "category": "paid",
    }
    assert (again.status_code, again.json) == (200, first.json)
    assert other.status_code == 409, other.text


def test_a_plain_grant_answers_the_defaults(service: Service) -> None:
    answer = grant(service, "bob", "5.00", "g-1")
    assert (answer["effective_at"], answer["priority"], answer["category"]) == (None, 50, "promotional")


def test_the_wallet_lists_pending_credits_by_category_and_the_lots_in_spending_order(service: Service) -> None:
    never = grant(service, "cara", "1.00", "g-a")
    soon = grant(service, "cara", "2.00", "g-b", expires_at=iso_in(service, days=10))
    first = grant(service, "cara", "3.00", "g-c", priority=10, expires_at=iso_in(service, days=30))
    paid_first = grant(service, "cara", "4.00", "g-d", category="paid", priority=0)
    paid = grant(service, "cara", "5.00", "g-e", category="paid")
    later = grant(service, "cara", "6.00", "g-f", priority=20, effective_at=iso_in(service, days=1))

    shown = wallet(service, "cara")

    assert (shown["balance"], shown["pending"], shown["held"], shown["debt"]) == ("15.00", "6.00", "0.00", "0.00")
    assert shown["by_category"] == {"paid": "9.00", "promotional": "6.00"}
    assert all(set(lot) == LOT_FIELDS for lot in shown["lots"])
    order = [first, later, soon, never, paid_first, paid]
    assert [lot["source_transaction_id"] for lot in shown["lots"]] == [g["transaction_id"] for g in order]
    assert [(lot["category"], lot["granted"], lot["remaining"], lot["priority"]) for lot in shown["lots"]] == [
        ("promotional", "3.00", "3.00", 10),
        ("promotional", "6.00", "6.00", 20),
        ("promotional", "2.00", "2.00", 50),
        ("promotional", "1.00", "1.00", 50),
        ("paid", "4.00", "4.00", 0),
        ("paid", "5.00", "5.00", 50),
    ]
    pending_lot = shown["lots"][1]
    assert pending_lot["effective_at"] == later["effective_at"] and pending_lot["expires_at"] is None
    assert shown["lots"][2]["expires_at"] == soon["expires_at"]
    admin_view = service.client.simulate_get(
        "/api/v1/admin/users/cara/wallet", headers=service.auth("root", admin=True)
    )
    assert admin_view.status_code == 200 and admin_view.json == shown


def test_a_spend_takes_lots_in_that_order_skipping_pending_ones_and_says_which_paid(service: Service) -> None:
    grant(service, "dan", "5.00", "g-paid", category="paid", priority=0)
    grant(service, "dan", "2.00", "g-promo", expires_at=iso_in(service, days=3))
    grant(service, "dan", "50.00", "g-later", priority=0, effective_at=iso_in(service, hours=1))
    lots = {lot["source_transaction_id"]: lot["lot_id"] for lot in wallet(service, "dan")["lots"]}
    ids = {row["reference_id"]: row["id"] for row in wallet(service, "dan")["transactions"]}

    resp = service.client.simulate_post(
        "/api/v1/admin/users/dan/wallet/spend",
        json={"credits": "3.50", "reason": "usage"},
        headers={**service.auth("billing", service=True), "Idempotency-Key": "s-1"},
    )

    assert resp.status_code == 201, resp.text
    assert resp.json["balance"] == "3.50"
    assert resp.json["sources"] == [
        {"lot_id": lots[ids["grant:g-promo"]], "category": "promotional", "credits": "2.00"},
        {"lot_id": lots[ids["grant:g-paid"]], "category": "paid", "credits": "1.50"},
    ]
    row = wallet(service, "dan")["transactions"][0]
    assert (row["kind"], row["sources"], row["reverts"], row["reverted_by"]) == (
        "spend",
        resp.json["sources"],
        None,
        None,
    )
    assert wallet(service, "dan")["pending"] == "50.00"


def test_pending_credits_count_from_their_effective_at(service: Service) -> None:
    grant(service, "eve", "10.00", "g-1", effective_at=iso_in(service, hours=1))
    assert (wallet(service, "eve")["balance"], wallet(service, "eve")["pending"]) == ("0.00", "10.00")
    refused = service.client.simulate_post(
        "/api/v1/admin/users/eve/wallet/spend",
        json={"credits": "1.00", "reason": "too early"},
        headers={**service.auth("billing", service=True), "Idempotency-Key": "s"},
    )
    assert refused.status_code == 409, refused.text

    service.clock.advance(hours=2)

    shown = wallet(service, "eve")
    assert (shown["balance"], shown["pending"], shown["by_category"]["promotional"]) == ("10.00", "0.00", "10.00")
    assert service.container.wallet().verify() == []


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"priority": 101}, "priority must be a whole number from 0 to 100"),
        ({"priority": -1}, "priority must be a whole number from 0 to 100"),
        ({"priority": "5"}, "priority must be a whole number"),
        ({"priority": 5.5}, "priority must be a whole number"),
        ({"priority": True}, "priority must be a whole number"),
        ({"priority": None}, "priority must be a whole number"),
        ({"category": "gold"}, 'category must be "promotional" or "paid"'),
        ({"category": None}, "category must be a string"),
        ({"effective_at": "PAST"}, "effective_at must not be in the past"),
        ({"effective_at": "FAR"}, "effective_at must be at most 1 year ahead"),
        ({"effective_at": "2030-01-01T00:00:00"}, "effective_at needs a timezone"),
        ({"effective_at": "tomorrow"}, "effective_at must be an ISO 8601 time"),
        ({"effective_at": 1893456000}, "effective_at must be a string"),
        ({"effective_at": "SOON", "expires_at": "SOON"}, "expires_at must be after effective_at"),
    ],
)
def test_bad_grant_options_are_422_and_write_nothing(service: Service, options: dict[str, object], says: str) -> None:
    times = {"PAST": iso_in(service, minutes=-1), "FAR": iso_in(service, days=367), "SOON": iso_in(service, hours=1)}
    body = {name: times.get(value, value) if isinstance(value, str) else value for name, value in options.items()}

    resp = post_grant(service, "fay", "10.00", "g-1", **body)

    assert resp.status_code == 422, resp.text
    assert says in resp.json["description"]
    assert service.commits == []


def test_a_lot_whose_credits_are_all_held_shows_what_holds_reserve(service: Service) -> None:
    grant(service, "hal", "10.00", "g-h")
    hold = service.client.simulate_post(
        "/api/v1/admin/users/hal/wallet/holds",
        json={"credits": "10.00", "reason": "job"},
        headers={**service.auth("billing", service=True), "Idempotency-Key": "h-1"},
    )
    assert hold.status_code == 201, hold.text

    [lot] = wallet(service, "hal")["lots"]

    assert (lot["remaining"], lot["held"]) == ("0.00", "10.00")
