"""The `wallet` command, run for real as a subprocess in a temporary directory with a controlled environment."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from dependency_injector import providers
from pytest_mock import MockerFixture
from sqlalchemy.engine import make_url

from adapters.sql.ledger_repository import SqlLedgerRepository
from adapters.sql.unit_of_work import SqlUnitOfWork
from entrypoints.cli import Progress, main
from entrypoints.container import Container
from entrypoints.library import open_wallet
from tests.e2e.conftest import Service, head_revision, make_settings
from wallet_core.payments import PaymentIntent
from wallet_core.topups import TopUpStatus

JWT_SECRET = "cli-jwt-secret-that-is-long-enough-0123456789"
STRIPE_KEY = "sk_test_cli_0123456789abcdefghij"
WEBHOOK_SECRET = "whsec_cli_0123456789abcdefghij"
DB_PASSWORD = "cli-pg-passw0rd-9f3k"
CONTRACT_VARIABLES = ("CREDITS_PER_USD", "TOP_UP_MIN_USD", "TOP_UP_MAX_USD")


def clean_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any wallet configuration, plus `overrides`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("WALLET_", "STRIPE_")) and name not in CONTRACT_VARIABLES
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def wallet(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- help ----------------------------------------------------------------------------------------


def test_help_lists_the_commands(tmp_path: Path) -> None:
    out = ok(wallet(tmp_path, "--help"))
    for command in ("serve", "migrate", "grant", "revert", "spend", "hold", "capture", "release", "expire", "verify",
                    "history", "balance", "events", "reconcile", "token"):
        assert command in out
    assert list(tmp_path.iterdir()) == []  # --help touches no database


def test_help_loads_no_database_web_or_stripe_library(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from entrypoints.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'sqlalchemy', 'alembic', 'stripe', 'falcon', 'waitress', 'jwt', 'psycopg'}\n"
        "print('HEAVY', sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=clean_env(), capture_output=True,
                            text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_serve_help_explains_every_option_with_its_default(tmp_path: Path) -> None:
    out = ok(wallet(tmp_path, "serve", "--help"))
    for option, default in (("--host", "127.0.0.1"), ("--port", "8000"), ("--threads", "8"),
                            ("--log-format", "json"), ("--shutdown-timeout", "10.0")):
        help_text = out.split(option, 2)[-1]  # past the usage line: the option's own entry
        assert f"(default: {default})" in help_text.split("\n  --")[0], (option, out)
    assert "wallet migrate" in out


def test_every_command_that_prints_a_result_prints_indented_json(tmp_path: Path) -> None:
    outputs = [
        ok(wallet(tmp_path, "grant", "ivy", "5.00", "--reason", "x")),
        ok(wallet(tmp_path, "spend", "ivy", "1.00", "--reason", "x", "--idempotency-key", "s")),
        ok(wallet(tmp_path, "hold", "ivy", "1.00", "--reason", "x", "--idempotency-key", "h")),
        ok(wallet(tmp_path, "balance", "ivy")),
    ]
    for out in outputs:
        assert out == json.dumps(json.loads(out), indent=2) + "\n"


def test_serve_on_a_port_in_use_exits_1_without_claiming_to_serve(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = wallet(tmp_path, "serve", "--port", str(port), "--log-format", "text")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "serving on" not in result.stderr + result.stdout


def test_the_readme_lists_every_command_every_serve_option_and_every_route() -> None:
    from entrypoints.cli import _parser
    from entrypoints.http.routes import OPERATIONS

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in commands:
        assert f"| `wallet {name}" in readme, name
    serve_row = next(line for line in readme.splitlines() if line.startswith("| `wallet serve"))
    for action in commands["serve"]._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert option in serve_row, option
    for op in OPERATIONS:
        assert f"`{op.method} {op.path}" in readme, (op.method, op.path)


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = wallet(tmp_path)
    assert result.returncode == 2
    assert "usage: wallet" in result.stderr


def test_grant_without_a_reason_is_a_usage_error(tmp_path: Path) -> None:
    result = wallet(tmp_path, "grant", "alice", "50.00")
    assert result.returncode == 2
    assert "--reason" in result.stderr


# -- grant and balance on the zero-configuration SQLite file -------------------------------------


def test_grant_then_balance_on_the_default_sqlite_file(tmp_path: Path) -> None:
    granted = json.loads(ok(wallet(tmp_path, "grant", "alice", "50.00", "--reason", "welcome")))

    assert granted["user_id"] == "alice"
    assert granted["credits_granted"] == "50.00"
    assert granted["balance"] == "50.00"
    assert granted["transaction_id"]
    assert (tmp_path / "wallet.sqlite3").is_file()

    shown = json.loads(ok(wallet(tmp_path, "balance", "alice")))
    assert shown["user_id"] == "alice"
    assert shown["balance"] == "50.00"
    assert len(shown["transactions"]) == 1
    transaction = shown["transactions"][0]
    assert transaction["id"] == granted["transaction_id"]
    assert transaction["kind"] == "grant"
    assert transaction["credits"] == "50.00"
    assert transaction["balance_after"] == "50.00"
    assert transaction["reason"] == "welcome"


def test_balance_of_an_unknown_user_is_zero(tmp_path: Path) -> None:
    shown = json.loads(ok(wallet(tmp_path, "balance", "nobody")))
    assert shown == {"user_id": "nobody", "balance": "0.00", "held": "0.00", "debt": "0.00", "pending": "0.00",
                     "by_category": {"paid": "0.00", "promotional": "0.00"}, "lots": [], "transactions": []}


def test_grants_add_up(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "bob", "10.00", "--reason", "one"))
    second = json.loads(ok(wallet(tmp_path, "grant", "bob", "2.5", "--reason", "two")))
    assert second["balance"] == "12.50"
    shown = json.loads(ok(wallet(tmp_path, "balance", "bob")))
    assert shown["balance"] == "12.50"
    assert [t["reason"] for t in shown["transactions"]] == ["two", "one"]  # newest first


def test_grant_with_the_same_idempotency_key_twice_grants_once(tmp_path: Path) -> None:
    args = ("grant", "alice", "50.00", "--reason", "welcome", "--idempotency-key", "ticket-42")
    first = json.loads(ok(wallet(tmp_path, *args)))
    second = json.loads(ok(wallet(tmp_path, *args)))

    assert second == first
    assert second["balance"] == "50.00"
    shown = json.loads(ok(wallet(tmp_path, "balance", "alice")))
    assert shown["balance"] == "50.00"
    assert len(shown["transactions"]) == 1


def test_reusing_an_idempotency_key_for_a_different_grant_is_refused(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "alice", "50.00", "--reason", "welcome", "--idempotency-key", "k1"))
    result = wallet(tmp_path, "grant", "alice", "60.00", "--reason", "welcome", "--idempotency-key", "k1")

    assert_clean_failure(result)
    assert result.returncode == 1
    assert "Idempotency key reused" in result.stderr
    assert json.loads(ok(wallet(tmp_path, "balance", "alice")))["balance"] == "50.00"


def test_grant_of_a_non_number_fails_with_a_clear_message(tmp_path: Path) -> None:
    result = wallet(tmp_path, "grant", "alice", "abc", "--reason", "x")

    assert_clean_failure(result)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "wallet: Invalid input: credits must be a decimal number" in result.stderr
    assert json.loads(ok(wallet(tmp_path, "balance", "alice")))["balance"] == "0.00"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("grant", "alice", "0", "--reason", "x"), "credits must be greater than 0"),
        (("grant", "alice", "-5.00", "--reason", "x"), "credits must be greater than 0"),
        (("grant", "alice", "1.001", "--reason", "x"), "2 decimal places"),
        (("grant", "alice", "NaN", "--reason", "x"), "finite"),
        (("grant", "alice", "5", "--reason", "   "), "--reason is required"),
        (("grant", "bad user", "5", "--reason", "x"), "user_id must be"),
        (("balance", "bad user"), "user_id must be"),
    ],
)
def test_invalid_inputs_fail_with_a_clear_message(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    result = wallet(tmp_path, *args)
    assert_clean_failure(result)
    assert result.returncode == 1
    assert says in result.stderr


# -- token ---------------------------------------------------------------------------------------


def test_token_in_production_without_a_secret_is_refused(tmp_path: Path) -> None:
    result = wallet(tmp_path, "token", "alice", WALLET_ENV="production")

    assert_clean_failure(result)
    assert result.stdout == ""
    assert "refusing" in result.stderr
    assert "WALLET_JWT_SECRET" in result.stderr
    assert not (tmp_path / ".wallet-dev-jwt-secret").exists()


def test_token_is_a_jwt_for_the_user_signed_with_the_secret(tmp_path: Path) -> None:
    token = ok(wallet(tmp_path, "token", "alice", WALLET_JWT_SECRET=JWT_SECRET)).strip()

    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["roles"] == []
    assert 3590 <= claims["exp"] - claims["iat"] <= 3610
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-that-is-long-enough-0123456789", algorithms=["HS256"])


def test_token_admin_puts_admin_in_roles_and_ttl_sets_the_expiry(tmp_path: Path) -> None:
    token = ok(wallet(tmp_path, "token", "root", "--admin", "--ttl", "60", WALLET_JWT_SECRET=JWT_SECRET)).strip()

    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "root"
    assert "admin" in claims["roles"]
    assert claims["exp"] - claims["iat"] == 60


def test_token_service_puts_service_in_roles(tmp_path: Path) -> None:
    token = ok(wallet(tmp_path, "token", "billing", "--service", WALLET_JWT_SECRET=JWT_SECRET)).strip()
    assert jwt.decode(token, JWT_SECRET, algorithms=["HS256"])["roles"] == ["service"]


def test_token_in_development_without_a_secret_uses_the_secret_in_the_users_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    work = tmp_path / "work"
    work.mkdir()
    token = ok(wallet(work, "token", "alice", WALLET_ENV="development", XDG_STATE_HOME=str(state))).strip()

    secret_file = state / "wallet" / "dev-jwt-secret"
    assert secret_file.is_file()
    assert oct(secret_file.stat().st_mode & 0o777) == oct(0o600)
    assert list(work.iterdir()) == []  # nothing in the working directory for `git add .` to commit
    claims = jwt.decode(token, secret_file.read_text().strip(), algorithms=["HS256"])
    assert claims["sub"] == "alice"
    # The next run agrees on the same secret.
    again = ok(wallet(work, "token", "bob", WALLET_ENV="development", XDG_STATE_HOME=str(state))).strip()
    assert jwt.decode(again, secret_file.read_text().strip(), algorithms=["HS256"])["sub"] == "bob"


def test_git_add_in_the_service_directory_commits_no_secret_and_no_sqlite_side_files(tmp_path: Path) -> None:
    """The README runs the service in the repository's directory: what it leaves there is ignored."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".gitignore").write_text((Path(__file__).parents[2] / ".gitignore").read_text())
    leftovers = (".wallet-dev-jwt-secret", "wallet.sqlite3", "wallet.sqlite3-wal", "wallet.sqlite3-shm",
                 "wallet.db-wal", "wallet.db-shm")
    for name in leftovers:
        (repo / name).write_text("x")
    (repo / "kept.txt").write_text("x")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    staged = subprocess.run([*git, "diff", "--cached", "--name-only"], cwd=repo, check=True,
                            capture_output=True, text=True).stdout.split()
    assert sorted(staged) == [".gitignore", "kept.txt"]


def test_in_development_a_token_with_a_bad_signature_is_told_where_the_secret_lives(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    state = tmp_path / "state"
    server = serve(WALLET_ENV="development", XDG_STATE_HOME=str(state))
    forged = jwt.encode({"sub": "alice", "roles": [], "exp": int(time.time()) + 60},
                        "some-other-secret-that-is-long-enough-0123456789", algorithm="HS256")

    status, body = get(f"{server.url}/api/v1/users/me/wallet", {"Authorization": f"Bearer {forged}"})
    assert status == 401
    description = json.loads(body)["description"]
    secret_file = state / "wallet" / "dev-jwt-secret"
    assert str(secret_file) in description
    assert "wallet token" in description
    assert secret_file.read_text().strip() not in body.decode()


def test_in_production_a_bad_signature_names_no_file(tmp_path: Path, serve: Callable[..., Served]) -> None:
    server = serve(WALLET_JWT_SECRET=JWT_SECRET)
    forged = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60},
                        "some-other-secret-that-is-long-enough-0123456789", algorithm="HS256")
    status, body = get(f"{server.url}/api/v1/users/me/wallet", {"Authorization": f"Bearer {forged}"})
    assert status == 401
    assert json.loads(body)["description"] == "the token is not valid"


@pytest.mark.parametrize("ttl", ["0", "-5", "604801", "1.5", "soon"])
def test_token_with_a_ttl_out_of_range_is_a_usage_error(tmp_path: Path, ttl: str) -> None:
    result = wallet(tmp_path, "token", "alice", "--ttl", ttl, WALLET_JWT_SECRET=JWT_SECRET)

    assert result.returncode == 2
    assert result.stdout == ""  # no token
    assert "--ttl" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_ttl_may_be_as_long_as_seven_days(tmp_path: Path) -> None:
    token = ok(wallet(tmp_path, "token", "alice", "--ttl", "604800", WALLET_JWT_SECRET=JWT_SECRET)).strip()
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 604800


def signed(claims: dict[str, object]) -> dict[str, str]:
    from tests.e2e.conftest import JWT_SECRET as E2E_SECRET

    return {"Authorization": f"Bearer {jwt.encode(claims, E2E_SECRET, algorithm='HS256')}"}


@pytest.mark.parametrize(("claim", "value"), [
    ("exp", "9999999999"), ("exp", True), ("exp", None), ("exp", [9999999999]),
    ("iat", True), ("iat", "0"), ("nbf", False), ("nbf", "0"),
])
def test_the_server_refuses_token_times_that_are_not_numbers(service: Service, claim: str, value: object) -> None:
    claims: dict[str, object] = {"sub": "alice", "roles": [], "exp": int(time.time()) + 600, claim: value}
    resp = service.client.simulate_get("/api/v1/users/me/wallet", headers=signed(claims))

    assert resp.status_code == 401
    assert resp.json["title"] == "Unauthorized"
    if value is not None:
        assert resp.json["description"] == f"the token's {claim} claim must be a number (seconds since 1970-01-01 UTC)"


def test_the_server_checks_token_times(service: Service) -> None:
    now = int(time.time())
    expired = service.client.simulate_get("/api/v1/users/me/wallet", headers=signed({"sub": "a", "exp": now - 1}))
    assert (expired.status_code, expired.json["description"]) == (401, "the token has expired")
    early = service.client.simulate_get("/api/v1/users/me/wallet",
                                        headers=signed({"sub": "a", "exp": now + 600, "nbf": now + 300}))
    assert (early.status_code, early.json["description"]) == (401, "the token is not valid yet")
    fine = signed({"sub": "a", "exp": now + 600.5, "iat": now - 1.5, "nbf": now - 1})  # fractions are numbers
    assert service.client.simulate_get("/api/v1/users/me/wallet", headers=fine).status_code == 200


def test_token_for_an_invalid_user_id_fails_cleanly(tmp_path: Path) -> None:
    result = wallet(tmp_path, "token", "bad user", WALLET_JWT_SECRET=JWT_SECRET)
    assert_clean_failure(result)
    assert "user_id must be" in result.stderr


# -- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOP_UP_MIN_USD", "abc"),
        ("CREDITS_PER_USD", "0"),
        ("WALLET_ENV", "staging"),
        ("WALLET_DATABASE_URL", "mysql://x"),
        ("STRIPE_TIMEOUT_SECONDS", "abc"),
    ],
)
def test_an_invalid_variable_exits_2_naming_it(tmp_path: Path, name: str, value: str) -> None:
    result = wallet(tmp_path, "balance", "alice", **{name: value})

    assert result.returncode == 2
    assert name in result.stderr
    assert "configuration error" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "wallet.sqlite3").exists()  # stopped before touching any database


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRIPE_SECRET_KEY", "pk_live_leaky_value_123"),
        ("STRIPE_WEBHOOK_SECRET", "leaky-webhook-value-123"),
        ("WALLET_JWT_SECRET", "leaky-short-jwt-123"),
    ],
)
def test_an_invalid_secret_exits_2_without_showing_it(tmp_path: Path, name: str, value: str) -> None:
    result = wallet(tmp_path, "token", "alice", **{name: value})

    assert result.returncode == 2
    assert name in result.stderr
    assert value not in result.stderr + result.stdout


# -- migrate -------------------------------------------------------------------------------------


def test_migrate_on_the_default_sqlite_file(tmp_path: Path) -> None:
    out = ok(wallet(tmp_path, "migrate"))
    assert "database schema is up to date" in out
    assert str(tmp_path / "wallet.sqlite3") in out
    assert alembic_revision(tmp_path / "wallet.sqlite3") == head_revision()
    # Idempotent.
    assert "database schema is up to date" in ok(wallet(tmp_path, "migrate"))


def with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_migrate_on_postgresql_never_shows_the_password(tmp_path: Path, postgres_url: str) -> None:
    url = with_password(postgres_url, DB_PASSWORD)
    assert DB_PASSWORD in url

    result = wallet(tmp_path, "migrate", WALLET_DATABASE_URL=url)
    out = ok(result)
    assert "database schema is up to date" in out
    assert "***" in out
    assert DB_PASSWORD not in result.stdout + result.stderr
    assert not (tmp_path / "wallet.sqlite3").exists()

    granted = wallet(tmp_path, "grant", "pg-cli-alice", "7.00", "--reason", "pg", WALLET_DATABASE_URL=url)
    assert json.loads(ok(granted))["balance"] == "7.00"
    shown = wallet(tmp_path, "balance", "pg-cli-alice", WALLET_DATABASE_URL=url)
    assert json.loads(ok(shown))["balance"] == "7.00"
    for run in (granted, shown):
        assert DB_PASSWORD not in run.stdout + run.stderr


def test_migrate_with_an_unreachable_database_fails_with_a_clear_message(tmp_path: Path) -> None:
    url = f"postgresql://wallet:{DB_PASSWORD}@127.0.0.1:{free_port()}/wallet"
    result = wallet(tmp_path, "migrate", WALLET_DATABASE_URL=url)

    assert DB_PASSWORD not in result.stdout + result.stderr
    assert_clean_failure(result)
    assert "wallet:" in result.stderr


def test_grant_with_an_unreachable_database_fails_cleanly_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://wallet:{DB_PASSWORD}@127.0.0.1:{free_port()}/wallet"
    result = wallet(tmp_path, "grant", "alice", "5.00", "--reason", "x", WALLET_DATABASE_URL=url)

    assert_clean_failure(result)
    assert "Storage unavailable" in result.stderr
    assert DB_PASSWORD not in result.stdout + result.stderr


def alembic_revision(path: Path) -> str | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


# -- serve ---------------------------------------------------------------------------------------


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class Served:
    def __init__(self, cwd: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout = cwd / "serve.stdout"
        self.stderr = cwd / "serve.stderr"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(self.port)],
                cwd=cwd,
                env=clean_env(**env),
                stdout=out,
                stderr=err,
            )

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"wallet serve exited with {self.proc.returncode}: {self.output()}")
            try:
                status, body = get(f"{self.url}/healthz")
            except OSError:
                time.sleep(0.1)
                continue
            if status == 200:
                assert json.loads(body) == {"status": "ok"}
                return
            time.sleep(0.1)
        pytest.fail(f"wallet serve did not answer /healthz within {timeout}s: {self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def _serve(**env: str) -> Served:
        server = Served(tmp_path, **env)
        started.append(server)
        server.wait_healthy()
        return server

    yield _serve
    for server in started:
        server.stop()


def test_serve_answers_healthz_on_a_migrated_sqlite_file(tmp_path: Path, serve: Callable[..., Served]) -> None:
    server = serve(STRIPE_SECRET_KEY=STRIPE_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                   WALLET_JWT_SECRET=JWT_SECRET)
    server.stop()

    database = tmp_path / "wallet.sqlite3"
    assert database.is_file()
    assert alembic_revision(database) == head_revision()
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"wallets", "credit_transactions", "postings", "credit_lots", "holds", "top_ups"} <= tables
    logged = server.output()
    assert "wallet serving on" in logged
    for secret in (STRIPE_KEY, WEBHOOK_SECRET, JWT_SECRET):
        assert secret not in logged


def test_serve_and_token_agree_in_development(tmp_path: Path, serve: Callable[..., Served]) -> None:
    """The README's promise: `wallet token` and `wallet serve` share the local development secret."""
    server = serve(WALLET_ENV="development")
    ok(wallet(tmp_path, "grant", "alice", "50.00", "--reason", "welcome", WALLET_ENV="development"))
    token = ok(wallet(tmp_path, "token", "alice", WALLET_ENV="development")).strip()

    status, body = get(f"{server.url}/api/v1/users/me/wallet", {"Authorization": f"Bearer {token}"})
    assert status == 200, body
    shown = json.loads(body)
    assert shown["user_id"] == "alice"
    assert shown["balance"] == "50.00"
    assert [t["reason"] for t in shown["transactions"]] == ["welcome"]

    status, _ = get(f"{server.url}/api/v1/users/me/wallet")
    assert status == 401


def test_serve_in_production_without_a_jwt_secret_answers_503_on_authenticated_routes(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    server = serve()
    status, body = get(f"{server.url}/api/v1/users/me/wallet", {"Authorization": "Bearer x"})
    assert status == 503
    assert "WALLET_JWT_SECRET" in json.loads(body)["description"]


def test_serve_with_an_invalid_variable_exits_2(tmp_path: Path) -> None:
    result = wallet(tmp_path, "serve", "--port", str(free_port()), TOP_UP_MIN_USD="abc")
    assert result.returncode == 2
    assert "TOP_UP_MIN_USD" in result.stderr
    assert not (tmp_path / "wallet.sqlite3").exists()


# -- spend, hold, capture, release ----------------------------------------------------------------


def balance_of(cwd: Path, user: str) -> dict[str, Any]:
    balance: dict[str, Any] = json.loads(ok(wallet(cwd, "balance", user)))
    return balance


def test_spend_then_replay_spends_once(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "alice", "5.00", "--reason", "funding"))
    args = ("spend", "alice", "1.50", "--reason", "export", "--idempotency-key", "s-1",
            "--metadata", "job=j-7", "team=data")
    spent = json.loads(ok(wallet(tmp_path, *args)))
    again = json.loads(ok(wallet(tmp_path, *args)))

    [lot] = balance_of(tmp_path, "alice")["lots"]
    assert spent == {"user_id": "alice", "credits_spent": "1.50", "balance": "3.50",
                     "transaction_id": spent["transaction_id"],
                     "sources": [{"lot_id": lot["lot_id"], "category": "promotional", "credits": "1.50"}]}
    assert again == spent
    shown = balance_of(tmp_path, "alice")
    assert shown["balance"] == "3.50"
    assert shown["transactions"][0]["metadata"] == {"job": "j-7", "team": "data"}
    assert [t["kind"] for t in shown["transactions"]] == ["spend", "grant"]


def test_spending_more_than_the_balance_exits_1_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "bob", "1.00", "--reason", "funding"))
    result = wallet(tmp_path, "spend", "bob", "1.01", "--reason", "x", "--idempotency-key", "s-2")

    assert_clean_failure(result)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("wallet: Insufficient credits: ")
    assert "1.00" in result.stderr
    assert [t["kind"] for t in balance_of(tmp_path, "bob")["transactions"]] == ["grant"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("spend", "carol", "1.00", "--reason", "x"), "--idempotency-key"),
        (("spend", "carol", "1.00", "--idempotency-key", "k"), "--reason"),
        (("spend", "carol", "1.00", "--reason", "x", "--idempotency-key", "k", "--metadata", "novalue"), "key=value"),
        (("hold", "carol", "1.00", "--reason", "x"), "--idempotency-key"),
        (("hold", "carol", "1.00", "--reason", "x", "--idempotency-key", "k", "--expires-in", "soon"), "--expires-in"),
        (("capture",), "hold_id"),
        (("history", "carol", "--nope"), "--nope"),
    ],
)
def test_incomplete_commands_are_usage_errors(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    result = wallet(tmp_path, *args)
    assert result.returncode == 2
    assert says in result.stderr
    assert not (tmp_path / "wallet.sqlite3").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("spend", "dave", "0", "--reason", "x", "--idempotency-key", "k"), "credits must be greater than 0"),
        (("spend", "dave", "1.00", "--reason", "x", "--idempotency-key", "has space"),
         "--idempotency-key must be 1-255 printable ASCII characters"),
        (("spend", "dave", "1.00", "--reason", "x", "--idempotency-key", "k", "--metadata", "a=1", "a=2"),
         "names a key twice"),
        (("hold", "dave", "1.00", "--reason", "x", "--idempotency-key", "k", "--expires-in", "0"),
         "--expires-in must be a whole number of seconds from 1 to 604800"),
        (("hold", "dave", "1.00", "--reason", "x", "--idempotency-key", "k", "--expires-in", "604801"),
         "--expires-in must be a whole number of seconds"),
        (("capture", "hold_unknown"), "no hold"),
        (("release", "hold_unknown"), "no hold"),
        (("history", "dave", "--limit", "0"), "--limit must be a whole number from 1 to 100"),
        (("history", "dave", "--cursor", "garbage"), "--cursor is not a cursor"),
    ],
)
def test_invalid_spending_input_fails_with_a_clear_message(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    result = wallet(tmp_path, *args)
    assert_clean_failure(result)
    assert result.returncode == 1
    assert says in result.stderr
    assert "expires_in_seconds" not in result.stderr and "Idempotency-Key" not in result.stderr


def test_hold_capture_part_then_balance(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "erin", "10.00", "--reason", "funding"))
    held = json.loads(ok(wallet(tmp_path, "hold", "erin", "4.00", "--reason", "render",
                                "--idempotency-key", "h-1", "--expires-in", "600")))
    assert (held["status"], held["credits_held"], held["balance"]) == ("open", "4.00", "6.00")
    shown = balance_of(tmp_path, "erin")
    assert (shown["balance"], shown["held"]) == ("6.00", "4.00")

    captured = json.loads(ok(wallet(tmp_path, "capture", held["hold_id"], "2.50", "--reason", "final")))
    assert (captured["status"], captured["credits_captured"], captured["balance"]) == ("captured", "2.50", "7.50")
    again = json.loads(ok(wallet(tmp_path, "capture", held["hold_id"], "2.50")))
    assert again == captured  # a retried capture changes nothing
    shown = balance_of(tmp_path, "erin")
    assert (shown["balance"], shown["held"]) == ("7.50", "0.00")

    released = wallet(tmp_path, "release", held["hold_id"])
    assert_clean_failure(released)
    assert released.returncode == 1
    assert released.stderr.startswith("wallet: Hold not open: ")


def test_hold_then_release_and_capture_all(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "frank", "10.00", "--reason", "funding"))
    first = json.loads(ok(wallet(tmp_path, "hold", "frank", "4.00", "--reason", "a", "--idempotency-key", "h-a")))
    second = json.loads(ok(wallet(tmp_path, "hold", "frank", "3.00", "--reason", "b", "--idempotency-key", "h-b")))

    released = json.loads(ok(wallet(tmp_path, "release", first["hold_id"])))
    assert (released["status"], released["balance"]) == ("released", "7.00")
    captured = json.loads(ok(wallet(tmp_path, "capture", second["hold_id"])))
    assert (captured["credits_captured"], captured["balance"]) == ("3.00", "7.00")
    twice = wallet(tmp_path, "capture", first["hold_id"])
    assert twice.returncode == 1 and "Hold not open" in twice.stderr
    assert ok(wallet(tmp_path, "verify")).startswith("ledger OK")


# -- expiry ----------------------------------------------------------------------------------------


def test_grant_with_expires_at_shows_it(tmp_path: Path) -> None:
    granted = json.loads(ok(wallet(tmp_path, "grant", "gina", "5.00", "--reason", "promo",
                                   "--expires-at", "2999-01-01T00:00:00Z")))
    assert granted["expires_at"] == "2999-01-01T00:00:00+00:00"
    assert granted["balance"] == "5.00"


@pytest.mark.parametrize(
    ("expires_at", "says"),
    [("2999-01-01T00:00:00", "timezone"), ("tomorrow", "ISO 8601"),
     ("2001-01-01T00:00:00Z", "--expires-at must be in the future")],
)
def test_grant_with_a_bad_expires_at_fails_cleanly(tmp_path: Path, expires_at: str, says: str) -> None:
    result = wallet(tmp_path, "grant", "gina", "5.00", "--reason", "promo", "--expires-at", expires_at)
    assert_clean_failure(result)
    assert result.returncode == 1
    assert says in result.stderr
    assert balance_of(tmp_path, "gina")["balance"] == "0.00"


def grant_in_the_past(cwd: Path, user: str, credits: str, *, expired_for: timedelta) -> None:
    """A promotional grant that expired `expired_for` ago, made through the library with the clock set
    back (a grant must expire in the future when it is made)."""
    then = datetime.now(UTC) - expired_for - timedelta(hours=1)
    container = Container()
    container.settings.override(make_settings(f"sqlite:///{cwd / 'wallet.sqlite3'}"))
    container.clock.override(providers.Object(lambda: then))
    try:
        open_wallet(container).grant(user, credits, reason="promo", granted_by="test",
                                     expires_at=then + timedelta(hours=1))
    finally:
        container.shutdown_resources()


def test_expired_credits_stop_counting_and_expire_books_them_out(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "hank", "2.00", "--reason", "forever"))
    grant_in_the_past(tmp_path, "hank", "5.00", expired_for=timedelta(minutes=5))

    assert balance_of(tmp_path, "hank")["balance"] == "2.00"
    spent = wallet(tmp_path, "spend", "hank", "3.00", "--reason", "x", "--idempotency-key", "k")
    assert spent.returncode == 1 and "Insufficient credits" in spent.stderr

    report = json.loads(ok(wallet(tmp_path, "expire")))
    assert report == {"wallets_expired": 1, "credits_expired": "5.00", "holds_released": 0}
    newest = json.loads(ok(wallet(tmp_path, "history", "hank", "--limit", "1")))["transactions"][0]
    assert (newest["kind"], newest["credits"], newest["balance_after"]) == ("expiry", "-5.00", "2.00")
    assert json.loads(ok(wallet(tmp_path, "expire"))) == {"wallets_expired": 0, "credits_expired": "0.00",
                                                          "holds_released": 0}
    assert balance_of(tmp_path, "hank")["balance"] == "2.00"
    assert ok(wallet(tmp_path, "verify")).startswith("ledger OK")


# -- verify ----------------------------------------------------------------------------------------


def test_verify_passes_on_a_healthy_database(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "ivan", "5.00", "--reason", "funding"))
    ok(wallet(tmp_path, "spend", "ivan", "1.00", "--reason", "x", "--idempotency-key", "k"))
    ok(wallet(tmp_path, "grant", "jack", "1.00", "--reason", "funding"))

    out = ok(wallet(tmp_path, "verify"))
    assert out.strip() == "ledger OK: 4 accounts checked"  # wallet and held, for two users


def test_verify_on_an_empty_database_is_ok(tmp_path: Path) -> None:
    assert ok(wallet(tmp_path, "verify")).strip() == "ledger OK: 0 accounts checked"


def test_verify_exits_1_naming_the_wallet_whose_stored_balance_was_tampered_with(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "kate", "5.00", "--reason", "funding"))
    ok(wallet(tmp_path, "grant", "liam", "5.00", "--reason", "funding"))
    with sqlite3.connect(tmp_path / "wallet.sqlite3") as conn:
        conn.execute("UPDATE wallets SET available = available + 100 WHERE user_id = 'kate'")

    result = wallet(tmp_path, "verify")

    assert_clean_failure(result)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines and all(line.startswith("wallet:kate") for line in lines), result.stdout
    assert "6.00" in result.stdout and "5.00" in result.stdout
    assert "liam" not in result.stdout
    assert "violation" in result.stderr


def test_verify_audits_the_ledger_once_in_one_snapshot(
    service: Service, capsys: pytest.CaptureFixture[str], mocker: MockerFixture
) -> None:
    paid_top_up(service, "cid")
    audits = mocker.spy(SqlLedgerRepository, "audit")
    snapshots = mocker.spy(SqlUnitOfWork, "__enter__")

    code, out, _ = run(service, capsys, "verify")

    assert (code, out.strip()) == (0, "ledger OK: 2 accounts checked")
    assert audits.call_count == 1
    assert snapshots.call_count == 1


# -- history ---------------------------------------------------------------------------------------


def test_history_pages_cover_every_row_once(tmp_path: Path) -> None:
    for i in range(5):
        ok(wallet(tmp_path, "grant", "mia", "1.00", "--reason", f"g{i}"))
    seen, cursor = [], None
    while True:
        args = ["history", "mia", "--limit", "2"] + (["--cursor", cursor] if cursor else [])
        page = json.loads(ok(wallet(tmp_path, *args)))
        seen.extend(page["transactions"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [t["reason"] for t in seen] == ["g4", "g3", "g2", "g1", "g0"]
    assert len({t["id"] for t in seen}) == 5


# -- events and reconcile: in-process, with the fake Stripe of the e2e `service` ------------------
# (a subprocess cannot be handed a fake gateway; `main(..., container=...)` runs the same code path)


def run(svc: Service, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`wallet ARGS` against the service's container: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args), container=svc.container)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def paid_top_up(svc: Service, user: str, amount: str = "10.00", *, webhook: bool = True) -> str:
    pi = svc.container.wallet().top_up(user, amount).payment_intent_id
    signed = svc.gateway.succeed(pi)
    if webhook:
        assert svc.container.wallet().handle_stripe_webhook(*signed).outcome == "granted"
    return pi


def cli_balance(svc: Service, capsys: pytest.CaptureFixture[str], user: str) -> tuple[str, str]:
    code, out, _ = run(svc, capsys, "balance", user)
    assert code == 0
    shown = json.loads(out)
    return shown["balance"], shown["debt"]


def test_events_lists_what_happened_to_a_payment(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    lib = service.container.wallet()
    pi = lib.top_up("ann", "10.00").payment_intent_id
    failed = service.gateway.fail(pi)
    lib.handle_stripe_webhook(*failed)
    succeeded = service.gateway.succeed(pi)
    lib.handle_stripe_webhook(*succeeded)
    lib.handle_stripe_webhook(*succeeded)  # a redelivery: not a second row
    service.gateway.refund(pi, 250, event=None)
    lib.reconcile()

    code, out, err = run(service, capsys, "events", "--payment-intent", pi)

    assert code == 0 and err == ""
    header, *rows = out.strip().splitlines()
    assert header.split() == ["received_at", "event", "id", "type", "outcome", "source"]
    assert [row.split()[2:] for row in rows] == [
        ["payment_intent.payment_failed", "failed", "webhook"],
        ["payment_intent.succeeded", "granted", "webhook"],
        ["refund.updated", "refunded", "reconcile"],
    ]
    assert [row.split()[1] for row in rows[:2]] == [json.loads(failed[0])["id"], json.loads(succeeded[0])["id"]]
    assert all(row.split()[0].endswith("+00:00") for row in rows)
    assert rows[2].split()[1].startswith("reconcile:")


def test_card_shows_and_forgets_a_users_saved_card(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    lib = service.container.wallet()
    setup = lib.setup_card("cal")
    lib.handle_stripe_webhook(*service.gateway.succeed_setup_intent(setup.setup_intent_id, brand="amex", last4="0005"))
    pm_id = service.gateway.setup_intents[setup.setup_intent_id].payment_method_id

    code, out, err = run(service, capsys, "card", "cal")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "payment_method": {"id": pm_id, "brand": "amex", "last4": "0005", "exp_month": 12, "exp_year": 2034}
    }

    code, out, err = run(service, capsys, "card", "cal", "--forget")
    assert code == 0 and json.loads(out) == {"payment_method": None}
    assert err.strip() == f"forgot card amex ending 0005 ({pm_id})"
    assert service.gateway.detached == [pm_id]
    code, out, err = run(service, capsys, "card", "cal")
    assert (code, json.loads(out), err) == (0, {"payment_method": None}, "")


def test_events_of_a_payment_with_none_says_so(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(service, capsys, "events", "--payment-intent", "pi_never_seen")
    assert code == 0 and err == ""
    assert out.strip() == "no events recorded for pi_never_seen (none received yet, or not a payment of this wallet)"


def test_events_needs_the_payment_intent(tmp_path: Path) -> None:
    result = wallet(tmp_path, "events")
    assert result.returncode == 2
    assert "--payment-intent" in result.stderr
    assert not (tmp_path / "wallet.sqlite3").exists()


def test_balance_shows_the_debt_after_a_refund_of_spent_credits(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    pi = paid_top_up(service, "bea")
    service.container.wallet().spend("bea", "900.00", idempotency_key="b-1", reason="usage")
    refund_event = service.gateway.refund(pi, 1000)
    assert refund_event is not None  # for the type checker: None only when asked for no event
    service.container.wallet().handle_stripe_webhook(*refund_event)

    assert cli_balance(service, capsys, "bea") == ("-900.00", "900.00")
    code, out, _ = run(service, capsys, "verify")
    assert code == 0 and out.startswith("ledger OK")
    code, _, err = run(service, capsys, "spend", "bea", "1.00", "--reason", "x", "--idempotency-key", "b-2")
    assert code == 1 and err.startswith("wallet: Insufficient credits: ") and "900.00" in err


def test_reconcile_repairs_what_webhooks_missed_once_and_dry_run_changes_nothing(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    missed = paid_top_up(service, "cat", webhook=False)  # Stripe has the money; the webhook never came
    refunded = paid_top_up(service, "cat")
    service.gateway.refund(refunded, 300, event=None)  # the refund webhook never came either
    paid_top_up(service, "dan")
    assert cli_balance(service, capsys, "cat") == ("1000.00", "0.00")

    code, out, err = run(service, capsys, "reconcile", "--dry-run")
    assert code == 0, out + err
    assert out.startswith("dry run: nothing was changed\n")
    assert "checked          3" in out and "already correct  1" in out
    assert "would repair     2" in out and "needs review     0" in out
    assert "would grant top-up" in out and f"({missed} succeeded)" in out
    assert "would take back credits for refund" in out and f"of {refunded}" in out
    assert cli_balance(service, capsys, "cat") == ("1000.00", "0.00")
    assert service.container.wallet().events(missed) == []

    code, out, err = run(service, capsys, "reconcile")
    assert code == 0, out + err
    assert err.strip() == "reconcile [####################] 3 PaymentIntents listed, done"
    assert out.splitlines()[:4] == ["checked          3", "already correct  1", "repaired         2",
                                    "needs review     0"]
    assert "repairs:" in out
    assert f"({missed} succeeded): granted" in out
    assert f"of {refunded}: refunded" in out
    assert cli_balance(service, capsys, "cat") == ("1700.00", "0.00")
    assert cli_balance(service, capsys, "dan") == ("1000.00", "0.00")

    code, out, _ = run(service, capsys, "reconcile")
    assert code == 0
    assert out.splitlines() == ["checked          3", "already correct  3", "repaired         0",
                                "needs review     0"]
    assert cli_balance(service, capsys, "cat") == ("1700.00", "0.00")
    code, out, _ = run(service, capsys, "events", "--payment-intent", missed)
    assert out.strip().splitlines()[1].split()[2:] == ["payment_intent.succeeded", "granted", "reconcile"]
    assert run(service, capsys, "verify")[0] == 0


def test_reconcile_exits_1_when_a_payment_needs_review(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    lib = service.container.wallet()
    pi = lib.top_up("eve", "10.00").payment_intent_id
    assert lib.handle_stripe_webhook(*service.gateway.succeed(pi, amount_received=1)).outcome == "needs_review"
    paid_top_up(service, "eve")

    code, out, err = run(service, capsys, "reconcile")

    assert code == 1
    assert "needs review     1" in out
    assert "needs review:\n" in out and pi in out
    assert err.splitlines()[-1] == "wallet: 1 payment(s) need review by a person"
    with service.container.unit_of_work()() as tx:
        top_up = tx.top_ups.find_by_payment_intent(pi)
    assert top_up is not None and top_up.status is TopUpStatus.NEEDS_REVIEW  # reconcile does not decide it


def test_reconcile_since_a_future_day_checks_nothing(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    paid_top_up(service, "fin", webhook=False)
    code, out, err = run(service, capsys, "reconcile", "--since", "2999-01-01")
    assert code == 0
    assert "checked          0" in out
    assert "0 PaymentIntents listed" in err
    assert cli_balance(service, capsys, "fin") == ("0.00", "0.00")
    code, out, _ = run(service, capsys, "reconcile", "--since", "2000-01-01")
    assert code == 0 and "repaired         1" in out


def test_reconcile_when_stripe_fails_midway_exits_1_with_one_line(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    paid_top_up(service, "gil", webhook=False)
    service.gateway.fail_next()
    code, out, err = run(service, capsys, "reconcile")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == ["wallet: Payment provider error: Stripe could not be reached (simulated)"]


@pytest.mark.parametrize("since", ["2024-13-01", "yesterday", "2024-01-01T00:00:00Z", ""])
def test_reconcile_with_a_bad_since_is_a_usage_error(tmp_path: Path, since: str) -> None:
    result = wallet(tmp_path, "reconcile", "--since", since)
    assert result.returncode == 2
    assert "--since" in result.stderr and "YYYY-MM-DD" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "wallet.sqlite3").exists()


def test_reconcile_without_stripe_configured_fails_with_one_line(tmp_path: Path) -> None:
    result = wallet(tmp_path, "reconcile")
    assert_clean_failure(result)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wallet: Payments not configured: ") and "STRIPE_SECRET_KEY" in lines[0]


class _Terminal:
    def __init__(self, tty: bool) -> None:
        self.written: list[str] = []
        self.tty = tty

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty


def _intent(n: int) -> PaymentIntent:
    from wallet_core.money import Usd

    return PaymentIntent(f"pi_{n}", Usd(1000), "usd", "succeeded")


def test_progress_redraws_one_line_on_a_terminal() -> None:
    term = _Terminal(tty=True)
    progress = Progress(term)  # type: ignore[arg-type]
    for n in range(3):
        progress(_intent(n))
    progress.finish()
    shown = "".join(term.written)
    assert shown.count("\n") == 1 and shown.endswith("\n") and shown.rstrip().endswith(", done")
    frames = shown.rstrip("\n").split("\r")[1:]
    assert len(frames) == 4
    assert "1 PaymentIntent listed" in frames[0] and "pi_0" in frames[0]
    assert "3 PaymentIntents listed" in frames[2] and "pi_2" in frames[2]
    assert all(len(frame) == 79 for frame in frames[:3])  # each covers what the last one wrote
    assert frames[0] != frames[1]  # the bar moves


def test_progress_in_a_log_prints_a_line_every_so_often_and_a_last_one() -> None:
    log = _Terminal(tty=False)
    progress = Progress(log, every=2)  # type: ignore[arg-type]
    for n in range(5):
        progress(_intent(n))
    progress.finish()
    lines = "".join(log.written).splitlines()
    assert "\r" not in "".join(log.written)
    assert [line.split("] ")[1] for line in lines] == [
        "2 PaymentIntents listed", "4 PaymentIntents listed", "5 PaymentIntents listed, done"]


def test_progress_ends_its_line_before_an_error() -> None:
    term = _Terminal(tty=True)
    progress = Progress(term)  # type: ignore[arg-type]
    progress(_intent(1))
    progress.abort()
    assert "".join(term.written).endswith("\n")


# -- a database `wallet migrate` has not set up (or a newer wallet has) ------------------------------


def set_revision(url: str, revision: str) -> None:
    """Put the database at `revision`: migrate to it, or (for a revision no wallet ships) just say so."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from adapters.sql.migrate import alembic_config

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            if revision.startswith("9"):
                command.upgrade(alembic_config(connection), "head")
                connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
            else:
                command.upgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize(("revision", "says"), [
    (None, "the database schema is not set up: run `wallet migrate`"),
    ("0004", "at revision 0004, older than this wallet's"),
])
def test_a_ledger_command_on_an_unmigrated_postgresql_database_says_run_migrate(
        tmp_path: Path, fresh_postgres_url: str, revision: str | None, says: str) -> None:
    if revision is not None:
        set_revision(fresh_postgres_url, revision)
    for args in (("balance", "alice"), ("grant", "alice", "5.00", "--reason", "x"), ("verify",)):
        result = wallet(tmp_path, *args, WALLET_DATABASE_URL=fresh_postgres_url)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr and "relation" not in result.stderr
        assert result.stdout == ""
        assert says in result.stderr
        assert "run `wallet migrate`" in result.stderr
        assert result.stderr.count("\n") == 1

    ok(wallet(tmp_path, "migrate", WALLET_DATABASE_URL=fresh_postgres_url))
    assert json.loads(ok(wallet(tmp_path, "grant", "alice", "5.00", "--reason", "x",
                                WALLET_DATABASE_URL=fresh_postgres_url)))["balance"] == "5.00"


@pytest.mark.postgres
def test_serve_on_an_unmigrated_postgresql_database_is_not_ready_until_migrate_runs(
        tmp_path: Path, serve: Callable[..., Served], fresh_postgres_url: str) -> None:
    server = serve(WALLET_DATABASE_URL=fresh_postgres_url, WALLET_JWT_SECRET=JWT_SECRET)
    token = ok(wallet(tmp_path, "token", "alice", WALLET_JWT_SECRET=JWT_SECRET)).strip()
    auth = {"Authorization": f"Bearer {token}"}

    status, body = get(f"{server.url}/readyz")
    assert status == 503
    assert json.loads(body) == {"title": "Not ready",
                                "description": "the database schema is not set up: run `wallet migrate`"}
    status, body = get(f"{server.url}/api/v1/users/me/wallet", auth)
    assert status == 503
    assert json.loads(body) == {"title": "Database schema not ready",
                                "description": "the database schema is not set up: run `wallet migrate`"}
    assert get(f"{server.url}/healthz")[0] == 200  # alive, not ready

    ok(wallet(tmp_path, "migrate", WALLET_DATABASE_URL=fresh_postgres_url))
    # Ready without a restart: the wallet route within its re-check interval, /readyz at once.
    deadline = time.monotonic() + 10
    while get(f"{server.url}/api/v1/users/me/wallet", auth)[0] != 200:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.2)
    assert get(f"{server.url}/readyz") == (200, b'{"status": "ready"}')
    assert "Traceback" not in server.output()
    assert "run `wallet migrate`" in server.output()  # logged once, as a warning


def test_a_sqlite_database_migrated_by_a_newer_wallet_is_reported(tmp_path: Path) -> None:
    ok(wallet(tmp_path, "grant", "alice", "5.00", "--reason", "x"))
    set_revision(f"sqlite:///{tmp_path / 'wallet.sqlite3'}", "9999_from_the_future")

    refused = wallet(tmp_path, "migrate")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert "at revision 9999_from_the_future, which this wallet does not know" in refused.stderr
    assert "upgrade wallet" in refused.stderr
    assert alembic_revision(tmp_path / "wallet.sqlite3") == "9999_from_the_future"  # left alone

    shown = wallet(tmp_path, "balance", "alice")  # a rolling upgrade: older code still works, and says so
    assert json.loads(ok(shown))["balance"] == "5.00"
    assert "wallet: warning: the database schema is at revision 9999_from_the_future" in shown.stderr


# -- revert, and grants with effective_at, priority and category ----------------------------------


def cli_json(svc: Service, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = run(svc, capsys, *args)
    assert code == 0, err
    assert out == json.dumps(json.loads(out), indent=2) + "\n"
    return dict(json.loads(out))


def test_revert_prints_the_answer_and_running_it_again_answers_the_same(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = service.container.wallet()
    lib.grant("rex", "10.00", reason="promo", granted_by="test")
    spent = lib.spend("rex", "4.00", idempotency_key="s-1", reason="usage")

    code, out, err = run(service, capsys, "revert", spent.transaction_id, "--reason", "charged twice")
    code_again, out_again, err_again = run(service, capsys, "revert", spent.transaction_id, "--reason", "charged twice")

    assert (code, code_again) == (0, 0)
    reverted = json.loads(out)
    assert reverted == {
        "transaction_id": reverted["transaction_id"],
        "reverts": spent.transaction_id,
        "credits_reverted": "4.00",
        "user_id": "rex",
        "balance": "10.00",
        "sources": [{"lot_id": spent.sources[0].lot_id, "category": "promotional", "credits": "4.00"}],
    }
    assert out_again == out  # the derived key replays the first revert
    assert err.strip() == err_again.strip() == f"wallet: idempotency key: revert-{spent.transaction_id}"
    shown = cli_json(service, capsys, "history", "rex")["transactions"]
    assert [(t["kind"], t["reverts"], t["reverted_by"]) for t in shown] == [
        ("revert", spent.transaction_id, None),
        ("spend", None, reverted["transaction_id"]),
        ("grant", None, None),
    ]
    assert shown[0]["sources"] == reverted["sources"]
    assert lib.verify() == []


def test_revert_dry_run_writes_nothing_and_an_explicit_key_is_used(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = service.container.wallet()
    granted = lib.grant("sam", "10.00", reason="promo", granted_by="test")
    before = cli_json(service, capsys, "balance", "sam")

    dry = cli_json(service, capsys, "revert", granted.transaction_id, "--reason", "wrong user", "--dry-run")

    assert (dry["transaction_id"], dry["dry_run"], dry["credits_reverted"], dry["balance"]) == (
        None, True, "10.00", "0.00")
    assert cli_json(service, capsys, "balance", "sam") == before
    code, out, err = run(service, capsys, "revert", granted.transaction_id, "--reason", "wrong user",
                         "--idempotency-key", "ticket-9")
    assert code == 0 and err == ""
    assert json.loads(out)["balance"] == "0.00"
    with service.container.unit_of_work()(read_only=True) as tx:
        assert tx.ledger.find_transaction_by_reference("revert:ticket-9") is not None


def test_revert_that_is_refused_or_unknown_exits_1_with_one_line(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = service.container.wallet()
    granted = lib.grant("tia", "10.00", reason="promo", granted_by="test")
    first = lib.revert(granted.transaction_id, reason="wrong user", idempotency_key="r-1")

    for args, says in [
        ((granted.transaction_id,), f"wallet: Not revertible: transaction {granted.transaction_id} was already "
                                    f"reverted by {first.transaction_id}"),
        ((str(first.transaction_id),), "wallet: Not revertible: "),
        (("ctx_unknown",), "wallet: Not found: no transaction ctx_unknown"),
        (("bad id",), "wallet: Invalid input: transaction_id must be a transaction id"),
    ]:
        code, out, err = run(service, capsys, "revert", *args, "--reason", "again")
        assert code == 1 and out == "", (args, out)
        assert len(err.splitlines()) == 1 and err.startswith(says), (args, err)
    assert lib.balance("tia") == 0


def test_revert_needs_a_reason(tmp_path: Path) -> None:
    result = wallet(tmp_path, "revert", "ctx_1")
    assert result.returncode == 2
    assert "--reason" in result.stderr


def test_grant_with_effective_at_priority_and_category_shows_them_and_the_lots(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    at = (service.clock() + timedelta(days=2)).replace(microsecond=0)

    paid = cli_json(service, capsys, "grant", "uma", "20.00", "--reason", "bank transfer", "--category", "paid",
                    "--priority", "5")
    later = cli_json(service, capsys, "grant", "uma", "7.00", "--reason", "launch", "--effective-at",
                     at.isoformat().replace("+00:00", "Z"))

    assert (paid["category"], paid["priority"], paid["effective_at"]) == ("paid", 5, None)
    assert (later["category"], later["priority"], later["effective_at"]) == ("promotional", 50, at.isoformat())
    shown = cli_json(service, capsys, "balance", "uma")
    assert (shown["balance"], shown["pending"], shown["by_category"]) == (
        "20.00", "7.00", {"paid": "20.00", "promotional": "0.00"})
    assert [(lot["category"], lot["remaining"], lot["effective_at"]) for lot in shown["lots"]] == [
        ("promotional", "7.00", at.isoformat()),
        ("paid", "20.00", None),
    ]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--priority", "101"), 1, "--priority must be a whole number from 0 to 100"),
        (("--priority", "high"), 1, "--priority must be a whole number"),
        (("--effective-at", "2030-01-01T00:00:00"), 1, "--effective-at needs a timezone"),
        (("--effective-at", "2001-01-01T00:00:00Z"), 1, "--effective-at must not be in the past"),
        (("--category", "gold"), 2, "invalid choice: 'gold'"),
    ],
)
def test_grant_with_bad_options_fails_naming_the_option(
    service: Service, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], code: int, says: str
) -> None:
    if code == 2:
        with pytest.raises(SystemExit) as usage:
            main(["grant", "vic", "5.00", "--reason", "x", *args], container=service.container)
        assert usage.value.code == 2
        err = capsys.readouterr().err
    else:
        got, out, err = run(service, capsys, "grant", "vic", "5.00", "--reason", "x", *args)
        assert (got, out) == (1, "")
    assert says in err
    assert service.container.wallet().balance("vic") == 0


# -- outbound events: wallet webhooks ..., wallet outbound-events ------------------------------------


@pytest.fixture
def dev_service(make_service: Callable[..., Service]) -> Service:
    """WALLET_WEBHOOK_ALLOW_PRIVATE_URLS=true: an endpoint may be a receiver on 127.0.0.1."""
    from adapters.fake_gateway import FakePaymentGateway

    return make_service(FakePaymentGateway(), webhook_allow_private_urls=True)


def test_webhooks_add_list_deliveries_redeliver_and_remove(
    dev_service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    from standardwebhooks import Webhook

    from tests.fixtures.webhook_receiver import Answer, WebhookReceiver

    receiver = WebhookReceiver().start()
    try:
        code, out, _ = run(dev_service, capsys, "webhooks", "add", receiver.url(), "--events", "credits.granted",
                           "credits.spent", "--description", "billing")
        assert code == 0
        added = json.loads(out)
        assert added["secret"].startswith("whsec_") and added["events"] == ["credits.granted", "credits.spent"]
        assert added["description"] == "billing"
        code, out, _ = run(dev_service, capsys, "webhooks", "list")
        assert code == 0 and added["secret"] not in out
        assert [e["id"] for e in json.loads(out)["endpoints"]] == [added["id"]]

        assert run(dev_service, capsys, "grant", "cli-ann", "5.00", "--reason", "promo")[0] == 0
        receiver.answer_next(Answer(status=503))
        dev_service.container.wallet().deliver_webhooks()
        receiver.wait_for(1)
        code, out, _ = run(dev_service, capsys, "webhooks", "deliveries", added["id"], "--status", "pending")
        pending = json.loads(out)["deliveries"]
        assert code == 0 and [(d["event_type"], d["last_status_code"]) for d in pending] == [("credits.granted", 503)]

        code, out, _ = run(dev_service, capsys, "webhooks", "redeliver", pending[0]["event_id"])
        assert code == 0 and json.loads(out) == {"event_id": pending[0]["event_id"], "deliveries_queued": 1}
        dev_service.container.wallet().deliver_webhooks()
        got = receiver.wait_for(2)
        assert Webhook(added["secret"]).verify(got[1].body, got[1].headers)["id"] == pending[0]["event_id"]
        code, out, _ = run(dev_service, capsys, "webhooks", "deliveries", added["id"], "--status", "delivered")
        assert [d["event_id"] for d in json.loads(out)["deliveries"]] == [pending[0]["event_id"]]

        code, out, _ = run(dev_service, capsys, "webhooks", "remove", added["id"])
        assert code == 0 and out.strip() == f"removed {added['id']}"
        assert json.loads(run(dev_service, capsys, "webhooks", "list")[1]) == {"endpoints": []}
        code, out, err = run(dev_service, capsys, "webhooks", "remove", added["id"])
        assert code == 1 and out == "" and added["id"] in err
    finally:
        receiver.close()


def test_webhooks_add_refuses_plain_http_and_unknown_types_in_one_line(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(service, capsys, "webhooks", "add", "http://example.com/hooks")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "https" in err
    code, out, err = run(service, capsys, "webhooks", "add", "https://1.1.1.1/x", "--events", "credits.gifted")
    assert code == 1 and out == "" and err.startswith("wallet: Invalid input: --events")
    assert json.loads(run(service, capsys, "webhooks", "list")[1]) == {"endpoints": []}


def test_outbound_events_pages_oldest_first_and_filters(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    for user, credits in (("cli-bo", "3.00"), ("cli-cy", "4.00"), ("cli-bo", "5.00")):
        assert run(service, capsys, "grant", user, credits, "--reason", "promo")[0] == 0
    service.container.wallet().deliver_webhooks()  # numbers the committed events (the pull's order)

    code, out, _ = run(service, capsys, "outbound-events", "--limit", "2")
    first = json.loads(out)
    code2, out2, _ = run(service, capsys, "outbound-events", "--after", first["next_cursor"])
    rest = json.loads(out2)
    assert code == code2 == 0
    assert [(e["user_id"], e["data"]["credits"]) for e in first["events"] + rest["events"]] == [
        ("cli-bo", "3.00"), ("cli-cy", "4.00"), ("cli-bo", "5.00"),
    ]
    code, out, _ = run(service, capsys, "outbound-events", "--user", "cli-bo", "--type", "credits.granted")
    assert [e["data"]["credits"] for e in json.loads(out)["events"]] == ["3.00", "5.00"]
    code, out, err = run(service, capsys, "outbound-events", "--after", "nonsense")
    assert code == 1 and err.startswith("wallet: Invalid input: --after")


# -- automatic top-up ---------------------------------------------------------------------------------


def test_auto_top_up_sets_shows_and_removes_a_users_rule(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    rule = cli_json(service, capsys, "auto-top-up", "ada", "--threshold", "500.00", "--target", "2000.00",
                    "--monthly-limit", "200.00")
    assert (rule["threshold_credits"], rule["target_credits"], rule["amount_usd"], rule["monthly_limit_usd"]) == (
        "500.00", "2000.00", None, "200.00")
    assert rule["status"] == "paused_no_payment_method"  # no saved card yet
    assert cli_json(service, capsys, "auto-top-up", "ada") == rule
    fixed = cli_json(service, capsys, "auto-top-up", "ada", "--threshold", "100.00", "--amount", "20.00")
    assert (fixed["target_credits"], fixed["amount_usd"], fixed["monthly_limit_usd"]) == (None, "20.00", None)

    code, out, err = run(service, capsys, "auto-top-up", "ada", "--off")
    assert (code, out.strip(), err) == (0, "removed the automatic top-up rule of ada", "")
    code, _, err = run(service, capsys, "auto-top-up", "ada")
    assert code == 1 and "no automatic top-up rule" in err


def test_auto_top_up_refuses_a_bad_rule_naming_the_option(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    for args, named in (
        (("--threshold", "500.00", "--target", "400.00"), "--target must be above threshold_credits"),
        (("--threshold", "500.00", "--amount", "0.10"), "--amount must be at least"),
        (("--target", "400.00"), "--threshold is required"),
        (("--threshold", "5.00", "--amount", "5.00", "--off"), "--off takes no other option"),
    ):
        code, out, err = run(service, capsys, "auto-top-up", "ada", *args)
        assert code == 1 and out == "" and named in err, (args, err)
    code, _, _ = run(service, capsys, "auto-top-up", "ada")
    assert code == 1  # nothing was stored
