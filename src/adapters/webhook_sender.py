"""The WebhookSender port over HTTP: Standard Webhooks signatures, one POST, a hard deadline, no SSRF.

Signing: the `standardwebhooks` library (the reference implementation of the specification) makes each
`v1,<signature>`; a delivery carries one per secret the endpoint signs with (the current one and, for
24 hours after a rotation, the previous one), separated by spaces, as the specification allows.

Sending: the standard library (http.client, ssl, socket). What is needed beyond a plain POST is
(1) connecting to the address that was checked, not to whatever the name resolves to a moment later
(DNS rebinding), while TLS still verifies the certificate for the host name, and (2) one deadline for
the whole call, not a timeout per socket operation that a receiver dribbling a byte a second can
stretch forever. Both take a few lines here (`_PinnedConnection`, `_Deadline`); requests, urllib3 and
httpx offer neither as a supported option (their timeouts are per operation, and pinning an address
means replacing their connection classes all the same), so a dependency would add code, not remove it.

No proxy is used (HTTP(S)_PROXY is ignored): a proxy would resolve the name itself, after our check.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from wallet_core.errors import InvalidInput
from wallet_core.webhooks_out import DELIVERY_TIMEOUT_SECONDS, SendResult, check_endpoint_url

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger("wallet.webhooks")

MAX_BODY_READ = 1024  # of the receiver's answer we read at most this much, and keep none of it
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv6 addresses that carry an IPv4 one (RFC 6052)
PRIVATE_ANSWER = "resolves to a private address"

Resolver = Callable[[str, int], list[str]]


def _version() -> str:
    try:
        return metadata.version("wallet")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "0"


USER_AGENT = f"wallet-webhooks/{_version()} (+https://www.standardwebhooks.com)"


def is_public_address(text: str) -> bool:
    """Whether a delivery may go to this IP address: a globally routed unicast address, and not one of
    the ranges `is_global` lets through (multicast, 6to4, NAT64 or IPv4-mapped wrappers of a private
    IPv4 address, site-local IPv6)."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return is_public_address(str(addr.ipv4_mapped))
        if addr in NAT64:
            return is_public_address(str(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)))
        if addr.sixtofour is not None and not is_public_address(str(addr.sixtofour)):
            return False
        if addr.teredo is not None or addr.is_site_local:
            return False
    elif addr in SHARED_ADDRESS_SPACE:
        return False
    return addr.is_global and not (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for a TCP connection, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class _Deadline:
    """One point in time for the whole call: every blocking socket operation gets what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the delivery deadline passed")
        return left


class _DeadlineSocket(socket.socket):
    """A socket whose every read and write may block only until the deadline (http.client reads the
    status line and headers a line at a time: a per-operation timeout would let a slow receiver hold
    the worker as long as it keeps sending)."""

    deadline: _Deadline | None = None

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        if self.deadline is not None:
            self.settimeout(self.deadline.left())
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.left())
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The same for a TLS socket (the handshake is bounded by the timeout set before it starts)."""

    deadline: _Deadline | None = None

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        if self.deadline is not None:
            self.settimeout(self.deadline.left())
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.left())
        super().sendall(data, flags)


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to a vetted IP address. The Host header and, for https, the TLS server
    name (SNI) and the certificate check use the URL's host name."""

    def __init__(self, host: str, port: int, address: str, deadline: _Deadline, tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port, timeout=deadline.seconds)
        self.default_port = 443 if tls is not None else 80  # so the Host header names a port only if needed
        self._address = address
        self._deadline = deadline
        self._tls = tls

    def connect(self) -> None:
        family = socket.AF_INET6 if ":" in self._address else socket.AF_INET
        raw = _DeadlineSocket(family, socket.SOCK_STREAM)
        try:
            raw.settimeout(self._deadline.left())
            raw.connect((self._address, self.port))
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is None:
                raw.deadline = self._deadline
                self.sock = raw
                return
            raw.settimeout(self._deadline.left())  # the handshake as a whole waits at most this long
            wrapped = self._tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        assert isinstance(wrapped, _DeadlineSSLSocket)
        wrapped.deadline = self._deadline
        self.sock = wrapped


class HttpWebhookSender:
    """Signs and POSTs deliveries (the WebhookSender port).

    `allow_private=True` (WALLET_WEBHOOK_ALLOW_PRIVATE_URLS, development and tests only) lets endpoints
    point at loopback and private addresses, over http:// too. `timeout` bounds a whole delivery: name
    lookup, connecting, TLS, sending the body and reading the answer."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout: float = DELIVERY_TIMEOUT_SECONDS,
        resolver: Resolver = resolve,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self._resolver = resolver
        self._tls = tls or ssl.create_default_context()
        self._tls.sslsocket_class = _DeadlineSSLSocket

    def __repr__(self) -> str:
        return f"HttpWebhookSender(allow_private={self.allow_private}, timeout={self.timeout:g})"

    # -- the port --------------------------------------------------------------------------------

    def check_url(self, url: str) -> None:
        """Raise InvalidInput("url", ...) unless every address the URL's host resolves to is public
        (or private addresses are allowed)."""
        host, port, _tls, _target = _parts(url, self.allow_private)
        try:
            addresses = self._lookup(host, port, _Deadline(self.timeout))
        except TimeoutError:
            raise InvalidInput("url", "names a host whose name lookup timed out") from None
        except (OSError, UnicodeError):
            raise InvalidInput("url", "names a host that does not resolve") from None
        if not addresses:
            raise InvalidInput("url", "names a host that does not resolve")
        if not self.allow_private and not all(is_public_address(a) for a in addresses):
            raise InvalidInput("url", "must resolve to public addresses only, not a private, loopback or reserved one")

    def send(self, url: str, *, secrets: tuple[str, ...], message_id: str, body: bytes, at: datetime) -> SendResult:
        deadline = _Deadline(self.timeout)
        try:
            host, port, tls, target = _parts(url, self.allow_private)
        except InvalidInput as exc:
            return self._failed(url, message_id, f"the URL {exc.description.removeprefix('url ')}")
        try:
            headers = signed_headers(secrets, message_id=message_id, body=body, at=at)
        except Exception:  # noqa: BLE001 - e.g. a secret that is not base64; its value is never shown
            return self._failed(url, message_id, "cannot sign: a signing secret is not a valid whsec_ secret")
        try:
            addresses = self._lookup(host, port, deadline)
        except TimeoutError:
            return self._failed(url, message_id, f"timed out after {self.timeout:g} s (name lookup)")
        except (OSError, UnicodeError):
            return self._failed(url, message_id, "the host name does not resolve")
        if not addresses:
            return self._failed(url, message_id, "the host name does not resolve")
        if not self.allow_private and not all(is_public_address(a) for a in addresses):
            return self._failed(url, message_id, PRIVATE_ANSWER)
        return self._post(url, host, port, tls, target, addresses, headers, body, message_id, deadline)

    # -- the steps -------------------------------------------------------------------------------

    def _lookup(self, host: str, port: int, deadline: _Deadline) -> list[str]:
        """Resolve within the deadline. getaddrinfo cannot be interrupted, so it runs in a daemon
        thread that is left to finish on its own if the deadline passes first."""
        answer: list[list[str] | BaseException] = []

        def lookup() -> None:
            try:
                answer.append(self._resolver(host, port))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                answer.append(exc)

        thread = threading.Thread(target=lookup, name="webhook-dns", daemon=True)
        thread.start()
        thread.join(deadline.left())
        if not answer:
            raise TimeoutError("name lookup")
        result = answer[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _post(
        self,
        url: str,
        host: str,
        port: int,
        tls: bool,
        target: str,
        addresses: list[str],
        headers: dict[str, str],
        body: bytes,
        message_id: str,
        deadline: _Deadline,
    ) -> SendResult:
        reason = "no address to connect to"
        for address in addresses:  # like socket.create_connection: the next address if one refuses
            conn = _PinnedConnection(host, port, address, deadline, self._tls if tls else None)
            try:
                try:
                    conn.connect()
                except TimeoutError:
                    return self._failed(url, message_id, f"timed out after {self.timeout:g} s (connecting)")
                except OSError as exc:
                    reason = _why(exc, self.timeout)
                    continue
                try:
                    conn.request("POST", target, body=body, headers=headers)
                    response = conn.getresponse()
                    status = response.status
                except (OSError, http.client.HTTPException) as exc:
                    return self._failed(url, message_id, _why(exc, self.timeout))
                try:
                    response.read(MAX_BODY_READ)  # a little, so a polite receiver sees a clean close
                except (OSError, http.client.HTTPException):
                    pass  # the status is the answer; what follows it does not matter
            finally:
                conn.close()
            if 200 <= status < 300:
                return SendResult(status)
            if 300 <= status < 400:
                return self._failed(url, message_id, f"answered {status} (redirects are not followed)", status)
            return self._failed(url, message_id, f"answered {status}", status)
        return self._failed(url, message_id, reason)

    def _failed(self, url: str, message_id: str, reason: str, status: int | None = None) -> SendResult:
        log.warning(
            "webhook delivery of %s to %s failed: %s",
            message_id,
            _origin(url),
            reason,
            extra={"event_id": message_id, "endpoint": _origin(url), "status_code": status},
        )
        return SendResult(status, reason)


def signed_headers(secrets: tuple[str, ...], *, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: one `v1,<signature>` per secret, space-separated."""
    if not secrets:
        raise ValueError("no signing secret")
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)  # Webhook.sign assumes UTC
    text = body.decode("utf-8")
    signatures = " ".join(Webhook(secret).sign(message_id, utc, text) for secret in secrets)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(utc.timestamp())),
        "webhook-signature": signatures,
        "connection": "close",
    }


def _parts(url: str, allow_private: bool) -> tuple[str, int, bool, str]:
    """(host, port, https?, request target) of an endpoint URL; InvalidInput("url", ...) if unusable
    (the core's one rule for an endpoint URL's form: wallet_core.webhooks_out.check_endpoint_url)."""
    parts = urlsplit(check_endpoint_url(url, allow_private=allow_private))
    port = parts.port
    assert parts.hostname is not None  # check_endpoint_url refuses a URL without a host
    tls = parts.scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port or (443 if tls else 80), tls, target


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL, for a log line: its path and query may carry a receiver's token."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    except ValueError:
        return "(not a URL)"


def _why(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed attempt. Our own words and the OS's error names only: an exception's
    text can quote what it was given (a header value, the URL)."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or 'handshake'})"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the receiver closed the connection without answering"
    if isinstance(exc, http.client.HTTPException):
        return f"the answer is not HTTP ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"failed ({type(exc).__name__})"
