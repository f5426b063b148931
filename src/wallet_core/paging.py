"""Page sizes: how many rows one read may ask for (history, outbound events, webhook deliveries)."""

from __future__ import annotations

from wallet_core.errors import InvalidInput


def check_page_size(value: object, maximum: int, field: str = "limit") -> int:
    """A whole number from 1 to `maximum`, given as an int or as the digits of a query string (at most
    4 of them: a longer string is refused before it is read as a number, so a hostile one costs
    nothing). Raises InvalidInput naming `field`."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 4:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(field, f"must be a whole number from 1 to {maximum}")
    return value
