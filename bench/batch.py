"""Batch spends against single spends over HTTP (issue 14): in one run, against `wallet serve` (waitress,
8 threads) on a throw-away database, the rate of single spends (POST .../wallet/spend, 8 concurrent
keep-alive clients) and the rate of committed spends sent as batches of 1,000 (POST /api/v1/admin/spends),
with the ratio; on PostgreSQL and on SQLite. Target: batches >= 10x the single-spend rate on PostgreSQL.

    python bench/batch.py                      # PostgreSQL and SQLite
    python bench/batch.py --sqlite-only --rounds 2

Method: one server and database per database kind, 200 wallets funded by one admin grant each (far more
than the run spends), then a warm-up (200 single spends and one batch). Then `--rounds` rounds, each a
block of `--singles` single spends (8 clients: 2 processes of 4 connections, like bench/outbox_http.py)
and a block of `--batches` batches of 1,000 sent by one client one after the other (a usage-log replay,
as `wallet spend-batch` does it), then the same with 4 clients at once; the order alternates by round.
Each spend costs 0.01 credits from a wallet chosen round-robin, so every batch touches all 200 wallets
(it locks them all: concurrent batches take turns). A rate is committed spends (answered 201, or
`"status": "spent"` in a batch's results) per second of wall-clock time of the block; the ratios are of
the median rates. Printed per block: the rate, the server's CPU per spend (its process plus, on
PostgreSQL, its database's backends) and how busy the machine was.

Checked afterwards: every single spend was answered 201 and every batch item `spent`; the ledger holds
exactly one spend transaction per key sent; `wallet verify` passes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import http_load  # bench/http_load.py: the keep-alive clients, tokens, log lines
import run as bench_run  # bench/run.py: servers, throw-away databases, CPU clocks
from http_load import Item, Sent, loadavg, log, token

USERS = 200
BATCH = 1000
TARGET = 10.0
FUND = "1000000"


# -- the load ----------------------------------------------------------------------------------
def _spent(status: int, data: bytes) -> int:
    """Spends this answer committed: 1 for a 201, the `spent` items of a batch's 200."""
    if status == 201:
        return 1
    if status == 200:
        return sum(1 for r in json.loads(data)["results"] if r["status"] == "spent")
    return 0


def drive(port: int, items: list[Item], processes: int, conns: int) -> Sent:
    """Post every item once (bench/http_load.py); `tallied` counts the spends the answers committed."""
    return http_load.drive(port, items, processes=processes, conns=conns, tally=_spent)


# -- one database --------------------------------------------------------------------------------
MODES = {  # name -> (processes, connections each, batched)
    "single spends, 8 clients": (2, 4, False),
    "batches of 1,000, 1 client": (1, 1, True),
    "batches of 1,000, 4 clients": (4, 1, True),
}


@dataclass
class Database:
    label: str
    url: str
    database: str | None  # the PostgreSQL database's name; None on SQLite
    pg_admin_url: str
    server: bench_run.Server | None = None
    sent_keys: int = 0
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    busy: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def _key(self) -> tuple[str, str]:
        self.sent_keys += 1
        return f"bench-{self.sent_keys % USERS:04d}", f"k-{self.sent_keys}"

    def singles(self, n: int) -> list[Item]:
        auth = {"Authorization": f"Bearer {token(['service'])}", "Content-Type": "application/json"}
        body = json.dumps({"credits": "0.01", "reason": "bench"}).encode()
        out = []
        for _ in range(n):
            user, key = self._key()
            out.append((f"/api/v1/admin/users/{user}/wallet/spend", body, {**auth, "Idempotency-Key": key}))
        return out

    def batches(self, n: int) -> list[Item]:
        auth = {"Authorization": f"Bearer {token(['service'])}", "Content-Type": "application/json"}
        out = []
        for _ in range(n):
            spends = []
            for _ in range(BATCH):
                user, key = self._key()
                spends.append({"user_id": user, "credits": "0.01", "reason": "bench", "idempotency_key": key})
            out.append(("/api/v1/admin/spends", json.dumps({"spends": spends}).encode(), auth))
        return out

    def grants(self) -> list[Item]:
        auth = {"Authorization": f"Bearer {token(['admin'])}", "Content-Type": "application/json"}
        body = json.dumps({"credits": FUND, "reason": "bench funds"}).encode()
        return [(f"/api/v1/admin/users/bench-{u:04d}/wallet/grant", body, {**auth, "Idempotency-Key": f"fund-{u}"})
                for u in range(USERS)]

    def cpu(self) -> float:
        assert self.server is not None
        used = bench_run.proc_cpu(self.server.proc.pid)
        if self.database is not None:
            import psycopg

            with psycopg.connect(self.pg_admin_url, autocommit=True) as admin:
                rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database])
                used += sum(bench_run.proc_cpu(int(r[0])) for r in rows)
        return used

    def send(self, items: list[Item], processes: int, conns: int, expected: int) -> Sent:
        assert self.server is not None
        sent = drive(self.server.port, items, processes, conns)
        if sent.tallied != expected or sent.errors:
            self.problems.append(f"{sent.tallied} of {expected} spent; {sent.errors[:2]}")
            log(f"  !! {self.label}: {sent.tallied} of {expected} spent; {sent.errors[:2]}")
        return sent

    def block(self, mode: str, singles: int, batches: int) -> None:
        processes, conns, batched = MODES[mode]
        items = self.batches(batches) if batched else self.singles(singles)
        expected = batches * BATCH if batched else singles
        cpu0, sys0 = self.cpu(), bench_run.system_cpu()
        sent = self.send(items, processes, conns, expected)
        cpu1, sys1 = self.cpu(), bench_run.system_cpu()
        rate = sent.tallied / sent.elapsed
        self.rates.setdefault(mode, []).append(rate)
        self.cpu_ms.setdefault(mode, []).append((cpu1 - cpu0) / max(sent.tallied, 1) * 1000)
        self.busy.setdefault(mode, []).append((sys1[0] - sys0[0]) / max(sys1[1] - sys0[1], 1))
        log(f"  {self.label} {mode}: {sent.tallied} spends in {sent.elapsed:.2f} s = {rate:.0f}/s; server CPU "
            f"{self.cpu_ms[mode][-1]:.3f} ms/spend; machine busy {self.busy[mode][-1]:.0%}; load {loadavg()}")


def run_database(db: Database, work: Path, rounds: int, singles: int, batches: int) -> list[tuple[str, bool, str]]:
    res = bench_run.wallet_cli(db.url, "migrate", workdir=work)
    if res.returncode != 0:
        raise RuntimeError(f"wallet migrate: {res.stderr}")
    port = bench_run.free_port()
    argv = [bench_run.WALLET, "serve", "--port", str(port), "--threads", str(bench_run.THREADS)]
    db.server = bench_run.Server(f"batch-{db.label.lower()}", argv, bench_run.wallet_env(db.url), port, work)
    try:
        drive(port, db.grants(), 2, 4)
        db.send(db.singles(USERS), 2, 4, USERS)  # warm-up
        db.send(db.batches(1), 1, 1, BATCH)
        modes = list(MODES)
        for rnd in range(rounds):
            log(f"{db.label}: round {rnd + 1} of {rounds}")
            for mode in modes if rnd % 2 == 0 else modes[::-1]:
                db.block(mode, singles, batches)
    finally:
        db.server.stop()
    return verify(db, work)


def verify(db: Database, work: Path) -> list[tuple[str, bool, str]]:
    from sqlalchemy import text

    from adapters.sql.engine import create_wallet_engine

    engine = create_wallet_engine(db.url)
    try:
        with engine.connect() as conn:
            spends, keys = conn.execute(
                text("SELECT count(*), count(DISTINCT reference_id) FROM credit_transactions WHERE kind = 'spend'")
            ).one()
    finally:
        engine.dispose()
    res = bench_run.wallet_cli(db.url, "verify", workdir=work)
    checks = [
        (f"{db.label}: every spend sent was spent", not db.problems, "; ".join(db.problems)[:300]),
        (f"{db.label}: one spend transaction per key sent", spends == keys == db.sent_keys,
         f"{spends} spends, {keys} keys, {db.sent_keys} sent"),
        (f"{db.label}: `wallet verify`", res.returncode == 0, (res.stdout or res.stderr).strip()[:160]),
    ]
    for what, ok, detail in checks:
        log(f"check {'OK' if ok else 'FAILED'}: {what} ({detail})")
    return checks


def render(dbs: list[Database]) -> str:
    single = "single spends, 8 clients"
    lines = [
        "| database | how | committed spends/s (median) | per round | x single spends | server CPU per spend "
        "| machine busy |",
        "|---|---|---|---|---|---|---|",
    ]
    for db in dbs:
        base = statistics.median(db.rates[single])
        for mode, rates in db.rates.items():
            ratio = statistics.median(rates) / base
            target = "" if mode == single else f" ({'PASS' if ratio >= TARGET else 'below'} {TARGET:.0f}x)"
            lines.append(
                f"| {db.label} | {mode} | {statistics.median(rates):.0f} | {', '.join(f'{r:.0f}' for r in rates)} "
                f"| {ratio:.1f}{target} | {statistics.median(db.cpu_ms[mode]):.3f} ms "
                f"| {statistics.median(db.busy[mode]):.0%} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--singles", type=int, default=2000, help="single spends per block (default 2000)")
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 per block (default 20)")
    args = parser.parse_args()
    if not bench_run.WALLET:
        print("bench: the `wallet` command is not installed next to this Python (pip install -e .)")
        return 2
    started = time.monotonic()
    log(f"load average at the start: {loadavg()} ({os.cpu_count()} CPUs)")
    dbs: list[Database] = []
    checks: list[tuple[str, bool, str]] = []
    with tempfile.TemporaryDirectory(prefix="wallet-batch-bench-") as tmp:
        work = Path(tmp)
        if not args.sqlite_only:
            pg = bench_run.Postgres(args.pg_admin_url)
            try:
                url = pg.create("batch")
                db = Database("PostgreSQL", url, url.rsplit("/", 1)[1], args.pg_admin_url)
                checks += run_database(db, work, args.rounds, args.singles, args.batches)
                dbs.append(db)
            finally:
                pg.drop_all()
        db = Database("SQLite", f"sqlite:///{work / 'batch.sqlite3'}", None, args.pg_admin_url)
        checks += run_database(db, work, args.rounds, args.singles, args.batches)
        dbs.append(db)
    print(f"\n{time.monotonic() - started:.0f} s; load average at the end: {loadavg()} ({os.cpu_count()} CPUs)")
    print(render(dbs))
    failed = [what for what, ok, _ in checks if not ok]
    print(f"\nchecks: {len(checks) - len(failed)} passed, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
