"""Fixtures every layer shares: where the databases are, and the localstripe server."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.localstripe"]

POSTGRES_ENV = "WALLET_TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session", autouse=True)
def private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """XDG_STATE_HOME for the session: the development JWT secret (kept in the user's state directory)
    goes to a temporary directory, never the real home; `wallet` subprocesses inherit it."""
    path = str(tmp_path_factory.mktemp("xdg-state"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", path)
        yield path


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The PostgreSQL server tests may use. Skips locally when unset; fails in CI (CI=true)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if _in_ci():
            pytest.fail(f"{POSTGRES_ENV} must be set in CI: PostgreSQL tests must run, not skip")
        pytest.skip(f"{POSTGRES_ENV} is not set")
    return url


@contextlib.contextmanager
def throwaway_postgres_database(server_url: str, prefix: str = "wallet_test") -> Iterator[str]:
    """A new, empty database on that server, named `prefix_<random>`; dropped afterwards, whatever
    connections are still open to it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on that server for this test session, dropped afterwards."""
    with throwaway_postgres_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def fresh_postgres_url(postgres_server_url: str) -> Iterator[str]:
    """An empty database of the test's own, dropped afterwards: for tests that must start from nothing
    (migrations, an unmigrated schema) or cannot share rows (the fake gateway's ids restart at
    pi_fake_1 in every test; expiry sweeps every user)."""
    with throwaway_postgres_database(postgres_server_url, "wallet_fresh") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A real SQLite file, new for each test."""
    return f"sqlite:///{tmp_path / 'wallet.sqlite3'}"
