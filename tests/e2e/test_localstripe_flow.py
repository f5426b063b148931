"""The real thing, end to end: the wallet's REST app served by waitress, wired like production (SQL
storage, the real StripePaymentGateway) and pointed at localstripe, which delivers its signed
webhooks to the app over HTTP, about a second late.

Nothing is faked at the port. The buyer's browser is played by the stripe SDK (attach a card,
confirm), support's dashboard by a POST /v1/refunds. localstripe sends no webhook for refunds, so
reconciliation is what finds them: exactly the missed-webhook case it exists for.

localstripe is shared by the whole session: it holds other tests' PaymentIntents and sends every
event to every registered hook. The app ignores events about payments it does not know, and each
reconcile here only looks at intents created after its test began.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import stripe

from adapters.stripe_gateway import StripePaymentGateway
from entrypoints.container import Container, migrate
from entrypoints.http.app import create_app
from entrypoints.settings import Secret
from tests.e2e.conftest import RunningServer, make_settings, run_waitress
from tests.fixtures.localstripe import LOCALSTRIPE_KEY, open_dispute, register_webhook
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUp, TopUpStatus
from wallet_core.use_cases import reconcile_payments, verify_ledger

pytestmark = pytest.mark.localstripe

HOOK_SECRET = "whsec_e2e_localstripe_flow"
TOP_UP = "/api/v1/users/me/wallet/top-up"
WALLET = "/api/v1/users/me/wallet"
WAIT_SECONDS = 15.0
T = TypeVar("T")


@dataclass
class Live:
    container: Container
    server: RunningServer
    stripe: stripe.StripeClient  # the buyer's browser and support's dashboard, at localstripe

    def request(self, method: str, path: str, body: object = None, user: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if user is not None:
            token = self.container.authenticator().mint(user, roles=[], ttl_seconds=600)
            headers["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def top_up(self, user: str, amount: str) -> dict[str, Any]:
        body: dict[str, Any]
        status, body = self.request("POST", TOP_UP, {"amount_usd": amount}, user=user)
        assert status == 201, body
        return body

    def balance(self, user: str) -> str:
        status, body = self.request("GET", WALLET, user=user)
        assert status == 200, body
        return str(body["balance"])

    def stored_top_up(self, top_up_id: str) -> TopUp:
        with self.container.unit_of_work()() as tx:
            found = tx.top_ups.get(top_up_id)
        assert found is not None
        return found

    def events(self, payment_intent_id: str) -> list[tuple[str, str, str]]:
        with self.container.unit_of_work()() as tx:
            stored = tx.events.for_payment_intent(payment_intent_id)
        return [(e.type, e.source, e.outcome) for e in stored]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def live(
    request: pytest.FixtureRequest, localstripe_url: str, localstripe_client: stripe.StripeClient, sqlite_url: str
) -> Iterator[Live]:
    database_url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    container = Container()
    container.settings.override(
        make_settings(
            database_url,
            stripe_secret_key=Secret(LOCALSTRIPE_KEY),
            stripe_webhook_secrets=(Secret(HOOK_SECRET),),
            stripe_api_base=localstripe_url,
        )
    )
    migrate(container)
    assert isinstance(container.gateway(), StripePaymentGateway)  # the real one, not a fake
    hook = f"e2e-flow-{uuid.uuid4().hex[:8]}"
    try:
        with contextlib.contextmanager(run_waitress)(create_app(container)) as server:
            register_webhook(localstripe_url, hook, f"{server.url}/webhooks/stripe", HOOK_SECRET)
            try:
                yield Live(container, server, localstripe_client)
            finally:
                # localstripe cannot forget a hook: leave this one listening for an event that never comes.
                register_webhook(
                    localstripe_url, hook, f"{server.url}/webhooks/stripe", HOOK_SECRET, events=["wallet.test.muted"]
                )
    finally:
        container.shutdown_resources()


def wait_for(what: str, probe: Callable[[], T], done: Callable[[T], bool]) -> T:
    """Poll `probe` until `done(result)`, for up to WAIT_SECONDS (localstripe's webhooks come ~1 s late)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still {result!r} after {WAIT_SECONDS:.0f}s")
        time.sleep(0.2)


def next_whole_second() -> datetime:
    """A cutoff after every PaymentIntent created so far (Stripe's `created` has whole seconds), and
    at or before any created from now on."""
    start = math.floor(time.time()) + 1
    time.sleep(max(0.0, start - time.time()))
    return datetime.fromtimestamp(start, UTC)


def pay(live: Live, payment_intent_id: str, card: str = "pm_card_visa") -> None:
    live.stripe.v1.payment_intents.update(payment_intent_id, {"payment_method": card})
    live.stripe.v1.payment_intents.confirm(payment_intent_id)


def paid_top_up(live: Live, who: str) -> tuple[str, dict[str, Any]]:
    """A new user's 10.00 top-up, paid at localstripe and granted by its webhook: (user, top-up)."""
    user = f"{who}-{uuid.uuid4().hex[:8]}"
    top_up = live.top_up(user, "10.00")
    pay(live, top_up["payment_intent_id"])
    wait_for("the balance after paying", lambda: live.balance(user), lambda b: b == "1000.00")
    return user, top_up


def test_a_paid_top_up_is_granted_by_localstripes_signed_webhook(live: Live) -> None:
    user = f"buyer-{uuid.uuid4().hex[:8]}"
    top_up = live.top_up(user, "10.00")
    assert (top_up["status"], top_up["credits"], live.balance(user)) == ("pending", "1000.00", "0.00")

    pay(live, top_up["payment_intent_id"])

    wait_for("the balance after paying", lambda: live.balance(user), lambda b: b == "1000.00")
    status, wallet = live.request("GET", WALLET, user=user)
    assert status == 200
    assert [(t["kind"], t["credits"], t["reference_id"]) for t in wallet["transactions"]] == [
        ("top_up", "1000.00", top_up["payment_intent_id"])
    ]
    assert live.stored_top_up(top_up["top_up_id"]).status is TopUpStatus.SUCCEEDED
    assert live.events(top_up["payment_intent_id"]) == [("payment_intent.succeeded", "webhook", "granted")]


def test_a_declined_card_fails_the_top_up_and_grants_nothing(live: Live) -> None:
    user = f"declined-{uuid.uuid4().hex[:8]}"
    top_up = live.top_up(user, "12.00")

    with pytest.raises(stripe.CardError):
        pay(live, top_up["payment_intent_id"], card="pm_card_chargeCustomerFail")

    failed = wait_for(
        "the top-up after a declined card",
        lambda: live.stored_top_up(top_up["top_up_id"]).status,
        lambda s: s is TopUpStatus.FAILED,
    )
    assert failed is TopUpStatus.FAILED
    assert live.events(top_up["payment_intent_id"]) == [("payment_intent.payment_failed", "webhook", "failed")]
    assert live.balance(user) == "0.00"
    status, wallet = live.request("GET", WALLET, user=user)
    assert status == 200 and wallet["transactions"] == []


def test_a_refund_made_at_stripe_is_found_by_reconciliation(live: Live) -> None:
    since = next_whole_second()
    user, top_up = paid_top_up(live, "refunded")
    pi_id = top_up["payment_intent_id"]
    unpaid = live.top_up(user, "5.00")  # never paid: reconciliation must leave it alone

    refund = live.stripe.v1.refunds.create({"payment_intent": pi_id, "amount": 300})  # support refunds 3.00
    time.sleep(1.5)  # localstripe sends no webhook for it; give it the chance to prove that
    assert live.balance(user) == "1000.00"

    report = reconcile_payments(uow=live.container.unit_of_work(), gateway=live.container.gateway(), since=since)

    assert (report.checked, report.repaired, report.correct, report.needs_review) == (2, 1, 1, 0), report
    assert len(report.actions) == 1 and refund.id in report.actions[0] and report.actions[0].endswith(": refunded")
    assert live.balance(user) == "700.00"  # 3.00 of 10.00 back: 300 of the 1000 credits
    stored = live.stored_top_up(top_up["top_up_id"])
    assert stored.status is TopUpStatus.PARTIALLY_REFUNDED
    assert (stored.refunded, stored.credits_refunded) == (Usd(300), Credits(30000))
    assert live.stored_top_up(unpaid["top_up_id"]).status is TopUpStatus.PENDING
    assert live.events(pi_id) == [
        ("payment_intent.succeeded", "webhook", "granted"),
        ("refund.updated", "reconcile", "refunded"),
    ]
    _, wallet = live.request("GET", WALLET, user=user)
    assert [(t["kind"], t["credits"]) for t in wallet["transactions"]] == [("refund", "-300.00"), ("top_up", "1000.00")]

    again = reconcile_payments(uow=live.container.unit_of_work(), gateway=live.container.gateway(), since=since)

    assert (again.checked, again.repaired, again.correct, again.needs_review, again.actions) == (2, 0, 2, 0, [])
    assert live.balance(user) == "700.00"
    assert verify_ledger(uow=live.container.unit_of_work()) == []


def test_a_dispute_whose_webhooks_never_came_is_found_by_reconciliation(live: Live) -> None:
    """The bank disputes a paid top-up and later decides it lost; neither webhook arrives. The first
    reconciliation freezes the credits, the second books them out, a third finds nothing to do."""
    since = next_whole_second()
    user, top_up = paid_top_up(live, "disputed")
    pi_id = top_up["payment_intent_id"]
    dispute = open_dispute(live.container.settings().stripe_api_base or "", pi_id, 1000)

    opened = reconcile_payments(uow=live.container.unit_of_work(), gateway=live.container.gateway(), since=since)

    assert (opened.checked, opened.repaired, opened.needs_review) == (1, 1, 0), opened
    assert opened.actions == [f"freeze credits for dispute {dispute['id']} (10.00 usd) of {pi_id}, needs_response: "
                              "dispute_opened"]
    assert live.balance(user) == "0.00"
    assert live.stored_top_up(top_up["top_up_id"]).status is TopUpStatus.DISPUTED

    open_dispute(live.container.settings().stripe_api_base or "", pi_id, 1000, "lost", str(dispute["id"]))
    lost = reconcile_payments(uow=live.container.unit_of_work(), gateway=live.container.gateway(), since=since)

    assert [a.rsplit(": ", 1)[1] for a in lost.actions] == ["dispute_lost"]
    assert live.stored_top_up(top_up["top_up_id"]).status is TopUpStatus.DISPUTE_LOST
    assert live.events(pi_id) == [
        ("payment_intent.succeeded", "webhook", "granted"),
        ("charge.dispute.created", "reconcile", "dispute_opened"),
        ("charge.dispute.closed", "reconcile", "dispute_lost"),
    ]
    again = reconcile_payments(uow=live.container.unit_of_work(), gateway=live.container.gateway(), since=since)
    assert (again.repaired, again.correct, again.actions) == (0, 1, [])
    assert live.balance(user) == "0.00"
    assert verify_ledger(uow=live.container.unit_of_work()) == []
