"""Request ids, access logs, Prometheus metrics, /metrics and /readyz, and the schema gate.

    install_observability(app, container, metrics)   # in create_app: two middlewares, two routes

Every request gets an id: the caller's X-Request-Id when it is a sane value (1-128 printable ASCII
characters), else a new one. It is sent back as X-Request-Id and is on every log line written while
the request is served (see entrypoints.logs). One access line per request names the method, the route
template (never the raw path, so no ids), the status, the duration and the request id; never a body
or a header value.

Metrics live on a registry of the app's own (not prometheus_client's global one), so several apps in
one process (tests) do not collide. Labels are bounded: the route is the template ("unmatched" when no
route matched), a webhook event type is kept only when it looks like one. Business events (webhook
outcomes, grants) are counted from what the use case returned, which the route handler reports to
`Metrics` (entrypoints.http.registry.BusinessEvents); only webhook deliveries refused before the use
case answered are counted here from their HTTP status.

The schema gate: while the database's schema is missing or older than this code (a PostgreSQL database
`wallet migrate` has not brought up to date), /readyz and every route that uses the database answer
503 saying "run `wallet migrate`", instead of 500s about missing tables. The check reads one row and is
cached; it is repeated every few seconds while the schema is not ready, so the server becomes ready by
itself once `wallet migrate` has run.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import falcon
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from entrypoints.logs import REQUEST_ID
from wallet_core.payment_outcomes import PaymentEventOutcome

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from entrypoints.container import Container
    from wallet_core.use_cases import GrantResult, WebhookOutcome

access_log = logging.getLogger("wallet.access")
log = logging.getLogger("wallet.http")

REQUEST_ID_HEADER = "X-Request-Id"
UNMATCHED = "unmatched"
READINESS_TIMEOUT_SECONDS = 2.0
SCHEMA_RECHECK_READY_SECONDS = 60.0  # how long a schema found ready is trusted
SCHEMA_RECHECK_NOT_READY_SECONDS = 2.0  # how soon a schema found missing or behind is read again
# Routes that need no database (or report on it themselves): the schema gate lets them through.
NO_DATABASE_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/ui"})
_SANE_REQUEST_ID = re.compile(r"[\x20-\x7e]{1,128}")  # printable ASCII: no CR/LF, nothing to inject
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.]{0,79}")  # Stripe's shape, e.g. payment_intent.succeeded
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Metrics:
    """The wallet's metrics, on a registry of their own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("wallet_http_requests", "HTTP requests answered, by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.duration = Histogram("wallet_http_request_duration_seconds",
                                  "Time to answer an HTTP request, by route template and method",
                                  ["route", "method"], registry=r)
        self.in_flight = Gauge("wallet_http_requests_in_flight", "HTTP requests being served now", registry=r)
        self.grants = Counter("wallet_credits_granted", "Credit grants made: top-ups granted by a webhook, "
                              "and grants by an admin (replays not counted)", ["source"], registry=r)
        self.webhooks = Counter("wallet_webhook_events", "Stripe webhook deliveries, by event type and outcome",
                                ["type", "outcome"], registry=r)
        # (route, method, status) -> its request counter and duration histogram: `labels()` looks a
        # child up under a lock and checks its labels on every call; the labels are bounded (route
        # templates, _METHODS, status codes), so are these.
        self._answered: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """A request was answered: counted by route, method and status, its duration observed."""
        children = self._answered.get((route, method, status))
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.duration.labels(route, method))
            self._answered[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def webhook_applied(self, outcome: WebhookOutcome) -> None:
        """A verified Stripe event was applied: count it by type and outcome, and the top-up it granted."""
        event_type = outcome.event_type if _EVENT_TYPE.fullmatch(outcome.event_type) else "other"
        self.webhooks.labels(event_type, outcome.outcome.value).inc()
        if outcome.outcome is PaymentEventOutcome.GRANTED:
            self.grants.labels("top_up").inc()

    def admin_grant(self, result: GrantResult) -> None:
        """An admin's grant was answered: counted when it granted, not when it replayed an earlier one."""
        if not result.replayed:
            self.grants.labels("admin").inc()

    def webhook_refused(self, status: int) -> None:
        """A delivery answered with an error before the event was applied (a bad signature, an outage)."""
        self.webhooks.labels("unknown", "rejected" if status < 500 else "error").inc()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics and their content type: Prometheus text, or OpenMetrics when `accept` asks."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


def _route(req: falcon.Request) -> str:
    return req.uri_template or UNMATCHED


def _request_id(req: falcon.Request) -> str:
    given = req.get_header(REQUEST_ID_HEADER)
    if given is not None:
        given = given.strip()
        if _SANE_REQUEST_ID.fullmatch(given):
            return given
    # Unique, not secret: 128 random bits without a system call per request (uuid4 reads os.urandom);
    # the module's generator is seeded from the OS and re-seeded in a forked child.
    return f"{random.getrandbits(128):032x}"


class ObservabilityMiddleware:
    """Request id in, request id out; one access log line and the metrics for every request."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        request_id = _request_id(req)
        req.context.request_id = request_id
        req.context.observability_started = time.perf_counter()
        req.context.observability_token = REQUEST_ID.set(request_id)
        resp.set_header(REQUEST_ID_HEADER, request_id)
        self.metrics.in_flight.inc()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        started = getattr(req.context, "observability_started", None)
        if started is None:  # process_request did not run (an earlier middleware failed)
            return
        token = req.context.observability_token
        try:
            elapsed = time.perf_counter() - started
            route = _route(req)
            method = req.method if req.method in _METHODS else "OTHER"
            status = resp.status_code
            resp.set_header(REQUEST_ID_HEADER, req.context.request_id)  # error handlers may have replaced headers
            self.metrics.answered(route, method, status, elapsed)
            if route.startswith("/webhooks/") and status >= 400:
                self.metrics.webhook_refused(status)
            access_log.info(
                "%s %s %s %.1fms", method, route, status, elapsed * 1000,
                extra={"request_id": req.context.request_id, "method": method, "route": route, "status": status,
                       "duration_ms": round(elapsed * 1000, 2)},
            )
        finally:
            self.metrics.in_flight.dec()
            REQUEST_ID.reset(token)


class MetricsResource:
    """GET /metrics: the Prometheus text exposition format (OpenMetrics when the scraper asks for it)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data, resp.content_type = self._metrics.exposition(req.get_header("Accept"))


class SchemaCheck:
    """Is the database's schema the one this code needs? `problem()` answers from a cache: a ready
    schema is read again after SCHEMA_RECHECK_READY_SECONDS, a missing or older one after
    SCHEMA_RECHECK_NOT_READY_SECONDS; `refresh()` reads it now. A database that cannot be reached is
    not a schema problem (the request fails on its own with 503 Storage unavailable); a schema a newer
    wallet migrated is logged as a warning and served (a rolling upgrade)."""

    def __init__(self, engine: Callable[[], Engine], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._expires = float("-inf")  # never read yet
        self._reported: str | None = None  # the last state logged, so each change is logged once

    def problem(self) -> str | None:
        """None when the schema is ready (or cannot be read now), else why not, from the cache."""
        if self._clock() < self._expires:
            return self._problem
        if not self._lock.acquire(blocking=self._expires == float("-inf")):
            return self._problem  # another request is reading it; the last answer stands meanwhile
        try:
            if self._clock() < self._expires:
                return self._problem
            return self._read()
        finally:
            self._lock.release()

    def refresh(self) -> str | None:
        with self._lock:
            return self._read()

    def _read(self) -> str | None:
        from adapters.sql.migrate import SchemaTooNew, schema_state

        try:
            found = schema_state(self._engine()).problem()
        except Exception:  # noqa: BLE001 (unreachable or locked: not a schema problem)
            # Let requests through to fail on their own (503 Storage unavailable); read again soon.
            self._problem, self._expires = None, self._clock() + SCHEMA_RECHECK_NOT_READY_SECONDS
            return None
        blocking = found is not None and not isinstance(found, SchemaTooNew)
        self._problem = found.description if blocking and found is not None else None
        self._expires = self._clock() + (SCHEMA_RECHECK_NOT_READY_SECONDS if blocking else SCHEMA_RECHECK_READY_SECONDS)
        self._report(found)
        return self._problem

    def _report(self, found: Exception | None) -> None:
        state = None if found is None else str(found)
        if state == self._reported:
            return
        if found is not None:
            log.warning("database schema: %s", state)
        elif self._reported is not None:
            log.info("database schema: up to date")
        self._reported = state


class SchemaGate:
    """Middleware: a route that uses the database answers 503 while the schema is not ready."""

    def __init__(self, schema: SchemaCheck) -> None:
        self._schema = schema

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         params: dict[str, Any]) -> None:
        if resource is None or req.uri_template in NO_DATABASE_ROUTES:
            return
        problem = self._schema.problem()
        if problem is not None:
            raise falcon.HTTPServiceUnavailable(title="Database schema not ready", description=problem,
                                                retry_after=5)


class ReadinessResource:
    """GET /readyz: 200 when the database answers SELECT 1 within READINESS_TIMEOUT_SECONDS and its
    schema is this code's, else 503 saying why.

    /healthz only says the process answers; /readyz says it can do its work. The check runs on a daemon
    thread so a database that hangs (a dropped packet, a full pool) cannot hold the request, or the
    process at exit; at most two checks run at once, further probes are answered 503 at once."""

    def __init__(self, container: Container, timeout: float | None = None,
                 schema: SchemaCheck | None = None) -> None:
        self._container = container
        self._timeout = READINESS_TIMEOUT_SECONDS if timeout is None else timeout
        self._slots = threading.BoundedSemaphore(2)
        self._schema = schema or SchemaCheck(container.engine)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        problem = self._check()
        if problem is not None:
            log.warning("not ready: %s", problem)
            raise falcon.HTTPServiceUnavailable(title="Not ready", description=problem, retry_after=5)
        resp.media = {"status": "ready"}

    def _check(self) -> str | None:
        if not self._slots.acquire(blocking=False):
            return "earlier readiness checks are still waiting for the database"
        outcome: list[str | None] = []
        done = threading.Event()

        def run() -> None:
            try:
                problem = _select_one(self._container.engine)
                outcome.append(problem if problem is not None else self._schema.refresh())
            finally:
                self._slots.release()
                done.set()

        threading.Thread(target=run, name="wallet-readyz", daemon=True).start()
        if not done.wait(self._timeout):
            return f"the database did not answer within {self._timeout:g}s"
        return outcome[0] if outcome else "the readiness check failed"


def _select_one(engine: Callable[[], Engine]) -> str | None:
    """None when the database answers; else why not, naming no host, URL or password."""
    from adapters.sql.unit_of_work import unavailable

    try:
        # A raw pooled connection: no transaction is begun (SQLite would BEGIN IMMEDIATE and queue
        # behind writers), and returning it to the pool rolls back whatever the driver began.
        conn = engine().raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            cursor.close()
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001 (any failure means not ready; the reason is returned)
        return unavailable(exc).description
    return None


def install_observability(app: falcon.App[falcon.Request, falcon.Response], container: Container,
                          metrics: Metrics | None = None) -> Metrics:
    """Add the middlewares (observability, schema gate) and the /metrics and /readyz routes to `app`;
    the metrics (new ones unless given: those the route handlers report to) are returned."""
    metrics = metrics or Metrics()
    schema = SchemaCheck(container.engine)
    app.add_middleware(ObservabilityMiddleware(metrics))
    app.add_middleware(SchemaGate(schema))
    app.add_route("/metrics", MetricsResource(metrics))
    app.add_route("/readyz", ReadinessResource(container, schema=schema))
    return metrics
