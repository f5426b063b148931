"""A signed Stripe event whose ids or type no column can hold unchanged (too long, a NUL) is answered
200 `ignored` on SQLite and PostgreSQL alike, so Stripe stops retrying it; it is logged under its event id
when that id can be stored, moves no credits, and leaves one WARNING."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
import stripe
from falcon.testing import Result

from tests.e2e.conftest import WEBHOOK_SECRET, Service
from wallet_core.ports import StoredEvent

HOOK = "/webhooks/stripe"
TOO_LONG = "x" * 300  # longer than every column it could go to
BAD = {"too long": TOO_LONG, "NUL": "ab\x00cd"}


@pytest.fixture
def svc(service_on_each_database: Service) -> Service:
    return service_on_each_database


def _paid_top_up(svc: Service, user: str) -> str:
    resp = svc.client.simulate_post("/api/v1/users/me/wallet/top-up", json={"amount_usd": "10.00"},
                                    headers=svc.auth(user))
    assert resp.status_code == 201, resp.text
    pi: str = resp.json["payment_intent_id"]
    assert _send(svc, json.loads(svc.gateway.succeed(pi)[0])).json["outcome"] == "granted"
    return pi


def _send(svc: Service, event: dict[str, Any]) -> Result:
    payload = json.dumps(event).encode()  # ASCII: \u0000 and lone surrogates go as JSON escapes
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), WEBHOOK_SECRET)
    return svc.client.simulate_post(HOOK, body=payload,
                                    headers={"Stripe-Signature": header, "Content-Type": "application/json"})


def _event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or f"evt_unstorable_{time.monotonic_ns()}", "object": "event", "type": event_type,
            "data": {"object": obj}}


def _stored(svc: Service, event_id: str) -> StoredEvent | None:
    with svc.container.unit_of_work()(read_only=True) as tx:
        return tx.events.find(event_id)


def _balance(svc: Service, user: str) -> str:
    return str(svc.container.wallet().wallet(user).balance)


def _ignored_with_one_warning(
    svc: Service, caplog: pytest.LogCaptureFixture, event: dict[str, Any], field: str
) -> Result:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resp = _send(svc, event)
    assert resp.status_code == 200, resp.text
    assert resp.json["outcome"] == "ignored"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert f"its {field} " in warnings[0].getMessage() and warnings[0].exc_info is None
    assert "\x00" not in warnings[0].getMessage() and TOO_LONG not in warnings[0].getMessage()
    return resp


def test_a_bad_event_id_is_ignored_and_not_logged(svc: Service, caplog: pytest.LogCaptureFixture) -> None:
    for n, event_id in enumerate(BAD.values()):
        pi = _paid_top_up(svc, f"ivy{n}")
        event = json.loads(svc.gateway.dispute(pi, 1000)[0])  # would freeze every credit
        event["id"] = event_id
        resp = _ignored_with_one_warning(svc, caplog, event, "event id")
        assert "\x00" not in resp.json["event_id"] and len(resp.json["event_id"]) <= 80
        assert _send(svc, event).json["outcome"] == "ignored"  # a redelivery: the same, still nothing stored
        assert [e.outcome for e in svc.container.wallet().events(pi)] == ["granted"]
        assert _balance(svc, f"ivy{n}") == "1000.00"


def test_a_bad_type_is_ignored_and_logged_cleaned(svc: Service, caplog: pytest.LogCaptureFixture) -> None:
    for n, bad in enumerate(BAD):
        pi = _paid_top_up(svc, f"tia{n}")
        event = _event("payment_intent.canceled" + BAD[bad], svc.gateway.intent_object(svc.gateway.intents[pi]))
        _ignored_with_one_warning(svc, caplog, event, "type")
        stored = _stored(svc, event["id"])
        assert stored is not None and stored.outcome == "ignored" and stored.payment_intent_id == pi
        assert stored.type.startswith("payment_intent.canceled") and "\x00" not in stored.type
        assert len(stored.type) <= 100
        assert _send(svc, event).json["outcome"] == "duplicate"
        assert _balance(svc, f"tia{n}") == "1000.00"


def test_a_bad_payment_intent_id_is_ignored_and_logged_without_it(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    for n, bad in enumerate(BAD):
        pi = _paid_top_up(svc, f"pia{n}")
        intent = {**svc.gateway.intent_object(svc.gateway.intents[pi]), "id": pi + BAD[bad], "status": "canceled"}
        event = _event("payment_intent.canceled", intent)
        _ignored_with_one_warning(svc, caplog, event, "PaymentIntent id")
        stored = _stored(svc, event["id"])
        assert stored is not None and stored.outcome == "ignored" and stored.payment_intent_id is None
        assert stored.type == "payment_intent.canceled"
        assert _send(svc, event).json["outcome"] == "duplicate"


def test_a_bad_refund_id_is_ignored_and_takes_nothing_back(svc: Service, caplog: pytest.LogCaptureFixture) -> None:
    for n, bad in enumerate(BAD):
        pi = _paid_top_up(svc, f"rea{n}")
        svc.gateway.refund(pi, 300, event=None)
        refund = svc.gateway.refund_object(svc.gateway.refunds[pi][0], svc.gateway.charge_id(pi))
        event = _event("refund.updated", {**refund, "id": "re_" + BAD[bad]})
        _ignored_with_one_warning(svc, caplog, event, "refund id")
        assert [(e.type, e.outcome) for e in svc.container.wallet().events(pi)][-1] == ("refund.updated", "ignored")
        assert _balance(svc, f"rea{n}") == "1000.00"


def test_a_bad_dispute_id_is_ignored_and_freezes_nothing(svc: Service, caplog: pytest.LogCaptureFixture) -> None:
    for n, bad in enumerate(BAD):
        pi = _paid_top_up(svc, f"dia{n}")
        payload, _ = svc.gateway.dispute(pi, 1000)
        event = json.loads(payload)
        event["data"]["object"]["id"] = "du_" + BAD[bad]
        _ignored_with_one_warning(svc, caplog, event, "dispute id")
        assert [(e.type, e.outcome) for e in svc.container.wallet().events(pi)][-1] == (
            "charge.dispute.created", "ignored")
        assert _balance(svc, f"dia{n}") == "1000.00"
        assert svc.container.wallet().verify() == []
