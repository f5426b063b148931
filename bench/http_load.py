"""The HTTP load the bench scripts share (bench/outbox_http.py, bench/spend.py, bench/batch.py): keep-alive
clients in forked processes that post prepared requests, each exactly once, timed from a start barrier;
and the bench's service tokens and log lines.

    sent = drive(port, items)                          # 2 processes x 4 connections: 8 clients
    sent = drive(port, items, processes=1, conns=1, tally=spends_committed)
"""

from __future__ import annotations

import http.client
import multiprocessing as mp
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import run as bench_run  # bench/run.py: the JWT secret the bench's servers check

PROCESSES, CONNS = 2, 4  # 8 concurrent keep-alive clients, as in bench/run.py

Item = tuple[str, bytes, dict[str, str]]  # path, body, headers
Tally = Callable[[int, bytes], int]  # (status, body) -> what the answer counts for (e.g. spends committed)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def token(roles: list[str], sub: str = "bench-admin") -> str:
    now = int(time.time())
    claims = {"sub": sub, "roles": roles, "iat": now, "exp": now + 6 * 3600}
    return jwt.encode(claims, bench_run.JWT_SECRET, algorithm="HS256")


@dataclass
class Sent:
    elapsed: float
    statuses: Counter[int]
    errors: list[str]  # the first few answers that were not 2xx, and connection errors
    latencies: list[float] = field(default_factory=list)  # seconds, one per request answered
    tallied: int = 0  # the sum of `tally` over the answers (0 without one)


def _client(port: int, items: list[Item], conns: int, tally: Tally | None, barrier: Any, out: Any) -> None:
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=600) for _ in range(conns)]
    for c in connections:
        c.connect()
    lock = threading.Lock()
    cursor = iter(items)
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    latencies: list[float] = []
    tallied = [0]
    barrier.wait()
    start = time.monotonic()

    def worker(conn: http.client.HTTPConnection) -> None:
        local: Counter[int] = Counter()
        took: list[float] = []
        counted = 0
        try:
            while True:
                with lock:
                    item = next(cursor, None)
                if item is None:
                    break
                path, body, headers = item
                sent_at = time.monotonic()
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                took.append(time.monotonic() - sent_at)
                local[resp.status] += 1
                if tally is not None:
                    counted += tally(resp.status, data)
                if not 200 <= resp.status < 300 and len(errors) < 3:
                    errors.append(f"{resp.status} {data[:300].decode(errors='replace')}")
        except OSError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            statuses.update(local)
            latencies.extend(took)
            tallied[0] += counted

    threads = [threading.Thread(target=worker, args=(c,)) for c in connections]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.monotonic()
    for c in connections:
        c.close()
    out.put((start, end, dict(statuses), errors, latencies, tallied[0]))


def drive(
    port: int, items: list[Item], *, processes: int = PROCESSES, conns: int = CONNS, tally: Tally | None = None
) -> Sent:
    """Post every item once over `processes` x `conns` keep-alive connections; timed from the barrier
    (the first client's start to the last one's end)."""
    ctx = mp.get_context("fork")
    processes = max(1, min(processes, len(items)))
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(port, items[i::processes], conns, tally, barrier, out), daemon=True)
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    got = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    latencies: list[float] = []
    for _, _, counted, errs, took, _ in got:
        statuses.update(counted)
        errors += errs
        latencies += took
    elapsed = max(g[1] for g in got) - min(g[0] for g in got)
    return Sent(elapsed, statuses, errors, latencies, sum(g[5] for g in got))
