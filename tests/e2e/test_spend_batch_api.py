"""Spending in bulk through REST: POST /api/v1/admin/spends with {"spends": [...]}, one result per item in
request order, one commit per request; a body that is not that envelope is one 422 and writes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from entrypoints.http.body import MAX_BODY_BYTES
from tests.e2e.conftest import Service
from tests.e2e.test_spend_api import as_service, assert_ledger_sound, fund, spend_url, wallet_of

BATCH_URL = "/api/v1/admin/spends"


def item(user: str, credits: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "credits": credits, "reason": "usage", "idempotency_key": key, **extra}


def post_batch(svc: Service, spends: object, headers: dict[str, str] | None = None) -> Any:
    return svc.client.simulate_post(BATCH_URL, json={"spends": spends}, headers=headers or as_service(svc))


def test_a_batch_answers_each_item_in_request_order_with_one_commit(service_on_each_database: Service) -> None:
    svc = service_on_each_database
    fund(svc, "alice", "10.00")
    fund(svc, "bob", "1.00")
    resp = post_batch(svc, [
        item("alice", "2.50", "u-1", metadata={"job": "7"}),
        item("bob", "1.01", "u-2"),
        item("alice", "2.50", "u-1", metadata={"job": "7"}),
        item("alice", "3", "u-1"),
        item("alice", "0", "u-3"),
        {"user_id": "bob", "credits": "1", "reason": "usage"},
        item("bob", "1.00", "u-4"),
    ])

    assert resp.status_code == 200, resp.text
    results = resp.json["results"]
    assert [r["status"] for r in results] == [
        "spent", "insufficient_credits", "replayed", "conflict", "invalid", "invalid", "spent"
    ]
    assert [r["index"] for r in results] == list(range(7))
    assert [r["idempotency_key"] for r in results] == ["u-1", "u-2", "u-1", "u-1", "u-3", None, "u-4"]
    assert results[0]["balance"] == "7.50" and results[2]["transaction_id"] == results[0]["transaction_id"]
    assert results[1]["balance"] == "1.00" and "credits" in results[1]["error"]["message"]
    assert results[4]["error"]["field"] == "credits"
    assert results[5]["error"] == {"field": "idempotency_key", "message": results[5]["error"]["message"]}
    assert results[6]["balance"] == "0.00"
    assert svc.commits == ["commit"]
    assert wallet_of(svc, "alice")["balance"] == "7.50"
    assert wallet_of(svc, "bob")["balance"] == "0.00"
    newest = wallet_of(svc, "alice")["transactions"][0]
    assert (newest["id"], newest["kind"], newest["metadata"]) == (results[0]["transaction_id"], "spend", {"job": "7"})
    assert_ledger_sound(svc)


def test_resending_a_batch_answers_what_each_item_did_and_writes_nothing(service: Service) -> None:
    fund(service, "alice", "5.00")
    single = service.client.simulate_post(spend_url("alice"), json={"credits": "1.00", "reason": "usage"},
                                          headers=as_service(service, "u-0"))
    assert single.status_code == 201
    service.commits.clear()
    spends = [item("alice", "1.00", "u-0"), item("alice", "1.00", "u-1"), item("alice", "9", "u-2")]
    first = post_batch(service, spends)
    assert [r["status"] for r in first.json["results"]] == ["replayed", "spent", "insufficient_credits"]
    assert first.json["results"][0]["transaction_id"] == single.json["transaction_id"]  # one key space
    assert service.commits == ["commit"]

    service.commits.clear()
    again = post_batch(service, spends)
    assert [r["status"] for r in again.json["results"]] == ["replayed", "replayed", "insufficient_credits"]
    assert [r.get("transaction_id") for r in again.json["results"]][:2] == [
        single.json["transaction_id"], first.json["results"][1]["transaction_id"]
    ]
    assert service.commits == []
    assert wallet_of(service, "alice")["balance"] == "3.00"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "spends"),
        ({"spends": {"user_id": "alice"}}, "spends"),
        ({"spends": []}, "spends"),
        ({"spends": [item("alice", "1", f"k-{n}") for n in range(1001)]}, "spends"),
        ({"spends": [item("alice", "1", "k-1"), "not an object"]}, "spends[1]"),
        ({"spends": [item("alice", "1", "k-1")], "extra": 1}, "body"),
    ],
)
def test_a_body_that_is_not_the_envelope_is_one_422_and_writes_nothing(
    service: Service, body: object, field: str
) -> None:
    fund(service, "alice", "5.00")
    resp = service.client.simulate_post(BATCH_URL, json=body, headers=as_service(service))
    assert resp.status_code == 422, resp.text
    assert set(resp.json) == {"title", "description"}
    assert resp.json["description"].startswith(field)
    assert service.commits == []
    assert wallet_of(service, "alice")["balance"] == "5.00"


def test_only_service_and_admin_tokens_may_spend_in_bulk(service: Service) -> None:
    fund(service, "alice", "5.00")
    spends = [item("alice", "1.00", "u-1")]
    assert post_batch(service, spends, service.auth("alice")).status_code == 403
    assert service.client.simulate_post(BATCH_URL, json={"spends": spends}).status_code == 401
    assert post_batch(service, spends, service.auth("root", admin=True)).status_code == 200
    assert wallet_of(service, "alice")["balance"] == "4.00"


def test_a_full_batch_of_1000_fits_in_a_body_the_single_routes_would_refuse(service: Service) -> None:
    fund(service, "alice", "100.00")
    spends = [item("alice", "0.10", f"usage-{n:06d}", metadata={"log": f"line {n}"}) for n in range(1000)]
    assert len(json.dumps({"spends": spends})) > MAX_BODY_BYTES
    resp = post_batch(service, spends)
    assert resp.status_code == 200, resp.text
    statuses = [r["status"] for r in resp.json["results"]]
    assert statuses == ["spent"] * 1000
    assert wallet_of(service, "alice")["balance"] == "0.00"
    too_big = service.client.simulate_post(
        BATCH_URL, body=b'{"spends": [' + b" " * (1024 * 1024) + b"]}",
        headers={**as_service(service), "Content-Type": "application/json"},
    )
    assert too_big.status_code == 413
    assert too_big.json["description"] == f"the body must be at most {1024 * 1024} bytes"
