"""The ports: what the core needs from the outside world, and nothing about how it is done."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from wallet_core.ledger import CreditTransaction, NewTransaction
from wallet_core.money import Credits
from wallet_core.payments import PaymentEvent, PaymentIntent, PaymentIntentRequest
from wallet_core.topups import TopUp, TopUpStatus


class PaymentGateway(Protocol):
    """Stripe, or anything that takes card payments the same way."""

    def create_payment_intent(self, request: PaymentIntentRequest) -> PaymentIntent:
        """Create an intent to collect `request.amount`. Raises PaymentsNotConfigured or
        PaymentGatewayFailed. The same idempotency key returns the same intent."""
        ...

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        """Look up an intent. Raises PaymentsNotConfigured, PaymentGatewayFailed or NotFound."""
        ...

    def parse_webhook(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        """Verify the signature over the raw payload and parse it. Raises InvalidWebhook or
        WebhooksNotConfigured."""
        ...


class LedgerRepository(Protocol):
    """Wallets, credit transactions and top-ups, as seen inside one unit of work."""

    def balance(self, user_id: str) -> Credits: ...

    def recent_transactions(self, user_id: str, limit: int) -> list[CreditTransaction]: ...

    def find_transaction_by_reference(self, reference_id: str) -> CreditTransaction | None: ...

    def post(self, entry: NewTransaction) -> CreditTransaction:
        """Book `entry` and move the wallet balance by its credits, atomically.

        Raises DuplicateReference (and changes nothing) when the reference id was booked before;
        the caller must then roll the unit of work back."""
        ...

    def add_top_up(self, top_up: TopUp) -> None:
        """Raises DuplicateTopUp when the user already has a top-up with that idempotency key."""
        ...

    def get_top_up(self, top_up_id: str) -> TopUp | None: ...

    def find_top_up_by_payment_intent(self, payment_intent_id: str) -> TopUp | None: ...

    def find_top_up_by_idempotency_key(self, user_id: str, key: str) -> TopUp | None: ...

    def set_top_up_status(self, top_up_id: str, status: TopUpStatus) -> None: ...


class UnitOfWork(Protocol):
    """One database transaction. Leaving the block without commit() rolls everything back.

    Raises StorageUnavailable when the store is down or locked."""

    ledger: LedgerRepository

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...
