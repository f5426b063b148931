"""Proof, for mypy, that every adapter and every shared test double fits the port it stands in for.

Nothing here runs: `mypy` (pyproject's `files`) checks each assignment of an adapter to its port type,
so an adapter or fake that misses a port method, or takes or returns the wrong types, fails the check
with a note naming what is missing. (The DI container's providers are untyped, so without this file
nothing would compare them.) Test doubles defined inside a test are checked where the test hands them
to a use case, now that tests/ is type-checked too.
"""

from __future__ import annotations

from sqlalchemy import Engine

from adapters.fake_gateway import FakePaymentGateway
from adapters.fake_webhook_sender import FakeWebhookSender
from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork, in_memory_unit_of_work_factory
from adapters.sql.unit_of_work import SqlUnitOfWork, sql_unit_of_work_factory
from adapters.stripe_gateway import StripePaymentGateway
from tests.unit.helpers import StubGateway
from wallet_core.money import Credits
from wallet_core.ports import (
    AlertSettings,
    AutoTopUpRules,
    HoldRepository,
    LedgerRepository,
    Outbox,
    PaymentEventLog,
    PaymentGateway,
    SavedCards,
    TopUpRepository,
    UnitOfWork,
    UnitOfWorkFactory,
    WebhookDeliveries,
    WebhookEndpoints,
    WebhookSender,
)


def sql_unit_of_work(engine: Engine, tx: SqlUnitOfWork) -> None:
    _uow: UnitOfWork = SqlUnitOfWork(engine, low_balance_default=Credits(100))
    _factory: UnitOfWorkFactory = sql_unit_of_work_factory(engine, low_balance_default=None)
    _ledger: LedgerRepository = tx.ledger
    _holds: HoldRepository = tx.holds
    _top_ups: TopUpRepository = tx.top_ups
    _events: PaymentEventLog = tx.events
    _outbox: Outbox = tx.outbox
    _alerts: AlertSettings = tx.alerts
    _auto_top_ups: AutoTopUpRules = tx.auto_top_ups
    _endpoints: WebhookEndpoints = tx.endpoints
    _deliveries: WebhookDeliveries = tx.deliveries
    _saved_cards: SavedCards = tx.saved_cards


def in_memory_unit_of_work(store: InMemoryStore, tx: InMemoryUnitOfWork) -> None:
    _uow: UnitOfWork = InMemoryUnitOfWork(store, low_balance_default=Credits(100))
    _factory: UnitOfWorkFactory = in_memory_unit_of_work_factory(store, low_balance_default=None)
    _ledger: LedgerRepository = tx.ledger
    _holds: HoldRepository = tx.holds
    _top_ups: TopUpRepository = tx.top_ups
    _events: PaymentEventLog = tx.events
    _outbox: Outbox = tx.outbox
    _alerts: AlertSettings = tx.alerts
    _auto_top_ups: AutoTopUpRules = tx.auto_top_ups
    _endpoints: WebhookEndpoints = tx.endpoints
    _deliveries: WebhookDeliveries = tx.deliveries
    _saved_cards: SavedCards = tx.saved_cards


def payment_gateways(stripe: StripePaymentGateway, fake: FakePaymentGateway, stub: StubGateway) -> None:
    _stripe: PaymentGateway = stripe
    _fake: PaymentGateway = fake
    _stub: PaymentGateway = stub


def webhook_senders(fake: FakeWebhookSender) -> None:
    _fake: WebhookSender = fake
