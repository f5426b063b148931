"""Group commit for the other writes (use_cases.write_group), in process: webhook grants from 8 threads
through the library, write groups on against off, in one run.

    python bench/write_groups.py                 # SQLite and PostgreSQL (a throw-away database)
    python bench/write_groups.py --sqlite-only --rounds 6

Each round grants `block` pending top-ups (payment_intent.succeeded, signed, 1,000 wallets round-robin)
from 8 threads calling Wallet.handle_stripe_webhook, once with WALLET_GROUP_WRITES off (each its own
transaction) and once on (default groups: 2 at a time, at most 64), the order alternating by round.
Printed per database: the ratio of median rates (on / off), each side's CPU per grant in this process,
and the mean group size. No HTTP: this isolates what sharing a transaction does to the write path
(bench/run.py --group-writes true|false measures it over HTTP against the raw baseline). Checked
afterwards: every delivery answered `granted`, one ledger row per payment, `wallet verify` passes.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
if (BENCH.parent / "src").is_dir():
    sys.path.insert(1, str(BENCH.parent / "src"))

import probe  # noqa: E402  (bench/probe.py: pending top-ups, signed deliveries)
from sqlalchemy import Engine  # noqa: E402

from adapters.sql.engine import create_wallet_engine  # noqa: E402
from adapters.sql.migrate import upgrade  # noqa: E402
from adapters.sql.unit_of_work import sql_unit_of_work_factory  # noqa: E402
from adapters.stripe_gateway import StripePaymentGateway  # noqa: E402
from wallet_core.money import Usd  # noqa: E402
from wallet_core.service import Wallet  # noqa: E402
from wallet_core.topups import TopUpPolicy  # noqa: E402
from wallet_core.use_cases.write_group import WriteGroup  # noqa: E402

THREADS = 8
USERS = [f"user{i:04d}" for i in range(1000)]
POLICY = TopUpPolicy(Usd(100), Usd(50_000), Decimal(100))


def wallet(engine: Engine, grouped: bool, sizes: list[int]) -> Wallet:
    made = Wallet(uow=sql_unit_of_work_factory(engine), gateway=StripePaymentGateway(None, [probe.SECRET]),
                  policy=POLICY, group_writes=False)
    if grouped:  # the service's own group, with a counter of group sizes
        made._writes = WriteGroup(sql_unit_of_work_factory(engine), on_group=sizes.append)
    return made


def grant(target: Wallet, engine: Engine, block: int) -> tuple[float, float]:
    """Grants per second, and CPU ms per grant (this process), for `block` deliveries from THREADS threads."""
    deliveries = [probe.signed(d) for d in probe.pending(engine, [USERS[i % len(USERS)] for i in range(block)])]
    chunks = [deliveries[n::THREADS] for n in range(THREADS)]
    failed: list[BaseException] = []

    def deliver(chunk: list[tuple[bytes, str]]) -> None:
        try:
            probe.grant_all(target, chunk)  # asserts each one answers `granted`
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    threads = [threading.Thread(target=deliver, args=(chunk,)) for chunk in chunks]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise SystemExit(f"a delivery was not granted: {failed[0]!r}")
    return block / (time.perf_counter() - wall0), (time.process_time() - cpu0) / block * 1000


def run(label: str, url: str, rounds: int, block: int) -> None:
    engine = create_wallet_engine(url, pool_size=THREADS, max_overflow=THREADS)
    upgrade(engine)
    sizes: list[int] = []
    sides = {False: wallet(engine, False, sizes), True: wallet(engine, True, sizes)}
    grant(sides[False], engine, 200)  # warm-up: every connection opened, statements prepared
    grant(sides[True], engine, 200)
    sizes.clear()
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for grouped in (False, True) if r % 2 == 0 else (True, False):
            rate, cpu = grant(sides[grouped], engine, block)
            rates[grouped].append(rate)
            cpus[grouped].append(cpu)
    ratio = statistics.median(rates[True]) / statistics.median(rates[False])
    per_round = ", ".join(f"{on / off:.2f}" for on, off in zip(rates[True], rates[False], strict=True))
    print(f"{label}: write groups on / off = {ratio:.2f} (per round {per_round}); "
          f"{statistics.median(rates[True]):.0f} vs {statistics.median(rates[False]):.0f} grants/s; "
          f"CPU per grant in process {statistics.median(cpus[True]):.2f} vs {statistics.median(cpus[False]):.2f} ms; "
          f"mean group {statistics.mean(sizes):.1f} ({sum(s > 1 for s in sizes) / len(sizes):.0%} of groups > 1)",
          flush=True)
    problems = sides[False].verify()
    print(f"  checks: every delivery granted; `wallet verify`: {'OK' if not problems else problems}")
    engine.dispose()
    if problems:
        raise SystemExit(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--pg-only", action="store_true")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--block", type=int, default=1600, help="grants per side and round")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {open('/proc/loadavg').read()[:14]}")
    if not args.pg_only:
        with tempfile.TemporaryDirectory() as work:
            run("SQLite", f"sqlite:///{Path(work) / 'groups.sqlite3'}", args.rounds, args.block)
    if not args.sqlite_only:
        name = f"wallet_bench_groups_{int(time.time())}"
        host = ["-h", "127.0.0.1", "-U", "postgres"]
        subprocess.run(["createdb", *host, name], check=True)
        try:
            run("PostgreSQL", f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", args.rounds, args.block)
        finally:
            subprocess.run(["dropdb", *host, "--if-exists", name], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
