"""The wallet as one object: the application service every entry point calls.

It is built from ports only (a unit-of-work factory, a payment gateway, the top-up policy, a clock);
the composition root (entrypoints.container) chooses the adapters, and `entrypoints.library.open_wallet`
is the public way to get one wired from the environment. Each method is one use case, called as a
function with the ports it needs; the rules themselves live in the domain and the use cases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import InvalidInput, WebhooksNotConfigured
from wallet_core.ids import check_payment_intent_id
from wallet_core.ledger import DEFAULT_PRIORITY, CreditKind, WalletView
from wallet_core.payments import PaymentEvent, PaymentIntent
from wallet_core.ports import LedgerAudit, PaymentGateway, StoredEvent, UnitOfWorkFactory, WebhookSender
from wallet_core.saved_cards import SavedCard
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import (
    AlertView,
    BatchItemResult,
    CardSetup,
    EventPage,
    ExpiryReport,
    GrantResult,
    HistoryPage,
    HoldResult,
    LedgerCheck,
    ReconcileReport,
    RevertResult,
    SpendResult,
    TopUpResult,
    Violation,
    WebhookOutcome,
    apply_payment_event,
    capture_hold,
    check_ledger,
    clear_alert,
    complete_card_setup,
    expire_credits,
    forget_card,
    get_alert,
    grant_credits,
    list_events,
    list_transactions,
    place_hold,
    read_wallet,
    reconcile_payments,
    release_hold,
    request_top_up,
    revert_transaction,
    saved_card,
    set_alert,
    spend_credits,
    spend_many,
    start_card_setup,
)
from wallet_core.use_cases.apply_payment_event import event_wallet, groupable
from wallet_core.use_cases.auto_top_up import (
    AutoTopUpView,
    ChargeRound,
    charge_auto_top_ups,
    delete_rule,
    get_rule,
    put_rule,
)
from wallet_core.use_cases.expire_credits import BATCH as EXPIRY_BATCH
from wallet_core.use_cases.holds import hold_wallet
from wallet_core.use_cases.spend_queue import SpendQueue
from wallet_core.use_cases.webhook_delivery import (
    DeliveryRound,
    add_endpoint,
    deliver_webhooks,
    list_deliveries,
    list_endpoints,
    redeliver,
    remove_endpoint,
    rotate_secret,
)
from wallet_core.use_cases.write_group import WalletOf, WriteGroup
from wallet_core.webhooks_out import DEFAULT_RETRY_SECONDS, Delivery, WebhookEndpoint

R = TypeVar("R")


class Wallet:
    """The application service: every use case as a method, on the ports it was built with. Each
    entry point (the REST app, the CLI, the in-process library) and the unit tests call this, so a
    request field travels schema -> service -> use case and nothing else needs to know it."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        gateway: PaymentGateway,
        policy: TopUpPolicy,
        clock: Clock = utc_now,
        on_close: Callable[[], object] | None = None,
        webhook_sender: WebhookSender | None = None,
        webhook_retry_seconds: tuple[int, ...] = DEFAULT_RETRY_SECONDS,
        allow_private_webhook_urls: bool = False,
        group_commit: bool = False,
        group_writes: bool | None = None,
    ) -> None:
        self._uow = uow
        self._gateway = gateway
        self.policy = policy
        self._now = clock
        self._on_close = on_close
        self._sender = webhook_sender
        self.webhook_retry_seconds = webhook_retry_seconds
        self.allow_private_webhook_urls = allow_private_webhook_urls
        # Concurrent single spends of this process share a unit of work and a commit (use_cases.spend_queue);
        # with `group_writes` (None: as group_commit), so do grants, holds, captures, releases and payment
        # events (use_cases.write_group).
        self._spends = SpendQueue(uow, now=clock) if group_commit else None
        grouped = group_commit if group_writes is None else group_writes
        self._writes = WriteGroup(uow) if grouped else None

    def _write(self, run: Callable[[UnitOfWorkFactory], R], *, wallet: WalletOf = None) -> R:
        """`run` on a unit of work of its own, or with group commit on, in one shared with the writes
        made at the same moment in other threads (use_cases.write_group; the answer is the same)."""
        if self._writes is None:
            return run(self._uow)
        return self._writes.run(run, wallet=wallet)

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

    def put_auto_top_up(
        self,
        user_id: str,
        threshold_credits: object,
        *,
        target_credits: object = None,
        amount_usd: object = None,
        monthly_limit_usd: object = None,
    ) -> AutoTopUpView:
        """Set the wallet's automatic top-up rule: when a change leaves it below `threshold_credits`, its
        saved card is charged off-session for the credits missing to `target_credits` (or `amount_usd`),
        at most `monthly_limit_usd` a calendar month (UTC). Putting it again re-enables a rule disabled
        after failures. Charges nothing now. Raises InvalidInput naming the field at fault."""
        return put_rule(
            user_id=user_id,
            threshold_credits=threshold_credits,
            target_credits=target_credits,
            amount_usd=amount_usd,
            monthly_limit_usd=monthly_limit_usd,
            policy=self.policy,
            uow=self._uow,
            now=self._now,
        )

    def auto_top_up(self, user_id: str) -> AutoTopUpView:
        """The wallet's automatic top-up rule, its status and what it charged this month. Raises NotFound."""
        return get_rule(user_id=user_id, uow=self._uow, now=self._now)

    def remove_auto_top_up(self, user_id: str) -> None:
        """Remove the wallet's automatic top-up rule (a charge not yet sent is not sent). Raises NotFound."""
        delete_rule(user_id=user_id, uow=self._uow, now=self._now)

    def charge_auto_top_ups(self, *, limit: int = 10) -> ChargeRound:
        """One round of the worker's charging: claim the automatic top-ups due, charge each saved card
        off-session, record what Stripe said (the credits come with its webhook)."""
        return charge_auto_top_ups(uow=self._uow, gateway=self._gateway, now=self._now, limit=limit)

    def handle_stripe_webhook(self, payload: bytes, signature_header: str | None) -> WebhookOutcome:
        """Verify and apply a Stripe webhook delivery (the raw body and the Stripe-Signature header)."""
        return self.apply_payment_event(self._gateway.parse_webhook(payload, signature_header))

    def apply_payment_event(self, event: PaymentEvent) -> WebhookOutcome:
        """Apply a payment event the gateway already verified (handle_stripe_webhook does both)."""
        def apply(uow: UnitOfWorkFactory) -> WebhookOutcome:
            return apply_payment_event(event, uow=uow, gateway=self._gateway, now=self._now)

        if not groupable(event):
            return apply(self._uow)  # it may ask Stripe: never inside a group's transaction
        return self._write(apply, wallet=event_wallet(event))

    # -- saving a card (for automatic top-up) ----------------------------------------------------

    def setup_card(self, user_id: str) -> CardSetup:
        """Start saving a card for payments made without the user: the user's Stripe Customer (made
        once) and a new SetupIntent (usage=off_session) whose client secret the browser confirms with
        Stripe.js (confirmCardSetup). Raises PaymentsNotConfigured or PaymentGatewayFailed."""
        return start_card_setup(user_id=user_id, gateway=self._gateway, uow=self._uow, now=self._now)

    def complete_card_setup(self, user_id: str, setup_intent_id: str) -> SavedCard:
        """Save the card of the user's SetupIntent once Stripe says it succeeded (asked here; the
        setup_intent.succeeded webhook does the same), replacing and detaching an earlier card; the
        card saved already is answered as it is. Raises NotFound (not the user's), CardSetupIncomplete
        (not succeeded, or its card removed since) or PaymentGatewayFailed."""
        return complete_card_setup(
            user_id=user_id, setup_intent_id=setup_intent_id, gateway=self._gateway, uow=self._uow, now=self._now
        )

    def saved_card(self, user_id: str) -> SavedCard | None:
        """The user's saved card (brand, last four digits, expiry; the card itself stays at Stripe)."""
        return saved_card(user_id=user_id, uow=self._uow)

    def forget_card(self, user_id: str) -> SavedCard | None:
        """Forget the user's saved card and detach it at Stripe (best effort); the card forgotten, or
        None if there was none."""
        return forget_card(user_id=user_id, gateway=self._gateway, uow=self._uow)

    def grant(
        self,
        user_id: str,
        credits: object,
        *,
        reason: str,
        granted_by: str,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        effective_at: datetime | None = None,
        priority: int | str = DEFAULT_PRIORITY,
        category: str = CreditKind.PROMOTIONAL.value,
    ) -> GrantResult:
        """Credits by hand: `category` "promotional" (default) or "paid" (money received outside
        Stripe); with `expires_at` (timezone-aware) they stop counting then; with `effective_at` they
        count only from then (pending until; at most a year ahead); `priority` 0-100 (default 50):
        lower numbers are spent first among lots of their category."""
        return self._write(
            lambda uow: grant_credits(
                user_id=user_id,
                credits=credits,
                reason=reason,
                granted_by=granted_by,
                uow=uow,
                idempotency_key=idempotency_key,
                expires_at=expires_at,
                effective_at=effective_at,
                priority=priority,
                category=category,
                now=self._now,
            ),
            wallet=user_id,
        )

    def revert(
        self,
        transaction_id: str,
        *,
        reason: str,
        idempotency_key: str | None,
        dry_run: bool = False,
        actor: str = "library",
    ) -> RevertResult:
        """Correct a grant (take back what is unspent), a spend or a capture (give its credits back to
        the lots they came from) with a new transaction that names it. The key is required; `dry_run`
        writes nothing. Raises NotFound, NotRevertible (already reverted, a revert, a Stripe movement,
        nothing left) or IdempotencyConflict."""
        return revert_transaction(
            transaction_id=transaction_id,
            reason=reason,
            idempotency_key=idempotency_key,
            actor=actor,
            uow=self._uow,
            dry_run=dry_run,
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
        first result (`replayed`), the same key for another request raises IdempotencyConflict. With
        group commit on, spends made at the same moment in other threads share its commit; the answer is
        the same."""
        if self._spends is not None:
            return self._spends.spend(
                user_id=user_id,
                credits=credits,
                idempotency_key=idempotency_key,
                reason=reason,
                actor=actor,
                metadata=metadata,
            )
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

    def spend_many(self, items: Iterable[Mapping[str, object]], *, actor: str = "library") -> list[BatchItemResult]:
        """Many spends (1 to 1,000) in one unit of work and one commit: each item a mapping of
        `user_id`, `credits`, `reason`, `idempotency_key` and optional `metadata`, succeeding or failing
        on its own with the rules of `spend`. One result per item, in order, with its `status`: spent,
        replayed (the key was used before, in the batch or earlier, for the same request), conflict (for
        another request), insufficient_credits or invalid (`error.field` names the field). Raises
        InvalidInput for no items or too many, StorageUnavailable when concurrent requests kept taking
        the batch's keys (nothing written; retry)."""
        return spend_many(items=items, actor=actor, uow=self._uow, now=self._now)

    def hold(
        self,
        user_id: str,
        credits: object,
        *,
        idempotency_key: str | None,
        reason: str,
        expires_in_seconds: int | str | None = None,
        metadata: dict[str, str] | None = None,
        actor: str = "library",
    ) -> HoldResult:
        """Reserve credits before the cost is known; capture or release the hold later."""
        return self._write(
            lambda uow: place_hold(
                user_id=user_id,
                credits=credits,
                idempotency_key=idempotency_key,
                reason=reason,
                actor=actor,
                uow=uow,
                expires_in_seconds=expires_in_seconds,
                metadata=metadata,
                now=self._now,
            ),
            wallet=user_id,
        )

    def capture(
        self, hold_id: str, credits: object = None, *, actor: str = "library", reason: str | None = None
    ) -> HoldResult:
        """Spend `credits` of an open hold (all of it when None) and give the rest back."""
        return self._write(
            lambda uow: capture_hold(
                hold_id=hold_id, credits=credits, actor=actor, uow=uow, reason=reason, now=self._now
            ),
            wallet=hold_wallet(hold_id),
        )

    def release(self, hold_id: str, *, actor: str = "library", reason: str | None = None) -> HoldResult:
        """Give an open hold's credits back."""
        return self._write(
            lambda uow: release_hold(hold_id=hold_id, actor=actor, uow=uow, reason=reason, now=self._now),
            wallet=hold_wallet(hold_id),
        )

    # -- operations ----------------------------------------------------------------------------

    def expire(self, *, batch: int = EXPIRY_BATCH) -> ExpiryReport:
        """Book out promotional credits past their expiry and release holds past theirs (`batch` wallets
        or holds per unit of work)."""
        return expire_credits(uow=self._uow, now=self._now, batch=batch)

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
            return tx.events.for_payment_intent(payment_intent_id)

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

    # -- telling the app -----------------------------------------------------------------------

    def events_after(
        self, cursor: str | None = None, *, type: str | None = None, user_id: str | None = None, limit: int | str = 100
    ) -> EventPage:
        """Outbound events after `cursor` (from the start when None), oldest first, at most `limit`
        (1-500), filtered by type and user; pass `next_cursor` back to continue."""
        return list_events(uow=self._uow, after=cursor, type=type, user_id=user_id, limit=limit)

    def set_low_balance_alert(self, user_id: str, low_balance_credits: object) -> AlertView:
        """The wallet's own threshold for wallet.balance_low / wallet.recovered (fires nothing now)."""
        return set_alert(user_id=user_id, low_balance_credits=low_balance_credits, uow=self._uow, now=self._now)

    def low_balance_alert(self, user_id: str) -> AlertView:
        return get_alert(user_id=user_id, uow=self._uow)

    def clear_low_balance_alert(self, user_id: str) -> AlertView:
        """Remove the wallet's own threshold: WALLET_LOW_BALANCE_CREDITS (if set) applies again."""
        return clear_alert(user_id=user_id, uow=self._uow, now=self._now)

    def _webhook_sender(self) -> WebhookSender:
        if self._sender is None:
            raise WebhooksNotConfigured("this wallet was built without a webhook sender")
        return self._sender

    def add_webhook_endpoint(self, url: object, events: object, description: object = None) -> WebhookEndpoint:
        """Subscribe `url` (https://, a public address) to `events` (["*"] or types). The answer holds
        the endpoint's signing secret: shown only here."""
        return add_endpoint(
            url=url,
            events=events,
            description=description,
            uow=self._uow,
            sender=self._webhook_sender(),
            allow_private=self.allow_private_webhook_urls,
            now=self._now,
        )

    def webhook_endpoints(self) -> list[WebhookEndpoint]:
        return list_endpoints(uow=self._uow)

    def remove_webhook_endpoint(self, endpoint_id: str) -> None:
        remove_endpoint(endpoint_id=endpoint_id, uow=self._uow)

    def rotate_webhook_secret(self, endpoint_id: str) -> WebhookEndpoint:
        """A new secret (in the answer, shown only here); the old one keeps signing for 24 hours."""
        return rotate_secret(endpoint_id=endpoint_id, uow=self._uow, now=self._now)

    def webhook_deliveries(
        self, endpoint_id: str, *, status: str | None = None, limit: int | str = 100
    ) -> list[Delivery]:
        return list_deliveries(endpoint_id=endpoint_id, status=status, limit=limit, uow=self._uow)

    def redeliver_event(self, event_id: str) -> int:
        """Queue an event again for every endpoint subscribed to it; returns how many deliveries."""
        return redeliver(event_id=event_id, uow=self._uow, now=self._now)

    def deliver_webhooks(self, *, limit: int = 50) -> DeliveryRound:
        """One round of the delivery worker: publish new events, send the due deliveries."""
        return deliver_webhooks(
            uow=self._uow,
            sender=self._webhook_sender(),
            schedule=self.webhook_retry_seconds,
            now=self._now,
            limit=limit,
        )

    # -- reading -------------------------------------------------------------------------------

    def wallet(self, user_id: str, *, recent: int = 20) -> WalletView:
        """Spendable and held balances, the debt (what refunds or disputes of spent credits left owing),
        pending credits, spendable credits by category, the live lots in spending order, and the
        `recent` newest transactions."""
        return read_wallet(user_id=user_id, uow=self._uow, recent=recent, now=self._now)

    def balance(self, user_id: str) -> Decimal:
        """The spendable balance (held credits, credits past expiry and pending credits do not count);
        negative while the wallet is in debt."""
        return read_wallet(user_id=user_id, uow=self._uow, recent=0, now=self._now, lots=False).balance.decimal

    def transactions(self, user_id: str, limit: int | str = 20, cursor: str | None = None) -> HistoryPage:
        """One page of history (1-100 rows), newest first; pass `next_cursor` back for the next page."""
        return list_transactions(user_id=user_id, uow=self._uow, limit=limit, cursor=cursor)
