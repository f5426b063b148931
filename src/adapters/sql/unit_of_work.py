"""The unit of work: one connection, one database transaction at a time.

Database failures that mean "down, unreachable or locked" become StorageUnavailable wherever they
happen (entering, inside the block, committing), with a message that names no host, URL or password.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc

from adapters.sql.alert_repository import SqlAlertSettings
from adapters.sql.auto_top_up_repository import SqlAutoTopUpRules
from adapters.sql.driver import Driver
from adapters.sql.engine import READ_ONLY, writer_queue
from adapters.sql.event_log import SqlPaymentEventLog
from adapters.sql.hold_repository import SqlHoldRepository
from adapters.sql.ledger_repository import SqlLedgerRepository
from adapters.sql.outbox_repository import SqlOutbox
from adapters.sql.saved_cards_repository import SqlSavedCards
from adapters.sql.top_up_repository import SqlTopUpRepository
from adapters.sql.webhook_repository import SqlWebhookDeliveries, SqlWebhookEndpoints
from wallet_core.alerts import AlertState
from wallet_core.errors import StorageUnavailable
from wallet_core.money import Credits
from wallet_core.topups import TopUpPolicy

_WAIT_WORTH_CUTTING = 0.05  # seconds in the writer queue after which the busy timeout is shortened


class SqlUnitOfWork:
    """The repositories (`ledger`, `holds`, `top_ups`, `events`, `outbox`, `alerts`, `endpoints`,
    `deliveries`, `saved_cards`) exist from entering to leaving, and share the one connection (and its driver
    connection) of the unit of work.

    Two things live as long as one database transaction, and are dropped when it ends (commit or
    rollback): the outbound events added to `outbox`, written by commit() with one INSERT, just before
    COMMIT on SQLite and with it on PostgreSQL (adapters.sql.outbox_repository); and the alert settings
    of the wallets the transaction locked, read with the lock and answered by `alerts`
    (adapters.sql.alert_repository)."""

    ledger: SqlLedgerRepository
    holds: SqlHoldRepository
    top_ups: SqlTopUpRepository
    events: SqlPaymentEventLog
    outbox: SqlOutbox
    alerts: SqlAlertSettings
    auto_top_ups: SqlAutoTopUpRules
    endpoints: SqlWebhookEndpoints
    deliveries: SqlWebhookDeliveries
    saved_cards: SqlSavedCards

    def __init__(
        self,
        engine: Engine,
        *,
        read_only: bool = False,
        low_balance_default: Credits | None = None,
        top_up_policy: TopUpPolicy | None = None,
    ) -> None:
        self._engine = engine
        self._read_only = read_only
        self.low_balance_default = low_balance_default
        self.top_up_policy = top_up_policy
        self._locked_alerts: dict[str, AlertState] = {}
        self._locked_rules: dict[str, bool] = {}
        self._conn: Connection | None = None
        self._driver: Driver | None = None
        # SQLite: this process's writers take turns (engine.py); a reader waits for none of them.
        self._queue = None if read_only else writer_queue(engine)
        self._queued = False
        self._busy_timeout_cut = False

    def __enter__(self) -> SqlUnitOfWork:
        assert self._conn is None, "a SqlUnitOfWork cannot be entered twice"
        waited = 0.0
        if self._queue is not None:
            started = time.monotonic()
            if not self._queue.lock.acquire(timeout=self._queue.timeout):
                raise StorageUnavailable("the database is unavailable: database is locked")
            self._queued = True
            waited = time.monotonic() - started
        try:
            with translate_storage_errors():
                self._conn = self._engine.connect()  # the transaction begins with the first statement
                if self._read_only:
                    self._conn = self._conn.execution_options(**_read_only_options(self._conn))
                if waited > _WAIT_WORTH_CUTTING:
                    self._cut_busy_timeout(self._queue.timeout - waited)  # type: ignore[union-attr]
        except BaseException:
            self._leave_queue()
            raise
        driver = self._driver = Driver(self._conn)
        self.ledger = SqlLedgerRepository(self._conn, driver, self._locked_alerts, self._locked_rules)
        self.holds = SqlHoldRepository(self._conn)
        self.top_ups = SqlTopUpRepository(self._conn, driver)
        self.events = SqlPaymentEventLog(driver)
        self.outbox = SqlOutbox(driver)
        self.alerts = SqlAlertSettings(driver, self._locked_alerts)
        self.auto_top_ups = SqlAutoTopUpRules(driver, self._locked_rules)
        self.endpoints = SqlWebhookEndpoints(driver)
        self.deliveries = SqlWebhookDeliveries(driver)
        self.saved_cards = SqlSavedCards(driver)
        return self

    def _cut_busy_timeout(self, left: float) -> None:
        """SQLite: the time spent in the writer queue counts against the lock timeout, so BEGIN
        IMMEDIATE may wait only for what is left (the whole wait stays within the bound)."""
        driver = self._connection().connection.driver_connection
        driver.execute(f"PRAGMA busy_timeout = {max(1, int(left * 1000))}")  # type: ignore[union-attr]
        self._busy_timeout_cut = True

    def _restore_busy_timeout(self, conn: Connection) -> None:
        if self._busy_timeout_cut and self._queue is not None:
            self._busy_timeout_cut = False
            with contextlib.suppress(Exception):  # a broken connection is thrown away by the pool anyway
                driver = conn.connection.driver_connection
                driver.execute(f"PRAGMA busy_timeout = {int(self._queue.timeout * 1000)}")  # type: ignore[union-attr]

    def _leave_queue(self) -> None:
        if self._queued and self._queue is not None:
            self._queued = False
            self._queue.lock.release()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        self._transaction_ended()
        try:
            with translate_storage_errors():
                if conn is not None:
                    self._restore_busy_timeout(conn)
                    conn.close()  # rolls back whatever was not committed
        except StorageUnavailable:
            if exc is None:
                raise
        finally:
            self._leave_queue()
        if exc is not None and is_unavailable(exc):
            raise unavailable(exc) from exc

    def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        conn = self._connection()
        try:
            with translate_storage_errors():
                # The transaction's events: one INSERT (a refused one stops the commit), sent with the
                # COMMIT on PostgreSQL (adapters.sql.outbox_repository), as are writes the driver deferred.
                if not self.outbox.flush_and_commit():
                    self.outbox.flush()
                    assert self._driver is not None
                    self._driver.commit_deferred()  # PostgreSQL: deferred writes, then COMMIT, in one message
                conn.commit()  # the next statement begins a new transaction
        finally:
            self._transaction_ended()

    def rollback(self) -> None:
        self._transaction_ended()
        with translate_storage_errors():
            self._connection().rollback()

    def _transaction_ended(self) -> None:
        """Drop what lived as long as the transaction: events not written, and the alert settings read
        under locks now released."""
        self.outbox.discard()
        if self._driver is not None:
            self._driver.forget_deferred()
        self._locked_alerts.clear()
        self._locked_rules.clear()

    def _connection(self) -> Connection:
        assert self._conn is not None, "outside the unit of work"
        return self._conn


def _read_only_options(conn: Connection) -> dict[str, object]:
    """SQLite: a plain BEGIN (engine.py), one snapshot for the whole transaction in WAL mode.
    PostgreSQL: REPEATABLE READ, READ ONLY, so every statement of the unit of work sees the same
    snapshot (the audit's several statements add up even while payments commit; under the default
    READ COMMITTED each would see its own moment) and nothing can be written by mistake."""
    if conn.dialect.name == "postgresql":
        return {READ_ONLY: True, "isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    return {READ_ONLY: True}


class SqlUnitOfWorkFactory:
    """What the use cases take as `uow`: each call is a new unit of work on `engine`. A class, not a
    closure typed `Callable[..., SqlUnitOfWork]`, so that its call signature is a type mypy holds to
    the port `UnitOfWorkFactory`, keyword `read_only` included (tests/typecheck_ports.py)."""

    def __init__(
        self, engine: Engine, *, low_balance_default: Credits | None = None, top_up_policy: TopUpPolicy | None = None
    ) -> None:
        self._engine = engine
        self._low_balance_default = low_balance_default
        self._top_up_policy = top_up_policy

    def __call__(self, *, read_only: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(
            self._engine,
            read_only=read_only,
            low_balance_default=self._low_balance_default,
            top_up_policy=self._top_up_policy,
        )


def sql_unit_of_work_factory(
    engine: Engine, *, low_balance_default: Credits | None = None, top_up_policy: TopUpPolicy | None = None
) -> SqlUnitOfWorkFactory:
    """`low_balance_default`: the low-balance threshold of wallets without their own
    (WALLET_LOW_BALANCE_CREDITS); None: no alerts but `wallet.depleted` / `wallet.recovered` for them.
    `top_up_policy`: what automatic top-ups follow (None: off)."""
    return SqlUnitOfWorkFactory(engine, low_balance_default=low_balance_default, top_up_policy=top_up_policy)


def is_unavailable(error: BaseException) -> bool:
    """True for failures of the database itself (down, unreachable, locked), not of our statements:
    as SQLAlchemy reports them, or as the driver does for statements sent to it directly
    (adapters.sql.driver)."""
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        return error.connection_invalidated
    if isinstance(error, sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")  # imported only where PostgreSQL is in use
    return psycopg is not None and isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))


def unavailable(error: BaseException) -> StorageUnavailable:
    return StorageUnavailable(f"the database is unavailable: {_describe(error)}")


@contextmanager
def translate_storage_errors() -> Iterator[None]:
    try:
        yield
    except sa_exc.SQLAlchemyError as error:
        if is_unavailable(error):
            raise unavailable(error) from error
        raise


def _describe(error: BaseException) -> str:
    """A safe description: driver messages may quote the connection string, so only SQLite's are shown."""
    if isinstance(error, sa_exc.TimeoutError):
        return "no free connection in the pool"
    original = getattr(error, "orig", None) if isinstance(error, sa_exc.SQLAlchemyError) else error
    if isinstance(original, sqlite3.Error):
        return str(original)  # e.g. "database is locked"; SQLite's messages carry no paths or secrets
    if original is None:
        return type(error).__name__
    sqlstate = getattr(original, "sqlstate", None)
    name = type(original).__name__
    return f"{name} (SQLSTATE {sqlstate})" if sqlstate else name
