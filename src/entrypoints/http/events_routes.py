"""Admin routes of outbound events (docs/events.md): register, list, remove and rotate webhook
endpoints, read an endpoint's deliveries, redeliver an event, pull events by cursor, and set a wallet's
low-balance alert."""

from __future__ import annotations

from entrypoints.http import schemas
from entrypoints.http.admin_routes import ADMINS
from entrypoints.http.registry import USER_ID, Body, Call, Operation, Param, Reply, error
from entrypoints.http.views import (
    alert_view,
    deliveries_view,
    endpoint_listed_view,
    endpoint_view,
    outbound_events_view,
)
from wallet_core.use_cases.list_events import MAX_PAGE

ENDPOINT_ID = Param(
    "endpoint_id", schemas.ENDPOINT_ID, "The webhook endpoint, as registering it answered.", required=True
)
EVENT_ID = Param(
    "event_id", schemas.EVENT_ID, "The event, as the events list or a delivery gave its id.", required=True
)
ENDPOINTS_PATH = "/api/v1/admin/webhook-endpoints"
ALERTS_PATH = "/api/v1/admin/users/{user_id}/wallet/alerts"


def add_endpoint(call: Call) -> None:
    body = call.body
    endpoint = call.wallet.add_webhook_endpoint(body["url"], body["events"], body.get("description"))
    call.reply(endpoint_view(endpoint), 201)


def list_endpoints(call: Call) -> None:
    call.reply({"endpoints": [endpoint_listed_view(e) for e in call.wallet.webhook_endpoints()]})


def remove_endpoint(call: Call) -> None:
    call.wallet.remove_webhook_endpoint(call.path["endpoint_id"])
    call.resp.status = 204


def rotate_secret(call: Call) -> None:
    call.reply(endpoint_view(call.wallet.rotate_webhook_secret(call.path["endpoint_id"])))


def deliveries(call: Call) -> None:
    found = call.wallet.webhook_deliveries(
        call.path["endpoint_id"], status=call.query.get("status"), limit=call.query.get("limit", 100)
    )
    call.reply(deliveries_view(found))


def redeliver(call: Call) -> None:
    event_id = call.path["event_id"]
    call.reply({"event_id": event_id, "deliveries_queued": call.wallet.redeliver_event(event_id)}, 202)


def events(call: Call) -> None:
    query = call.query
    page = call.wallet.events_after(
        query.get("after"), type=query.get("type"), user_id=query.get("user_id"), limit=query.get("limit", 100)
    )
    call.reply(outbound_events_view(page))


def put_alert(call: Call) -> None:
    call.reply(alert_view(call.wallet.set_low_balance_alert(call.path["user_id"], call.body["low_balance_credits"])))


def get_alert(call: Call) -> None:
    call.reply(alert_view(call.wallet.low_balance_alert(call.path["user_id"])))


def delete_alert(call: Call) -> None:
    call.reply(alert_view(call.wallet.clear_low_balance_alert(call.path["user_id"])))


_NO_ENDPOINT = error("No such webhook endpoint.")
_LIMIT = Param(
    "limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100}, f"Rows per page, 1-{MAX_PAGE}."
)

OPERATIONS = (
    Operation(
        "POST",
        ENDPOINTS_PATH,
        "addWebhookEndpoint",
        "Register a webhook endpoint",
        "events",
        add_endpoint,
        ADMINS,
        description="Every event of the subscribed types is POSTed to `url`, signed as the Standard Webhooks "
        "specification says (headers webhook-id, webhook-timestamp, webhook-signature) with the `secret` of this "
        "answer, the only time it is shown. A non-2xx answer, or none within 10 s, is retried with backoff "
        "(WALLET_WEBHOOK_RETRY_SECONDS). The URL must be https:// and resolve to a public address.",
        body=Body(schemas.WEBHOOK_ENDPOINT_REQUEST),
        responses={
            201: Reply("Registered; the signing secret is in this answer only.", schemas.WEBHOOK_ENDPOINT),
            422: error(
                "A field is missing, unknown or invalid: the URL is not https://, does not resolve, or "
                "resolves to a private, loopback or link-local address; an unknown event type; too "
                "many endpoints."
            ),
        },
    ),
    Operation(
        "GET",
        ENDPOINTS_PATH,
        "listWebhookEndpoints",
        "List webhook endpoints",
        "events",
        list_endpoints,
        ADMINS,
        description="Every registered endpoint, without its secret.",
        responses={200: Reply("The endpoints.", schemas.WEBHOOK_ENDPOINTS)},
    ),
    Operation(
        "DELETE",
        ENDPOINTS_PATH + "/{endpoint_id}",
        "removeWebhookEndpoint",
        "Remove a webhook endpoint",
        "events",
        remove_endpoint,
        ADMINS,
        description="Nothing more is sent to it, pending deliveries included.",
        path_params=(ENDPOINT_ID,),
        responses={204: Reply("Removed."), 404: _NO_ENDPOINT},
    ),
    Operation(
        "POST",
        ENDPOINTS_PATH + "/{endpoint_id}/rotate-secret",
        "rotateWebhookSecret",
        "Rotate a webhook endpoint's secret",
        "events",
        rotate_secret,
        ADMINS,
        description="A new signing secret, shown only in this answer. For 24 hours deliveries carry a "
        "signature with the old secret too, so the receiver can switch without losing one.",
        path_params=(ENDPOINT_ID,),
        responses={200: Reply("The endpoint with its new secret.", schemas.WEBHOOK_ENDPOINT), 404: _NO_ENDPOINT},
    ),
    Operation(
        "GET",
        ENDPOINTS_PATH + "/{endpoint_id}/deliveries",
        "listWebhookDeliveries",
        "What was sent to an endpoint",
        "events",
        deliveries,
        ADMINS,
        description="The endpoint's deliveries, newest first: the event, its status (pending, delivered, "
        "failed), attempts, the last answer and when the next attempt is due.",
        path_params=(ENDPOINT_ID,),
        query=(
            Param("status", {"type": "string", "enum": ["pending", "delivered", "failed"]}, "Only these."),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}, "At most, 1-500."),
        ),
        responses={200: Reply("The deliveries.", schemas.DELIVERIES), 404: _NO_ENDPOINT},
    ),
    Operation(
        "POST",
        "/api/v1/admin/events/{event_id}/redeliver",
        "redeliverEvent",
        "Send an event again",
        "events",
        redeliver,
        ADMINS,
        description="Queues the event again for every endpoint subscribed to its type (a new delivery each, "
        "attempted by the worker).",
        path_params=(EVENT_ID,),
        responses={202: Reply("Queued.", schemas.REDELIVERY), 404: error("No such event.")},
    ),
    Operation(
        "GET",
        "/api/v1/admin/events",
        "listEvents",
        "Pull events",
        "events",
        events,
        ADMINS,
        description="Every event, oldest first, after the cursor `after` (from the start without it). Pass "
        "`next_cursor` back as `after` to continue: a consumer can pull instead of receiving webhooks, or catch "
        "up after an outage. An event is listed once its change committed.",
        query=(
            Param("after", {"type": "string", "maxLength": 200}, "`next_cursor` from the previous page."),
            Param("type", schemas.EVENT_TYPE, "Only events of this type."),
            Param("user_id", schemas.USER_ID, "Only this user's events."),
            _LIMIT,
        ),
        responses={200: Reply("A page of events.", schemas.OUTBOUND_EVENTS)},
    ),
    Operation(
        "PUT",
        ALERTS_PATH,
        "setBalanceAlert",
        "Set a wallet's low-balance alert",
        "events",
        put_alert,
        ADMINS,
        description="wallet.balance_low fires once when the spendable balance falls below "
        "`low_balance_credits`, wallet.recovered once when it rises back to it or above (wallet.depleted at "
        "zero needs no threshold). Setting it fires nothing by itself.",
        path_params=(USER_ID,),
        body=Body(schemas.ALERT_REQUEST),
        responses={200: Reply("The wallet's alert.", schemas.ALERT)},
    ),
    Operation(
        "GET",
        ALERTS_PATH,
        "getBalanceAlert",
        "Read a wallet's low-balance alert",
        "events",
        get_alert,
        ADMINS,
        description="The wallet's own threshold, the default (WALLET_LOW_BALANCE_CREDITS), the one that "
        "applies and where the balance stands against it.",
        path_params=(USER_ID,),
        responses={200: Reply("The wallet's alert.", schemas.ALERT)},
    ),
    Operation(
        "DELETE",
        ALERTS_PATH,
        "clearBalanceAlert",
        "Remove a wallet's low-balance alert",
        "events",
        delete_alert,
        ADMINS,
        description="The default (WALLET_LOW_BALANCE_CREDITS, if set) applies again; answers the alert after.",
        path_params=(USER_ID,),
        responses={200: Reply("The wallet's alert after removal.", schemas.ALERT)},
    ),
)
