"""Where a webhook grant's cost comes from, measured in-process (no HTTP, one thread), each effect as
an interleaved A/B against its own baseline in the same run. Evidence for docs/performance.md.

    python bench/probe.py                 # SQLite and PostgreSQL (throw-away databases)
    python bench/probe.py --sqlite-only

1. Statements per grant: every statement sent (SQLAlchemy's and those the write path sends to the
   driver itself; executemany counts once) and the transaction control, for one
   payment_intent.succeeded.
2. The library's handle_stripe_webhook vs the raw transaction bench/baseline_server.py runs
   (signature check + JSON + 2 statements), per grant.
3. A grant to a user who already has 1,000 live paid lots vs to one with a single lot (a grant reads
   only the lots in debt or expired, so this should be ~1x).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
if (BENCH.parent / "src").is_dir():
    sys.path.insert(1, str(BENCH.parent / "src"))

import load  # noqa: E402
import stripe  # noqa: E402
from baseline_server import Store  # noqa: E402
from load import Delivery  # noqa: E402
from sqlalchemy import Engine, event  # noqa: E402

from adapters.sql.driver import Driver, Sql  # noqa: E402
from adapters.sql.engine import create_wallet_engine  # noqa: E402
from adapters.sql.migrate import upgrade  # noqa: E402
from adapters.sql.unit_of_work import SqlUnitOfWork, sql_unit_of_work_factory  # noqa: E402
from adapters.stripe_gateway import StripePaymentGateway  # noqa: E402
from entrypoints.library import Wallet  # noqa: E402
from wallet_core.money import Credits, Usd  # noqa: E402
from wallet_core.topups import TopUp, TopUpPolicy, TopUpStatus  # noqa: E402

SECRET = "whsec_probe_" + secrets.token_hex(8)
_seq = iter(range(10**9))


def pending(engine: Engine, users: list[str]) -> list[Delivery]:
    """One pending top-up per entry of `users`, through the SQL adapter."""
    out = []
    now = dt.datetime.now(dt.UTC)
    with SqlUnitOfWork(engine) as tx:
        for user in users:
            i = next(_seq)
            d = Delivery(f"pi_probe_{i:08d}", f"tu_probe_{i:08d}", user, 1000)
            tx.ledger.add_top_up(TopUp(id=d.top_up_id, user_id=user, amount=Usd(1000), currency="usd",
                                       credits=Credits(100_000), status=TopUpStatus.PENDING,
                                       payment_intent_id=d.payment_intent_id, created_at=now))
            out.append(d)
        tx.commit()
    return out


def many_lots(engine: Engine, user: str, n: int) -> None:
    """`n` paid top-ups already granted to `user`, written in bulk and consistently (a transaction, its
    two postings and its lot each; the wallet row holds the sum), as n webhooks would have left them."""
    from adapters.sql.tables import credit_lots, credit_transactions, postings, wallets

    now = dt.datetime.now(dt.UTC)
    txs, legs, lots = [], [], []
    for i in range(n):
        at = now - dt.timedelta(days=1, seconds=-i)
        tx_id, lot_id = f"ctx_many_{i:06d}", f"lot_many_{i:06d}"
        txs.append({"id": tx_id, "user_id": user, "kind": "top_up", "credits": 100_000,
                    "balance_after": 100_000 * (i + 1), "reference_id": f"pi_many_{i:06d}", "reason": "top-up",
                    "actor": "stripe", "created_at": at, "held_change": 0, "metadata": None, "hold_id": None})
        legs += [{"transaction_id": tx_id, "account": "wallet", "user_id": user, "lot_id": lot_id, "amount": 100_000},
                 {"transaction_id": tx_id, "account": "stripe_funding", "user_id": None, "lot_id": None,
                  "amount": -100_000}]
        lots.append({"id": lot_id, "user_id": user, "kind": "paid", "granted": 100_000, "remaining": 100_000,
                     "held": 0, "created_at": at, "expires_at": None})
    with engine.begin() as conn:
        conn.execute(wallets.insert(), {"user_id": user, "available": 100_000 * n, "held": 0, "updated_at": now})
        conn.execute(credit_transactions.insert(), txs)
        conn.execute(postings.insert(), legs)
        conn.execute(credit_lots.insert(), lots)


def signed(d: Delivery) -> tuple[bytes, str]:
    body = load.event_body(d, load.event_id("probe", d.payment_intent_id))
    return body.encode(), stripe.WebhookSignature.generate_signature_header(body, SECRET)


def make_wallet(engine: Engine) -> Wallet:
    policy = TopUpPolicy(Usd(100), Usd(50_000), Decimal(100))
    return Wallet(uow=sql_unit_of_work_factory(engine), gateway=StripePaymentGateway(None, [SECRET]), policy=policy)


def grant_all(wallet: Wallet, items: list[tuple[bytes, str]]) -> float:
    """Seconds per grant."""
    t0 = time.perf_counter()
    for body, sig in items:
        outcome = wallet.handle_stripe_webhook(body, sig)
        assert outcome.outcome == "granted", outcome
    return (time.perf_counter() - t0) / len(items)


def ab(name_a: str, run_a: Callable[[], float], name_b: str, run_b: Callable[[], float], blocks: int) -> dict[str, Any]:
    """Interleaved blocks a b b a a b ...; medians of the per-block seconds-per-grant."""
    a: list[float] = []
    b: list[float] = []
    for i in range(blocks):
        for which in ("ab" if i % 2 == 0 else "ba"):
            (a if which == "a" else b).append(run_a() if which == "a" else run_b())
    ma, mb = statistics.median(a), statistics.median(b)
    return {"a": name_a, "b": name_b, "a_ms": ma * 1000, "b_ms": mb * 1000, "ratio": ma / mb}


def show(title: str, res: dict[str, Any]) -> None:
    print(f"  {title}: {res['a']} {res['a_ms']:.2f} ms vs {res['b']} {res['b_ms']:.2f} ms per grant "
          f"= {res['ratio']:.2f}x")


def count_statements(engine: Engine, wallet: Wallet, d: Delivery) -> Counter[str]:
    counts: Counter[str] = Counter()

    def on_execute(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        word = statement.strip().split()[0].upper()
        counts["statements"] += 1
        counts[f"  {word}{' (executemany)' if executemany else ''}"] += 1

    def on_commit(conn: Any) -> None:
        counts["commits"] += 1

    def on_begin(conn: Any) -> None:
        counts["begins"] += 1

    # The write path sends its statements to the driver itself (adapters/sql/driver.py): count those too.
    sent_direct = (Driver._execute, Driver.many)

    def direct(sql: Sql, executemany: bool = False) -> None:
        text = sql.postgresql if engine.dialect.name == "postgresql" else sql.sqlite
        on_execute(None, None, text, None, None, executemany)

    def execute(self: Driver, sql: Sql, params: Any) -> Any:
        direct(sql)
        return sent_direct[0](self, sql, params)

    def many(self: Driver, sql: Sql, rows: Any) -> None:
        batch = list(rows)
        if batch:  # an empty batch is not sent
            direct(sql, executemany=True)
        sent_direct[1](self, sql, batch)

    Driver._execute, Driver.many = execute, many  # type: ignore[method-assign]
    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    event.listen(engine, "begin", on_begin)
    dialect = engine.dialect
    original_ping = dialect.do_ping

    def ping(dbapi_connection: Any) -> bool:
        counts["pool pre-pings"] += 1
        return bool(original_ping(dbapi_connection))

    dialect.do_ping = ping  # type: ignore[method-assign]
    try:
        body, sig = signed(d)
        assert wallet.handle_stripe_webhook(body, sig).outcome == "granted"
    finally:
        Driver._execute, Driver.many = sent_direct  # type: ignore[method-assign]
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "begin", on_begin)
        dialect.do_ping = original_ping  # type: ignore[method-assign]
    return counts


def baseline_runner(url: str, users: list[str], block: int) -> Callable[[], float]:
    store = Store(url)
    store.create_schema()
    conn = store.connect()
    rows = [(u, 0) for u in set(users)]
    if store.sqlite:
        conn.executemany("INSERT INTO bench_balances VALUES (?, ?) ON CONFLICT DO NOTHING", rows)
    else:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_balances VALUES (%s, %s) ON CONFLICT DO NOTHING", rows)
        conn.commit()
    from baseline_server import Webhook

    class Req:  # just enough of falcon.Request for Webhook.on_post
        def __init__(self, body: bytes, sig: str) -> None:
            import io

            self.bounded_stream = io.BytesIO(body)
            self._sig = sig

        def get_header(self, name: str) -> str:
            return self._sig

    class Resp:
        media: Any = None

    hook = Webhook(store, SECRET)

    def run() -> float:
        items = [signed(Delivery(f"pi_base_{next(_seq):08d}", "tu", users[i % len(users)], 1000))
                 for i in range(block)]
        t0 = time.perf_counter()
        for body, sig in items:
            resp = Resp()
            hook.on_post(Req(body, sig), resp)  # type: ignore[arg-type]
            assert resp.media["outcome"] == "granted"
        return (time.perf_counter() - t0) / block

    return run


def wallet_runner(engine: Engine, wallet: Wallet, users: list[str], block: int) -> Callable[[], float]:
    def run() -> float:
        items = [signed(d) for d in pending(engine, [users[i % len(users)] for i in range(block)])]
        return grant_all(wallet, items)

    return run


def probe(url: str, label: str, blocks: int, block: int) -> None:
    print(f"{label}:")
    engine = create_wallet_engine(url)
    upgrade(engine)
    wallet = make_wallet(engine)
    users = [f"user{i:04d}" for i in range(200)]
    grant_all(wallet, [signed(d) for d in pending(engine, users)])  # every user has one lot; warm caches

    counts = count_statements(engine, wallet, pending(engine, ["user0001"])[0])
    print("  per grant: " + ", ".join(f"{k.strip()} {v}" for k, v in counts.items() if not k.startswith("  ")))
    print("    " + ", ".join(f"{k.strip()} {v}" for k, v in counts.items() if k.startswith("  ")))

    base_url = url if label == "PostgreSQL" else url.replace(".sqlite3", "-base.sqlite3")
    show("library grant vs the raw baseline transaction",
         ab("wallet", wallet_runner(engine, wallet, users, block), "baseline", baseline_runner(base_url, users, block),
            blocks))

    # A user who has topped up 1,000 times: 1,000 live paid lots, all read by lock_wallet on each write.
    many_lots(engine, "many", 1000)
    small = max(10, block // 5)
    show("grant to a wallet with 1,000 live lots vs one with a few",
         ab("1,000 lots", wallet_runner(engine, wallet, ["many"], small),
            "few lots", wallet_runner(engine, wallet, users, small), blocks))
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--block", type=int, default=100, help="grants per block")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wallet-probe-"))
    probe(f"sqlite:///{work / 'probe.sqlite3'}", "SQLite", args.blocks, args.block)
    if not args.sqlite_only:
        import psycopg

        name = f"wallet_bench_probe_{secrets.token_hex(4)}"
        with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            probe(f"{args.pg_admin_url.rsplit('/', 1)[0]}/{name}", "PostgreSQL", args.blocks, args.block)
        finally:
            with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
