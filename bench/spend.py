"""A single spend over HTTP against a minimal correct spend handler (issue 14's targets), in one run.

    python bench/spend.py                  # PostgreSQL (a throw-away database) and SQLite
    python bench/spend.py --pg-only --rounds 6 --block 800

The wallet: `wallet serve` (waitress, 8 threads) as shipped, `POST /api/v1/admin/users/{user}/wallet/spend`
with a service token. The baseline: bench/spend_baseline_server.py on the same route, the same token
check, the same body and Idempotency-Key, and one transaction (insert the key, then a conditional
balance update). Each side has its own database; both are funded first (1,000 wallets of 1,000,000
credits; the wallet by one admin grant each), then warmed up with 200 spends.

Load: 8 concurrent keep-alive clients (2 processes of 4 connections, bench/http_load.py), spends
of 1.00 credit, each with its own key, either spread over the 1,000 wallets ("spread") or all on one
wallet ("hot"). Rounds alternate the order (wallet, baseline; baseline, wallet; ...), one block of
`block` spends per side, scenario and round. Printed: the ratio of the median rates (wallet / baseline)
per scenario, the per-round ratios, the wallet's hot rate / spread rate, p50 and p99 latency of each
side (pooled over the rounds) and the server CPU per spend (the server process plus its PostgreSQL
backends, whose share is shown apart). Targets (issue 14, PostgreSQL): wallet >= 0.8x the baseline
in both scenarios; hot >= 0.5x spread; the wallet's p99 <= 2x the baseline's. Checked afterwards:
every spend answered 201, each side's hot wallet lost exactly what was spent, `wallet verify` passes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import http_load as client  # bench/http_load.py: the 8-client keep-alive driver and tokens
import run as bench_run  # bench/run.py: servers, throw-away databases, CPU clocks

USERS = 1000
FUND = 1_000_000
HOT = "bench-0000"
SCENARIOS = ("spread", "hot")
WALLET, BASELINE = "wallet", "baseline"
TARGET_RATE, TARGET_HOT, TARGET_P99 = 0.8, 0.5, 2.0

log = client.log


@dataclass
class Side:
    name: str
    url: str
    database: str | None
    pg_admin_url: str
    group_commit: str | None = None  # WALLET_GROUP_COMMIT for the wallet's server; None: its default
    server: bench_run.Server | None = None
    n: int = 0
    spent: Counter[str] = field(default_factory=Counter)  # 201s per user
    rates: dict[str, list[float]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    db_ms: dict[str, list[float]] = field(default_factory=dict)  # the PostgreSQL backends' share of cpu_ms
    problems: list[str] = field(default_factory=list)

    def items(self, scenario: str, count: int) -> tuple[list[client.Item], list[str]]:
        auth = client.token(["service"])
        body = json.dumps({"credits": "1.00", "reason": "bench"}).encode()
        items, users = [], []
        for _ in range(count):
            self.n += 1
            user = HOT if scenario == "hot" else f"bench-{self.n % USERS:04d}"
            headers = {"Authorization": f"Bearer {auth}", "Content-Type": "application/json",
                       "Idempotency-Key": f"spend-{self.name}-{self.n}"}
            items.append((f"/api/v1/admin/users/{user}/wallet/spend", body, headers))
            users.append(user)
        return items, users

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the server process, and of its database's PostgreSQL backends (0 on SQLite)."""
        assert self.server is not None
        used = bench_run.proc_cpu(self.server.proc.pid)
        backends = 0.0
        if self.database is not None:
            import psycopg

            with psycopg.connect(self.pg_admin_url, autocommit=True) as admin:
                rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database])
                backends = sum(bench_run.proc_cpu(int(r[0])) for r in rows)
        return used, backends

    def send(self, scenario: str, count: int) -> client.Sent:
        assert self.server is not None
        items, users = self.items(scenario, count)
        sent = client.drive(self.server.port, items)
        if set(sent.statuses) != {201} or sent.errors:
            self.problems.append(f"{scenario}: statuses {dict(sent.statuses)} of {count}; {sent.errors[:2]}")
            log(f"  !! {self.name} {scenario}: statuses {dict(sent.statuses)}; {sent.errors[:2]}")
        if sent.statuses[201] == count:
            self.spent.update(users)
        return sent

    def block(self, scenario: str, count: int) -> None:
        (server0, db0) = self.cpu()
        sent = self.send(scenario, count)
        (server1, db1) = self.cpu()
        self.rates.setdefault(scenario, []).append(count / sent.elapsed)
        self.latencies.setdefault(scenario, []).extend(sent.latencies)
        self.cpu_ms.setdefault(scenario, []).append((server1 - server0 + db1 - db0) / count * 1000)
        self.db_ms.setdefault(scenario, []).append((db1 - db0) / count * 1000)
        log(f"  {self.name} {scenario}: {count} spends in {sent.elapsed:.2f} s = {count / sent.elapsed:.0f}/s; "
            f"p99 {pct(sent.latencies, 99) * 1000:.1f} ms; server CPU {self.cpu_ms[scenario][-1]:.2f} ms/spend; "
            f"load {client.loadavg()}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else float("nan")


def start(side: Side, work: Path) -> None:
    port = bench_run.free_port()
    threads = ["--port", str(port), "--threads", str(bench_run.THREADS)]
    if side.name == WALLET:
        res = bench_run.wallet_cli(side.url, "migrate", workdir=work)
        if res.returncode != 0:
            raise RuntimeError(f"wallet migrate: {res.stderr}")
        env = bench_run.wallet_env(side.url)
        if side.group_commit is not None:
            env["WALLET_GROUP_COMMIT"] = side.group_commit
        side.server = bench_run.Server(f"spend-{side.name}", [bench_run.WALLET, "serve", *threads], env, port, work)
        fund_wallet(side)
    else:
        db = side.url.replace("postgresql+psycopg://", "postgresql://")
        subprocess.run([bench_run.PYTHON, str(bench_run.BENCH / "spend_baseline_server.py"), "--db", db,
                        "--fund", str(USERS), str(FUND)], check=True)
        side.server = bench_run.Server(
            f"spend-{side.name}",
            [bench_run.PYTHON, str(bench_run.BENCH / "spend_baseline_server.py"), "--db", db, *threads,
             "--jwt-secret", bench_run.JWT_SECRET],
            bench_run.wallet_env(side.url), port, work)


def fund_wallet(side: Side) -> None:
    assert side.server is not None
    auth = client.token(["admin"])
    body = json.dumps({"credits": str(FUND), "reason": "bench funding"}).encode()
    items = [(f"/api/v1/admin/users/bench-{n:04d}/wallet/grant", body,
              {"Authorization": f"Bearer {auth}", "Content-Type": "application/json", "Idempotency-Key": f"fund-{n}"})
             for n in range(USERS)]
    sent = client.drive(side.server.port, items)
    if sent.statuses[201] != USERS:
        raise RuntimeError(f"funding failed: {dict(sent.statuses)} {sent.errors[:2]}")


def balance_of(side: Side, user: str) -> int:
    """The user's balance in hundredths, read from the side's database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(side.url)
    try:
        with engine.connect() as conn:
            if side.name == BASELINE:
                sql = text("SELECT balance FROM bench_spend_balances WHERE user_id = :u")
                row = conn.execute(sql, {"u": user}).one()
                return int(row[0])
        return -1
    finally:
        engine.dispose()


def run_database(label: str, sides: list[Side], work: Path, rounds: int, block: int) -> tuple[list[str], list[str]]:
    for side in sides:
        start(side, work)
    lines: list[str] = []
    checks: list[str] = []
    try:
        for side in sides:
            side.send("spread", 200)  # warm-up
            side.spent.clear()
        for scenario in SCENARIOS:
            log(f"{label}: {scenario}, {rounds} rounds of {block} spends per side (8 clients)")
            for rnd in range(rounds):
                for side in sides if rnd % 2 == 0 else sides[::-1]:
                    side.block(scenario, block)
        wallet, baseline = sides
        for scenario in SCENARIOS:
            w, b = wallet.rates[scenario], baseline.rates[scenario]
            ratio = statistics.median(w) / statistics.median(b)
            p99w, p99b = pct(wallet.latencies[scenario], 99), pct(baseline.latencies[scenario], 99)
            p50w, p50b = pct(wallet.latencies[scenario], 50), pct(baseline.latencies[scenario], 50)
            rounds_text = ", ".join(f"{x / y:.2f}" for x, y in zip(w, b, strict=True))
            cpu_w, cpu_b = statistics.median(wallet.cpu_ms[scenario]), statistics.median(baseline.cpu_ms[scenario])
            db_w, db_b = statistics.median(wallet.db_ms[scenario]), statistics.median(baseline.db_ms[scenario])
            lines.append(
                f"| {label} | {scenario} | {statistics.median(w):.0f} | {statistics.median(b):.0f} | **{ratio:.2f}** "
                f"({'PASS' if ratio >= TARGET_RATE else 'FAIL'} >= {TARGET_RATE}) | {rounds_text} | "
                f"{p50w * 1000:.1f} / {p50b * 1000:.1f} ms | {p99w * 1000:.1f} / {p99b * 1000:.1f} ms = "
                f"{p99w / p99b:.2f}x ({'PASS' if p99w / p99b <= TARGET_P99 else 'FAIL'} <= {TARGET_P99}) | "
                f"{cpu_w:.2f} / {cpu_b:.2f} ms (database {db_w:.2f} / {db_b:.2f}) |"
            )
        hot = statistics.median(wallet.rates["hot"]) / statistics.median(wallet.rates["spread"])
        base_hot = statistics.median(baseline.rates["hot"]) / statistics.median(baseline.rates["spread"])
        lines.append(f"| {label} | hot / spread | wallet {hot:.2f} ({'PASS' if hot >= TARGET_HOT else 'FAIL'} >= "
                     f"{TARGET_HOT}) | baseline {base_hot:.2f} | | | | | |")
    finally:
        for side in sides:
            if side.server is not None:
                side.server.stop()
    for side in sides:
        checks.append(f"{'OK' if not side.problems else 'FAILED'}: {label} {side.name}: every spend answered 201"
                      + (f" ({'; '.join(side.problems)[:300]})" if side.problems else ""))
    baseline = sides[1]
    expected = FUND * 100 - baseline.spent[HOT] * 100
    got = balance_of(baseline, HOT)
    checks.append(f"{'OK' if got == expected else 'FAILED'}: {label} baseline: the hot wallet lost exactly what was "
                  f"spent ({got / 100} left, {expected / 100} expected)")
    wallet = sides[0]
    res = bench_run.wallet_cli(wallet.url, "balance", HOT, workdir=work)
    left = (res.stdout or "").strip()
    want = f"{FUND - wallet.spent[HOT]}"
    checks.append(f"{'OK' if want in left.replace(',', '') else 'FAILED'}: {label} wallet: the hot wallet lost exactly "
                  f"what was spent (`wallet balance`: {left[:80]!r}; {want} expected)")
    res = bench_run.wallet_cli(wallet.url, "verify", workdir=work)
    checks.append(f"{'OK' if res.returncode == 0 else 'FAILED'}: {label} wallet: `wallet verify` "
                  f"({(res.stdout or res.stderr).strip()[:120]})")
    for check in checks:
        log(f"check {check}")
    return lines, checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--pg-only", action="store_true")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=800)
    parser.add_argument("--group-commit", choices=("true", "false"), default=None,
                        help="WALLET_GROUP_COMMIT for the wallet's server (default: its own default)")
    args = parser.parse_args()
    if not bench_run.WALLET:
        print("bench: the `wallet` command is not installed next to this Python (pip install -e .)")
        return 2
    began = time.monotonic()
    log(f"load average at the start: {client.loadavg()}")
    lines: list[str] = []
    checks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wallet-spend-") as tmp:
        work = Path(tmp)
        if not args.sqlite_only:
            pg = bench_run.Postgres(args.pg_admin_url)
            try:
                sides = []
                for name in (WALLET, BASELINE):
                    url = pg.create("spend")
                    sides.append(Side(name, url, url.rsplit("/", 1)[1], args.pg_admin_url, args.group_commit))
                got = run_database("PostgreSQL", sides, work, args.rounds, args.block)
                lines += got[0]
                checks += got[1]
            finally:
                pg.drop_all()
        if not args.pg_only:
            sides = [Side(name, f"sqlite:///{work / f'{name}.sqlite3'}", None, args.pg_admin_url, args.group_commit)
                     for name in (WALLET, BASELINE)]
            got = run_database("SQLite", sides, work, args.rounds, args.block)
            lines += got[0]
            checks += got[1]
    print(f"\n{time.monotonic() - began:.0f} s; load average at the end: {client.loadavg()}")
    print("| database | scenario | wallet spends/s | baseline | ratio of medians (target) | per-round ratios "
          "| p50 wallet / baseline | p99 wallet / baseline (target) | server CPU per spend, wallet / baseline |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    failed = [c for c in checks if not c.startswith("OK")]
    print(f"\nchecks: {len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
