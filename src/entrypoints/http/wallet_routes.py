"""The user's own wallet: read it, page through its history, top it up, and save a card for automatic
top-up."""

from __future__ import annotations

from entrypoints.http import schemas
from entrypoints.http.registry import (
    ANY_USER,
    IDEMPOTENCY_KEY,
    SETUP_INTENT_ID,
    Body,
    Call,
    Operation,
    Param,
    Reply,
    error,
)
from entrypoints.http.views import card_setup_view, history_view, payment_method_view, top_up_view, wallet_view
from wallet_core.use_cases.read_wallet import MAX_PAGE, RECENT


def my_wallet(call: Call) -> None:
    call.reply(wallet_view(call.wallet.wallet(call.user.user_id)))


def my_transactions(call: Call) -> None:
    page = call.wallet.transactions(call.user.user_id, call.query.get("limit", RECENT), call.query.get("cursor"))
    call.reply(history_view(page))


def top_up(call: Call) -> None:
    result = call.wallet.top_up(call.user.user_id, idempotency_key=call.header("Idempotency-Key"), **call.body)
    call.reply(top_up_view(result), 200 if result.replayed else 201)


def setup_card(call: Call) -> None:
    call.reply(card_setup_view(call.wallet.setup_card(call.user.user_id)), 201)


def complete_card_setup(call: Call) -> None:
    call.reply(payment_method_view(call.wallet.complete_card_setup(call.user.user_id, call.path["setup_intent_id"])))


def my_card(call: Call) -> None:
    call.reply(payment_method_view(call.wallet.saved_card(call.user.user_id)))


def forget_my_card(call: Call) -> None:
    call.wallet.forget_card(call.user.user_id)
    call.reply(payment_method_view(None))


_STRIPE_FAILED = error("Stripe failed or could not be reached; nothing was saved.")
_NOT_CONFIGURED = Reply("Stripe is not configured, or the database is unavailable; nothing was written. Retry "
                        "later.", schemas.ERROR, headers={"Retry-After": "Seconds to wait before retrying."})
CARD_OPERATIONS = (
    Operation(
        "GET", "/api/v1/users/me/wallet/payment-method", "getMyPaymentMethod", "Read my saved card", "wallet",
        my_card, ANY_USER,
        description="The card saved for automatic top-up: brand, last four digits and expiry (the card itself "
        "stays at Stripe), or null.",
        responses={200: Reply("The saved card, or null.", schemas.PAYMENT_METHOD_ANSWER)},
    ),
    Operation(
        "DELETE", "/api/v1/users/me/wallet/payment-method", "forgetMyPaymentMethod", "Forget my saved card",
        "wallet", forget_my_card, ANY_USER,
        description="Forgets the saved card and detaches it at Stripe, so it can never be charged again. "
        "Answers `{\"payment_method\": null}` whether or not there was one.",
        responses={200: Reply("No card is saved now.", schemas.PAYMENT_METHOD_ANSWER)},
    ),
    Operation(
        "POST", "/api/v1/users/me/wallet/payment-method/setup", "setupMyPaymentMethod", "Start saving a card",
        "wallet", setup_card, ANY_USER,
        description="Makes the user's Stripe Customer (once) and a SetupIntent for it (usage off_session). "
        "The browser confirms it with Stripe.js `confirmCardSetup(client_secret, ...)`; the card is saved "
        "when the wallet learns it succeeded: from the `complete` call below or Stripe's "
        "`setup_intent.succeeded` webhook, whichever comes first.",
        responses={
            201: Reply("The SetupIntent, with the client secret for Stripe.js.", schemas.CARD_SETUP),
            502: _STRIPE_FAILED,
            503: _NOT_CONFIGURED,
        },
    ),
    Operation(
        "POST", "/api/v1/users/me/wallet/payment-method/setup/{setup_intent_id}/complete",
        "completeMyPaymentMethodSetup", "Save the card of a confirmed setup", "wallet", complete_card_setup,
        ANY_USER,
        description="Asks Stripe whether the SetupIntent succeeded and, if it did, saves its card (brand, "
        "last four digits and expiry as Stripe has them), replacing the saved one (which is detached at "
        "Stripe). Safe to repeat, and safe after the webhook saved it: the same card is answered.",
        path_params=(SETUP_INTENT_ID,),
        responses={
            200: Reply("The card now saved.", schemas.PAYMENT_METHOD_ANSWER),
            404: error("No such SetupIntent of this user (unknown, or another user's)."),
            409: error("The SetupIntent has not succeeded (confirm the card with Stripe.js first), or its card "
                       "was removed since."),
            502: _STRIPE_FAILED,
            503: _NOT_CONFIGURED,
        },
    ),
)

OPERATIONS = (
    Operation(
        "GET", "/api/v1/users/me/wallet", "getMyWallet", "Read my wallet", "wallet", my_wallet, ANY_USER,
        description="The token's user: spendable `balance`, `held`, `debt`, `pending` (granted with an "
        "`effective_at` still ahead), spendable credits `by_category`, the `lots` in the order they would be "
        "spent, and recent transactions (each with the lots that paid: `sources`).",
        responses={200: Reply("The wallet.", schemas.WALLET)},
    ),
    Operation(
        "GET", "/api/v1/users/me/wallet/transactions", "listMyTransactions", "Page through my transactions",
        "wallet", my_transactions, ANY_USER,
        description="Newest first; pass `next_cursor` back as `cursor` for the next (older) page.",
        query=(
            Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": RECENT},
                  f"Rows per page, 1-{MAX_PAGE}."),
            Param("cursor", {"type": "string", "maxLength": 200}, "`next_cursor` from the previous page."),
        ),
        responses={200: Reply("A page of transactions.", schemas.HISTORY)},
    ),
    Operation(
        "POST", "/api/v1/users/me/wallet/top-up", "requestTopUp", "Buy credits", "wallet", top_up, ANY_USER,
        description="Creates a Stripe PaymentIntent and a pending top-up; the credits are granted once, "
        "when Stripe's webhook says the money arrived.",
        headers=(IDEMPOTENCY_KEY,),
        body=Body(schemas.TOP_UP_REQUEST),
        responses={
            201: Reply("The pending top-up, with the client secret for Stripe.js.", schemas.TOP_UP),
            200: Reply("A retry with the same Idempotency-Key: the same top-up.", schemas.TOP_UP),
            409: error("The Idempotency-Key was used before for a different amount, or Stripe answered with a "
                       "PaymentIntent another top-up already has (nothing was recorded)."),
            429: Reply("Too many top-ups: this user has too many waiting for payment, or started too many in "
                       "the last hour; nothing was written. `retry_after_seconds` and the Retry-After header say "
                       "when to retry.", schemas.ERROR,
                       headers={"Retry-After": "Seconds to wait before retrying."}),
            502: error("Stripe failed or could not be reached; no top-up was recorded."),
        },
    ),
    *CARD_OPERATIONS,
)
