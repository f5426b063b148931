"""One place that knows how each database must be connected to."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

LOCK_TIMEOUT_SECONDS = 5.0  # how long a request waits for a lock (WALLET_DB_LOCK_TIMEOUT_SECONDS) before 503
READ_ONLY = "wallet_read_only"  # the execution option a read-only unit of work sets on its connection


def create_wallet_engine(url: str, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS, **kwargs: Any) -> Engine:
    """An engine for `url` (sqlite:///... or postgresql://...); `kwargs` go to `create_engine`.

    A statement waits at most `lock_timeout` seconds for a lock another transaction holds, then fails
    ("database is locked" / LockNotAvailable), which the unit of work reports as StorageUnavailable.
    SQLite: WAL journal, foreign keys on, `lock_timeout` as the busy timeout (connect_args={"timeout":
    s} wins), and every transaction begins with BEGIN IMMEDIATE, so concurrent writers queue for the
    lock instead of failing with "database is locked" when a reader upgrades to a writer.
    PostgreSQL: psycopg 3, `lock_timeout` as the session's lock_timeout.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, lock_timeout, kwargs)
    if parsed.get_backend_name() == "postgresql":
        return _postgresql_engine(parsed, lock_timeout, kwargs)
    raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")


def _postgresql_engine(url: URL, lock_timeout: float, kwargs: dict[str, Any]) -> Engine:
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    # No pool_pre_ping: it costs a round trip on every request. After a database restart, SQLAlchemy
    # sees the first disconnect error, invalidates the whole pool and answers that request 503
    # (StorageUnavailable); the next requests get fresh connections.
    # Never hang a request on the database: give up connecting after 5 s, waiting for a lock after
    # `lock_timeout` (a wallet's row lock is held for milliseconds; longer means something is wrong),
    # and notice a dead peer by TCP keepalives. Each surfaces as StorageUnavailable -> 503, so Stripe
    # retries.
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("connect_timeout", 5)
    connect_args.setdefault("options", f"-c lock_timeout={max(1, round(lock_timeout * 1000))}")
    connect_args.setdefault("keepalives", 1)
    connect_args.setdefault("keepalives_idle", 30)
    connect_args.setdefault("keepalives_interval", 5)
    connect_args.setdefault("keepalives_count", 3)
    kwargs["connect_args"] = connect_args
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_timeout", 10)
    return create_engine(url, **kwargs)


@dataclass(frozen=True)
class WriterQueue:
    """SQLite lets one transaction write at a time (every wallet transaction begins with BEGIN
    IMMEDIATE). Threads of one process queue here for it, and each is woken the moment the one before
    it finishes, instead of polling in SQLite's busy handler, which sleeps 1, 2, 5, 10 ... 100 ms
    between tries and left requests waiting long after the lock was free (p99 in the hundreds of ms
    under 8 threads, docs/performance.md). Other processes still meet the busy timeout.

    `timeout` bounds the whole wait for the lock: a writer that waited here has only what is left of it
    for SQLite's busy timeout (adapters.sql.unit_of_work)."""

    lock: threading.RLock  # re-entrant: a unit of work opened inside another waits in SQLite, as before
    timeout: float


_WRITER_QUEUES: weakref.WeakKeyDictionary[Engine, WriterQueue] = weakref.WeakKeyDictionary()


def writer_queue(engine: Engine) -> WriterQueue | None:
    """The engine's queue of writers: SQLite engines made by create_wallet_engine have one."""
    return _WRITER_QUEUES.get(engine)


def _sqlite_engine(url: URL, lock_timeout: float, kwargs: dict[str, Any]) -> Engine:
    connect_args = {"timeout": lock_timeout, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _WRITER_QUEUES[engine] = WriterQueue(threading.RLock(), float(connect_args["timeout"]))
    in_memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN; "begin" below does
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # Straight to the driver: every unit of work begins here, and SQLAlchemy's execute costs
        # several times the statement. A failure ("database is locked") is translated like any other
        # driver error (adapters.sql.unit_of_work). A read-only unit of work begins a plain (deferred)
        # transaction: in WAL mode it reads a snapshot beside the writer and holds up nobody.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.connection.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine
