"""A top-up's life after the PaymentIntent, through the REST app, the SQL container and real
migrations, with the fake Stripe: failures, cancellations, duplicates, events out of order, refunds
(credits back in proportion, debt), disputes, the event log and reconciliation (docs/payments.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from falcon.testing import Result

from adapters.fake_gateway import FakePaymentGateway
from tests.e2e.conftest import WEBHOOK_SECRET, Service
from wallet_core.topups import TopUpStatus

TOP_UP = "/api/v1/users/me/wallet/top-up"
WALLET = "/api/v1/users/me/wallet"
HOOK = "/webhooks/stripe"


# -- helpers -------------------------------------------------------------------------------------


def top_up(svc: Service, user: str, amount: str = "10.00") -> str:
    """Request a top-up; its PaymentIntent id."""
    resp = svc.client.simulate_post(TOP_UP, json={"amount_usd": amount}, headers=svc.auth(user))
    assert resp.status_code == 201, resp.text
    return str(resp.json["payment_intent_id"])


def deliver(svc: Service, signed: tuple[bytes, str] | None) -> dict[str, Any]:
    assert signed is not None
    payload, header = signed
    resp = svc.client.simulate_post(
        HOOK, body=payload, headers={"Stripe-Signature": header, "Content-Type": "application/json"}
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json
    return body


def outcome(svc: Service, signed: tuple[bytes, str] | None) -> str:
    return str(deliver(svc, signed)["outcome"])


def wallet(svc: Service, user: str) -> dict[str, Any]:
    resp = svc.client.simulate_get(WALLET, headers=svc.auth(user))
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json
    return body


def balance(svc: Service, user: str) -> tuple[str, str]:
    """(balance, debt) as the user sees them."""
    shown = wallet(svc, user)
    return shown["balance"], shown["debt"]


def status(svc: Service, payment_intent_id: str) -> TopUpStatus:
    with svc.container.unit_of_work()() as tx:
        found = tx.top_ups.find_by_payment_intent(payment_intent_id)
    assert found is not None
    return found.status


def spend(svc: Service, user: str, credits: str, key: str) -> Result:
    return svc.client.simulate_post(
        f"/api/v1/admin/users/{user}/wallet/spend",
        json={"credits": credits, "reason": "usage"},
        headers={**svc.auth("billing", service=True), "Idempotency-Key": key},
    )


def verified(svc: Service) -> None:
    assert svc.container.wallet().verify() == []


def logged(svc: Service, payment_intent_id: str) -> list[tuple[str, str, str]]:
    """The event log of a payment as (type, outcome, source), oldest first."""
    return [(e.type, e.outcome, e.source) for e in svc.container.wallet().events(payment_intent_id)]


def kinds(svc: Service, user: str) -> list[str]:
    return [t["kind"] for t in wallet(svc, user)["transactions"]]


# -- failed, canceled ----------------------------------------------------------------------------


def test_a_failed_payment_grants_nothing_and_a_later_success_still_grants(service: Service) -> None:
    pi = top_up(service, "fay")

    assert outcome(service, service.gateway.fail(pi)) == "failed"
    assert status(service, pi) is TopUpStatus.FAILED
    assert balance(service, "fay") == ("0.00", "0.00")
    assert kinds(service, "fay") == []

    # The buyer retries with another card: Stripe now says succeeded.
    assert outcome(service, service.gateway.succeed(pi)) == "granted"
    assert status(service, pi) is TopUpStatus.SUCCEEDED
    assert balance(service, "fay") == ("1000.00", "0.00")
    assert logged(service, pi) == [
        ("payment_intent.payment_failed", "failed", "webhook"),
        ("payment_intent.succeeded", "granted", "webhook"),
    ]
    verified(service)


def test_a_late_payment_failed_after_success_changes_nothing(service: Service) -> None:
    pi = top_up(service, "gus")
    assert outcome(service, service.gateway.succeed(pi)) == "granted"
    before = wallet(service, "gus")

    assert outcome(service, service.gateway.fail(pi)) == "ignored_late"
    assert outcome(service, service.gateway.cancel(pi)) == "ignored_late"

    assert status(service, pi) is TopUpStatus.SUCCEEDED
    assert wallet(service, "gus") == before
    verified(service)


def test_a_canceled_payment_never_grants(service: Service) -> None:
    pi = top_up(service, "hal")
    assert outcome(service, service.gateway.fail(pi)) == "failed"
    assert outcome(service, service.gateway.cancel(pi)) == "canceled"
    assert status(service, pi) is TopUpStatus.CANCELED
    assert outcome(service, service.gateway.fail(pi)) == "ignored_late"  # canceled is final
    assert status(service, pi) is TopUpStatus.CANCELED
    assert balance(service, "hal") == ("0.00", "0.00")
    assert kinds(service, "hal") == []


# -- duplicates and order --------------------------------------------------------------------------


@pytest.mark.parametrize("make_event", ["succeed", "fail", "refund", "dispute"])
def test_a_redelivered_event_id_answers_duplicate_and_writes_nothing(service: Service, make_event: str) -> None:
    pi = top_up(service, "ida")
    if make_event in ("refund", "dispute"):
        assert outcome(service, service.gateway.succeed(pi)) == "granted"
    make: dict[str, Callable[[], tuple[bytes, str] | None]] = {
        "succeed": lambda: service.gateway.succeed(pi),
        "fail": lambda: service.gateway.fail(pi),
        "refund": lambda: service.gateway.refund(pi, 300),
        "dispute": lambda: service.gateway.dispute(pi, 1000),
    }
    signed = make[make_event]()
    first = deliver(service, signed)
    before = (wallet(service, "ida"), status(service, pi), logged(service, pi))
    service.commits.clear()

    again = deliver(service, signed)

    assert again["outcome"] == "duplicate"
    assert again["event_id"] == first["event_id"]
    assert service.commits == []
    assert (wallet(service, "ida"), status(service, pi), logged(service, pi)) == before
    verified(service)


def test_a_refund_before_the_success_is_ignored_then_success_grants_and_reconcile_repairs_the_refund(
    service: Service,
) -> None:
    pi = top_up(service, "jo")
    service.gateway.succeed(pi)  # Stripe has the money; its webhook is slow
    early_refund = service.gateway.refund(pi, 400)

    assert outcome(service, early_refund) == "ignored"  # no money arrived here yet: nothing to take back
    assert balance(service, "jo") == ("0.00", "0.00")
    assert outcome(service, service.gateway.succeed(pi)) == "granted"
    assert balance(service, "jo") == ("1000.00", "0.00")

    report = service.container.wallet().reconcile()

    assert (report.repaired, report.needs_review) == (1, 0)
    assert any("refund" in action and action.endswith(": refunded") for action in report.actions)
    assert balance(service, "jo") == ("600.00", "0.00")
    assert status(service, pi) is TopUpStatus.PARTIALLY_REFUNDED
    assert logged(service, pi) == [
        ("charge.refunded", "ignored", "webhook"),
        ("payment_intent.succeeded", "granted", "webhook"),
        ("refund.updated", "refunded", "reconcile"),
    ]
    assert service.container.wallet().reconcile().repaired == 0
    verified(service)


# -- refunds -----------------------------------------------------------------------------------------


def test_a_partial_refund_takes_back_credits_in_proportion_and_shows_in_the_history(service: Service) -> None:
    pi = top_up(service, "kim")
    outcome(service, service.gateway.succeed(pi))

    assert outcome(service, service.gateway.refund(pi, 300, refund_id="re_kim_1")) == "refunded"

    assert balance(service, "kim") == ("700.00", "0.00")
    assert status(service, pi) is TopUpStatus.PARTIALLY_REFUNDED
    newest = wallet(service, "kim")["transactions"][0]
    assert (newest["kind"], newest["credits"], newest["balance_after"]) == ("refund", "-300.00", "700.00")
    assert newest["reference_id"] == "refund:re_kim_1"
    assert newest["metadata"]["refund_id"] == "re_kim_1"

    # The rest of the money goes back as a refund.created event: all the credits are gone, exactly.
    assert outcome(service, service.gateway.refund(pi, 700, event="refund.created")) == "refunded"
    assert balance(service, "kim") == ("0.00", "0.00")
    assert status(service, pi) is TopUpStatus.REFUNDED
    # charge.refunded lists both refunds again: both were booked, so nothing more moves.
    payload, header = service.gateway.signed_event(
        "charge.refunded", service.gateway.charge_object(service.gateway.intents[pi])
    )
    assert outcome(service, (payload, header)) == "already_refunded"
    assert kinds(service, "kim") == ["refund", "refund", "top_up"]
    verified(service)


def test_three_partial_refunds_add_up_to_all_the_credits_without_rounding_drift(service: Service) -> None:
    pi = top_up(service, "lou", "3.00")  # 300 credits
    outcome(service, service.gateway.succeed(pi))
    for cents in (100, 100, 100):
        assert outcome(service, service.gateway.refund(pi, cents)) == "refunded"
    assert [t["credits"] for t in wallet(service, "lou")["transactions"][:3]] == ["-100.00"] * 3
    assert balance(service, "lou") == ("0.00", "0.00")
    verified(service)


def test_charge_refunded_without_its_refund_list_asks_stripe_for_the_refunds(service: Service) -> None:
    pi = top_up(service, "max")
    outcome(service, service.gateway.succeed(pi))
    assert outcome(service, service.gateway.refund(pi, 250, include_refunds=False)) == "refunded"
    assert balance(service, "max") == ("750.00", "0.00")


def test_a_refund_after_spending_puts_the_wallet_in_debt_until_a_new_top_up_repays_it(service: Service) -> None:
    pi = top_up(service, "ned")
    outcome(service, service.gateway.succeed(pi))
    assert spend(service, "ned", "800.00", "ned-1").status_code == 201
    verified(service)

    assert outcome(service, service.gateway.refund(pi, 1000)) == "refunded"  # all the money went back

    assert balance(service, "ned") == ("-800.00", "800.00")
    verified(service)
    refused = spend(service, "ned", "1.00", "ned-2")
    assert refused.status_code == 409
    assert refused.json["title"] == "Insufficient credits"
    assert "800.00" in refused.json["description"]
    assert refused.json["debt"] == "800.00"
    assert balance(service, "ned") == ("-800.00", "800.00")  # the refused spend wrote nothing

    second = top_up(service, "ned", "5.00")  # 500 credits: not enough to repay it all
    assert outcome(service, service.gateway.succeed(second)) == "granted"
    assert balance(service, "ned") == ("-300.00", "300.00")
    assert spend(service, "ned", "1.00", "ned-3").status_code == 409
    verified(service)

    third = top_up(service, "ned", "10.00")
    assert outcome(service, service.gateway.succeed(third)) == "granted"
    assert balance(service, "ned") == ("700.00", "0.00")
    verified(service)
    assert spend(service, "ned", "1.00", "ned-4").status_code == 201
    assert balance(service, "ned") == ("699.00", "0.00")
    verified(service)


# -- disputes ----------------------------------------------------------------------------------------


def test_a_dispute_freezes_the_credits_and_a_won_dispute_gives_them_back(service: Service) -> None:
    pi = top_up(service, "ola")
    outcome(service, service.gateway.succeed(pi))

    assert outcome(service, service.gateway.dispute(pi, 1000)) == "dispute_opened"
    assert balance(service, "ola") == ("0.00", "0.00")
    assert status(service, pi) is TopUpStatus.DISPUTED
    assert spend(service, "ola", "1.00", "ola-1").status_code == 409
    verified(service)
    # charge.dispute.updated of a dispute already frozen: answered, nothing moves.
    assert outcome(service, service.gateway.dispute(pi, 1000, "under_review")) == "dispute_open"
    assert balance(service, "ola") == ("0.00", "0.00")
    assert status(service, pi) is TopUpStatus.DISPUTED

    assert outcome(service, service.gateway.dispute(pi, 1000, "won")) == "dispute_won"
    assert balance(service, "ola") == ("1000.00", "0.00")
    assert status(service, pi) is TopUpStatus.SUCCEEDED
    assert kinds(service, "ola") == ["dispute_won", "dispute", "top_up"]
    assert spend(service, "ola", "1.00", "ola-2").status_code == 201
    verified(service)


def test_a_dispute_update_freezes_the_credits_when_its_created_event_was_missed(service: Service) -> None:
    pi = top_up(service, "quin")
    outcome(service, service.gateway.succeed(pi))
    service.gateway.dispute(pi, 1000)  # charge.dispute.created, never delivered

    assert outcome(service, service.gateway.dispute(pi, 1000, "under_review")) == "dispute_opened"
    assert balance(service, "quin") == ("0.00", "0.00")
    assert status(service, pi) is TopUpStatus.DISPUTED
    assert outcome(service, service.gateway.dispute(pi, 1000, "under_review")) == "dispute_open"
    assert kinds(service, "quin") == ["dispute", "top_up"]  # frozen once
    verified(service)


def test_a_lost_dispute_books_the_frozen_credits_out(service: Service) -> None:
    pi = top_up(service, "pam")
    outcome(service, service.gateway.succeed(pi))
    outcome(service, service.gateway.dispute(pi, 1000))

    assert outcome(service, service.gateway.dispute(pi, 1000, "lost")) == "dispute_lost"

    assert balance(service, "pam") == ("0.00", "0.00")
    assert status(service, pi) is TopUpStatus.DISPUTE_LOST
    assert kinds(service, "pam") == ["dispute_lost", "dispute", "top_up"]
    verified(service)


def test_a_dispute_after_spending_is_a_debt(service: Service) -> None:
    pi = top_up(service, "quin")
    outcome(service, service.gateway.succeed(pi))
    assert spend(service, "quin", "600.00", "quin-1").status_code == 201

    assert outcome(service, service.gateway.dispute(pi, 1000)) == "dispute_opened"
    assert balance(service, "quin") == ("-600.00", "600.00")
    verified(service)
    assert outcome(service, service.gateway.dispute(pi, 1000, "won")) == "dispute_won"
    assert balance(service, "quin") == ("400.00", "0.00")
    verified(service)


# -- the event log, over REST --------------------------------------------------------------------------


def test_admins_read_the_event_log_of_a_payment(service: Service) -> None:
    pi = top_up(service, "rae")
    outcome(service, service.gateway.fail(pi))
    outcome(service, service.gateway.succeed(pi))
    outcome(service, service.gateway.refund(pi, 500))
    url = f"/api/v1/admin/payments/{pi}/events"

    resp = service.client.simulate_get(url, headers=service.auth("root", admin=True))

    assert resp.status_code == 200
    assert resp.json["payment_intent_id"] == pi
    events = resp.json["events"]
    assert [(e["type"], e["outcome"], e["source"]) for e in events] == [
        ("payment_intent.payment_failed", "failed", "webhook"),
        ("payment_intent.succeeded", "granted", "webhook"),
        ("charge.refunded", "refunded", "webhook"),
    ]
    assert all(e["event_id"].startswith("evt_") and e["payment_intent_id"] == pi for e in events)
    assert len({e["top_up_id"] for e in events}) == 1
    assert [e["received_at"] for e in events] == sorted(e["received_at"] for e in events)

    assert service.client.simulate_get(url, headers=service.auth("rae")).status_code == 403
    assert service.client.simulate_get(url, headers=service.auth("svc", service=True)).status_code == 403
    assert service.client.simulate_get(url).status_code == 401
    unknown = service.client.simulate_get("/api/v1/admin/payments/pi_unknown/events",
                                          headers=service.auth("root", admin=True))
    assert unknown.status_code == 200 and unknown.json == {"payment_intent_id": "pi_unknown", "events": []}
    extra = service.client.simulate_get(url, params={"x": "1"}, headers=service.auth("root", admin=True))
    assert extra.status_code == 422


# -- reconciliation ------------------------------------------------------------------------------------


def test_reconcile_repairs_a_missed_success_and_a_missed_refund_once(service: Service) -> None:
    lost = top_up(service, "sam")
    service.gateway.succeed(lost)  # the webhook never arrives
    refunded = top_up(service, "sam")
    outcome(service, service.gateway.succeed(refunded))
    assert service.gateway.refund(refunded, 500, event=None) is None  # nor does this one
    assert balance(service, "sam") == ("1000.00", "0.00")
    lib = service.container.wallet()

    planned = lib.reconcile(dry_run=True)
    assert (planned.checked, planned.correct, planned.repaired, planned.needs_review) == (2, 0, 2, 0)
    assert all(action.startswith("would ") for action in planned.actions)
    assert balance(service, "sam") == ("1000.00", "0.00")
    assert logged(service, lost) == []

    report = lib.reconcile()
    assert (report.checked, report.correct, report.repaired, report.needs_review) == (2, 0, 2, 0)
    assert balance(service, "sam") == ("1500.00", "0.00")
    assert status(service, lost) is TopUpStatus.SUCCEEDED
    assert status(service, refunded) is TopUpStatus.PARTIALLY_REFUNDED
    assert logged(service, lost) == [("payment_intent.succeeded", "granted", "reconcile")]

    again = lib.reconcile()
    assert (again.checked, again.correct, again.repaired, again.actions) == (2, 2, 0, [])
    assert balance(service, "sam") == ("1500.00", "0.00")
    # The late webhook for the repaired payment then moves nothing.
    assert outcome(service, service.gateway.succeed(lost)) == "already_granted"
    assert balance(service, "sam") == ("1500.00", "0.00")
    verified(service)


# -- the same story on PostgreSQL ------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_whole_lifecycle_on_postgresql(make_service: Callable[..., Service], fresh_postgres_url: str) -> None:
    svc = make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), database_url=fresh_postgres_url)
    pi = top_up(svc, "tess")
    assert outcome(svc, svc.gateway.fail(pi)) == "failed"
    signed = svc.gateway.succeed(pi)
    assert outcome(svc, signed) == "granted"
    assert outcome(svc, signed) == "duplicate"
    assert spend(svc, "tess", "900.00", "tess-1").status_code == 201
    assert outcome(svc, svc.gateway.refund(pi, 300)) == "refunded"
    assert balance(svc, "tess") == ("-200.00", "200.00")
    verified(svc)
    other = top_up(svc, "tess")
    assert outcome(svc, svc.gateway.succeed(other)) == "granted"
    assert outcome(svc, svc.gateway.dispute(other, 1000)) == "dispute_opened"
    assert balance(svc, "tess") == ("-200.00", "200.00")
    assert outcome(svc, svc.gateway.dispute(other, 1000, "lost")) == "dispute_lost"
    svc.gateway.refund(pi, 200, event=None)
    report = svc.container.wallet().reconcile()
    assert (report.repaired, report.needs_review) == (1, 0)
    assert balance(svc, "tess") == ("-400.00", "400.00")
    assert svc.container.wallet().reconcile().repaired == 0
    verified(svc)
    assert [e[1] for e in logged(svc, pi)] == ["failed", "granted", "refunded", "refunded"]
    assert json.loads(json.dumps(wallet(svc, "tess")))["debt"] == "400.00"
