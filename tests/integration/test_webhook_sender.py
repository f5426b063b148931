"""The real WebhookSender against a real HTTP(S) receiver on 127.0.0.1: Standard Webhooks signatures
that the `standardwebhooks` library verifies (one per secret after a rotation), failures reported and
never raised (5xx, redirects, hanging or dribbling receivers, refused connections, bad TLS), and the
SSRF guard (private addresses refused, at check time and again at send time)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from adapters.webhook_sender import HttpWebhookSender, is_public_address
from tests.fixtures.webhook_receiver import Answer, WebhookReceiver, closed_port
from wallet_core.errors import InvalidInput
from wallet_core.webhooks_out import SendResult, new_secret

BODY = json.dumps(
    {"id": "evt_1", "type": "credits.granted", "user_id": "alice", "data": {"note": "café"}},
    ensure_ascii=False,
    separators=(",", ":"),
).encode()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def sender() -> HttpWebhookSender:
    return HttpWebhookSender(allow_private=True, timeout=2)


def send(
    sender: HttpWebhookSender, url: str, *secrets: str, message_id: str = "evt_1", at: datetime | None = None
) -> SendResult:
    return sender.send(
        url, secrets=secrets or (new_secret(),), message_id=message_id, body=BODY, at=at or datetime.now(UTC)
    )


# -- what the receiver gets ----------------------------------------------------------------------


def test_the_receiver_gets_the_body_and_headers_and_the_signature_verifies(
    sender: HttpWebhookSender, receiver: WebhookReceiver
) -> None:
    secret = new_secret()
    at = datetime.now(UTC)

    result = send(sender, receiver.url("/hooks/wallet?account=7"), secret, message_id="evt_abc", at=at)

    assert result.delivered and result.status_code == 200 and result.error is None
    [got] = receiver.wait_for(1)
    assert got.path == "/hooks/wallet?account=7"
    assert got.body == BODY
    assert got.headers["webhook-id"] == "evt_abc"
    assert got.headers["webhook-timestamp"] == str(math.floor(at.timestamp()))
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("wallet-webhooks/")
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert got.headers["webhook-signature"].startswith("v1,") and " " not in got.headers["webhook-signature"]
    assert Webhook(secret).verify(got.body, got.headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(got.body, got.headers)  # another secret does not verify it


def test_after_a_rotation_both_the_new_and_the_previous_secret_verify(
    sender: HttpWebhookSender, receiver: WebhookReceiver
) -> None:
    current, previous = new_secret(), new_secret()

    assert send(sender, receiver.url(), current, previous).delivered

    [got] = receiver.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(current).verify(got.body, got.headers)["id"] == "evt_1"
    assert Webhook(previous).verify(got.body, got.headers)["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(got.body, got.headers)


def test_a_time_in_another_zone_is_signed_as_the_same_instant(
    sender: HttpWebhookSender, receiver: WebhookReceiver
) -> None:
    from datetime import timedelta, timezone

    at = datetime.now(timezone(timedelta(hours=-5)))
    secret = new_secret()

    assert send(sender, receiver.url(), secret, at=at).delivered

    [got] = receiver.wait_for(1)
    assert got.headers["webhook-timestamp"] == str(math.floor(at.timestamp()))
    Webhook(secret).verify(got.body, got.headers)  # within the library's 5-minute tolerance: the same instant


# -- failures are results, not exceptions --------------------------------------------------------


def test_a_500_is_a_failed_attempt(sender: HttpWebhookSender, receiver: WebhookReceiver) -> None:
    receiver.answer_next(Answer(500))

    result = send(sender, receiver.url())

    assert (result.status_code, result.delivered, result.error) == (500, False, "answered 500")


def test_a_redirect_is_not_followed_and_is_a_failed_attempt(
    sender: HttpWebhookSender, receiver: WebhookReceiver
) -> None:
    receiver.answer_next(Answer(302, location=receiver.url("/elsewhere")))

    result = send(sender, receiver.url("/hooks"))

    assert result.status_code == 302 and not result.delivered
    assert "redirects are not followed" in (result.error or "")
    time.sleep(0.2)
    assert [r.path for r in receiver.received] == ["/hooks"]  # /elsewhere was never asked for


def test_a_receiver_that_hangs_past_the_timeout_is_a_timeout(receiver: WebhookReceiver) -> None:
    sender = HttpWebhookSender(allow_private=True, timeout=0.5)
    receiver.answer_next(Answer(200, delay=3))

    started = time.monotonic()
    result = send(sender, receiver.url())

    assert time.monotonic() - started < 1.5
    assert result.status_code is None and not result.delivered
    assert "timed out after 0.5 s" in (result.error or "")


def test_a_receiver_that_dribbles_its_answer_cannot_stretch_the_deadline(receiver: WebhookReceiver) -> None:
    """Each byte comes well within the timeout, so a per-read timeout would wait for all 2,000 of them
    (a minute); one deadline for the whole call ends it on time."""
    sender = HttpWebhookSender(allow_private=True, timeout=1)
    receiver.answer_next(Answer(200, dribble=0.03))

    started = time.monotonic()
    result = send(sender, receiver.url())

    assert time.monotonic() - started < 2
    assert result.status_code is None and "timed out" in (result.error or "")


def test_a_refused_connection_is_reported(sender: HttpWebhookSender) -> None:
    result = send(sender, f"http://127.0.0.1:{closed_port()}/hooks")

    assert result.status_code is None and result.error == "connection refused"


def test_a_host_that_does_not_resolve_is_reported() -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    sender = HttpWebhookSender(allow_private=True, resolver=nowhere)

    result = send(sender, "http://hooks.invalid/x")

    assert result.status_code is None and result.error == "the host name does not resolve"


def test_a_name_lookup_that_hangs_counts_against_the_deadline() -> None:
    def slow(host: str, port: int) -> list[str]:
        time.sleep(2)
        return ["127.0.0.1"]

    sender = HttpWebhookSender(allow_private=True, timeout=0.3, resolver=slow)

    started = time.monotonic()
    result = send(sender, "http://hooks.example.test/x")

    assert time.monotonic() - started < 1
    assert result.status_code is None and "timed out" in (result.error or "")


def test_http_is_refused_at_send_time_unless_private_urls_are_allowed(receiver: WebhookReceiver) -> None:
    result = send(HttpWebhookSender(allow_private=False), receiver.url())

    assert result.status_code is None and result.error == "the URL must start with https://"
    assert receiver.received == []


def test_failures_are_logged_with_the_origin_only_and_never_a_secret(
    sender: HttpWebhookSender, caplog: pytest.LogCaptureFixture
) -> None:
    secret = new_secret()
    url = f"http://127.0.0.1:{closed_port()}/hooks?token=receiver-token-123"

    with caplog.at_level(logging.WARNING, logger="wallet.webhooks"):
        result = send(sender, url, secret)

    assert not result.delivered
    [record] = caplog.records
    text = record.getMessage()
    assert "connection refused" in text and "evt_1" in text and "127.0.0.1" in text
    assert "receiver-token-123" not in text and "/hooks" not in text
    assert secret not in text and secret not in (result.error or "")


# -- the SSRF guard ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hooks",
        "https://10.1.2.3/hooks",
        "https://192.168.1.10/hooks",
        "https://172.16.0.1/hooks",
        "https://169.254.169.254/latest/meta-data",  # the cloud metadata service
        "https://[::1]/hooks",
        "https://[fc00::1]/hooks",
        "https://[fd12:3456::1]/hooks",
        "https://[fe80::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://100.64.0.1/hooks",  # shared address space (carrier-grade NAT)
        "https://0.0.0.0/hooks",
        "https://224.0.0.1/hooks",
        "https://localhost/hooks",  # a name that resolves to 127.0.0.1
        "https://2130706433/hooks",  # 127.0.0.1 written as one number
    ],
)
def test_check_url_refuses_private_loopback_and_reserved_addresses(url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        HttpWebhookSender(allow_private=False).check_url(url)

    assert refused.value.field == "url"
    assert "public" in refused.value.description


def test_check_url_accepts_a_host_whose_every_address_is_public() -> None:
    sender = HttpWebhookSender(resolver=lambda host, port: ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])

    sender.check_url("https://hooks.example.com/wallet")  # no exception


def test_check_url_refuses_a_host_with_one_private_address_among_public_ones() -> None:
    sender = HttpWebhookSender(resolver=lambda host, port: ["93.184.215.14", "10.0.0.5"])

    with pytest.raises(InvalidInput, match="public"):
        sender.check_url("https://hooks.example.com/wallet")


def test_check_url_refuses_a_host_that_does_not_resolve() -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(InvalidInput, match="does not resolve"):
        HttpWebhookSender(resolver=nowhere).check_url("https://hooks.invalid/x")


def test_private_addresses_pass_the_check_when_allowed() -> None:
    HttpWebhookSender(allow_private=True).check_url("http://127.0.0.1:9/hooks")
    HttpWebhookSender(allow_private=True).check_url("https://localhost/hooks")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("64:ff9b::5db8:d70e", True),  # NAT64 of a public IPv4 address
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("::ffff:10.0.0.1", False),
        ("fec0::1", False),  # site-local
        ("ff02::1", False),
        ("198.18.0.1", False),  # benchmarking
        ("255.255.255.255", False),
        ("not an address", False),
    ],
)
def test_which_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_a_name_that_resolves_privately_at_send_time_is_not_contacted(receiver: WebhookReceiver) -> None:
    """DNS rebinding: the name was public when the endpoint was added; now it points at 127.0.0.1."""
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    sender = HttpWebhookSender(allow_private=False, resolver=lambda host, port: next(answers))
    url = f"https://rebind.example.com:{receiver.port}/hooks"
    sender.check_url(url)

    result = send(sender, url)

    assert result.status_code is None and result.error == "resolves to a private address"
    assert receiver.received == []


def test_the_connection_goes_to_the_vetted_address_with_the_host_name_kept(receiver: WebhookReceiver) -> None:
    """The name is resolved once per send and the socket connects to that address; the request still
    names the host (a virtual host on the receiver's side sees its own name)."""
    lookups: list[str] = []

    def pinned(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    sender = HttpWebhookSender(allow_private=True, resolver=pinned)

    assert send(sender, f"http://hooks.example.test:{receiver.port}/x").delivered

    [got] = receiver.wait_for(1)
    assert got.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert lookups == ["hooks.example.test"]


# -- TLS: the certificate is checked for the host name, on the pinned address ---------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=hooks.example.test",
         "-addext", "subjectAltName=DNS:hooks.example.test"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_receiver(certificate: tuple[Path, Path]) -> Iterator[WebhookReceiver]:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = WebhookReceiver(tls=context).start()
    try:
        yield server
    finally:
        server.close()


def trusting(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cert)
    return context


def test_https_to_a_pinned_address_verifies_the_certificate_for_the_host_name(
    certificate: tuple[Path, Path], tls_receiver: WebhookReceiver
) -> None:
    secret = new_secret()
    sender = HttpWebhookSender(
        allow_private=True, resolver=lambda host, port: ["127.0.0.1"], tls=trusting(certificate[0])
    )

    result = send(sender, tls_receiver.url(host="hooks.example.test", scheme="https"), secret)

    assert result.delivered, result.error
    [got] = tls_receiver.wait_for(1)
    Webhook(secret).verify(got.body, got.headers)


def test_https_to_a_host_the_certificate_does_not_name_fails(
    certificate: tuple[Path, Path], tls_receiver: WebhookReceiver
) -> None:
    sender = HttpWebhookSender(
        allow_private=True, resolver=lambda host, port: ["127.0.0.1"], tls=trusting(certificate[0])
    )

    result = send(sender, tls_receiver.url(host="other.example.test", scheme="https"))

    assert result.status_code is None and "TLS certificate not accepted" in (result.error or "")
    assert tls_receiver.received == []


def test_https_with_an_untrusted_certificate_fails(tls_receiver: WebhookReceiver) -> None:
    sender = HttpWebhookSender(allow_private=True, resolver=lambda host, port: ["127.0.0.1"])

    result = send(sender, tls_receiver.url(host="hooks.example.test", scheme="https"))

    assert result.status_code is None and "TLS certificate not accepted" in (result.error or "")


def test_check_url_gives_up_on_a_name_lookup_that_hangs() -> None:
    def slow(host: str, port: int) -> list[str]:
        time.sleep(2)
        return ["93.184.215.14"]

    started = time.monotonic()
    with pytest.raises(InvalidInput, match="lookup timed out"):
        HttpWebhookSender(timeout=0.3, resolver=slow).check_url("https://hooks.example.com/x")
    assert time.monotonic() - started < 1
