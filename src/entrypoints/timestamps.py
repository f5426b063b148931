"""Instants from outside (REST bodies, CLI flags): ISO 8601 with a timezone, never a guessed zone."""

from __future__ import annotations

from datetime import UTC, datetime

from wallet_core.errors import InvalidInput

_EXAMPLE = '"2027-01-01T00:00:00Z"'


def parse_instant(value: object, field: str) -> datetime:
    """'2027-01-01T00:00:00Z' or '...+02:00' -> an aware datetime in UTC. A naive or unreadable value
    is refused: a time without a zone would mean a different instant on every server."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput(field, f"must be an ISO 8601 time with a timezone, e.g. {_EXAMPLE}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(field, f"must be an ISO 8601 time with a timezone, e.g. {_EXAMPLE}") from None
    if parsed.utcoffset() is None:
        raise InvalidInput(field, f"needs a timezone offset, e.g. {_EXAMPLE} or ending in +02:00")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, "is out of range") from None
