"""Admin routes: grant credits by hand, revert a transaction, read a user's wallet, saved card and a
payment's event log, forget a user's saved card."""

from __future__ import annotations

from datetime import datetime

from entrypoints.http import schemas
from entrypoints.http.auth import ADMIN
from entrypoints.http.registry import (
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_REQUIRED,
    PAYMENT_INTENT_ID,
    TRANSACTION_ID,
    USER_ID,
    Access,
    Body,
    Call,
    Operation,
    Reply,
    error,
)
from entrypoints.http.views import events_view, grant_view, payment_method_view, revert_view, wallet_view
from entrypoints.timestamps import parse_instant

ADMINS = Access(roles=(ADMIN,))


def _instant(body: dict[str, object], name: str) -> datetime | None:
    value = body.get(name)
    return None if value is None else parse_instant(value, name)


def grant(call: Call) -> None:
    body = call.body
    options = {name: body[name] for name in ("priority", "category") if name in body}
    result = call.wallet.grant(
        call.path["user_id"],
        body["credits"],
        reason=body["reason"],
        granted_by=f"admin:{call.user.user_id}",
        idempotency_key=call.header("Idempotency-Key"),
        expires_at=_instant(body, "expires_at"),
        effective_at=_instant(body, "effective_at"),
        **options,
    )
    call.events.admin_grant(result)
    call.reply(grant_view(result), 200 if result.replayed else 201)


def revert(call: Call) -> None:
    """A new revert answers 201; a retry with the same key, or a dry run, 200."""
    result = call.wallet.revert(
        call.path["transaction_id"],
        idempotency_key=call.header("Idempotency-Key"),
        actor=f"admin:{call.user.user_id}",
        **call.body,
    )
    call.reply(revert_view(result), 200 if result.replayed or result.dry_run else 201)


def user_wallet(call: Call) -> None:
    call.reply(wallet_view(call.wallet.wallet(call.path["user_id"])))


def user_card(call: Call) -> None:
    call.reply(payment_method_view(call.wallet.saved_card(call.path["user_id"])))


def forget_user_card(call: Call) -> None:
    call.wallet.forget_card(call.path["user_id"])
    call.reply(payment_method_view(None))


def payment_events(call: Call) -> None:
    """Every Stripe event received about the payment, oldest first, with what each did. An unknown
    PaymentIntent has an empty log (200)."""
    payment_intent_id = call.path["payment_intent_id"]
    call.reply(events_view(payment_intent_id, call.wallet.events(payment_intent_id)))


OPERATIONS = (
    Operation(
        "POST", "/api/v1/admin/users/{user_id}/wallet/grant", "grantCredits", "Grant promotional credits",
        "admin", grant, ADMINS,
        description="Credits by hand, promotional unless `category` is `paid` (money received outside "
        "Stripe); spendable from `effective_at` (pending until), until `expires_at`, if given; `priority` "
        "orders them among lots of their category. Audited as `admin:<sub>`.",
        path_params=(USER_ID,),
        headers=(IDEMPOTENCY_KEY,),
        body=Body(schemas.GRANT_REQUEST),
        responses={
            201: Reply("Granted.", schemas.GRANT),
            200: Reply("A retry with the same Idempotency-Key: the first grant.", schemas.GRANT),
            409: error("The Idempotency-Key was used before for a different grant."),
        },
    ),
    Operation(
        "POST", "/api/v1/admin/transactions/{transaction_id}/revert", "revertTransaction",
        "Revert a grant, a spend or a capture", "admin", revert, ADMINS,
        description="Corrects a transaction with a new one that names it (nothing is edited or deleted). "
        "Reverting an admin grant takes back what is still unspent of it (what was spent stays spent); "
        "reverting a spend or a hold capture gives its credits back to the lots they came from (to a lot "
        "past its expiry they come back expired). A dry run (`dry_run` true) answers what the revert would "
        "do, with `dry_run` true and a null `transaction_id`: it writes nothing. Audited as `admin:<sub>`.",
        path_params=(TRANSACTION_ID,),
        headers=(IDEMPOTENCY_KEY_REQUIRED,),
        body=Body(schemas.REVERT_REQUEST),
        responses={
            201: Reply("Reverted.", schemas.REVERT),
            200: Reply("A retry with the same Idempotency-Key (the first answer), or a dry run (the same body "
                       "with `dry_run` true and a null `transaction_id`: nothing was written).", schemas.REVERT),
            404: error("No such transaction."),
            409: error("Nothing was written: the transaction was already reverted, is itself a revert, follows "
                       "Stripe (a top-up, refund or dispute movement: refund or settle at Stripe instead), is "
                       "a hold, release or expiry, or has nothing left to take back; or the Idempotency-Key "
                       "was used for a different revert. The description says which."),
        },
    ),
    Operation(
        "GET", "/api/v1/admin/users/{user_id}/wallet", "getUserWallet", "Read a user's wallet", "admin",
        user_wallet, ADMINS,
        description="What the user sees at GET /api/v1/users/me/wallet: `balance`, `held`, `debt`, "
        "`pending`, `by_category`, the `lots` in spending order and recent transactions.",
        path_params=(USER_ID,),
        responses={200: Reply("The wallet.", schemas.WALLET)},
    ),
    Operation(
        "GET", "/api/v1/admin/users/{user_id}/wallet/payment-method", "getUserPaymentMethod",
        "Read a user's saved card", "admin", user_card, ADMINS,
        description="What the user sees at GET /api/v1/users/me/wallet/payment-method: the card saved for "
        "automatic top-up (brand, last four digits, expiry), or null.",
        path_params=(USER_ID,),
        responses={200: Reply("The saved card, or null.", schemas.PAYMENT_METHOD_ANSWER)},
    ),
    Operation(
        "DELETE", "/api/v1/admin/users/{user_id}/wallet/payment-method", "forgetUserPaymentMethod",
        "Forget a user's saved card", "admin", forget_user_card, ADMINS,
        description="Forgets the user's saved card and detaches it at Stripe (best effort), so it can never "
        "be charged again. Answers `{\"payment_method\": null}` whether or not there was one.",
        path_params=(USER_ID,),
        responses={200: Reply("No card is saved now.", schemas.PAYMENT_METHOD_ANSWER)},
    ),
    Operation(
        "GET", "/api/v1/admin/payments/{payment_intent_id}/events", "listPaymentEvents",
        "What happened to a payment", "admin", payment_events, ADMINS,
        description="Every Stripe event received about the PaymentIntent (webhook or reconcile), oldest "
        "first, with what each did; empty for a payment never heard of.",
        path_params=(PAYMENT_INTENT_ID,),
        responses={200: Reply("The payment's event log.", schemas.PAYMENT_EVENTS)},
    ),
)
