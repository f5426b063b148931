"""POST /api/v1/admin/users/{user_id}/wallet/grant: admins only, audited, idempotent."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest

from tests.e2e.conftest import JWT_SECRET, Service


def _grant_url(user: str) -> str:
    return f"/api/v1/admin/users/{user}/wallet/grant"


def test_admin_grant_updates_the_balance_and_records_who_and_why(service: Service) -> None:
    headers = service.auth("root", admin=True)
    first = service.client.simulate_post(_grant_url("alice"), json={"credits": "50.00", "reason": "welcome"},
                                         headers=headers)
    second = service.client.simulate_post(_grant_url("alice"), json={"credits": 2.5, "reason": "sorry"},
                                          headers=headers)

    assert first.status_code == 201
    assert first.json["credits_granted"] == "50.00" and first.json["balance"] == "50.00"
    assert second.json["balance"] == "52.50"
    wallet = service.client.simulate_get("/api/v1/users/me/wallet", headers=service.auth("alice")).json
    assert wallet["balance"] == "52.50"
    assert [t["reason"] for t in wallet["transactions"]] == ["sorry", "welcome"]
    with service.container.unit_of_work()() as tx:
        booked = tx.ledger.transactions("alice", 1)[0]
    assert booked.actor == "admin:root"


def test_non_admin_gets_403_and_nothing_moves(service: Service) -> None:
    resp = service.client.simulate_post(_grant_url("bob"), json={"credits": "50.00", "reason": "me"},
                                        headers=service.auth("bob"))
    assert resp.status_code == 403
    assert service.commits == []


def test_grant_with_the_same_idempotency_key_grants_once(service: Service) -> None:
    headers = {**service.auth("root", admin=True), "Idempotency-Key": "ticket-991"}
    body = {"credits": "10.00", "reason": "refund for outage"}
    first = service.client.simulate_post(_grant_url("carol"), json=body, headers=headers)
    again = service.client.simulate_post(_grant_url("carol"), json=body, headers=headers)
    other = service.client.simulate_post(_grant_url("carol"), json={**body, "credits": "11.00"}, headers=headers)

    assert first.status_code == 201 and again.status_code == 200
    assert again.json == first.json
    assert other.status_code == 409
    assert service.client.simulate_get("/api/v1/users/me/wallet",
                                       headers=service.auth("carol")).json["balance"] == "10.00"


@pytest.mark.parametrize(
    ("user", "body"),
    [
        ("dave", {"credits": "0", "reason": "x"}),
        ("dave", {"credits": "-1.00", "reason": "x"}),
        ("dave", {"credits": "1.001", "reason": "x"}),
        ("dave", {"credits": "1.00"}),
        ("dave", {"credits": "1.00", "reason": ""}),
        ("dave", {"credits": "1.00", "reason": "bad\u0000reason"}),
        ("dave", {"credits": "1.00", "reason": "x", "extra": 1}),
        ("a%20b", {"credits": "1.00", "reason": "x"}),
        ("x" * 200, {"credits": "1.00", "reason": "x"}),
    ],
)
def test_bad_grants_get_422_and_write_nothing(service: Service, user: str, body: dict[str, object]) -> None:
    resp = service.client.simulate_post(_grant_url(user), json=body, headers=service.auth("root", admin=True))
    assert resp.status_code == 422, resp.text
    assert resp.json["description"]
    assert service.commits == []


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode({"sub": "root", "roles": ["admin"], "exp": int(time.time()) - 10}, JWT_SECRET, "HS256"),
        jwt.encode({"sub": "root", "roles": ["admin"], "exp": int(time.time()) + 60}, "another-secret-" * 4,
                   "HS256"),
        jwt.encode({"roles": ["admin"], "exp": int(time.time()) + 60}, JWT_SECRET, "HS256"),
        jwt.encode({"sub": "root", "roles": ["admin"]}, JWT_SECRET, "HS256"),
        jwt.encode({"sub": "root", "roles": ["admin"], "exp": int(time.time()) + 60}, None, "none"),
        "not-a-jwt",
    ],
    ids=["expired", "wrong-secret", "no-sub", "no-exp", "alg-none", "garbage"],
)
def test_bad_tokens_get_401(service: Service, token: str) -> None:
    resp = service.client.simulate_post(_grant_url("eve"), json={"credits": "1.00", "reason": "x"},
                                        headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert JWT_SECRET not in resp.text


def test_routes_answer_503_when_no_jwt_secret_is_configured(make_service: Callable[..., Service]) -> None:
    svc = make_service(None, jwt_secret=None)
    resp = svc.client.simulate_get("/api/v1/users/me/wallet", headers={"Authorization": "Bearer x"})
    assert resp.status_code == 503
    assert "WALLET_JWT_SECRET" in resp.json["description"]
    assert svc.client.simulate_get("/healthz").json == {"status": "ok"}
