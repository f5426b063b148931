"""The wallet in-process: the same use cases the REST app calls, as plain method calls.

    from entrypoints.library import open_wallet
    wallet = open_wallet()                 # settings from the environment, migrations applied; close() ends it
    top_up = wallet.top_up("user-1", "10.00")
    wallet.grant("user-1", "5.00", reason="welcome bonus", granted_by="support@example.com")
    wallet.balance("user-1")               # Decimal('5.00')
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from wallet_core.ledger import WalletView
from wallet_core.ports import PaymentGateway, UnitOfWorkFactory
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import (
    GrantResult,
    TopUpResult,
    WebhookOutcome,
    apply_payment_event,
    grant_credits,
    read_wallet,
    request_top_up,
)

if TYPE_CHECKING:
    from entrypoints.container import Container


class Wallet:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        gateway: PaymentGateway,
        policy: TopUpPolicy,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        self._uow = uow
        self._gateway = gateway
        self.policy = policy
        self._on_close = on_close

    def close(self) -> None:
        """Release the database connections (a Wallet from open_wallet owns them)."""
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> Wallet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Wallet(gateway={self._gateway!r}, policy={self.policy!r})"

    def top_up(self, user_id: str, amount_usd: object, *, idempotency_key: str | None = None) -> TopUpResult:
        """Start buying credits: returns the PaymentIntent's client secret for the buyer's browser."""
        return request_top_up(
            user_id=user_id,
            amount_usd=amount_usd,
            policy=self.policy,
            gateway=self._gateway,
            uow=self._uow,
            idempotency_key=idempotency_key,
        )

    def handle_stripe_webhook(self, payload: bytes, signature_header: str | None) -> WebhookOutcome:
        """Verify and apply a Stripe webhook delivery (the raw body and the Stripe-Signature header)."""
        event = self._gateway.parse_webhook(payload, signature_header)
        return apply_payment_event(event, uow=self._uow)

    def grant(
        self,
        user_id: str,
        credits: object,
        *,
        reason: str,
        granted_by: str,
        idempotency_key: str | None = None,
    ) -> GrantResult:
        return grant_credits(
            user_id=user_id,
            credits=credits,
            reason=reason,
            granted_by=granted_by,
            uow=self._uow,
            idempotency_key=idempotency_key,
        )

    def wallet(self, user_id: str, *, recent: int = 20) -> WalletView:
        return read_wallet(user_id=user_id, uow=self._uow, recent=recent)

    def balance(self, user_id: str) -> Decimal:
        return self.wallet(user_id, recent=0).balance.decimal


def open_wallet(container: Container | None = None, *, migrate: bool = True) -> Wallet:
    """A Wallet wired from the environment (or from `container`), with the schema migrated."""
    from entrypoints.container import Container
    from entrypoints.container import migrate as migrate_schema

    owned = container is None
    container = container or Container()
    if migrate:
        migrate_schema(container)
    wallet = container.wallet()
    if owned:
        wallet._on_close = container.shutdown_resources
    return wallet
