"""Logging for `wallet serve`: one JSON object per line on stderr (or plain text for humans), the
request id of the request being served on every line logged while serving it, and no secrets.

Standard library only: the CLI imports this before it knows whether it will need anything heavier.

    configure_logging("json")          # what `wallet serve` does
    REDACTOR.add_secrets(settings)     # the configured secrets' values never reach a log line
    token = REQUEST_ID.set("abc")      # what the HTTP middleware does around each request
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO
from urllib.parse import unquote

# The id of the request this thread is serving; None outside a request.
REQUEST_ID: ContextVar[str | None] = ContextVar("wallet_request_id", default=None)

REDACTED = "[REDACTED]"
SECRET_VARIABLES = ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "WALLET_JWT_SECRET")
HANDLER_NAME = "wallet"
MIN_SECRET_LENGTH = 6  # shorter "secrets" would redact ordinary words

# Secrets recognised by their shape, whatever their source.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Stripe secret and restricted keys: sk_live_..., sk_test_..., rk_live_..., rk_test_...
    (re.compile(r"\b((?:sk|rk)_(?:live|test)_)[A-Za-z0-9_]+"), rf"\g<1>{REDACTED}"),
    # Webhook signing secrets.
    (re.compile(r"\bwhsec_[A-Za-z0-9_]+"), f"whsec_{REDACTED}"),
    # PaymentIntent / SetupIntent client secrets: pi_123_secret_456 keeps the id, hides the secret.
    (re.compile(r"\b((?:pi|seti)_[A-Za-z0-9]+_secret_)[A-Za-z0-9_]+"), rf"\g<1>{REDACTED}"),
    # Authorization: Bearer <token> (any token), and bare JWTs (header.payload.signature).
    (re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # The password of a URL with credentials: postgresql://user:password@host/db
    (re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@]+@"), rf"\g<1>{REDACTED}@"),
)
# Every pattern above needs one of these in the text, lower-cased (Bearer in any case, the others as
# written): a few substring tests tell whether any can match, so the ordinary line (no secret in it,
# most of them) costs one lower() instead of six substitutions. (A case-insensitive regex search for the
# same words cost ~2.5 us a string, five strings an access line: ~6x these tests, issue 14.)
_SECRET_MARKS = ("k_live_", "k_test_", "whsec_", "_secret_", "bearer", "eyj", "://")
_URL_PASSWORD = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:([^\s@]+)@")


class _SettingsLike(Protocol):
    @property
    def database_url(self) -> str: ...
    @property
    def stripe_secret_key(self) -> Any: ...
    @property
    def stripe_webhook_secrets(self) -> tuple[Any, ...]: ...
    @property
    def jwt_secret(self) -> Any: ...


class Redactor:
    """Replaces secrets in text: configured values (exactly) and anything shaped like one."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._longest_first: tuple[str, ...] = ()

    def add(self, *values: str | None) -> None:
        for value in values:
            if value and len(value) >= MIN_SECRET_LENGTH:
                self._values.add(value)
        # Longest first, so a secret that contains another is replaced whole.
        self._longest_first = tuple(sorted(self._values, key=len, reverse=True))

    def add_secrets(self, settings: _SettingsLike) -> None:
        """The values of STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, WALLET_JWT_SECRET (also the local
        development secret) and the database password, as the settings hold them."""
        secrets = [settings.stripe_secret_key, settings.jwt_secret, *settings.stripe_webhook_secrets]
        self.add(*(s.reveal() for s in secrets if s is not None))
        self.add(*_url_passwords(settings.database_url))

    def add_from_environment(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        for name in SECRET_VARIABLES:
            self.add(*(part.strip() for part in env.get(name, "").split(",")))
        self.add(*_url_passwords(env.get("WALLET_DATABASE_URL")))

    def __call__(self, text: str) -> str:
        for value in self._longest_first:
            if value in text:
                text = text.replace(value, REDACTED)
        if _may_hold_a_secret(text):
            for pattern, replacement in _PATTERNS:
                text = pattern.sub(replacement, text)
        return text


def _may_hold_a_secret(text: str) -> bool:
    lowered = text.lower()
    for mark in _SECRET_MARKS:
        if mark in lowered:
            return True
    return False


def _url_passwords(url: str | None) -> tuple[str, ...]:
    """The password in a URL with credentials, as written and percent-decoded."""
    match = _URL_PASSWORD.match(url or "")
    if not match:
        return ()
    return match.group(1), unquote(match.group(1))


REDACTOR = Redactor()

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """A handler filter: the message (with its arguments), string extras and the formatted traceback
    of every record are redacted before any formatter sees them."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: keep what can be shown
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = self.redactor(message), None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redactor(value))
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:  # the caller chose it (X-Request-Id): it could be anything
            record.request_id = self.redactor(request_id)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


# json.dumps(entry, default=str, ensure_ascii=False), without building the encoder for every line.
_JSON_LINE = json.JSONEncoder(default=str, ensure_ascii=False).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id (inside a
    request), the record's extra fields, and `exception` (the traceback) when there is one.

    Ours, not python-json-logger's (tried for issue 10): these fields took more lines through it, it
    formats a traceback again from exc_info (past the redaction) and it was ~12% slower per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return _JSON_LINE(entry)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request_id] message key=value ...` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        line = f"{self.formatTime(record)} {record.levelname} {record.name}"
        if request_id:
            line += f" [{request_id}]"
        line += f" {record.getMessage()}"
        extras = {k: v for k, v in _extras(record).items() if k != "request_id"}
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def configure_logging(fmt: str = "json", *, level: int = logging.INFO, stream: TextIO | None = None,
                      redactor: Redactor = REDACTOR, secrets: Iterable[str] = ()) -> logging.Handler:
    """Send every log record (the wallet's, waitress's, SQLAlchemy's) to one stderr handler, as JSON
    lines or text, through the redacting filter. Called again, it replaces the handler it added."""
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}: use json or text")
    redactor.add_from_environment()
    redactor.add(*secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(redactor))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in root.handlers[:]:
        if old.get_name() == HANDLER_NAME:  # configured before; others' handlers (pytest's) stay
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin at start-up
    logging.captureWarnings(True)  # warnings become log lines too, not stray text on stderr
    return handler
