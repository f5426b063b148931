"""Identifiers: new ids, and the checks every id from outside must pass."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
import time

from wallet_core.errors import InvalidInput

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@|+-]{0,127}")
_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
# A Stripe PaymentIntent id as the wallet accepts one from a caller (REST path, CLI, library).
PAYMENT_INTENT_ID = re.compile(r"[A-Za-z0-9_]{1,255}")


_counter = itertools.count()
_counter_lock = threading.Lock()


def new_id(prefix: str) -> str:
    """A unique id that sorts by creation time: 16 hex digits of nanoseconds, a 4-digit counter so
    ids made in the same nanosecond by this process still sort in order, and 12 random hex digits."""
    with _counter_lock:
        n = next(_counter) & 0xFFFF
    return f"{prefix}_{time.time_ns():016x}{n:04x}{os.urandom(6).hex()}"


# Control characters (C0, DEL, C1), lone surrogates (not storable as UTF-8), the line and paragraph
# separators, and the bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069).
_TROUBLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028-\u202e\u2066-\u2069]")


def has_control_characters(value: str) -> bool:
    """Control characters, lone surrogates (not storable as UTF-8), line/paragraph separators and
    bidi overrides (which make an audit line read differently from what it holds). One regular
    expression search: every id, reason and key of every request goes through here."""
    return _TROUBLE.search(value) is not None


def derived_id(prefix: str, *parts: str) -> str:
    """An id that is the same every time for the same parts (used for idempotent retries)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return f"{prefix}_{digest}"


def check_user_id(value: object, field: str = "user_id") -> str:
    """User ids are 1-128 characters: letters, digits and _ . : @ | + - (no spaces or controls)."""
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise InvalidInput(
            field, "must be 1-128 characters of letters, digits and _ . : @ | + - starting with a letter or digit"
        )
    return value


def check_transaction_id(value: object, field: str = "transaction_id") -> str:
    """A ledger transaction id as the wallet gave it out (ctx_...): the user id's characters."""
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise InvalidInput(field, "must be a transaction id as the wallet gave it out, e.g. ctx_0f3a...")
    return value


def check_payment_intent_id(value: object, field: str = "payment_intent_id") -> str:
    """1-255 letters, digits and underscores, as Stripe writes them (pi_3N...)."""
    if not isinstance(value, str) or not PAYMENT_INTENT_ID.fullmatch(value):
        raise InvalidInput(field, "must be a Stripe PaymentIntent id, e.g. pi_3N...")
    return value


def check_setup_intent_id(value: object, field: str = "setup_intent_id") -> str:
    """A Stripe SetupIntent id: 1-255 letters, digits and underscores, as Stripe writes them (seti_1N...)."""
    if not isinstance(value, str) or not PAYMENT_INTENT_ID.fullmatch(value) or not value.startswith("seti_"):
        raise InvalidInput(field, "must be a Stripe SetupIntent id, e.g. seti_1N...")
    return value


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY_PATTERN.fullmatch(value):
        raise InvalidInput("Idempotency-Key", "must be 1-255 printable ASCII characters without spaces")
    return value


def check_reason(value: object, field: str = "reason", *, required: bool = True) -> str | None:
    """Free text for the audit trail: 1-500 characters, no control characters."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "is required: say why, in 1-500 characters")
    if len(value) > 500:
        raise InvalidInput(field, "must be at most 500 characters")
    if has_control_characters(value):
        raise InvalidInput(field, "must not contain control characters")
    return value.strip()
