"""The waitress server `wallet serve` runs, with what a real deployment needs beyond its defaults.

    server = create_wallet_server(app, "0.0.0.0", 8000, ServerLimits(threads=8))

- **Liveness never queues.** GET/HEAD /healthz, and waitress's own error answers (a malformed
  request, a body or headers too large), are served by a small lane of threads of their own, never
  behind the worker threads: while every worker waits for a locked database or a hanging Stripe,
  /healthz still answers in milliseconds.
- **Idle connections cannot lock everyone out.** Up to `connection_limit` connections are open at
  once (waitress's default is 100), a connection with no request for `idle_timeout` seconds is closed,
  and when the limit is reached the connections that have no request being served (idle keep-alives,
  clients that connect and send nothing or dribble their headers) are closed, the longest idle first,
  to make room for new ones. Only connections whose requests are being served count against a client
  that waits.
- **Every error answer is JSON**, {"title", "description"}, also the ones waitress writes itself
  before the app sees the request (400 malformed, 413 body too large, 431 headers too large, 501).
- The event loop uses poll(), not select(), so more than 1024 sockets can be open.
"""

from __future__ import annotations

import json
import logging
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from entrypoints.http.body import BATCH_SPENDS_PATH, MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES
from entrypoints.log_throttle import Throttle

log = logging.getLogger("wallet.server")
_limit_log = Throttle(log, interval=60.0)

LIVENESS_PATHS = frozenset({"/healthz"})
FAST_LANE_THREADS = 2
MAX_HEADER_BYTES = 64 * 1024  # waitress's default is 256 KiB; a bearer token and a few headers need ~2 KiB
MAX_DESCRIPTION = 200
LINGER_SECONDS = 2.0  # after an error answer, how long the rest of the refused request is read and dropped
LINGER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServerLimits:
    threads: int = 8
    connection_limit: int = 1000
    idle_timeout: int = 30  # seconds a connection may stay open with no request
    max_header_bytes: int = MAX_HEADER_BYTES
    # Waitress refuses bodies above this before reading them; the app refuses anything above its
    # route's limit (MAX_BODY_BYTES; MAX_BATCH_BODY_BYTES for a batch of spends) itself, with the same
    # JSON 413.
    max_body_bytes: int = MAX_BATCH_BODY_BYTES + 1024

    def adjustments(self, host: str, port: int) -> Adjustments:
        return Adjustments(
            host=host,
            port=port,
            threads=self.threads,
            ident="wallet",
            connection_limit=self.connection_limit,
            channel_timeout=self.idle_timeout,
            cleanup_interval=max(1, min(30, self.idle_timeout // 3)),  # idle ones go within 4/3 of the timeout
            max_request_header_size=self.max_header_bytes,
            max_request_body_size=self.max_body_bytes,
            asyncore_use_poll=True,  # select() cannot watch more than 1024 sockets
        )


def create_wallet_server(app: Any, host: str, port: int, limits: ServerLimits) -> Any:
    """Like waitress.create_server for host and port, with the classes of this module. Raises OSError
    when it cannot listen."""
    adj = limits.adjustments(host, port)
    dispatcher = LanedDispatcher(limits.threads)
    socket_map: dict[int, Any] = {}
    servers = []
    try:
        for sockinfo in adj.listen:
            servers.append(WalletServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo))
    except BaseException:
        for server in servers:
            server.close()
        dispatcher.shutdown(cancel_pending=True, timeout=1)
        raise
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[-1].log_info)


def raise_open_files_limit(limits: ServerLimits) -> None:
    """Each connection is a file descriptor: lift the soft limit towards the hard one when the
    connection limit (plus database connections and files) would not fit; warn when it cannot."""
    wanted = limits.connection_limit + 256
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open files limit: %s", exc)
        return
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("the open files limit (%d) is below WALLET_CONNECTION_LIMIT + 256 (%d): new connections "
                    "may be refused before the connection limit is reached", soft, wanted)


# -- the lanes --------------------------------------------------------------------------------------
def _needs_no_worker(channel: Any) -> bool:
    """The channel's next request is a liveness probe or one waitress answers with an error itself."""
    requests = getattr(channel, "requests", None)
    if not requests:
        return False
    request = requests[0]
    if request.error is not None:
        return True
    return request.command in ("GET", "HEAD") and request.path in LIVENESS_PATHS


class LanedDispatcher(ThreadedTaskDispatcher):  # type: ignore[misc]
    """Waitress's worker threads, plus a lane of FAST_LANE_THREADS threads for requests that must
    never wait behind them (they touch neither the database nor Stripe, and take microseconds)."""

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.set_thread_count(threads)
        self.fast_lane = ThreadedTaskDispatcher()
        self.fast_lane.set_thread_count(FAST_LANE_THREADS)

    def add_task(self, task: Any) -> None:
        # Called with the channel's requests_lock held (waitress does), so requests[0] is stable.
        if _needs_no_worker(task):
            self.fast_lane.add_task(task)
        else:
            super().add_task(task)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        self.fast_lane.shutdown(cancel_pending=cancel_pending, timeout=timeout)
        return bool(super().shutdown(cancel_pending=cancel_pending, timeout=timeout))


# -- JSON errors from waitress itself -------------------------------------------------------------
class JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """Waitress's error answer (400, 413, 431, 500, 501) as the app's JSON {"title", "description"}."""

    def execute(self) -> None:
        error = self.request.error
        title = "Body too large" if error.code == 413 else error.reason  # as the app says it (entrypoints.http.body)
        body = json.dumps({"title": title, "description": _describe(error, self.channel.adj, self.request)}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.channel.linger_on_close = True  # the client may still be sending the body it was refused
        self.content_length = len(body)
        self.write(body)


def _describe(error: Any, adj: Adjustments, request: Any = None) -> str:
    if error.code == 413:
        path = getattr(request, "path", None)
        limit = MAX_BATCH_BODY_BYTES if path == BATCH_SPENDS_PATH else MAX_BODY_BYTES
        return f"the body must be at most {limit} bytes"
    if error.code == 431:
        return f"the request line and headers must be at most {adj.max_request_header_size} bytes"
    if error.code == 500:
        return "the request failed; nothing was changed"
    # Waitress's reason, e.g. "Malformed HTTP method", "Invalid header", "Bad URI"; it may quote the
    # request, which goes back only to the client that sent it, bounded and JSON-escaped.
    text = " ".join(str(error.body).split())[:MAX_DESCRIPTION]
    return text or str(error.reason)


class WalletChannel(HTTPChannel):  # type: ignore[misc]
    """Waitress's channel with JSON error answers, and a lingering close after them.

    After an error answer (e.g. 413 for a body too large) waitress closes the socket while the client
    may still be sending that body; the kernel then resets the connection, and the client often loses
    the answer it was sent. Here the channel shuts down its sending side only and reads and discards
    what still comes, until the client closes, LINGER_BYTES came, or LINGER_SECONDS passed."""

    error_task_class = JsonErrorTask
    linger_on_close = False
    lingering = False
    linger_until = 0.0
    lingered_bytes = 0

    def handle_close(self) -> None:
        if not self.linger_on_close or self.lingering or self.socket is None:
            super().handle_close()
            return
        self.lingering = True
        self.will_close = self.close_when_flushed = False
        self.linger_until = time.monotonic() + LINGER_SECONDS
        try:
            self.socket.shutdown(socket.SHUT_WR)  # the answer is sent, then end-of-file
        except OSError:
            super().handle_close()

    def readable(self) -> bool:
        if not self.lingering:
            return bool(super().readable())
        if time.monotonic() > self.linger_until:
            self.will_close = True  # handle_write closes it on the next turn
        return not (self.will_close or self.close_when_flushed)

    def writable(self) -> bool:
        if not self.lingering:
            return bool(super().writable())
        return bool(self.will_close or self.close_when_flushed)

    def handle_read(self) -> None:
        if not self.lingering:
            super().handle_read()
            return
        data = self.recv(self.adj.recv_bytes)  # b"" when the client closed: recv closed the channel
        self.lingered_bytes += len(data)
        if data and self.lingered_bytes > LINGER_BYTES:
            self.will_close = True


# -- the connection limit --------------------------------------------------------------------------
def _waiting_for_nothing(channel: HTTPChannel) -> bool:
    """No request queued or being served and nothing to send: closing it loses no work."""
    return not (channel.requests or channel.total_outbufs_len or channel.will_close or channel.close_when_flushed)


class WalletServer(TcpWSGIServer):  # type: ignore[misc]
    channel_class = WalletChannel
    next_channel_cleanup: float = 0.0

    def readable(self) -> bool:
        """Waitress's version stops accepting at the connection limit until idle connections time
        out (2 minutes by default). This one closes connections that wait for nothing to make room."""
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        over = len(self._map) - self.adj.connection_limit + 1  # room for one more
        if over <= 0:
            return True  # the common case: no walk over every connection on each turn of the loop
        channels = [c for c in list(self._map.values()) if isinstance(c, HTTPChannel)]
        closing = sum(1 for c in channels if c.will_close or c.close_when_flushed)
        idle = sorted((c for c in channels if _waiting_for_nothing(c)), key=lambda c: c.last_activity)
        evict = idle[: max(0, over - closing)]
        for channel in evict:
            channel.will_close = True  # closed by the event loop on its next turn (handle_write)
        if evict:
            _limit_log.warning("connection limit", "%d connections open (WALLET_CONNECTION_LIMIT): closing the %d "
                               "longest idle to make room", len(channels), len(evict))
        elif not closing:
            _limit_log.warning("connection limit full", "%d connections open (WALLET_CONNECTION_LIMIT), each with a "
                               "request in progress: new connections wait", len(channels))
        return False  # accept once they are closed, on the next turn of the loop
