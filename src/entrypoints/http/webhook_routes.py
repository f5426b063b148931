"""POST /webhooks/stripe: verify the signature over the raw body, apply the event, answer 200."""

from __future__ import annotations

import falcon

from entrypoints.http.body import MAX_BODY_BYTES
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
        resp.media = {
            "received": True,
            "event_id": outcome.event_id,
            "type": outcome.event_type,
            "outcome": outcome.outcome,
        }
