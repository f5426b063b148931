"""Admin routes: grant credits by hand; read a payment's event log."""

from __future__ import annotations

from entrypoints.http import schemas
from entrypoints.http.auth import ADMIN
from entrypoints.http.registry import (
    IDEMPOTENCY_KEY,
    PAYMENT_INTENT_ID,
    USER_ID,
    Access,
    Body,
    Call,
    Operation,
    Reply,
    error,
)
from entrypoints.http.views import events_view, grant_view
from entrypoints.timestamps import parse_instant

ADMINS = Access(roles=(ADMIN,))


def grant(call: Call) -> None:
    body = call.body
    expires_at = body.get("expires_at")
    result = call.wallet.grant(
        call.path["user_id"],
        body["credits"],
        reason=body["reason"],
        granted_by=f"admin:{call.user.user_id}",
        idempotency_key=call.header("Idempotency-Key"),
        expires_at=None if expires_at is None else parse_instant(expires_at, "expires_at"),
    )
    call.events.admin_grant(result)
    call.reply(grant_view(result), 200 if result.replayed else 201)


def payment_events(call: Call) -> None:
    """Every Stripe event received about the payment, oldest first, with what each did. An unknown
    PaymentIntent has an empty log (200)."""
    payment_intent_id = call.path["payment_intent_id"]
    call.reply(events_view(payment_intent_id, call.wallet.events(payment_intent_id)))


OPERATIONS = (
    Operation(
        "POST", "/api/v1/admin/users/{user_id}/wallet/grant", "grantCredits", "Grant promotional credits",
        "admin", grant, ADMINS,
        description="Promotional credits by hand, until `expires_at` if given; audited as `admin:<sub>`.",
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
        "GET", "/api/v1/admin/payments/{payment_intent_id}/events", "listPaymentEvents",
        "What happened to a payment", "admin", payment_events, ADMINS,
        description="Every Stripe event received about the PaymentIntent (webhook or reconcile), oldest "
        "first, with what each did; empty for a payment never heard of.",
        path_params=(PAYMENT_INTENT_ID,),
        responses={200: Reply("The payment's event log.", schemas.PAYMENT_EVENTS)},
    ),
)
