"""The real webhook sender never shows a signing secret: not in its repr, not in the headers it sends
(only signatures), not in a failed attempt's reason, not in a log line. No network: the name lookups
are faked and every attempt here ends before a connection."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
from datetime import UTC, datetime

import pytest

from adapters.webhook_sender import HttpWebhookSender, signed_headers
from wallet_core.webhooks_out import new_secret

AT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
BODY = b'{"id":"evt_1","type":"credits.granted"}'


def _no_such_host(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize(
    ("sender", "url", "secret", "why"),
    [
        (HttpWebhookSender(resolver=lambda h, p: ["10.0.0.7"]), "https://hooks.example.com/", new_secret(),
         "resolves to a private address"),
        (HttpWebhookSender(resolver=_no_such_host), "https://hooks.example.com/", new_secret(),
         "the host name does not resolve"),
        (HttpWebhookSender(resolver=lambda h, p: ["93.184.215.14"]), "https://hooks.example.com/", "whsec_!!!!",
         "cannot sign: a signing secret is not a valid whsec_ secret"),
        (HttpWebhookSender(), "http://hooks.example.com/", new_secret(), "the URL must start with https://"),
    ],
)  # fmt: skip
def test_no_failure_reason_or_log_line_holds_the_secret(
    sender: HttpWebhookSender, url: str, secret: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="wallet"):
        result = sender.send(url, secrets=(secret, new_secret()), message_id="evt_1", body=BODY, at=AT)

    assert (result.status_code, result.error) == (None, why)
    logged = " ".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert why in logged
    assert secret not in logged and secret not in repr(sender) and secret not in repr(result)
    assert secret.removeprefix("whsec_") not in logged + (result.error or "")


def test_the_headers_carry_signatures_of_the_secrets_never_the_secrets() -> None:
    current, previous = new_secret(), new_secret()

    headers = signed_headers((current, previous), message_id="evt_1", body=BODY, at=AT)

    sent = repr(headers)
    for secret in (current, previous):
        assert secret not in sent and secret.removeprefix("whsec_") not in sent
    key = base64.b64decode(current.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, b"evt_1.1735732800." + BODY, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"].split(" ")[0] == f"v1,{expected}"  # the specification's HMAC
    assert headers["webhook-timestamp"] == "1735732800"


def test_a_naive_time_is_taken_as_utc() -> None:
    secret = new_secret()
    naive = signed_headers((secret,), message_id="evt_1", body=BODY, at=AT.replace(tzinfo=None))

    assert naive == signed_headers((secret,), message_id="evt_1", body=BODY, at=AT)


def test_the_senders_repr_says_how_it_is_set_up() -> None:
    assert repr(HttpWebhookSender(allow_private=True, timeout=3)) == "HttpWebhookSender(allow_private=True, timeout=3)"
