"""The composition root: the one place that chooses which adapter fills which port.

Tests override providers here (e.g. `container.gateway.override(FakePaymentGateway())`, or
`container.clock.override(providers.Object(my_clock))` to move time). The adapters are imported
when first provided, so `wallet --help` and commands that need no database or Stripe start fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from dependency_injector import containers, providers

from entrypoints.http.auth import JwtAuthenticator
from entrypoints.library import Wallet
from entrypoints.settings import Settings
from wallet_core.clock import utc_now

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from adapters.sql.unit_of_work import SqlUnitOfWork
    from adapters.stripe_gateway import StripePaymentGateway


def _gateway(settings: Settings) -> StripePaymentGateway:
    from adapters.stripe_gateway import StripePaymentGateway

    return StripePaymentGateway(
        settings.stripe_secret_key.reveal() if settings.stripe_secret_key else None,
        [s.reveal() for s in settings.stripe_webhook_secrets],
        api_base=settings.stripe_api_base,
        allow_unsigned_webhooks=settings.development,
        timeout_seconds=settings.stripe_timeout_seconds,
    )


def _engine(settings: Settings) -> Iterator[Engine]:
    from adapters.sql.engine import create_wallet_engine

    engine = create_wallet_engine(settings.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _unit_of_work(engine: Engine) -> Callable[..., SqlUnitOfWork]:
    from adapters.sql.unit_of_work import sql_unit_of_work_factory

    return sql_unit_of_work_factory(engine)


def _authenticator(settings: Settings) -> JwtAuthenticator:
    return JwtAuthenticator(settings.jwt_secret)


class Container(containers.DeclarativeContainer):
    settings = providers.Singleton(Settings.from_env)
    engine = providers.Resource(_engine, settings)  # disposed by container.shutdown_resources()
    unit_of_work = providers.Singleton(_unit_of_work, engine)
    gateway = providers.Singleton(_gateway, settings)
    policy = providers.Singleton(lambda s: s.policy, settings)
    authenticator = providers.Singleton(_authenticator, settings)
    clock = providers.Object(utc_now)
    wallet = providers.Singleton(Wallet, uow=unit_of_work, gateway=gateway, policy=policy, clock=clock)


def migrate(container: Container) -> None:
    """Bring the database schema up to date (idempotent)."""
    from adapters.sql.migrate import upgrade

    upgrade(container.engine())


def migrate_if_embedded(container: Container) -> None:
    """SQLite is the zero-configuration default, so it is migrated on first use. A PostgreSQL
    deployment migrates once, explicitly, with `wallet migrate`, before its servers start."""
    if container.settings().database_url.startswith("sqlite"):
        migrate(container)
