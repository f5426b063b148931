"""Settings.from_env: defaults, every variable of docs/env_contract.md, refusals that name the variable
and never the secret, reprs that hide secrets, and the development JWT secret file."""

from __future__ import annotations

import stat
from decimal import Decimal
from pathlib import Path

import pytest

from entrypoints.settings import DEV_JWT_SECRET_FILE, Secret, Settings, SettingsError
from wallet_core.alerts import MAX_THRESHOLD
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUpLimits

SECRET_KEY = "sk_test_settings_0123456789abcdef"
WEBHOOK_SECRET = "whsec_settings_first_0123456789"
WEBHOOK_SECRET_2 = "whsec_settings_second_0123456789"
JWT_SECRET = "settings-jwt-secret-that-is-long-enough-0123456789"
DB_PASSWORD = "pg-pass-w0rd-xyz"
PG_URL = f"postgresql://wallet:{DB_PASSWORD}@db.example.com:5432/wallet"

ALL_VARIABLES = [
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "STRIPE_TIMEOUT_SECONDS",
    "TOP_UP_MIN_USD",
    "TOP_UP_MAX_USD",
    "CREDITS_PER_USD",
    "WALLET_DATABASE_URL",
    "WALLET_JWT_SECRET",
    "WALLET_ENV",
    "WALLET_TOP_UP_MAX_OPEN",
    "WALLET_TOP_UP_MAX_PER_HOUR",
]


def load(tmp_path: Path, **environ: str) -> Settings:
    """Settings read in `tmp_path`; the user's state directory (the development secret's) is beside it."""
    environ.setdefault("XDG_STATE_HOME", str(tmp_path.parent / f"{tmp_path.name}-state"))
    return Settings.from_env(environ=environ, cwd=tmp_path)


def dev_secret_path(tmp_path: Path) -> Path:
    return tmp_path.parent / f"{tmp_path.name}-state" / "wallet" / DEV_JWT_SECRET_FILE


# -- defaults ------------------------------------------------------------------------------------


def test_defaults_with_an_empty_environment(tmp_path: Path) -> None:
    settings = load(tmp_path)

    assert settings.top_up_min == Usd(100) and str(settings.top_up_min) == "1.00"
    assert settings.top_up_max == Usd(50_000) and str(settings.top_up_max) == "500.00"
    assert settings.credits_per_usd == Decimal(100)
    assert settings.env == "production" and not settings.development
    assert settings.database_url == f"sqlite:///{tmp_path / 'wallet.sqlite3'}"
    assert settings.stripe_secret_key is None
    assert settings.stripe_webhook_secrets == ()
    assert settings.stripe_api_base is None
    assert settings.stripe_timeout_seconds == 10.0
    assert settings.jwt_secret is None
    assert not dev_secret_path(tmp_path).exists()
    policy = settings.policy
    assert (policy.min_amount, policy.max_amount, policy.credits_per_usd) == (Usd(100), Usd(50_000), Decimal(100))
    assert policy.limits == settings.top_up_limits == TopUpLimits(max_open=5, max_per_hour=10)


def test_blank_values_count_as_unset(tmp_path: Path) -> None:
    settings = load(tmp_path, **{name: "  " for name in ALL_VARIABLES})
    assert settings == load(tmp_path)


# -- every variable parsed -----------------------------------------------------------------------


def test_every_documented_variable_is_read(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        STRIPE_SECRET_KEY=SECRET_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE="http://127.0.0.1:8420/",
        STRIPE_TIMEOUT_SECONDS="2.5",
        TOP_UP_MIN_USD="0.50",
        TOP_UP_MAX_USD="999999.99",
        CREDITS_PER_USD="12.5",
        WALLET_DATABASE_URL=PG_URL,
        WALLET_JWT_SECRET=JWT_SECRET,
        WALLET_ENV="development",
        WALLET_TOP_UP_MAX_OPEN="3",
        WALLET_TOP_UP_MAX_PER_HOUR="20",
    )

    assert settings.stripe_secret_key == Secret(SECRET_KEY)
    assert settings.stripe_secret_key.reveal() == SECRET_KEY
    assert [s.reveal() for s in settings.stripe_webhook_secrets] == [WEBHOOK_SECRET]
    assert settings.stripe_api_base == "http://127.0.0.1:8420"  # trailing slash dropped
    assert settings.stripe_timeout_seconds == 2.5
    assert settings.top_up_min == Usd(50)
    assert settings.top_up_max == Usd(99_999_999)
    assert settings.credits_per_usd == Decimal("12.5")
    assert settings.database_url == PG_URL
    assert settings.jwt_secret is not None and settings.jwt_secret.reveal() == JWT_SECRET
    assert settings.env == "development" and settings.development
    # An explicit secret in development: no secret file is created.
    assert not dev_secret_path(tmp_path).exists()
    assert settings.dev_jwt_secret_file is None
    assert settings.policy.limits == TopUpLimits(max_open=3, max_per_hour=20)


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("STRIPE_SECRET_KEY", "rk_live_restricted123", "stripe_secret_key", Secret("rk_live_restricted123")),
        ("STRIPE_API_BASE", "https://api.stripe.example", "stripe_api_base", "https://api.stripe.example"),
        ("STRIPE_TIMEOUT_SECONDS", "300", "stripe_timeout_seconds", 300.0),
        ("TOP_UP_MIN_USD", "5", "top_up_min", Usd(500)),
        ("TOP_UP_MAX_USD", "1.00", "top_up_max", Usd(100)),  # equal to the default minimum is fine
        ("CREDITS_PER_USD", "0.000001", "credits_per_usd", Decimal("0.000001")),
        ("CREDITS_PER_USD", "1000000", "credits_per_usd", Decimal(1_000_000)),
        ("WALLET_ENV", "PRODUCTION", "env", "production"),
        ("WALLET_TOP_UP_MAX_OPEN", "0", "top_up_limits", TopUpLimits(max_open=0, max_per_hour=10)),
        ("WALLET_TOP_UP_MAX_PER_HOUR", "1000000", "top_up_limits", TopUpLimits(max_open=5, max_per_hour=1_000_000)),
        ("WALLET_ENV", " development ", "env", "development"),
        ("WALLET_DATABASE_URL", "sqlite:////var/lib/wallet.db", "database_url", "sqlite:////var/lib/wallet.db"),
        ("WALLET_DATABASE_URL", "postgresql+psycopg://u@h/db", "database_url", "postgresql+psycopg://u@h/db"),
    ],
)
def test_valid_values(tmp_path: Path, name: str, value: str, attribute: str, expected: object) -> None:
    assert getattr(load(tmp_path, **{name: value}), attribute) == expected


def test_two_comma_separated_webhook_secrets_parse_into_two(tmp_path: Path) -> None:
    settings = load(tmp_path, STRIPE_WEBHOOK_SECRET=f"{WEBHOOK_SECRET}, {WEBHOOK_SECRET_2}")
    assert [s.reveal() for s in settings.stripe_webhook_secrets] == [WEBHOOK_SECRET, WEBHOOK_SECRET_2]
    assert all(isinstance(s, Secret) for s in settings.stripe_webhook_secrets)


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"STRIPE_SECRET_KEY": "pk_live_abc"}, "STRIPE_SECRET_KEY"),
        ({"STRIPE_WEBHOOK_SECRET": "not-a-webhook-secret-987"}, "STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET},wrong-second-secret-987"}, "STRIPE_WEBHOOK_SECRET"),
        ({"WALLET_JWT_SECRET": "short-jwt-secret-31-bytes-long!"}, "WALLET_JWT_SECRET"),
        ({"WALLET_ENV": "staging"}, "WALLET_ENV"),
        ({"TOP_UP_MIN_USD": "abc"}, "TOP_UP_MIN_USD"),
        ({"TOP_UP_MIN_USD": "0.10"}, "TOP_UP_MIN_USD"),
        ({"TOP_UP_MIN_USD": "0.49"}, "TOP_UP_MIN_USD"),
        ({"TOP_UP_MIN_USD": "-1"}, "TOP_UP_MIN_USD"),
        ({"TOP_UP_MIN_USD": "0"}, "TOP_UP_MIN_USD"),
        ({"TOP_UP_MIN_USD": "1.001"}, "TOP_UP_MIN_USD"),
        ({"TOP_UP_MAX_USD": "abc"}, "TOP_UP_MAX_USD"),
        ({"TOP_UP_MIN_USD": "10.00", "TOP_UP_MAX_USD": "9.99"}, "TOP_UP_MAX_USD"),
        ({"TOP_UP_MIN_USD": "600.00"}, "TOP_UP_MAX_USD"),  # above the default maximum
        ({"TOP_UP_MAX_USD": "1000000.00"}, "TOP_UP_MAX_USD"),
        ({"TOP_UP_MAX_USD": "99999999999999999999"}, "TOP_UP_MAX_USD"),
        ({"CREDITS_PER_USD": "0"}, "CREDITS_PER_USD"),
        ({"CREDITS_PER_USD": "-1"}, "CREDITS_PER_USD"),
        ({"CREDITS_PER_USD": "abc"}, "CREDITS_PER_USD"),
        ({"CREDITS_PER_USD": "NaN"}, "CREDITS_PER_USD"),
        ({"CREDITS_PER_USD": "sNaN"}, "CREDITS_PER_USD"),
        ({"CREDITS_PER_USD": "Infinity"}, "CREDITS_PER_USD"),
        ({"CREDITS_PER_USD": "1000000.5"}, "CREDITS_PER_USD"),
        ({"CREDITS_PER_USD": "0.0000001"}, "CREDITS_PER_USD"),
        ({"STRIPE_API_BASE": "ftp://x"}, "STRIPE_API_BASE"),
        ({"STRIPE_API_BASE": "http://"}, "STRIPE_API_BASE"),
        ({"STRIPE_TIMEOUT_SECONDS": "0"}, "STRIPE_TIMEOUT_SECONDS"),
        ({"STRIPE_TIMEOUT_SECONDS": "abc"}, "STRIPE_TIMEOUT_SECONDS"),
        ({"STRIPE_TIMEOUT_SECONDS": "-1"}, "STRIPE_TIMEOUT_SECONDS"),
        ({"STRIPE_TIMEOUT_SECONDS": "301"}, "STRIPE_TIMEOUT_SECONDS"),
        ({"STRIPE_TIMEOUT_SECONDS": "nan"}, "STRIPE_TIMEOUT_SECONDS"),
        ({"STRIPE_TIMEOUT_SECONDS": "inf"}, "STRIPE_TIMEOUT_SECONDS"),
        ({"WALLET_TOP_UP_MAX_OPEN": "-1"}, "WALLET_TOP_UP_MAX_OPEN"),
        ({"WALLET_TOP_UP_MAX_OPEN": "2.5"}, "WALLET_TOP_UP_MAX_OPEN"),
        ({"WALLET_TOP_UP_MAX_PER_HOUR": "ten"}, "WALLET_TOP_UP_MAX_PER_HOUR"),
        ({"WALLET_TOP_UP_MAX_PER_HOUR": "1000001"}, "WALLET_TOP_UP_MAX_PER_HOUR"),
        ({"WALLET_TOP_UP_MAX_PER_HOUR": "٣"}, "WALLET_TOP_UP_MAX_PER_HOUR"),  # an Arabic-Indic 3
        ({"WALLET_DATABASE_URL": "mysql://x"}, "WALLET_DATABASE_URL"),
        ({"WALLET_DATABASE_URL": "not a url"}, "WALLET_DATABASE_URL"),
        ({"WALLET_DATABASE_URL": f"mysql://root:{DB_PASSWORD}@h/db"}, "WALLET_DATABASE_URL"),
    ],
    ids=lambda v: "-".join(f"{k}={w}" for k, w in v.items()) if isinstance(v, dict) else None,
)
def test_invalid_values_raise_naming_the_variable_and_not_the_value(
    tmp_path: Path, environ: dict[str, str], names: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, **environ)

    message = str(caught.value)
    assert names in message
    for name, value in environ.items():
        if name in {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "WALLET_JWT_SECRET", "WALLET_DATABASE_URL"}:
            for part in value.split(","):
                assert part not in message, f"{name}'s value leaked into {message!r}"
    assert DB_PASSWORD not in message
    assert caught.value.__cause__ is None  # `from None`: no chained exception carrying the value
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


def test_a_secret_value_is_never_in_the_message_even_when_other_variables_are_valid(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, STRIPE_SECRET_KEY="pk_live_abc", WALLET_JWT_SECRET=JWT_SECRET,
             STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET)
    message = str(caught.value)
    assert "STRIPE_SECRET_KEY" in message
    for value in ("pk_live_abc", JWT_SECRET, WEBHOOK_SECRET):
        assert value not in message
        assert value not in repr(caught.value)


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# -- reprs ---------------------------------------------------------------------------------------


def test_repr_and_str_show_no_secret_and_no_database_password(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        STRIPE_SECRET_KEY=SECRET_KEY,
        STRIPE_WEBHOOK_SECRET=f"{WEBHOOK_SECRET},{WEBHOOK_SECRET_2}",
        WALLET_JWT_SECRET=JWT_SECRET,
        WALLET_DATABASE_URL=PG_URL,
    )

    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        for secret in (SECRET_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET_2, JWT_SECRET, DB_PASSWORD):
            assert secret not in shown, f"{secret!r} shown in {shown!r}"
        assert "db.example.com" in shown  # the URL is shown, masked
        assert "stripe_secret_key=set" in shown and "jwt_secret=set" in shown
        assert "2 set" in shown
    assert DB_PASSWORD not in settings.database_url_masked
    assert "***" in settings.database_url_masked


def test_repr_of_unset_secrets_says_unset(tmp_path: Path) -> None:
    shown = repr(load(tmp_path))
    assert "stripe_secret_key=unset" in shown and "jwt_secret=unset" in shown


def test_secret_repr_and_str_are_masked() -> None:
    secret = Secret("very-secret-value-123")
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "Secret('********')"
    assert f"{secret}" == "Secret('********')"
    assert "very-secret-value-123" not in repr([secret]) + repr({"k": secret}) + repr((secret,))
    assert secret.reveal() == "very-secret-value-123"


def test_secret_equality_compares_values() -> None:
    assert Secret("a" * 40) == Secret("a" * 40)
    assert Secret("a" * 40) != Secret("b" * 40)
    assert Secret("a") != "a"
    assert hash(Secret("x")) == hash(Secret("x"))


# -- the development JWT secret ------------------------------------------------------------------


def test_development_without_a_jwt_secret_creates_a_private_one_in_the_state_directory_and_reuses_it(
    tmp_path: Path,
) -> None:
    first = load(tmp_path, WALLET_ENV="development")

    path = dev_secret_path(tmp_path)
    assert path.is_file()
    assert first.dev_jwt_secret_file == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.jwt_secret is not None
    assert len(first.jwt_secret.reveal().encode()) >= 32
    assert path.read_text().strip() == first.jwt_secret.reveal()
    assert first.jwt_secret.reveal() not in repr(first)
    assert list(tmp_path.iterdir()) == []  # nothing in the working directory for `git add .` to pick up

    second = load(tmp_path, WALLET_ENV="development")
    assert second.jwt_secret == first.jwt_secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_development_secret_is_the_users_whatever_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    state = str(tmp_path / "state")
    a = Settings.from_env({"WALLET_ENV": "development", "XDG_STATE_HOME": state}, cwd=tmp_path / "a")
    b = Settings.from_env({"WALLET_ENV": "development", "XDG_STATE_HOME": state}, cwd=tmp_path / "b")
    assert a.jwt_secret is not None and a.jwt_secret == b.jwt_secret
    assert list((tmp_path / "a").iterdir()) == [] and list((tmp_path / "b").iterdir()) == []


def test_without_xdg_state_home_the_development_secret_is_under_home(tmp_path: Path) -> None:
    for xdg in ("", "relative/state"):  # unset, or relative (which the XDG spec says to ignore)
        settings = Settings.from_env({"WALLET_ENV": "development", "HOME": str(tmp_path / "home"),
                                      "XDG_STATE_HOME": xdg}, cwd=tmp_path)
        assert settings.dev_jwt_secret_file == tmp_path / "home" / ".local" / "state" / "wallet" / "dev-jwt-secret"
        assert settings.dev_jwt_secret_file is not None and settings.dev_jwt_secret_file.is_file()


def test_the_old_secret_file_in_the_working_directory_is_no_longer_read(tmp_path: Path) -> None:
    (tmp_path / ".wallet-dev-jwt-secret").write_text("old-local-secret-that-is-long-enough-0123456789")
    settings = load(tmp_path, WALLET_ENV="development")
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.reveal() != "old-local-secret-that-is-long-enough-0123456789"


def test_an_unusable_state_directory_is_a_settings_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where a directory should be")
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"WALLET_ENV": "development", "XDG_STATE_HOME": str(tmp_path / "state")}, cwd=tmp_path)
    assert str(tmp_path / "state" / "wallet" / "dev-jwt-secret") in str(raised.value)
    assert "WALLET_JWT_SECRET" in str(raised.value)


def test_production_without_a_jwt_secret_leaves_it_unset_and_creates_no_file(tmp_path: Path) -> None:
    settings = load(tmp_path, WALLET_ENV="production")
    assert settings.jwt_secret is None
    assert settings.dev_jwt_secret_file is None
    assert not dev_secret_path(tmp_path).exists()
    assert list(tmp_path.iterdir()) == []


def test_from_env_defaults_to_the_process_environment_and_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CREDITS_PER_USD", "7")
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env()
    assert settings.credits_per_usd == Decimal(7)
    assert settings.database_url == f"sqlite:///{tmp_path / 'wallet.sqlite3'}"


def test_an_empty_development_secret_file_never_becomes_an_empty_signing_key(tmp_path: Path) -> None:
    dev_secret_path(tmp_path).parent.mkdir(parents=True)
    dev_secret_path(tmp_path).touch(mode=0o600)
    try:
        settings = load(tmp_path, WALLET_ENV="development")
    except SettingsError:
        return
    assert settings.jwt_secret is not None
    assert len(settings.jwt_secret.reveal().encode()) >= 32


# -- the server's limits (issue 9: liveness) -----------------------------------------------------


def test_limits_default_to_what_a_deployment_needs(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.db_lock_timeout_seconds == 5.0
    assert settings.stripe_max_concurrent_calls is None  # `wallet serve` uses half its threads
    assert (settings.connection_limit, settings.idle_timeout_seconds) == (1000, 30)


def test_limits_are_read_from_the_environment(tmp_path: Path) -> None:
    settings = load(tmp_path, WALLET_DB_LOCK_TIMEOUT_SECONDS="1.5", STRIPE_MAX_CONCURRENT_CALLS="3",
                    WALLET_CONNECTION_LIMIT="5000", WALLET_IDLE_TIMEOUT_SECONDS="10")
    assert settings.db_lock_timeout_seconds == 1.5
    assert settings.stripe_max_concurrent_calls == 3
    assert (settings.connection_limit, settings.idle_timeout_seconds) == (5000, 10)


@pytest.mark.parametrize(("name", "value"), [
    ("WALLET_DB_LOCK_TIMEOUT_SECONDS", "0"), ("WALLET_DB_LOCK_TIMEOUT_SECONDS", "abc"),
    ("STRIPE_MAX_CONCURRENT_CALLS", "0"), ("STRIPE_MAX_CONCURRENT_CALLS", "1.5"),
    ("WALLET_CONNECTION_LIMIT", "5"), ("WALLET_CONNECTION_LIMIT", "many"),
    ("WALLET_IDLE_TIMEOUT_SECONDS", "0"), ("WALLET_IDLE_TIMEOUT_SECONDS", "3601"),
    ("WALLET_CONNECTION_LIMIT", "\u0665\u0660\u0660"), ("WALLET_CONNECTION_LIMIT", "1_000"),  # int() takes both
])
def test_invalid_limits_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load(tmp_path, **{name: value})


# -- balance alerts (issue 12) -------------------------------------------------------------------


def test_the_default_low_balance_threshold_is_unset_unless_given(tmp_path: Path) -> None:
    assert load(tmp_path).low_balance_credits is None
    assert load(tmp_path, WALLET_LOW_BALANCE_CREDITS="  ").low_balance_credits is None


@pytest.mark.parametrize(("value", "expected"), [("100", Credits(10_000)), ("0.01", Credits(1)),
                                                 ("2500.50", Credits(250_050)), ("100000000", MAX_THRESHOLD)])
def test_the_default_low_balance_threshold_is_an_amount_of_credits(
    tmp_path: Path, value: str, expected: Credits
) -> None:
    settings = load(tmp_path, WALLET_LOW_BALANCE_CREDITS=value)
    assert settings.low_balance_credits == expected
    assert f"low_balance_credits={expected}" in repr(settings)


@pytest.mark.parametrize("value", ["0", "-5", "0.001", "ten", "1e3", "NaN", "100000000.01", "\u0665"])
def test_a_bad_default_low_balance_threshold_names_the_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match="WALLET_LOW_BALANCE_CREDITS"):
        load(tmp_path, WALLET_LOW_BALANCE_CREDITS=value)


def test_the_container_gives_the_default_threshold_to_every_unit_of_work(tmp_path: Path) -> None:
    from entrypoints.container import Container

    container = Container()
    container.settings.override(load(tmp_path, WALLET_LOW_BALANCE_CREDITS="25.00"))
    try:
        assert container.unit_of_work()().low_balance_default == Credits(2500)
        assert container.unit_of_work()(read_only=True).low_balance_default == Credits(2500)
    finally:
        container.shutdown_resources()
