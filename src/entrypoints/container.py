"""The composition root: the one place that chooses which adapter fills which port.

Tests override providers here (e.g. `container.gateway.override(FakePaymentGateway())`, or
`container.clock.override(providers.Object(my_clock))` to move time). The adapters are imported
when first provided, so `wallet --help` and commands that need no database or Stripe start fast.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dependency_injector import containers, providers

from entrypoints.http.auth import JwtAuthenticator
from entrypoints.settings import Settings
from wallet_core.clock import utc_now
from wallet_core.service import Wallet

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from adapters.sql.unit_of_work import SqlUnitOfWorkFactory
    from adapters.stripe_gateway import StripePaymentGateway
    from adapters.webhook_sender import HttpWebhookSender

log = logging.getLogger("wallet.schema")


def _gateway(settings: Settings) -> StripePaymentGateway:
    from adapters.stripe_gateway import StripePaymentGateway

    return StripePaymentGateway(
        settings.stripe_secret_key.reveal() if settings.stripe_secret_key else None,
        [s.reveal() for s in settings.stripe_webhook_secrets],
        api_base=settings.stripe_api_base,
        allow_unsigned_webhooks=settings.development,
        timeout_seconds=settings.stripe_timeout_seconds,
        max_concurrent_calls=settings.stripe_max_concurrent_calls,
    )


def _webhook_sender(settings: Settings) -> HttpWebhookSender:
    from adapters.webhook_sender import HttpWebhookSender

    if settings.webhook_allow_private_urls:
        logging.getLogger("wallet.webhooks").warning(
            "WALLET_WEBHOOK_ALLOW_PRIVATE_URLS=true: webhook endpoints may be http:// and point into the private "
            "network (development and tests only)"
        )
    return HttpWebhookSender(allow_private=settings.webhook_allow_private_urls)


def _engine(settings: Settings) -> Iterator[Engine]:
    from adapters.sql.engine import create_wallet_engine

    engine = create_wallet_engine(settings.database_url, lock_timeout=settings.db_lock_timeout_seconds)
    try:
        yield engine
    finally:
        engine.dispose()


def _unit_of_work(engine: Engine, settings: Settings) -> SqlUnitOfWorkFactory:
    from adapters.sql.unit_of_work import sql_unit_of_work_factory

    return sql_unit_of_work_factory(
        engine, low_balance_default=settings.low_balance_credits, top_up_policy=settings.policy
    )


def _authenticator(settings: Settings) -> JwtAuthenticator:
    return JwtAuthenticator(settings.jwt_secret, dev_secret_file=settings.dev_jwt_secret_file)


class Container(containers.DeclarativeContainer):
    settings = providers.Singleton(Settings.from_env)
    engine = providers.Resource(_engine, settings)  # disposed by container.shutdown_resources()
    unit_of_work = providers.Singleton(_unit_of_work, engine, settings)
    gateway = providers.Singleton(_gateway, settings)
    policy = providers.Singleton(lambda s: s.policy, settings)
    authenticator = providers.Singleton(_authenticator, settings)
    clock = providers.Object(utc_now)
    webhook_sender = providers.Singleton(_webhook_sender, settings)
    wallet = providers.Singleton(
        Wallet,
        uow=unit_of_work,
        gateway=gateway,
        policy=policy,
        clock=clock,
        webhook_sender=webhook_sender,
        webhook_retry_seconds=providers.Callable(lambda s: s.webhook_retry_seconds, settings),
        allow_private_webhook_urls=providers.Callable(lambda s: s.webhook_allow_private_urls, settings),
        group_commit=providers.Callable(lambda s: s.group_commit, settings),
        group_writes=providers.Callable(lambda s: s.writes_grouped, settings),
    )


def migrate(container: Container) -> None:
    """Bring the database schema up to date (idempotent)."""
    from adapters.sql.migrate import upgrade

    upgrade(container.engine())


def _embedded(container: Container) -> bool:
    return container.settings().embedded


def migrate_if_embedded(container: Container) -> None:
    """SQLite is the zero-configuration default, so it is migrated on first use. A PostgreSQL
    deployment migrates once, explicitly, with `wallet migrate`, before its servers start.

    A database a newer wallet migrated is left as it is, with a logged warning (see ensure_schema)."""
    if _embedded(container) and (warning := _migrate_embedded(container)) is not None:
        log.warning("%s", warning)


def _migrate_embedded(container: Container) -> str | None:
    """Migrate the embedded database; one a newer wallet migrated is left alone, its warning returned."""
    from adapters.sql.migrate import SchemaTooNew

    try:
        migrate(container)
    except SchemaTooNew as exc:
        return exc.description
    return None


def schema_problem(container: Container) -> str | None:
    """Why the database's schema cannot be used now (missing or older than this code: `wallet migrate`),
    or None: ready, newer (a rolling upgrade serves it), or not reachable (not a schema problem)."""
    from adapters.sql.migrate import SchemaTooNew, schema_state

    try:
        found = schema_state(container.engine()).problem()
    except Exception:  # noqa: BLE001 - unreachable or locked: the caller's own error says so
        return None
    return None if found is None or isinstance(found, SchemaTooNew) else found.description


def ensure_schema(container: Container) -> str | None:
    """Before a command reads or writes the ledger: SQLite is migrated; any other database must have
    been brought to this code's revision by `wallet migrate`, else SchemaNotReady (a WalletError
    saying so) is raised before any statement meets a missing table.

    A database at a revision this code does not know was migrated by a newer wallet. During a rolling
    upgrade the older code keeps working on it (migrations add before they remove), so that is not a
    refusal: the warning is returned for the caller to show."""
    from adapters.sql.migrate import SchemaTooNew, schema_state

    if _embedded(container):
        return _migrate_embedded(container)
    problem = schema_state(container.engine()).problem()
    if isinstance(problem, SchemaTooNew):
        return problem.description
    if problem is not None:
        raise problem
    return None
