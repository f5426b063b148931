"""Exact amounts: US dollars in cents and credits in hundredths of a credit. Never float."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from wallet_core.errors import InvalidInput

_CENT = Decimal("0.01")
# Plain ASCII decimal notation only: no exponents, underscores, or non-ASCII digits.
_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]{1,20}(\.[0-9]{1,20})?")
# Amounts must stay below this before any arithmetic: a trillion units is no real payment.
AMOUNT_BELOW = 10**12
_MAX_ABS_MINOR = AMOUNT_BELOW * 100
# An amount as a caller writes it in text: greater than 0, at most 12 digits before the point and 2
# after it; no sign, spaces, exponent or leading zeros ("10.00", "7", "0.50"). The OpenAPI document
# shows this very regex as the `pattern` of every amount (entrypoints.http.schemas): one rule.
AMOUNT_TEXT = re.compile(
    rf"[1-9][0-9]{{0,{len(str(AMOUNT_BELOW)) - 2}}}(\.[0-9]{{1,2}})?|0\.(0[1-9]|[1-9][0-9]?)"
)


def parse_decimal(value: object, field: str) -> Decimal:
    """Turn a JSON string/number (already a Decimal when parsed by us) into an exact Decimal.

    Floats are refused because they cannot say what the caller meant; booleans are not numbers.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidInput(field, 'must be a decimal number such as "10.00"')
    if isinstance(value, float):
        raise InvalidInput(field, "must be an exact decimal, not a binary float")
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lower().lstrip("+-") in ("nan", "inf", "infinity", "snan"):
            raise InvalidInput(field, "must be a finite number")
        if not _DECIMAL_TEXT.fullmatch(text):
            raise InvalidInput(field, 'must be a decimal number such as "10.00"')
        number = Decimal(text)
    else:
        raise InvalidInput(field, 'must be a decimal number such as "10.00"')
    if not number.is_finite():
        raise InvalidInput(field, "must be a finite number")
    if abs(number) >= Decimal(_MAX_ABS_MINOR) / 100:
        raise InvalidInput(field, "is far too large")
    if number != number.quantize(_CENT):
        raise InvalidInput(field, "must have at most 2 decimal places")
    return number.quantize(_CENT)


def parse_amount(value: object, field: str) -> Decimal:
    """An amount a caller gives (HTTP, CLI, library): a string only as AMOUNT_TEXT writes it; a number
    (an int, or a Decimal as JSON numbers are read) by its exact value, with the same limits. Zero and
    negative values still parse, so that each use case names its own limit ("at least 1.00")."""
    number = parse_decimal(value, field)
    if isinstance(value, str) and number > 0 and not AMOUNT_TEXT.fullmatch(value):
        raise InvalidInput(field, 'must be written like "10.00": digits, at most 2 after the point; '
                           "no sign, spaces, exponent or leading zeros")
    return number


@dataclass(frozen=True, order=True)
class Usd:
    """An amount of US dollars, held as integer cents."""

    cents: int

    @classmethod
    def parse(cls, value: object, field: str = "amount_usd") -> Usd:
        return cls(int(parse_decimal(value, field) * 100))

    @classmethod
    def amount(cls, value: object, field: str = "amount_usd") -> Usd:
        """Dollars a caller asks for (see parse_amount)."""
        return cls(int(parse_amount(value, field) * 100))

    @property
    def decimal(self) -> Decimal:
        return Decimal(_two_places(self.cents))

    def __str__(self) -> str:
        return _two_places(self.cents)


@dataclass(frozen=True, order=True)
class Credits:
    """An amount of credits, held as integer hundredths of a credit."""

    minor: int

    @classmethod
    def parse(cls, value: object, field: str = "credits") -> Credits:
        return cls(int(parse_decimal(value, field) * 100))

    @classmethod
    def amount(cls, value: object, field: str = "credits") -> Credits:
        """Credits a caller asks for (see parse_amount)."""
        return cls(int(parse_amount(value, field) * 100))

    @classmethod
    def zero(cls) -> Credits:
        return cls(0)

    @property
    def decimal(self) -> Decimal:
        return Decimal(_two_places(self.minor))

    def __str__(self) -> str:
        return _two_places(self.minor)

    def __add__(self, other: Credits) -> Credits:
        return Credits(self.minor + other.minor)

    def __sub__(self, other: Credits) -> Credits:
        return Credits(self.minor - other.minor)

    def __neg__(self) -> Credits:
        return Credits(-self.minor)

    def is_positive(self) -> bool:
        return self.minor > 0


def _two_places(minor: int) -> str:
    """Exact text of an integer count of hundredths, whatever its size (no Decimal context limits)."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole}.{cents:02d}"


def credits_for(amount: Usd, credits_per_usd: Decimal) -> Credits:
    """Credits bought by `amount`: amount * rate, rounded half-up to 2 places (hundredths)."""
    exact = amount.decimal * credits_per_usd
    return Credits(int(exact.quantize(_CENT, rounding=ROUND_HALF_UP) * 100))
