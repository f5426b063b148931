"""An app wired like production (container, SQL adapter, real migrations) with a fake Stripe gateway."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
import waitress.server
from alembic.script import ScriptDirectory
from dependency_injector import providers
from falcon import testing
from sqlalchemy import event

from adapters.fake_gateway import FakePaymentGateway
from adapters.sql.migrate import alembic_config
from adapters.stripe_gateway import StripePaymentGateway
from entrypoints.container import Container, migrate
from entrypoints.http.app import create_app
from entrypoints.settings import Secret, Settings
from tests.fixtures.localstripe import LOCALSTRIPE_KEY

JWT_SECRET = "e2e-jwt-secret-that-is-long-enough-0123456789"
WEBHOOK_SECRET = "whsec_e2e_test_secret"


def head_revision() -> str:
    """The newest migration: what `migrate` must bring a database to."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def make_settings(database_url: str, **changes: object) -> Settings:
    base = Settings(
        database_url=database_url,
        stripe_secret_key=Secret("sk_test_e2e"),
        stripe_webhook_secrets=(Secret(WEBHOOK_SECRET),),
        jwt_secret=Secret(JWT_SECRET),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@dataclass
class MovableClock:
    """The wallet's clock: real time plus `offset`, so a test can move past an expiry without sleeping
    (and rows still get increasing times, as in production)."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@dataclass
class Service:
    container: Container
    gateway: FakePaymentGateway
    client: testing.TestClient
    commits: list[str]
    clock: MovableClock

    def token(self, user_id: str, *, admin: bool = False, service: bool = False, ttl: int = 3600) -> str:
        roles = [role for role, wanted in (("admin", admin), ("service", service)) if wanted]
        return self.container.authenticator().mint(user_id, roles=roles, ttl_seconds=ttl)

    def auth(self, user_id: str, *, admin: bool = False, service: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, admin=admin, service=service)}"}


def build_service(settings: Settings, gateway: FakePaymentGateway | None) -> Service:
    container = Container()
    container.settings.override(settings)
    if gateway is not None:
        container.gateway.override(gateway)
    clock = MovableClock()
    container.clock.override(providers.Object(clock))
    commits: list[str] = []
    migrate(container)
    event.listen(container.engine(), "commit", lambda conn: commits.append("commit"))
    app = create_app(container)
    return Service(container, gateway, testing.TestClient(app), commits, clock)  # type: ignore[arg-type]


@pytest.fixture
def make_service(sqlite_url: str) -> Iterator[Callable[..., Service]]:
    built: list[Service] = []

    def _make(gateway: FakePaymentGateway | None = None, *, database_url: str | None = None,
              **settings_changes: object) -> Service:
        svc = build_service(make_settings(database_url or sqlite_url, **settings_changes), gateway)
        built.append(svc)
        return svc

    yield _make
    for svc in built:
        svc.container.shutdown_resources()


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)))


@dataclass
class RunningServer:
    url: str
    host: str
    port: int


def run_waitress(app: object, threads: int = 8) -> Iterator[RunningServer]:
    """Serve `app` through a real waitress socket on a free loopback port, in a thread."""
    server = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=threads)
    stop = threading.Event()

    def run() -> None:
        # Poll until told to stop, then close the sockets from this same thread: closing them from
        # another thread while this one sits in select() fails with "Bad file descriptor".
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)
        server.task_dispatcher.shutdown()
        server.asyncore.close_all(server._map)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    port = server.effective_port
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", "127.0.0.1", port)
    finally:
        stop.set()
        thread.join(timeout=5)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def service_on_each_database(request: pytest.FixtureRequest, make_service: Callable[..., Service],
                             sqlite_url: str) -> Service:
    """`service`, once on a SQLite file and once on a fresh PostgreSQL database."""
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    return make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), database_url=url)


def parallel(jobs: list[Callable[[], None]], *, timeout: float = 120.0) -> None:
    """Run each job in its own thread, all at once; wait up to `timeout` seconds for each, fail if one is
    still running, and re-raise the first job's error in the caller's thread."""
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a request thread is still running"
    if errors:
        raise errors[0]


LOCALSTRIPE_HOOK_SECRET = "whsec_e2e_localstripe"  # what the service below checks Stripe's webhooks with


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def localstripe_service(
    request: pytest.FixtureRequest, make_service: Callable[..., Service], sqlite_url: str, localstripe_url: str
) -> Service:
    """The REST app on SQLite and on a fresh PostgreSQL database, with the real Stripe adapter pointed at
    localstripe; Stripe's webhooks are signed with LOCALSTRIPE_HOOK_SECRET."""
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    built = make_service(
        None,
        database_url=url,
        stripe_secret_key=Secret(LOCALSTRIPE_KEY),
        stripe_webhook_secrets=(Secret(LOCALSTRIPE_HOOK_SECRET),),
        stripe_api_base=localstripe_url,
    )
    assert isinstance(built.container.gateway(), StripePaymentGateway)  # the real one, not a fake
    return built
