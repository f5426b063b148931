"""POST /webhooks/stripe: verify the signature over the raw body, apply the event, answer 200.

Every verified event is answered 200 with what it did (`outcome`: granted, already_granted, failed,
canceled, refunded, already_refunded, dispute_opened, dispute_won, dispute_lost, ignored,
ignored_late, unknown_top_up, needs_review, duplicate, ...; see docs/payments.md), so Stripe stops
retrying. A bad signature is 400; a database outage is 503, and Stripe retries later."""

from __future__ import annotations

import falcon

from entrypoints.http.body import MAX_BODY_BYTES
from entrypoints.http.views import webhook_view
from entrypoints.library import Wallet


class StripeWebhook:
    def __init__(self, wallet: Wallet) -> None:
        self._wallet = wallet

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
            raise falcon.HTTPContentTooLarge(title="Body too large", description="webhook body over 64 KiB")
        payload = req.bounded_stream.read(MAX_BODY_BYTES + 1)
        if len(payload) > MAX_BODY_BYTES:
            raise falcon.HTTPContentTooLarge(title="Body too large", description="webhook body over 64 KiB")
        outcome = self._wallet.handle_stripe_webhook(payload, req.get_header("Stripe-Signature"))
        resp.media = webhook_view(outcome)
