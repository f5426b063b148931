"""WALLET_GROUP_COMMIT: on by default (PostgreSQL and SQLite: docs/performance.md says why), off when
set to false, nothing but true or false; the container hands it to the wallet. WALLET_GROUP_WRITES (the
other writes): auto by default, which groups them on SQLite only."""

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


@pytest.mark.parametrize(
    ("url", "commit", "writes", "grouped"),
    [
        (PG_URL, None, None, False),  # auto: PostgreSQL runs them faster one transaction each
        ("sqlite:///w.sqlite3", None, None, True),  # auto: SQLite shares its commits
        ("sqlite:///w.sqlite3", "false", None, False),  # auto follows WALLET_GROUP_COMMIT
        ("sqlite:///w.sqlite3", None, "Auto", True),
        (PG_URL, None, "true", True),
        ("sqlite:///w.sqlite3", None, "false", False),
        (PG_URL, "false", "TRUE", True),
    ],
)
def test_other_writes_share_commits_on_sqlite_unless_told_otherwise(
    tmp_path: Path, url: str, commit: str | None, writes: str | None, grouped: bool
) -> None:
    environ = {"WALLET_DATABASE_URL": url}
    environ |= {} if commit is None else {"WALLET_GROUP_COMMIT": commit}
    environ |= {} if writes is None else {"WALLET_GROUP_WRITES": writes}
    settings = load(tmp_path, **environ)

    assert settings.writes_grouped is grouped
    assert "group_writes=" + ("auto" if writes in (None, "Auto") else str(grouped)) in repr(settings)
    container = Container()
    container.settings.override(providers.Object(settings))
    try:
        assert (container.wallet()._writes is not None) is grouped
    finally:
        container.shutdown_resources()


@pytest.mark.parametrize("value", ["1", "on", "sometimes"])
def test_group_writes_is_true_false_or_auto_and_nothing_else(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match=r"^WALLET_GROUP_WRITES must be true, false or auto$"):
        load(tmp_path, WALLET_GROUP_WRITES=value)
