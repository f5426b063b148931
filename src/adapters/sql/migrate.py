"""Bring the schema up to date with Alembic. No alembic.ini: the configuration is built here."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, text

from adapters.sql.unit_of_work import translate_storage_errors

SCRIPT_LOCATION = "adapters.sql:migrations"
# Any fixed number: PostgreSQL servers started together take turns migrating.
_PG_MIGRATION_LOCK = 0x77A11E7


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Upgrade to the newest revision in one transaction. Idempotent: call it at every start.
    Raises StorageUnavailable when the database cannot be reached."""
    with translate_storage_errors(), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        command.upgrade(alembic_config(connection), "head")


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
