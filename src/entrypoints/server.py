"""Serve the REST app with waitress, and stop gracefully on SIGTERM or SIGINT.

On the signal the server stops accepting connections (the listening sockets close, so a load balancer
or client sees "connection refused" and goes elsewhere), lets the requests in flight finish and their
responses go out, closes idle keep-alive connections, and after at most `shutdown_timeout` seconds
stops the worker threads, disposes of the database engine, logs "wallet stopped" and returns.

Unless WALLET_WEBHOOK_WORKER=false, a thread delivers outbound webhooks (entrypoints.worker) from the
moment the server listens; on the signal it finishes the delivery in flight while requests drain, and
stops before the engine is disposed of.

What the server itself adds to waitress (entrypoints.waitress_server): /healthz and waitress's own error
answers never wait for a worker thread, connections that send nothing make room for new ones when
the connection limit is reached, and waitress's error answers are JSON like the app's.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import Any

import waitress.server
from dependency_injector import providers
from waitress import wasyncore
from waitress.channel import HTTPChannel

from entrypoints.container import Container, migrate_if_embedded, schema_problem
from entrypoints.http.app import create_app
from entrypoints.logs import REDACTOR
from entrypoints.waitress_server import ServerLimits, create_wallet_server, raise_open_files_limit
from entrypoints.worker import DeliveryWorker
from wallet_core.webhooks_out import DELIVERY_TIMEOUT_SECONDS

log = logging.getLogger("wallet.server")

POLL_SECONDS = 0.2  # how soon a signal is noticed; the event loop wakes this often when idle
SHUTDOWN_TIMEOUT_SECONDS = 10.0


def serve(container: Container, host: str = "127.0.0.1", port: int = 8000, threads: int = 8,
          shutdown_timeout: float = SHUTDOWN_TIMEOUT_SECONDS) -> None:
    settings = container.settings()
    REDACTOR.add_secrets(settings)
    overridden = settings.stripe_max_concurrent_calls is None
    if overridden:
        # Stripe may hold at most half the worker threads: the rest keep serving spends and webhooks.
        settings = replace(settings, stripe_max_concurrent_calls=max(1, threads // 2))
        container.settings.override(providers.Object(settings))
    elif (settings.stripe_max_concurrent_calls or 0) >= threads:
        log.warning("STRIPE_MAX_CONCURRENT_CALLS (%s) is not below --threads (%d): a Stripe that hangs can hold "
                    "every worker thread", settings.stripe_max_concurrent_calls, threads)
    worker: DeliveryWorker | None = None
    try:
        migrate_if_embedded(container)
        app = create_app(container)
        limits = ServerLimits(threads=threads, connection_limit=settings.connection_limit,
                              idle_timeout=settings.idle_timeout_seconds)
        raise_open_files_limit(limits)
        try:
            server = create_wallet_server(app, host, port, limits)
        except OSError as exc:  # e.g. the port is taken: one log line, exit 1, no traceback
            log.error("cannot listen on %s:%s: %s", host, port, exc)
            raise SystemExit(1) from None
        log.info("wallet serving on http://%s:%s (%r)", host, port, settings)  # only once it listens
        graceful = GracefulServer(server, shutdown_timeout)
        if settings.webhook_worker:  # WALLET_WEBHOOK_WORKER=false: separate `wallet worker` processes deliver
            wallet = container.wallet()
            worker = DeliveryWorker(wallet, schema_problem=lambda: schema_problem(container), charger=wallet)
            worker.start()
            graceful.on_stopping = worker.request_stop  # it finishes its delivery while requests drain
        graceful.run()
    finally:
        if worker is not None and not worker.stop(timeout=max(shutdown_timeout, DELIVERY_TIMEOUT_SECONDS) + 5):
            log.warning("the webhook worker did not stop in time; its claimed delivery is retried after its lease")
        container.shutdown_resources()  # disposes of the engine: pooled connections are closed
        if overridden:
            container.settings.reset_last_overriding()
    log.info("wallet stopped")


class GracefulServer:
    """Runs a waitress server's event loop until SIGTERM/SIGINT, then drains it."""

    def __init__(self, server: Any, shutdown_timeout: float = SHUTDOWN_TIMEOUT_SECONDS) -> None:
        self.server = server
        self.shutdown_timeout = shutdown_timeout
        self.stopping = threading.Event()
        self.signal_name = ""
        self.on_stopping: Callable[[], None] | None = None  # called as draining starts
        # A MultiSocketServer (several listen addresses) keeps its map as .map, a single server as ._map.
        self.map: dict[int, Any] = getattr(server, "map", None) or server._map

    def stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        """The signal handler: only sets a flag; the event loop notices it within POLL_SECONDS."""
        self.signal_name = signal.Signals(signum).name
        self.stopping.set()

    def run(self) -> None:
        previous = self._install_handlers()
        try:
            self._listen_info()
            while not self.stopping.is_set():
                self._loop_once()
            self._drain()
        finally:
            for signum, handler in previous.items():
                if handler is not None:
                    signal.signal(signum, handler)
            self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
            wasyncore.close_all(self.map)

    def _install_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals can only be handled on the main thread; the caller calls stop()
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self.stop)
        return previous

    def _listen_info(self) -> None:
        for listener in self._listeners():
            log.info("listening on http://%s:%s", listener.effective_host, listener.effective_port)

    def _loop_once(self) -> None:
        wasyncore.loop(timeout=POLL_SECONDS, map=self.map, use_poll=self.server.adj.asyncore_use_poll, count=1)

    def _listeners(self) -> list[Any]:
        return [d for d in list(self.map.values()) if isinstance(d, waitress.server.BaseWSGIServer)]

    def _channels(self) -> list[HTTPChannel]:
        return [d for d in list(self.map.values()) if isinstance(d, HTTPChannel)]

    def _drain(self) -> None:
        if self.on_stopping is not None:
            self.on_stopping()
        for listener in self._listeners():
            # Stop accepting: close the listening socket only. BaseWSGIServer.close() would also close
            # the trigger that the worker threads pull to hand finished responses to this loop.
            wasyncore.dispatcher.close(listener)
        busy = [c for c in self._channels() if not _idle(c)]
        log.info("stopping on %s: finishing %d request(s) in flight", self.signal_name or "request", len(busy),
                 extra={"in_flight": len(busy)})
        deadline = time.monotonic() + self.shutdown_timeout
        while time.monotonic() < deadline:
            channels = self._channels()
            if not channels:
                return
            for channel in channels:
                _close_when_idle(channel)
            self._loop_once_quick()
        left = [c for c in self._channels() if not _idle(c)]
        if left:
            log.warning("shutdown timeout: %d request(s) still in flight are cut off", len(left),
                        extra={"in_flight": len(left)})

    def _loop_once_quick(self) -> None:
        wasyncore.loop(timeout=0.05, map=self.map, use_poll=self.server.adj.asyncore_use_poll, count=1)


def _idle(channel: HTTPChannel) -> bool:
    """No request queued or running, none half received, nothing left to send."""
    return not channel.requests and channel.request is None and not channel.total_outbufs_len


def _close_when_idle(channel: HTTPChannel) -> None:
    with channel.requests_lock:  # the lock `received` takes: no new request can slip in meanwhile
        if not channel.requests and channel.request is None:
            channel.close_when_flushed = True  # handle_write closes it once its output is sent
