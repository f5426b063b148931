"""Bring the schema up to date with Alembic. No alembic.ini: the configuration is built here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from adapters.sql.engine import READ_ONLY
from adapters.sql.unit_of_work import translate_storage_errors
from wallet_core.errors import StorageUnavailable

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


class SchemaNotReady(StorageUnavailable):
    """The database schema is missing or older than this code: `wallet migrate` fixes it (HTTP 503)."""

    title = "Database schema not ready"


class SchemaTooNew(StorageUnavailable):
    """The database was migrated by a newer wallet: this code does not know its revision."""

    title = "Database schema is newer than this wallet"


@dataclass(frozen=True)
class SchemaState:
    """Where the database's schema stands against the newest migration this package ships."""

    current: str | None  # the database's revision; None when it was never migrated
    head: str

    @property
    def missing(self) -> bool:
        return self.current is None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def ahead(self) -> bool:
        """Migrated by a newer wallet: a revision this package does not ship."""
        return self.current is not None and self.current not in _known_revisions()

    @property
    def behind(self) -> bool:
        return not self.missing and not self.up_to_date and not self.ahead

    def problem(self) -> StorageUnavailable | None:
        """Why this code cannot use the database (SchemaNotReady, SchemaTooNew), or None when it can."""
        if self.missing:
            return SchemaNotReady("the database schema is not set up: run `wallet migrate`")
        if self.behind:
            return SchemaNotReady(
                f"the database schema is at revision {self.current}, older than this wallet's {self.head}: "
                "run `wallet migrate`"
            )
        if self.ahead:
            return SchemaTooNew(
                f"the database schema is at revision {self.current}, which this wallet does not know "
                f"(its newest is {self.head}): a newer wallet migrated it; upgrade wallet"
            )
        return None


@cache
def head_revision() -> str:
    """The newest migration this package ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover (the package ships migrations)
        raise RuntimeError("no migrations found")
    return head


@cache
def _known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions())


def schema_state(engine: Engine) -> SchemaState:
    """Read the database's revision (one small query). Raises StorageUnavailable when it cannot be reached."""
    return SchemaState(current_revision(engine), head_revision())


def upgrade(engine: Engine) -> None:
    """Upgrade to the newest revision in one transaction. Idempotent: call it at every start.
    Raises StorageUnavailable when the database cannot be reached, and SchemaTooNew (changing nothing)
    when a newer wallet migrated it to a revision this package does not ship."""
    with translate_storage_errors(), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        problem = SchemaState(MigrationContext.configure(connection).get_current_revision(), head_revision()).problem()
        if isinstance(problem, SchemaTooNew):
            raise problem
        command.upgrade(alembic_config(connection), "head")


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with translate_storage_errors(), engine.connect() as connection:
        # Read only: on SQLite a plain BEGIN, so the check neither waits for nor blocks a writer.
        connection.execution_options(**{READ_ONLY: True})
        return MigrationContext.configure(connection).get_current_revision()
