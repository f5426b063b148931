"""`schemas.validate` reads each schema once and keeps what it read (issue 14). A request must get the
very answer it got when the schema was read on every call: the same field, the same message, from the
same first problem. `_reference` is that earlier validator, verbatim, to compare against. And `loads`
skips its walk over plain ASCII bodies: it must refuse exactly what the walk refused."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrypoints.http import body as body_module
from entrypoints.http import schemas
from entrypoints.http.routes import OPERATIONS
from wallet_core.errors import InvalidInput


def _is(value: object, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    return isinstance(value, (int, float, Decimal))  # number


def _reference(value: object, schema: dict[str, Any], where: str = "body") -> None:
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            words = " or ".join(schemas._TYPE_WORDS[k] for k in kinds if k != "null")
            hint = schema.get("description", "")
            raise InvalidInput(where, f"must be {words}" + (f": {hint}" if hint and "properties" not in schema else ""))
    if isinstance(value, str) and schemas._UNSAFE.search(value):
        raise InvalidInput(where, "must not contain control, line-separator or bidirectional-override characters")
    if "const" in schema and value != schema["const"]:
        raise InvalidInput(where, f"must be {json.dumps(schema['const'])}")
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        prefix = "" if where == "body" else f"{where}."
        unknown = sorted(k for k in value if k not in properties) if extra is False else []
        if unknown:
            raise InvalidInput(where, f"has unknown field(s): {', '.join(schemas._name(k) for k in unknown)}"[:240])
        for name in schema.get("required", ()):
            if name not in value:
                raise InvalidInput(f"{prefix}{name}", "is required")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if schemas._UNSAFE.search(key):
                raise InvalidInput(where, "must not have names with control, line-separator or "
                                   "bidirectional-override characters")
            if sub is not None:
                _reference(item, sub, f"{prefix}{schemas._name(key)}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _reference(item, schema["items"], f"{where}[{index}]")


def _outcome(check: Any, value: object, schema: dict[str, Any]) -> tuple[str, str] | None:
    try:
        check(value, schema)
    except InvalidInput as exc:
        return exc.field, str(exc)
    return None


BODY_SCHEMAS = sorted({id(op.body.schema): op.body.schema for op in OPERATIONS if op.body is not None}.values(),
                      key=lambda s: json.dumps(s, sort_keys=True, default=str))
_text = st.text(alphabet=st.sampled_from(["a", "Z", "0", " ", ".", "\"", "\x00", "\n", "\u202e", "\u2028", "é",
                                          "\x85", "_"]), max_size=6)
_keys = st.sampled_from(["credits", "reason", "metadata", "spends", "amount_usd", "expires_at", "effective_at",
                         "priority", "category", "dry_run", "expires_in_seconds", "user_id", "idempotency_key",
                         "id", "type", "data", "object"]) | _text
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | _text
    | st.decimals(places=2, min_value=-10, max_value=10, allow_nan=False) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=10,
)


@pytest.mark.parametrize("index", range(len(BODY_SCHEMAS)))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(_keys, _values, max_size=5) | _values)
def test_validate_answers_as_the_validator_that_read_the_schema_on_every_call(index: int, body: object) -> None:
    schema = BODY_SCHEMAS[index]
    assert _outcome(schemas.validate, body, schema) == _outcome(_reference, body, schema)


@pytest.mark.parametrize("body", [
    {"credits": True, "reason": "x"}, {"credits": None, "reason": "x"}, {"credits": [], "reason": "x"},
    {"credits": "1", "reason": "x\u202e"}, {"credits": "1", "reason": "x", "metadata": {"k\n": "v"}},
    {"credits": "1", "reason": "x", "metadata": {"k": 1}}, {"credits": "1", "reason": "x", "metadata": []},
    {"credits": "1"}, {"reason": "x"}, {"credits": "1", "reason": "x", "extra": 1, "Zz\x00": 2}, [], "x", 1,
    {"spends": [{"user_id": "a"}, 3, None]}, {"spends": {}}, {"dry_run": 1, "reason": "x"},
    {"expires_in_seconds": True, "credits": "1", "reason": "x"}, {"priority": 1.5, "credits": 1, "reason": "r"},
])
def test_hostile_bodies_get_the_same_answer_from_every_body_schema(body: object) -> None:
    for schema in BODY_SCHEMAS:
        assert _outcome(schemas.validate, body, schema) == _outcome(_reference, body, schema)


def test_a_schema_made_on_the_fly_is_read_as_it_is_now() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}
    assert _outcome(schemas.validate, {"n": 1}, schema) is None
    other: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "string"}}, "additionalProperties": False}
    assert _outcome(schemas.validate, {"n": 1}, other) == ("n", "n must be a string")


def _loads_checking_always(text: str | bytes) -> object:
    value = body_module.loads(text)  # refuses what it finds itself
    body_module._check_text(value)  # and nothing the walk would have refused may have got through
    return value


@pytest.mark.parametrize("text", [
    '{"credits": "1.00", "reason": "bench"}', '{"reason": "\\ud800"}', '{"reason": "\\u00e9\\ud83d\\ude00"}',
    '{"reason": "\\\\ud800"}', '{"reason": "caf\u00e9"}', '{"reason": "\ud800"}', "[" * 32 + "]" * 32,
    "[" * 33 + "]" * 33, "[" * 34 + "]" * 34, '{"a": ' * 32 + "1" + "}" * 32, '{"a": ' * 33 + "1" + "}" * 33,
    '{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', b'{"reason": "\\ud800"}', b'{"reason": "\xed\xa0\x80"}',
])
def test_a_body_is_refused_or_read_as_when_every_string_and_level_was_walked(text: str | bytes) -> None:
    def outcome(read: Any) -> object:
        try:
            return read(text)
        except body_module.JsonRefused as exc:
            return f"refused: {exc}"
        except ValueError as exc:
            return f"malformed: {type(exc).__name__}"

    assert outcome(body_module.loads) == outcome(_loads_checking_always)
