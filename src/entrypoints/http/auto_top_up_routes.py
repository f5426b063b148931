"""Automatic top-up (issue 13): a user's own rule under /users/me, any wallet's for admins. The charges
themselves are the worker's (wallet_core.use_cases.auto_top_up); these routes only set, read and remove
the rule."""

from __future__ import annotations

from entrypoints.http import schemas
from entrypoints.http.admin_routes import ADMINS
from entrypoints.http.registry import ANY_USER, USER_ID, Access, Body, Call, Operation, Param, Reply, error
from entrypoints.http.views import auto_top_up_view

MY_PATH = "/api/v1/users/me/wallet/auto-top-up"
ADMIN_PATH = "/api/v1/admin/users/{user_id}/wallet/auto-top-up"


def _user(call: Call) -> str:
    return call.path["user_id"] if "user_id" in call.path else call.user.user_id


def put_rule(call: Call) -> None:
    body = call.body
    view = call.wallet.put_auto_top_up(
        _user(call),
        body.get("threshold_credits"),
        target_credits=body.get("target_credits"),
        amount_usd=body.get("amount_usd"),
        monthly_limit_usd=body.get("monthly_limit_usd"),
    )
    call.reply(auto_top_up_view(view))


def get_rule(call: Call) -> None:
    call.reply(auto_top_up_view(call.wallet.auto_top_up(_user(call))))


def delete_rule(call: Call) -> None:
    call.wallet.remove_auto_top_up(_user(call))
    call.resp.status = 204


_PUT_DESCRIPTION = (
    "When a change (a spend, a capture, a hold, an expiry, a refund, a dispute) leaves the spendable balance "
    "below `threshold_credits` and no automatic top-up of the wallet is in flight, the wallet records one in "
    "that change's transaction and the worker charges the saved card off-session (the request that caused it "
    "does not wait for Stripe); the credits come with Stripe's payment_intent.succeeded, once. Give "
    "`target_credits` (top up to it) or `amount_usd` (a fixed amount). Putting the rule again re-enables one "
    "disabled after three consecutive failures. Putting it charges nothing by itself. 422 when the threshold "
    "is not below the target or an amount is outside TOP_UP_MIN_USD..TOP_UP_MAX_USD."
)
_NO_RULE = error("The wallet has no automatic top-up rule.")


def _operations(
    path: str, access: Access, whose: str, suffix: str, path_params: tuple[Param, ...]
) -> tuple[Operation, ...]:
    tag = "wallet" if access is ANY_USER else "admin"
    return (
        Operation(
            "PUT", path, f"put{suffix}AutoTopUp", f"Set {whose} automatic top-up", tag, put_rule, access,
            description=_PUT_DESCRIPTION,
            path_params=path_params,
            body=Body(schemas.AUTO_TOP_UP_REQUEST),
            responses={200: Reply("The rule.", schemas.AUTO_TOP_UP)},
        ),
        Operation(
            "GET", path, f"get{suffix}AutoTopUp", f"Read {whose} automatic top-up", tag, get_rule, access,
            description="The rule, its status (active, paused_no_payment_method, disabled_after_failures), what "
            "automatic top-ups charged this month and the last attempt.",
            path_params=path_params,
            responses={200: Reply("The rule.", schemas.AUTO_TOP_UP), 404: _NO_RULE},
        ),
        Operation(
            "DELETE", path, f"delete{suffix}AutoTopUp", f"Remove {whose} automatic top-up", tag, delete_rule,
            access,
            description="Nothing more is charged: a charge not yet sent is canceled; one Stripe has already is "
            "granted as usual when paid.",
            path_params=path_params,
            responses={204: Reply("Removed."), 404: _NO_RULE},
        ),
    )


OPERATIONS = (
    *_operations(MY_PATH, ANY_USER, "my", "My", ()),
    *_operations(ADMIN_PATH, ADMINS, "a wallet's", "", (USER_ID,)),
)
