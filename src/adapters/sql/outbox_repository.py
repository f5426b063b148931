"""Outbox over one SQLAlchemy connection: outbound events written in the transaction of the change they
describe, numbered once committed (table `outbound_events`, 0008).

Writing (on the hot path of every spend and grant): `add` only keeps the event; when the unit of work
commits, every event of the transaction is written with one multi-row INSERT (INSERT ... VALUES (...),
(...)), or nothing when there are none; rollback and leaving without commit drop what was kept.
- SQLite (`flush`, just before COMMIT): a statement with parameters, a text per number of rows (nearly
  every booking has one or two events), kept in sqlite3's statement cache.
- PostgreSQL (`flush_and_commit`): the INSERT and the COMMIT in one simple query (Driver.run_and_commit),
  the values escaped by libpq, so the events cost no round trip of their own and none of psycopg's
  per-statement work: about half of what a prepared INSERT before COMMIT cost (bench/outbox.py,
  docs/performance.md). A refused INSERT leaves COMMIT unrun: nothing of the transaction is committed.
The INSERT fills the primary key (`seq`, in the order added), the unique id and the partial index of
unnumbered events; the indexes on `number` are partial (numbered rows only), so it touches none of them.

Publishing: `publish` locks the one row of `event_publication` (FOR UPDATE on PostgreSQL; on SQLite the
transaction already holds the writer lock), so publishers take turns, then numbers the unnumbered events
it can see, in `seq` order, from the last number given, and stores the new last number. Under READ
COMMITTED it sees committed events only, so an event whose transaction commits after a later one's (a
lower `seq`, which PostgreSQL's sequence gave out first) is numbered by the next publish, after it: a
consumer paging by number never skips an event that committed late.

Cost in statements: add 0; flush 1 (none without events); flush_and_commit 1, with the COMMIT; publish 2
when there is nothing new, 3 otherwise; page and get 1 (get 0 for an event added in this transaction).
"""

# ruff: noqa: S608 -- the f-strings splice in the constant column lists below, never a value

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from adapters.sql.driver import Driver, Sql
from wallet_core.event_types import EventType
from wallet_core.outbound_events import WalletEvent

EVENT_COLUMNS = "number, id, type, user_id, created_at, data"
_ROWS_PER_INSERT = 100  # 500 parameters, within every SQLite's limit (and far within PostgreSQL's)


@cache
def _add_events(rows: int) -> Sql:
    """One INSERT with `rows` rows of VALUES (a text per count, cached here; psycopg prepares each
    once it has run a few times, and sqlite3 keeps it in its statement cache). Rows go in, and take
    their `seq`, in the order given."""
    values = ", ".join(f"(:i{n}, :t{n}, :u{n}, :a{n}, :d{n})" for n in range(rows))
    return Sql.of(f"INSERT INTO outbound_events (id, type, user_id, created_at, data) VALUES {values}")


_INSERT_EVENTS = b"INSERT INTO outbound_events (id, type, user_id, created_at, data) VALUES "

_LOCK_PUBLICATION = Sql.of(
    "SELECT last_number FROM event_publication WHERE id = 1",
    postgresql="SELECT last_number FROM event_publication WHERE id = 1 FOR UPDATE",
)
# Only if the row is missing (0008 inserts it): made from the highest number given, and locked.
# (`WHERE true`: SQLite's parser needs it between a SELECT and ON CONFLICT.)
_CREATE_PUBLICATION = Sql.of(
    """
    INSERT INTO event_publication (id, last_number)
    SELECT 1, COALESCE(MAX(number), 0) FROM outbound_events WHERE true
    ON CONFLICT (id) DO UPDATE SET last_number = event_publication.last_number
    RETURNING last_number
    """
)
_SET_LAST_NUMBER = Sql.of("UPDATE event_publication SET last_number = :p_last WHERE id = 1")
# The oldest unnumbered events (partial index ix_outbound_events_unnumbered), numbered from p_last + 1 in
# `seq` order.
_NUMBER_EVENTS = Sql.of(
    f"""
    WITH fresh AS (
        SELECT seq FROM outbound_events WHERE number IS NULL ORDER BY seq LIMIT :p_limit
    ), numbered AS (
        SELECT seq, CAST(:p_last AS bigint) + ROW_NUMBER() OVER (ORDER BY seq) AS n FROM fresh
    )
    UPDATE outbound_events SET number = numbered.n FROM numbered WHERE outbound_events.seq = numbered.seq
    RETURNING {", ".join(f"outbound_events.{c.strip()}" for c in EVENT_COLUMNS.split(","))}
    """
)
_EVENT_BY_ID = Sql.of(f"SELECT {EVENT_COLUMNS} FROM outbound_events WHERE id = :p_id")
# A page by number: the unique index on number, or (user_id, number) / (type, number) when filtered.
_PAGE = "SELECT {columns} FROM outbound_events WHERE number > :p_after{filters} ORDER BY number LIMIT :p_limit"
_PAGES = {
    (by_type, by_user): Sql.of(
        _PAGE.format(
            columns=EVENT_COLUMNS,
            filters=(" AND type = :p_type" if by_type else "") + (" AND user_id = :p_user" if by_user else ""),
        )
    )
    for by_type in (False, True)
    for by_user in (False, True)
}


class SqlOutbox:
    """The outbox as seen through the unit of work's driver connection."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._kept: list[WalletEvent] = []  # added in this transaction, written by flush()

    def add(self, event: WalletEvent) -> None:
        self._kept.append(event)

    def flush(self) -> None:
        """Write the events added in this transaction (the unit of work calls it just before COMMIT)."""
        events, self._kept = self._kept, []
        if not events:
            return
        at = self._driver.at
        for start in range(0, len(events), _ROWS_PER_INSERT):
            chunk = events[start : start + _ROWS_PER_INSERT]
            params: dict[str, Any] = {}
            for n, e in enumerate(chunk):
                params[f"i{n}"] = e.id
                params[f"t{n}"] = e.type.value
                params[f"u{n}"] = e.user_id
                params[f"a{n}"] = at(e.created_at)
                params[f"d{n}"] = _json(e)
            self._driver.run(_add_events(len(chunk)), params)

    def flush_and_commit(self) -> bool:
        """PostgreSQL: write the events added in this transaction and commit it, in one message. False,
        having done nothing, on SQLite or when there are no events (the caller then commits itself)."""
        if not self._kept or not self._driver.postgresql:
            return False
        events, self._kept = self._kept, []
        literal = self._driver.literal
        rows = [
            b"("
            + b", ".join(
                (
                    literal(e.id),
                    literal(e.type.value),
                    literal(e.user_id),
                    self._driver.time_literal(e.created_at),
                    literal(_json(e)),
                )
            )
            + b")"
            for e in events
        ]
        self._driver.run_and_commit(_INSERT_EVENTS + b", ".join(rows))
        return True

    def discard(self) -> None:
        """Forget the events added in this transaction (it rolled back)."""
        self._kept = []

    def publish(self, limit: int) -> list[tuple[int, WalletEvent]]:
        row = self._driver.one(_LOCK_PUBLICATION, {}) or self._driver.one(_CREATE_PUBLICATION, {})
        assert row is not None  # an upsert with RETURNING always returns its row
        last = int(row[0])
        rows = self._driver.all(_NUMBER_EVENTS, {"p_last": last, "p_limit": limit})
        if not rows:
            return []
        numbered = sorted((self._event_of(r) for r in rows), key=lambda pair: pair[0])
        self._driver.run(_SET_LAST_NUMBER, {"p_last": numbered[-1][0]})
        return numbered

    def page(
        self, after: int, limit: int, *, type: str | None = None, user_id: str | None = None
    ) -> list[tuple[int, WalletEvent]]:
        statement = _PAGES[(type is not None, user_id is not None)]
        rows = self._driver.all(statement, {"p_after": after, "p_limit": limit, "p_type": type, "p_user": user_id})
        return [self._event_of(r) for r in rows]

    def get(self, event_id: str) -> WalletEvent | None:
        kept = next((e for e in self._kept if e.id == event_id), None)
        if kept is not None:
            return kept
        row = self._driver.one(_EVENT_BY_ID, {"p_id": event_id})
        return None if row is None else self._event_of(row)[1]

    def _event_of(self, row: Sequence[Any]) -> tuple[int, WalletEvent]:
        number, event_id, event_type, user_id, created_at, data = row
        event = WalletEvent(event_id, EventType(event_type), self._driver.time(created_at), user_id, json.loads(data))
        return (-1 if number is None else int(number)), event


def _json(event: WalletEvent) -> str:
    return json.dumps(dict(event.data), ensure_ascii=False, separators=(",", ":"))
