"""Domain errors -> HTTP, in one place. Every error body is JSON {"title", "description"}."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from entrypoints.log_throttle import Throttle
from wallet_core import errors

log = logging.getLogger(__name__)
UNAVAILABLE_LOG_INTERVAL = 60.0  # seconds: a 503 for want of the database or Stripe is logged once per cause

STATUS: dict[type[errors.WalletError], str] = {
    errors.InvalidInput: falcon.HTTP_422,
    errors.NotFound: falcon.HTTP_404,
    errors.IdempotencyConflict: falcon.HTTP_409,
    errors.PaymentsNotConfigured: falcon.HTTP_503,
    errors.WebhooksNotConfigured: falcon.HTTP_503,
    errors.PaymentGatewayFailed: falcon.HTTP_502,
    errors.InvalidWebhook: falcon.HTTP_400,
    errors.StorageUnavailable: falcon.HTTP_503,
    errors.InsufficientCredits: falcon.HTTP_409,
    errors.HoldNotOpen: falcon.HTTP_409,
    errors.NotRevertible: falcon.HTTP_409,
    errors.CardSetupIncomplete: falcon.HTTP_409,
    errors.PaymentGatewayBusy: falcon.HTTP_503,
    errors.TooManyTopUps: falcon.HTTP_429,
    errors.PaymentDeclined: falcon.HTTP_402,
    errors.AutoTopUpInFlight: falcon.HTTP_409,
    errors.DuplicateTopUp: falcon.HTTP_409,  # Stripe answered with a PaymentIntent another top-up has
}


class WalletHTTPError(falcon.HTTPError):
    """An HTTPError whose JSON body carries `details` beside title and description."""

    def __init__(self, status: str, *, title: str, description: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, title=title, description=description, headers=headers)
        self.details = details or {}

    def to_dict(self, obj_type: Any = dict) -> Any:
        body = super().to_dict(obj_type)
        body.update(self.details)
        return body


def http_error(exc: errors.WalletError, **details: Any) -> WalletHTTPError:
    """The HTTP answer for a domain error; `details` are extra JSON fields (e.g. what is spendable)."""
    status = _status_for(exc)
    headers = {"Retry-After": "5"} if status == falcon.HTTP_503 else None
    if isinstance(exc, errors.TooManyTopUps):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
        details = {"retry_after_seconds": exc.retry_after_seconds, **details}
    return WalletHTTPError(status, title=exc.title, description=exc.description, details=details, headers=headers)


def _status_for(exc: errors.WalletError) -> str:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return falcon.HTTP_500


class WalletErrorHandler:
    """Domain error -> HTTP error. A 503 for want of the database or of Stripe logs its cause once per
    UNAVAILABLE_LOG_INTERVAL (each app has its own throttle), not once per request."""

    def __init__(self) -> None:
        self.unavailable_log = Throttle(log, interval=UNAVAILABLE_LOG_INTERVAL)

    def __call__(self, req: falcon.Request, resp: falcon.Response, exc: errors.WalletError, params: Any) -> None:
        error = http_error(exc)
        if error.status_code == 500:
            log.error("unmapped wallet error on %s %s: %s", req.method, req.path, type(exc).__name__)
        elif isinstance(exc, (errors.StorageUnavailable, errors.PaymentGatewayBusy)):
            # The description names no host, URL or password; the cause's class says which driver error.
            cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else type(exc).__name__
            self.unavailable_log.warning(exc.description, "answering 503: %s [%s]", exc.description, cause)
        raise error


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unexpected error on %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(
        title="Internal error", description="the request failed; nothing was changed"
    )


# Falcon's own errors (no route, method not allowed) come with a title only.
_DEFAULT_DESCRIPTIONS = {
    404: "no route or resource matches this path (see /docs)",
    405: "this route does not take this method (see /docs)",
}


def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Every error body is JSON {"title", "description", ...details}, whatever the client's Accept
    header says (Falcon's default would answer XML, or nothing, to some)."""
    body = exc.to_dict()
    if not body.get("description"):
        body["description"] = _DEFAULT_DESCRIPTIONS.get(exc.status_code, str(body.get("title", "error")))
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(body).encode()


def install(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    # Falcon picks the most specific handler, so the order of these does not matter.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(errors.WalletError, WalletErrorHandler())
    app.set_error_serializer(serialize_error)
