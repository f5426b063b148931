"""has_control_characters refuses exactly the characters its docstring names, across all of Unicode
(the check every id, reason and key of every request goes through)."""

from __future__ import annotations

from wallet_core.ids import has_control_characters


def refused(code: int) -> bool:
    """The rule, spelled out: C0 controls, DEL and C1 controls, lone surrogates, the line and paragraph
    separators, bidi embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069)."""
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or code in (0x2028, 0x2029)
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
    )


def test_every_code_point_is_judged_by_the_rule() -> None:
    wrong = [code for code in range(0x110000) if has_control_characters(f"a{chr(code)}b") != refused(code)]
    assert wrong == []


def test_a_plain_value_passes_and_one_bad_character_anywhere_is_found() -> None:
    assert not has_control_characters("user_42 bought 10 credits, café ☕ 𝄞")
    assert not has_control_characters("")
    for bad in ("\x00", "\n", "\u202e", "\ud800"):
        assert has_control_characters(bad + "x" * 100) and has_control_characters("x" * 100 + bad)
