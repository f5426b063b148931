"""Settings, read once from the environment. Invalid values stop start-up naming the variable.

Every variable is documented in docs/env_contract.md. Secrets are wrapped in `Secret`, whose repr and
str never show the value.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from wallet_core.alerts import MAX_THRESHOLD
from wallet_core.errors import InvalidInput
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUpLimits, TopUpPolicy
from wallet_core.webhooks_out import DEFAULT_RETRY_SECONDS, parse_retry_schedule

PRODUCTION = "production"
DEVELOPMENT = "development"
DEV_JWT_SECRET_FILE = "dev-jwt-secret"  # noqa: S105 (a file name, not a secret), in dev_state_dir()
STRIPE_MIN = Usd(50)  # Stripe refuses USD charges under 0.50
STRIPE_MAX = Usd(99_999_999)  # and over 999,999.99


class SettingsError(ValueError):
    """A variable has an invalid value. The message names the variable, never a secret's value."""


class Secret:
    """A string that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    database_url: str = field(repr=False)
    env: str = PRODUCTION
    stripe_secret_key: Secret | None = None
    stripe_webhook_secrets: tuple[Secret, ...] = ()
    stripe_api_base: str | None = None
    stripe_timeout_seconds: float = 10.0
    top_up_min: Usd = Usd(100)  # noqa: RUF009 (Usd is frozen)
    top_up_max: Usd = Usd(50_000)  # noqa: RUF009 (Usd is frozen)
    credits_per_usd: Decimal = Decimal(100)
    jwt_secret: Secret | None = None
    dev_jwt_secret_file: Path | None = None  # where jwt_secret was read from, in development without one
    db_lock_timeout_seconds: float = 5.0
    stripe_max_concurrent_calls: int | None = None  # None: half of `wallet serve --threads`
    connection_limit: int = 1000
    idle_timeout_seconds: int = 30
    top_up_limits: TopUpLimits = field(default_factory=TopUpLimits)  # WALLET_TOP_UP_MAX_OPEN, _MAX_PER_HOUR
    low_balance_credits: Credits | None = None  # WALLET_LOW_BALANCE_CREDITS: wallets' default threshold
    webhook_allow_private_urls: bool = False  # development and tests only: endpoints on private addresses
    webhook_retry_seconds: tuple[int, ...] = DEFAULT_RETRY_SECONDS
    webhook_worker: bool = True  # `wallet serve` delivers webhooks in a thread of its own
    group_commit: bool = True  # WALLET_GROUP_COMMIT: concurrent single spends share a commit (spend_queue)
    # WALLET_GROUP_WRITES: grants, holds, captures and webhook grants share a commit (write_group). None
    # (auto): with group commit on, on SQLite only, where it was measured faster (docs/performance.md).
    group_writes: bool | None = None

    @property
    def embedded(self) -> bool:
        """SQLite: the zero-configuration database, in the process."""
        return self.database_url.startswith("sqlite")

    @property
    def writes_grouped(self) -> bool:
        if self.group_writes is not None:
            return self.group_writes
        return self.group_commit and self.embedded

    @property
    def development(self) -> bool:
        return self.env == DEVELOPMENT

    @property
    def policy(self) -> TopUpPolicy:
        return TopUpPolicy(self.top_up_min, self.top_up_max, self.credits_per_usd, self.top_up_limits)

    @property
    def database_url_masked(self) -> str:
        return make_url(self.database_url).render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return (
            f"Settings(env={self.env!r}, database_url={self.database_url_masked!r}, "
            f"stripe_secret_key={'set' if self.stripe_secret_key else 'unset'}, "
            f"stripe_webhook_secrets={len(self.stripe_webhook_secrets)} set, "
            f"stripe_api_base={self.stripe_api_base!r}, top_up_min={self.top_up_min}, "
            f"top_up_max={self.top_up_max}, credits_per_usd={self.credits_per_usd}, "
            f"jwt_secret={'set' if self.jwt_secret else 'unset'}, "
            f"db_lock_timeout_seconds={self.db_lock_timeout_seconds:g}, "
            f"stripe_max_concurrent_calls={self.stripe_max_concurrent_calls or 'auto'}, "
            f"connection_limit={self.connection_limit}, idle_timeout_seconds={self.idle_timeout_seconds}, "
            f"top_up_limits={self.top_up_limits}, low_balance_credits={self.low_balance_credits}, "
            f"webhook_allow_private_urls={self.webhook_allow_private_urls}, "
            f"webhook_retry_seconds={','.join(map(str, self.webhook_retry_seconds))}, "
            f"webhook_worker={self.webhook_worker}, group_commit={self.group_commit}, "
            f"group_writes={'auto' if self.group_writes is None else self.group_writes})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        env = os.environ if environ is None else environ
        here = Path.cwd() if cwd is None else cwd

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() else None

        mode = (get("WALLET_ENV") or PRODUCTION).lower()
        if mode not in (PRODUCTION, DEVELOPMENT):
            raise SettingsError(f"WALLET_ENV must be 'production' or 'development', not {mode!r}")

        key = get("STRIPE_SECRET_KEY")
        if key is not None and not key.startswith(("sk_", "rk_")):
            raise SettingsError("STRIPE_SECRET_KEY must be a Stripe secret key (sk_... or rk_...)")
        hooks = tuple(Secret(s.strip()) for s in (get("STRIPE_WEBHOOK_SECRET") or "").split(",") if s.strip())
        if any(not h.reveal().startswith("whsec_") for h in hooks):
            raise SettingsError("STRIPE_WEBHOOK_SECRET must be one or two comma-separated whsec_... secrets")

        api_base = get("STRIPE_API_BASE")
        if api_base is not None:
            parts = urlsplit(api_base)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise SettingsError("STRIPE_API_BASE must be an http(s) URL such as http://127.0.0.1:8420")
            api_base = api_base.rstrip("/")

        timeout = _positive_float(get("STRIPE_TIMEOUT_SECONDS"), "STRIPE_TIMEOUT_SECONDS", 10.0)
        low = _usd(get("TOP_UP_MIN_USD"), "TOP_UP_MIN_USD", Usd(100))
        high = _usd(get("TOP_UP_MAX_USD"), "TOP_UP_MAX_USD", Usd(50_000))
        if low < STRIPE_MIN:
            raise SettingsError(f"TOP_UP_MIN_USD must be at least {STRIPE_MIN} (Stripe's minimum charge)")
        if high > STRIPE_MAX:
            raise SettingsError(f"TOP_UP_MAX_USD must be at most {STRIPE_MAX} (Stripe's maximum charge)")
        if high < low:
            raise SettingsError("TOP_UP_MAX_USD must not be below TOP_UP_MIN_USD")
        rate = _rate(get("CREDITS_PER_USD"))

        db_url = get("WALLET_DATABASE_URL") or f"sqlite:///{here / 'wallet.sqlite3'}"
        try:
            parsed = make_url(db_url)
        except ArgumentError:
            raise SettingsError("WALLET_DATABASE_URL is not a sqlite:///... or postgresql://... URL") from None
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise SettingsError("WALLET_DATABASE_URL must be a sqlite:// or postgresql:// URL")

        jwt_value = get("WALLET_JWT_SECRET")
        if jwt_value is not None and len(jwt_value.encode()) < 32:
            raise SettingsError("WALLET_JWT_SECRET must be at least 32 bytes (HS256 needs a long key)")
        jwt_secret = Secret(jwt_value) if jwt_value else None
        dev_secret_file = None
        if jwt_secret is None and mode == DEVELOPMENT:
            dev_secret_file = dev_state_dir(env) / DEV_JWT_SECRET_FILE
            jwt_secret = _dev_jwt_secret(dev_secret_file)

        limits = TopUpLimits(
            max_open=_whole(get, "WALLET_TOP_UP_MAX_OPEN", 0, 1_000_000, TopUpLimits.max_open),
            max_per_hour=_whole(get, "WALLET_TOP_UP_MAX_PER_HOUR", 0, 1_000_000, TopUpLimits.max_per_hour),
        )

        try:
            retry = parse_retry_schedule(get("WALLET_WEBHOOK_RETRY_SECONDS"))
        except InvalidInput as exc:
            raise SettingsError(f"{exc.description} (for example 5,30,120)") from None

        return cls(
            database_url=db_url,
            env=mode,
            stripe_secret_key=Secret(key) if key else None,
            stripe_webhook_secrets=hooks,
            stripe_api_base=api_base,
            stripe_timeout_seconds=timeout,
            top_up_min=low,
            top_up_max=high,
            credits_per_usd=rate,
            jwt_secret=jwt_secret,
            dev_jwt_secret_file=dev_secret_file,
            db_lock_timeout_seconds=_positive_float(get("WALLET_DB_LOCK_TIMEOUT_SECONDS"),
                                                    "WALLET_DB_LOCK_TIMEOUT_SECONDS", 5.0),
            stripe_max_concurrent_calls=_whole(get, "STRIPE_MAX_CONCURRENT_CALLS", 1, 1000, 0) or None,  # unset: auto
            connection_limit=_whole(get, "WALLET_CONNECTION_LIMIT", 10, 100_000, 1000),
            idle_timeout_seconds=_whole(get, "WALLET_IDLE_TIMEOUT_SECONDS", 1, 3600, 30),
            top_up_limits=limits,
            low_balance_credits=_credits(get("WALLET_LOW_BALANCE_CREDITS"), "WALLET_LOW_BALANCE_CREDITS"),
            webhook_allow_private_urls=_flag(get, "WALLET_WEBHOOK_ALLOW_PRIVATE_URLS", False),
            webhook_retry_seconds=retry,
            webhook_worker=_flag(get, "WALLET_WEBHOOK_WORKER", True),
            group_commit=_flag(get, "WALLET_GROUP_COMMIT", True),
            group_writes=_auto_flag(get, "WALLET_GROUP_WRITES"),
        )


def _usd(raw: str | None, name: str, default: Usd) -> Usd:
    if raw is None:
        return default
    try:
        value = Usd.parse(raw, name)
    except InvalidInput as exc:
        raise SettingsError(f"{exc.description} (for example 1.00)") from None
    if value.cents <= 0:
        raise SettingsError(f"{name} must be greater than 0")
    return value


def _credits(raw: str | None, name: str) -> Credits | None:
    """A positive amount of credits, at most 2 decimals (None when unset)."""
    if raw is None:
        return None
    try:
        value = Credits.parse(raw, name)
    except InvalidInput as exc:
        raise SettingsError(f"{exc.description} (for example 100.00)") from None
    if not value.is_positive():
        raise SettingsError(f"{name} must be greater than 0")
    if value > MAX_THRESHOLD:
        raise SettingsError(f"{name} must be at most {MAX_THRESHOLD}")
    return value


def _rate(raw: str | None) -> Decimal:
    if raw is None:
        return Decimal(100)
    try:
        rate = Decimal(raw)
    except InvalidOperation:
        raise SettingsError("CREDITS_PER_USD must be a decimal number such as 100") from None
    if not rate.is_finite() or rate <= 0 or rate > 1_000_000 or rate != rate.quantize(Decimal("0.000001")):
        raise SettingsError("CREDITS_PER_USD must be greater than 0, at most 1000000, with at most 6 decimals")
    return rate


def _positive_float(raw: str | None, name: str, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds") from None
    if not 0 < value <= 300:
        raise SettingsError(f"{name} must be between 0 and 300 seconds")
    return value


def _whole(get: Callable[[str], str | None], name: str, low: int, high: int, default: int) -> int:
    """Variable `name` as a whole number in [low, high] written in ASCII digits (no sign, no "1_000",
    no other script's digits, which int() would take), or `default` when unset."""
    raw = get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        no_limit = " (0: no limit)" if low == 0 else ""
        raise SettingsError(f"{name} must be a whole number from {low} to {high}{no_limit}")
    return int(raw)


def _flag(get: Callable[[str], str | None], name: str, default: bool) -> bool:
    """Variable `name` as true or false (either case), or `default` when unset. Nothing else: "1",
    "yes" or "off" stop start-up rather than be guessed at."""
    raw = get(name)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise SettingsError(f"{name} must be true or false")
    return raw.lower() == "true"


def _auto_flag(get: Callable[[str], str | None], name: str) -> bool | None:
    """Variable `name` as true, false or auto (either case; unset: auto, None)."""
    raw = get(name)
    if raw is None or raw.lower() == "auto":
        return None
    if raw.lower() not in ("true", "false"):
        raise SettingsError(f"{name} must be true, false or auto")
    return raw.lower() == "true"


def dev_state_dir(environ: Mapping[str, str]) -> Path:
    """The user's state directory for wallet: $XDG_STATE_HOME/wallet, else ~/.local/state/wallet (the XDG
    base directory spec). Outside any working tree, so `git add .` cannot pick up what is kept there."""
    xdg = (environ.get("XDG_STATE_HOME") or "").strip()
    if xdg and Path(xdg).is_absolute():  # the spec says to ignore a relative path
        return Path(xdg) / "wallet"
    home = (environ.get("HOME") or "").strip()
    try:
        base = Path(home) if home and Path(home).is_absolute() else Path.home()
    except RuntimeError:
        raise SettingsError(
            "WALLET_JWT_SECRET is unset and there is no home directory for the development secret: "
            "set WALLET_JWT_SECRET, XDG_STATE_HOME or HOME"
        ) from None
    return base / ".local" / "state" / "wallet"


def _dev_jwt_secret(path: Path) -> Secret:
    """In development without WALLET_JWT_SECRET, a random secret kept in a 0600 file in the user's
    state directory, so `wallet token` and `wallet serve` agree. Never used in production. (Before, it
    was `.wallet-dev-jwt-secret` in the working directory; that file is no longer read.)

    The file is written whole under a temporary name and linked into place, so a process starting at
    the same moment reads either nothing (and links its own) or the complete secret, never a part."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            temp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            try:
                os.link(temp, path)
            except FileExistsError:
                pass  # another process linked its secret first; use that one
            finally:
                temp.unlink()
        value = path.read_text().strip()
    except OSError as exc:
        raise SettingsError(
            f"WALLET_JWT_SECRET is unset and the development secret file {path} cannot be used "
            f"({exc.strerror or exc}); set WALLET_JWT_SECRET, or XDG_STATE_HOME to a writable directory"
        ) from None
    if len(value.encode()) < 32:
        raise SettingsError(
            f"WALLET_JWT_SECRET is unset and the development secret file {path} is shorter than 32 bytes; "
            "delete it to make a new one, or set WALLET_JWT_SECRET"
        )
    return Secret(value)

