"""Domain errors. The HTTP layer maps each to one status code in one place."""

from __future__ import annotations


class WalletError(Exception):
    """Base of every error the wallet raises on purpose."""

    title = "Wallet error"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidInput(WalletError):
    """A request value is malformed or outside the policy (HTTP 422)."""

    title = "Invalid input"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


class NotFound(WalletError):
    title = "Not found"


class IdempotencyConflict(WalletError):
    """The idempotency key was used before for a different request (HTTP 409)."""

    title = "Idempotency key reused"


class PaymentsNotConfigured(WalletError):
    """Stripe keys are missing, so no payment can be taken (HTTP 503)."""

    title = "Payments not configured"


class WebhooksNotConfigured(WalletError):
    """No webhook signing secret is set and unsigned events are not allowed (HTTP 503)."""

    title = "Webhooks not configured"


class PaymentGatewayFailed(WalletError):
    """Stripe failed or could not be reached; nothing was recorded (HTTP 502).

    `outcome_unknown`: Stripe may have done what it was asked (a timeout, a lost connection, a 5xx);
    False when it refused the request for sure (a 4xx)."""

    title = "Payment provider error"

    def __init__(self, description: str, *, outcome_unknown: bool = True) -> None:
        super().__init__(description)
        self.outcome_unknown = outcome_unknown


class InvalidWebhook(WalletError):
    """The webhook signature is missing, wrong or stale, or the payload is unreadable (HTTP 400)."""

    title = "Invalid webhook"


class DuplicateReference(WalletError):
    """A ledger entry with this reference id exists already: the movement happened before."""

    title = "Duplicate reference"


class DuplicateTopUp(WalletError):
    """A top-up with this idempotency key exists already for this user."""

    title = "Duplicate top-up"


class StorageUnavailable(WalletError):
    """The database cannot be reached or is locked; nothing was written (HTTP 503)."""

    title = "Storage unavailable"


class InsufficientCredits(WalletError):
    """The spendable balance does not cover the amount; nothing was written (HTTP 409)."""

    title = "Insufficient credits"


class HoldNotOpen(WalletError):
    """The hold was captured, released or has expired, so it cannot change now (HTTP 409)."""

    title = "Hold not open"


class PaymentGatewayBusy(PaymentGatewayFailed):
    """Every slot for calls to Stripe is taken (Stripe is slow); nothing was sent or recorded (HTTP 503)."""

    title = "Payment provider busy"


class TooManyTopUps(WalletError):
    """The user started too many top-ups (too many unpaid, or too many lately); nothing was written
    (HTTP 429 with Retry-After). Usually Stripe was not asked; when concurrent requests of the user
    filled the limit while it was, the intent made for this one is canceled (without Idempotency-Key)."""

    title = "Too many top-ups"

    def __init__(self, description: str, retry_after_seconds: int) -> None:
        super().__init__(f"{description}; retry in {retry_after_seconds} seconds")
        self.retry_after_seconds = retry_after_seconds


class NotRevertible(WalletError):
    """The transaction may not be reverted (already reverted, itself a revert, a Stripe movement, or
    nothing left to take back); nothing was written (HTTP 409)."""

    title = "Not revertible"


class PaymentDeclined(WalletError):
    """Stripe refused to charge the card: declined, or the payment needs the customer (authentication
    required), so it cannot succeed off-session. Not an outage: sending it again would be refused again.
    `code` is Stripe's (card_declined, authentication_required, expired_card, ...); `payment_intent_id`
    the intent Stripe made for the attempt, when it says (HTTP 402)."""

    title = "Payment declined"

    def __init__(self, description: str, *, code: str | None = None, payment_intent_id: str | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.payment_intent_id = payment_intent_id


class AutoTopUpInFlight(WalletError):
    """The wallet has an automatic top-up in flight already: a second one is never recorded (HTTP 409)."""

    title = "Automatic top-up in flight"


class CardSetupIncomplete(WalletError):
    """The SetupIntent has not succeeded (the user has not confirmed a card yet), or its card was
    removed since; nothing was saved (HTTP 409)."""

    title = "Card setup not complete"
