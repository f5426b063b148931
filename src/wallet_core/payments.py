"""What the payment provider tells us, in our own words (filled in by the gateway adapter)."""

from __future__ import annotations

from dataclasses import dataclass, field

from wallet_core.ids import has_control_characters
from wallet_core.money import Usd
from wallet_core.saved_cards import SetupIntent

# Metadata keys we put on every PaymentIntent we create, and read back from webhooks (META_USER_ID on
# every SetupIntent too).
META_TOP_UP_ID = "wallet_top_up_id"
META_USER_ID = "wallet_user_id"

# The longest values of a Stripe event the wallet stores: the columns of the event log (event id, type)
# and the ids it books under. Object ids (PaymentIntent, refund, dispute) are capped lower than their
# columns (255) so what the wallet makes from them fits too: ledger references such as
# `dispute_closed:<id>` (300) and reconciliation's event ids such as `reconcile:<id>:warning_closed`
# (255). Stripe's ids are about 30 characters.
MAX_EVENT_ID_LENGTH = 255
MAX_EVENT_TYPE_LENGTH = 100
MAX_OBJECT_ID_LENGTH = 200


@dataclass(frozen=True)
class PaymentIntentRequest:
    amount: Usd
    currency: str
    metadata: dict[str, str]
    idempotency_key: str


@dataclass(frozen=True)
class OffSessionCharge:
    """Charge a saved card without the customer present (an automatic top-up): a PaymentIntent made with
    the customer and its payment method, off_session=true and confirm=true. `idempotency_key` is the
    top-up id, so a charge sent again (a worker killed mid-charge, an outage) is the same charge."""

    amount: Usd
    currency: str
    customer_id: str
    payment_method_id: str
    metadata: dict[str, str]
    idempotency_key: str


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    amount: Usd
    currency: str
    status: str
    metadata: dict[str, str] = field(default_factory=dict)
    # What Stripe says it received; None when the provider does not report it.
    amount_received: Usd | None = None
    # Lets the buyer's browser confirm the payment. Never logged, never shown in a repr.
    client_secret: str | None = field(default=None, repr=False)
    # Why the last payment attempt failed (Stripe's last_payment_error: its code and message), if it did.
    last_error_code: str | None = None
    last_error_message: str | None = None


@dataclass(frozen=True)
class Refund:
    id: str
    payment_intent_id: str | None
    amount: Usd
    currency: str
    status: str  # succeeded | pending | failed | canceled | requires_action


@dataclass(frozen=True)
class Dispute:
    id: str
    payment_intent_id: str | None
    amount: Usd
    currency: str
    status: str  # warning_needs_response | needs_response | under_review | won | lost | ...


@dataclass(frozen=True)
class PaymentEvent:
    """A verified webhook event, or one reconciliation made up from what Stripe lists.

    `payment_intent` is set for payment_intent.* events; `refunds` for charge.refunded (every refund
    of the charge, when Stripe includes them) and refund.* events; `dispute` for charge.dispute.*;
    `setup_intent` for setup_intent.* events about a SetupIntent of a Customer."""

    id: str
    type: str
    payment_intent: PaymentIntent | None = None
    refunds: tuple[Refund, ...] = ()
    dispute: Dispute | None = None
    # The PaymentIntent the event is about, for events whose object is a charge, refund or dispute.
    payment_intent_id: str | None = None
    refunds_listed: bool = True  # False when a charge.refunded event did not include its refunds
    setup_intent: SetupIntent | None = None

    @property
    def about(self) -> str | None:
        """The PaymentIntent id this event concerns, if any."""
        if self.payment_intent is not None:
            return self.payment_intent.id
        return self.payment_intent_id


@dataclass(frozen=True)
class UnstorableValue:
    """A value of an event that no database could store as it is: too long for its column, or with a
    NUL or another control character, or a lone surrogate (not UTF-8)."""

    field: str  # "event id", "type", "PaymentIntent id", "refund id", "dispute id", "SetupIntent id", ...
    problem: str


def unstorable_value(event: PaymentEvent) -> UnstorableValue | None:
    """The first value of `event` the wallet could not store unchanged, or None. Checked before the
    event touches a database, so SQLite and PostgreSQL treat it alike."""
    checks: list[tuple[str, str | None, int]] = [
        ("event id", event.id, MAX_EVENT_ID_LENGTH),
        ("type", event.type, MAX_EVENT_TYPE_LENGTH),
        ("PaymentIntent id", event.about, MAX_OBJECT_ID_LENGTH),
    ]
    checks += [("refund id", r.id, MAX_OBJECT_ID_LENGTH) for r in event.refunds]
    checks += [("PaymentIntent id", r.payment_intent_id, MAX_OBJECT_ID_LENGTH) for r in event.refunds]
    if event.dispute is not None:
        checks += [
            ("dispute id", event.dispute.id, MAX_OBJECT_ID_LENGTH),
            ("PaymentIntent id", event.dispute.payment_intent_id, MAX_OBJECT_ID_LENGTH),
        ]
    if event.setup_intent is not None:
        checks += [
            ("SetupIntent id", event.setup_intent.id, MAX_OBJECT_ID_LENGTH),
            ("customer id", event.setup_intent.customer_id, MAX_OBJECT_ID_LENGTH),
            ("PaymentMethod id", event.setup_intent.payment_method_id, MAX_OBJECT_ID_LENGTH),
        ]
    for name, value, limit in checks:
        if value is not None and (problem := value_problem(value, limit)) is not None:
            return UnstorableValue(name, problem)
    return None


def value_problem(value: str, limit: int) -> str | None:
    """Why `value` cannot be stored unchanged in a column of `limit` characters, or None."""
    if len(value) > limit:
        return f"is {len(value)} characters long, more than {limit}"
    if has_control_characters(value):
        return "holds a NUL, another control character or a lone surrogate"
    return None


def printable(value: str, limit: int = 80) -> str:
    """`value` safe to log, store as free text or echo: control characters and lone surrogates shown
    as U+FFFD, cut to `limit` characters (the cut marked with an ellipsis)."""
    clean = "".join("\ufffd" if has_control_characters(ch) else ch for ch in value)
    return clean if len(clean) <= limit else clean[: limit - 1] + "\u2026"
