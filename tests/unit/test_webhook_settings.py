"""The outbound-webhook settings (WALLET_WEBHOOK_RETRY_SECONDS, WALLET_WEBHOOK_ALLOW_PRIVATE_URLS,
WALLET_WEBHOOK_WORKER), their refusals, and the container wiring them into the sender and the wallet."""

from __future__ import annotations

from pathlib import Path

import pytest
from dependency_injector import providers

from adapters.webhook_sender import HttpWebhookSender
from entrypoints.cli import main
from entrypoints.container import Container
from entrypoints.settings import Settings, SettingsError
from wallet_core.webhooks_out import DEFAULT_RETRY_SECONDS


def load(tmp_path: Path, **environ: str) -> Settings:
    environ.setdefault("XDG_STATE_HOME", str(tmp_path / "state"))
    return Settings.from_env(environ=environ, cwd=tmp_path)


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)

    assert settings.webhook_retry_seconds == DEFAULT_RETRY_SECONDS == (5, 30, 120, 600, 3600, 21600, 86400)
    assert settings.webhook_allow_private_urls is False
    assert settings.webhook_worker is True


def test_every_webhook_variable_is_read(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        WALLET_WEBHOOK_RETRY_SECONDS=" 1, 2,3 ",
        WALLET_WEBHOOK_ALLOW_PRIVATE_URLS="TRUE",
        WALLET_WEBHOOK_WORKER="false",
    )

    assert settings.webhook_retry_seconds == (1, 2, 3)
    assert settings.webhook_allow_private_urls is True
    assert settings.webhook_worker is False
    assert "webhook_allow_private_urls=True, webhook_retry_seconds=1,2,3, webhook_worker=False" in repr(settings)


@pytest.mark.parametrize("name", ["WALLET_WEBHOOK_ALLOW_PRIVATE_URLS", "WALLET_WEBHOOK_WORKER"])
@pytest.mark.parametrize("value", ["1", "yes", "off", "tru", "true false"])
def test_a_flag_is_true_or_false_and_nothing_else(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load(tmp_path, **{name: value})

    assert str(refused.value) == f"{name} must be true or false"


@pytest.mark.parametrize("value", ["0", "5,0", "five", "5;30", "-5", "5,,30", "604801", ",".join(["1"] * 21)])
def test_a_bad_retry_schedule_stops_start_up_naming_the_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match=r"^WALLET_WEBHOOK_RETRY_SECONDS must be"):
        load(tmp_path, WALLET_WEBHOOK_RETRY_SECONDS=value)


def container_with(settings: Settings) -> Container:
    container = Container()
    container.settings.override(providers.Object(settings))
    return container


@pytest.mark.parametrize("allowed", [True, False])
def test_the_container_builds_the_real_sender_and_hands_the_settings_to_the_wallet(
    tmp_path: Path, allowed: bool
) -> None:
    settings = load(
        tmp_path,
        WALLET_WEBHOOK_RETRY_SECONDS="7,70",
        WALLET_WEBHOOK_ALLOW_PRIVATE_URLS=str(allowed).lower(),
    )
    container = container_with(settings)
    try:
        wallet = container.wallet()
        sender = container.webhook_sender()

        assert isinstance(sender, HttpWebhookSender) and sender.allow_private is allowed
        assert wallet.webhook_retry_seconds == (7, 70)
        assert wallet.allow_private_webhook_urls is allowed
        assert wallet._webhook_sender() is sender
    finally:
        container.shutdown_resources()


def test_wallet_worker_with_a_bad_retry_schedule_exits_2_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WALLET_DATABASE_URL", f"sqlite:///{tmp_path / 'w.sqlite3'}")
    monkeypatch.setenv("WALLET_WEBHOOK_RETRY_SECONDS", "5,soon")
    monkeypatch.setattr("entrypoints.logs.configure_logging", lambda *a, **k: None)  # keep pytest's logging

    assert main(["worker"]) == 2

    assert "configuration error: WALLET_WEBHOOK_RETRY_SECONDS must be" in capsys.readouterr().err
