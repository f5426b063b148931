"""Fixtures for the pure unit tests: an in-memory store, its unit-of-work factory, a fake Stripe, a policy."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork, in_memory_unit_of_work_factory
from tests.unit.helpers import FakeClock, in_memory_wallet
from wallet_core.money import Usd
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def uow(store: InMemoryStore) -> Callable[..., InMemoryUnitOfWork]:
    """The unit-of-work factory every use case takes."""
    return in_memory_unit_of_work_factory(store)


@pytest.fixture
def gateway() -> FakePaymentGateway:
    return FakePaymentGateway()


@pytest.fixture
def policy() -> TopUpPolicy:
    """The default product policy: 1.00 to 500.00 USD per top-up, 100 credits per USD."""
    return TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal(100))


@pytest.fixture
def clock() -> Callable[[], datetime]:
    """A clock that moves one second forward on every reading, so entries have distinct times."""
    start = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    ticks = itertools.count()
    return lambda: start + timedelta(seconds=next(ticks))


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that stands still at 2025-01-01 12:00 UTC until the test moves it."""
    return FakeClock()


@pytest.fixture
def wallet(
    store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy, fake_clock: FakeClock
) -> Wallet:
    """The application service (as HTTP, the CLI and the library call it) on the in-memory store and the
    fake Stripe, reading `fake_clock`."""
    return in_memory_wallet(store, gateway, policy, fake_clock)
