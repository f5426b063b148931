"""Money is exact: dollars in cents, credits in hundredths, never a float anywhere."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_core.errors import InvalidInput
from wallet_core.money import AMOUNT_TEXT, Credits, Usd, credits_for

ACCEPTED = [
    ("10", 1000),
    ("10.5", 1050),
    ("10.50", 1050),
    ("0.01", 1),
    (" 7.25 ", 725),  # surrounding whitespace from a form field is forgiven
    (10, 1000),
    (0, 0),
    (Decimal("0.01"), 1),
    (Decimal("123.45"), 12345),
    ("999999999999.99", 99999999999999),  # the largest amount still accepted
]


@pytest.mark.parametrize(("value", "minor"), ACCEPTED)
def test_usd_parses_exact_amounts_to_cents(value: object, minor: int) -> None:
    assert Usd.parse(value).cents == minor


@pytest.mark.parametrize(("value", "minor"), ACCEPTED)
def test_credits_parse_exact_amounts_to_hundredths(value: object, minor: int) -> None:
    assert Credits.parse(value).minor == minor


REFUSED = [
    pytest.param(10.5, "float", id="float"),
    pytest.param(0.1, "float", id="float-0.1"),
    pytest.param(True, "decimal number", id="bool-true"),
    pytest.param(False, "decimal number", id="bool-false"),
    pytest.param(None, "decimal number", id="none"),
    pytest.param("", "decimal number", id="empty"),
    pytest.param("   ", "decimal number", id="blank"),
    pytest.param("abc", "decimal number", id="abc"),
    pytest.param("10 USD", "decimal number", id="with-unit"),
    pytest.param("1,000.00", "decimal number", id="thousands-comma"),
    pytest.param("NaN", "finite", id="nan"),
    pytest.param("sNaN", "finite", id="snan"),
    pytest.param("Infinity", "finite", id="inf"),
    pytest.param("-Infinity", "finite", id="minus-inf"),
    pytest.param(Decimal("NaN"), "finite", id="decimal-nan"),
    pytest.param(Decimal("Infinity"), "finite", id="decimal-inf"),
    pytest.param("1e400", "decimal number", id="1e400"),
    pytest.param("1_000", "decimal number", id="underscore"),
    pytest.param("\u0661\u0660", "decimal number", id="arabic-indic-digits"),
    pytest.param("1000000000000", "too large", id="one-trillion"),
    pytest.param(10**12, "too large", id="int-trillion"),
    pytest.param(-(10**30), "too large", id="huge-negative-int"),
    pytest.param(Decimal("1E+999999"), "too large", id="decimal-huge-exponent"),
    pytest.param("9" * 33, "decimal number", id="33-digit-string"),
    pytest.param("1.001", "2 decimal places", id="three-places"),
    pytest.param("0.005", "2 decimal places", id="half-cent"),
    pytest.param(Decimal("0.001"), "2 decimal places", id="decimal-three-places"),
    pytest.param("1e-400", "decimal number", id="tiny-exponent"),
    pytest.param([10], "decimal number", id="list"),
    pytest.param({"amount": 10}, "decimal number", id="dict"),
]


@pytest.mark.parametrize(("value", "problem"), REFUSED)
def test_usd_refuses_anything_that_is_not_an_exact_amount(value: object, problem: str) -> None:
    with pytest.raises(InvalidInput) as err:
        Usd.parse(value, "amount_usd")
    assert err.value.field == "amount_usd"
    assert problem in err.value.description
    assert err.value.description.startswith("amount_usd ")


@pytest.mark.parametrize(("value", "problem"), REFUSED)
def test_credits_refuse_anything_that_is_not_an_exact_amount(value: object, problem: str) -> None:
    with pytest.raises(InvalidInput) as err:
        Credits.parse(value, "credits")
    assert err.value.field == "credits"
    assert problem in err.value.description


@pytest.mark.parametrize("value", ["1.500", "1.5000000", Decimal("1.500"), "0.010"])
def test_trailing_zeros_beyond_two_places_are_accepted_because_the_value_is_exact(value: object) -> None:
    # "1.500" means exactly one dollar fifty: nothing is lost, so it is not refused.
    expected = 150 if str(value).startswith("1") else 1
    assert Usd.parse(value).cents == expected
    assert Credits.parse(value).minor == expected


def test_negative_amounts_parse_so_that_the_policy_can_name_the_limit() -> None:
    assert Usd.parse("-5").cents == -500
    assert Credits.parse("-0.01").minor == -1


@pytest.mark.parametrize(
    ("cents", "text"),
    [(0, "0.00"), (1, "0.01"), (10, "0.10"), (1050, "10.50"), (100_000, "1000.00"), (-150, "-1.50")],
)
def test_str_always_shows_two_decimals(cents: int, text: str) -> None:
    assert str(Usd(cents)) == text
    assert str(Credits(cents)) == text


def test_parse_then_str_round_trips() -> None:
    assert str(Usd.parse("10.5")) == "10.50"
    assert str(Credits.parse(7)) == "7.00"


def test_credits_arithmetic_is_exact() -> None:
    a, b = Credits.parse("0.10"), Credits.parse("0.20")
    assert a + b == Credits.parse("0.30")  # 0.1 + 0.2 == 0.3, unlike floats
    assert b - a == Credits.parse("0.10")
    assert -a == Credits(-10)
    assert Credits.zero() == Credits(0)
    assert not Credits.zero().is_positive()
    assert Credits(1).is_positive()


def test_amounts_compare_by_value() -> None:
    assert Usd.parse("0.99") < Usd.parse("1") < Usd.parse("1.01")
    assert Usd.parse("10") == Usd.parse("10.00") == Usd.parse(Decimal("10.0"))


@pytest.mark.parametrize(
    ("usd", "rate", "credits"),
    [
        ("1.00", Decimal("100"), "100.00"),
        ("1.00", Decimal("3.333"), "3.33"),  # 3.333 rounds down
        ("1.00", Decimal("3.335"), "3.34"),  # exactly half rounds up
        ("1.00", Decimal("3.345"), "3.35"),  # half-up, not banker's rounding (which would give 3.34)
        ("1.00", Decimal("3.3449"), "3.34"),
        ("0.01", Decimal("0.5"), "0.01"),  # half a hundredth rounds up to one
        ("0.01", Decimal("0.4999"), "0.00"),
        ("2.50", Decimal("1.5"), "3.75"),
        ("500.00", Decimal("100"), "50000.00"),
    ],
)
def test_credits_for_rounds_half_up_to_hundredths(usd: str, rate: Decimal, credits: str) -> None:
    assert credits_for(Usd.parse(usd), rate) == Credits.parse(credits)


@given(st.integers(min_value=100, max_value=50_000))
def test_credits_at_100_per_usd_are_exact_for_every_cent_amount(cents: int) -> None:
    bought = credits_for(Usd(cents), Decimal(100))
    assert bought.minor == cents * 100


@given(st.integers(min_value=-(10**14) + 1, max_value=10**14 - 1))
def test_str_and_parse_round_trip_for_every_amount_in_range(cents: int) -> None:
    assert Usd.parse(str(Usd(cents))).cents == cents
    assert Credits.parse(str(Credits(cents))).minor == cents


AMOUNT_ACCEPTED = [("10.00", 1000), ("10", 1000), ("10.5", 1050), ("0.01", 1), ("0.5", 50), ("0.50", 50),
                   ("999999999999.99", 99999999999999), (10, 1000), (Decimal("1.500"), 150), (Decimal("1E+2"), 10000)]
AMOUNT_BADLY_WRITTEN = [" 10.00 ", "+10.00", "1.0000000000000000000", "1.500", "010", "00.50", "0.010", "+0.01"]


@pytest.mark.parametrize(("value", "minor"), AMOUNT_ACCEPTED)
def test_an_amount_a_caller_gives_parses_exactly(value: object, minor: int) -> None:
    assert Credits.amount(value).minor == minor
    assert Usd.amount(value).cents == minor


@pytest.mark.parametrize("text", AMOUNT_BADLY_WRITTEN)
def test_an_amount_given_as_text_must_be_written_as_the_api_documents(text: str) -> None:
    """The value is fine (Credits.parse, for code and settings, reads it), the spelling is not."""
    assert Credits.parse(text).is_positive()
    assert not AMOUNT_TEXT.fullmatch(text)
    with pytest.raises(InvalidInput) as err:
        Credits.amount(text, "credits")
    assert err.value.field == "credits" and "written like" in err.value.description


@pytest.mark.parametrize("value", ["0", "0.00", "-5", "-0.01", 0, Decimal("-1")])
def test_zero_and_negative_amounts_parse_so_that_each_use_case_names_its_limit(value: object) -> None:
    assert not Credits.amount(value).is_positive()


@pytest.mark.parametrize(("value", "problem"), [("1000000000000", "too large"), ("1.001", "2 decimal places"),
                                                (Decimal("0.001"), "2 decimal places"), ("NaN", "finite"),
                                                (1.5, "float")])
def test_an_amount_a_caller_gives_is_refused_as_any_value_is(value: object, problem: str) -> None:
    with pytest.raises(InvalidInput) as err:
        Usd.amount(value, "amount_usd")
    assert problem in err.value.description
