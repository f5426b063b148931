"""Reading request bodies: JSON objects only, exact decimals, bounded size, checked against the schema
the route declares (entrypoints.http.schemas), so unknown fields and wrong JSON types are 422."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NoReturn

import falcon
import falcon.media

from entrypoints.http.schemas import Schema, validate
from wallet_core.errors import InvalidInput

MAX_BODY_BYTES = 64 * 1024
MAX_BATCH_BODY_BYTES = 1024 * 1024  # a batch of up to 1,000 spends
BATCH_SPENDS_PATH = "/api/v1/admin/spends"  # the one route whose bodies may be that large


class JsonRefused(ValueError):
    """The body parses as JSON but is not something the wallet reads (400, saying why)."""


MAX_DEPTH = 32  # no request body nests deeper than a few levels
_HUGE_EXPONENT = 1000  # far past any amount; a Decimal this large only ever gets refused


def _no_constants(name: str) -> NoReturn:
    raise JsonRefused(f"{name} is not a number")


def _decimal(text: str) -> Decimal:
    """Numbers with a fraction or exponent become exact Decimals, never floats. One whose exponent is
    astronomically large (1e999999999) stands as +-1E+1000, which every amount check refuses as far
    too large: its exact digits cannot matter, and arithmetic on it would overflow. An exponent of
    more than 9 digits is read from the text, before Decimal, which cannot hold it (1e10**18 is
    decimal.InvalidOperation): a tiny one stands as +-1E-1000 (refused as too precise), or 0."""
    mantissa, _, exponent = text.lower().partition("e")
    if len(exponent.lstrip("+-").lstrip("0")) > 9:
        if not Decimal(mantissa):
            return Decimal(mantissa)  # zero, whatever the exponent
        sign = "-" if mantissa.startswith("-") else ""
        return Decimal(f"{sign}1E{'-' if exponent.startswith('-') else '+'}{_HUGE_EXPONENT}")
    number = Decimal(text)
    if number and number.adjusted() > _HUGE_EXPONENT:
        return Decimal(f"{'-' if number.is_signed() else ''}1E+{_HUGE_EXPONENT}")
    return number


def _integer(text: str) -> int | Decimal:
    """Whole numbers stay ints; one with more digits than any amount could have stands, like a huge
    decimal, as +-1E+1000 (Python refuses to read more than 4300 digits anyway)."""
    if len(text) > 40:
        return Decimal(f"{'-' if text.startswith('-') else ''}1E+{_HUGE_EXPONENT}")
    return int(text)


def _check_text(value: object, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise JsonRefused(f"it nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise JsonRefused("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, depth + 1)
            _check_text(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_text(item, depth + 1)


def loads(text: str | bytes) -> Any:
    """Strict JSON: exact decimals, no NaN or Infinity, no lone surrogates, bounded nesting."""
    try:
        value = json.loads(text, parse_float=_decimal, parse_int=_integer, parse_constant=_no_constants)
    except RecursionError:
        raise JsonRefused(f"it nests deeper than {MAX_DEPTH} levels") from None
    except ArithmeticError:  # decimal's signals: whatever number slips past _decimal is refused, not a 500
        raise JsonRefused("a number is out of any range") from None
    if not _plain(text):
        _check_text(value)
    return value


def _plain(text: str | bytes) -> bool:
    """Text `_check_text` could find nothing wrong in, seen without parsing it: ASCII (so no surrogate as
    such) without a \\u escape (so none written as one), and too few brackets for anything to nest
    deeper than MAX_DEPTH. Most bodies; a walk over what they parse to is then saved."""
    return (isinstance(text, str) and text.isascii() and "\\u" not in text
            and text.count("{") + text.count("[") <= MAX_DEPTH)


# Answers as json.dumps(media, ensure_ascii=False) (Falcon's default), with one encoder for every answer.
json_handler = falcon.media.JSONHandler(dumps=json.JSONEncoder(ensure_ascii=False).encode, loads=loads)


def _malformed(exc: ValueError) -> falcon.HTTPBadRequest:
    why = f": {exc}" if isinstance(exc, JsonRefused) else ""
    return falcon.HTTPBadRequest(title="Malformed JSON", description=f"the body is not valid JSON{why}")


def too_large(max_bytes: int) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(title="Body too large", description=f"the body must be at most {max_bytes} bytes")


def _check_size_and_type(req: falcon.Request, max_bytes: int) -> None:
    if req.content_length is not None and req.content_length > max_bytes:
        raise too_large(max_bytes)
    if not req.content_type or req.content_type.split(";")[0].strip().lower() != falcon.MEDIA_JSON:
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported media type", description="send Content-Type: application/json"
        )


def read_object(
    req: falcon.Request, schema: Schema, *, optional: bool = False, max_bytes: int = MAX_BODY_BYTES
) -> dict[str, Any]:
    """The request's JSON object, valid against `schema` (422 otherwise). With `optional`, no body is {};
    a body over `max_bytes` is 413.
    Parsed here with `loads`, not through Falcon's media handlers, which look the handler up by the
    Content-Type's exact spelling (application/JSON was a 415, though media types ignore case)."""
    if req.content_length is None or req.content_length == 0:
        if optional:
            return {}
        raise falcon.HTTPBadRequest(title="Missing body", description="send a JSON object")
    body = _loads_body(_read_bytes(req, max_bytes))
    validate(body, schema)
    return body  # type: ignore[no-any-return]


def _read_bytes(req: falcon.Request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The exact bytes of a JSON body: Content-Type application/json, in any case (415 otherwise),
    and at most `max_bytes` (413 otherwise)."""
    _check_size_and_type(req, max_bytes)
    payload: bytes = req.bounded_stream.read(max_bytes + 1)
    if len(payload) > max_bytes:
        raise too_large(max_bytes)
    return payload


def _loads_body(payload: bytes) -> Any:
    """`loads` on a body's bytes (UTF-8), or 400 Malformed JSON saying why."""
    try:
        return loads(payload.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError, json.JSONDecodeError and JsonRefused are ValueErrors
        raise _malformed(exc) from None


def read_raw(req: falcon.Request) -> bytes:
    """The exact bytes of a JSON body, for checking a signature over them. They must parse as strict
    JSON (as `loads`), though nothing parsed is used: whatever reads them after the signature check
    then meets no NaN, lone surrogate or bottomless nesting."""
    payload = _read_bytes(req)
    _loads_body(payload)
    return payload


def read_query(req: falcon.Request, names: set[str]) -> dict[str, str]:
    """The query string's parameters, each at most once, refusing unknown ones with 422."""
    if not req.params:  # most requests: nothing to refuse, nothing to copy
        return {}
    unknown = sorted(set(req.params) - names)
    if unknown:
        raise InvalidInput("query", f"has unknown parameter(s): {', '.join(unknown)[:200]}")
    repeated = sorted(name for name, value in req.params.items() if not isinstance(value, str))
    if repeated:
        raise InvalidInput("query", f"repeats parameter(s): {', '.join(repeated)}")
    return {name: value for name, value in req.params.items() if isinstance(value, str)}  # none repeated
