"""The JSON Schemas of the REST API: request bodies (which `read_object` validates against) and
response bodies. The OpenAPI document (/openapi.json) and the /docs page are built from these same
objects, so what is documented is what is checked.

Every schema is a JSON Schema 2020-12 dict, as OpenAPI 3.1 uses. `validate` enforces the structure:
JSON types, required properties and unknown properties (`additionalProperties`, `items`), and that
no string holds control, line-separator or bidi-override characters (UNSAFE_TEXT). The other keywords
(pattern, lengths, bounds, formats) describe the values for clients and for generated tests; the
wallet's core checks the values themselves (money parsing, limits) and says what is wrong, so those
rules live in one place (wallet_core).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from wallet_core.alerts import BalanceLevel
from wallet_core.auto_top_up import AttemptOutcome, AutoTopUpStatus
from wallet_core.errors import InvalidInput
from wallet_core.event_types import EVENT_TYPES
from wallet_core.holds import MAX_HOLD_TTL, HoldStatus
from wallet_core.ids import _ID_PATTERN
from wallet_core.ids import PAYMENT_INTENT_ID as _PAYMENT_INTENT_ID
from wallet_core.ledger import MAX_PRIORITY, MIN_PRIORITY, CreditKind, TransactionKind
from wallet_core.money import AMOUNT_BELOW, AMOUNT_TEXT
from wallet_core.topups import TopUpStatus
from wallet_core.use_cases.list_events import MAX_PAGE as MAX_EVENT_PAGE
from wallet_core.use_cases.read_wallet import MAX_PAGE
from wallet_core.use_cases.spend_batch import MAX_BATCH, BatchStatus
from wallet_core.use_cases.spend_credits import MAX_METADATA_KEYS
from wallet_core.webhooks_out import ALL_EVENTS, MAX_DESCRIPTION, DeliveryStatus

Schema = dict[str, Any]

# Schemas that get a name in the OpenAPI document's components (by identity: the same object).
NAMED: dict[str, Schema] = {}


def named(name: str, schema: Schema) -> Schema:
    NAMED[name] = schema
    return schema


# -- values ---------------------------------------------------------------------------------------

# The core's id rule (wallet_core.ids.check_user_id), anchored for JSON Schema. Hold ids follow it too.
ID_PATTERN = f"^{_ID_PATTERN.pattern}$"
PAYMENT_INTENT_ID_PATTERN = f"^{_PAYMENT_INTENT_ID.pattern}$"  # wallet_core.ids.check_payment_intent_id
IDEMPOTENCY_KEY_PATTERN = "^[\\x21-\\x7e]{1,255}$"
# Text no string in a request body may hold (enforced by `validate` on every string): C0 and C1
# controls, line and paragraph separators, and the bidirectional marks, embeddings, overrides and
# isolates that make audit text read differently from what it is ("Trojan Source").
UNSAFE_TEXT = "\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069"
NO_CONTROL_CHARACTERS = f"^[^{UNSAFE_TEXT}]*$"
_UNSAFE = re.compile(f"[{UNSAFE_TEXT}]")

USER_ID: Schema = {
    "type": "string",
    "pattern": ID_PATTERN,
    "maxLength": 128,
    "description": "1-128 characters: letters, digits and _ . : @ | + -, starting with a letter or digit.",
    "examples": ["alice"],
}
HOLD_ID: Schema = {**USER_ID, "description": "A hold id, as placing the hold answered.", "examples": ["hold_0f3a"]}
TRANSACTION_ID: Schema = {**USER_ID, "description": "A transaction id, as an answer or the history gave it (ctx_...).",
                          "examples": ["ctx_0f3a"]}
PAYMENT_INTENT_ID: Schema = {
    "type": "string",
    "pattern": PAYMENT_INTENT_ID_PATTERN,
    "description": "A Stripe PaymentIntent id: 1-255 letters, digits and underscores.",
    "examples": ["pi_3N4x"],
}
SETUP_INTENT_ID: Schema = {
    "type": "string",
    "pattern": "^seti_[A-Za-z0-9_]{1,250}$",  # wallet_core.ids.check_setup_intent_id
    "description": "A Stripe SetupIntent id, as starting the setup answered: seti_ then letters, digits and "
    "underscores.",
    "examples": ["seti_1N4x"],
}
IDEMPOTENCY_KEY: Schema = {
    "type": "string",
    "pattern": IDEMPOTENCY_KEY_PATTERN,
    "description": "1-255 printable ASCII characters without spaces. The same key and request again "
    "answer the first result (200) and move nothing; the same key for a different request is 409.",
    "examples": ["order-17"],
}
STRIPE_SIGNATURE: Schema = {
    "type": "string",
    "description": "Stripe's signature over the raw body: t=<unix time>,v1=<hex HMAC-SHA256>.",
    "examples": ["t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"],
}

# The core's amount rule (wallet_core.money): `pattern` for strings, the bounds for JSON numbers.
AMOUNT_IN: Schema = {
    "type": ["string", "number"],
    "pattern": f"^(?:{AMOUNT_TEXT.pattern})$",
    "exclusiveMinimum": 0,
    "exclusiveMaximum": AMOUNT_BELOW,
    "description": "A decimal number greater than 0 with at most 2 decimal places: a string of digits "
    '("10.00", "7", "0.50"; at most 12 before the point, no sign, spaces, exponent or leading zeros) '
    "or a JSON number, read exactly by its value, never as a binary float (1e2 is 100; 1.001 is refused). "
    "NaN and Infinity are refused.",
    "examples": ["10.00"],
}
REASON: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 500,
    "pattern": NO_CONTROL_CHARACTERS,
    "description": "Why, for the audit trail: 1-500 characters, not only spaces, no control characters.",
    "examples": ["welcome bonus"],
}
METADATA: Schema = {
    "type": ["object", "null"],
    "maxProperties": MAX_METADATA_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": 40, "pattern": NO_CONTROL_CHARACTERS},
    "additionalProperties": {"type": "string", "maxLength": 500, "pattern": NO_CONTROL_CHARACTERS},
    "description": f"At most {MAX_METADATA_KEYS} string values (keys of 1-40 characters, values of at most "
    "500), kept on the transaction. No control characters.",
    "examples": [{"order": "o-17"}],
}
INSTANT_IN: Schema = {
    "type": ["string", "null"],
    "format": "date-time",
    "maxLength": 64,
    "description": 'an ISO 8601 time with a timezone, e.g. "2027-01-01T00:00:00Z"',
}

# -- request bodies -------------------------------------------------------------------------------

TOP_UP_REQUEST = named("TopUpRequest", {
    "type": "object",
    "properties": {"amount_usd": {**AMOUNT_IN, "description": "US dollars to pay, within the configured "
                                  "minimum and maximum. " + AMOUNT_IN["description"]}},
    "required": ["amount_usd"],
    "additionalProperties": False,
})
GRANT_REQUEST = named("GrantRequest", {
    "type": "object",
    "properties": {
        "credits": AMOUNT_IN,
        "reason": REASON,
        "expires_at": {**INSTANT_IN, "description": "When the credits stop counting (in the future): "
                       + INSTANT_IN["description"] + ". Left out or null: never."},
        "effective_at": {**INSTANT_IN, "description": "When the credits start counting (now or later, at most "
                         "1 year ahead; until then they show as `pending`, not in `balance`): "
                         + INSTANT_IN["description"] + ". Left out or null: at once."},
        "priority": {
            "type": "integer",
            "minimum": MIN_PRIORITY,
            "maximum": MAX_PRIORITY,
            "description": f"{MIN_PRIORITY}-{MAX_PRIORITY}, default 50: among lots of the same category, lower "
            "numbers are spent first (then the soonest expiry, then the oldest).",
        },
        "category": {
            "type": "string",
            "enum": [str(kind) for kind in (CreditKind.PROMOTIONAL, CreditKind.PAID)],
            "description": '"promotional" (the default) or "paid": credits paid outside Stripe (e.g. a bank '
            "transfer), spent after every promotional credit.",
        },
    },
    "required": ["credits", "reason"],
    "additionalProperties": False,
})
REVERT_REQUEST = named("RevertRequest", {
    "type": "object",
    "properties": {
        "reason": REASON,
        "dry_run": {"type": "boolean", "description": "true: answer what the revert would do, and write nothing. "
                    "Default false."},
    },
    "required": ["reason"],
    "additionalProperties": False,
})
SPEND_REQUEST = named("SpendRequest", {
    "type": "object",
    "properties": {"credits": AMOUNT_IN, "reason": REASON, "metadata": METADATA},
    "required": ["credits", "reason"],
    "additionalProperties": False,
})
# Only the envelope is structure checked here: each item is read on its own by the core
# (wallet_core.use_cases.spend_batch), so a malformed item answers `invalid`, naming its field, and the
# rest of the batch goes on. The item's fields are therefore described, not declared as properties.
SPEND_BATCH_ITEM: Schema = {
    "type": "object",
    "description": "One spend, checked on its own (a malformed one answers status `invalid` naming the field; the "
    "others go on): `user_id` (" + USER_ID["description"] + "), `credits` (" + AMOUNT_IN["description"] + "), "
    "`reason` (" + REASON["description"] + "), `idempotency_key` (required; " + IDEMPOTENCY_KEY["description"]
    + " The same key space as the single spend's Idempotency-Key.) and optionally `metadata` ("
    + METADATA["description"] + ") No other field.",
    "examples": [{"user_id": "alice", "credits": "1.50", "reason": "export", "idempotency_key": "usage-2041",
                  "metadata": {"job": "7"}}],
}
SPEND_BATCH_REQUEST = named("SpendBatchRequest", {
    "type": "object",
    "properties": {
        "spends": {
            "type": "array",
            "items": SPEND_BATCH_ITEM,
            "minItems": 1,
            "maxItems": MAX_BATCH,
            "description": f"1 to {MAX_BATCH} spends, booked in this order.",
        },
    },
    "required": ["spends"],
    "additionalProperties": False,
})
HOLD_REQUEST = named("HoldRequest", {
    "type": "object",
    "properties": {
        "credits": AMOUNT_IN,
        "reason": REASON,
        "expires_in_seconds": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": int(MAX_HOLD_TTL.total_seconds()),
            "description": "How long the hold lasts, in whole seconds (default 900, at most 7 days).",
        },
        "metadata": METADATA,
    },
    "required": ["credits", "reason"],
    "additionalProperties": False,
})
CAPTURE_REQUEST = named("CaptureRequest", {
    "type": "object",
    "properties": {
        "credits": {**AMOUNT_IN, "type": ["string", "number", "null"],
                    "description": "How much of the hold to spend (at most the held amount); left out or "
                    "null: all of it. " + AMOUNT_IN["description"]},
        "reason": {**REASON, "type": ["string", "null"]},
    },
    "additionalProperties": False,
})
RELEASE_REQUEST = named("ReleaseRequest", {
    "type": "object",
    "properties": {"reason": {**REASON, "type": ["string", "null"]}},
    "additionalProperties": False,
})
# Not validated here: the Stripe adapter reads the event after checking the signature over the raw
# bytes, and Stripe adds fields at will (so unknown fields are allowed).
STRIPE_EVENT = named("StripeEvent", {
    "type": "object",
    "properties": {
        "id": {"type": "string", "examples": ["evt_1"]},
        "type": {"type": "string", "examples": ["payment_intent.succeeded"]},
        "data": {"type": "object", "properties": {"object": {"type": "object"}}},
    },
    "required": ["id", "type"],
    "description": "A Stripe event, exactly as Stripe signed it.",
})

# -- responses ------------------------------------------------------------------------------------

AMOUNT_OUT: Schema = {
    "type": "string",
    "pattern": "^-?[0-9]+\\.[0-9]{2}$",
    "description": "A decimal amount with two places.",
    "examples": ["10.00"],
}
INSTANT_OUT: Schema = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC."}
TEXT_OR_NULL: Schema = {"type": ["string", "null"]}


def _object(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), **extra: Any) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
        **extra,
    }


ERROR = named("Error", _object(
    {
        "title": {"type": "string", "examples": ["Invalid input"]},
        "description": {"type": "string", "examples": ["credits must have at most 2 decimal places"]},
        "spendable": {**AMOUNT_OUT, "description": "Insufficient credits only: what the wallet can spend now."},
        "held": {**AMOUNT_OUT, "description": "Insufficient credits only: what open holds reserve."},
        "debt": {**AMOUNT_OUT, "description": "Insufficient credits only: what the wallet owes."},
        "retry_after_seconds": {
            "type": "integer", "minimum": 1,
            "description": "Too many top-ups (429) only: when to try again, as the Retry-After header says.",
        },
    },
    optional=("spendable", "held", "debt", "retry_after_seconds"),
    description="Every error: a short title and a description saying what to change. Never a stack trace.",
))
CATEGORY: Schema = {
    "type": "string",
    "enum": [str(kind) for kind in CreditKind],
    "description": "paid (bought with Stripe, or paid outside it) or promotional (given).",
}
SOURCE = named("Source", _object(
    {
        "lot_id": {"type": "string"},
        "category": CATEGORY,
        "credits": {**AMOUNT_OUT, "description": "What this lot paid, or was paid back or given (never negative)."},
    },
    description="One lot's part in a transaction.",
))
SOURCES: Schema = {
    "type": "array",
    "items": SOURCE,
    "description": "Which lots paid (a spend, hold, capture, expiry, refund) or were paid back or given to (a "
    "grant, top-up, release, revert), in the order they were used; empty when no lot's credits changed.",
}
TRANSACTION = named("Transaction", _object({
    "id": {"type": "string"},
    "kind": {"type": "string", "enum": [str(k) for k in TransactionKind]},
    "credits": {**AMOUNT_OUT, "description": "Change to the spendable balance."},
    "held_change": {**AMOUNT_OUT, "description": "Change to the held balance."},
    "balance_after": {**AMOUNT_OUT, "description": "Spendable balance right after."},
    "reference_id": {"type": "string"},
    "created_at": INSTANT_OUT,
    "reason": TEXT_OR_NULL,
    "hold_id": TEXT_OR_NULL,
    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    "reverts": {**TEXT_OR_NULL, "description": "A revert: the transaction it reverts; else null."},
    "reverted_by": {**TEXT_OR_NULL, "description": "The revert of this transaction, if it was reverted; else null."},
    "sources": SOURCES,
}))
LOT = named("Lot", _object(
    {
        "lot_id": {"type": "string"},
        "category": CATEGORY,
        "granted": {**AMOUNT_OUT, "description": "What the top-up or grant put in the lot."},
        "remaining": {**AMOUNT_OUT, "description": "What is left to spend (negative while in debt)."},
        "held": {**AMOUNT_OUT, "description": "What open holds reserve from the lot (not in remaining)."},
        "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY,
                     "description": "Lower numbers are spent first among lots of the same category."},
        "effective_at": {"type": ["string", "null"], "format": "date-time",
                         "description": "ISO 8601, UTC: spendable from then (pending until); null: from the start."},
        "expires_at": {"type": ["string", "null"], "format": "date-time",
                       "description": "ISO 8601, UTC: stops counting then; null: never."},
        "source_transaction_id": {**TEXT_OR_NULL, "description": "The top-up or grant that made the lot."},
    },
    description="A batch of credits from one top-up or grant.",
))
WALLET = named("Wallet", _object({
    "user_id": {"type": "string"},
    "balance": {**AMOUNT_OUT, "description": "Spendable now; negative while the wallet is in debt."},
    "held": {**AMOUNT_OUT, "description": "Reserved by open holds."},
    "debt": {**AMOUNT_OUT, "description": "What refunds or disputes of already-spent credits left owing."},
    "pending": {**AMOUNT_OUT, "description": "Granted with an `effective_at` still ahead: not in `balance` yet."},
    "by_category": _object(
        {"paid": AMOUNT_OUT, "promotional": AMOUNT_OUT},
        description="Spendable now, by category (they add up to `balance`; a debt shows in `paid`).",
    ),
    "lots": {"type": "array", "items": LOT,
             "description": "Every lot with something remaining, held or pending (not those past expiry), in the "
             "order they would be spent."},
    "transactions": {"type": "array", "items": TRANSACTION, "description": "The most recent, newest first."},
}))
HISTORY = named("History", _object({
    "transactions": {"type": "array", "items": TRANSACTION, "maxItems": MAX_PAGE},
    "next_cursor": {**TEXT_OR_NULL, "description": "Pass back as `cursor` for the next page; null on the last."},
}))
TOP_UP = named("TopUp", _object({
    "top_up_id": {"type": "string"},
    "payment_intent_id": {"type": "string"},
    "client_secret": {**TEXT_OR_NULL, "description": "For Stripe.js in the buyer's browser."},
    "amount_usd": AMOUNT_OUT,
    "credits": {**AMOUNT_OUT, "description": "Credits granted when Stripe says the money arrived."},
    "status": {"type": "string", "enum": [str(s) for s in TopUpStatus]},
}))
GRANT = named("Grant", _object({
    "user_id": {"type": "string"},
    "credits_granted": AMOUNT_OUT,
    "balance": AMOUNT_OUT,
    "transaction_id": {"type": "string"},
    "expires_at": {"type": ["string", "null"], "format": "date-time"},
    "effective_at": {"type": ["string", "null"], "format": "date-time",
                     "description": "Spendable from then (pending until); null: at once."},
    "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
    "category": CATEGORY,
}))
SPEND = named("Spend", _object({
    "user_id": {"type": "string"},
    "credits_spent": AMOUNT_OUT,
    "balance": AMOUNT_OUT,
    "transaction_id": {"type": "string"},
    "sources": {**SOURCES, "description": "The lots that paid, in spending order."},
}))
SPEND_BATCH_RESULT = named("SpendBatchResult", _object(
    {
        "index": {"type": "integer", "minimum": 0, "description": "The item's position in `spends`, from 0."},
        "idempotency_key": {**TEXT_OR_NULL, "description": "The item's key as sent; null when it sent none "
                            "(or not a string)."},
        "status": {
            "type": "string",
            "enum": [str(s) for s in BatchStatus],
            "description": "spent; replayed (the key was used before, in this batch or earlier, for this same "
            "spend: the first's transaction and balance); insufficient_credits (nothing spent: the credits "
            "do not cover it or the wallet is in debt); conflict (the key was used for another request); "
            "invalid (`error.field` names what is wrong).",
        },
        "transaction_id": {"type": "string", "description": "spent, replayed: the spend's transaction."},
        "balance": {**AMOUNT_OUT, "description": "spent, replayed: spendable right after the spend; "
                    "insufficient_credits: spendable when the item came."},
        "error": _object(
            {"field": {"type": "string", "description": "invalid only: the item's field (`item`: the item "
                       "itself, e.g. an unknown field)."},
             "message": {"type": "string"}},
            optional=("field",),
            description="insufficient_credits, conflict, invalid: why.",
        ),
    },
    optional=("transaction_id", "balance", "error"),
    description="What one item of a batch did.",
))
SPEND_BATCH = named("SpendBatch", _object({
    "results": {"type": "array", "items": SPEND_BATCH_RESULT, "maxItems": MAX_BATCH,
                "description": "One per item, in request order."},
}))
HOLD = named("Hold", _object({
    "hold_id": {"type": "string"},
    "user_id": {"type": "string"},
    "status": {"type": "string", "enum": [str(s) for s in HoldStatus]},
    "credits_held": AMOUNT_OUT,
    "credits_captured": AMOUNT_OUT,
    "balance": AMOUNT_OUT,
    "expires_at": INSTANT_OUT,
    "transaction_id": {"type": "string"},
    "sources": {**SOURCES, "description": "The lots this answer's transaction moved: reserved (placing the "
                "hold), paid (a capture: the captured part only) or given back to (a release)."},
}))
REVERT = named("Revert", _object(
    {
        "transaction_id": {**TEXT_OR_NULL, "description": "The revert's id; null for a dry run (nothing was written)."},
        "reverts": {"type": "string", "description": "The transaction reverted."},
        "credits_reverted": {**AMOUNT_OUT, "description": "Taken back (a grant: what was still unspent) or given "
                             "back (a spend, a capture)."},
        "user_id": {"type": "string"},
        "balance": {**AMOUNT_OUT, "description": "Spendable right after (a dry run: what it would be)."},
        "sources": {**SOURCES, "description": "The lots credits were taken from or given back to."},
        "dry_run": {"const": True, "description": "Only in the answer to a dry run: nothing was written."},
    },
    optional=("dry_run",),
))
CARD_SETUP = named("CardSetup", _object({
    "setup_intent_id": {"type": "string", "examples": ["seti_1N4x"]},
    "client_secret": {**TEXT_OR_NULL, "description": "For Stripe.js in the user's browser: confirmCardSetup."},
    "customer_id": {"type": "string", "description": "The user's Stripe Customer (made once).",
                    "examples": ["cus_P4x"]},
}))
_PAYMENT_METHOD_FIELDS: dict[str, Schema] = {
    "id": {"type": "string", "description": "The Stripe PaymentMethod.", "examples": ["pm_1N4x"]},
    "brand": {"type": "string", "examples": ["visa"]},
    "last4": {"type": "string", "examples": ["4242"]},
    "exp_month": {"type": "integer", "minimum": 1, "maximum": 12},
    "exp_year": {"type": "integer", "examples": [2030]},
}
PAYMENT_METHOD_ANSWER = named("SavedPaymentMethod", _object({
    "payment_method": _object(
        _PAYMENT_METHOD_FIELDS,
        type=["object", "null"],
        description="The card saved for automatic top-up (the card itself stays at Stripe); null when none is.",
    ),
}))
WEBHOOK_RECEIPT = named("WebhookReceipt", _object({
    "received": {"const": True},
    "event_id": {"type": "string"},
    "type": {"type": "string"},
    "outcome": {"type": "string", "description": "What the event did: granted, duplicate, ignored, ... "
                "(see docs/payments.md)."},
}))
PAYMENT_EVENT = named("PaymentEvent", _object({
    "event_id": {"type": "string"},
    "type": {"type": "string"},
    "outcome": {"type": "string"},
    "source": {"type": "string", "enum": ["webhook", "reconcile"]},
    "received_at": INSTANT_OUT,
    "payment_intent_id": TEXT_OR_NULL,
    "top_up_id": TEXT_OR_NULL,
}))
PAYMENT_EVENTS = named("PaymentEvents", _object({
    "payment_intent_id": {"type": "string"},
    "events": {"type": "array", "items": PAYMENT_EVENT, "description": "Oldest first."},
}))
# -- outbound events, webhook endpoints, balance alerts (docs/events.md) ---------------------------

EVENT_TYPE: Schema = {"type": "string", "enum": sorted(EVENT_TYPES), "description": "An event type."}
EVENT_ID: Schema = {**USER_ID, "description": "An event id, as the events list or a delivery gave it (evt_...).",
                    "examples": ["evt_0f3a"]}
ENDPOINT_ID: Schema = {**USER_ID, "description": "A webhook endpoint id, as registering it answered (we_...).",
                       "examples": ["we_0f3a"]}
WEBHOOK_ENDPOINT_REQUEST = named("WebhookEndpointRequest", {
    "type": "object",
    "properties": {
        "url": {"type": "string", "maxLength": 2048, "pattern": NO_CONTROL_CHARACTERS,
                "description": "Where events are POSTed: https:// and resolving to a public address (unless "
                "WALLET_WEBHOOK_ALLOW_PRIVATE_URLS=true, for development and tests only).",
                "examples": ["https://app.example.com/wallet-events"]},
        "events": {"type": "array", "items": {"type": "string", "enum": [ALL_EVENTS, *sorted(EVENT_TYPES)]},
                   "minItems": 1, "maxItems": len(EVENT_TYPES) + 1,
                   "description": '["*"] for every event, or the event types to receive.',
                   "examples": [["*"]]},
        "description": {"type": ["string", "null"], "maxLength": MAX_DESCRIPTION, "pattern": NO_CONTROL_CHARACTERS,
                        "description": f"What it is for: at most {MAX_DESCRIPTION} characters."},
    },
    "required": ["url", "events"],
    "additionalProperties": False,
})
_ENDPOINT_FIELDS: dict[str, Schema] = {
    "id": {"type": "string", "examples": ["we_0f3a"]},
    "url": {"type": "string"},
    "events": {"type": "array", "items": {"type": "string"}},
    "description": TEXT_OR_NULL,
    "created_at": INSTANT_OUT,
}
WEBHOOK_ENDPOINT = named("WebhookEndpoint", _object(
    {**_ENDPOINT_FIELDS, "secret": {"type": "string", "description": "whsec_ + base64: verify each delivery's "
                                    "webhook-signature with it (Standard Webhooks). Shown only in this answer.",
                                    "examples": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}},
    description="A webhook endpoint with its signing secret: shown only when registered or rotated.",
))
WEBHOOK_ENDPOINT_LISTED = named("WebhookEndpointListed", _object(_ENDPOINT_FIELDS,
                                                                 description="A webhook endpoint (no secret)."))
WEBHOOK_ENDPOINTS = named("WebhookEndpoints", _object({
    "endpoints": {"type": "array", "items": WEBHOOK_ENDPOINT_LISTED, "description": "Oldest first."},
}))
INSTANT_OR_NULL: Schema = {"type": ["string", "null"], "format": "date-time", "description": "ISO 8601, UTC, or null."}
DELIVERY = named("WebhookDelivery", _object({
    "id": {"type": "string", "examples": ["whd_0f3a"]},
    "event_id": {"type": "string"},
    "event_type": {"type": "string"},
    "status": {"type": "string", "enum": [str(s) for s in DeliveryStatus]},
    "attempts": {"type": "integer", "minimum": 0, "description": "Attempts started so far."},
    "last_status_code": {"type": ["integer", "null"], "description": "What the endpoint last answered; null if "
                         "it never answered (timeout, refused) or was not tried yet."},
    "last_error": {**TEXT_OR_NULL, "description": "Why the last attempt failed, if it did."},
    "next_attempt_at": {**INSTANT_OR_NULL, "description": "When it is tried next; null once delivered or failed."},
    "delivered_at": INSTANT_OR_NULL,
    "created_at": INSTANT_OUT,
}, description="One event to one endpoint."))
DELIVERIES = named("WebhookDeliveries", _object({
    "deliveries": {"type": "array", "items": DELIVERY, "maxItems": 500, "description": "Newest first."},
}))
REDELIVERY = named("Redelivery", _object({
    "event_id": {"type": "string"},
    "deliveries_queued": {"type": "integer", "minimum": 0,
                          "description": "How many endpoints (subscribed to the event's type) get it again."},
}))
OUTBOUND_EVENT = named("OutboundEvent", _object({
    "id": {"type": "string", "examples": ["evt_0f3a"]},
    "type": EVENT_TYPE,
    "created_at": INSTANT_OUT,
    "user_id": {"type": "string"},
    "data": {"type": "object", "description": "What happened: the ids to act on (transaction, top-up, "
             "PaymentIntent, hold) and the balance after; see docs/events.md for each type."},
}, description="What happened to a wallet, as webhooks deliver it."))
OUTBOUND_EVENTS = named("OutboundEvents", _object({
    "events": {"type": "array", "items": OUTBOUND_EVENT, "maxItems": MAX_EVENT_PAGE, "description": "Oldest first."},
    "next_cursor": {"type": "string", "description": "Pass back as `after` for what came next (the same cursor "
                    "when nothing did yet)."},
}))
ALERT_REQUEST = named("BalanceAlertRequest", {
    "type": "object",
    "properties": {"low_balance_credits": {**AMOUNT_IN, "description": "Below this, wallet.balance_low fires "
                                           "(once per crossing). " + AMOUNT_IN["description"]}},
    "required": ["low_balance_credits"],
    "additionalProperties": False,
})
AMOUNT_OR_NULL: Schema = {**AMOUNT_OUT, "type": ["string", "null"]}
ALERT = named("BalanceAlert", _object({
    "user_id": {"type": "string"},
    "low_balance_credits": {**AMOUNT_OR_NULL, "description": "The wallet's own threshold; null: the default applies."},
    "default_low_balance_credits": {**AMOUNT_OR_NULL, "description": "WALLET_LOW_BALANCE_CREDITS; null if unset."},
    "effective_low_balance_credits": {**AMOUNT_OR_NULL, "description": "The threshold that applies; null: none "
                                      "(only wallet.depleted and wallet.recovered at zero fire)."},
    "level": {"type": ["string", "null"], "enum": [*(str(lv) for lv in BalanceLevel), None],
              "description": "Where the balance stood at its last change: ok, low or depleted; null before any."},
}))

# -- automatic top-up (issue 13) ----------------------------------------------------------------------

AUTO_TOP_UP_REQUEST = named("AutoTopUpRequest", {
    "type": "object",
    "properties": {
        "threshold_credits": {**AMOUNT_IN, "description": "When a change leaves the spendable balance below "
                              "this, the saved card is charged. " + AMOUNT_IN["description"]},
        "target_credits": {**AMOUNT_IN, "description": "Top up to this balance (above the threshold): the "
                           "credits missing, in USD rounded up to the cent, within TOP_UP_MIN_USD and "
                           "TOP_UP_MAX_USD. Give this or amount_usd. " + AMOUNT_IN["description"]},
        "amount_usd": {**AMOUNT_IN, "description": "Or buy this many US dollars each time, within TOP_UP_MIN_USD "
                       "and TOP_UP_MAX_USD. " + AMOUNT_IN["description"]},
        "monthly_limit_usd": {**AMOUNT_IN, "description": "At most this many US dollars of automatic top-ups, "
                              "pending or paid, a calendar month (UTC); one beyond it is skipped and recorded. "
                              + AMOUNT_IN["description"]},
    },
    "required": ["threshold_credits"],
    "additionalProperties": False,
    "examples": [{"threshold_credits": "500.00", "target_credits": "2000.00", "monthly_limit_usd": "200.00"}],
})
AUTO_TOP_UP_ATTEMPT: Schema = _object({
    "at": INSTANT_OUT,
    "outcome": {"type": "string", "enum": [str(o) for o in AttemptOutcome],
                "description": "pending (being charged, or Stripe's webhook awaited), succeeded, failed (declined "
                "or needs the customer), skipped_monthly_limit, canceled (the card was removed before the "
                "charge was sent)."},
    "amount_usd": AMOUNT_OUT,
    "top_up_id": {**TEXT_OR_NULL, "description": "The automatic top-up; null for a skip."},
    "payment_intent_id": {**TEXT_OR_NULL, "description": "Its PaymentIntent, once Stripe made one."},
    "error_code": {**TEXT_OR_NULL, "description": "Stripe's code for a failure (card_declined, "
                   "authentication_required, ...)."},
    "error": {**TEXT_OR_NULL, "description": "What Stripe said, or why it was skipped."},
})
AUTO_TOP_UP = named("AutoTopUp", _object({
    "enabled": {"type": "boolean", "description": "false once disabled after failures."},
    "threshold_credits": AMOUNT_OUT,
    "target_credits": {**AMOUNT_OR_NULL, "description": "Tops up to this; null for a fixed amount."},
    "amount_usd": {**AMOUNT_OR_NULL, "description": "A fixed amount each time; null for a target."},
    "monthly_limit_usd": {**AMOUNT_OR_NULL, "description": "null: no monthly limit."},
    "status": {"type": "string", "enum": [str(s) for s in AutoTopUpStatus],
               "description": "active; paused_no_payment_method (no saved card); disabled_after_failures (three "
               "in a row: until a card is saved or the rule is put again)."},
    "consecutive_failures": {"type": "integer", "minimum": 0},
    "charged_this_month_usd": {**AMOUNT_OUT, "description": "Automatic top-ups this calendar month (UTC), pending "
                               "or paid: what counts against the monthly limit."},
    "last_attempt": {**AUTO_TOP_UP_ATTEMPT, "type": ["object", "null"],
                     "description": "The last thing the rule did; null before it did anything."},
}, description="A wallet's automatic top-up rule."))
HEALTH = named("Health", _object({"status": {"const": "ok"}}))
READY = named("Ready", _object({"status": {"const": "ready"}}))
OPENAPI_DOCUMENT: Schema = {"type": "object", "required": ["openapi", "paths"],
                            "description": "This document (OpenAPI 3.1)."}
TEXT: Schema = {"type": "string"}


# -- validation -----------------------------------------------------------------------------------

# Ours, not the `jsonschema` package (tried for issue 10): keeping these messages and this order of
# checks on top of it took more lines (113 against 85 here) and made `validate` 4-9x slower (a spend
# body: 34 us against 7 us); tests/e2e/test_openapi.py checks this one against a JSON Schema validator.
# What `validate` enforces; the value keywords beside them are documentation (the core checks values).
STRUCTURAL = frozenset({"type", "properties", "required", "additionalProperties", "items", "const"})
ANNOTATIONS = frozenset({
    "description", "examples", "title", "format", "pattern", "minLength", "maxLength", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "maxProperties", "propertyNames", "minItems", "maxItems", "enum",
})
_TYPE_WORDS = {
    "object": "a JSON object", "array": "an array", "string": "a string", "integer": "a whole number",
    "number": "a number", "boolean": "true or false", "null": "null",
}


_KIND_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (), "null": (type(None),),
    "integer": (int,),
}
_NUMBER_TYPES: tuple[type, ...] = (int, float, Decimal)  # "number" (and any other word)


def _name(key: str) -> str:
    """A property name from the request, safe to echo: short, and escaped when it is not plain."""
    plain = key.isascii() and key.isprintable() and len(key) <= 40 and '"' not in key
    return key if plain else json.dumps(key[:40])


class _Prepared:
    """What `validate` reads from one schema, read once (issue 14: the same walk, the same checks in the
    same order and the same messages, ~2x faster than reading the dict on every request)."""

    __slots__ = ("booleans", "extra", "items", "kinds", "properties", "required", "schema", "sub_default", "types")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        kinds = schema.get("type")
        self.kinds: list[str] | None = None if kinds is None else [kinds] if isinstance(kinds, str) else list(kinds)
        # A bool is of the schema's type only when it admits "boolean" (true is no integer here); any
        # other value when it is an instance of one of the types' classes.
        self.booleans = self.kinds is not None and "boolean" in self.kinds
        self.types = tuple(t for k in self.kinds or () for t in _KIND_TYPES.get(k, _NUMBER_TYPES))
        self.properties: dict[str, Schema] = schema.get("properties", {})
        self.extra = schema.get("additionalProperties", True)
        self.sub_default = self.extra if isinstance(self.extra, dict) else None
        self.required: tuple[str, ...] = tuple(schema.get("required", ()))
        items = schema.get("items")
        self.items = items if isinstance(items, dict) else None

    def type_error(self, where: str) -> InvalidInput:
        assert self.kinds is not None
        words = " or ".join(_TYPE_WORDS[k] for k in self.kinds if k != "null")
        hint = self.schema.get("description", "")
        shown = f": {hint}" if hint and "properties" not in self.schema else ""
        return InvalidInput(where, f"must be {words}{shown}")

    def check(self, value: object, where: str) -> None:
        if self.kinds is not None:
            if not (self.booleans if isinstance(value, bool) else isinstance(value, self.types)):
                raise self.type_error(where)
        if isinstance(value, str):
            if _UNSAFE.search(value):
                raise InvalidInput(where, "must not contain control, line-separator or bidirectional-override "
                                   "characters")
        if "const" in self.schema and value != self.schema["const"]:
            raise InvalidInput(where, f"must be {json.dumps(self.schema['const'])}")
        if isinstance(value, dict):
            self._check_object(value, where)
        elif isinstance(value, list) and self.items is not None:
            items = _prepared(self.items)
            for index, item in enumerate(value):
                items.check(item, f"{where}[{index}]")

    def _check_object(self, value: dict[Any, Any], where: str) -> None:
        properties = self.properties
        prefix = "" if where == "body" else f"{where}."
        if self.extra is False:
            unknown = sorted(k for k in value if k not in properties)
            if unknown:
                raise InvalidInput(where, f"has unknown field(s): {', '.join(_name(k) for k in unknown)}"[:240])
        for name in self.required:
            if name not in value:
                raise InvalidInput(f"{prefix}{name}", "is required")
        for key, item in value.items():
            sub = properties.get(key, self.sub_default)
            if _UNSAFE.search(key):
                raise InvalidInput(where, "must not have names with control, line-separator or "
                                   "bidirectional-override characters")
            if sub is not None:
                _prepared(sub).check(item, f"{prefix}{_name(key)}")


_PREPARED: dict[int, _Prepared] = {}  # id(schema) -> it prepared; the schemas are this module's constants
_MAX_PREPARED = 512  # past this (schemas made on the fly), a schema is prepared on each call instead


def _prepared(schema: Schema) -> _Prepared:
    found = _PREPARED.get(id(schema))
    if found is not None and found.schema is schema:
        return found
    prepared = _Prepared(schema)
    if len(_PREPARED) < _MAX_PREPARED:
        _PREPARED[id(schema)] = prepared  # it holds the schema, so the id is not reused meanwhile
    return prepared


def validate(value: object, schema: Schema, where: str = "body") -> None:
    """Raise InvalidInput (422) naming the first place where `value` breaks `schema`'s structure."""
    _prepared(schema).check(value, where)


def keywords(schema: object) -> set[str]:
    """Every keyword used anywhere in `schema` (to prove `validate` understands or ignores each)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, sub in schema.items():
            found.add(key)
            if key == "properties":
                for prop in sub.values():
                    found |= keywords(prop)
            elif key in ("additionalProperties", "items", "propertyNames"):
                found |= keywords(sub)
    return found
