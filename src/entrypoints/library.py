"""The wallet in-process: the same use cases the REST app calls, as plain method calls.

    from entrypoints.library import open_wallet
    wallet = open_wallet()                 # settings from the environment, migrations applied; close() ends it
    top_up = wallet.top_up("user-1", "10.00")
    wallet.grant("user-1", "5.00", reason="welcome bonus", granted_by="support@example.com")
    wallet.spend("user-1", "1.50", idempotency_key="order-7", reason="export")
    hold = wallet.hold("user-1", "2.00", idempotency_key="job-9", reason="render")
    wallet.capture(hold.hold_id, "1.25")   # the rest goes back
    wallet.balance("user-1")               # Decimal('2.25')
    wallet.wallet("user-1").debt           # Credits: what refunds/disputes of spent credits left owing
    wallet.events("pi_...")                # the Stripe events received about a payment, oldest first
    wallet.reconcile(dry_run=True)         # what webhooks missed, compared with Stripe (see docs/payments.md)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import InvalidInput
from wallet_core.ids import has_control_characters
from wallet_core.ledger import WalletView
from wallet_core.money import Credits
from wallet_core.payments import PaymentIntent
from wallet_core.ports import LedgerAudit, PaymentGateway, StoredEvent, UnitOfWorkFactory
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import (
    ExpiryReport,
    GrantResult,
    HistoryPage,
    HoldResult,
    LedgerCheck,
    ReconcileReport,
    SpendResult,
    TopUpResult,
    Violation,
    WebhookOutcome,
    apply_payment_event,
    capture_hold,
    check_ledger,
    expire_credits,
    grant_credits,
    list_transactions,
    place_hold,
    read_wallet,
    reconcile_payments,
    release_hold,
    request_top_up,
    spend_credits,
)

if TYPE_CHECKING:
    from entrypoints.container import Container

MAX_PAYMENT_INTENT_ID = 255


@dataclass(frozen=True)
class Balance(WalletView):
    """The wallet as a user sees it. `balance` goes negative when Stripe took back (refund, lost or
    open dispute) credits the user had already spent; `debt` is then what is owed (else 0), and
    spending is refused until new credits repay it."""

    @property
    def debt(self) -> Credits:
        return Credits(max(0, -self.balance.minor))

    @classmethod
    def of(cls, view: WalletView) -> Balance:
        return cls(**{f.name: getattr(view, f.name) for f in fields(view)})


def check_payment_intent_id(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_PAYMENT_INTENT_ID
        or value != value.strip()
        or has_control_characters(value)
    ):
        raise InvalidInput("payment_intent_id", "must be a Stripe PaymentIntent id, e.g. pi_3N...")
    return value


class Wallet:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        gateway: PaymentGateway,
        policy: TopUpPolicy,
        clock: Clock = utc_now,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        self._uow = uow
        self._gateway = gateway
        self.policy = policy
        self._now = clock
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

    # -- buying credits ------------------------------------------------------------------------

    def top_up(self, user_id: str, amount_usd: object, *, idempotency_key: str | None = None) -> TopUpResult:
        """Start buying credits: returns the PaymentIntent's client secret for the buyer's browser."""
        return request_top_up(
            user_id=user_id,
            amount_usd=amount_usd,
            policy=self.policy,
            gateway=self._gateway,
            uow=self._uow,
            idempotency_key=idempotency_key,
            now=self._now,
        )

    def handle_stripe_webhook(self, payload: bytes, signature_header: str | None) -> WebhookOutcome:
        """Verify and apply a Stripe webhook delivery (the raw body and the Stripe-Signature header)."""
        event = self._gateway.parse_webhook(payload, signature_header)
        return apply_payment_event(event, uow=self._uow, gateway=self._gateway, now=self._now)

    def grant(
        self,
        user_id: str,
        credits: object,
        *,
        reason: str,
        granted_by: str,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
    ) -> GrantResult:
        """Promotional credits by hand; with `expires_at` (timezone-aware) they stop counting then."""
        return grant_credits(
            user_id=user_id,
            credits=credits,
            reason=reason,
            granted_by=granted_by,
            uow=self._uow,
            idempotency_key=idempotency_key,
            expires_at=expires_at,
            now=self._now,
        )

    # -- using credits -------------------------------------------------------------------------

    def spend(
        self,
        user_id: str,
        credits: object,
        *,
        idempotency_key: str | None,
        reason: str,
        metadata: dict[str, str] | None = None,
        actor: str = "library",
    ) -> SpendResult:
        """Use credits up now. Raises InsufficientCredits (nothing written) when they do not cover it.
        The key is required (None raises InvalidInput); the same key and request again returns the
        first result (`replayed`), the same key for another request raises IdempotencyConflict."""
        return spend_credits(
            user_id=user_id,
            credits=credits,
            idempotency_key=idempotency_key,
            reason=reason,
            actor=actor,
            uow=self._uow,
            metadata=metadata,
            now=self._now,
        )

    def hold(
        self,
        user_id: str,
        credits: object,
        *,
        idempotency_key: str | None,
        reason: str,
        expires_in_seconds: int | None = None,
        metadata: dict[str, str] | None = None,
        actor: str = "library",
    ) -> HoldResult:
        """Reserve credits before the cost is known; capture or release the hold later."""
        return place_hold(
            user_id=user_id,
            credits=credits,
            idempotency_key=idempotency_key,
            reason=reason,
            actor=actor,
            uow=self._uow,
            expires_in_seconds=expires_in_seconds,
            metadata=metadata,
            now=self._now,
        )

    def capture(
        self, hold_id: str, credits: object = None, *, actor: str = "library", reason: str | None = None
    ) -> HoldResult:
        """Spend `credits` of an open hold (all of it when None) and give the rest back."""
        return capture_hold(hold_id=hold_id, credits=credits, actor=actor, uow=self._uow, reason=reason, now=self._now)

    def release(self, hold_id: str, *, actor: str = "library", reason: str | None = None) -> HoldResult:
        """Give an open hold's credits back."""
        return release_hold(hold_id=hold_id, actor=actor, uow=self._uow, reason=reason, now=self._now)

    # -- operations ----------------------------------------------------------------------------

    def expire(self) -> ExpiryReport:
        """Book out promotional credits past their expiry and release holds past theirs."""
        return expire_credits(uow=self._uow, now=self._now)

    def verify(self) -> list[Violation]:
        """Every broken ledger invariant; an empty list means the ledger is sound."""
        return self.check_ledger().violations

    def check_ledger(self) -> LedgerCheck:
        """One audit of the ledger in one snapshot: the accounts it checked and every broken invariant."""
        return check_ledger(uow=self._uow)

    def audit(self) -> LedgerAudit:
        """The ledger's accounts as stored and as their postings and lots add up (what verify checks)."""
        with self._uow(read_only=True) as tx:
            return tx.ledger.audit()

    def events(self, payment_intent_id: str) -> list[StoredEvent]:
        """Every Stripe event received about one PaymentIntent (webhooks and reconcile repairs),
        oldest first, each with what it did: support's answer to "what happened to this payment?"."""
        payment_intent_id = check_payment_intent_id(payment_intent_id)
        with self._uow(read_only=True) as tx:
            return tx.ledger.events_for_payment_intent(payment_intent_id)

    def reconcile(
        self,
        since: datetime | None = None,
        *,
        dry_run: bool = False,
        progress: Callable[[PaymentIntent], None] | None = None,
    ) -> ReconcileReport:
        """Compare Stripe's PaymentIntents (created after `since`, all when None) and their refunds
        with the ledger and apply what webhooks missed; with `dry_run`, only say what it would do.
        Idempotent and safe while the server runs. `progress` is called with each PaymentIntent
        listed. Raises PaymentsNotConfigured or PaymentGatewayFailed (repairs made before stay)."""
        if since is not None and since.utcoffset() is None:
            raise InvalidInput("since", "needs a timezone")
        return reconcile_payments(
            uow=self._uow, gateway=self._gateway, since=since, dry_run=dry_run, now=self._now, progress=progress
        )

    # -- reading -------------------------------------------------------------------------------

    def wallet(self, user_id: str, *, recent: int = 20) -> Balance:
        """Spendable and held balances, the debt (what refunds or disputes of spent credits left owing),
        and the `recent` newest transactions."""
        return Balance.of(read_wallet(user_id=user_id, uow=self._uow, recent=recent, now=self._now))

    def balance(self, user_id: str) -> Decimal:
        """The spendable balance (held credits and promotional credits past expiry do not count);
        negative while the wallet is in debt."""
        return self.wallet(user_id, recent=0).balance.decimal

    def transactions(self, user_id: str, limit: int | str = 20, cursor: str | None = None) -> HistoryPage:
        """One page of history (1-100 rows), newest first; pass `next_cursor` back for the next page."""
        return list_transactions(user_id=user_id, uow=self._uow, limit=limit, cursor=cursor)


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
