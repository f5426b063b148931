"""A real `wallet serve` SIGKILLed while batches of 1,000 spends are in flight, started again, and every
batch sent again: every item is spent exactly once, no batch was ever partly written, and `wallet verify`
passes. On PostgreSQL and on SQLite.

Batches over four shared wallets go out from several threads; once two have answered, the server is
killed with the others in flight (their transactions open or about to be). After the kill the ledger
holds, for each batch, all of its spends or none. Then every batch is resent until it answers 200: the
items committed before the kill answer `replayed` with the transaction the first answer gave, the others
`spent`, and the ledger has exactly one spend per key.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_multiprocess import Server, _migrate, _query, _request, _token, _verify, _wallet

BATCHES = 10
ITEMS = 1000
SENDERS = 4
USERS = [f"kill-user-{n}" for n in range(4)]
KILL_AFTER = 2  # batches answered before the kill


def batch(n: int) -> list[dict[str, Any]]:
    return [{"user_id": USERS[(n + i) % len(USERS)], "credits": "0.01", "reason": "usage",
             "idempotency_key": f"kill-{n}-{i}", "metadata": {"batch": str(n)}} for i in range(ITEMS)]


def send(port: int, n: int, timeout: float = 60) -> tuple[int, Any]:
    body = json.dumps({"spends": batch(n)}).encode()
    headers = {"Authorization": f"Bearer {_token('usage-replayer', ['service'])}", "Content-Type": "application/json"}
    return _request(port, "POST", "/api/v1/admin/spends", body, headers, timeout=timeout)


def spends_per_batch(database_url: str) -> Counter[str]:
    rows = _query(database_url, "SELECT reference_id FROM credit_transactions WHERE kind = 'spend'")
    return Counter(str(ref).split("-")[1] for (ref,) in rows)


def _kill_mid_batch_then_resend(database_url: str, cwd: Path, tag: str) -> None:
    _migrate(database_url, cwd)
    for user in USERS:
        done = _wallet(database_url, cwd, "grant", user, "1000.00", "--reason", "funds")
        assert done.returncode == 0, done.stderr

    first: dict[int, list[dict[str, Any]]] = {}
    failed: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()
    queue = list(reversed(range(BATCHES)))
    in_flight = [0]
    server = Server(database_url, cwd, f"{tag}-first").wait_ready()
    port = server.port
    try:
        def sender() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    n = queue.pop()
                    in_flight[0] += 1
                try:
                    status, body = send(port, n)
                except (OSError, http.client.HTTPException):  # killed mid-answer
                    status, body = None, None
                with lock:
                    in_flight[0] -= 1
                    if status == 200:
                        first[n] = body["results"]
                        if len(first) >= KILL_AFTER:
                            enough.set()
                    else:
                        failed.append(n)

        threads = [threading.Thread(target=sender, daemon=True) for _ in range(SENDERS)]
        for t in threads:
            t.start()
        assert enough.wait(timeout=120), f"only {len(first)} batches answered:\n{server.output()}"
        with lock:
            in_flight_at_kill = in_flight[0]
        server.kill()
        for t in threads:
            t.join(timeout=60)
    finally:
        server.stop()

    assert in_flight_at_kill > 0 and failed, "the kill interrupted no batch"
    assert KILL_AFTER <= len(first) < BATCHES
    assert all(r["status"] == "spent" for results in first.values() for r in results)
    # Never a partial batch: each batch's spends are all in the ledger, or none of them.
    written = spends_per_batch(database_url)
    assert set(written.values()) <= {ITEMS}, written
    assert {str(n) for n in first} <= set(written)

    server = Server(database_url, cwd, f"{tag}-second", port=port).wait_ready()
    try:
        again: dict[int, list[dict[str, Any]]] = {}
        deadline = time.monotonic() + 120
        for n in range(BATCHES):
            while True:
                try:
                    status, body = send(port, n)
                except (OSError, http.client.HTTPException):
                    status, body = None, None
                if status == 200:
                    again[n] = body["results"]
                    break
                assert time.monotonic() < deadline, (n, status, body)
                time.sleep(0.2)
    finally:
        server.stop()

    for n, results in again.items():
        statuses = {r["status"] for r in results}
        if str(n) in written:  # committed before the kill, answered or not: replayed now
            assert statuses == {"replayed"}, (n, statuses)
        else:
            assert statuses == {"spent"}, (n, statuses)
        if n in first:  # the same transactions as the first answer
            assert [r["transaction_id"] for r in results] == [r["transaction_id"] for r in first[n]]
    assert spends_per_batch(database_url) == Counter({str(n): ITEMS for n in range(BATCHES)})
    keys = _query(database_url, "SELECT count(DISTINCT reference_id), count(*) FROM credit_transactions "
                                "WHERE kind = 'spend'")
    assert keys == [(BATCHES * ITEMS, BATCHES * ITEMS)]
    for user in USERS:
        shown = _wallet(database_url, cwd, "balance", user)
        assert json.loads(shown.stdout)["balance"] == f"{1000 - BATCHES * ITEMS / len(USERS) / 100:.2f}"
    _verify(database_url, cwd)


@pytest.mark.postgres
def test_kill_mid_batch_then_resend_spends_every_item_once_on_postgresql(fresh_postgres_url: str,
                                                                         tmp_path: Path) -> None:
    _kill_mid_batch_then_resend(fresh_postgres_url, tmp_path, "pgbatch")


def test_kill_mid_batch_then_resend_spends_every_item_once_on_sqlite(tmp_path: Path) -> None:
    _kill_mid_batch_then_resend(f"sqlite:///{tmp_path / 'wallet.sqlite3'}", tmp_path, "sqlbatch")
