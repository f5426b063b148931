"""Balance alerts: `wallet.balance_low` once when the spendable balance falls below the wallet's
threshold, `wallet.depleted` once when it reaches zero or less, `wallet.recovered` once when it rises
back to the threshold (above zero, for a wallet without one).

The level a wallet was last seen at is kept with the wallet and changed under its lock, in the unit of
work of the change that moved it; so concurrent spends that cross a threshold fire its event once, and
repeated spends below it fire nothing more. A wallet's level is first set silently (its first write,
or a new threshold), and time alone (credits expiring, pending credits becoming effective) moves
nothing until the next write to the wallet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from wallet_core.errors import InvalidInput
from wallet_core.event_types import EventType
from wallet_core.money import Credits

MAX_THRESHOLD = Credits(100_000_000 * 100)


class BalanceLevel(StrEnum):
    OK = "ok"  # at or above the threshold (above zero without one)
    LOW = "low"  # below the threshold, above zero
    DEPLETED = "depleted"  # zero or less


@dataclass(frozen=True)
class AlertState:
    """A wallet's own threshold (None: the default, if any) and the level it was last seen at
    (None: never seen since alerts existed)."""

    low_balance: Credits | None = None
    level: BalanceLevel | None = None


def check_threshold(value: object) -> Credits:
    amount = Credits.amount(value, "low_balance_credits")
    if not amount.is_positive():
        raise InvalidInput("low_balance_credits", "must be greater than 0")
    if amount > MAX_THRESHOLD:
        raise InvalidInput("low_balance_credits", f"must be at most {MAX_THRESHOLD}")
    return amount


def level_of(spendable: Credits, threshold: Credits | None) -> BalanceLevel:
    if spendable.minor <= 0:
        return BalanceLevel.DEPLETED
    if threshold is not None and spendable < threshold:
        return BalanceLevel.LOW
    return BalanceLevel.OK


_ORDER = {BalanceLevel.OK: 0, BalanceLevel.LOW: 1, BalanceLevel.DEPLETED: 2}


def crossings(before: BalanceLevel | None, after: BalanceLevel, *, threshold: Credits | None) -> list[EventType]:
    """The alert events a move from level `before` to `after` fires (none from an unknown level).
    Falling from OK straight to DEPLETED fires both balance_low (when there is a threshold) and depleted."""
    if before is None or before is after:
        return []
    if _ORDER[after] > _ORDER[before]:  # falling
        fired = []
        if before is BalanceLevel.OK and threshold is not None:
            fired.append(EventType.BALANCE_LOW)
        if after is BalanceLevel.DEPLETED:
            fired.append(EventType.DEPLETED)
        return fired
    return [EventType.RECOVERED] if after is BalanceLevel.OK else []
