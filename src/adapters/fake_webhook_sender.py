"""A WebhookSender for tests: records what it was asked to send and answers as scripted. No network."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from wallet_core.errors import InvalidInput
from wallet_core.webhooks_out import SendResult


@dataclass(frozen=True)
class Sent:
    url: str
    secrets: tuple[str, ...]
    message_id: str
    body: bytes
    at: datetime


class FakeWebhookSender:
    """Answers 200 unless told otherwise (`answer_next`); URLs on `refused_hosts` fail check_url."""

    def __init__(self, refused_hosts: tuple[str, ...] = ("10.0.0.1", "localhost", "127.0.0.1")) -> None:
        self.sent: list[Sent] = []
        self._answers: deque[SendResult] = deque()
        self._refused = refused_hosts
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FakeWebhookSender(sent={len(self.sent)})"

    def answer_next(self, *results: SendResult) -> None:
        self._answers.extend(results)

    def check_url(self, url: str) -> None:
        if any(f"//{host}" in url for host in self._refused):
            raise InvalidInput("url", "must resolve to a public address")

    def send(self, url: str, *, secrets: tuple[str, ...], message_id: str, body: bytes, at: datetime) -> SendResult:
        with self._lock:
            self.sent.append(Sent(url, secrets, message_id, body, at))
            return self._answers.popleft() if self._answers else SendResult(200)
