"""HoldRepository over one SQLAlchemy connection: holds and their allocations, SQLAlchemy Core
statements built once per dialect. Cost in statements sent: add 2 (the hold, its allocations); get,
update and expired_open 1."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, select, update

from adapters.sql.core import at_param, bytewise
from adapters.sql.tables import hold_allocations, holds
from wallet_core.errors import NotFound
from wallet_core.holds import Hold, HoldStatus
from wallet_core.money import Credits

_h = holds.c
_a = hold_allocations.c

_ADD_HOLD = holds.insert()
_ADD_ALLOCATIONS = hold_allocations.insert()
_UPDATE_HOLD = (
    update(holds)
    .where(_h.id == bindparam("p_id"))
    .values(status=bindparam("p_status"), captured=bindparam("p_captured"), updated_at=at_param("p_at"))
)


@dataclass(frozen=True)
class _Statements:
    """What differs by dialect: ordering by code point."""

    get: Select[Any]
    expired_open: Select[Any]


@cache
def _statements(dialect_name: str) -> _Statements:
    hold_with_allocations = (
        select(holds, _a.lot_id.label("allocated_lot"), _a.amount.label("allocated"))
        .select_from(holds.outerjoin(hold_allocations, _a.hold_id == _h.id))
        .where(_h.id == bindparam("p_id"))
        .order_by(_a.position)
    )
    due = (
        select(holds)
        .where(_h.status == HoldStatus.OPEN.value, _h.expires_at <= at_param("p_now"))
        .order_by(_h.expires_at, bytewise(_h.id, dialect_name))
        .limit(bindparam("p_limit"))
        .subquery("due")
    )
    due_with_allocations = (
        select(due, _a.lot_id.label("allocated_lot"), _a.amount.label("allocated"))
        .select_from(due.outerjoin(hold_allocations, _a.hold_id == due.c.id))
        .order_by(due.c.expires_at, bytewise(due.c.id, dialect_name), _a.position)
    )
    return _Statements(get=hold_with_allocations, expired_open=due_with_allocations)


class SqlHoldRepository:
    """The holds as seen through `connection`; transactions are the unit of work's business."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._sql = _statements(connection.dialect.name)

    def add(self, hold: Hold) -> None:
        self._conn.execute(
            _ADD_HOLD,
            {
                "id": hold.id,
                "user_id": hold.user_id,
                "amount": hold.amount.minor,
                "status": hold.status.value,
                "captured": hold.captured.minor,
                "reason": hold.reason,
                "reference_id": hold.reference_id,
                "created_at": hold.created_at,
                "expires_at": hold.expires_at,
                "updated_at": hold.created_at,
            },
        )
        allocations = [
            {"hold_id": hold.id, "position": n, "lot_id": lot_id, "amount": amount.minor}
            for n, (lot_id, amount) in enumerate(hold.allocations)
        ]
        if allocations:  # one executemany (one multi-row INSERT where the driver can)
            self._conn.execute(_ADD_ALLOCATIONS, allocations)

    def get(self, hold_id: str) -> Hold | None:
        found = _holds(self._conn.execute(self._sql.get, {"p_id": hold_id}))
        return found[0] if found else None

    def update(self, hold_id: str, status: HoldStatus, captured: Credits, at: datetime) -> None:
        result = self._conn.execute(
            _UPDATE_HOLD,
            {"p_id": hold_id, "p_status": status.value, "p_captured": captured.minor, "p_at": at},
        )
        if result.rowcount == 0:
            raise NotFound(f"no hold {hold_id}")

    def expired_open(self, at: datetime, limit: int) -> list[Hold]:
        return _holds(self._conn.execute(self._sql.expired_open, {"p_now": at, "p_limit": limit}))


def _holds(rows: Iterable[Row[Any]]) -> list[Hold]:
    """Holds from rows of (hold columns, one allocation), ordered by hold then allocation position."""
    found: list[Hold] = []
    allocations: dict[str, list[tuple[str, Credits]]] = {}
    heads: dict[str, Row[Any]] = {}
    for row in rows:
        if row.id not in heads:
            heads[row.id] = row
            allocations[row.id] = []
        if row.allocated_lot is not None:
            allocations[row.id].append((row.allocated_lot, Credits(row.allocated)))
    for hold_id, row in heads.items():
        found.append(
            Hold(
                id=hold_id,
                user_id=row.user_id,
                amount=Credits(row.amount),
                status=HoldStatus(row.status),
                created_at=row.created_at,
                expires_at=row.expires_at,
                allocations=tuple(allocations[hold_id]),
                reference_id=row.reference_id,
                captured=Credits(row.captured),
                reason=row.reason,
            )
        )
    return found
