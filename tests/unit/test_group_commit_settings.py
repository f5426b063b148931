"""WALLET_GROUP_COMMIT: on by default (PostgreSQL and SQLite: docs/performance.md says why), off when
set to false, nothing but true or false; the container hands it to the wallet."""

from __future__ import annotations

from pathlib import Path

import pytest
from dependency_injector import providers

from entrypoints.container import Container
from entrypoints.settings import Settings, SettingsError

PG_URL = "postgresql+psycopg://wallet@db.internal/wallet"


def load(tmp_path: Path, **environ: str) -> Settings:
    environ.setdefault("XDG_STATE_HOME", str(tmp_path / "state"))
    return Settings.from_env(environ=environ, cwd=tmp_path)


@pytest.mark.parametrize(
    ("url", "value", "shared"),
    [
        (PG_URL, None, True),
        ("sqlite:///w.sqlite3", None, True),
        (PG_URL, "false", False),
        ("sqlite:///w.sqlite3", "FALSE", False),
        ("sqlite:///w.sqlite3", "true", True),
    ],
)
def test_spends_share_commits_unless_turned_off(
    tmp_path: Path, url: str, value: str | None, shared: bool
) -> None:
    environ = {"WALLET_DATABASE_URL": url} | ({} if value is None else {"WALLET_GROUP_COMMIT": value})
    settings = load(tmp_path, **environ)

    assert settings.group_commit is shared
    assert f"group_commit={shared}" in repr(settings)
    container = Container()
    container.settings.override(providers.Object(settings))
    try:
        assert (container.wallet()._spends is not None) is shared
    finally:
        container.shutdown_resources()


@pytest.mark.parametrize("value", ["1", "on", "yes"])
def test_group_commit_is_true_or_false_and_nothing_else(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match=r"^WALLET_GROUP_COMMIT must be true or false$"):
        load(tmp_path, WALLET_GROUP_COMMIT=value)
