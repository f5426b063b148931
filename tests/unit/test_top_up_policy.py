"""The top-up policy: which amounts a buyer may pay, and how many credits each buys."""

from __future__ import annotations

from decimal import Decimal

import pytest

from wallet_core.errors import InvalidInput
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUpPolicy


@pytest.mark.parametrize(
    ("amount", "credits"),
    [
        ("1.00", "100.00"),
        ("1.01", "101.00"),
        ("10.50", "1050.00"),
        ("499.99", "49999.00"),
        ("500.00", "50000.00"),
    ],
)
def test_amounts_within_the_limits_buy_credits_at_the_rate(
    policy: TopUpPolicy, amount: str, credits: str
) -> None:
    assert policy.check(Usd.parse(amount)) == Credits.parse(credits)


@pytest.mark.parametrize("amount", ["0.99", "0.01", "0", "-1.00", "-500.00"])
def test_amounts_below_the_minimum_are_refused_naming_the_minimum(policy: TopUpPolicy, amount: str) -> None:
    with pytest.raises(InvalidInput) as err:
        policy.check(Usd.parse(amount))
    assert err.value.field == "amount_usd"
    assert err.value.description == "amount_usd must be at least 1.00 USD"


@pytest.mark.parametrize("amount", ["500.01", "501", "100000.00"])
def test_amounts_above_the_maximum_are_refused_naming_the_maximum(policy: TopUpPolicy, amount: str) -> None:
    with pytest.raises(InvalidInput) as err:
        policy.check(Usd.parse(amount))
    assert err.value.field == "amount_usd"
    assert err.value.description == "amount_usd must be at most 500.00 USD"


def test_limits_come_from_the_policy_not_hard_coded() -> None:
    strict = TopUpPolicy(min_amount=Usd(500), max_amount=Usd(2_000), credits_per_usd=Decimal(10))
    assert strict.check(Usd(500)) == Credits.parse("50")
    with pytest.raises(InvalidInput, match=r"at least 5\.00 USD"):
        strict.check(Usd(499))
    with pytest.raises(InvalidInput, match=r"at most 20\.00 USD"):
        strict.check(Usd(2_001))


def test_an_amount_that_buys_no_credits_is_refused() -> None:
    # A rate so low that the minimum buys less than a hundredth of a credit must not take money for nothing.
    stingy = TopUpPolicy(min_amount=Usd(1), max_amount=Usd(100), credits_per_usd=Decimal("0.1"))
    with pytest.raises(InvalidInput, match="buys no credits"):
        stingy.check(Usd(1))
    assert stingy.check(Usd(5)) == Credits(1)  # 0.05 USD * 0.1 = 0.005 -> rounds half-up to 0.01


def test_fractional_rate_rounds_half_up() -> None:
    odd = TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal("3.345"))
    assert odd.check(Usd(100)) == Credits.parse("3.35")
