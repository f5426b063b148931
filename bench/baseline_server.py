"""The baseline the wallet's webhook is measured against: the same waitress + Falcon, the same
signature check (stripe.WebhookSignature.verify_header) and JSON parse, then the least SQL a grant can
be: one ledger row inserted (its reference unique, so a redelivery grants nothing) and one balance row
updated, in one transaction, with plain sqlite3 / psycopg. No SQLAlchemy, no domain objects.

Durability is the wallet's: SQLite in WAL mode with the synchronous setting left at its default (the
wallet's engine, adapters/sql/engine.py, does not set it either), BEGIN IMMEDIATE, a 10 s busy timeout;
PostgreSQL with its defaults (synchronous_commit on). One connection per waitress thread.

    python bench/baseline_server.py --db sqlite:///path.db --port 8123 --threads 8 --secret whsec_...

Creates its two tables if missing. Stopped with SIGINT (waitress shuts down cleanly).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import time
from typing import Any

import falcon
import stripe
import waitress

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_ledger (id BIGINT PRIMARY KEY{auto}, reference_id VARCHAR(255) NOT NULL UNIQUE, "
    "user_id VARCHAR(128) NOT NULL, credits BIGINT NOT NULL, created_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bench_balances (user_id VARCHAR(128) PRIMARY KEY, balance BIGINT NOT NULL)",
)


class Store:
    """A connection per thread; grant() is the whole transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite:///")
        self._local = threading.local()

    def connect(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self.sqlite:
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=10.0, check_same_thread=False)
            conn.isolation_level = None  # explicit BEGIN IMMEDIATE below, like the wallet's engine
            conn.execute("PRAGMA journal_mode=WAL")
        else:
            import psycopg

            conn = psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"))
        self._local.conn = conn
        return conn

    def create_schema(self) -> None:
        conn = self.connect()
        for statement in SCHEMA:
            sql = statement.format(auto="" if self.sqlite else " GENERATED ALWAYS AS IDENTITY")
            if self.sqlite:
                sql = sql.replace("id BIGINT PRIMARY KEY", "id INTEGER PRIMARY KEY")
            conn.execute(sql)
        if not self.sqlite:
            conn.commit()

    def grant(self, reference_id: str, user_id: str, credits: int) -> bool:
        conn = self.connect()
        now = time.time()
        if self.sqlite:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT INTO bench_ledger (reference_id, user_id, credits, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (reference_id) DO NOTHING",
                    (reference_id, user_id, credits, now),
                )
                granted: bool = cur.rowcount == 1
                if granted:
                    conn.execute(
                        "UPDATE bench_balances SET balance = balance + ? WHERE user_id = ?", (credits, user_id)
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return granted
        with conn.transaction():
            cur = conn.execute(
                "INSERT INTO bench_ledger (reference_id, user_id, credits, created_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (reference_id) DO NOTHING",
                (reference_id, user_id, credits, now),
            )
            granted = cur.rowcount == 1
            if granted:
                conn.execute(
                    "UPDATE bench_balances SET balance = balance + %s WHERE user_id = %s", (credits, user_id)
                )
        return granted


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Webhook:
    def __init__(self, store: Store, secret: str) -> None:
        self._store = store
        self._secret = secret

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        payload = req.bounded_stream.read(64 * 1024 + 1)
        text = payload.decode("utf-8")
        try:
            stripe.WebhookSignature.verify_header(text, req.get_header("Stripe-Signature") or "", self._secret, 300)
        except stripe.SignatureVerificationError:
            raise falcon.HTTPBadRequest(title="Bad webhook", description="signature") from None
        event = json.loads(text)
        obj = event["data"]["object"]
        outcome = "ignored"
        if event["type"] == "payment_intent.succeeded":
            user_id = obj["metadata"]["wallet_user_id"]
            credits = int(obj["amount_received"]) * 100  # 100 credits per USD, in hundredths of a credit
            outcome = "granted" if self._store.grant(obj["id"], user_id, credits) else "already_granted"
        resp.media = {"received": True, "event_id": event["id"], "type": event["type"], "outcome": outcome}


def create_app(store: Store, secret: str) -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App()
    app.add_route("/healthz", Health())
    app.add_route("/webhooks/stripe", Webhook(store, secret))
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True, help="sqlite:///path or postgresql://...")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    store = Store(args.db)
    store.create_schema()
    waitress.serve(
        create_app(store, args.secret),
        host=args.host,
        port=args.port,
        threads=args.threads,
        max_request_body_size=64 * 1024 + 1024,
        ident="baseline",
    )


if __name__ == "__main__":
    main()
