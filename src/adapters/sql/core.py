"""What the repositories' SQLAlchemy Core statements share: datetime parameters and code-point order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, bindparam

from adapters.sql.tables import UtcDateTime


def at_param(name: str) -> Any:
    """A datetime parameter, converted like the columns it is compared with."""
    return bindparam(name, type_=UtcDateTime())


def bytewise(column: ColumnElement[Any], dialect_name: str) -> ColumnElement[Any]:
    """`column` ordered by code point, the same as Python's (and the in-memory fake's), whatever the
    database locale: the "C" collation on PostgreSQL; SQLite's default BINARY collation already is."""
    return column.collate("C") if dialect_name == "postgresql" else column
