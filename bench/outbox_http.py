"""The outbox's cost over HTTP (`python bench/outbox.py --http`): spends and admin grants through
`wallet serve` (waitress, 8 threads) as shipped, against the same server with the SQL outbox's `add` a
no-op (bench/serve_without_outbox.py, which patches it and calls the same entry point), on SQLite and
on PostgreSQL, in the same run. Target: throughput with / without >= 0.9x (issue 12).

Each side has its own throw-away database and server process. The load is 8 concurrent keep-alive
clients (2 processes of 4 connections, like bench/run.py's; bench/load.py's driver only posts
webhooks), each request with its own Idempotency-Key, spread over 200 wallets that one admin grant each
funded first (with 200 spends after it, that is the warm-up). Spends use a service token, grants an
admin one. Rounds alternate the order (with, without; without, with; ...), one block of `block`
operations per side and round. Printed per block: requests/s, the server's CPU per request (its
process plus, on PostgreSQL, its database's backends) and how busy the machine was; per database and
operation: the ratio of the median rates (with / without), the per-round ratios and the CPU ratio.

As shipped, `wallet serve` runs its webhook worker thread, which publishes (numbers) the events as
they come: on the "with" side that work is in the figures, as it is in production (the "without"
side's worker finds nothing). `--no-worker` runs both servers without it (WALLET_WEBHOOK_WORKER=false):
the cost of writing the events alone.

Checked afterwards: every request was answered 201; the "with" database holds one credits.spent event
per spend and one credits.granted per grant (the funding ones included), the "without" one no event;
`wallet verify` passes on both.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import run as bench_run  # bench/run.py: servers, throw-away databases, CPU clocks
from http_load import Item, Sent, drive, loadavg, log, token  # bench/http_load.py: the 8-client load

USERS = 200
TARGET = 0.9
FUND = "1000000"  # credits per wallet, far more than a run spends
WITH, WITHOUT = "with the outbox", "without it"
OPS = {"spend": "spend", "admin grant": "grant"}  # name -> the route's last segment


# -- one side: a server and its database ---------------------------------------------------------
@dataclass
class Side:
    name: str
    url: str
    database: str | None  # the PostgreSQL database's name, None on SQLite
    pg_admin_url: str
    server: bench_run.Server | None = None
    done: Counter[str] = field(default_factory=Counter)  # operations answered 201, by route
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    busy: dict[str, list[float]] = field(default_factory=dict)  # share of the machine's CPUs busy, per block
    problems: list[str] = field(default_factory=list)
    _n: int = 0

    def items(self, route: str, n: int, credits: str = "1.00") -> list[Item]:
        auth = token(["service"] if route == "spend" else ["admin"])
        body = json.dumps({"credits": credits, "reason": "bench"}).encode()
        out = []
        for _ in range(n):
            self._n += 1
            user = f"bench-{self._n % USERS:04d}"
            headers = {
                "Authorization": f"Bearer {auth}",
                "Content-Type": "application/json",
                "Idempotency-Key": f"{route}-{self._n}",
            }
            out.append((f"/api/v1/admin/users/{user}/wallet/{route}", body, headers))
        return out

    def cpu(self) -> float:
        """CPU seconds of the server process and, on PostgreSQL, of its database's backends."""
        assert self.server is not None
        used = bench_run.proc_cpu(self.server.proc.pid)
        if self.database is not None:
            import psycopg

            with psycopg.connect(self.pg_admin_url, autocommit=True) as admin:
                rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database])
                used += sum(bench_run.proc_cpu(int(r[0])) for r in rows)
        return used

    def send(self, route: str, n: int, credits: str = "1.00") -> Sent:
        assert self.server is not None
        sent = drive(self.server.port, self.items(route, n, credits))
        self.done[route] += sent.statuses[201]
        if set(sent.statuses) != {201} or sent.statuses[201] != n or sent.errors:
            self.problems.append(f"{route}: statuses {dict(sent.statuses)} of {n}; {sent.errors[:2]}")
            log(f"  !! {self.name} {route}: statuses {dict(sent.statuses)} of {n}; {sent.errors[:2]}")
        return sent

    def block(self, op: str, n: int) -> None:
        cpu0, sys0 = self.cpu(), bench_run.system_cpu()
        sent = self.send(OPS[op], n)
        cpu1, sys1 = self.cpu(), bench_run.system_cpu()
        rate = n / sent.elapsed
        self.rates.setdefault(op, []).append(rate)
        self.cpu_ms.setdefault(op, []).append((cpu1 - cpu0) / n * 1000)
        self.busy.setdefault(op, []).append((sys1[0] - sys0[0]) / max(sys1[1] - sys0[1], 1))
        log(
            f"  {self.name}: {n} {op}s in {sent.elapsed:.2f} s = {rate:.0f}/s; server CPU "
            f"{self.cpu_ms[op][-1]:.2f} ms/op; machine busy {self.busy[op][-1]:.0%}; load {loadavg()}"
        )


# -- a database --------------------------------------------------------------------------------
@dataclass
class Result:
    database: str
    op: str
    with_rates: list[float]
    without_rates: list[float]
    with_cpu: float
    without_cpu: float
    busy: float  # median share of the machine's CPUs busy during the blocks (other sessions included)

    @property
    def ratio(self) -> float:
        """Ratio of the median rates, with / without."""
        return statistics.median(self.with_rates) / statistics.median(self.without_rates)

    @property
    def rounds(self) -> list[float]:
        return [a / b for a, b in zip(self.with_rates, self.without_rates, strict=True)]

    @property
    def cpu_ratio(self) -> float:
        """Throughput the CPU per operation allows, with / without."""
        return self.without_cpu / self.with_cpu


def run_database(
    label: str, with_side: Side, without_side: Side, work: Path, rounds: int, block: int, *, worker: bool = True
) -> tuple[list[Result], list[tuple[str, bool, str]]]:
    sides = (with_side, without_side)

    def env(url: str) -> dict[str, str]:
        return {**bench_run.wallet_env(url), **({} if worker else {"WALLET_WEBHOOK_WORKER": "false"})}

    for side in sides:
        res = bench_run.wallet_cli(side.url, "migrate", workdir=work)
        if res.returncode != 0:
            raise RuntimeError(f"wallet migrate: {res.stderr}")
    for side in sides:
        port = bench_run.free_port()
        threads = ["--port", str(port), "--threads", str(bench_run.THREADS)]
        argv = (
            [bench_run.WALLET, "serve", *threads]
            if side is with_side
            else [bench_run.PYTHON, str(bench_run.BENCH / "serve_without_outbox.py"), *threads]
        )
        tag = "with" if side is with_side else "without"
        side.server = bench_run.Server(f"{label.lower()}-{tag}", argv, env(side.url), port, work)
    results = []
    try:
        for side in sides:  # funding and warm-up: a grant per wallet, then a spend per wallet
            side.send("grant", USERS, FUND)
            side.send("spend", USERS)
        for op in OPS:
            log(f"{label}: {op}, {rounds} rounds of {block} per side (8 clients)")
            for rnd in range(rounds):
                for side in sides if rnd % 2 == 0 else sides[::-1]:
                    side.block(op, block)
            r = Result(
                label,
                op,
                with_side.rates[op],
                without_side.rates[op],
                statistics.median(with_side.cpu_ms[op]),
                statistics.median(without_side.cpu_ms[op]),
                statistics.median(with_side.busy[op] + without_side.busy[op]),
            )
            results.append(r)
            show(r)
    finally:
        for side in sides:
            if side.server is not None:
                side.server.stop()
    return results, verify(label, with_side, without_side, work)


def verify(label: str, with_side: Side, without_side: Side, work: Path) -> list[tuple[str, bool, str]]:
    from sqlalchemy import text

    from adapters.sql.engine import create_wallet_engine

    checks = []
    for side in (with_side, without_side):
        checks.append(
            (f"{label} {side.name}: every request answered 201", not side.problems, "; ".join(side.problems)[:300])
        )
        engine = create_wallet_engine(side.url)
        try:
            with engine.connect() as conn:
                sql = text("SELECT type, count(*) FROM outbound_events GROUP BY type")
                events = Counter({str(r[0]): int(r[1]) for r in conn.execute(sql)})
        finally:
            engine.dispose()
        if side is with_side:
            expected = Counter({"credits.granted": side.done["grant"], "credits.spent": side.done["spend"]})
            checks.append(
                (
                    f"{label} {side.name}: one event per operation",
                    events == expected,
                    f"events {dict(events)}; operations answered 201 {dict(side.done)}",
                )
            )
        else:
            checks.append((f"{label} {side.name}: no event written", not events, f"events {dict(events)}"))
        res = bench_run.wallet_cli(side.url, "verify", workdir=work)
        checks.append(
            (f"{label} {side.name}: `wallet verify`", res.returncode == 0, (res.stdout or res.stderr).strip()[:160])
        )
    for what, ok, detail in checks:
        log(f"check {'OK' if ok else 'FAILED'}: {what} ({detail})")
    return checks


def show(r: Result) -> None:
    print(
        f"  {r.database} {r.op}: median {statistics.median(r.with_rates):.0f}/s with the outbox vs "
        f"{statistics.median(r.without_rates):.0f}/s without: {r.ratio:.2f}x (per round "
        f"{', '.join(f'{x:.2f}' for x in r.rounds)}; median {statistics.median(r.rounds):.2f}); server CPU "
        f"{r.with_cpu:.2f} vs {r.without_cpu:.2f} ms/op: {r.cpu_ratio:.2f}x; machine busy {r.busy:.0%}",
        flush=True,
    )


def render(results: list[Result]) -> str:
    lines = [
        "| database | operation | ops/s with the outbox | without | ratio of medians | per-round ratios | target "
        "| result | server CPU per op, with / without | CPU ratio | machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.database} | {r.op} | {statistics.median(r.with_rates):.0f} | "
            f"{statistics.median(r.without_rates):.0f} | {r.ratio:.2f} | {', '.join(f'{x:.2f}' for x in r.rounds)} "
            f"| >= {TARGET} | {'PASS' if r.ratio >= TARGET else 'FAIL'} | {r.with_cpu:.2f} / {r.without_cpu:.2f} ms "
            f"| {r.cpu_ratio:.2f} | {r.busy:.0%} |"
        )
    return "\n".join(lines)


def main(sqlite_only: bool, pg_admin_url: str, *, rounds: int, block: int, worker: bool = True) -> int:
    """`worker` False: both servers run without their webhook worker thread (WALLET_WEBHOOK_WORKER=false),
    so nothing publishes the events during the run: the cost of writing them alone."""
    if not bench_run.WALLET:
        print("bench: the `wallet` command is not installed next to this Python (pip install -e .)")
        return 2
    started = time.monotonic()
    log(f"load average at the start: {loadavg()}; webhook worker {'on (as shipped)' if worker else 'off'}")
    results: list[Result] = []
    checks: list[tuple[str, bool, str]] = []
    with tempfile.TemporaryDirectory(prefix="wallet-outbox-http-") as tmp:
        work = Path(tmp)
        urls = {name: f"sqlite:///{work / f'{name}.sqlite3'}" for name in ("with", "without")}
        got = run_database(
            "SQLite",
            Side(WITH, urls["with"], None, pg_admin_url),
            Side(WITHOUT, urls["without"], None, pg_admin_url),
            work,
            rounds,
            block,
            worker=worker,
        )
        results += got[0]
        checks += got[1]
        if not sqlite_only:
            pg = bench_run.Postgres(pg_admin_url)
            try:
                sides = []
                for name in (WITH, WITHOUT):
                    url = pg.create("outbox")
                    sides.append(Side(name, url, url.rsplit("/", 1)[1], pg_admin_url))
                got = run_database("PostgreSQL", sides[0], sides[1], work, rounds, block, worker=worker)
                results += got[0]
                checks += got[1]
            finally:
                pg.drop_all()
    print(f"\n{time.monotonic() - started:.0f} s; load average at the end: {loadavg()} ({os.cpu_count()} CPUs)")
    print(render(results))
    failed = [what for what, ok, _ in checks if not ok]
    print(f"\nchecks: {len(checks) - len(failed)} passed, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0
