"""Admin routes: grant credits by hand; read a payment's event log."""

from __future__ import annotations

import falcon

from entrypoints.http.auth import JwtAuthenticator
from entrypoints.http.body import read_object, read_query, require
from entrypoints.http.views import events_view, grant_view
from entrypoints.library import Wallet
from entrypoints.timestamps import parse_instant


class AdminGrant:
    def __init__(self, wallet: Wallet, auth: JwtAuthenticator) -> None:
        self._wallet = wallet
        self._auth = auth

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        admin = self._auth.require_admin(req)
        body = read_object(req, {"credits", "reason", "expires_at"})
        require(body, "credits", "reason")
        expires_at = body.get("expires_at")
        result = self._wallet.grant(
            user_id,
            body["credits"],
            reason=body["reason"],
            granted_by=f"admin:{admin.user_id}",
            idempotency_key=req.get_header("Idempotency-Key"),
            expires_at=None if expires_at is None else parse_instant(expires_at, "expires_at"),
        )
        resp.status = falcon.HTTP_200 if result.replayed else falcon.HTTP_201
        resp.media = grant_view(result)


class AdminPaymentEvents:
    """GET /api/v1/admin/payments/{payment_intent_id}/events: every Stripe event received about the
    payment, oldest first, with what each did. An unknown PaymentIntent has an empty log (200)."""

    def __init__(self, wallet: Wallet, auth: JwtAuthenticator) -> None:
        self._wallet = wallet
        self._auth = auth

    def on_get(self, req: falcon.Request, resp: falcon.Response, payment_intent_id: str) -> None:
        self._auth.require_admin(req)
        read_query(req, set())
        resp.media = events_view(payment_intent_id, self._wallet.events(payment_intent_id))
