"""The real PaymentGateway: Stripe PaymentIntents (and, to save a card, Customers, SetupIntents and
PaymentMethods) through the official `stripe` SDK.

One `stripe.StripeClient` is built on first use and reused (it keeps an HTTP session per thread).
Every Stripe failure becomes a domain error with a short message; the secret key and client
secrets never reach an exception message, a repr or a log line.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe

from adapters.stripe_http import DeadlineRequestsClient
from adapters.stripe_webhooks import (
    TOLERANCE_SECONDS,
    dispute_from_dict,
    intent_from_dict,
    parse_webhook,
    refund_from_dict,
    setup_intent_from_dict,
)
from wallet_core.errors import (
    InvalidWebhook,
    NotFound,
    PaymentDeclined,
    PaymentGatewayBusy,
    PaymentGatewayFailed,
    PaymentsNotConfigured,
)
from wallet_core.payments import (
    META_USER_ID,
    Dispute,
    OffSessionCharge,
    PaymentEvent,
    PaymentIntent,
    PaymentIntentRequest,
    Refund,
)
from wallet_core.saved_cards import CardDetails, SetupIntent

log = logging.getLogger(__name__)

T = TypeVar("T")

_NOT_CONFIGURED = "STRIPE_SECRET_KEY is not set, so no payment can be taken"
_MAX_DETAIL = 160
_PAGE_SIZE = 100  # Stripe's largest page

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
        max_concurrent_calls: int | None = None,
    ) -> None:
        """`max_concurrent_calls`: at most this many calls to Stripe at once (None: no bound); one more
        is refused at once with PaymentGatewayBusy, so a Stripe that hangs cannot hold every worker
        thread of the server for its whole timeout."""
        if isinstance(webhook_secrets, str):  # a lone string is a Sequence too: do not split it
            webhook_secrets = (webhook_secrets,)
        self._secret_key = (secret_key or "").strip() or None
        self.webhook_secrets: tuple[str, ...] = tuple(s for s in webhook_secrets if s)
        self.api_base = api_base
        self.allow_unsigned_webhooks = allow_unsigned_webhooks
        self.timeout_seconds = timeout_seconds
        self.max_network_retries = max_network_retries
        self.max_concurrent_calls = max_concurrent_calls
        self._slots = None if max_concurrent_calls is None else threading.BoundedSemaphore(max_concurrent_calls)
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

    def charge_off_session(self, request: OffSessionCharge) -> PaymentIntent:
        """A PaymentIntent confirmed at once on the customer's saved card, without the customer. Stripe's
        card errors (a decline, authentication_required) and a payment method Stripe cannot charge for
        this customer (detached, unknown) are PaymentDeclined; anything else is PaymentGatewayFailed."""
        client = self._get_client()
        params: dict[str, Any] = {
            "amount": request.amount.cents,
            "currency": request.currency.lower(),
            "customer": request.customer_id,
            "payment_method": request.payment_method_id,
            "off_session": True,
            "confirm": True,
            "metadata": dict(request.metadata),
            "payment_method_types": ["card"],
        }
        options: stripe.RequestOptions = {"idempotency_key": request.idempotency_key}

        def create() -> Any:
            try:
                return client.v1.payment_intents.create(params, options)  # type: ignore[arg-type]
            except stripe.CardError as exc:
                raise self._declined(exc) from None
            except stripe.InvalidRequestError as exc:
                if exc.param in ("payment_method", "customer") or exc.code == "payment_method_unexpected_state":
                    raise self._declined(exc) from None
                raise

        intent = self._translate(self._call("charge a saved card", create), "charge a saved card")
        if intent.status in ("requires_action", "requires_payment_method", "requires_confirmation", "canceled"):
            raise PaymentDeclined(
                f"the charge was not completed: its PaymentIntent is {intent.status}",
                code="authentication_required" if intent.status == "requires_action" else intent.status,
                payment_intent_id=intent.id,
            )
        log.info("charged a saved card: PaymentIntent %s (%s %s) %s", intent.id, intent.amount, intent.currency,
                 intent.status)
        return intent

    def _declined(self, exc: stripe.StripeError) -> PaymentDeclined:
        error = getattr(exc, "error", None)
        intent = getattr(error, "payment_intent", None) if error is not None else None
        intent_id = intent.get("id") if isinstance(intent, Mapping) else getattr(intent, "id", None)
        code = str(getattr(exc, "code", None) or "card_declined")[:60]
        detail = redact(str(exc.user_message or "the card was declined"), self._secret_key).strip()[:_MAX_DETAIL]
        log.warning("Stripe declined an off-session charge: %s (%s)", code, detail)
        return PaymentDeclined(
            detail, code=redact(code), payment_intent_id=intent_id if isinstance(intent_id, str) else None
        )

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        client = self._get_client()
        intents = client.v1.payment_intents
        return self._one_intent("retrieve", payment_intent_id, lambda: intents.retrieve(payment_intent_id))

    def cancel_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        client = self._get_client()
        # No cancellation_reason ("abandoned" would fit): localstripe refuses any parameter here.
        intents = client.v1.payment_intents
        # Unbounded: a cancel cleans up after a create that held a slot a moment ago; refusing it would
        # leave a payable intent the wallet never recorded.
        return self._one_intent("cancel", payment_intent_id, lambda: intents.cancel(payment_intent_id), bounded=False)

    def _one_intent(self, verb: str, payment_intent_id: str, call: Callable[[], Any], *,
                    bounded: bool = True) -> PaymentIntent:
        if not isinstance(payment_intent_id, str) or not payment_intent_id.strip():
            # An empty id would hit the *list* endpoint instead of one intent.
            raise NotFound("no PaymentIntent with an empty id")
        action = f"{verb} a PaymentIntent"
        obj = self._call(action, call, not_found=f"no PaymentIntent {redact(payment_intent_id)[:100]}", bounded=bounded)
        return self._translate(obj, action)

    def list_payment_intents(self, created_after: datetime | None = None) -> Iterator[PaymentIntent]:
        """Newest first, back to `created_after` (inclusive, to the second). The first page is fetched
        now, so a missing key or an unreachable Stripe fails here rather than on the first `next()`.

        The date filter is applied here, not sent as `created[gte]` (localstripe refuses that), and
        Stripe's newest-first order is checked rather than trusted: a server that lists oldest first
        (localstripe does) is read to the end and reversed, where Stripe's list stops at the cutoff."""
        client = self._get_client()
        cutoff = None if created_after is None else _epoch_seconds(created_after)
        pages = self._pages(
            "list PaymentIntents",
            lambda params: client.v1.payment_intents.list(params),  # type: ignore[arg-type]
            {"limit": _PAGE_SIZE},
        )
        first = next(pages)

        def entries() -> Iterator[tuple[int, PaymentIntent]]:
            for page in itertools.chain([first], pages):
                for item in page:
                    created = item.get("created") if isinstance(item, Mapping) else None
                    if isinstance(created, bool) or not isinstance(created, int):
                        raise PaymentGatewayFailed(
                            "could not list PaymentIntents: Stripe listed one without a creation time"
                        )
                    yield created, self._translate(item, "list PaymentIntents")

        return newest_first(entries(), cutoff)

    def list_refunds(self, payment_intent_id: str) -> list[Refund]:
        """Every refund of the PaymentIntent, all pages. An unknown PaymentIntent has none."""
        client = self._get_client()
        return self._list_of_intent(
            "refunds", "a Refund", payment_intent_id,
            lambda params: client.v1.refunds.list(params),  # type: ignore[arg-type]
            lambda item: refund_from_dict(item, payment_intent_id=payment_intent_id),
        )

    def list_disputes(self, payment_intent_id: str) -> list[Dispute]:
        """Every dispute of the PaymentIntent, all pages, as each stands now. An unknown PaymentIntent
        has none."""
        client = self._get_client()

        def translate(item: Any) -> Dispute:
            dispute = dispute_from_dict(item)
            return replace(dispute, payment_intent_id=dispute.payment_intent_id or payment_intent_id)

        return self._list_of_intent(
            "disputes", "a Dispute", payment_intent_id,
            lambda params: client.v1.disputes.list(params),  # type: ignore[arg-type]
            translate,
        )

    def _list_of_intent(
        self, what: str, one: str, payment_intent_id: str, fetch: Callable[[dict[str, Any]], Any],
        translate: Callable[[Any], T],
    ) -> list[T]:
        """Every `what` of one PaymentIntent, all pages, each through `translate`."""
        if not isinstance(payment_intent_id, str) or not payment_intent_id.strip():
            return []  # without the filter Stripe would list every one of the account
        found: list[T] = []
        try:
            for page in self._pages(f"list {what}", fetch, {"payment_intent": payment_intent_id, "limit": _PAGE_SIZE},
                                    not_found="no such PaymentIntent"):
                for item in page:
                    try:
                        found.append(translate(item))
                    except InvalidWebhook:
                        raise PaymentGatewayFailed(
                            f"could not list {what}: Stripe answered with something that is not {one}"
                        ) from None
        except NotFound:
            return []
        return found

    def parse_webhook(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        return parse_webhook(
            payload,
            signature_header,
            self.webhook_secrets,
            allow_unsigned=self.allow_unsigned_webhooks,
            tolerance=TOLERANCE_SECONDS,
        )

    # -- saving a card -------------------------------------------------------------------------------
    def create_customer(self, user_id: str, idempotency_key: str) -> str:
        client = self._get_client()
        params: dict[str, Any] = {"metadata": {META_USER_ID: user_id}}
        options: stripe.RequestOptions = {"idempotency_key": idempotency_key}
        obj = self._call(
            "create a Customer",
            lambda: client.v1.customers.create(params, options),  # type: ignore[arg-type]
        )
        customer_id = _plain(obj).get("id")
        if not isinstance(customer_id, str) or not customer_id:
            raise PaymentGatewayFailed("could not create a Customer: Stripe answered with something that is not one")
        log.info("created Stripe Customer %s", customer_id)
        return customer_id

    def create_setup_intent(self, customer_id: str, user_id: str, idempotency_key: str) -> SetupIntent:
        client = self._get_client()
        params: dict[str, Any] = {
            "customer": customer_id,
            "usage": "off_session",  # the card is for payments made without the user: automatic top-up
            "payment_method_types": ["card"],
            "metadata": {META_USER_ID: user_id},
        }
        options: stripe.RequestOptions = {"idempotency_key": idempotency_key}
        obj = self._call(
            "create a SetupIntent",
            lambda: client.v1.setup_intents.create(params, options),  # type: ignore[arg-type]
        )
        intent = self._setup_intent(obj, "create a SetupIntent")
        log.info("created Stripe SetupIntent %s for Customer %s", intent.id, intent.customer_id)
        return intent

    def retrieve_setup_intent(self, setup_intent_id: str) -> SetupIntent:
        client = self._get_client()
        _check_object_id(setup_intent_id, "SetupIntent")
        obj = self._call(
            "retrieve a SetupIntent",
            lambda: client.v1.setup_intents.retrieve(setup_intent_id),
            not_found=f"no SetupIntent {redact(setup_intent_id)[:100]}",
        )
        return self._setup_intent(obj, "retrieve a SetupIntent")

    def card_details(self, payment_method_id: str) -> CardDetails:
        client = self._get_client()
        _check_object_id(payment_method_id, "PaymentMethod")
        action = "read a PaymentMethod"
        obj = self._call(
            action,
            lambda: client.v1.payment_methods.retrieve(payment_method_id),
            not_found=f"no PaymentMethod {redact(payment_method_id)[:100]}",
        )
        data = _plain(obj)
        card = data.get("card")
        try:
            if data.get("type") != "card" or not isinstance(card, Mapping):
                raise PaymentGatewayFailed(f"could not {action}: it is not a card", outcome_unknown=False)
            brand, last4, exp_month, exp_year = card["brand"], card["last4"], card["exp_month"], card["exp_year"]
            if not (isinstance(brand, str) and isinstance(last4, str) and _month(exp_month) and _year(exp_year)):
                raise TypeError
            customer = data.get("customer")
            if isinstance(customer, Mapping):
                customer = customer.get("id")
            return CardDetails(
                payment_method_id=str(data["id"]),
                brand=brand,
                last4=last4,
                exp_month=exp_month,
                exp_year=exp_year,
                customer_id=customer if isinstance(customer, str) and customer else None,
            )
        except (KeyError, TypeError):
            raise PaymentGatewayFailed(
                f"could not {action}: Stripe answered without a card's brand, last4 or expiry"
            ) from None

    def detach_payment_method(self, payment_method_id: str) -> None:
        client = self._get_client()
        _check_object_id(payment_method_id, "PaymentMethod")
        # Unbounded: a detach cleans up after a card was replaced or forgotten; refusing it would leave
        # a card the wallet no longer knows attached to the Customer.
        self._call(
            "detach a PaymentMethod",
            lambda: client.v1.payment_methods.detach(payment_method_id),
            not_found=f"no PaymentMethod {redact(payment_method_id)[:100]}",
            bounded=False,
        )
        log.info("detached Stripe PaymentMethod %s", payment_method_id)

    @staticmethod
    def _setup_intent(obj: Any, action: str) -> SetupIntent:
        try:
            return setup_intent_from_dict(_plain(obj))
        except InvalidWebhook:
            raise PaymentGatewayFailed(
                f"could not {action}: Stripe answered with something that is not a SetupIntent of a Customer"
            ) from None

    # -- plumbing -------------------------------------------------------------------------------
    def _get_client(self) -> stripe.StripeClient:
        if self._secret_key is None:
            raise PaymentsNotConfigured(_NOT_CONFIGURED)
        with self._client_lock:
            if self._client is None:
                self._client = stripe.StripeClient(
                    self._secret_key,
                    base_addresses={"api": self.api_base} if self.api_base else None,
                    http_client=DeadlineRequestsClient(self.timeout_seconds),
                    max_network_retries=self.max_network_retries,
                )
            return self._client

    def _call(self, action: str, fn: Callable[[], T], *, not_found: str | None = None, bounded: bool = True) -> T:
        slots = self._slots if bounded else None
        if slots is not None and not slots.acquire(blocking=False):
            raise PaymentGatewayBusy(
                f"could not {action}: {self.max_concurrent_calls} calls to Stripe are already waiting for an "
                "answer; nothing was sent, try again shortly",
                outcome_unknown=False,
            )
        try:
            return fn()
        except stripe.InvalidRequestError as exc:
            if not_found is not None and (exc.http_status == 404 or exc.code == "resource_missing"):
                raise NotFound(not_found) from None
            raise self._failed(action, exc) from None
        except stripe.StripeError as exc:
            raise self._failed(action, exc) from None
        finally:
            if slots is not None:
                slots.release()

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
        refused = not isinstance(exc, stripe.APIConnectionError) and 400 <= (exc.http_status or 0) < 500
        return PaymentGatewayFailed(message, outcome_unknown=not refused)

    def _pages(
        self,
        action: str,
        fetch: Callable[[dict[str, Any]], Any],
        params: dict[str, Any],
        *,
        not_found: str | None = None,
    ) -> Iterator[list[Any]]:
        """Each page of a Stripe list (as plain dicts), following `starting_after` while `has_more`."""
        seen: set[str] = set()
        while True:
            listing = self._call(action, functools.partial(fetch, dict(params)), not_found=not_found)
            page = listing.to_dict() if hasattr(listing, "to_dict") else listing
            data = page.get("data") if isinstance(page, Mapping) else None
            if not isinstance(data, list):
                raise PaymentGatewayFailed(f"could not {action}: Stripe answered with something that is not a list")
            yield data
            if not data or page.get("has_more") is not True:
                return
            last = data[-1].get("id") if isinstance(data[-1], Mapping) else None
            if not isinstance(last, str) or last in seen:
                raise PaymentGatewayFailed(f"could not {action}: Stripe's list does not move on to a next page")
            seen.add(last)
            params = {**params, "starting_after": last}

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


def _plain(obj: Any) -> dict[str, Any]:
    """A Stripe answer as plain dicts (stripe>=15: a StripeObject is no longer a dict subclass)."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    return data if isinstance(data, dict) else {}


def _check_object_id(value: object, what: str) -> None:
    """An empty id would hit a *list* endpoint (or another path) instead of one object."""
    if not isinstance(value, str) or not value.strip() or "/" in value:
        raise NotFound(f"no {what} with an empty or malformed id")


def _month(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 12


def _year(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 2000 <= value <= 9999


def _epoch_seconds(moment: datetime) -> int:
    """Whole seconds since the epoch, rounded down (Stripe's `created` has whole seconds)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() // 1)


def newest_first(entries: Iterable[tuple[int, T]], cutoff: int | None) -> Iterator[T]:
    """`entries` ((created, item) in the server's order) newest first, leaving out those created
    before `cutoff`.

    Stripe lists newest first, so once it is clear the server does (two different `created` seen,
    descending), items are passed on as they come and the first one older than the cutoff ends the
    listing. A server that lists oldest first (localstripe) is read to the end and reversed."""
    order: str | None = None  # "newest_first" | "oldest_first", once two different times are seen
    held: list[tuple[int, T]] = []
    previous: int | None = None
    for created, item in entries:
        if order is None and previous is not None and created != previous:
            order = "newest_first" if created < previous else "oldest_first"
            if order == "newest_first":
                yield from (i for c, i in held if cutoff is None or c >= cutoff)
                held = []
        previous = created
        if order == "newest_first":
            if cutoff is not None and created < cutoff:
                return
            yield item
        else:
            held.append((created, item))
    if order == "oldest_first":
        held.reverse()
    # Never told apart (every item created in the same second): trust Stripe's documented order.
    yield from (i for c, i in held if cutoff is None or c >= cutoff)
