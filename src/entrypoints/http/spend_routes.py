"""Spending users' credits, for trusted back ends (the `service` role) and admins: spend at once, or
hold first and capture or release later. Every write needs an Idempotency-Key, so a retry after a
timeout never moves credits twice.

A request body's properties are the service method's keyword arguments (the schema admits no other),
so the handlers pass the validated body through: a new field is added to the schema, the service and
the use case, not here."""

from __future__ import annotations

from typing import NoReturn

from entrypoints.http import schemas
from entrypoints.http.auth import ADMIN, SERVICE
from entrypoints.http.body import BATCH_SPENDS_PATH, MAX_BATCH_BODY_BYTES
from entrypoints.http.errors import http_error
from entrypoints.http.registry import (
    HOLD_ID,
    IDEMPOTENCY_KEY_REQUIRED,
    USER_ID,
    Access,
    Body,
    Call,
    Operation,
    Reply,
    error,
)
from entrypoints.http.views import batch_view, hold_view, spend_view
from wallet_core.errors import InsufficientCredits
from wallet_core.use_cases.spend_batch import MAX_BATCH

SPENDERS = (ADMIN, SERVICE)
SPENDER_ACCESS = Access(roles=SPENDERS)


def _actor(call: Call) -> str:
    return call.user.actor(SPENDERS)


def _insufficient(call: Call, exc: InsufficientCredits, user_id: str) -> NoReturn:
    """409 that also says, as fields, how much the wallet can spend now and what it owes (nothing
    was written)."""
    view = call.wallet.wallet(user_id, recent=0)
    raise http_error(exc, spendable=str(view.balance), held=str(view.held), debt=str(view.debt)) from None


def spend(call: Call) -> None:
    user_id, body = call.path["user_id"], call.body
    try:
        result = call.wallet.spend(user_id, idempotency_key=call.header("Idempotency-Key"), actor=_actor(call), **body)
    except InsufficientCredits as exc:
        _insufficient(call, exc, user_id)
    call.reply(spend_view(result), 200 if result.replayed else 201)


def spend_batch(call: Call) -> None:
    call.reply(batch_view(call.wallet.spend_many(call.body["spends"], actor=_actor(call))))


def hold(call: Call) -> None:
    user_id, body = call.path["user_id"], call.body
    try:
        result = call.wallet.hold(user_id, idempotency_key=call.header("Idempotency-Key"), actor=_actor(call), **body)
    except InsufficientCredits as exc:
        _insufficient(call, exc, user_id)
    call.reply(hold_view(result), 200 if result.replayed else 201)


def capture(call: Call) -> None:
    call.reply(hold_view(call.wallet.capture(call.path["hold_id"], actor=_actor(call), **call.body)))


def release(call: Call) -> None:
    call.reply(hold_view(call.wallet.release(call.path["hold_id"], actor=_actor(call), **call.body)))


_INSUFFICIENT = ("the credits do not cover it or the wallet is in debt (the body says what is `spendable`, "
                 "`held` and the `debt`); or the Idempotency-Key was used for a different request")
_NOT_OPEN = "The hold was captured (for another amount), released or has expired."

OPERATIONS = (
    Operation(
        "POST", "/api/v1/admin/users/{user_id}/wallet/spend", "spendCredits", "Spend credits now", "spending",
        spend, SPENDER_ACCESS,
        description="Promotional credits first (soonest-expiring first), then paid; never below zero.",
        path_params=(USER_ID,),
        headers=(IDEMPOTENCY_KEY_REQUIRED,),
        body=Body(schemas.SPEND_REQUEST),
        responses={
            201: Reply("Spent.", schemas.SPEND),
            200: Reply("A retry with the same Idempotency-Key: the first answer.", schemas.SPEND),
            409: error(f"Nothing was spent: {_INSUFFICIENT}."),
        },
    ),
    Operation(
        "POST", BATCH_SPENDS_PATH, "spendBatch", f"Spend in bulk (1 to {MAX_BATCH:,} spends)", "spending",
        spend_batch, SPENDER_ACCESS,
        description="Books every spend in one database transaction (one commit), in request order, each one "
        "succeeding or failing on its own with the single spend's rules: exactly once per `idempotency_key` "
        "(the same keys as the single spend's Idempotency-Key), promotional credits first, never below zero, "
        "nothing from a wallet in debt. A key used before, in this batch or earlier, answers `replayed` for the "
        "same spend and `conflict` for another. Resending a batch after a timeout is safe: every item answers "
        "what it did the first time. Replaying usage logs: see `wallet spend-batch`.",
        body=Body(schemas.SPEND_BATCH_REQUEST, max_bytes=MAX_BATCH_BODY_BYTES),
        responses={
            200: Reply("One result per item, in request order (whatever each item's status).", schemas.SPEND_BATCH),
            422: error(f"The body is not {{\"spends\": [1 to {MAX_BATCH:,} objects]}}; nothing was written."),
            503: error("The database is unavailable, or concurrent requests kept spending this batch's keys while it "
                       "ran; nothing was written. Retry."),
        },
    ),
    Operation(
        "POST", "/api/v1/admin/users/{user_id}/wallet/holds", "placeHold", "Reserve credits", "spending",
        hold, SPENDER_ACCESS,
        description="Reserves credits for a cost not yet known; capture or release the hold later. An "
        "unsettled hold expires (default 15 minutes).",
        path_params=(USER_ID,),
        headers=(IDEMPOTENCY_KEY_REQUIRED,),
        body=Body(schemas.HOLD_REQUEST),
        responses={
            201: Reply("The open hold.", schemas.HOLD),
            200: Reply("A retry with the same Idempotency-Key: the same hold.", schemas.HOLD),
            409: error(f"Nothing was held: {_INSUFFICIENT}."),
        },
    ),
    Operation(
        "POST", "/api/v1/admin/holds/{hold_id}/capture", "captureHold", "Spend a hold", "spending",
        capture, SPENDER_ACCESS,
        description="Spends the hold, all of it when `credits` is left out (or there is no body), and "
        "gives the rest back. Repeating the same capture answers the same.",
        path_params=(HOLD_ID,),
        body=Body(schemas.CAPTURE_REQUEST, required=False),
        responses={
            200: Reply("The captured hold.", schemas.HOLD),
            404: error("No such hold."),
            409: error(_NOT_OPEN),
        },
    ),
    Operation(
        "POST", "/api/v1/admin/holds/{hold_id}/release", "releaseHold", "Give a hold back", "spending",
        release, SPENDER_ACCESS,
        path_params=(HOLD_ID,),
        body=Body(schemas.RELEASE_REQUEST, required=False),
        responses={
            200: Reply("The released hold.", schemas.HOLD),
            404: error("No such hold."),
            409: error(_NOT_OPEN),
        },
    ),
)
