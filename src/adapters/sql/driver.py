"""Plain SQL sent straight to the database driver (sqlite3 or psycopg), inside the unit of work's
SQLAlchemy transaction. The ledger's hot statements (what every webhook grant and every spend runs),
and every read of the rows they write (transactions, top-ups, events), go this way; balances, holds,
the expiry searches and the audit stay on SQLAlchemy Core.

Why: SQLAlchemy's execute costs about 60-100 us of Python per statement (context, compiled cache
lookup, parameter and result processing); a grant runs about ten statements, and that overhead was
the largest share of its CPU time (bench/run.py's profile, docs/performance.md). The driver runs the
same statement in a fraction of that.

What stays the same: the transaction is SQLAlchemy's (begun through it, so SQLite still begins with
BEGIN IMMEDIATE, or a plain BEGIN when read-only; committed and rolled back by the unit of work);
datetimes go through UtcDateTime's own conversions, so a row written here reads back exactly like one
written through Core; and driver
errors meaning "the database is down or locked" become StorageUnavailable like SQLAlchemy's do
(adapters.sql.unit_of_work), the connection being invalidated when it is lost.

Statements are written once, with `:name` parameters; psycopg gets them as `%(name)s`.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Dialect

from adapters.sql.tables import UtcDateTime

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True)
class Sql:
    """One statement, as each driver wants it."""

    sqlite: str
    postgresql: str

    @classmethod
    def of(cls, text: str, postgresql: str | None = None) -> Sql:
        pg = postgresql if postgresql is not None else text
        if "%" in pg:
            raise ValueError("a literal % would need escaping for psycopg")
        return cls(" ".join(text.split()), " ".join(_NAMED.sub(r"%(\1)s", pg).split()))


def _same(value: Any) -> Any:
    return value


@functools.cache
def _time_conversions(dialect: Dialect) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """UtcDateTime's conversions with the dialect's own DateTime ones (once per dialect: a unit of
    work makes a Driver every time)."""
    stored_time = UtcDateTime().dialect_impl(dialect)
    bind = stored_time.bind_processor(dialect)
    result = stored_time.result_processor(dialect, None)
    return bind or _same, result or _same


class Driver:
    """The driver connection under one SQLAlchemy connection, for the statements above."""

    def __init__(self, connection: Connection) -> None:
        self._sa = connection
        self.postgresql = connection.dialect.name == "postgresql"
        self._bind_time, self._read_time = _time_conversions(connection.dialect)
        self._deferred: list[bytes] = []  # PostgreSQL: writes to send with the next statement (defer)

    # -- values ------------------------------------------------------------------------------------
    def at(self, value: datetime | None) -> Any:
        """A datetime as this database stores it (refuses naive ones, like the Core path)."""
        return self._bind_time(value)

    def time(self, value: Any) -> datetime:
        """A stored datetime read back: timezone-aware UTC."""
        converted: datetime = self._read_time(value)
        return converted

    def maybe_time(self, value: Any) -> datetime | None:
        return None if value is None else self.time(value)

    # -- statements --------------------------------------------------------------------------------
    def one(self, sql: Sql, params: Mapping[str, Any]) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self._execute(sql, params).fetchone()
        return row

    def all(self, sql: Sql, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = self._execute(sql, params).fetchall()
        return rows

    def run(self, sql: Sql, params: Mapping[str, Any]) -> int:
        """Runs a statement that returns no rows; the number of rows it changed."""
        count: int = self._execute(sql, params).rowcount
        return count

    def many(self, sql: Sql, rows: Iterable[Mapping[str, Any]]) -> None:
        """One executemany; nothing when there are no rows."""
        batch = list(rows)
        if not batch:
            return
        conn = self._driver()
        try:
            if self.postgresql:
                with conn.cursor() as cursor:
                    cursor.executemany(sql.postgresql, batch)
            else:
                conn.executemany(sql.sqlite, batch)
        except Exception as error:
            self._lost(error)
            raise

    def defer(self, statement: bytes) -> None:
        """PostgreSQL: send `statement` (no parameters: every value in it made by `literal`) in the same
        message as the next one: before the next statement of the transaction, or with its COMMIT
        (run_and_commit, commit_deferred). For a write whose answer nobody reads (an INSERT ... ON
        CONFLICT DO NOTHING): it costs no round trip of its own, and anything read after it sees it. A
        failure surfaces there, and the transaction then rolls back as it would have."""
        self._deferred.append(statement)

    def forget_deferred(self) -> None:
        """The transaction ended (rolled back): what was deferred is not sent."""
        self._deferred = []

    def run_and_commit(self, statement: bytes) -> None:
        """PostgreSQL: what was deferred, `statement` (no parameters: every value in it made by
        `literal`) and COMMIT, sent as one simple query, so they cost one round trip and none of the
        driver's per-statement work. The transaction ends here; SQLAlchemy's commit, which the caller
        still makes for its own bookkeeping, finds it ended and sends nothing (psycopg commits only a
        transaction in progress). When a statement fails, COMMIT is not run and the transaction is left
        failed, to be rolled back."""
        self._send([statement, b"COMMIT"])

    def commit_deferred(self) -> bool:
        """PostgreSQL: what was deferred and COMMIT, in one message (as run_and_commit). False, having
        done nothing, when nothing was deferred (the caller then commits itself)."""
        if not self._deferred:
            return False
        self._send([b"COMMIT"])
        return True

    def literal(self, value: str) -> bytes:
        """PostgreSQL: `value` as a quoted string literal, escaped by libpq (PQescapeLiteral) for this
        connection's encoding."""
        from psycopg.pq import Escaping  # imported only where PostgreSQL is in use

        escaped: bytes = Escaping(self._connection().pgconn).escape_literal(value.encode())
        return escaped

    def literal_or_null(self, value: str | None) -> bytes:
        """`literal`, or NULL for None."""
        return b"NULL" if value is None else self.literal(value)

    def time_literal(self, value: datetime) -> bytes:
        """PostgreSQL: a datetime as a timestamptz literal, as `at` stores it."""
        return self.literal(self.at(value).isoformat()) + b"::timestamptz"

    def _execute(self, sql: Sql, params: Mapping[str, Any]) -> Any:
        conn = self._driver()
        try:
            return conn.execute(sql.postgresql if self.postgresql else sql.sqlite, params)
        except Exception as error:
            self._lost(error)
            raise

    def _driver(self) -> Any:
        """The driver connection for a statement: what was deferred is sent first."""
        if self._deferred:
            self._send([])
        return self._connection()

    def _send(self, statements: list[bytes]) -> None:
        """What was deferred, then `statements`, as one simple query (no parameters)."""
        conn = self._connection()
        message, self._deferred = b"; ".join([*self._deferred, *statements]), []
        try:
            conn.execute(message, prepare=False)
        except Exception as error:
            self._lost(error)
            raise

    def _connection(self) -> Any:
        if not self._sa.in_transaction():
            self._sa.begin()  # SQLite's "begin" hook sends BEGIN IMMEDIATE (adapters.sql.engine)
        return self._sa.connection.driver_connection

    def _lost(self, error: Exception) -> None:
        """Tell SQLAlchemy when the connection is gone, as it would have noticed itself: this
        connection is dropped, and the pool forgets the others (a restarted server killed them all)."""
        if isinstance(error, sqlite3.Error):
            return
        dialect = self._sa.dialect
        driver = self._sa.connection.driver_connection
        if isinstance(error, dialect.loaded_dbapi.Error) and dialect.is_disconnect(error, driver, None):
            self._sa.invalidate(error)
            self._sa.engine.dispose(close=False)
