"""POST /api/v1/admin/transactions/{transaction_id}/revert through the REST app, the SQL container and
real migrations: a grant's unspent credits taken back, a spend's and a capture's credits given back to
the lots that paid, once; replays, dry runs, what may not be reverted, and hostile input."""

from __future__ import annotations

import http.client
import json
import threading
from contextlib import contextmanager
from typing import Any

import pytest
from falcon import testing

from entrypoints.http.app import create_app
from tests.e2e.conftest import Service, run_waitress
from wallet_core.ledger import Posting

WALLET = "/api/v1/users/me/wallet"
HISTORY = "/api/v1/users/me/wallet/transactions"
REVERT_FIELDS = {"transaction_id", "reverts", "credits_reverted", "user_id", "balance", "sources"}


def revert_url(transaction_id: str) -> str:
    return f"/api/v1/admin/transactions/{transaction_id}/revert"


def admin(svc: Service, key: str | None = None) -> dict[str, str]:
    return {**svc.auth("root", admin=True), **({"Idempotency-Key": key} if key else {})}


def grant(svc: Service, user: str, credits: str, key: str, **options: object) -> dict[str, Any]:
    resp = svc.client.simulate_post(
        f"/api/v1/admin/users/{user}/wallet/grant",
        json={"credits": credits, "reason": "promo", **options},
        headers=admin(svc, key),
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json
    return body


def spend(svc: Service, user: str, credits: str, key: str) -> dict[str, Any]:
    resp = svc.client.simulate_post(
        f"/api/v1/admin/users/{user}/wallet/spend",
        json={"credits": credits, "reason": "usage"},
        headers={**svc.auth("billing", service=True), "Idempotency-Key": key},
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json
    return body


def revert(
    svc: Service, transaction_id: str, key: str | None, reason: str = "support ticket 7", **extra: object
) -> testing.Result:
    return svc.client.simulate_post(
        revert_url(transaction_id), json={"reason": reason, **extra}, headers=admin(svc, key)
    )


def wallet(svc: Service, user: str) -> dict[str, Any]:
    resp = svc.client.simulate_get(WALLET, headers=svc.auth(user))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json
    return body


def rows(svc: Service, user: str) -> dict[str, dict[str, Any]]:
    """The user's history by transaction id."""
    resp = svc.client.simulate_get(HISTORY, params={"limit": "100"}, headers=svc.auth(user))
    assert resp.status_code == 200, resp.text
    return {row["id"]: row for row in resp.json["transactions"]}


def postings(svc: Service, transaction_id: str) -> list[Posting]:
    with svc.container.unit_of_work()(read_only=True) as tx:
        return tx.ledger.postings_of(transaction_id)


def legs(found: list[Posting]) -> list[tuple[str, str | None, str | None, int]]:
    return sorted((p.account.value, p.user_id, p.lot_id, p.amount.minor) for p in found)


def verified(svc: Service) -> None:
    assert svc.container.wallet().verify() == []


# -- what a revert does ----------------------------------------------------------------------------


def test_reverting_a_spend_across_two_lots_gives_each_lot_back_what_it_paid(service: Service) -> None:
    promo = grant(service, "alice", "100.00", "g-promo", priority=10)
    paid = grant(service, "alice", "50.00", "g-paid", category="paid")
    spent = spend(service, "alice", "130.00", "s-1")
    history = rows(service, "alice")
    [promo_lot], [paid_lot] = (history[g["transaction_id"]]["sources"] for g in (promo, paid))
    assert (promo_lot["credits"], paid_lot["credits"]) == ("100.00", "50.00")  # a grant's source: its new lot
    assert spent["sources"] == [
        {"lot_id": promo_lot["lot_id"], "category": "promotional", "credits": "100.00"},
        {"lot_id": paid_lot["lot_id"], "category": "paid", "credits": "30.00"},
    ]
    service.commits.clear()

    resp = revert(service, spent["transaction_id"], "r-1", reason="charged twice")

    assert resp.status_code == 201, resp.text
    assert resp.json == {
        "transaction_id": resp.json["transaction_id"],
        "reverts": spent["transaction_id"],
        "credits_reverted": "130.00",
        "user_id": "alice",
        "balance": "150.00",
        "sources": spent["sources"],
    }
    assert service.commits == ["commit"]
    shown = wallet(service, "alice")
    assert (shown["balance"], shown["by_category"]) == ("150.00", {"paid": "50.00", "promotional": "100.00"})
    history = rows(service, "alice")
    row = history[resp.json["transaction_id"]]
    assert (row["kind"], row["credits"], row["balance_after"], row["reason"]) == (
        "revert",
        "130.00",
        "150.00",
        "charged twice",
    )
    assert (row["reverts"], row["reverted_by"], row["sources"]) == (spent["transaction_id"], None, spent["sources"])
    assert history[spent["transaction_id"]]["reverted_by"] == resp.json["transaction_id"]
    assert history[spent["transaction_id"]]["reverts"] is None
    mirrored = [Posting(p.account, -p.amount, p.user_id, p.lot_id) for p in postings(service, spent["transaction_id"])]
    assert legs(postings(service, resp.json["transaction_id"])) == legs(mirrored)
    verified(service)


def test_reverting_a_grant_takes_back_only_what_is_still_unspent(service: Service) -> None:
    granted = grant(service, "bob", "100.00", "g-1")
    grant(service, "bob", "20.00", "g-2", category="paid")
    spend(service, "bob", "30.00", "s-1")  # from the promotional lot

    resp = revert(service, granted["transaction_id"], "r-1", reason="granted to the wrong user")

    assert resp.status_code == 201, resp.text
    [lot_id] = [s["lot_id"] for s in resp.json["sources"]]
    assert resp.json == {
        "transaction_id": resp.json["transaction_id"],
        "reverts": granted["transaction_id"],
        "credits_reverted": "70.00",
        "user_id": "bob",
        "balance": "20.00",
        "sources": [{"lot_id": lot_id, "category": "promotional", "credits": "70.00"}],
    }
    shown = wallet(service, "bob")
    assert (shown["balance"], shown["by_category"]) == ("20.00", {"paid": "20.00", "promotional": "0.00"})
    assert [lot["category"] for lot in shown["lots"]] == ["paid"]  # the reverted grant's lot is gone
    row = rows(service, "bob")[resp.json["transaction_id"]]
    assert (row["kind"], row["credits"], row["reverts"]) == ("revert", "-70.00", granted["transaction_id"])
    verified(service)


def test_reverting_a_capture_gives_back_the_captured_credits_only(service: Service) -> None:
    grant(service, "cara", "100.00", "g-1")
    spender = {**service.auth("billing", service=True), "Idempotency-Key": "h-1"}
    held = service.client.simulate_post(
        "/api/v1/admin/users/cara/wallet/holds", json={"credits": "40.00", "reason": "render"}, headers=spender
    )
    assert held.status_code == 201, held.text
    captured = service.client.simulate_post(
        f"/api/v1/admin/holds/{held.json['hold_id']}/capture",
        json={"credits": "25.00"},
        headers=service.auth("billing", service=True),
    )
    assert captured.status_code == 200, captured.text
    [lot_id] = [s["lot_id"] for s in held.json["sources"]]
    assert held.json["sources"] == [{"lot_id": lot_id, "category": "promotional", "credits": "40.00"}]
    assert captured.json["sources"] == [{"lot_id": lot_id, "category": "promotional", "credits": "25.00"}]
    assert captured.json["balance"] == "75.00"

    resp = revert(service, captured.json["transaction_id"], "r-1", reason="render failed")

    assert resp.status_code == 201, resp.text
    assert (resp.json["credits_reverted"], resp.json["balance"]) == ("25.00", "100.00")
    assert resp.json["sources"] == captured.json["sources"]
    history = rows(service, "cara")
    assert history[captured.json["transaction_id"]]["sources"] == captured.json["sources"]
    assert history[captured.json["transaction_id"]]["reverted_by"] == resp.json["transaction_id"]
    assert wallet(service, "cara")["balance"] == "100.00"
    verified(service)


# -- idempotency and dry runs ----------------------------------------------------------------------


def test_a_retry_with_the_same_key_answers_200_with_the_same_body_and_moves_nothing(service: Service) -> None:
    grant(service, "dan", "10.00", "g-1")
    spent = spend(service, "dan", "4.00", "s-1")
    first = revert(service, spent["transaction_id"], "r-1")
    service.commits.clear()

    again = revert(service, spent["transaction_id"], "r-1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == first.json
    assert service.commits == []
    assert wallet(service, "dan")["balance"] == "10.00"
    assert [r["kind"] for r in rows(service, "dan").values()].count("revert") == 1


def test_the_same_key_for_another_revert_is_409(service: Service) -> None:
    grant(service, "dee", "10.00", "g-1")
    one = spend(service, "dee", "1.00", "s-1")
    two = spend(service, "dee", "2.00", "s-2")
    assert revert(service, one["transaction_id"], "r-1").status_code == 201
    service.commits.clear()

    resp = revert(service, two["transaction_id"], "r-1")

    assert resp.status_code == 409, resp.text
    assert "Idempotency" in resp.json["title"]
    assert service.commits == []
    assert rows(service, "dee")[two["transaction_id"]]["reverted_by"] is None


def test_a_dry_run_answers_like_the_revert_and_writes_nothing(service: Service) -> None:
    grant(service, "eve", "60.00", "g-1", priority=5)
    grant(service, "eve", "40.00", "g-2", category="paid")
    spent = spend(service, "eve", "80.00", "s-1")
    before = rows(service, "eve")
    service.commits.clear()

    dry = revert(service, spent["transaction_id"], "r-1", dry_run=True)

    assert dry.status_code == 200, dry.text
    assert service.commits == []
    assert rows(service, "eve") == before
    assert wallet(service, "eve")["balance"] == "20.00"
    assert (dry.json["transaction_id"], dry.json["dry_run"]) == (None, True)

    real = revert(service, spent["transaction_id"], "r-1", dry_run=False)  # the same key: the dry run used none up
    assert real.status_code == 201, real.text
    assert set(real.json) == REVERT_FIELDS
    assert {k: v for k, v in dry.json.items() if k not in ("transaction_id", "dry_run")} == {
        k: v for k, v in real.json.items() if k != "transaction_id"
    }
    assert real.json["balance"] == wallet(service, "eve")["balance"] == "100.00"


def test_a_dry_run_of_what_may_not_be_reverted_is_409_too(service: Service) -> None:
    grant(service, "fay", "10.00", "g-1")
    spent = spend(service, "fay", "1.00", "s-1")
    assert revert(service, spent["transaction_id"], "r-1").status_code == 201

    resp = revert(service, spent["transaction_id"], "r-2", dry_run=True)

    assert resp.status_code == 409, resp.text
    assert "already reverted" in resp.json["description"]


# -- what may not be reverted ----------------------------------------------------------------------


def test_a_transaction_reverted_under_another_key_is_409_naming_the_revert(service: Service) -> None:
    granted = grant(service, "gus", "10.00", "g-1")
    first = revert(service, granted["transaction_id"], "r-1")
    service.commits.clear()

    resp = revert(service, granted["transaction_id"], "r-2")

    assert resp.status_code == 409, resp.text
    assert resp.json["title"] == "Not revertible"
    assert f"already reverted by {first.json['transaction_id']}" in resp.json["description"]
    assert service.commits == []


def test_a_revert_is_not_reverted(service: Service) -> None:
    granted = grant(service, "hal", "10.00", "g-1")
    spent = spend(service, "hal", "3.00", "s-1")
    first = revert(service, spent["transaction_id"], "r-1")

    resp = revert(service, first.json["transaction_id"], "r-2")

    assert resp.status_code == 409, resp.text
    assert "itself a revert" in resp.json["description"]
    assert wallet(service, "hal")["balance"] == "10.00"
    assert rows(service, "hal")[granted["transaction_id"]]["reverted_by"] is None


def test_a_stripe_top_up_and_its_refund_are_not_reverted_refund_at_stripe_instead(service: Service) -> None:
    pi = service.container.wallet().top_up("ivy", "10.00").payment_intent_id
    service.container.wallet().handle_stripe_webhook(*service.gateway.succeed(pi))
    refunded = service.gateway.refund(pi, 300)
    assert refunded is not None
    service.container.wallet().handle_stripe_webhook(*refunded)
    history = rows(service, "ivy")
    [top_up] = [row["id"] for row in history.values() if row["kind"] == "top_up"]
    [refund] = [row["id"] for row in history.values() if row["kind"] == "refund"]
    service.commits.clear()

    refused_top_up = revert(service, top_up, "r-1")
    refused_refund = revert(service, refund, "r-2")

    assert refused_top_up.status_code == 409, refused_top_up.text
    assert "Stripe top-up" in refused_top_up.json["description"]
    assert "refund the payment at Stripe" in refused_top_up.json["description"]
    assert refused_refund.status_code == 409, refused_refund.text
    assert "at Stripe instead" in refused_refund.json["description"]
    assert service.commits == []
    assert wallet(service, "ivy")["balance"] == "700.00"


def test_an_unknown_transaction_is_404(service: Service) -> None:
    resp = revert(service, "ctx_0000000000000000000000000000dead", "r-1")
    assert resp.status_code == 404, resp.text
    assert "ctx_0000000000000000000000000000dead" in resp.json["description"]


@pytest.mark.parametrize("who", ["user", "service"])
def test_only_admins_revert(service: Service, who: str) -> None:
    granted = grant(service, "jon", "10.00", "g-1")
    headers = {**service.auth("jon", service=who == "service"), "Idempotency-Key": "r-1"}
    service.commits.clear()

    resp = service.client.simulate_post(revert_url(granted["transaction_id"]), json={"reason": "mine"}, headers=headers)
    anonymous = service.client.simulate_post(
        revert_url(granted["transaction_id"]), json={"reason": "mine"}, headers={"Idempotency-Key": "r-1"}
    )

    assert resp.status_code == 403, resp.text
    assert anonymous.status_code == 401
    assert service.commits == []
    assert wallet(service, "jon")["balance"] == "10.00"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"reason": "x", "dry_run": "yes"}, "dry_run must be true or false"),
        ({"reason": "x", "dry_run": None}, "dry_run must be true or false"),
        ({"reason": "x", "dry_run": 1}, "dry_run must be true or false"),
        ({"reason": "x", "user_id": "someone"}, "unknown field(s): user_id"),
        ({"reason": "x" * 5000}, "reason must be at most 500 characters"),
        ({"reason": ""}, "reason"),
        ({"reason": "   "}, "reason"),
        ({"reason": "a\u202eb"}, "reason must not contain"),
        ({"dry_run": True}, "reason is required"),
        (["reason", "x"], "body must be a JSON object"),
    ],
)
def test_hostile_bodies_are_422_json_and_write_nothing(service: Service, body: object, says: str) -> None:
    granted = grant(service, "kim", "10.00", "g-1")
    service.commits.clear()

    resp = service.client.simulate_post(revert_url(granted["transaction_id"]), json=body, headers=admin(service, "r-1"))

    assert resp.status_code == 422, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    assert set(resp.json) == {"title", "description"} and says in resp.json["description"]
    assert service.commits == []
    assert rows(service, "kim")[granted["transaction_id"]]["reverted_by"] is None


@pytest.mark.parametrize(
    ("path_id", "key", "says"),
    [
        ("ctx%20bad", "r-1", "transaction_id is invalid"),
        ("x" * 200, "r-1", "transaction_id is invalid"),
        ("GRANT", None, "Idempotency-Key is required"),
        ("GRANT", "has space", "Idempotency-Key"),
    ],
)
def test_a_bad_path_id_or_key_is_422(service: Service, path_id: str, key: str | None, says: str) -> None:
    granted = grant(service, "lee", "10.00", "g-1")
    path_id = granted["transaction_id"] if path_id == "GRANT" else path_id
    service.commits.clear()

    resp = revert(service, path_id, key)

    assert resp.status_code == 422, resp.text
    assert says in resp.json["description"]
    assert service.commits == []


def test_a_body_over_64_kib_is_413(service: Service) -> None:
    granted = grant(service, "max", "10.00", "g-1")
    resp = revert(service, granted["transaction_id"], "r-1", reason="x" * 70_000)
    assert resp.status_code == 413, resp.text
    assert wallet(service, "max")["balance"] == "10.00"


def test_the_replay_of_a_revert_into_an_ended_lot_answers_the_first_body(service: Service) -> None:
    granted = grant(service, "ned", "100.00", "g-1")
    spent = spend(service, "ned", "30.00", "s-1")
    assert revert(service, granted["transaction_id"], "r-1").status_code == 201
    first = revert(service, spent["transaction_id"], "r-2")  # the 30 come back to the ended lot: expired
    assert first.status_code == 201 and first.json["balance"] == "0.00"

    again = revert(service, spent["transaction_id"], "r-2")

    assert again.json == first.json


def test_the_openapi_document_describes_the_revert_and_the_new_fields(service: Service) -> None:
    doc = service.client.simulate_get("/openapi.json").json
    op = doc["paths"]["/api/v1/admin/transactions/{transaction_id}/revert"]["post"]
    assert op["x-roles"] == ["admin"]
    key = next(p for p in op["parameters"] if p["name"] == "Idempotency-Key")
    assert key["required"] is True
    assert {"200", "201", "404", "409", "422", "403"} <= set(op["responses"])
    components = doc["components"]["schemas"]
    revert_schema = components["Revert"]
    assert revert_schema["properties"]["transaction_id"]["type"] == ["string", "null"]
    assert "nothing was written" in revert_schema["properties"]["transaction_id"]["description"]
    assert "dry_run" not in revert_schema["required"]
    assert components["RevertRequest"]["required"] == ["reason"]
    assert set(components["RevertRequest"]["properties"]) == {"reason", "dry_run"}
    assert {"reverts", "reverted_by", "sources"} <= set(components["Transaction"]["required"])
    assert {"pending", "by_category", "lots"} <= set(components["Wallet"]["required"])
    assert {"effective_at", "priority", "category"} <= set(components["GrantRequest"]["properties"])
    assert "sources" in components["Spend"]["required"] and "sources" in components["Hold"]["required"]


# -- concurrency -----------------------------------------------------------------------------------


def test_twenty_concurrent_reverts_of_one_spend_revert_it_once(service_on_each_database: Service) -> None:
    """20 admins revert one spend at once, each with a key of their own, over a real waitress socket:
    one revert is booked (201), the 19 others find it reverted (409); the balance moves once."""
    svc = service_on_each_database
    user = "racer"
    grant(svc, user, "50.00", "g-1")
    spent = spend(svc, user, "30.00", "s-1")
    barrier = threading.Barrier(20)
    results: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    with contextmanager(run_waitress)(create_app(svc.container), threads=8) as server:

        def post(i: int) -> None:
            conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
            body = json.dumps({"reason": f"racer {i}"})
            headers = {**admin(svc, f"race-{i}"), "Content-Type": "application/json"}
            barrier.wait()
            try:
                conn.request("POST", revert_url(spent["transaction_id"]), body=body, headers=headers)
                resp = conn.getresponse()
                answer = (resp.status, json.loads(resp.read()))
            finally:
                conn.close()
            with lock:
                results.append(answer)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    codes = sorted(code for code, _ in results)
    assert codes == [201] + [409] * 19, results
    [booked] = [body for code, body in results if code == 201]
    assert booked["balance"] == "50.00"
    assert all(
        f"already reverted by {booked['transaction_id']}" in body["description"]
        for code, body in results
        if code == 409
    )
    assert wallet(svc, user)["balance"] == "50.00"
    assert [row["kind"] for row in rows(svc, user).values()].count("revert") == 1
    verified(svc)
