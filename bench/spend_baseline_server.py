"""The baseline a single spend is measured against (issue 14): a minimal correct spend handler. The
same waitress + Falcon as `wallet serve`, the same HS256 bearer-token check (PyJWT, the `service` or
`admin` role), the same JSON body and Idempotency-Key header, then one transaction: insert the
idempotency key (unique: a repeated key spends nothing), then a conditional balance update (never below
zero), with plain sqlite3 / psycopg. No SQLAlchemy, no domain objects, no ledger, no lots, no events.

    python bench/spend_baseline_server.py --db postgresql://... --port 8123 --threads 8 --jwt-secret S
    python bench/spend_baseline_server.py --db postgresql://... --fund 200 1000000  # create and fund wallets, exit

Route: POST /api/v1/admin/users/{user_id}/wallet/spend {"credits": "1.00", "reason": "..."} ->
201 {"user_id", "credits_spent", "balance"}; 409 when the balance is short (nothing kept); 200 with
"replayed" for a key seen before. Durability as the wallet's: SQLite WAL, default synchronous, BEGIN
IMMEDIATE, 10 s busy timeout; PostgreSQL defaults (synchronous_commit on). One connection per thread.
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal, InvalidOperation

import baseline_server  # bench/baseline_server.py: the webhook baseline's Store
import falcon
import jwt
import waitress

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_spend_keys (key VARCHAR(255) PRIMARY KEY, user_id VARCHAR(128) NOT NULL, "
    "credits BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bench_spend_balances (user_id VARCHAR(128) PRIMARY KEY, balance BIGINT NOT NULL)",
)


class Store(baseline_server.Store):
    """The webhook baseline's connections (one per thread, the same durability); spend() is the whole
    transaction."""

    def _p(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.sqlite else sql

    def create_and_fund(self, users: int, credits: int) -> None:
        conn = self.connect()
        for statement in SCHEMA:
            conn.execute(statement)
        rows = [(f"bench-{n:04d}", credits * 100) for n in range(users)]
        insert = self._p(
            "INSERT INTO bench_spend_balances (user_id, balance) VALUES (%s, %s) "
            "ON CONFLICT (user_id) DO UPDATE SET balance = excluded.balance"
        )
        if self.sqlite:
            conn.executemany(insert, rows)
        else:
            with conn.cursor() as cur:
                cur.executemany(insert, rows)
            conn.commit()

    def spend(self, key: str, user_id: str, hundredths: int) -> tuple[str, int | None]:
        """('spent', balance), ('replayed', None) or ('short', None)."""
        conn = self.connect()
        insert = self._p(
            "INSERT INTO bench_spend_keys (key, user_id, credits) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
        )
        update = self._p(
            "UPDATE bench_spend_balances SET balance = balance - %s WHERE user_id = %s AND balance >= %s "
            "RETURNING balance"
        )
        if self.sqlite:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute(insert, (key, user_id, hundredths)).rowcount != 1:
                    conn.execute("ROLLBACK")
                    return "replayed", None
                row = conn.execute(update, (hundredths, user_id, hundredths)).fetchone()
                conn.execute("COMMIT" if row is not None else "ROLLBACK")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return ("spent", int(row[0])) if row is not None else ("short", None)
        try:
            with conn.cursor() as cur:
                cur.execute(insert, (key, user_id, hundredths))
                if cur.rowcount != 1:
                    conn.rollback()
                    return "replayed", None
                cur.execute(update, (hundredths, user_id, hundredths))
                row = cur.fetchone()
            if row is None:
                conn.rollback()
                return "short", None
            conn.commit()
            return "spent", int(row[0])
        except BaseException:
            conn.rollback()
            raise


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Spend:
    def __init__(self, store: Store, secret: str) -> None:
        self._store = store
        self._secret = secret

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        auth = req.get_header("Authorization") or ""
        if not auth.startswith("Bearer "):
            raise falcon.HTTPUnauthorized(title="Unauthorized", description="a bearer token is required")
        try:
            claims = jwt.decode(
                auth[7:].strip(), self._secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
            )
        except jwt.InvalidTokenError:
            raise falcon.HTTPUnauthorized(title="Unauthorized", description="the token is not valid") from None
        if not {"service", "admin"} & set(claims.get("roles") or ()):
            raise falcon.HTTPForbidden(title="Forbidden", description="service or admin role required")
        key = req.get_header("Idempotency-Key")
        if not key or len(key) > 255:
            raise falcon.HTTPUnprocessableEntity(title="Invalid", description="Idempotency-Key is required")
        body = json.loads(req.bounded_stream.read(64 * 1024 + 1), parse_float=Decimal)
        try:
            credits = Decimal(str(body["credits"]))
            hundredths = int(credits * 100)
        except (KeyError, TypeError, InvalidOperation):
            raise falcon.HTTPUnprocessableEntity(title="Invalid", description="credits") from None
        if hundredths <= 0 or hundredths != credits * 100 or not isinstance(body.get("reason"), str):
            raise falcon.HTTPUnprocessableEntity(title="Invalid", description="credits or reason")
        outcome, balance = self._store.spend(f"spend:{key}", user_id, hundredths)
        if outcome == "short":
            raise falcon.HTTPConflict(title="Insufficient credits", description="the balance is short")
        resp.status = falcon.HTTP_201 if outcome == "spent" else falcon.HTTP_200
        resp.media = {
            "user_id": user_id,
            "credits_spent": str(credits),
            "balance": None if balance is None else str(Decimal(balance) / 100),
            "replayed": outcome == "replayed",
        }


def create_app(store: Store, secret: str) -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App()
    app.add_route("/healthz", Health())
    app.add_route("/api/v1/admin/users/{user_id}/wallet/spend", Spend(store, secret))
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True, help="sqlite:///path or postgresql://...")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--jwt-secret")
    parser.add_argument("--fund", nargs=2, type=int, metavar=("USERS", "CREDITS"), help="create and fund, then exit")
    args = parser.parse_args()
    store = Store(args.db)
    if args.fund:
        store.create_and_fund(*args.fund)
        return
    if args.port is None or not args.jwt_secret:
        parser.error("--port and --jwt-secret are required to serve")
    waitress.serve(
        create_app(store, args.jwt_secret),
        host=args.host,
        port=args.port,
        threads=args.threads,
        max_request_body_size=64 * 1024 + 1024,
        ident="spend-baseline",
    )


if __name__ == "__main__":
    main()
