"""The ports: what the core needs from the outside world, and nothing about how it is done.

PaymentGateway (Stripe), and the unit of work with its repositories: LedgerRepository (wallets, lots,
transactions, postings), HoldRepository, TopUpRepository, PaymentEventLog and SavedCards. tests/typecheck_ports.py
makes mypy prove that every adapter and test double fits."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol

from wallet_core.alerts import AlertState
from wallet_core.auto_top_up import AutoCharge, AutoTopUpRule
from wallet_core.holds import Hold, HoldStatus
from wallet_core.ledger import (
    Account,
    Booking,
    CreditTransaction,
    Lot,
    Posting,
    TransactionCursor,
    WalletState,
)
from wallet_core.money import Credits, Usd
from wallet_core.outbound_events import WalletEvent
from wallet_core.payments import (
    Dispute,
    OffSessionCharge,
    PaymentEvent,
    PaymentIntent,
    PaymentIntentRequest,
    Refund,
)
from wallet_core.saved_cards import CardDetails, SavedCard, SetupIntent
from wallet_core.topups import TopUp, TopUpActivity, TopUpPolicy, TopUpStatus
from wallet_core.webhooks_out import Delivery, DeliveryStatus, SendResult, WebhookEndpoint


class PaymentGateway(Protocol):
    """Stripe, or anything that takes card payments the same way."""

    def list_payment_intents(self, created_after: datetime | None = None) -> Iterator[PaymentIntent]:
        """Every PaymentIntent of the account, newest first, back to `created_after` (all when None).
        Raises PaymentsNotConfigured or PaymentGatewayFailed."""
        ...

    def list_refunds(self, payment_intent_id: str) -> list[Refund]:
        """Every refund of one PaymentIntent. Raises PaymentsNotConfigured or PaymentGatewayFailed."""
        ...

    def list_disputes(self, payment_intent_id: str) -> list[Dispute]:
        """Every dispute of one PaymentIntent's charges, as each stands now. Raises
        PaymentsNotConfigured or PaymentGatewayFailed."""
        ...

    def create_payment_intent(self, request: PaymentIntentRequest) -> PaymentIntent:
        """Create an intent to collect `request.amount`. Raises PaymentsNotConfigured or
        PaymentGatewayFailed. The same idempotency key returns the same intent."""
        ...

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        """Look up an intent. Raises PaymentsNotConfigured, PaymentGatewayFailed or NotFound."""
        ...

    def cancel_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        """Cancel an intent nobody has paid (the wallet could not record it), so it can never be paid.
        Raises PaymentsNotConfigured, PaymentGatewayFailed (also when it can no longer be canceled)
        or NotFound."""
        ...

    def charge_off_session(self, request: OffSessionCharge) -> PaymentIntent:
        """Charge the customer's saved payment method now, without the customer: a PaymentIntent with
        customer, payment_method, off_session=true, confirm=true, the request's metadata, made under
        its idempotency key (the same key returns the same intent, or the same refusal). Answers the
        intent (status succeeded, or processing: the webhook tells the end). Raises PaymentDeclined
        when the card is declined or the payment needs the customer (authentication_required): a
        card failure, final for this charge; PaymentGatewayFailed when Stripe failed or could not be
        reached (not the card's fault: send it again later with the same key); PaymentsNotConfigured."""
        ...

    def parse_webhook(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        """Verify the signature over the raw payload and parse it. Raises InvalidWebhook or
        WebhooksNotConfigured."""
        ...

    # -- saving a card (Customers, SetupIntents, PaymentMethods) ---------------------------------
    def create_customer(self, user_id: str, idempotency_key: str) -> str:
        """Create a Customer for the user (metadata: the user id) and return its id. The same
        idempotency key returns the same Customer. Raises PaymentsNotConfigured or PaymentGatewayFailed."""
        ...

    def create_setup_intent(self, customer_id: str, user_id: str, idempotency_key: str) -> SetupIntent:
        """Create a SetupIntent for the customer, to save a card for payments made without the user
        (usage=off_session), with the user id in its metadata. The same idempotency key returns the
        same SetupIntent. Raises PaymentsNotConfigured or PaymentGatewayFailed."""
        ...

    def retrieve_setup_intent(self, setup_intent_id: str) -> SetupIntent:
        """Look up a SetupIntent. Raises PaymentsNotConfigured, PaymentGatewayFailed or NotFound."""
        ...

    def card_details(self, payment_method_id: str) -> CardDetails:
        """Brand, last four digits and expiry of a card PaymentMethod. Raises PaymentsNotConfigured,
        PaymentGatewayFailed (also when it is not a card) or NotFound."""
        ...

    def detach_payment_method(self, payment_method_id: str) -> None:
        """Detach the PaymentMethod from its Customer, so it can never be charged again. Raises
        PaymentsNotConfigured, PaymentGatewayFailed or NotFound."""
        ...


@dataclass(frozen=True)
class AccountAudit:
    """One user account as stored, as its postings add up, and as its lots add up."""

    user_id: str
    account: Account
    stored: Credits
    posted: Credits
    in_lots: Credits
    # What lots in debt owe, as far as refunds and disputes explain it: a lot goes below zero only when
    # they take back credits already spent, and never by more than they took (>= 0).
    debt: Credits = Credits(0)  # noqa: RUF009
    # What lots owe beyond that: an overdraw nothing in the ledger explains (always 0 in a sound ledger).
    unexplained_debt: Credits = Credits(0)  # noqa: RUF009


@dataclass(frozen=True)
class StoredEvent:
    """A Stripe event as the wallet received it, and what it did: support's answer to "what happened
    to this payment?". Stored once per event id."""

    event_id: str
    type: str
    payment_intent_id: str | None
    top_up_id: str | None
    received_at: datetime
    outcome: str
    source: str = "webhook"  # or "reconcile"


@dataclass(frozen=True)
class RevertAudit:
    """A revert, what it posted, and the transaction it names with its postings (None if missing)."""

    revert: CreditTransaction
    revert_postings: list[Posting]
    original: CreditTransaction | None
    original_postings: list[Posting]


@dataclass(frozen=True)
class LedgerAudit:
    total_posted: Credits  # the sum of every posting in the ledger
    unbalanced: list[tuple[str, Credits]]  # (transaction id, sum of its postings) where the sum is not 0
    accounts: list[AccountAudit]


class LedgerRepository(Protocol):
    """The ledger itself: wallets, their lots, the transactions and their postings, as seen inside one
    unit of work (`tx.ledger`)."""

    # -- reading -------------------------------------------------------------------------------
    def balances(self, user_id: str, at: datetime) -> tuple[Credits, Credits]:
        """(spendable, held). Spendable leaves out credits past expiry, even before the expiry run books
        them out, and credits of lots not effective yet at `at`. Costs the same however long the
        history is."""
        ...

    def transactions(
        self, user_id: str, limit: int, before: TransactionCursor | None = None
    ) -> list[CreditTransaction]:
        """Newest first (created_at, then id, descending); only rows older than `before`. Each row
        with its `reverts`, `reverted_by` and `sources` (which lots paid, or were paid back)."""
        ...

    def find_transaction_by_reference(self, reference_id: str) -> CreditTransaction | None:
        """With `reverts` and `reverted_by` (not `sources`)."""
        ...

    def find_transactions_by_references(self, reference_ids: Collection[str]) -> dict[str, CreditTransaction]:
        """find_transaction_by_reference for many at once (one read): reference id -> its transaction,
        for those recorded."""
        ...

    def find_transaction(self, transaction_id: str) -> CreditTransaction | None:
        """By id, with `reverts`, `reverted_by` and `sources`."""
        ...

    def postings_of(self, transaction_id: str) -> list[Posting]:
        """A transaction's postings in the order they were recorded."""
        ...

    def lots(self, lot_ids: Collection[str]) -> list[Lot]:
        """The lots with these ids, whatever they hold (in no particular order)."""
        ...

    def live_lots(self, user_id: str) -> list[Lot]:
        """The user's lots with anything remaining, held or owed (remaining or held not zero), without
        locking: what the wallet view lists (pending ones included)."""
        ...

    def take_backs(self, user_id: str | None = None) -> list[CreditTransaction]:
        """Every refund and dispute transaction (kinds refund, dispute, dispute_won, dispute_lost) of
        `user_id`, or of all users when None, oldest first: what wallet_core.refunds sums per payment."""
        ...

    # -- writing -------------------------------------------------------------------------------
    def lock_wallet(self, user_id: str, at: datetime) -> WalletState:
        """The user's balances and lots with anything left or held, creating an empty wallet (as of
        `at`) if needed, and locking it until the unit of work ends, so writers to one wallet take turns."""
        ...

    def lock_wallets(self, user_ids: Collection[str], at: datetime) -> dict[str, WalletState]:
        """lock_wallet for each user, taking the locks in sorted user id order (code point order), so
        writers locking several wallets never wait for each other in a cycle; in as few statements as
        the store allows."""
        ...

    def lock_wallet_for_credit(self, user_id: str, at: datetime) -> WalletState:
        """Like lock_wallet, but with only the lots credits coming in need: those in debt, and those
        expired by `at` with something left. Cheap however many lots the user has."""
        ...

    def record(self, booking: Booking) -> CreditTransaction:
        """Store the transaction, its postings and lot changes (a change's `ends_at` moves the lot's
        expiry to then, if that is sooner), and move the stored balances. The answer's `balance_after`
        is the spendable balance right after: the wallet's credits less those of lots not effective yet
        at the booking's time (the caller has booked out expired ones first). Its `sources` are empty
        (the caller knows its lots' categories: Booking.sources).

        Raises DuplicateReference (and changes nothing) when the reference id was recorded before;
        the caller must then roll the unit of work back."""
        ...

    def record_many(self, bookings: Sequence[Booking]) -> list[CreditTransaction]:
        """record() each booking, in order, with the same answers, in as few statements as the store
        allows. For bookings that create no lots, each on a wallet this unit of work locked (a batch of
        spends). Raises DuplicateReference when a reference was recorded before; the caller must then roll
        the unit of work back (the others may have been written)."""
        ...

    # -- expiry and audit ----------------------------------------------------------------------
    def users_with_expired_credits(self, at: datetime, limit: int) -> list[str]:
        """Users who have promotional credits past expiry that are not booked out yet."""
        ...

    def audit(self) -> LedgerAudit: ...

    def revert_audit(self) -> list[RevertAudit]:
        """Every revert with the transaction it names, oldest first (what `wallet verify` checks)."""
        ...


class HoldRepository(Protocol):
    """Holds: credits reserved until captured, released or expired (`tx.holds`). What they move is
    booked in the ledger; this is the hold's own record."""

    def add(self, hold: Hold) -> None: ...

    def get(self, hold_id: str) -> Hold | None: ...

    def update(self, hold_id: str, status: HoldStatus, captured: Credits, at: datetime) -> None:
        """Raises NotFound for an unknown hold."""
        ...

    def expired_open(self, at: datetime, limit: int) -> list[Hold]:
        """Open holds expired by `at`, by expiry then id, at most `limit`."""
        ...


class TopUpRepository(Protocol):
    """Top-ups: a user's purchases of credits with a Stripe PaymentIntent each (`tx.top_ups`)."""

    def add(self, top_up: TopUp) -> None:
        """Raises DuplicateTopUp when the user already has a top-up with that idempotency key."""
        ...

    def get(self, top_up_id: str) -> TopUp | None: ...

    def find_by_payment_intent(self, payment_intent_id: str) -> TopUp | None: ...

    def find_by_idempotency_key(self, user_id: str, key: str) -> TopUp | None: ...

    def set_payment_intent(self, top_up_id: str, payment_intent_id: str, at: datetime) -> None:
        """Give an automatic top-up the PaymentIntent Stripe made for it (it is recorded before the
        charge is sent). Raises NotFound for an unknown top-up, DuplicateTopUp when another top-up has
        that intent."""
        ...

    def set_status(self, top_up_id: str, status: TopUpStatus, at: datetime) -> None:
        """Raises NotFound for an unknown top-up."""
        ...

    def lock(self, user_id: str) -> None:
        """Take the user's top-up lock until the unit of work ends, so one user's requests for new
        top-ups (in any process) check the limits and record their top-up one at a time. Creates no
        row. (Where every writing unit of work already runs alone, as on SQLite, there is nothing to do.)"""
        ...

    def activity(self, user_id: str, *, open_since: datetime, started_since: datetime) -> TopUpActivity:
        """From the user's top-ups: the open ones (pending or failed) created after `open_since`, and
        all of them created after `started_since`, whatever their status: counts and the oldest of each.
        Automatic top-ups (the wallet's, not the user's) are left out."""
        ...

    def update(self, top_up: TopUp, at: datetime) -> None:
        """Store the top-up's status, refunded amount and credits taken back, changed at `at`. Raises
        NotFound for an unknown top-up."""
        ...


class PaymentEventLog(Protocol):
    """The Stripe events the wallet received, and what each did (`tx.events`)."""

    def find(self, event_id: str) -> StoredEvent | None: ...

    def find_with_top_up(
        self, event_id: str, payment_intent_id: str | None
    ) -> tuple[StoredEvent | None, TopUp | None]:
        """find and the top-up of `payment_intent_id` (TopUpRepository.find_by_payment_intent) in one
        read (what every webhook asks first); no top-up when `payment_intent_id` is None."""
        ...

    def add(self, event: StoredEvent) -> None:
        """Store the event; a second event with the same id is ignored (no error)."""
        ...

    def for_payment_intent(self, payment_intent_id: str) -> list[StoredEvent]:
        """Oldest first."""
        ...


class SavedCards(Protocol):
    """Each user's Stripe Customer and the one card they saved for off-session payments (`tx.saved_cards`)."""

    def customer_id(self, user_id: str) -> str | None:
        """The user's Stripe Customer id, if the wallet made one."""
        ...

    def set_customer(self, user_id: str, customer_id: str, at: datetime) -> str:
        """Store `customer_id` as the user's Customer unless one is stored already (insert if absent),
        and return the one stored: the earlier one if a concurrent request stored its own first."""
        ...

    def get(self, user_id: str) -> SavedCard | None: ...

    def save(self, card: SavedCard) -> None:
        """Store the card as the user's saved card, replacing any earlier one."""
        ...

    def forget(self, user_id: str) -> SavedCard | None:
        """Remove the user's saved card and return it (None if there was none). The Customer stays."""
        ...


class Outbox(Protocol):
    """Outbound events, written in the unit of work of the change they describe (`tx.outbox`).

    An event gets its place in the public order (its number, what pull cursors count) only once it is
    committed: `publish` numbers the committed events that have none, in the order they committed, so
    a consumer paging by number never skips one committed late."""

    def add(self, event: WalletEvent) -> None: ...

    def publish(self, limit: int) -> list[tuple[int, WalletEvent]]:
        """Number up to `limit` committed, unnumbered events, oldest first, after the highest number
        given so far, and return them numbered. Publishers take turns (a lock held until the unit of
        work ends), so numbers are consecutive and never reused."""
        ...

    def page(
        self, after: int, limit: int, *, type: str | None = None, user_id: str | None = None
    ) -> list[tuple[int, WalletEvent]]:
        """Numbered events with a number above `after`, in number order, at most `limit`, filtered by
        type and user when given."""
        ...

    def get(self, event_id: str) -> WalletEvent | None: ...


class AlertSettings(Protocol):
    """Each wallet's own low-balance threshold and the alert level it was last seen at (`tx.alerts`),
    read and changed under the wallet's lock (an adapter may read them with the lock: the SQL one does)."""

    def get(self, user_id: str) -> AlertState: ...

    def set(self, user_id: str, state: AlertState, at: datetime) -> None:
        """Store the wallet's threshold and level (creating an empty wallet as of `at` if needed)."""
        ...


class AutoTopUpRules(Protocol):
    """Each wallet's automatic top-up rule, and the automatic top-up it has in flight (`tx.auto_top_ups`).
    Read and changed under the wallet's lock (LedgerRepository.lock_wallet), but for the worker's claim."""

    def get(self, user_id: str) -> AutoTopUpRule | None: ...

    def put(self, rule: AutoTopUpRule) -> None:
        """Store the wallet's rule, replacing the one it had."""
        ...

    def delete(self, user_id: str) -> bool:
        """Remove the wallet's rule; False when it had none. A charge in flight stays (its record)."""
        ...

    def charge_of(self, user_id: str) -> AutoCharge | None:
        """The wallet's automatic top-up in flight, if any."""
        ...

    def add_charge(self, charge: AutoCharge) -> None:
        """Record the wallet's automatic top-up in flight. Raises AutoTopUpInFlight (and changes
        nothing) when the wallet has one already: the store holds at most one per wallet, so writers that
        did not take turns still cannot both record one."""
        ...

    def claim_charges(self, at: datetime, lease_until: datetime, limit: int) -> list[AutoCharge]:
        """Up to `limit` charges due by `at` (oldest due first) that no other worker has claimed, each
        with one more attempt counted and its due time moved to `lease_until` (a worker that dies
        mid-charge leaves it to be sent again then). Concurrent workers claim different charges."""
        ...

    def save_charge(self, charge: AutoCharge) -> bool:
        """Store the charge's new state (due time, attempts, PaymentIntent id, the card it charges). False,
        and nothing stored, when the charge is no longer in flight (its webhook finished it meanwhile)."""
        ...

    def finish_charge(self, top_up_id: str) -> AutoCharge | None:
        """The top-up is no longer in flight (paid, failed, canceled): remove its charge and return it;
        None when it was not in flight (finished before): whoever gets it counts the outcome, once."""
        ...

    def charged_since(self, user_id: str, since: datetime) -> Usd:
        """What the wallet's automatic top-ups created at or after `since` charge, pending or paid
        (topups.CHARGED_STATUSES): what counts against the monthly limit."""
        ...


class WebhookEndpoints(Protocol):
    """The endpoints the host application subscribed (`tx.endpoints`)."""

    def add(self, endpoint: WebhookEndpoint) -> None: ...

    def get(self, endpoint_id: str) -> WebhookEndpoint | None: ...

    def all(self) -> list[WebhookEndpoint]:
        """Oldest first."""
        ...

    def remove(self, endpoint_id: str) -> bool:
        """False when there was no such endpoint. Its deliveries stay (their history), and pending
        ones are not attempted any more."""
        ...

    def update(self, endpoint: WebhookEndpoint) -> None:
        """Store its secrets (a rotation). Raises NotFound for an unknown endpoint."""
        ...


class WebhookDeliveries(Protocol):
    """Deliveries of events to endpoints (`tx.deliveries`)."""

    def add(self, delivery: Delivery) -> None: ...

    def claim(self, at: datetime, lease_until: datetime, limit: int) -> list[Delivery]:
        """Up to `limit` pending deliveries due by `at` (oldest due first) that no other worker has
        claimed, each with one more attempt counted and its next attempt moved to `lease_until` (so a
        worker that dies mid-delivery leaves it to be tried again then). Concurrent workers claim
        different deliveries (PostgreSQL: FOR UPDATE SKIP LOCKED)."""
        ...

    def save(self, delivery: Delivery) -> None:
        """Store the outcome of an attempt. Raises NotFound for an unknown delivery."""
        ...

    def get(self, delivery_id: str) -> Delivery | None: ...

    def for_endpoint(
        self, endpoint_id: str, *, status: DeliveryStatus | None, limit: int
    ) -> list[Delivery]:
        """Newest first."""
        ...


class WebhookSender(Protocol):
    """Sends a signed delivery over HTTP (the outside world, like PaymentGateway)."""

    def check_url(self, url: str) -> None:
        """Raise InvalidInput unless `url` may receive deliveries: it must resolve to public addresses
        only (no SSRF into the private network), unless private URLs are allowed (development)."""
        ...

    def send(self, url: str, *, secrets: tuple[str, ...], message_id: str, body: bytes, at: datetime) -> SendResult:
        """POST `body`, signed with each secret (Standard Webhooks), within the delivery timeout.
        Never raises for the receiver's or the network's failure: the result says what happened."""
        ...


class UnitOfWork(Protocol):
    """One database transaction, and a repository per aggregate working in it: the ledger, holds,
    top-ups, the payment event log, the outbox of outbound events, the alert settings, the webhook
    endpoints and deliveries, and the saved cards. Leaving the block without commit() rolls
    everything back.

    Raises StorageUnavailable when the store is down or locked. The repositories are read-only
    properties, so an adapter's own (narrower) repository types still fit the port."""

    @property
    def ledger(self) -> LedgerRepository: ...

    @property
    def holds(self) -> HoldRepository: ...

    @property
    def top_ups(self) -> TopUpRepository: ...

    @property
    def events(self) -> PaymentEventLog: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def alerts(self) -> AlertSettings: ...

    @property
    def auto_top_ups(self) -> AutoTopUpRules: ...

    @property
    def endpoints(self) -> WebhookEndpoints: ...

    @property
    def deliveries(self) -> WebhookDeliveries: ...

    @property
    def saved_cards(self) -> SavedCards: ...

    @property
    def low_balance_default(self) -> Credits | None:
        """The low-balance threshold of wallets without their own (WALLET_LOW_BALANCE_CREDITS)."""
        ...

    @property
    def top_up_policy(self) -> TopUpPolicy | None:
        """The top-up policy (TOP_UP_MIN_USD, TOP_UP_MAX_USD, the rate) automatic top-ups recorded in
        this unit of work follow; None: automatic top-ups are off (a change below a rule's threshold
        records none, and logs an error)."""
        ...

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
    def __call__(self, *, read_only: bool = False) -> UnitOfWork:
        """A new unit of work. `read_only`: it only reads and never commits, so a store may run it
        beside writers (SQLite: a reader in WAL mode waits for no writer, and no writer waits for it)."""
        ...
