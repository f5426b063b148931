"""What the transactional outbox costs the write path: spends, admin grants and webhook grants with it
against the same code without it, measured in the same run (interleaved blocks), in process on one
thread, on SQLite and on PostgreSQL. Target: throughput with / without >= 0.9x (issue 12). See
docs/performance.md.

    python bench/outbox.py                 # SQLite and PostgreSQL (a throw-away database)
    python bench/outbox.py --sqlite-only
    python bench/outbox.py --http          # over HTTP, 8 clients: see bench/outbox_http.py

"Without" is made here, not in src/: this script monkeypatches the SQL outbox's `add` to do nothing,
so no event is kept and commit() writes none; everything else (the events built, the alert levels
read with the wallet's lock and stored on a crossing) runs as shipped. One more column, for
information: the write path with none of issue 12 at all (no event built, no alert checked:
recording.book does only LedgerRepository.record, as before the events work).

One thread and no HTTP, so the outbox's cost is not diluted by the server's: the ratio here is the
harshest one. Each operation is its own unit of work on a funded wallet (200 wallets, taken in turn).
A round runs one block of each variant side by side (a b c, then c b a); the ratio is the median over
rounds of the per-round ratio. Clocks: CPU time per operation, this thread's plus, on PostgreSQL, the
server process's serving the one connection (/proc/PID/schedstat). Throughput on a busy server is
bound by it, and the verdict uses it because the machine is shared: wall time per block moves by 2x
with the other sessions' load (it is shown too). The outbox's own cost is also measured inside the
operations it belongs to: the CPU spent writing the events (SqlOutbox.flush; on PostgreSQL
flush_and_commit, which sends them with the COMMIT, so that figure holds the COMMIT's work too), as a
share of the operation's. Statements per operation are counted as bench/probe.py counts them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
if (BENCH.parent / "src").is_dir():
    sys.path.insert(1, str(BENCH.parent / "src"))

from probe import SECRET, pending, signed  # noqa: E402  (bench/probe.py)
from sqlalchemy import Engine, event  # noqa: E402

import wallet_core.use_cases.recording as recording  # noqa: E402
from adapters.sql.driver import Driver, Sql  # noqa: E402
from adapters.sql.engine import create_wallet_engine  # noqa: E402
from adapters.sql.migrate import upgrade  # noqa: E402
from adapters.sql.outbox_repository import SqlOutbox  # noqa: E402
from adapters.sql.unit_of_work import SqlUnitOfWorkFactory, sql_unit_of_work_factory  # noqa: E402
from adapters.stripe_gateway import StripePaymentGateway  # noqa: E402
from wallet_core.bookings import credit_booking  # noqa: E402
from wallet_core.ledger import CreditKind  # noqa: E402
from wallet_core.money import Credits, Usd  # noqa: E402
from wallet_core.service import Wallet  # noqa: E402
from wallet_core.topups import TopUpPolicy  # noqa: E402

USERS = 200
TARGET = 0.9
WITH, WITHOUT, NONE = "with the outbox", "without it", "without issue 12"
VARIANTS = (WITH, WITHOUT, NONE)
_SWITCHED = ((SqlOutbox, "add"), (recording, "event_for_transaction"), (recording, "note_balance"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """The code as shipped (WITH), with the outbox's add a no-op (WITHOUT), or that and no event built
    nor alert checked (NONE)."""
    shipped = [getattr(owner, attribute) for owner, attribute in _SWITCHED]
    if name != WITH:
        setattr(SqlOutbox, "add", lambda self, event: None)  # noqa: B010
    if name == NONE:
        setattr(recording, "event_for_transaction", lambda *args, **kwargs: None)  # noqa: B010
        setattr(recording, "note_balance", lambda *args, **kwargs: None)  # noqa: B010
    try:
        yield
    finally:
        for (owner, attribute), original in zip(_SWITCHED, shipped, strict=True):
            setattr(owner, attribute, original)


@dataclass(frozen=True)
class Took:
    """Seconds per operation, and of them the CPU seconds spent writing events."""

    wall: float
    cpu: float
    flush: float


@dataclass(frozen=True)
class Write:
    """One kind of write: `prepare(n)` makes what n of them need (not timed), `one(item)` does one."""

    name: str
    prepare: Callable[[int], list[Any]]
    one: Callable[[Any], object]


class Bench:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cpu = cpu_clock(engine)
        self.uow: SqlUnitOfWorkFactory = sql_unit_of_work_factory(engine)
        policy = TopUpPolicy(Usd(100), Usd(50_000), Decimal(100))
        self.wallet = Wallet(uow=self.uow, gateway=StripePaymentGateway(None, [SECRET]), policy=policy)
        self.users = [f"bench-{n:04d}" for n in range(USERS)]
        self._n = 0
        self._flushed = 0.0
        now = dt.datetime.now(dt.UTC)
        with self.uow() as tx:  # every wallet funded for far more than the run spends
            for user in self.users:
                booking = credit_booking(
                    user_id=user,
                    credits=Credits(100_000_000),
                    kind=CreditKind.PAID,
                    reference_id=f"fund-{user}",
                    now=now,
                    reason="bench",
                    actor="bench",
                )
                tx.ledger.record(booking)
            tx.commit()
        spend = self.writes()[0]
        for item in spend.prepare(USERS):  # each wallet's first change stores its alert level (once)
            spend.one(item)

    def _keys(self, n: int) -> list[tuple[str, str]]:
        out = []
        for _ in range(n):
            self._n += 1
            out.append((self.users[self._n % USERS], f"k{self._n}"))
        return out

    def writes(self) -> list[Write]:
        def spend(item: tuple[str, str]) -> object:
            return self.wallet.spend(item[0], "1.00", reason="bench", actor="bench", idempotency_key=item[1])

        def grant(item: tuple[str, str]) -> object:
            return self.wallet.grant(item[0], "1.00", reason="bench", granted_by="bench", idempotency_key=item[1])

        def webhooks(n: int) -> list[Any]:
            return [signed(d) for d in pending(self.engine, [user for user, _ in self._keys(n)])]

        def webhook_grant(item: tuple[bytes, str]) -> object:
            outcome = self.wallet.handle_stripe_webhook(*item)
            assert outcome.outcome == "granted", outcome
            return outcome

        return [
            Write("spend", self._keys, spend),
            Write("admin grant", self._keys, grant),
            Write("webhook grant", webhooks, webhook_grant),
        ]

    @contextlib.contextmanager
    def flush_clock(self) -> Iterator[None]:
        """Count the CPU spent writing the events, client and server side: SqlOutbox.flush (SQLite: the
        INSERT before the COMMIT) or flush_and_commit (PostgreSQL: the INSERT sent with the COMMIT, so
        this counts the COMMIT's work too: an overestimate)."""
        shipped = (SqlOutbox.flush, SqlOutbox.flush_and_commit)

        def flush(outbox: SqlOutbox) -> None:
            started = self.cpu()
            try:
                shipped[0](outbox)
            finally:
                self._flushed += self.cpu() - started

        def flush_and_commit(outbox: SqlOutbox) -> bool:
            started = self.cpu()
            try:
                return shipped[1](outbox)
            finally:
                self._flushed += self.cpu() - started

        setattr(SqlOutbox, "flush", flush)  # noqa: B010
        setattr(SqlOutbox, "flush_and_commit", flush_and_commit)  # noqa: B010
        try:
            yield
        finally:
            setattr(SqlOutbox, "flush", shipped[0])  # noqa: B010
            setattr(SqlOutbox, "flush_and_commit", shipped[1])  # noqa: B010

    def block(self, write: Write, n: int) -> Took:
        items = write.prepare(n)
        with self.flush_clock():
            self._flushed = 0.0
            wall, cpu = time.perf_counter(), self.cpu()
            for item in items:
                write.one(item)
            return Took((time.perf_counter() - wall) / n, (self.cpu() - cpu) / n, self._flushed / n)

    def measure(self, write: Write, rounds: int, size: int) -> dict[str, Any]:
        with variant(WITH):
            self.block(write, max(10, size // 5))  # warm-up (statement caches, psycopg's prepared statements)
        took: dict[str, list[Took]] = {which: [] for which in VARIANTS}
        for i in range(rounds):
            for which in VARIANTS if i % 2 == 0 else tuple(reversed(VARIANTS)):
                with variant(which):
                    took[which].append(self.block(write, size))
        counts = {}
        for which in VARIANTS:
            with variant(which):
                [item] = write.prepare(1)

                def one(item: Any = item) -> object:
                    return write.one(item)

                counts[which] = statements(self.engine, one)

        def ratio(which: str, clock: Callable[[Took], float]) -> float:
            """Throughput with the outbox / throughput of `which`: the median over rounds."""
            return statistics.median(clock(b) / clock(a) for a, b in zip(took[WITH], took[which], strict=True))

        return {
            "name": write.name,
            "cpu": {which: statistics.median(t.cpu for t in took[which]) for which in VARIANTS},
            "ratio": ratio(WITHOUT, lambda t: t.cpu),
            "rounds": sorted(b.cpu / a.cpu for a, b in zip(took[WITH], took[WITHOUT], strict=True)),
            "wall_ratio": ratio(WITHOUT, lambda t: t.wall),
            "ratio_none": ratio(NONE, lambda t: t.cpu),
            "flush": statistics.median(t.flush for t in took[WITH]),
            "flush_share": statistics.median(t.flush / t.cpu for t in took[WITH]),
            "statements": counts,
        }


def cpu_clock(engine: Engine) -> Callable[[], float]:
    """Seconds of CPU this thread has used, plus, on PostgreSQL, the server process's serving the
    engine's one connection (its pool holds one: see run())."""
    if engine.dialect.name != "postgresql":
        return time.thread_time
    with engine.connect() as conn:
        pid = conn.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
    stat = Path(f"/proc/{pid}/schedstat")
    return lambda: time.thread_time() + int(stat.read_text().split()[0]) / 1e9


def statements(engine: Engine, run: Callable[[], Any]) -> int:
    """How many statements `run` sends (executemany counts once), BEGIN and COMMIT left out."""
    sent = 0

    def on_execute(*args: Any) -> None:
        nonlocal sent
        sent += 1

    shipped = (Driver._execute, Driver.many, Driver.run_and_commit)

    def execute(self: Driver, sql: Sql, params: Any) -> Any:
        on_execute()
        return shipped[0](self, sql, params)

    def many(self: Driver, sql: Sql, rows: Any) -> None:
        batch = list(rows)
        if batch:
            on_execute()
        shipped[1](self, sql, batch)

    def run_and_commit(self: Driver, statement: bytes) -> None:  # PostgreSQL: the events' INSERT, with the COMMIT
        on_execute()
        shipped[2](self, statement)

    Driver._execute, Driver.many, Driver.run_and_commit = execute, many, run_and_commit  # type: ignore[method-assign]
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        run()
    finally:
        Driver._execute, Driver.many, Driver.run_and_commit = shipped  # type: ignore[method-assign]
        event.remove(engine, "before_cursor_execute", on_execute)
    return sent


def run(url: str, label: str, rounds: int, size: int) -> list[dict[str, Any]]:
    engine = create_wallet_engine(url, pool_size=1, max_overflow=0)  # one connection: its server process's CPU
    upgrade(engine)
    bench = Bench(engine)
    results = []
    for write in bench.writes():
        log(f"{label}: {write.name}, {rounds} rounds of {size} per variant")
        res = {**bench.measure(write, rounds, size), "database": label}
        results.append(res)
        show(res)
    with bench.uow(read_only=True) as tx:
        assert tx.outbox.page(0, 1) == []  # nobody published: the events wait, unnumbered
    engine.dispose()
    return results


def show(res: dict[str, Any]) -> None:
    cpu, counts = res["cpu"], res["statements"]
    spread = f"{res['rounds'][0]:.2f}-{res['rounds'][-1]:.2f}"
    print(
        f"  {res['name']}: CPU {cpu[WITH] * 1e6:.0f} us per op with the outbox vs {cpu[WITHOUT] * 1e6:.0f} us "
        f"without: {res['ratio']:.2f}x throughput (rounds {spread}; wall clock {res['wall_ratio']:.2f}x); writing "
        f"the events{' with the COMMIT' if res['database'] == 'PostgreSQL' else ''} {res['flush'] * 1e6:.0f} us = "
        f"{res['flush_share']:.1%} of the op; statements "
        f"{counts[WITH]} vs {counts[WITHOUT]}; against none of issue 12: {res['ratio_none']:.2f}x",
        flush=True,
    )


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| database | write | CPU per op, with the outbox | without | throughput ratio (rounds) | target | result "
        "| writing the events, share of the op (PostgreSQL: with the COMMIT) | wall-clock ratio | statements "
        "| vs none of issue 12 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cpu, counts = r["cpu"], r["statements"]
        ok = "PASS" if r["ratio"] >= TARGET else "FAIL"
        lines.append(
            f"| {r['database']} | {r['name']} | {cpu[WITH] * 1e6:.0f} us | {cpu[WITHOUT] * 1e6:.0f} us | "
            f"{r['ratio']:.2f} ({r['rounds'][0]:.2f}-{r['rounds'][-1]:.2f}) | >= {TARGET} | {ok} | "
            f"{r['flush'] * 1e6:.0f} us, {r['flush_share']:.1%} | {r['wall_ratio']:.2f} | "
            f"{counts[WITH]} vs {counts[WITHOUT]} | {r['ratio_none']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--rounds", type=int, help="rounds (one block of each variant; medians taken); default 60, with --http 10"
    )
    parser.add_argument("--block", type=int, help="operations per block; default 25, with --http 500")
    parser.add_argument(
        "--http",
        action="store_true",
        help="over HTTP: `wallet serve` vs bench/serve_without_outbox.py (bench/outbox_http.py)",
    )
    parser.add_argument(
        "--no-worker", action="store_true", help="with --http: the servers without their webhook worker thread"
    )
    args = parser.parse_args()
    if args.http:
        import outbox_http  # bench/outbox_http.py

        return outbox_http.main(
            args.sqlite_only,
            args.pg_admin_url,
            rounds=args.rounds or 10,
            block=args.block or 500,
            worker=not args.no_worker,
        )
    args.rounds, args.block = args.rounds or 60, args.block or 25
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wallet-outbox-") as work:
        results += run(f"sqlite:///{Path(work) / 'outbox.sqlite3'}", "SQLite", args.rounds, args.block)
    if not args.sqlite_only:
        import psycopg

        name = f"wallet_bench_outbox_{secrets.token_hex(4)}"
        with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"{args.pg_admin_url.rsplit('/', 1)[0]}/{name}"
            results += run(url, "PostgreSQL", args.rounds, args.block)
        finally:
            with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    with open("/proc/loadavg") as load:
        print(f"\n{time.monotonic() - started:.0f} s; load average at the end: {load.read().split()[0]}\n")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
