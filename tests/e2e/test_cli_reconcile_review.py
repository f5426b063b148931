"""`wallet reconcile` through the CLI: a top-up the ledger granted while Stripe says its PaymentIntent did
not succeed is the state reconciliation exists to catch, so it is listed for review and the run exits 1."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.e2e.conftest import Service
from tests.e2e.test_cli import paid_top_up, run


def test_reconcile_flags_a_grant_stripe_says_was_never_paid(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    pi = paid_top_up(service, "gus")
    top_up_id = service.container.wallet().events(pi)[0].top_up_id
    service.gateway.intents[pi] = replace(service.gateway.intents[pi], status="requires_payment_method")

    code, out, err = run(service, capsys, "reconcile")

    assert code == 1
    assert "already correct  0" in out and "needs review     1" in out
    assert (f"needs review:\n  {pi}: granted here (top-up {top_up_id} is succeeded), "
            "but Stripe says the PaymentIntent is requires_payment_method") in out
    assert err.splitlines()[-1] == "wallet: 1 payment(s) need review by a person"
    assert service.container.wallet().balance("gus") == 1000  # reconcile takes nothing back: a person decides
