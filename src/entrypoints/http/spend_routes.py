"""Spending users' credits, for trusted back ends (the `service` role) and admins: spend at once, or
hold first and capture or release later. Every write needs an Idempotency-Key, so a retry after a
timeout never moves credits twice."""

from __future__ import annotations

import falcon

from entrypoints.http.auth import ADMIN, SERVICE, JwtAuthenticator
from entrypoints.http.body import read_object, require
from entrypoints.http.errors import http_error
from entrypoints.http.views import hold_view, spend_view
from entrypoints.library import Wallet
from wallet_core.errors import InsufficientCredits

SPENDERS = (ADMIN, SERVICE)


class _Resource:
    def __init__(self, wallet: Wallet, auth: JwtAuthenticator) -> None:
        self._wallet = wallet
        self._auth = auth

    def _actor(self, req: falcon.Request) -> str:
        return self._auth.require_any_role(req, *SPENDERS).actor(SPENDERS)

    def _insufficient(self, exc: InsufficientCredits, user_id: str) -> falcon.HTTPError:
        """409 that also says, as fields, how much the wallet can spend now and what it owes (nothing
        was written)."""
        view = self._wallet.wallet(user_id, recent=0)
        return http_error(exc, spendable=str(view.balance), held=str(view.held), debt=str(view.debt))


class AdminSpend(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        actor = self._actor(req)
        body = read_object(req, {"credits", "reason", "metadata"})
        require(body, "credits", "reason")
        try:
            result = self._wallet.spend(
                user_id,
                body["credits"],
                idempotency_key=req.get_header("Idempotency-Key"),
                reason=body["reason"],
                metadata=body.get("metadata"),
                actor=actor,
            )
        except InsufficientCredits as exc:
            raise self._insufficient(exc, user_id) from None
        resp.status = falcon.HTTP_200 if result.replayed else falcon.HTTP_201
        resp.media = spend_view(result)


class AdminHolds(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        actor = self._actor(req)
        body = read_object(req, {"credits", "reason", "expires_in_seconds", "metadata"})
        require(body, "credits", "reason")
        try:
            result = self._wallet.hold(
                user_id,
                body["credits"],
                idempotency_key=req.get_header("Idempotency-Key"),
                reason=body["reason"],
                expires_in_seconds=body.get("expires_in_seconds"),
                metadata=body.get("metadata"),
                actor=actor,
            )
        except InsufficientCredits as exc:
            raise self._insufficient(exc, user_id) from None
        resp.status = falcon.HTTP_200 if result.replayed else falcon.HTTP_201
        resp.media = hold_view(result)


class HoldCapture(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, hold_id: str) -> None:
        actor = self._actor(req)
        body = read_object(req, {"credits", "reason"}, optional=True)
        result = self._wallet.capture(hold_id, body.get("credits"), actor=actor, reason=body.get("reason"))
        resp.media = hold_view(result)


class HoldRelease(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, hold_id: str) -> None:
        actor = self._actor(req)
        body = read_object(req, {"reason"}, optional=True)
        resp.media = hold_view(self._wallet.release(hold_id, actor=actor, reason=body.get("reason")))
