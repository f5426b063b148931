"""Reading: GET /api/v1/users/me/wallet (spendable and held) and .../wallet/transactions (paged),
and admin grants of promotional credits that expire."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from falcon.testing import Result

from tests.e2e.conftest import Service
from wallet_core.use_cases import verify_ledger

WALLET = "/api/v1/users/me/wallet"
HISTORY = "/api/v1/users/me/wallet/transactions"
ROW_FIELDS = {"id", "kind", "credits", "held_change", "balance_after", "reference_id", "created_at", "reason",
              "hold_id", "metadata", "reverts", "reverted_by", "sources"}


def grant_url(user: str) -> str:
    return f"/api/v1/admin/users/{user}/wallet/grant"


def grant(svc: Service, user: str, credits: str, reason: str = "r", **extra: object) -> Result:
    return svc.client.simulate_post(grant_url(user), json={"credits": credits, "reason": reason, **extra},
                                    headers=svc.auth("root", admin=True))


def history(svc: Service, user: str, **params: object) -> Result:
    return svc.client.simulate_get(HISTORY, params=params, headers=svc.auth(user))


# -- history -------------------------------------------------------------------------------------


def test_pages_with_the_cursor_cover_every_row_once_newest_first(service: Service) -> None:
    for i in range(7):
        assert grant(service, "alice", f"{i + 1}.00", reason=f"grant {i}").status_code == 201
    service.commits.clear()

    seen, cursor, pages = [], None, 0
    while True:
        resp = history(service, "alice", limit=3, **({"cursor": cursor} if cursor else {}))
        assert resp.status_code == 200, resp.text
        assert set(resp.json) == {"transactions", "next_cursor"}
        seen.extend(resp.json["transactions"])
        pages += 1
        cursor = resp.json["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert [t["reason"] for t in seen] == [f"grant {i}" for i in reversed(range(7))]
    assert len({t["id"] for t in seen}) == 7
    assert all(set(t) == ROW_FIELDS for t in seen)
    newest = seen[0]
    assert (newest["kind"], newest["credits"], newest["held_change"], newest["balance_after"]) == (
        "grant", "7.00", "0.00", "28.00")
    assert newest["hold_id"] is None and newest["metadata"] == {}
    assert datetime.fromisoformat(newest["created_at"]).tzinfo is not None
    assert service.commits == []


def test_a_page_that_ends_exactly_at_the_last_row_has_no_next_cursor(service: Service) -> None:
    for i in range(4):
        grant(service, "bob", "1.00", reason=f"g{i}")
    first = history(service, "bob", limit=2).json
    second = history(service, "bob", limit=2, cursor=first["next_cursor"]).json
    assert len(second["transactions"]) == 2
    assert second["next_cursor"] is None


def test_the_default_page_is_20_and_an_empty_history_is_empty(service: Service) -> None:
    assert history(service, "nobody").json == {"transactions": [], "next_cursor": None}
    for i in range(21):
        grant(service, "carol", "1.00", reason=f"g{i}")
    page = history(service, "carol").json
    assert len(page["transactions"]) == 20 and page["next_cursor"]


def test_history_shows_only_the_callers_own_rows(service: Service) -> None:
    grant(service, "dave", "1.00")
    grant(service, "erin", "2.00")
    rows = history(service, "dave").json["transactions"]
    assert [t["credits"] for t in rows] == ["1.00"]


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"limit": "-1"}, {"limit": "1.5"}, {"limit": ""},
     {"cursor": "not-a-cursor"}, {"cursor": "x" * 300}, {"cursor": "bm90IGEgY3Vyc29y"},
     {"user_id": "someone-else"}, {"limit": "5", "offset": "10"}, {"limit": "9" * 5000}],
)
def test_bad_query_parameters_are_422(service: Service, params: dict[str, str]) -> None:
    grant(service, "frank", "1.00")
    resp = history(service, "frank", **params)
    assert resp.status_code == 422, resp.text
    assert resp.json["description"]


def test_a_repeated_query_parameter_is_422(service: Service) -> None:
    resp = service.client.simulate_get(HISTORY, query_string="limit=1&limit=2", headers=service.auth("gina"))
    assert resp.status_code == 422


def test_history_needs_a_token(service: Service) -> None:
    assert service.client.simulate_get(HISTORY).status_code == 401


def test_the_wallet_shows_spendable_and_held(service: Service) -> None:
    grant(service, "hank", "10.00")
    resp = service.client.simulate_post("/api/v1/admin/users/hank/wallet/holds",
                                        json={"credits": "4.00", "reason": "job"},
                                        headers={**service.auth("svc", service=True), "Idempotency-Key": "h"})
    assert resp.status_code == 201
    shown = service.client.simulate_get(WALLET, headers=service.auth("hank")).json
    assert (shown["balance"], shown["held"]) == ("6.00", "4.00")
    assert set(shown["transactions"][0]) == ROW_FIELDS


# -- grants that expire --------------------------------------------------------------------------


def test_a_grant_with_expires_at_counts_until_then_and_the_expiry_run_books_it_out(service: Service) -> None:
    at = (service.clock() + timedelta(days=1)).replace(microsecond=0)
    resp = grant(service, "ivan", "5.00", expires_at=at.isoformat().replace("+00:00", "Z"))
    assert resp.status_code == 201, resp.text
    assert datetime.fromisoformat(resp.json["expires_at"]) == at
    grant(service, "ivan", "1.00")
    assert service.client.simulate_get(WALLET, headers=service.auth("ivan")).json["balance"] == "6.00"

    service.clock.advance(days=1, seconds=1)
    shown = service.client.simulate_get(WALLET, headers=service.auth("ivan")).json
    assert shown["balance"] == "1.00"  # expired credits stop counting before any run books them out

    service.commits.clear()
    report = service.container.wallet().expire()
    assert (report.wallets_expired, str(report.credits_expired), report.holds_released) == (1, "5.00", 0)
    assert service.commits == ["commit"]
    rows = service.client.simulate_get(WALLET, headers=service.auth("ivan")).json["transactions"]
    assert (rows[0]["kind"], rows[0]["credits"], rows[0]["balance_after"]) == ("expiry", "-5.00", "1.00")
    assert service.container.wallet().expire().wallets_expired == 0  # nothing left to do
    assert verify_ledger(uow=service.container.unit_of_work()) == []


def test_expires_at_keeps_the_offset_it_was_given_as_the_same_instant(service: Service) -> None:
    at = (service.clock() + timedelta(days=30)).replace(microsecond=0)
    plus_two = at.astimezone(timezone(timedelta(hours=2)))
    assert plus_two.isoformat().endswith("+02:00")
    resp = grant(service, "jack", "1.00", expires_at=plus_two.isoformat())
    assert resp.status_code == 201
    assert datetime.fromisoformat(resp.json["expires_at"]) == at


@pytest.mark.parametrize(
    ("expires_at", "says"),
    [
        ("2030-01-01T00:00:00", "timezone"),
        ("2030-01-01", "timezone"),
        ("next tuesday", "ISO 8601"),
        (1893456000, "ISO 8601"),
        ("2001-01-01T00:00:00Z", "future"),
        ("9999-12-31T23:59:59-23:59", "range"),
    ],
)
def test_bad_expires_at_is_422_and_grants_nothing(service: Service, expires_at: str | int, says: str) -> None:
    resp = grant(service, "kate", "1.00", expires_at=expires_at)
    assert resp.status_code == 422, resp.text
    assert says in resp.json["description"]
    assert service.commits == []


def test_a_grant_without_expires_at_never_expires(service: Service) -> None:
    resp = grant(service, "liam", "1.00")
    assert resp.json["expires_at"] is None
    service.clock.advance(days=3650)
    assert service.client.simulate_get(WALLET, headers=service.auth("liam")).json["balance"] == "1.00"


def test_a_replayed_grant_with_expires_at_answers_the_same_body(service: Service) -> None:
    at = (service.clock() + timedelta(days=1)).isoformat()
    headers = {**service.auth("root", admin=True), "Idempotency-Key": "promo-1"}
    body = {"credits": "1.00", "reason": "promo", "expires_at": at}
    first = service.client.simulate_post(grant_url("mia"), json=body, headers=headers)
    again = service.client.simulate_post(grant_url("mia"), json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == first.json


# -- cursors the service did not give out ---------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_CURSORS = {
    # Valid ISO 8601 with an offset, but out of range once made UTC (an OverflowError in the bind).
    "after 9999 in UTC": _b64(b"9999-12-31T23:59:59-14:00|x"),
    "before year 1 in UTC": _b64(b"0001-01-01T00:00:00+14:00|x"),
    "a NUL in the id": _b64(b"2025-01-01T00:00:00+00:00|ctx_a\x00b"),  # PostgreSQL text refuses NUL
    "a control character in the id": _b64(b"2025-01-01T00:00:00+00:00|ctx\n1"),
    "a non-UTC offset": _b64(b"2025-01-01T02:00:00+02:00|ctx_1"),
    "padding": _b64(b"2025-01-01T00:00:00+00:00|ctx_1") + "==",
    "characters base64 skips": "!" + _b64(b"2025-01-01T00:00:00+00:00|ctx_1"),
    "a time not in isoformat's own spelling": _b64(b"2025-01-01 00:00:00.000000+00:00|ctx_1"),
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db_service(request: pytest.FixtureRequest, make_service: Callable[..., Service]) -> Service:
    if request.param == "sqlite":
        on_sqlite: Service = request.getfixturevalue("service")
        return on_sqlite
    from adapters.fake_gateway import FakePaymentGateway
    from tests.e2e.conftest import WEBHOOK_SECRET

    url = request.getfixturevalue("postgres_url")
    return make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), database_url=url)


@pytest.mark.parametrize("cursor", list(FORGED_CURSORS.values()), ids=list(FORGED_CURSORS))
def test_a_cursor_the_service_did_not_give_out_is_422_on_every_database(any_db_service: Service, cursor: str) -> None:
    svc = any_db_service
    user = f"forger-{uuid.uuid4().hex[:8]}"
    grant(svc, user, "1.00")
    svc.commits.clear()
    resp = history(svc, user, cursor=cursor)
    assert resp.status_code == 422, resp.text
    assert resp.json["description"] == "cursor is not a cursor this service gave out"
    assert svc.commits == []


def test_cursors_given_out_page_on_every_database(any_db_service: Service) -> None:
    svc = any_db_service
    user = f"pager-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        grant(svc, user, f"{i + 1}.00")
    first = history(svc, user, limit=2).json
    rest = history(svc, user, limit=2, cursor=first["next_cursor"])
    assert rest.status_code == 200, rest.text
    assert [t["credits"] for t in first["transactions"] + rest.json["transactions"]] == ["3.00", "2.00", "1.00"]


@pytest.mark.parametrize(("at", "rows"), [("0001-01-01T00:00:00+00:00", 0), ("9999-12-31T23:59:59.999999+00:00", 1)])
def test_a_well_formed_cursor_at_either_end_of_time_pages_harmlessly(
    any_db_service: Service, at: str, rows: int
) -> None:
    """What passes the checks binds on every database: a UTC time in datetime's range, an id of the id
    charset. It only says where the caller's own history resumes, so it shows nothing more."""
    svc = any_db_service
    user = f"edge-{uuid.uuid4().hex[:8]}"
    grant(svc, user, "1.00")
    resp = history(svc, user, cursor=_b64(f"{at}|ctx_0".encode()))
    assert resp.status_code == 200, resp.text
    assert len(resp.json["transactions"]) == rows
