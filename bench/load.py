"""The load driver: separate processes, each with a few keep-alive http.client connections, posting
signed payment_intent.succeeded webhooks until a deadline (or until their share of pending top-ups
runs out). Used by bench/run.py; nothing here knows about the wallet's internals.

Each process signs its bodies (stripe.WebhookSignature.generate_signature_header, as Stripe does)
before the start barrier, so signing is not timed; then every connection loops request -> response.
Connection j of process i goes to ports[(i * conns + j) % len(ports)]: round-robin over the servers.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import stripe

WEBHOOK_PATH = "/webhooks/stripe"


@dataclass(frozen=True)
class Delivery:
    """One top-up waiting to be paid: the webhook that pays it."""

    payment_intent_id: str
    top_up_id: str
    user_id: str
    amount_cents: int


def event_id(prefix: str, payment_intent_id: str) -> str:
    return f"evt_{prefix}_{payment_intent_id}"


def event_body(delivery: Delivery, event_id: str) -> str:
    """A payment_intent.succeeded event shaped like Stripe's (see adapters/fake_gateway.py)."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": delivery.payment_intent_id,
                    "object": "payment_intent",
                    "amount": delivery.amount_cents,
                    "amount_received": delivery.amount_cents,
                    "currency": "usd",
                    "status": "succeeded",
                    "metadata": {"wallet_top_up_id": delivery.top_up_id, "wallet_user_id": delivery.user_id},
                }
            },
        }
    )


@dataclass
class RunResult:
    requests: int = 0
    elapsed: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    delivered: list[str] = field(default_factory=list)  # payment intent ids answered 200 "granted"
    sent: set[str] = field(default_factory=set)  # every payment intent id a request was made for
    latencies: list[float] = field(default_factory=list)
    exhausted: bool = False
    client_cpu: float = 0.0  # CPU seconds the driver processes used while timing

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


def _process(
    index: int,
    ports: list[int],
    conns: int,
    items: list[tuple[Delivery, str]],
    secret: str,
    duration: float,
    barrier: Any,
    out: Any,
) -> None:
    signed = [
        (d.payment_intent_id, body.encode(), stripe.WebhookSignature.generate_signature_header(body, secret))
        for d, body in items
    ]
    lock = threading.Lock()
    cursor = iter(signed)
    results: list[tuple[str, int, str, float]] = []
    exhausted = threading.Event()
    connections = []
    for j in range(conns):
        c = http.client.HTTPConnection("127.0.0.1", ports[(index * conns + j) % len(ports)], timeout=60)
        c.connect()
        connections.append(c)
    barrier.wait()
    cpu0 = sum(os.times()[:2])
    start = time.monotonic()
    deadline = start + duration

    def worker(conn: http.client.HTTPConnection) -> None:
        local: list[tuple[str, int, str, float]] = []
        while time.monotonic() < deadline:
            with lock:
                item = next(cursor, None)
            if item is None:
                exhausted.set()
                break
            pi, body, sig = item
            t0 = time.perf_counter()
            conn.request(
                "POST",
                WEBHOOK_PATH,
                body=body,
                headers={"Content-Type": "application/json", "Stripe-Signature": sig},
            )
            resp = conn.getresponse()
            data = resp.read()
            took = time.perf_counter() - t0
            try:
                outcome = json.loads(data).get("outcome", "?") if resp.status == 200 else "?"
            except ValueError:
                outcome = "?"
            local.append((pi, resp.status, outcome, took))
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=worker, args=(c,)) for c in connections]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.monotonic()
    cpu = sum(os.times()[:2]) - cpu0
    for c in connections:
        c.close()
    out.put((index, start, end, results, exhausted.is_set(), cpu))


def drive(
    ports: list[int],
    deliveries: list[Delivery],
    *,
    secret: str,
    processes: int,
    conns_per_process: int,
    duration: float,
    event_prefix: str,
) -> RunResult:
    """Deliver webhooks for `deliveries` (each at most once) for `duration` seconds; what happened."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    shares = [deliveries[i::processes] for i in range(processes)]
    procs = []
    for i, share in enumerate(shares):
        items = [(d, event_body(d, event_id(event_prefix, d.payment_intent_id))) for d in share]
        p = ctx.Process(
            target=_process, args=(i, ports, conns_per_process, items, secret, duration, barrier, out), daemon=True
        )
        p.start()
        procs.append(p)
    gathered = [out.get(timeout=duration + 300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    result = RunResult()
    result.elapsed = max(g[2] for g in gathered) - min(g[1] for g in gathered)
    for _, _, _, rows, exhausted, cpu in gathered:
        result.exhausted |= exhausted
        result.client_cpu += cpu
        for pi, status, outcome, took in rows:
            result.requests += 1
            result.statuses[status] += 1
            result.outcomes[outcome] += 1
            result.latencies.append(took)
            result.sent.add(pi)
            if status == 200 and outcome == "granted":
                result.delivered.append(pi)
    return result


def redeliver(port: int, deliveries: list[tuple[Delivery, str]], *, secret: str) -> Counter[str]:
    """Post (delivery, event id) webhooks, one connection, sequentially; the outcomes they got."""
    outcomes: Counter[str] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for d, evt in deliveries:
        body = event_body(d, evt)
        sig = stripe.WebhookSignature.generate_signature_header(body, secret)
        conn.request("POST", WEBHOOK_PATH, body=body.encode(),
                     headers={"Content-Type": "application/json", "Stripe-Signature": sig})
        resp = conn.getresponse()
        data = resp.read()
        outcomes[json.loads(data).get("outcome", "?") if resp.status == 200 else f"http_{resp.status}"] += 1
    conn.close()
    return outcomes
