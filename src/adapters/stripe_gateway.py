"""The real PaymentGateway: Stripe PaymentIntents through the official `stripe` SDK.

One `stripe.StripeClient` is built on first use and reused (it keeps an HTTP session per thread).
Every Stripe failure becomes a domain error with a short message; the secret key and client
secrets never reach an exception message, a repr or a log line.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import stripe

from adapters.stripe_webhooks import TOLERANCE_SECONDS, intent_from_dict, parse_webhook
from wallet_core.errors import (
    InvalidWebhook,
    NotFound,
    PaymentGatewayFailed,
    PaymentsNotConfigured,
)
from wallet_core.payments import PaymentEvent, PaymentIntent, PaymentIntentRequest

log = logging.getLogger(__name__)

T = TypeVar("T")

_NOT_CONFIGURED = "STRIPE_SECRET_KEY is not set, so no payment can be taken"
_MAX_DETAIL = 160

# Stripe API keys (secret, restricted, publishable) and PaymentIntent/SetupIntent client secrets.
_SECRET_PATTERNS = re.compile(
    r"\b(?:sk|rk|pk)_(?:test|live)_\w+"
    r"|\b(?:pi|seti)_\w+?_secret_\w+"
)
# A client_secret field in JSON, whatever its value looks like.
_CLIENT_SECRET_FIELD = re.compile(r'("client_secret"\s*:\s*")[^"]*(")')


def redact(text: str, *extra: str | None) -> str:
    """`text` with every Stripe key, client secret and each of `extra` replaced by ***."""
    for secret in extra:
        if secret:
            text = text.replace(secret, "***")
    text = _CLIENT_SECRET_FIELD.sub(r"\1***\2", text)
    return _SECRET_PATTERNS.sub("***", text)


def mask_key(key: str | None) -> str:
    """'sk_test_…****' for a Stripe key, '***' for anything else, 'unset' when there is none."""
    if not key:
        return "unset"
    match = re.match(r"(?:sk|rk|pk)_(?:test|live)_", key)
    return f"{match.group(0)}…****" if match else "***"


class _RedactStripeLogs(logging.Filter):
    """The SDK logs response bodies at DEBUG; those contain client secrets. Scrub them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


_log_filter_lock = threading.Lock()


def _install_stripe_log_filter() -> None:
    stripe_logger = logging.getLogger("stripe")
    with _log_filter_lock:
        if not any(isinstance(f, _RedactStripeLogs) for f in stripe_logger.filters):
            stripe_logger.addFilter(_RedactStripeLogs())


class StripePaymentGateway:
    def __init__(
        self,
        secret_key: str | None,
        webhook_secrets: Sequence[str] = (),
        *,
        api_base: str | None = None,
        allow_unsigned_webhooks: bool = False,
        timeout_seconds: float = 10.0,
        max_network_retries: int = 2,
    ) -> None:
        if isinstance(webhook_secrets, str):  # a lone string is a Sequence too: do not split it
            webhook_secrets = (webhook_secrets,)
        self._secret_key = (secret_key or "").strip() or None
        self.webhook_secrets: tuple[str, ...] = tuple(s for s in webhook_secrets if s)
        self.api_base = api_base
        self.allow_unsigned_webhooks = allow_unsigned_webhooks
        self.timeout_seconds = timeout_seconds
        self.max_network_retries = max_network_retries
        self._client: stripe.StripeClient | None = None
        self._client_lock = threading.Lock()
        _install_stripe_log_filter()

    def __repr__(self) -> str:
        return (
            f"StripePaymentGateway(secret_key={mask_key(self._secret_key)!r}, "
            f"webhook_secrets={len(self.webhook_secrets)}, api_base={self.api_base!r}, "
            f"allow_unsigned_webhooks={self.allow_unsigned_webhooks})"
        )

    __str__ = __repr__

    @property
    def configured(self) -> bool:
        return self._secret_key is not None

    # -- the port -------------------------------------------------------------------------------
    def create_payment_intent(self, request: PaymentIntentRequest) -> PaymentIntent:
        client = self._get_client()
        params: dict[str, Any] = {
            "amount": request.amount.cents,
            "currency": request.currency.lower(),
            "metadata": dict(request.metadata),
            # Valid on real Stripe and on localstripe (which refuses automatic_payment_methods).
            "payment_method_types": ["card"],
        }
        options: stripe.RequestOptions = {"idempotency_key": request.idempotency_key}
        obj = self._call(
            "create a PaymentIntent",
            lambda: client.v1.payment_intents.create(params, options),  # type: ignore[arg-type]
        )
        intent = self._translate(obj, "create a PaymentIntent")
        log.info("created Stripe PaymentIntent %s (%s %s)", intent.id, intent.amount, intent.currency)
        return intent

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        client = self._get_client()
        if not isinstance(payment_intent_id, str) or not payment_intent_id.strip():
            # An empty id would hit the *list* endpoint instead of one intent.
            raise NotFound("no PaymentIntent with an empty id")
        obj = self._call(
            "retrieve a PaymentIntent",
            lambda: client.v1.payment_intents.retrieve(payment_intent_id),
            not_found=f"no PaymentIntent {redact(payment_intent_id)[:100]}",
        )
        return self._translate(obj, "retrieve a PaymentIntent")

    def parse_webhook(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        return parse_webhook(
            payload,
            signature_header,
            self.webhook_secrets,
            allow_unsigned=self.allow_unsigned_webhooks,
            tolerance=TOLERANCE_SECONDS,
        )

    # -- plumbing -------------------------------------------------------------------------------
    def _get_client(self) -> stripe.StripeClient:
        if self._secret_key is None:
            raise PaymentsNotConfigured(_NOT_CONFIGURED)
        with self._client_lock:
            if self._client is None:
                self._client = stripe.StripeClient(
                    self._secret_key,
                    base_addresses={"api": self.api_base} if self.api_base else None,
                    http_client=stripe.RequestsClient(timeout=self.timeout_seconds),
                    max_network_retries=self.max_network_retries,
                )
            return self._client

    def _call(self, action: str, fn: Callable[[], T], *, not_found: str | None = None) -> T:
        try:
            return fn()
        except stripe.InvalidRequestError as exc:
            if not_found is not None and (exc.http_status == 404 or exc.code == "resource_missing"):
                raise NotFound(not_found) from None
            raise self._failed(action, exc) from None
        except stripe.StripeError as exc:
            raise self._failed(action, exc) from None

    def _failed(self, action: str, exc: stripe.StripeError) -> PaymentGatewayFailed:
        if isinstance(exc, stripe.APIConnectionError):
            what = "Stripe could not be reached (connection failed or timed out)"
        elif isinstance(exc, stripe.AuthenticationError):
            what = "Stripe rejected the API key"
        elif isinstance(exc, stripe.PermissionError):
            what = "the Stripe API key lacks permission"
        elif isinstance(exc, stripe.RateLimitError):
            what = "Stripe rate limit exceeded"
        elif isinstance(exc, stripe.IdempotencyError):
            what = "Stripe refused the idempotency key (reused with different parameters)"
        elif isinstance(exc, stripe.InvalidRequestError):
            detail = redact(str(exc.user_message or ""), self._secret_key).strip()[:_MAX_DETAIL]
            what = "Stripe refused the request" + (f": {detail}" if detail else "")
        else:
            what = f"Stripe error ({type(exc).__name__})"
        facts = [f"HTTP {exc.http_status}"] if exc.http_status else []
        if exc.code:
            facts.append(f"code={redact(str(exc.code), self._secret_key)[:40]}")
        if exc.request_id:
            facts.append(f"request_id={exc.request_id}")
        message = f"could not {action}: {what}" + (f" [{', '.join(facts)}]" if facts else "")
        message = redact(message, self._secret_key)
        log.warning("Stripe call failed: %s", message)
        return PaymentGatewayFailed(message)

    @staticmethod
    def _translate(obj: Any, action: str) -> PaymentIntent:
        # stripe>=15: a StripeObject is no longer a dict subclass; to_dict() gives plain dicts.
        data = obj.to_dict() if hasattr(obj, "to_dict") else obj
        try:
            return intent_from_dict(data)
        except InvalidWebhook:
            raise PaymentGatewayFailed(
                f"could not {action}: Stripe answered with something that is not a PaymentIntent"
            ) from None
