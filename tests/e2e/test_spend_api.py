"""Spending through REST: POST .../wallet/spend, .../wallet/holds, /holds/{id}/capture and /release.

Trusted back ends (the `service` role) and admins spend; users cannot spend their own credits through
these routes. Every write needs an Idempotency-Key, commits once, and a refused one writes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from falcon.testing import Result

from tests.e2e.conftest import Service
from wallet_core.use_cases import verify_ledger


def spend_url(user: str) -> str:
    return f"/api/v1/admin/users/{user}/wallet/spend"


def holds_url(user: str) -> str:
    return f"/api/v1/admin/users/{user}/wallet/holds"


def capture_url(hold_id: str) -> str:
    return f"/api/v1/admin/holds/{hold_id}/capture"


def release_url(hold_id: str) -> str:
    return f"/api/v1/admin/holds/{hold_id}/release"


def fund(svc: Service, user: str, credits: str) -> None:
    resp = svc.client.simulate_post(f"/api/v1/admin/users/{user}/wallet/grant",
                                    json={"credits": credits, "reason": "funding"},
                                    headers=svc.auth("root", admin=True))
    assert resp.status_code == 201, resp.text
    svc.commits.clear()


def as_service(svc: Service, key: str | None = None) -> dict[str, str]:
    headers = svc.auth("billing", service=True)
    return headers if key is None else {**headers, "Idempotency-Key": key}


def wallet_of(svc: Service, user: str) -> dict[str, Any]:
    resp = svc.client.simulate_get("/api/v1/users/me/wallet", headers=svc.auth(user))
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json
    return body


def assert_ledger_sound(svc: Service) -> None:
    assert verify_ledger(uow=svc.container.unit_of_work()) == []


# -- spend ---------------------------------------------------------------------------------------


def test_spend_takes_credits_and_answers_201_with_the_new_balance(service: Service) -> None:
    fund(service, "alice", "5.00")
    resp = service.client.simulate_post(spend_url("alice"), json={"credits": "1.50", "reason": "export",
                                                                  "metadata": {"job": "j-1"}},
                                        headers=as_service(service, "spend-1"))

    assert resp.status_code == 201, resp.text
    assert set(resp.json) == {"user_id", "credits_spent", "balance", "transaction_id", "sources"}
    assert resp.json["user_id"] == "alice"
    assert resp.json["credits_spent"] == "1.50"
    assert resp.json["balance"] == "3.50"
    assert service.commits == ["commit"]
    shown = wallet_of(service, "alice")
    assert (shown["balance"], shown["held"]) == ("3.50", "0.00")
    newest = shown["transactions"][0]
    assert newest["id"] == resp.json["transaction_id"]
    assert (newest["kind"], newest["credits"], newest["held_change"]) == ("spend", "-1.50", "0.00")
    assert newest["balance_after"] == "3.50"
    assert newest["reason"] == "export"
    assert newest["metadata"] == {"job": "j-1"}
    assert newest["hold_id"] is None
    with service.container.unit_of_work()() as tx:
        spent = tx.ledger.find_transaction_by_reference("spend:spend-1")
        assert spent is not None and spent.actor == "service:billing"
    assert_ledger_sound(service)


def test_a_replayed_spend_answers_200_with_the_same_body_and_spends_once(service: Service) -> None:
    fund(service, "bob", "5.00")
    body = {"credits": "2.00", "reason": "render"}
    first = service.client.simulate_post(spend_url("bob"), json=body, headers=as_service(service, "k-1"))
    service.commits.clear()
    again = service.client.simulate_post(spend_url("bob"), json=body, headers=as_service(service, "k-1"))

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == first.json
    assert service.commits == []
    assert wallet_of(service, "bob")["balance"] == "3.00"


def test_spending_more_than_the_balance_is_409_says_what_is_spendable_and_writes_nothing(service: Service) -> None:
    fund(service, "carol", "5.00")
    resp = service.client.simulate_post(spend_url("carol"), json={"credits": "5.01", "reason": "too much"},
                                        headers=as_service(service, "k-big"))

    assert resp.status_code == 409
    assert resp.json["title"] == "Insufficient credits"
    assert "5.00" in resp.json["description"]
    assert resp.json["spendable"] == "5.00"
    assert service.commits == []
    shown = wallet_of(service, "carol")
    assert shown["balance"] == "5.00"
    assert [t["kind"] for t in shown["transactions"]] == ["grant"]


def test_an_unknown_wallet_has_nothing_to_spend(service: Service) -> None:
    resp = service.client.simulate_post(spend_url("nobody"), json={"credits": "0.01", "reason": "x"},
                                        headers=as_service(service, "k-0"))
    assert resp.status_code == 409
    assert resp.json["spendable"] == "0.00"
    assert service.commits == []


def test_reusing_a_spend_key_for_another_request_is_409_and_writes_nothing(service: Service) -> None:
    fund(service, "dave", "5.00")
    headers = as_service(service, "k-dave")
    assert service.client.simulate_post(spend_url("dave"), json={"credits": "1.00", "reason": "a"},
                                        headers=headers).status_code == 201
    service.commits.clear()
    for user, body in [("dave", {"credits": "2.00", "reason": "a"}), ("dave", {"credits": "1.00", "reason": "b"})]:
        resp = service.client.simulate_post(spend_url(user), json=body, headers=headers)
        assert resp.status_code == 409, body
        assert resp.json["title"] == "Idempotency key reused"
    assert service.commits == []
    assert wallet_of(service, "dave")["balance"] == "4.00"


def test_a_plain_user_token_cannot_spend_even_its_own_credits(service: Service) -> None:
    fund(service, "erin", "5.00")
    resp = service.client.simulate_post(spend_url("erin"), json={"credits": "1.00", "reason": "x"},
                                        headers={**service.auth("erin"), "Idempotency-Key": "k"})
    assert resp.status_code == 403
    assert "admin or service" in resp.json["description"]
    assert service.commits == []


def test_spending_needs_a_token(service: Service) -> None:
    resp = service.client.simulate_post(spend_url("erin"), json={"credits": "1.00", "reason": "x"},
                                        headers={"Idempotency-Key": "k"})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_admins_may_spend_too(service: Service) -> None:
    fund(service, "frank", "5.00")
    resp = service.client.simulate_post(spend_url("frank"), json={"credits": "1.00", "reason": "manual"},
                                        headers={**service.auth("root", admin=True), "Idempotency-Key": "k"})
    assert resp.status_code == 201
    with service.container.unit_of_work()() as tx:
        spent = tx.ledger.find_transaction_by_reference("spend:k")
        assert spent is not None and spent.actor == "admin:root"


def test_spend_without_an_idempotency_key_is_422_and_writes_nothing(service: Service) -> None:
    fund(service, "gina", "5.00")
    resp = service.client.simulate_post(spend_url("gina"), json={"credits": "1.00", "reason": "x"},
                                        headers=as_service(service))
    assert resp.status_code == 422
    assert "Idempotency-Key" in resp.json["description"]
    assert service.commits == []
    assert wallet_of(service, "gina")["balance"] == "5.00"


@pytest.mark.parametrize(
    "body",
    [
        {"credits": "0", "reason": "x"},
        {"credits": "-1.00", "reason": "x"},
        {"credits": "1.001", "reason": "x"},
        {"credits": "1.00"},
        {"reason": "x"},
        {"credits": "1.00", "reason": ""},
        {"credits": "1.00", "reason": "x", "extra": 1},
        {"credits": "1.00", "reason": "x", "metadata": ["a"]},
        {"credits": "1.00", "reason": "x", "metadata": {"k": 1}},
        {"credits": "1.00", "reason": "x", "metadata": {f"k{i}": "v" for i in range(21)}},
    ],
)
def test_bad_spends_get_422_and_write_nothing(service: Service, body: dict[str, object]) -> None:
    fund(service, "hank", "5.00")
    resp = service.client.simulate_post(spend_url("hank"), json=body, headers=as_service(service, "k-bad"))
    assert resp.status_code == 422, resp.text
    assert resp.json["description"]
    assert service.commits == []


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"credits": "1.00"', "application/json", 400),
        (b'["1.00"]', "application/json", 422),
        (b"credits=1.00", "application/x-www-form-urlencoded", 415),
        (b'{"credits": "1.00", "reason": "' + b"x" * 70000 + b'"}', "application/json", 413),
        (b"", "application/json", 400),
    ],
)
def test_malformed_spend_bodies_get_a_json_4xx(service: Service, body: bytes, content_type: str, status: int) -> None:
    headers = {**as_service(service, "k-m"), "Content-Type": content_type}
    resp = service.client.simulate_post(spend_url("ivan"), body=body, headers=headers)
    assert resp.status_code == status
    assert "title" in resp.json
    assert service.commits == []


def test_spend_books_out_expired_promotional_credits_before_spending(service: Service) -> None:
    resp = service.client.simulate_post("/api/v1/admin/users/jack/wallet/grant",
                                        json={"credits": "3.00", "reason": "promo",
                                              "expires_at": (service.clock() + timedelta(hours=1)).isoformat()},
                                        headers=service.auth("root", admin=True))
    assert resp.status_code == 201
    fund(service, "jack", "2.00")
    service.clock.advance(hours=2)

    refused = service.client.simulate_post(spend_url("jack"), json={"credits": "2.50", "reason": "x"},
                                           headers=as_service(service, "k-j1"))
    assert refused.status_code == 409 and refused.json["spendable"] == "2.00"
    spent = service.client.simulate_post(spend_url("jack"), json={"credits": "2.00", "reason": "x"},
                                         headers=as_service(service, "k-j2"))
    assert spent.status_code == 201 and spent.json["balance"] == "0.00"
    assert service.commits == ["commit"]
    rows = wallet_of(service, "jack")["transactions"]
    # The expiry and the spend are booked in one unit of work at the same instant.
    assert sorted((t["kind"], t["credits"]) for t in rows[:2]) == [("expiry", "-3.00"), ("spend", "-2.00")]
    assert [t["kind"] for t in rows[2:]] == ["grant", "grant"]
    assert_ledger_sound(service)


def test_a_json_number_is_read_exactly(service: Service) -> None:
    fund(service, "hugo", "1.00")
    resp = service.client.simulate_post(spend_url("hugo"), body=b'{"credits": 0.30, "reason": "x"}',
                                        headers={**as_service(service, "k-n"), "Content-Type": "application/json"})
    assert resp.status_code == 201
    assert (resp.json["credits_spent"], resp.json["balance"]) == ("0.30", "0.70")


# -- holds ---------------------------------------------------------------------------------------


def place(svc: Service, user: str, credits: str, key: str, **extra: object) -> Result:
    resp = svc.client.simulate_post(holds_url(user), json={"credits": credits, "reason": "job", **extra},
                                    headers=as_service(svc, key))
    return resp


def test_hold_then_capture_part_gives_the_rest_back(service: Service) -> None:
    fund(service, "kate", "10.00")
    held = place(service, "kate", "4.00", "h-1", metadata={"job": "j-9"}, expires_in_seconds=600)

    assert held.status_code == 201, held.text
    body = held.json
    assert set(body) == {"hold_id", "user_id", "status", "credits_held", "credits_captured", "balance",
                         "expires_at", "transaction_id", "sources"}
    assert (body["status"], body["credits_held"], body["credits_captured"]) == ("open", "4.00", "0.00")
    [lot] = wallet_of(service, "kate")["lots"]
    assert body["sources"] == [{"lot_id": lot["lot_id"], "category": "promotional", "credits": "4.00"}]
    assert body["balance"] == "6.00" and body["user_id"] == "kate"
    assert service.commits == ["commit"]
    shown = wallet_of(service, "kate")
    assert (shown["balance"], shown["held"]) == ("6.00", "4.00")
    hold_row = shown["transactions"][0]
    assert (hold_row["kind"], hold_row["credits"], hold_row["held_change"]) == ("hold", "-4.00", "4.00")
    assert hold_row["hold_id"] == body["hold_id"] and hold_row["metadata"] == {"job": "j-9"}

    service.commits.clear()
    captured = service.client.simulate_post(capture_url(body["hold_id"]),
                                            json={"credits": "2.50", "reason": "final cost"},
                                            headers=as_service(service))
    assert captured.status_code == 200, captured.text
    assert captured.json["status"] == "captured"
    assert (captured.json["credits_held"], captured.json["credits_captured"]) == ("4.00", "2.50")
    assert captured.json["balance"] == "7.50"
    assert captured.json["sources"] == [{"lot_id": lot["lot_id"], "category": "promotional", "credits": "2.50"}]
    assert captured.json["hold_id"] == body["hold_id"]
    assert service.commits == ["commit"]
    shown = wallet_of(service, "kate")
    assert (shown["balance"], shown["held"]) == ("7.50", "0.00")
    row = shown["transactions"][0]
    assert (row["kind"], row["credits"], row["held_change"], row["reason"]) == ("capture", "1.50", "-4.00",
                                                                                "final cost")
    assert_ledger_sound(service)


def test_hold_then_release_gives_everything_back(service: Service) -> None:
    fund(service, "liam", "10.00")
    hold_id = place(service, "liam", "4.00", "h-2").json["hold_id"]
    service.commits.clear()

    released = service.client.simulate_post(release_url(hold_id), headers=as_service(service))

    assert released.status_code == 200, released.text
    assert released.json["status"] == "released"
    assert released.json["credits_captured"] == "0.00"
    assert released.json["balance"] == "10.00"
    assert service.commits == ["commit"]
    shown = wallet_of(service, "liam")
    assert (shown["balance"], shown["held"]) == ("10.00", "0.00")
    assert [t["kind"] for t in shown["transactions"]] == ["release", "hold", "grant"]
    assert_ledger_sound(service)


def test_capture_with_an_empty_object_or_no_body_captures_everything(service: Service) -> None:
    fund(service, "mia", "10.00")
    first = place(service, "mia", "3.00", "h-a").json["hold_id"]
    second = place(service, "mia", "2.00", "h-b").json["hold_id"]

    everything = service.client.simulate_post(capture_url(first), json={}, headers=as_service(service))
    no_body = service.client.simulate_post(capture_url(second), headers=as_service(service))

    assert everything.status_code == 200 and everything.json["credits_captured"] == "3.00"
    assert no_body.status_code == 200 and no_body.json["credits_captured"] == "2.00"
    assert wallet_of(service, "mia")["balance"] == "5.00"


def test_capturing_twice_replays_the_same_capture_and_a_different_one_is_refused(service: Service) -> None:
    fund(service, "noah", "10.00")
    hold_id = place(service, "noah", "4.00", "h-3").json["hold_id"]
    first = service.client.simulate_post(capture_url(hold_id), json={"credits": "1.00"},
                                         headers=as_service(service))
    service.commits.clear()
    again = service.client.simulate_post(capture_url(hold_id), json={"credits": "1.00"},
                                         headers=as_service(service))
    more = service.client.simulate_post(capture_url(hold_id), json={"credits": "3.00"},
                                        headers=as_service(service))
    released = service.client.simulate_post(release_url(hold_id), headers=as_service(service))

    assert first.status_code == 200
    assert again.status_code == 200 and again.json == first.json
    assert more.status_code == 409
    assert released.status_code == 409 and released.json["title"] == "Hold not open"
    assert service.commits == []
    assert wallet_of(service, "noah")["balance"] == "9.00"
    assert_ledger_sound(service)


def test_a_released_hold_cannot_be_captured(service: Service) -> None:
    fund(service, "olga", "10.00")
    hold_id = place(service, "olga", "4.00", "h-4").json["hold_id"]
    assert service.client.simulate_post(release_url(hold_id), headers=as_service(service)).status_code == 200
    service.commits.clear()

    resp = service.client.simulate_post(capture_url(hold_id), headers=as_service(service))
    assert resp.status_code == 409
    assert resp.json["title"] == "Hold not open"
    assert "released" in resp.json["description"]
    assert service.commits == []
    assert wallet_of(service, "olga")["balance"] == "10.00"


def test_a_hold_past_its_expiry_cannot_be_captured_and_the_expiry_run_releases_it(service: Service) -> None:
    fund(service, "pia", "10.00")
    hold_id = place(service, "pia", "4.00", "h-5", expires_in_seconds=60).json["hold_id"]
    service.clock.advance(seconds=61)
    service.commits.clear()

    resp = service.client.simulate_post(capture_url(hold_id), headers=as_service(service))
    assert resp.status_code == 409 and "expired" in resp.json["description"]
    assert service.commits == []
    report = service.container.wallet().expire()
    assert report.holds_released == 1
    shown = wallet_of(service, "pia")
    assert (shown["balance"], shown["held"]) == ("10.00", "0.00")
    assert_ledger_sound(service)


def test_a_replayed_hold_answers_200_with_the_same_hold(service: Service) -> None:
    fund(service, "quinn", "10.00")
    first = place(service, "quinn", "4.00", "h-6")
    service.commits.clear()
    again = place(service, "quinn", "4.00", "h-6")
    other = place(service, "quinn", "5.00", "h-6")

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json == first.json
    assert service.commits == []
    assert wallet_of(service, "quinn")["held"] == "4.00"


def test_holding_more_than_the_balance_is_409_and_writes_nothing(service: Service) -> None:
    fund(service, "rose", "3.00")
    resp = place(service, "rose", "3.01", "h-7")
    assert resp.status_code == 409
    assert resp.json["spendable"] == "3.00"
    assert service.commits == []
    assert wallet_of(service, "rose")["held"] == "0.00"


@pytest.mark.parametrize(
    "extra",
    [{"expires_in_seconds": 0}, {"expires_in_seconds": "soon"}, {"expires_in_seconds": 1.5},
     {"expires_in_seconds": 8 * 86400}, {"unknown": 1}],
)
def test_bad_holds_get_422_and_write_nothing(service: Service, extra: dict[str, object]) -> None:
    fund(service, "sam", "10.00")
    resp = place(service, "sam", "1.00", "h-8", **extra)
    assert resp.status_code == 422, resp.text
    assert service.commits == []


def test_hold_routes_need_the_admin_or_service_role_and_an_idempotency_key(service: Service) -> None:
    fund(service, "tom", "10.00")
    body = {"credits": "1.00", "reason": "x"}
    as_user = service.client.simulate_post(holds_url("tom"), json=body,
                                           headers={**service.auth("tom"), "Idempotency-Key": "k"})
    anonymous = service.client.simulate_post(holds_url("tom"), json=body, headers={"Idempotency-Key": "k"})
    no_key = service.client.simulate_post(holds_url("tom"), json=body, headers=as_service(service))
    assert (as_user.status_code, anonymous.status_code, no_key.status_code) == (403, 401, 422)

    hold_id = place(service, "tom", "1.00", "h-9").json["hold_id"]
    service.commits.clear()
    for url in (capture_url(hold_id), release_url(hold_id)):
        assert service.client.simulate_post(url, headers=service.auth("tom")).status_code == 403
        assert service.client.simulate_post(url).status_code == 401
    assert service.commits == []


def test_an_unknown_hold_is_404(service: Service) -> None:
    for url in (capture_url("hold_nope"), release_url("hold_nope")):
        resp = service.client.simulate_post(url, headers=as_service(service))
        assert resp.status_code == 404
    assert service.commits == []


@pytest.mark.parametrize(
    ("body", "status"),
    [({"credits": "5.00"}, 422), ({"credits": "-1.00"}, 422), ({"credits": "x"}, 422),
     ({"extra": 1}, 422), (["1.00"], 422)],
)
def test_bad_captures_are_refused_and_the_hold_stays_open(service: Service, body: object, status: int) -> None:
    fund(service, "uma", "10.00")
    hold_id = place(service, "uma", "4.00", "h-10").json["hold_id"]
    service.commits.clear()
    resp = service.client.simulate_post(capture_url(hold_id), json=body, headers=as_service(service))
    assert resp.status_code == status, resp.text
    assert service.commits == []
    assert wallet_of(service, "uma")["held"] == "4.00"


# -- an Idempotency-Key names one request: every field of it -------------------------------------


def test_a_spend_retried_with_other_metadata_is_409_names_the_field_and_writes_nothing(service: Service) -> None:
    fund(service, "ivy", "5.00")
    body = {"credits": "1.00", "reason": "render", "metadata": {"job": "j-1"}}
    first = service.client.simulate_post(spend_url("ivy"), json=body, headers=as_service(service, "k-ivy"))
    service.commits.clear()
    same = service.client.simulate_post(spend_url("ivy"), json=body, headers=as_service(service, "k-ivy"))
    refused = [
        service.client.simulate_post(spend_url("ivy"), json={**body, "metadata": metadata},
                                     headers=as_service(service, "k-ivy"))
        for metadata in ({"job": "j-2"}, {}, None, {"job": "j-1", "extra": "x"})
    ]

    assert (first.status_code, same.status_code) == (201, 200)
    assert same.json == first.json
    for resp in refused:
        assert resp.status_code == 409, resp.text
        assert resp.json["title"] == "Idempotency key reused"
        assert "metadata" in resp.json["description"]
    assert service.commits == []
    assert wallet_of(service, "ivy")["balance"] == "4.00"


def test_a_hold_retried_with_another_expiry_or_metadata_is_409_and_writes_nothing(service: Service) -> None:
    fund(service, "jo", "10.00")
    body = {"credits": "3.00", "reason": "job", "expires_in_seconds": 600, "metadata": {"job": "j-1"}}
    first = service.client.simulate_post(holds_url("jo"), json=body, headers=as_service(service, "h-jo"))
    service.commits.clear()
    same = service.client.simulate_post(holds_url("jo"), json=body, headers=as_service(service, "h-jo"))
    refused = {
        field: service.client.simulate_post(holds_url("jo"), json={**body, field: value},
                                            headers=as_service(service, "h-jo"))
        for field, value in (("expires_in_seconds", 601), ("expires_in_seconds", None), ("metadata", {"job": "j-2"}))
    }

    assert (first.status_code, same.status_code) == (201, 200)
    assert same.json == first.json
    for field, resp in refused.items():
        assert resp.status_code == 409, resp.text
        assert field in resp.json["description"]
    assert service.commits == []
    shown = wallet_of(service, "jo")
    assert (shown["balance"], shown["held"]) == ("7.00", "3.00")


def test_a_hold_retried_with_the_default_expiry_spelled_out_is_the_same_request(service: Service) -> None:
    fund(service, "kai", "10.00")
    body = {"credits": "3.00", "reason": "job"}
    first = service.client.simulate_post(holds_url("kai"), json=body, headers=as_service(service, "h-kai"))
    again = service.client.simulate_post(holds_url("kai"), json={**body, "expires_in_seconds": 900},
                                         headers=as_service(service, "h-kai"))

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == first.json
