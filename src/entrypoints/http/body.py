"""Reading request bodies: JSON objects only, exact decimals, bounded size, no unknown fields."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import partial
from typing import Any, NoReturn

import falcon
import falcon.media

from wallet_core.errors import InvalidInput

MAX_BODY_BYTES = 64 * 1024


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number")


# Numbers with a fraction become exact Decimals, never floats; NaN and Infinity are refused.
loads = partial(json.loads, parse_float=Decimal, parse_constant=_no_constants)
json_handler = falcon.media.JSONHandler(loads=loads)


def read_object(req: falcon.Request, fields: set[str], *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object, refusing unknown fields with 422. With `optional`, no body is {}."""
    if req.content_length is None or req.content_length == 0:
        if optional:
            return {}
        raise falcon.HTTPBadRequest(title="Missing body", description="send a JSON object")
    if req.content_length > MAX_BODY_BYTES:
        raise falcon.HTTPContentTooLarge(
            title="Body too large", description=f"the body must be at most {MAX_BODY_BYTES} bytes"
        )
    if not req.content_type or req.content_type.split(";")[0].strip().lower() != falcon.MEDIA_JSON:
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported media type", description="send Content-Type: application/json"
        )
    try:
        body = req.get_media()
    except falcon.MediaMalformedError:
        raise falcon.HTTPBadRequest(title="Malformed JSON", description="the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise falcon.HTTPUnprocessableEntity(title="Invalid input", description="the body must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise falcon.HTTPUnprocessableEntity(
            title="Invalid input", description=f"unknown field(s): {', '.join(unknown)[:200]}"
        )
    return body


def require(body: dict[str, Any], *names: str) -> None:
    """422 naming the first of `names` the body lacks."""
    for name in names:
        if name not in body:
            raise InvalidInput(name, "is required")


def read_query(req: falcon.Request, names: set[str]) -> dict[str, str]:
    """The query string's parameters, each at most once, refusing unknown ones with 422."""
    unknown = sorted(set(req.params) - names)
    if unknown:
        raise InvalidInput("query", f"has unknown parameter(s): {', '.join(unknown)[:200]}")
    repeated = sorted(name for name, value in req.params.items() if not isinstance(value, str))
    if repeated:
        raise InvalidInput("query", f"repeats parameter(s): {', '.join(repeated)}")
    return dict(req.params)
