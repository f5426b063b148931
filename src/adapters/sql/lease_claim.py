"""Claiming due rows of a work table with a lease (webhook deliveries, automatic top-up charges): the rows
whose due time has come are taken, oldest first, their attempts counted and their due time moved to
the lease's end, so a worker killed mid-work leaves them to be claimed again when the lease ends.

- PostgreSQL: pick, lock (skipping what other workers hold: FOR UPDATE SKIP LOCKED) and lease in one
  statement, which answers each row as leased with when it was due.
- SQLite (the writer lock held by the unit of work): pick, then lease the ones picked.

The table's key must be the first of `columns`; rows are handed out by due time, then key.
"""

# ruff: noqa: S608 -- the f-strings splice in table and column names given by the code, never a value

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.sql.driver import Driver, Sql


def qualified(table: str, columns: str) -> str:
    """`a, b` of `table` as `table.a, table.b` (for RETURNING after an UPDATE ... FROM)."""
    return ", ".join(f"{table}.{c.strip()}" for c in columns.split(","))


@dataclass(frozen=True)
class LeaseClaim:
    pg_claim: Sql
    sqlite_due: Sql
    sqlite_lease: Sql

    @classmethod
    def of(cls, *, table: str, columns: str, due: str, pending: str = "") -> LeaseClaim:
        """For `table` (its key first in `columns`), rows due by their `due` column; `pending`, if
        given, a further condition ("status = 'pending'")."""
        key = columns.split(",")[0].strip()
        where = f"{pending} AND " if pending else ""
        pick = (
            f"SELECT {key}, {due} FROM {table} WHERE {where}{due} <= :p_at ORDER BY {due}, {{key}} LIMIT :p_limit"
        )
        pg = Sql.of(
            f"""
            WITH due AS ({pick.format(key=f'{key} COLLATE "C"')} FOR UPDATE SKIP LOCKED)
            UPDATE {table} SET attempts = {table}.attempts + 1, {due} = :p_lease
            FROM due WHERE {table}.{key} = due.{key}
            RETURNING {qualified(table, columns)}, due.{due}
            """
        )
        lease = Sql.of(
            f"""
            UPDATE {table} SET attempts = attempts + 1, {due} = :p_lease
            WHERE {key} IN (SELECT value FROM json_each(:p_ids))
            RETURNING {columns}
            """
        )
        return cls(
            pg_claim=Sql(sqlite="", postgresql=pg.postgresql),
            sqlite_due=Sql(sqlite=Sql.of(pick.format(key=key)).sqlite, postgresql=""),
            sqlite_lease=Sql(sqlite=lease.sqlite, postgresql=""),
        )

    def claim(self, driver: Driver, at: datetime, lease_until: datetime, limit: int) -> list[Sequence[Any]]:
        """At most `limit` due rows, leased until `lease_until`, as leased (`columns`), by due time then key."""
        params = {"p_at": driver.at(at), "p_lease": driver.at(lease_until), "p_limit": limit}
        if driver.postgresql:
            claimed = [(driver.time(row[-1]), row[:-1]) for row in driver.all(self.pg_claim, params)]
        else:
            due = {row[0]: driver.time(row[1]) for row in driver.all(self.sqlite_due, params)}
            if not due:
                return []
            leased = driver.all(self.sqlite_lease, {**params, "p_ids": json.dumps(list(due))})
            claimed = [(due[row[0]], row) for row in leased]
        return [row for _, row in sorted(claimed, key=lambda pair: (pair[0], pair[1][0]))]
