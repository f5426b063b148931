"""POST /webhooks/stripe: verify the signature over the raw body, apply the event, answer 200.

Every verified event is answered 200 with what it did (`outcome`: granted, already_granted, failed,
canceled, refunded, already_refunded, dispute_opened, dispute_won, dispute_lost, card_saved,
card_already_saved, ignored, ignored_late, unknown_top_up, needs_review, duplicate, ...; see
docs/payments.md), so Stripe stops
retrying. A bad signature is 400; a database outage is 503, and Stripe retries later."""

from __future__ import annotations

from entrypoints.http import schemas
from entrypoints.http.registry import STRIPE_SIGNED, UNAVAILABLE, Body, Call, Operation, Param, Reply, error
from entrypoints.http.views import webhook_view

STRIPE_SIGNATURE = Param("Stripe-Signature", schemas.STRIPE_SIGNATURE, "Stripe's signature over the raw body.",
                         required=True)


def stripe_webhook(call: Call) -> None:
    outcome = call.wallet.handle_stripe_webhook(call.raw, call.header("Stripe-Signature"))
    call.events.webhook_applied(outcome)
    call.reply(webhook_view(outcome))


OPERATIONS = (
    Operation(
        "POST", "/webhooks/stripe", "stripeWebhook", "Stripe webhook", "stripe", stripe_webhook, STRIPE_SIGNED,
        description="Verifies `Stripe-Signature` over the raw body, then applies the event once per event "
        "id: `payment_intent.succeeded` grants once, failures and cancelations mark the top-up, refunds "
        "take credits back in proportion, disputes freeze them, `setup_intent.succeeded` saves the user's card "
        "(`card_saved`). A redelivered event answers `duplicate`.",
        headers=(STRIPE_SIGNATURE,),
        body=Body(schemas.STRIPE_EVENT, raw=True),
        responses={
            200: Reply("The event was verified; `outcome` says what it did.", schemas.WEBHOOK_RECEIPT),
            400: error("The signature is missing, wrong or stale, or the event is unreadable."),
            422: error("The event names an invalid value."),
            502: error("Stripe failed while the event was applied; Stripe retries later."),
            503: UNAVAILABLE,
        },
    ),
)
