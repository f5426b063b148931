"""The wallet's performance benchmark: one command, figures as ratios against baselines measured in the
same run (the machine is shared and noisy, so absolute numbers mean little). See docs/performance.md.

    python bench/run.py            # the full run (about 4-5 minutes)
    python bench/run.py --quick    # a short smoke run (about 1 minute; smaller samples, 100k ledger rows)

What it measures (each against its baseline, with a target):

1. webhook grants/s over HTTP (waitress) on SQLite and on PostgreSQL, `wallet serve` vs
   bench/baseline_server.py (same waitress + Falcon, the least raw SQL a grant can be); >= 0.8x.
2. GET /api/v1/users/me/wallet latency for a user with 1,000,000 ledger rows vs one with 1,000
   (same SQLite database); <= 1.5x. The in-process read_wallet is shown beside it.
3. PostgreSQL, 4 `wallet serve` processes vs 1 (the client spreads connections over the ports); >= 1.5x.
4. Peak RSS (VmHWM) of `wallet serve` idle and after the grant load, next to the baseline server's;
   `wallet --help` start-up next to `python -c pass`. Information, no target.

Every delivery is checked afterwards: granted exactly once (ledger rows, top-up status, balances, the
event log; a sample is delivered again and must change nothing) and `wallet verify` passes.

Options: --only 1,2,3,4 runs some parts; --pg-admin-url names the PostgreSQL server (default
postgresql://postgres@127.0.0.1:5432/postgres; throw-away databases wallet_bench_<random> are created
and dropped); --no-profile skips the profile taken when a target is missed; --keep keeps the temp dir.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
if (ROOT / "src").is_dir():
    sys.path.insert(1, str(ROOT / "src"))

import load  # noqa: E402  (bench/load.py)
from load import Delivery  # noqa: E402

PYTHON = sys.executable
WALLET = (str(Path(PYTHON).with_name("wallet")) if Path(PYTHON).with_name("wallet").exists()
          else shutil.which("wallet") or "")  # "": not installed (main says so)
WEBHOOK_SECRET = "whsec_bench_" + secrets.token_hex(12)
JWT_SECRET = "bench-jwt-secret-" + secrets.token_hex(24)
THREADS = 8  # `wallet serve`'s default, and the baseline's
AMOUNT_CENTS = 1000  # each top-up: 10.00 USD = 1000.00 credits at the default rate
CREDITS_MINOR = AMOUNT_CENTS * 100


@dataclass(frozen=True)
class Profile:
    name: str
    rounds: int  # alternating wallet/baseline rounds per comparison (medians taken)
    duration: float  # seconds of load per round
    warmup: float  # seconds of load before the first round, per server
    processes: int  # load-driver processes
    conns: int  # keep-alive connections per driver process (bench 1)
    scale_conns: int  # connections per driver process (bench 3)
    users: int  # wallets the top-ups are spread over
    heavy_rows: int  # ledger rows of the heavy user (bench 2)
    light_rows: int
    reads: int  # timed reads per user (bench 2)
    startup_runs: int


FULL = Profile("full", rounds=3, duration=5.0, warmup=2.0, processes=2, conns=4, scale_conns=8, users=1000,
               heavy_rows=1_000_000, light_rows=1_000, reads=400, startup_runs=10)
QUICK = Profile("quick", rounds=1, duration=2.0, warmup=0.5, processes=2, conns=4, scale_conns=8, users=200,
                heavy_rows=100_000, light_rows=1_000, reads=100, startup_runs=5)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- results -----------------------------------------------------------------------------------
@dataclass
class Row:
    part: str
    what: str
    wallet: str
    baseline: str
    ratio: float | None
    target: str
    ok: bool | None  # None: information only
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, passed, detail)
    details: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)

    def check(self, what: str, passed: bool, detail: str = "") -> None:
        self.checks.append((what, passed, detail))
        log(f"check {'OK' if passed else 'FAILED'}: {what} {detail}")


# -- processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server subprocess on a free port; stopped with SIGINT (waitress shuts down cleanly)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, cwd: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = cwd / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT)
        self.exit_code: int | None = None
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer /healthz within 60 s")
            time.sleep(0.1)

    def vm_hwm_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.exit_code = self.proc.returncode
        return self.exit_code


GROUP_WRITES: str | None = None  # --group-writes: WALLET_GROUP_WRITES for the wallet's servers; None: the default


def wallet_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALLET_", "STRIPE_"))}
    env.update(
        WALLET_DATABASE_URL=database_url,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        WALLET_ENV="production",
        WALLET_JWT_SECRET=JWT_SECRET,
    )
    if GROUP_WRITES is not None:
        env["WALLET_GROUP_WRITES"] = GROUP_WRITES
    return env


def start_wallet(name: str, database_url: str, workdir: Path) -> Server:
    port = free_port()
    argv = [WALLET, "serve", "--port", str(port), "--threads", str(THREADS)]
    return Server(name, argv, wallet_env(database_url), port, workdir)


def start_baseline(name: str, database_url: str, workdir: Path) -> Server:
    port = free_port()
    argv = [PYTHON, str(BENCH / "baseline_server.py"), "--db", database_url, "--port", str(port),
            "--threads", str(THREADS), "--secret", WEBHOOK_SECRET]
    return Server(name, argv, dict(os.environ), port, workdir)


def wallet_cli(database_url: str, *args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WALLET, *args], env=wallet_env(database_url), cwd=workdir, capture_output=True,
                          text=True, timeout=900)


# -- databases -------------------------------------------------------------------------------
class Postgres:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True)

    def available(self) -> bool:
        try:
            with self._admin() as conn:
                conn.execute("SELECT 1")
            return True
        except Exception as exc:  # noqa: BLE001
            log(f"PostgreSQL not reachable at {self.admin_url}: {type(exc).__name__}")
            return False

    def version(self) -> str:
        with self._admin() as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])

    def create(self, tag: str) -> str:
        name = f"wallet_bench_{tag}_{secrets.token_hex(4)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base}/{name}"

    def drop_all(self) -> None:
        for name in self.created:
            with contextlib.suppress(Exception), self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


def prepare_wallet_db(url: str, count: int, users: int, tag: str) -> list[Delivery]:
    """Migrate, then record `count` pending top-ups straight through the SQL adapter (top_ups.add),
    spread round-robin over `users` wallets. Returns the webhooks that will pay them."""
    from adapters.sql.engine import create_wallet_engine
    from adapters.sql.migrate import upgrade
    from adapters.sql.unit_of_work import SqlUnitOfWork
    from wallet_core.money import Credits, Usd
    from wallet_core.topups import TopUp, TopUpStatus

    engine = create_wallet_engine(url)
    try:
        upgrade(engine)
        deliveries: list[Delivery] = []
        now = dt.datetime.now(dt.UTC)
        for start in range(0, count, 2000):
            with SqlUnitOfWork(engine) as tx:
                for i in range(start, min(count, start + 2000)):
                    d = Delivery(f"pi_{tag}_{i:07d}", f"tu_{tag}_{i:07d}", f"user{i % users:05d}", AMOUNT_CENTS)
                    tx.top_ups.add(
                        TopUp(id=d.top_up_id, user_id=d.user_id, amount=Usd(AMOUNT_CENTS), currency="usd",
                              credits=Credits(CREDITS_MINOR), status=TopUpStatus.PENDING,
                              payment_intent_id=d.payment_intent_id, created_at=now)
                    )
                    deliveries.append(d)
                tx.commit()
        return deliveries
    finally:
        engine.dispose()


def prepare_baseline_db(url: str, users: int) -> None:
    from baseline_server import Store

    store = Store(url)
    store.create_schema()
    conn = store.connect()
    rows = [(f"user{u:05d}", 0) for u in range(users)]
    if store.sqlite:
        conn.executemany("INSERT INTO bench_balances VALUES (?, ?)", rows)
    else:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_balances VALUES (%s, %s)", rows)
        conn.commit()
    conn.close()


def baseline_deliveries(tag: str, users: int) -> Iterator[Delivery]:
    i = 0
    while True:
        yield Delivery(f"pi_{tag}_{i:07d}", f"tu_{tag}_{i:07d}", f"user{i % users:05d}", AMOUNT_CENTS)
        i += 1


class Pool:
    """Pending top-ups not delivered yet; what a run did not send goes back to the front."""

    def __init__(self, source: list[Delivery] | Iterator[Delivery]) -> None:
        self._list = list(source) if isinstance(source, list) else None
        self._iter = source if not isinstance(source, list) else None
        self.granted: list[str] = []
        self.event_of: dict[str, str] = {}  # payment intent id -> the event id that granted it

    def take(self, n: int) -> list[Delivery]:
        if self._list is not None:
            return self._list[:n]
        assert self._iter is not None
        return [next(self._iter) for _ in range(n)]

    def settle(self, taken: list[Delivery], result: load.RunResult, tag: str) -> None:
        self.granted.extend(result.delivered)
        self.event_of.update((pi, load.event_id(tag, pi)) for pi in result.delivered)
        if self._list is not None:
            left = [d for d in taken if d.payment_intent_id not in result.sent]
            self._list = left + self._list[len(taken):]
        # an iterator source is endless: unsent ones are simply never used


def run_load(ports: list[int], pool: Pool, p: Profile, *, duration: float, conns: int, budget: int,
             tag: str) -> load.RunResult:
    taken = pool.take(budget)
    result = load.drive(ports, taken, secret=WEBHOOK_SECRET, processes=p.processes, conns_per_process=conns,
                        duration=duration, event_prefix=tag)
    pool.settle(taken, result, tag)
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu(pg: Postgres | None) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends connected to this run's databases (others' sessions on
    the same server are not counted)."""
    if pg is None or not pg.created:
        return {}
    with pg._admin() as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", [pg.created])]
    return {pid: proc_cpu(pid) for pid in pids}


def system_cpu() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


@dataclass
class Contender:
    name: str
    servers: list[Server]
    pool: Pool
    conns: int  # per driver process


@dataclass
class Stats:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # server CPU ms per request
    db_ms: list[float] = field(default_factory=list)  # PostgreSQL CPU ms per request
    client_ms: list[float] = field(default_factory=list)  # load-driver CPU ms per request
    busy: list[float] = field(default_factory=list)  # share of the machine's CPUs busy during the round


@dataclass
class Comparison:
    """Alternating rounds of two contenders; rates per round."""

    a_name: str
    b_name: str
    a: Stats = field(default_factory=Stats)
    b: Stats = field(default_factory=Stats)
    problems: list[str] = field(default_factory=list)

    @property
    def paired(self) -> list[float]:
        return [x / y for x, y in zip(self.a.rates, self.b.rates, strict=True) if y > 0]

    @property
    def ratio(self) -> float:
        return median(self.paired)

    def spread(self) -> str:
        r = self.paired
        return f"per-round ratios {', '.join(f'{x:.2f}' for x in r)}" if r else ""

    def cpu_note(self, with_db: bool) -> str:
        cores_a = median([ms * rate / 1000 for ms, rate in zip(self.a.server_ms, self.a.rates, strict=True)])
        cores_b = median([ms * rate / 1000 for ms, rate in zip(self.b.server_ms, self.b.rates, strict=True)])
        parts = [f"server CPU/request {median(self.a.server_ms):.2f} vs {median(self.b.server_ms):.2f} ms "
                 f"(server processes busy {cores_a:.2f} vs {cores_b:.2f} cores)"]
        if with_db:
            parts.append(f"PostgreSQL CPU/request {median(self.a.db_ms):.2f} vs {median(self.b.db_ms):.2f} ms")
        parts.append(f"load-driver CPU/request {median(self.a.client_ms):.2f} vs {median(self.b.client_ms):.2f} ms")
        parts.append(f"machine busy {median(self.a.busy):.0%} vs {median(self.b.busy):.0%} (other tenants included)")
        return "; ".join(parts)

    def machine_ceiling(self, target: float, *, either: bool = False) -> str:
        """The most the machine's CPUs allow contender a, as a ratio of b's measured rate: every core
        given to a's measured CPU per grant (its server processes, PostgreSQL, the load driver); with
        `either`, the smaller of a's and b's (the same code: a's extra cost may be the contention of
        this very machine). Optimistic: no core ever idle, none lent to other tenants."""
        cores = os.cpu_count() or 1

        def per_grant(s: Stats) -> float:
            return median(s.server_ms) + median(s.db_ms or [0.0]) + median(s.client_ms)

        cost = min(per_grant(self.a), per_grant(self.b)) if either else per_grant(self.a)
        ceiling = cores * 1000 / cost
        ratio = ceiling / median(self.b.rates)
        verdict = ("below the target: at this CPU per grant, out of this machine's reach" if ratio < target
                   else "not what limits it")
        return (f"machine ceiling: {cores} cores / {cost:.2f} ms of CPU per grant (server, PostgreSQL, load "
                f"driver) = {ceiling:.0f}/s = {ratio:.2f}x the {self.b_name}'s rate, {verdict}")


WARMED: set[int] = set()


def compare(p: Profile, a: Contender, b: Contender, tag: str, pg: Postgres | None = None) -> Comparison:
    """Warm both up, then p.rounds alternating rounds (a b, b a, a b, ...)."""
    comp = Comparison(a.name, b.name)
    budget_per_sec = 2000  # more than any server here answers per second; unused top-ups go back
    # Every server process is warmed up on its own, once, at the full concurrency: its threads, its
    # database connections (PostgreSQL backends warm their catalog caches; psycopg prepares statements
    # after 5 uses on a connection) and SQLAlchemy's statement cache all get going before any timing.
    for c in (a, b):
        for s in c.servers:
            if s.proc.pid in WARMED:
                continue
            log(f"  warm-up {c.name}: {s.name} ({p.warmup:.1f} s)")
            r = run_load([s.port], c.pool, p, duration=p.warmup, conns=c.conns,
                         budget=int(budget_per_sec * p.warmup), tag=f"{tag}w{len(WARMED)}")
            _note_problems(comp, c.name, r)
            WARMED.add(s.proc.pid)
    for rnd in range(p.rounds):
        for c in [a, b] if rnd % 2 == 0 else [b, a]:
            stats = comp.a if c is a else comp.b
            cpu0 = sum(proc_cpu(s.proc.pid) for s in c.servers)
            pg0, sys0 = postgres_cpu(pg), system_cpu()
            r = run_load([s.port for s in c.servers], c.pool, p, duration=p.duration, conns=c.conns,
                         budget=int(budget_per_sec * p.duration), tag=f"{tag}{rnd}")
            cpu1 = sum(proc_cpu(s.proc.pid) for s in c.servers)
            pg1, sys1 = postgres_cpu(pg), system_cpu()
            _note_problems(comp, c.name, r)
            n = max(r.requests, 1)
            stats.rates.append(r.rate)
            stats.latencies.extend(r.latencies)
            stats.server_ms.append((cpu1 - cpu0) / n * 1000)
            stats.db_ms.append(sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items()) / n * 1000)
            stats.client_ms.append(r.client_cpu / n * 1000)
            stats.busy.append((sys1[0] - sys0[0]) / max(sys1[1] - sys0[1], 1))
            log(f"  round {rnd + 1} {c.name}: {r.requests} webhooks in {r.elapsed:.2f} s = {r.rate:.0f}/s "
                f"(p50 {pct(r.latencies, 0.5) * 1000:.1f} ms, p99 {pct(r.latencies, 0.99) * 1000:.1f} ms; "
                f"server CPU {stats.server_ms[-1]:.2f} ms/req, postgres CPU {stats.db_ms[-1]:.2f} ms/req, "
                f"driver CPU {stats.client_ms[-1]:.2f} ms/req, "
                f"machine busy {stats.busy[-1]:.0%})"
                + (" [ran out of pending top-ups]" if r.exhausted else ""))
    return comp


def _note_problems(comp: Comparison, name: str, r: load.RunResult) -> None:
    bad = {k: v for k, v in r.outcomes.items() if k != "granted"}
    if bad or set(r.statuses) - {200}:
        comp.problems.append(f"{name}: statuses {dict(r.statuses)} outcomes {dict(r.outcomes)}")
        log(f"  !! {name}: statuses {dict(r.statuses)} outcomes {dict(r.outcomes)}")


# -- verification ------------------------------------------------------------------------------
def verify_wallet_grants(report: Report, label: str, url: str, deliveries: list[Delivery], pool: Pool,
                         server: Server, workdir: Path) -> None:
    """Every webhook answered "granted" was granted exactly once, nothing else was, and redeliveries
    change nothing; then `wallet verify`."""
    from sqlalchemy import text

    from adapters.sql.engine import create_wallet_engine

    granted = pool.granted
    granted_set = set(granted)
    dupes = len(granted) - len(granted_set)
    by_pi = {d.payment_intent_id: d for d in deliveries}
    sample = [by_pi[pi] for pi in sorted(granted_set)[:: max(1, len(granted_set) // 40)]][:40]
    # Stripe's retries of an event keep its id: answered "duplicate"; another event about the same
    # payment (a new id) finds it granted: "already_granted". Neither may move a credit.
    same = load.redeliver(server.port, [(d, pool.event_of[d.payment_intent_id]) for d in sample],
                          secret=WEBHOOK_SECRET)
    fresh = load.redeliver(server.port, [(d, load.event_id("fresh", d.payment_intent_id)) for d in sample],
                           secret=WEBHOOK_SECRET)

    engine = create_wallet_engine(url)
    try:
        with engine.connect() as c:
            refs = [r[0] for r in c.execute(text("SELECT reference_id FROM credit_transactions WHERE kind='top_up'"))]
            paid = text("SELECT payment_intent_id FROM top_ups WHERE status='succeeded'")
            ok_topups = {r[0] for r in c.execute(paid)}
            pending = c.execute(text("SELECT count(*) FROM top_ups WHERE status='pending'")).scalar_one()
            balances = {r[0]: int(r[1]) for r in c.execute(text("SELECT user_id, available FROM wallets"))}
            lots = c.execute(text("SELECT count(*) FROM credit_lots")).scalar_one()
            postings = c.execute(text("SELECT count(*) FROM postings")).scalar_one()
    finally:
        engine.dispose()
    expected: Counter[str] = Counter()
    for pi in granted_set:
        expected[by_pi[pi].user_id] += CREDITS_MINOR
    wrong_balances = [u for u in set(expected) | set(balances) if expected.get(u, 0) != balances.get(u, 0)]
    exactly_once = (
        dupes == 0
        and len(refs) == len(set(refs)) == len(granted_set)
        and set(refs) == granted_set
        and ok_topups == granted_set
        and pending == len(deliveries) - len(granted_set)
        and lots == len(granted_set)
        and postings == 2 * len(granted_set)
        and not wrong_balances
    )
    report.check(
        f"{label}: every granted webhook granted exactly once", exactly_once,
        f"({len(granted_set)} grants; ledger rows {len(refs)}, succeeded top-ups {len(ok_topups)}, "
        f"lots {lots}, postings {postings}, wallets off {len(wrong_balances)}, answered twice {dupes})",
    )
    report.check(
        f"{label}: redelivering {len(sample)} webhooks changes nothing",
        same == Counter({"duplicate": len(sample)}) and fresh == Counter({"already_granted": len(sample)}),
        f"(same event id: {dict(same)}; new event id: {dict(fresh)})",
    )
    res = wallet_cli(url, "verify", workdir=workdir)
    report.check(f"{label}: `wallet verify`", res.returncode == 0, f"({(res.stdout or res.stderr).strip()[:120]})")


def verify_baseline_grants(report: Report, label: str, url: str, granted: list[str]) -> None:
    from baseline_server import Store

    store = Store(url)
    conn = store.connect()
    n, distinct = conn.execute("SELECT count(*), count(DISTINCT reference_id) FROM bench_ledger").fetchone()
    total = conn.execute("SELECT coalesce(sum(balance), 0) FROM bench_balances").fetchone()[0]
    conn.close()
    ok = n == distinct == len(set(granted)) == len(granted) and int(total) == n * CREDITS_MINOR
    report.check(f"{label}: baseline granted each once", ok, f"({n} rows, balances sum {total})")


# -- part 1 and 3: webhook grants ----------------------------------------------------------------
def sqlite_synchronous(path: Path) -> str:
    """The synchronous setting a connection to the wallet's database gets (the engine sets none)."""
    from adapters.sql.engine import create_wallet_engine

    engine = create_wallet_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as c:
            mode = c.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            sync = c.exec_driver_sql("PRAGMA synchronous").scalar_one()
    finally:
        engine.dispose()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"journal_mode={mode}, synchronous={names.get(int(sync), sync)}"


def pending_needed(p: Profile, rate_cap: float, runs: int) -> int:
    return int(rate_cap * (p.warmup + p.duration * runs)) + 1000


def part1_sqlite(p: Profile, report: Report, work: Path, memory: dict[str, float]) -> None:
    log("part 1: webhook grants over HTTP, SQLite")
    wallet_db = work / "wallet.sqlite3"
    base_db = work / "baseline.sqlite3"
    wallet_url, base_url = f"sqlite:///{wallet_db}", f"sqlite:///{base_db}"
    count = pending_needed(p, 700, 2 * p.rounds)
    t0 = time.monotonic()
    deliveries = prepare_wallet_db(wallet_url, count, p.users, "s")
    prepare_baseline_db(base_url, p.users)
    log(f"  {count} pending top-ups recorded through the SQL adapter in {time.monotonic() - t0:.1f} s")
    report.details.append(f"SQLite durability (wallet engine, and the baseline): {sqlite_synchronous(wallet_db)}")
    wallet = start_wallet("wallet-sqlite", wallet_url, work)
    base = start_baseline("baseline-sqlite", base_url, work)
    try:
        memory["wallet_idle"] = wallet.vm_hwm_kib()
        memory["baseline_idle"] = base.vm_hwm_kib()
        wpool, bpool = Pool(deliveries), Pool(baseline_deliveries("bs", p.users))
        comp = compare(p, Contender("wallet", [wallet], wpool, p.conns), Contender("baseline", [base], bpool, p.conns),
                       "s")
        memory["wallet_loaded"] = wallet.vm_hwm_kib()
        memory["baseline_loaded"] = base.vm_hwm_kib()
        _grant_row(report, "1", "webhook grants/s, SQLite", comp, p)
        verify_wallet_grants(report, "SQLite", wallet_url, deliveries, wpool, wallet, work)
        verify_baseline_grants(report, "SQLite", base_url, bpool.granted)
    finally:
        report.check("SQLite wallet server stopped cleanly (SIGINT)", wallet.stop() == 0, f"(exit {wallet.exit_code})")
        base.stop()


def _grant_row(report: Report, part: str, what: str, comp: Comparison, p: Profile) -> None:
    ratio = comp.ratio
    report.rows.append(Row(
        part, what, f"{median(comp.a.rates):.0f}/s", f"{median(comp.b.rates):.0f}/s", ratio, ">= 0.80",
        ratio >= 0.8,
        f"{comp.spread()}; p50 latency {pct(comp.a.latencies, .5) * 1000:.1f} vs "
        f"{pct(comp.b.latencies, .5) * 1000:.1f} ms, p99 {pct(comp.a.latencies, .99) * 1000:.0f} vs "
        f"{pct(comp.b.latencies, .99) * 1000:.0f} ms; {comp.cpu_note('PostgreSQL' in what)}; "
        f"concurrency {p.processes * p.conns}; {comp.machine_ceiling(0.8)}",
    ))
    for problem in comp.problems:
        report.check(f"{what}: every request answered 200 granted", False, problem)
    if not comp.problems:
        report.check(f"{what}: every request answered 200 granted", True)


def part1_and_3_postgres(p: Profile, report: Report, work: Path, pg: Postgres, parts: set[str],
                         memory: dict[str, float]) -> None:
    log("part 1/3: webhook grants over HTTP, PostgreSQL")
    wallet_url = pg.create("w")
    base_url = pg.create("b")
    runs = (p.rounds if "1" in parts else 0) + (2 * p.rounds if "3" in parts else 0)
    count = pending_needed(p, 500, runs) + (int(500 * p.warmup * 3) if "3" in parts else 0)
    t0 = time.monotonic()
    deliveries = prepare_wallet_db(wallet_url, count, p.users, "p")
    prepare_baseline_db(base_url, p.users)
    log(f"  {count} pending top-ups recorded through the SQL adapter in {time.monotonic() - t0:.1f} s")
    servers = [start_wallet(f"wallet-pg-{i}", wallet_url, work) for i in range(4 if "3" in parts else 1)]
    base = start_baseline("baseline-pg", base_url, work)
    wpool = Pool(deliveries)
    try:
        if "1" in parts:
            bpool = Pool(baseline_deliveries("bp", p.users))
            comp = compare(p, Contender("wallet", servers[:1], wpool, p.conns),
                           Contender("baseline", [base], bpool, p.conns), "p", pg)
            memory["wallet_pg_loaded"] = servers[0].vm_hwm_kib()
            memory["baseline_pg_loaded"] = base.vm_hwm_kib()
            _grant_row(report, "1", "webhook grants/s, PostgreSQL", comp, p)
            verify_baseline_grants(report, "PostgreSQL", base_url, bpool.granted)
        if "3" in parts:
            log("part 3: PostgreSQL, 4 wallet serve processes vs 1")
            comp3 = compare(p, Contender("4 processes", servers, wpool, p.scale_conns),
                            Contender("1 process", servers[:1], wpool, p.scale_conns), "m", pg)
            ratio = comp3.ratio
            report.rows.append(Row(
                "3", "grants/s, PostgreSQL, 4 processes vs 1", f"{median(comp3.a.rates):.0f}/s",
                f"{median(comp3.b.rates):.0f}/s", ratio, ">= 1.50", ratio >= 1.5,
                f"{comp3.spread()}; {comp3.cpu_note(True)} (server CPU summed over the processes); "
                f"concurrency {p.processes * p.scale_conns} (round-robin over the ports); "
                f"{comp3.machine_ceiling(1.5, either=True)}",
            ))
            for problem in comp3.problems:
                report.check("4 vs 1 processes: every request answered 200 granted", False, problem)
        verify_wallet_grants(report, "PostgreSQL", wallet_url, deliveries, wpool, servers[0], work)
    finally:
        codes = [s.stop() for s in servers]
        report.check(f"PostgreSQL wallet servers ({len(servers)}) stopped cleanly (SIGINT)",
                     all(c == 0 for c in codes), f"(exit codes {codes})")
        base.stop()


# -- part 2: balance read with 1,000 and 1,000,000 ledger rows --------------------------------------
_SQLA_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite


def bulk_load_user(conn: sqlite3.Connection, user: str, rows: int, start: dt.datetime) -> None:
    """`rows` ledger transactions for `user`, consistent in every table `wallet verify` checks, and a
    ledger the wallet itself could have written: in blocks of 1000, a paid top-up of 1000.00 credits (a
    lot, 2 postings) then 999 spends of 1.00 (2 postings each), each taken from the oldest lot with
    credits left, as a spend takes them. The wallet gains 1.00 per block; its live lots are the newest
    one or two (every older lot is used up), as a real wallet's would be."""
    tx_rows: list[tuple[str | int | None, ...]] = []
    posting_rows: list[tuple[str | int | None, ...]] = []
    lots: dict[str, tuple[str, int]] = {}  # lot id -> (created_at, granted)
    remaining: dict[str, int] = {}
    with_credits: list[str] = []  # lots with credits left, oldest first
    top_up_rows: list[tuple[str | int | None, ...]] = []
    balance = 0
    for i in range(rows):
        at = (start + dt.timedelta(milliseconds=i)).strftime(_SQLA_FORMAT)
        tx_id = f"ctx_{user}_{i:08d}"
        if i % 1000 == 0:
            block = i // 1000
            block_lot = f"lot_{user}_{block:05d}"
            pi = f"pi_bulk_{user}_{block:05d}"
            amount = 100_000
            balance += amount
            tx_rows.append((tx_id, user, "top_up", amount, balance, pi, f"top-up tu_bulk_{user}_{block}", "stripe",
                            at, 0, None, None))
            posting_rows.append((tx_id, "wallet", user, block_lot, amount))
            posting_rows.append((tx_id, "stripe_funding", None, None, -amount))
            lots[block_lot] = (at, amount)
            remaining[block_lot] = amount
            with_credits.append(block_lot)
            top_up_rows.append((f"tu_bulk_{user}_{block:05d}", user, 1000, "usd", amount, "succeeded", pi, None, at,
                                at, 0, 0))
        else:
            balance -= 100
            paying = with_credits[0]  # every lot holds whole credits: one lot pays each 1.00
            remaining[paying] -= 100
            if remaining[paying] == 0:
                with_credits.pop(0)
            tx_rows.append((tx_id, user, "spend", -100, balance, f"spend:{user}:{i}", "bench", "service:bench",
                            at, 0, None, None))
            posting_rows.append((tx_id, "wallet", user, paying, -100))
            posting_rows.append((tx_id, "revenue", None, None, 100))
    lot_rows = [(lot_id, user, "paid", granted, remaining[lot_id], 0, at, None)
                for lot_id, (at, granted) in lots.items()]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).strftime(_SQLA_FORMAT)
    conn.execute("INSERT INTO wallets (user_id, available, held, updated_at) VALUES (?, ?, 0, ?)", (user, balance, now))
    conn.executemany(
        "INSERT INTO credit_transactions (id, user_id, kind, credits, balance_after, reference_id, reason, actor, "
        "created_at, held_change, metadata, hold_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tx_rows)
    conn.executemany("INSERT INTO postings (transaction_id, account, user_id, lot_id, amount) VALUES (?, ?, ?, ?, ?)",
                     posting_rows)
    conn.executemany("INSERT INTO credit_lots (id, user_id, kind, granted, remaining, held, created_at, expires_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", lot_rows)
    conn.executemany(
        "INSERT INTO top_ups (id, user_id, amount_cents, currency, credits, status, payment_intent_id, "
        "idempotency_key, created_at, updated_at, refunded_cents, credits_refunded) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", top_up_rows)


def build_read_db(path: Path, p: Profile) -> None:
    from adapters.sql.engine import create_wallet_engine
    from adapters.sql.migrate import upgrade

    engine = create_wallet_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA synchronous=OFF")
    # Secondary indexes are dropped for the load and made again from their own DDL afterwards (faster).
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "
        "AND tbl_name IN ('credit_transactions', 'postings', 'credit_lots', 'top_ups')").fetchall()
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    start = dt.datetime(2024, 1, 1)
    bulk_load_user(conn, "heavy", p.heavy_rows, start)
    bulk_load_user(conn, "light", p.light_rows, start)
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def _token(user: str) -> str:
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": user, "roles": [], "iat": now, "exp": now + 3600}, JWT_SECRET, algorithm="HS256")


def time_http_reads(
    port: int, users: list[str], n: int
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]]]:
    """Sequential GETs on one keep-alive connection, users interleaved so drift hits both alike.
    Returns the times by user and each user's last body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {u: {"Authorization": f"Bearer {_token(u)}"} for u in users}
    times: dict[str, list[float]] = {u: [] for u in users}
    bodies: dict[str, dict[str, Any]] = {}
    for i in range(n + 30):
        for u in users if i % 2 == 0 else reversed(users):
            t0 = time.perf_counter()
            conn.request("GET", "/api/v1/users/me/wallet", headers=headers[u])
            resp = conn.getresponse()
            data = resp.read()
            took = time.perf_counter() - t0
            if resp.status != 200:
                raise RuntimeError(f"GET wallet for {u}: {resp.status} {data[:200]!r}")
            if i >= 30:  # the first 30 warm caches
                times[u].append(took)
            bodies[u] = json.loads(data)
    conn.close()
    return times, bodies


def time_library_reads(path: Path, users: list[str], n: int) -> dict[str, list[float]]:
    from adapters.sql.engine import create_wallet_engine
    from adapters.sql.unit_of_work import sql_unit_of_work_factory
    from wallet_core.use_cases.read_wallet import read_wallet

    engine = create_wallet_engine(f"sqlite:///{path}")
    uow = sql_unit_of_work_factory(engine)
    times: dict[str, list[float]] = {u: [] for u in users}
    try:
        for i in range(n + 30):
            for u in users if i % 2 == 0 else reversed(users):
                t0 = time.perf_counter()
                read_wallet(user_id=u, uow=uow)
                took = time.perf_counter() - t0
                if i >= 30:
                    times[u].append(took)
    finally:
        engine.dispose()
    return times


def part2(p: Profile, report: Report, work: Path) -> None:
    log(f"part 2: balance read, {p.light_rows:,} vs {p.heavy_rows:,} ledger rows (SQLite)")
    path = work / "reads.sqlite3"
    t0 = time.monotonic()
    build_read_db(path, p)
    log(f"  bulk-loaded {p.heavy_rows + p.light_rows:,} transactions ({2 * (p.heavy_rows + p.light_rows):,} "
        f"postings) in {time.monotonic() - t0:.1f} s; {path.stat().st_size / 2**20:.0f} MiB")
    url = f"sqlite:///{path}"
    server = start_wallet("wallet-reads", url, work)
    try:
        http_times, http_bodies = time_http_reads(server.port, ["light", "heavy"], p.reads)
    finally:
        report.check("read server stopped cleanly (SIGINT)", server.stop() == 0, f"(exit {server.exit_code})")
    lib_times = time_library_reads(path, ["light", "heavy"], p.reads)
    heavy_body, light_body = http_bodies["heavy"], http_bodies["light"]
    expected_heavy = f"{(p.heavy_rows + 999) // 1000:.2f}"
    report.check("read: balances are what was loaded",
                 heavy_body["balance"] == expected_heavy and light_body["balance"] == "1.00"
                 and len(heavy_body["transactions"]) == 20,
                 f"(heavy {heavy_body['balance']}, light {light_body['balance']}, "
                 f"{len(heavy_body['transactions'])} recent rows)")
    h, light = median(http_times["heavy"]), median(http_times["light"])
    ratio = h / light
    report.rows.append(Row(
        "2", f"GET wallet over HTTP, {p.heavy_rows:,} vs {p.light_rows:,} rows", f"{h * 1000:.2f} ms",
        f"{light * 1000:.2f} ms", ratio, "<= 1.50", ratio <= 1.5,
        f"median of {p.reads} sequential reads each, interleaved; p90 {pct(http_times['heavy'], .9) * 1000:.2f} vs "
        f"{pct(http_times['light'], .9) * 1000:.2f} ms",
    ))
    lh, ll = median(lib_times["heavy"]), median(lib_times["light"])
    report.rows.append(Row(
        "2", f"read_wallet in-process, {p.heavy_rows:,} vs {p.light_rows:,} rows", f"{lh * 1000:.2f} ms",
        f"{ll * 1000:.2f} ms", lh / ll, "<= 1.50", lh / ll <= 1.5, "library call, no HTTP",
    ))
    t0 = time.monotonic()
    res = wallet_cli(url, "verify", workdir=work)
    took = time.monotonic() - t0
    report.check("read database: `wallet verify`", res.returncode == 0,
                 f"({(res.stdout or res.stderr).strip()[:80]}; took {took:.1f} s)")
    report.details.append(f"`wallet verify` over {p.heavy_rows + p.light_rows:,} transactions took {took:.1f} s")


# -- part 4: memory and start-up ---------------------------------------------------------------
def part4(p: Profile, report: Report, memory: dict[str, float]) -> None:
    log("part 4: start-up time and peak memory")
    times: dict[str, list[float]] = {"wallet": [], "python": [], "stdlib": []}
    cmds = {"wallet": [WALLET, "--help"], "python": [PYTHON, "-c", "pass"],
            # what cli.py imports before parsing: the floor for any argparse CLI of this shape
            "stdlib": [PYTHON, "-c", "import argparse, getpass, json, logging, typing"]}
    for i in range(p.startup_runs + 1):
        for name in ("wallet", "python", "stdlib") if i % 2 == 0 else ("stdlib", "python", "wallet"):
            t0 = time.perf_counter()
            subprocess.run(cmds[name], stdout=subprocess.DEVNULL, check=True)
            if i > 0:  # the first of each warms the page cache
                times[name].append(time.perf_counter() - t0)
    w, b = median(times["wallet"]), median(times["python"])
    report.rows.append(Row("4", "`wallet --help` start-up", f"{w * 1000:.0f} ms", f"{b * 1000:.0f} ms", w / b, "info",
                           None, f"median of {p.startup_runs}; baseline `python -c pass`; importing the stdlib "
                                 f"modules cli.py needs alone takes {median(times['stdlib']) * 1000:.0f} ms"))
    for key, label in (("idle", "idle (after start-up)"), ("loaded", "after the SQLite grant load"),
                       ("pg_loaded", "after the PostgreSQL grant load")):
        wk, bk = memory.get(f"wallet_{key}"), memory.get(f"baseline_{key}")
        if wk and bk:
            report.rows.append(Row("4", f"peak RSS (VmHWM) {label}", f"{wk / 1024:.1f} MiB", f"{bk / 1024:.1f} MiB",
                                   wk / bk, "info", None, "baseline: bench/baseline_server.py"))


# -- profile when a target is missed --------------------------------------------------------------
def profile_webhook(report: Report, work: Path, url: str, label: str, p: Profile) -> None:
    """Where a grant's time goes: py-spy (sampling, --gil) on a `wallet serve` under load when
    py-spy is installed, otherwise cProfile around the library call in-process."""
    log(f"profiling the webhook path ({label})")
    deliveries = prepare_wallet_db(url, 6000, p.users, "prof")
    spy = os.environ.get("WALLET_BENCH_PYSPY") or shutil.which("py-spy") or (
        str(Path(PYTHON).with_name("py-spy")) if Path(PYTHON).with_name("py-spy").exists() else None)
    if spy:
        server = start_wallet(f"wallet-profile-{label}", url, work)
        out = work / f"pyspy-{label}.txt"
        try:
            rec = subprocess.Popen([spy, "record", "--gil", "--format", "raw", "-r", "250", "-d", "8", "-o", str(out),
                                    "-p", str(server.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)
            load.drive([server.port], deliveries, secret=WEBHOOK_SECRET, processes=p.processes,
                       conns_per_process=p.conns, duration=7.0, event_prefix="prof")
            _, err = rec.communicate(timeout=60)
        finally:
            server.stop()
        if out.exists():
            report.profiles.append(f"{label}: py-spy --gil, `wallet serve` under the grant load\n"
                                   + summarize_collapsed(out.read_text()))
            return
        log(f"  py-spy failed ({err.decode()[-200:].strip()}); falling back to cProfile")
    report.profiles.append(f"{label}: cProfile, library handle_stripe_webhook in-process (py-spy not found)\n"
                           + cprofile_library(url, deliveries[:500]))


# Who a frame belongs to, for the time-by-layer summary (first match of the file path wins).
_LAYERS = (
    ("wallet_core", "wallet_core (domain)"), ("adapters/sql", "adapters.sql (repository)"),
    ("adapters", "adapters (stripe webhooks)"), ("entrypoints", "entrypoints (falcon routes, container)"),
    ("sqlalchemy", "SQLAlchemy"), ("alembic", "alembic"), ("psycopg", "psycopg"), ("sqlite3", "sqlite3 driver"),
    ("falcon", "Falcon"), ("waitress", "waitress"), ("stripe", "stripe (signature)"), ("dependency_injector", "DI"),
    ("json", "json"), ("decimal", "decimal"), ("", "other (stdlib, C calls)"),
)


def _layer(frame: str) -> str:
    for needle, name in _LAYERS:
        if needle in frame.replace(".", "/") or needle in frame:
            return name
    return "other"


def summarize_collapsed(text: str) -> str:
    """py-spy raw output: 'frame;frame;... count' lines. Self time by layer, and inclusive time of the
    wallet's own functions."""
    self_by_layer: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        self_by_layer[_layer(frames[-1])] += count
        seen = set()
        for f in frames:
            if "cli.py" in f or "server.py" in f:  # the waitress main loop under `wallet serve`
                continue
            if any(k in f for k in ("wallet_core", "adapters/", "entrypoints/", "sqlalchemy/engine/base.py",
                                    "sqlalchemy/sql/compiler.py", "sqlalchemy/orm", "falcon/app.py",
                                    "stripe/_webhook.py", "sqlite3", "psycopg/cursor.py")):
                name = f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1]
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples holding the GIL; self time by layer:"]
    lines += [f"    {v / total:6.1%}  {k}" for k, v in self_by_layer.most_common(10)]
    lines.append("  inclusive time of the heaviest functions:")
    lines += [f"    {v / total:6.1%}  {k})" for k, v in inclusive.most_common(22)]
    return "\n".join(lines)


def cprofile_library(url: str, deliveries: list[Delivery]) -> str:
    import cProfile
    import io
    import pstats

    import stripe

    from adapters.sql.engine import create_wallet_engine
    from adapters.sql.unit_of_work import sql_unit_of_work_factory
    from adapters.stripe_gateway import StripePaymentGateway
    from entrypoints.library import Wallet
    from wallet_core.topups import TopUpPolicy

    engine = create_wallet_engine(url)
    from decimal import Decimal

    from wallet_core.money import Usd

    wallet = Wallet(uow=sql_unit_of_work_factory(engine), gateway=StripePaymentGateway(None, [WEBHOOK_SECRET]),
                    policy=TopUpPolicy(Usd(100), Usd(50_000), Decimal(100)))
    bodies: list[tuple[bytes, str]] = []
    for d in deliveries:
        body = load.event_body(d, load.event_id("prof", d.payment_intent_id))
        bodies.append((body.encode(), stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)))
    prof = cProfile.Profile()
    prof.enable()
    for raw, sig in bodies:
        wallet.handle_stripe_webhook(raw, sig)
    prof.disable()
    engine.dispose()
    stats = pstats.Stats(prof)
    by_layer: Counter[str] = Counter()
    total = 0.0
    for (filename, _, function), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_layer[_layer(function if filename == "~" else filename)] += tottime  # "~": a C function
        total += tottime
    lines = [f"  {len(bodies)} grants, {total / len(bodies) * 1000:.2f} ms each under cProfile; self time by layer:"]
    lines += [f"    {v / total:6.1%}  {k}" for k, v in by_layer.most_common(10)]
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(r"wallet_core|adapters|entrypoints", 20)
    lines += ["    " + line for line in buf.getvalue().splitlines() if line.strip()][-22:]
    return "\n".join(lines)


# -- the report -------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load_avg = "?"
    with contextlib.suppress(OSError):
        load_avg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg at start": load_avg,
    }


def render(report: Report, p: Profile, info: dict[str, str], took: float) -> str:
    out = []
    head = ("#", "measure", "measured", "baseline", "ratio", "target", "result")
    table = [head]
    for r in report.rows:
        result = "info" if r.ok is None else ("PASS" if r.ok else "FAIL")
        table.append((r.part, r.what, r.wallet, r.baseline, f"{r.ratio:.2f}" if r.ratio is not None else "-",
                      r.target, result))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    out.append("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table[1:]:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    out.append("")
    out.append("Notes per row:")
    for r in report.rows:
        out.append(f"- {r.part} {r.what}: {r.note}")
    out.append("")
    out.append("Checks:")
    for what, ok, detail in report.checks:
        out.append(f"- [{'ok' if ok else 'FAILED'}] {what} {detail}")
    if report.details:
        out.append("")
        out.append("Details:")
        out += [f"- {d}" for d in report.details]
    out.append("")
    out.append(f"Machine: {', '.join(f'{k} {v}' for k, v in info.items())}")
    out.append(f"Run: {p.name} profile, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, took {took:.0f} s")
    if report.profiles:
        out.append("")
        out.append("Profiles (targets missed):")
        out += report.profiles
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", default="1,2,3,4", help="comma-separated parts to run (1-4)")
    parser.add_argument("--pg-admin-url", default=os.environ.get("WALLET_BENCH_PG_ADMIN_URL",
                                                                  "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--no-profile", action="store_true", help="no profile when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (databases, server logs)")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--group-writes", choices=("auto", "true", "false"), default=None,
                        help="WALLET_GROUP_WRITES for the wallet's servers (default: the wallet's, auto)")
    args = parser.parse_args()
    global GROUP_WRITES
    GROUP_WRITES = args.group_writes
    p = QUICK if args.quick else FULL
    parts = set(args.only.split(","))
    if not WALLET:
        print("bench: the `wallet` command is not installed next to this Python (pip install -e .)", file=sys.stderr)
        return 2
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="wallet-bench-"))
    report = Report()
    info = machine()
    pg = Postgres(args.pg_admin_url)
    memory: dict[str, float] = {}
    log(f"{p.name} run; working in {work}")
    try:
        if "1" in parts or "4" in parts:
            part1_sqlite(p, report, work, memory)
        if "2" in parts:
            part2(p, report, work)
        if parts & {"1", "3"}:
            if pg.available():
                info["postgresql"] = pg.version()
                part1_and_3_postgres(p, report, work, pg, parts, memory)
            else:
                report.check("PostgreSQL reachable", False,
                             f"({args.pg_admin_url}); parts 1 (PostgreSQL) and 3 skipped")
        if "4" in parts:
            part4(p, report, memory)
        missed = [r for r in report.rows if r.ok is False]
        if missed and not args.no_profile:
            if any("SQLite" in r.what and r.part == "1" for r in missed):
                profile_webhook(report, work, f"sqlite:///{work / 'profile.sqlite3'}", "SQLite", p)
            if any(r.part in ("1", "3") and "PostgreSQL" in r.what for r in missed) and pg.available():
                profile_webhook(report, work, pg.create("prof"), "PostgreSQL", p)
    finally:
        pg.drop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = render(report, p, info, time.monotonic() - started)
    print()
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    failed_checks = [c for c in report.checks if not c[1]]
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
