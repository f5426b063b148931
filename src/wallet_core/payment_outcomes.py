"""What applying one Stripe event did: the `outcome` a webhook answers and the event log keeps.

A str-valued enum, so each member is its own word in JSON and in the event log (`granted`,
`duplicate`, ...); docs/payments.md says when each is given. The log stores the plain value, so it
can still hold a word an older or newer wallet wrote."""

from __future__ import annotations

from enum import StrEnum


class PaymentEventOutcome(StrEnum):
    GRANTED = "granted"  # payment_intent.succeeded granted the top-up's credits
    ALREADY_GRANTED = "already_granted"  # succeeded again (another event id, or a concurrent delivery won)
    NEEDS_REVIEW = "needs_review"  # Stripe reported an amount or currency the top-up did not ask for
    FAILED = "failed"  # the payment attempt failed; the buyer may still retry
    CANCELED = "canceled"  # canceled; never grants
    REFUNDED = "refunded"  # at least one refund took credits back
    ALREADY_REFUNDED = "already_refunded"  # every refund listed was booked before (or is not succeeded)
    DISPUTE_OPENED = "dispute_opened"  # the disputed credits were frozen
    DISPUTE_OPEN = "dispute_open"  # an update of a dispute still open: nothing moves
    DISPUTE_WON = "dispute_won"  # the frozen credits came back
    DISPUTE_LOST = "dispute_lost"  # the frozen (or, never seen open, the disputed) credits are gone
    IGNORED = "ignored"  # not an event the wallet acts on, or not about money that arrived
    IGNORED_LATE = "ignored_late"  # news older than what already happened (status only moves forward)
    UNKNOWN_TOP_UP = "unknown_top_up"  # names a top-up of ours that this wallet has no record of
    DUPLICATE = "duplicate"  # this event id (or this dispute's close) was applied before; nothing moves
    CARD_SAVED = "card_saved"  # setup_intent.succeeded saved the user's card (replacing an earlier one)
    CARD_ALREADY_SAVED = "card_already_saved"  # setup_intent.succeeded for the card saved already
