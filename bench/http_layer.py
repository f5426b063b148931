"""The HTTP layer's own cost per single spend (issue 14), in process: no sockets, no waitress, no database.

    python bench/http_layer.py                       # 15 rounds of 1,000 spends per side
    python bench/http_layer.py --rounds 30 --n 2000
    python bench/http_layer.py --profile             # cProfile of the wallet's side, top 30 by own time

Two WSGI apps answer `POST /api/v1/admin/users/{user}/wallet/spend` with a service token, one thread,
called directly (a WSGI environ as waitress builds it, the body in a BytesIO):

- wallet: `entrypoints.http.app.create_app` on a container as `wallet serve` builds it (a migrated
  SQLite file for the schema gate, the JSON access log through the redacting filter to /dev/null),
  with the Wallet's `spend` replaced by a stub that answers a fixed SpendResult (one source), so only
  what is around the booking is measured: routing, middlewares (request id, access log, metrics, schema
  gate), the token check, body parsing and schema validation, the view and the JSON answer.
- baseline: bench/spend_baseline_server.py's Falcon app (the same token check with PyJWT, json.loads,
  the same answer shape), its store replaced by a stub answering ("spent", balance).

Rounds alternate the order (wallet, baseline; baseline, wallet; ...). Printed: CPU microseconds per
request (process time, median over rounds) for each side, their difference, and the median of the
rounds' ratios (wallet / baseline; steadier than either figure on a shared machine). Every answer is
checked to be 201.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import spend_baseline_server as baseline  # bench/spend_baseline_server.py
from dependency_injector import providers

from entrypoints.container import Container, migrate
from entrypoints.http.app import create_app
from entrypoints.logs import configure_logging
from entrypoints.settings import Secret, Settings
from wallet_core.ledger import CreditKind, Source
from wallet_core.money import Credits
from wallet_core.use_cases import SpendResult

SECRET = "bench-http-layer-secret-0123456789abcdef"
PATH = "/api/v1/admin/users/{user}/wallet/spend"
BODY = json.dumps({"credits": "1.00", "reason": "bench"}).encode()

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class StubWallet:
    """Stands for the Wallet: spend() answers at once, as a booked spend would."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def spend(self, user_id: str, credits: object, *, idempotency_key: str | None, reason: str,
              metadata: dict[str, str] | None = None, actor: str = "library") -> SpendResult:
        amount = Credits.amount(credits)
        return SpendResult(user_id, amount, Credits(99_900), "ctx_0123456789abcdef", False,
                           (Source("lot_0123456789abcdef", CreditKind.PROMOTIONAL, amount),))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class StubStore:
    def spend(self, key: str, user_id: str, hundredths: int) -> tuple[str, int | None]:
        return "spent", 99_900


def wallet_app(directory: Path) -> WsgiApp:
    settings = Settings(database_url=f"sqlite:///{directory / 'wallet.db'}", jwt_secret=Secret(SECRET))
    container = Container()
    container.settings.override(settings)
    migrate(container)
    container.wallet.override(providers.Object(StubWallet(container.wallet())))
    return create_app(container)


def baseline_app() -> WsgiApp:
    return baseline.create_app(StubStore(), SECRET)  # type: ignore[arg-type]


def token() -> str:
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": "bench-service", "roles": ["service"], "iat": now, "exp": now + 3600}, SECRET,
                      algorithm="HS256")


def environ(path: str, auth: str, key: str) -> dict[str, Any]:
    """What waitress hands the app for a keep-alive POST of BODY."""
    return {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_HOST": "127.0.0.1", "REMOTE_PORT": "50000",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(BODY)),
        "HTTP_HOST": "127.0.0.1:8000", "HTTP_ACCEPT_ENCODING": "identity",
        "HTTP_AUTHORIZATION": f"Bearer {auth}", "HTTP_IDEMPOTENCY_KEY": key,
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(BODY),
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "wsgi.input_terminated": True,
    }


def run(app: WsgiApp, n: int, start: int, auth: str) -> float:
    """CPU seconds per request for `n` spends through `app`."""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        statuses.append(status)

    envs = [environ(PATH.format(user=f"bench-{(start + i) % 1000:04d}"), auth, f"k-{start + i}") for i in range(n)]
    began = time.process_time()
    for env in envs:
        for _ in app(env, start_response):
            pass
    spent = time.process_time() - began
    bad = [s for s in statuses if not s.startswith("201")]
    if bad:
        raise SystemExit(f"expected 201s, got {bad[:3]}")
    return spent / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000, help="spends per side and round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", action="store_true", help="cProfile the wallet's side instead")
    args = parser.parse_args()
    configure_logging("json", stream=open(os.devnull, "w"))  # lives as long as the process
    logging.getLogger("wallet.schema").setLevel(logging.WARNING)
    auth = token()
    with tempfile.TemporaryDirectory(prefix="wallet-http-layer-") as tmp:
        apps = {"wallet": wallet_app(Path(tmp)), "baseline": baseline_app()}
        for app in apps.values():  # warm up (imports, caches, the schema check)
            run(app, 300, 0, auth)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            run(apps["wallet"], args.n, 1_000_000, auth)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
            return
        per: dict[str, list[float]] = {"wallet": [], "baseline": []}
        for r in range(args.rounds):
            order = ("wallet", "baseline") if r % 2 == 0 else ("baseline", "wallet")
            for name in order:
                per[name].append(run(apps[name], args.n, (r + 1) * 1_000_000, auth))
        w, b = statistics.median(per["wallet"]), statistics.median(per["baseline"])
        for name in ("wallet", "baseline"):
            print(f"{name:8s} {statistics.median(per[name]) * 1e6:7.1f} us/request median, {min(per[name]) * 1e6:7.1f} "
                  f"min  (rounds: {', '.join(f'{x * 1e6:.0f}' for x in per[name])})")
        ratios = [x / y for x, y in zip(per["wallet"], per["baseline"], strict=True)]
        lowest = {name: min(values) for name, values in per.items()}
        print(f"wallet - baseline {(w - b) * 1e6:.1f} us (min: {(lowest['wallet'] - lowest['baseline']) * 1e6:.1f}); "
              f"wallet / baseline {statistics.median(ratios):.2f}x "
              f"(min / min: {lowest['wallet'] / lowest['baseline']:.2f}x) "
              f"(median of the rounds' ratios: {', '.join(f'{r:.2f}' for r in ratios)}); "
              f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
