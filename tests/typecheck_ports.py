"""Proof, for mypy, that every adapter and every shared test double fits the port it stands in for.

Nothing here runs: `mypy` (pyproject's `files`) checks each assignment of an adapter to its port type,
so an adapter or fake that misses a port method, or takes or returns the wrong types, fails the check.
(The DI container's providers are untyped, so without this file nothing would compare them.)
Test doubles defined inside a test are checked where the test hands them to a use case.
"""

from __future__ import annotations

from sqlalchemy import Engine

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork, in_memory_unit_of_work_factory
from adapters.sql.unit_of_work import SqlUnitOfWork, sql_unit_of_work_factory
from adapters.stripe_gateway import StripePaymentGateway
from tests.unit.helpers import StubGateway
from wallet_core.ports import PaymentGateway, UnitOfWork, UnitOfWorkFactory


def sql_unit_of_work(engine: Engine) -> tuple[UnitOfWork, UnitOfWorkFactory]:
    return SqlUnitOfWork(engine), sql_unit_of_work_factory(engine)


def in_memory_unit_of_work(store: InMemoryStore) -> tuple[UnitOfWork, UnitOfWorkFactory]:
    return InMemoryUnitOfWork(store), in_memory_unit_of_work_factory(store)


def stripe(gateway: StripePaymentGateway) -> PaymentGateway:
    return gateway


def fake_stripe(gateway: FakePaymentGateway) -> PaymentGateway:
    return gateway


def stub_stripe(gateway: StubGateway) -> PaymentGateway:
    return gateway
