"""Where a webhook grant's cost comes from, measured in-process (no HTTP, one thread), each effect as
an interleaved A/B against its own baseline in the same run. Evidence for docs/performance.md.

    python bench/probe.py                 # SQLite and PostgreSQL (throw-away databases)
    python bench/probe.py --sqlite-only

1. Statements per grant: every statement sent (SQLAlchemy's and those the write path sends to the
   driver itself; executemany counts once) and the transaction control, for one
   payment_intent.succeeded.
2. The library's handle_stripe_webhook vs the raw transaction bench/baseline_server.py runs
   (signature check + JSON + 2 statements), per grant.
3. The floor under any rewrite of the wallet's Python: the statements one grant sent (item 1, with
   their parameters), sent again by hand on a plain driver connection for new payments, vs the
   baseline's two statements, in CPU time per grant (this process, plus the PostgreSQL server process
   serving the connection, read from /proc/PID/schedstat). The difference is what the database itself
   spends on the rows a grant writes (the transaction, its lot and two postings, the top-up's status,
   the event log) that the baseline does not; no change to the wallet's Python can take it away.
4. A grant to a user who already has 1,000 live paid lots vs to one with a single lot (a grant reads
   only the lots in debt or expired, so this should be ~1x).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import secrets
import sqlite3
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
from wallet_core.refunds import top_up_lot_id  # noqa: E402
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
            tx.top_ups.add(TopUp(id=d.top_up_id, user_id=user, amount=Usd(1000), currency="usd",
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
    txs: list[dict[str, object]] = []
    legs: list[dict[str, object]] = []
    lots: list[dict[str, object]] = []
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


def show(title: str, res: dict[str, Any], unit: str = "ms") -> None:
    if unit == "ms":
        a, b = f"{res['a_ms']:.2f} ms", f"{res['b_ms']:.2f} ms"
    else:
        a, b = f"{res['a_ms'] * 1000:.0f} {unit}", f"{res['b_ms'] * 1000:.0f} {unit}"
    print(f"  {title}: {res['a']} {a} vs {res['b']} {b} per grant = {res['ratio']:.2f}x"
          + (f" (+{(res['a_ms'] - res['b_ms']) * 1000:.0f} {unit})" if unit != "ms" else ""))


Sent = tuple[str, Any, bool]  # a statement as the driver got it: text, parameters, executemany


def count_statements(engine: Engine, wallet: Wallet, d: Delivery) -> tuple[Counter[str], list[Sent]]:
    """What one grant sends: counted by kind, and every statement with its parameters, in order."""
    counts: Counter[str] = Counter()
    sent: list[Sent] = []

    def on_execute(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        sent.append((statement, params, executemany))
        word = statement.strip().split()[0].upper()
        counts["statements"] += 1
        counts[f"  {word}{' (executemany)' if executemany else ''}"] += 1

    def on_commit(conn: Any) -> None:
        counts["commits"] += 1

    def on_begin(conn: Any) -> None:
        counts["begins"] += 1

    # The write path sends its statements to the driver itself (adapters/sql/driver.py): count those too.
    sent_direct = (Driver._execute, Driver.many)

    def direct(sql: Sql, params: Any, executemany: bool = False) -> None:
        text = sql.postgresql if engine.dialect.name == "postgresql" else sql.sqlite
        on_execute(None, None, text, params, None, executemany)

    def execute(self: Driver, sql: Sql, params: Any) -> Any:
        direct(sql, params)
        return sent_direct[0](self, sql, params)

    def many(self: Driver, sql: Sql, rows: Any) -> None:
        batch = list(rows)
        if batch:  # an empty batch is not sent
            direct(sql, batch, executemany=True)
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
    return counts, sent


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


def cpu_clock(conn: Any | None) -> Callable[[], float]:
    """Seconds of CPU this thread has used, plus, for a PostgreSQL connection on this machine, its
    server process's (from /proc/PID/schedstat, in nanoseconds)."""
    if conn is None or isinstance(conn, sqlite3.Connection):
        return time.thread_time
    stat = Path(f"/proc/{conn.info.backend_pid}/schedstat")
    return lambda: time.thread_time() + int(stat.read_text().split()[0]) / 1e9


def raw_connection(url: str) -> Any:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=10.0)
        conn.execute("PRAGMA foreign_keys=ON")  # as the wallet's engine (its WAL mode is in the file)
        return conn
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def remap(value: Any, pattern: re.Pattern[str], new: dict[str, str]) -> Any:
    """`value` with every old id in it (in strings, JSON text included) replaced by its new one."""
    if isinstance(value, str):
        return pattern.sub(lambda m: new[m.group(0)], value)
    if isinstance(value, dict):
        return {k: remap(v, pattern, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(remap(v, pattern, new) for v in value)
    return value


def grant_ids(d: Delivery, booking_id: str) -> tuple[str, ...]:
    """Every id one grant's statements carry: its payment, top-up, user, event, lot and booking."""
    return (d.payment_intent_id, d.top_up_id, d.user_id, load.event_id("probe", d.payment_intent_id),
            top_up_lot_id(d.payment_intent_id), booking_id)


def replay_runner(url: str, engine: Engine, sent: list[Sent], d0: Delivery, users: list[str],
                  block: int) -> Callable[[], float]:
    """The statements one grant sent (`sent`, for `d0`), sent again by hand for new payments: the
    database's work for a grant with none of the wallet's Python. CPU seconds per grant (this thread
    and, on PostgreSQL, the server process)."""
    conn = raw_connection(url)
    sqlite = isinstance(conn, sqlite3.Connection)
    found = {m.group(0) for _, params, _ in sent for m in re.finditer(r"ctx_[0-9a-f]+", repr(params))}
    assert len(found) == 1, found
    # The outbound events the grant told (outbound_events.py: evt_ and 32 hex digits), in their
    # parameters or, on PostgreSQL, in the text of the INSERT sent with the COMMIT.
    told = sorted({m.group(0) for text, params, _ in sent
                   for m in re.finditer(r"evt_[0-9a-f]{32}", text + repr(params))})
    olds = (*grant_ids(d0, found.pop()), *told)
    pattern = re.compile("|".join(re.escape(v) for v in sorted(olds, key=len, reverse=True)))
    clock = cpu_clock(conn)

    def run() -> float:
        batch = []
        for d in pending(engine, [users[i % len(users)] for i in range(block)]):
            fresh = (*grant_ids(d, f"ctx_{next(_seq):032x}"), *(f"evt_{next(_seq):032x}" for _ in told))
            new = dict(zip(olds, fresh, strict=True))
            batch.append([(remap(text, pattern, new), remap(params, pattern, new), many)
                          for text, params, many in sent])
        before = count_rows(engine)
        t0, client0 = clock(), time.thread_time()
        for statements in batch:
            conn.execute("BEGIN IMMEDIATE" if sqlite else "BEGIN")
            for text, params, many in statements:
                if many:
                    cursor = conn.cursor()
                    cursor.executemany(text, params)
                    cursor.close()
                else:
                    cursor = conn.execute(text, params)
                    if cursor.description is not None:  # it returns rows: read them, as the wallet does
                        cursor.fetchall()
            conn.execute("COMMIT")
        spent, client = clock() - t0, time.thread_time() - client0
        assert count_rows(engine) == before + block, "every replayed grant wrote its ledger row"
        CLIENT_SHARE.append(client / spent)
        return spent / block

    return run


CLIENT_SHARE: list[float] = []  # of the replayed statements' CPU, the share spent in this process


def count_rows(engine: Engine) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM credit_transactions")).scalar_one())


def baseline_sql_runner(url: str, users: list[str], block: int) -> Callable[[], float]:
    """bench/baseline_server.py's transaction alone (no signature, no JSON): CPU seconds per grant."""
    store = Store(url)
    conn = store.connect()
    clock = cpu_clock(conn)

    def run() -> float:
        refs = [f"pi_sql_{next(_seq):08d}" for _ in range(block)]
        t0 = clock()
        for i, ref in enumerate(refs):
            assert store.grant(ref, users[i % len(users)], 100_000)
        return (clock() - t0) / block

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

    d0 = pending(engine, ["user0001"])[0]
    counts, sent = count_statements(engine, wallet, d0)
    print("  per grant: " + ", ".join(f"{k.strip()} {v}" for k, v in counts.items() if not k.startswith("  ")))
    print("    " + ", ".join(f"{k.strip()} {v}" for k, v in counts.items() if k.startswith("  ")))

    base_url = url if label == "PostgreSQL" else url.replace(".sqlite3", "-base.sqlite3")
    show("library grant vs the raw baseline transaction",
         ab("wallet", wallet_runner(engine, wallet, users, block), "baseline", baseline_runner(base_url, users, block),
            blocks))

    # The floor under any rewrite of the wallet's Python: what the database itself spends on the rows a
    # grant writes (the wallet's statements, replayed by hand) against the baseline's two statements.
    show("the database's work for a grant (CPU, statements replayed by hand) vs the baseline's transaction",
         ab("wallet's statements", replay_runner(url, engine, sent, d0, users, block),
            "baseline's", baseline_sql_runner(base_url, users, block), blocks), unit="us CPU")
    if label == "PostgreSQL":
        print(f"    of the wallet's, {statistics.median(CLIENT_SHARE):.0%} in this process (the driver), the rest "
              "in the PostgreSQL server process")
    CLIENT_SHARE.clear()

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
