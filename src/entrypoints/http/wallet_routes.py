"""The user's own wallet: read it, page through its history, and top it up."""

from __future__ import annotations

from entrypoints.http import schemas
from entrypoints.http.registry import ANY_USER, IDEMPOTENCY_KEY, Body, Call, Operation, Param, Reply, error
from entrypoints.http.views import history_view, top_up_view, wallet_view
from wallet_core.use_cases.read_wallet import MAX_PAGE, RECENT


def my_wallet(call: Call) -> None:
    call.reply(wallet_view(call.wallet.wallet(call.user.user_id)))


def my_transactions(call: Call) -> None:
    page = call.wallet.transactions(call.user.user_id, call.query.get("limit", RECENT), call.query.get("cursor"))
    call.reply(history_view(page))


def top_up(call: Call) -> None:
    result = call.wallet.top_up(call.user.user_id, idempotency_key=call.header("Idempotency-Key"), **call.body)
    call.reply(top_up_view(result), 200 if result.replayed else 201)


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
            409: error("The Idempotency-Key was used before for a different amount."),
            429: Reply("Too many top-ups: this user has too many waiting for payment, or started too many in "
                       "the last hour; nothing was written. `retry_after_seconds` and the Retry-After header say "
                       "when to retry.", schemas.ERROR,
                       headers={"Retry-After": "Seconds to wait before retrying."}),
            502: error("Stripe failed or could not be reached; no top-up was recorded."),
        },
    ),
)
