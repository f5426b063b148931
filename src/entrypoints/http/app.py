"""Builds the Falcon app from the container: routes, JSON handling, error mapping."""

from __future__ import annotations

import falcon

from entrypoints.container import Container
from entrypoints.http import errors
from entrypoints.http.admin_routes import AdminGrant, AdminPaymentEvents
from entrypoints.http.body import json_handler
from entrypoints.http.spend_routes import AdminHolds, AdminSpend, HoldCapture, HoldRelease
from entrypoints.http.wallet_routes import MyTopUps, MyTransactions, MyWallet
from entrypoints.http.webhook_routes import StripeWebhook


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def create_app(container: Container) -> falcon.App:
    wallet = container.wallet()
    auth = container.authenticator()
    app = falcon.App()
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    errors.install(app)

    app.add_route("/healthz", Health())
    app.add_route("/api/v1/users/me/wallet", MyWallet(wallet, auth))
    app.add_route("/api/v1/users/me/wallet/transactions", MyTransactions(wallet, auth))
    app.add_route("/api/v1/users/me/wallet/top-up", MyTopUps(wallet, auth))
    app.add_route("/api/v1/admin/users/{user_id}/wallet/grant", AdminGrant(wallet, auth))
    app.add_route("/api/v1/admin/users/{user_id}/wallet/spend", AdminSpend(wallet, auth))
    app.add_route("/api/v1/admin/users/{user_id}/wallet/holds", AdminHolds(wallet, auth))
    app.add_route("/api/v1/admin/holds/{hold_id}/capture", HoldCapture(wallet, auth))
    app.add_route("/api/v1/admin/holds/{hold_id}/release", HoldRelease(wallet, auth))
    app.add_route("/api/v1/admin/payments/{payment_intent_id}/events", AdminPaymentEvents(wallet, auth))
    app.add_route("/webhooks/stripe", StripeWebhook(wallet))
    return app
