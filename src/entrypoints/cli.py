"""The `wallet` command: serve, migrate, grant, balance, token."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Sequence

from entrypoints.container import Container, migrate, migrate_if_embedded
from entrypoints.http.views import grant_view, wallet_view
from entrypoints.settings import SettingsError
from wallet_core.errors import WalletError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wallet", description="Prepaid credits bought with Stripe.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the REST API with waitress (migrates a SQLite database first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--threads", type=int, default=8)

    sub.add_parser("migrate", help="bring the database schema up to date")

    grant = sub.add_parser("grant", help="grant credits to a user by hand")
    grant.add_argument("user")
    grant.add_argument("credits", help='e.g. "50.00"')
    grant.add_argument("--reason", required=True, help="why; kept in the ledger")
    grant.add_argument("--idempotency-key", help="retrying with the same key grants once")

    balance = sub.add_parser("balance", help="print a user's balance and recent transactions")
    balance.add_argument("user")

    token = sub.add_parser("token", help="mint a bearer token for local use")
    token.add_argument("user")
    token.add_argument("--admin", action="store_true", help="include the admin role")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    return parser


def _serve(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.server import serve

    serve(container, args.host, args.port, args.threads)
    return 0


def _migrate(container: Container, args: argparse.Namespace) -> int:
    migrate(container)
    print(f"database schema is up to date ({container.settings().database_url_masked})")
    return 0


def _grant(container: Container, args: argparse.Namespace) -> int:
    migrate_if_embedded(container)
    result = container.wallet().grant(
        args.user,
        args.credits,
        reason=args.reason,
        granted_by=f"cli:{getpass.getuser()}",
        idempotency_key=args.idempotency_key,
    )
    print(json.dumps(grant_view(result)))
    return 0


def _balance(container: Container, args: argparse.Namespace) -> int:
    migrate_if_embedded(container)
    print(json.dumps(wallet_view(container.wallet().wallet(args.user)), indent=2))
    return 0


def _token(container: Container, args: argparse.Namespace) -> int:
    if container.settings().jwt_secret is None:
        print(
            "wallet: refusing to mint a token: WALLET_JWT_SECRET is not set "
            "(set it, or use WALLET_ENV=development for a local secret)",
            file=sys.stderr,
        )
        return 2
    roles = ["admin"] if args.admin else []
    print(container.authenticator().mint(args.user, roles=roles, ttl_seconds=args.ttl))
    return 0


COMMANDS = {"serve": _serve, "migrate": _migrate, "grant": _grant, "balance": _balance, "token": _token}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    container = Container()
    try:
        container.settings()  # fail early, naming the bad variable
        return COMMANDS[args.command](container, args)
    except SettingsError as exc:
        print(f"wallet: configuration error: {exc}", file=sys.stderr)
        return 2
    except WalletError as exc:
        print(f"wallet: {exc.title}: {exc.description}", file=sys.stderr)
        return 1
    finally:
        container.shutdown_resources()


if __name__ == "__main__":
    sys.exit(main())
