"""The user's own wallet: read it, page through its history, and top it up."""

from __future__ import annotations

import falcon

from entrypoints.http.auth import JwtAuthenticator
from entrypoints.http.body import read_object, read_query
from entrypoints.http.views import history_view, top_up_view, wallet_view
from entrypoints.library import Wallet
from wallet_core.errors import InvalidInput


class MyWallet:
    def __init__(self, wallet: Wallet, auth: JwtAuthenticator) -> None:
        self._wallet = wallet
        self._auth = auth

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = self._auth.authenticate(req)
        resp.media = wallet_view(self._wallet.wallet(principal.user_id))


class MyTransactions:
    def __init__(self, wallet: Wallet, auth: JwtAuthenticator) -> None:
        self._wallet = wallet
        self._auth = auth

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = self._auth.authenticate(req)
        query = read_query(req, {"limit", "cursor"})
        page = self._wallet.transactions(principal.user_id, query.get("limit", 20), query.get("cursor"))
        resp.media = history_view(page)


class MyTopUps:
    def __init__(self, wallet: Wallet, auth: JwtAuthenticator) -> None:
        self._wallet = wallet
        self._auth = auth

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = self._auth.authenticate(req)
        body = read_object(req, {"amount_usd"})
        if "amount_usd" not in body:
            raise InvalidInput("amount_usd", "is required, e.g. \"10.00\"")
        result = self._wallet.top_up(
            principal.user_id, body["amount_usd"], idempotency_key=req.get_header("Idempotency-Key")
        )
        resp.status = falcon.HTTP_200 if result.replayed else falcon.HTTP_201
        resp.media = top_up_view(result)
