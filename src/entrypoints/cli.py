"""The `wallet` command: serve, migrate, grant, revert, spend, spend-batch, hold, capture, release, expire,
verify, history, balance, events, reconcile, token, worker, webhooks, outbound-events.

Only argparse and the standard library are imported before the arguments are parsed, so `--help`
and usage errors answer at once; the container (SQLAlchemy, Stripe, Falcon) loads for real work.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from entrypoints.container import Container
    from wallet_core.errors import InvalidInput
    from wallet_core.payments import PaymentIntent
    from wallet_core.ports import StoredEvent


def _metadata_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def _date(text: str) -> datetime:
    """--since: a calendar day, read as midnight UTC."""
    try:
        day = datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None
    return day.replace(tzinfo=UTC)


def _batch_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= size <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1 to 1000, got {size}")
    return size


MAX_TOKEN_TTL_SECONDS = 7 * 24 * 3600  # wallet token is for local use; production mints its own (docs/tokens.md)


def _ttl(text: str) -> int:
    """--ttl: whole seconds, 1 to MAX_TOKEN_TTL_SECONDS. A token that is born expired is a mistake."""
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole seconds, got {text!r}") from None
    if not 1 <= seconds <= MAX_TOKEN_TTL_SECONDS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_TOKEN_TTL_SECONDS} seconds (7 days), got {seconds}")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wallet", description="Prepaid credits bought with Stripe.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve the REST API with waitress (migrates a SQLite database first)",
        description="Serve the REST API with waitress. A SQLite database is migrated first; a PostgreSQL one "
        "must have been migrated with `wallet migrate` (until then /readyz and the wallet routes answer 503).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # every option shows its default
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; 0.0.0.0 for every interface (put TLS in front)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    serve.add_argument("--threads", type=int, default=8, help="worker threads: requests served at once")
    serve.add_argument("--log-format", choices=("json", "text"), default="json",
                       help="json: one JSON object per line on stderr; text: for a person")
    serve.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="on SIGTERM/SIGINT, how long requests in flight may take to finish")

    sub.add_parser("migrate", help="bring the database schema up to date")

    grant = sub.add_parser("grant", help="grant credits to a user by hand (promotional unless --category paid)")
    grant.add_argument("user")
    grant.add_argument("credits", help='e.g. "50.00"')
    grant.add_argument("--reason", required=True, help="why; kept in the ledger")
    grant.add_argument("--idempotency-key", help="retrying with the same key grants once")
    grant.add_argument("--expires-at", metavar="ISO", help='when they stop counting, e.g. "2027-01-01T00:00:00Z"')
    grant.add_argument("--effective-at", metavar="ISO",
                       help="when they start counting (pending until; at most a year ahead), with a timezone")
    grant.add_argument("--priority", metavar="0-100",
                       help="lower numbers are spent first among lots of the same category (default 50)")
    grant.add_argument("--category", choices=("promotional", "paid"),
                       help="promotional (default) or paid: money received outside Stripe, spent last")

    revert = sub.add_parser(
        "revert",
        help="correct a grant, spend or capture with a new transaction that names it",
        description="Revert a transaction: a grant's unspent credits are taken back; a spend's or a capture's "
        "credits go back to the lots they came from. A transaction is reverted at most once. Without "
        "--idempotency-key the key is revert-<TRANSACTION_ID> (printed on stderr), so running the same "
        "command again answers the first revert instead of failing.",
    )
    revert.add_argument("transaction_id", metavar="TRANSACTION_ID", help="as the history shows it (ctx_...)")
    revert.add_argument("--reason", required=True, help="why; kept in the ledger")
    revert.add_argument("--dry-run", action="store_true", help="print what the revert would do; write nothing")
    revert.add_argument("--idempotency-key",
                        help="retrying with the same key reverts once (default: revert-<TRANSACTION_ID>)")

    spend = sub.add_parser("spend", help="spend a user's credits now")
    spend.add_argument("user")
    spend.add_argument("credits", help='e.g. "1.50"')
    spend.add_argument("--reason", required=True, help="what for; kept in the ledger")
    spend.add_argument("--idempotency-key", required=True, help="retrying with the same key spends once")
    spend.add_argument("--metadata", nargs="+", action="extend", type=_metadata_pair, default=[],
                       metavar="KEY=VALUE", help="labels kept with the transaction")

    batch = sub.add_parser(
        "spend-batch",
        help="spend from a file of JSON lines (replay usage logs), in batches of up to 1,000",
        description="Each line is one spend: {\"user_id\", \"credits\", \"reason\", \"idempotency_key\", "
        "\"metadata\"?}, as POST /api/v1/admin/spends takes them. Lines are sent in batches (one commit each); every "
        "item succeeds or fails on its own. A line that failed is printed on stderr with its number; the last line "
        "counts each status. Running the same file again spends nothing twice (each key spends once). Exit 1 if any "
        "line was not spent or replayed.",
    )
    batch.add_argument("file", help='the JSON lines file, or "-" for standard input')
    batch.add_argument("--batch-size", type=_batch_size, default=1000, metavar="N",
                       help="spends per batch (one commit each), 1-1000, default 1000")

    hold = sub.add_parser("hold", help="reserve a user's credits until captured or released")
    hold.add_argument("user")
    hold.add_argument("credits", help='e.g. "5.00"')
    hold.add_argument("--reason", required=True, help="what for; kept in the ledger")
    hold.add_argument("--idempotency-key", required=True, help="retrying with the same key holds once")
    hold.add_argument("--expires-in", type=int, metavar="SECONDS", help="release it unless captured by then")

    capture = sub.add_parser("capture", help="spend an open hold (all of it, or CREDITS) and give the rest back")
    capture.add_argument("hold_id")
    capture.add_argument("credits", nargs="?", help="at most the held amount; all of it when left out")
    capture.add_argument("--reason")

    release = sub.add_parser("release", help="give an open hold's credits back")
    release.add_argument("hold_id")
    release.add_argument("--reason")

    sub.add_parser("expire", help="book out expired promotional credits and release expired holds")
    sub.add_parser("verify", help="check every ledger invariant; exit 1 naming what breaks")

    history = sub.add_parser("history", help="a page of a user's transactions, newest first, as JSON")
    history.add_argument("user")
    history.add_argument("--limit", default="20", help="rows per page, 1-100 (default 20)")
    history.add_argument("--cursor", help="next_cursor from the previous page")

    balance = sub.add_parser("balance", help="print a user's balance, debt and recent transactions")
    balance.add_argument("user")

    card = sub.add_parser("card", help="a user's card saved for automatic top-up, as JSON; --forget forgets it")
    card.add_argument("user")
    card.add_argument("--forget", action="store_true", help="forget the card and detach it at Stripe")

    events = sub.add_parser("events", help="the Stripe events received about one payment, and what each did")
    events.add_argument("--payment-intent", required=True, metavar="PI_ID", help="the PaymentIntent id, pi_...")

    reconcile = sub.add_parser(
        "reconcile",
        help="compare Stripe's payments, refunds and disputes with the ledger and apply what webhooks missed",
        description="Compare Stripe's PaymentIntents, refunds and disputes with the ledger and apply what webhooks "
        "missed. Idempotent and safe while the server runs. Exit 0 when nothing needs review, 1 otherwise.",
    )
    reconcile.add_argument("--since", type=_date, metavar="YYYY-MM-DD",
                           help="only PaymentIntents created on or after this day (UTC); all when left out")
    reconcile.add_argument("--dry-run", action="store_true", help="say what would be repaired; change nothing")

    auto = sub.add_parser(
        "auto-top-up",
        help="a user's automatic top-up rule: show it; set it (--threshold with --target or --amount); --off",
        description="Without options: print the rule. With --threshold and --target (top up to a balance) or "
        "--amount (a fixed USD amount), and optionally --monthly-limit: set it (re-enabling a rule disabled "
        "after failures). --off: remove it.",
    )
    auto.add_argument("user")
    auto.add_argument("--threshold", metavar="CREDITS", help="below this spendable balance the saved card is charged")
    auto.add_argument("--target", metavar="CREDITS", help="top up to this balance (the credits missing, in USD)")
    auto.add_argument("--amount", metavar="USD", help="or buy this many US dollars each time")
    auto.add_argument("--monthly-limit", metavar="USD", help="at most this many USD of automatic top-ups a month")
    auto.add_argument("--off", action="store_true", help="remove the rule")

    token = sub.add_parser("token", help="mint a bearer token for local use")
    token.add_argument("user")
    token.add_argument("--admin", action="store_true", help="include the admin role")
    token.add_argument("--service", action="store_true", help="include the service role (spend and hold)")
    token.add_argument("--ttl", type=_ttl, default=3600, metavar="SECONDS",
                       help=f"seconds until it expires, 1 to {MAX_TOKEN_TTL_SECONDS} (default 3600)")
    _worker_parser(sub)
    _outbound_parsers(sub)
    return parser


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (e.g. a container without a passwd entry)
        return "cli:unknown"


def _print(value: object) -> None:
    """Every command that prints a result prints it as indented JSON."""
    print(json.dumps(value, indent=2))


# The names the library gives to values the CLI reads from options: an error names the option.
OPTION_NAMES = {
    "expires_in_seconds": "--expires-in",
    "expires_at": "--expires-at",
    "effective_at": "--effective-at",
    "priority": "--priority",
    "category": "--category",
    "reason": "--reason",
    "idempotency_key": "--idempotency-key",
    "Idempotency-Key": "--idempotency-key",  # the HTTP header's name
    "metadata": "--metadata",
    "limit": "--limit",
    "cursor": "--cursor",
    "after": "--after",
    "type": "--type",
    "events": "--events",
    "threshold_credits": "--threshold",
    "target_credits": "--target",
    "amount_usd": "--amount",
    "monthly_limit_usd": "--monthly-limit",
}


def _as_typed(exc: InvalidInput) -> str:
    """The error's description, naming the option the user typed (e.g. --expires-in, not expires_in_seconds)."""
    for name, option in OPTION_NAMES.items():
        if (exc.field == name or exc.field.startswith((f"{name}.", f"{name}["))) and \
                exc.description.startswith(name):
            return option + exc.description[len(name):]
    return exc.description


def _serve(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.server import serve

    serve(container, args.host, args.port, args.threads, shutdown_timeout=args.shutdown_timeout)
    return 0


def _migrate(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.container import migrate

    migrate(container)
    print(f"database schema is up to date ({container.settings().database_url_masked})")
    return 0


def _grant(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import grant_view
    from entrypoints.timestamps import parse_instant
    from wallet_core.ledger import DEFAULT_PRIORITY, CreditKind

    result = container.wallet().grant(
        args.user,
        args.credits,
        reason=args.reason,
        granted_by=_cli_actor(),
        idempotency_key=args.idempotency_key,
        expires_at=None if args.expires_at is None else parse_instant(args.expires_at, "--expires-at"),
        effective_at=None if args.effective_at is None else parse_instant(args.effective_at, "--effective-at"),
        priority=DEFAULT_PRIORITY if args.priority is None else args.priority,
        category=args.category or CreditKind.PROMOTIONAL.value,
    )
    _print(grant_view(result))
    return 0


def _revert(container: Container, args: argparse.Namespace) -> int:
    """Prints the answer as JSON (`"dry_run": true` for a dry run). The default key is derived from the
    transaction id: a transaction is reverted at most once anyway, so the derived key only makes a
    repeated command answer the first revert (exit 0) rather than "already reverted" (exit 1)."""
    from entrypoints.http.views import revert_view

    key = args.idempotency_key or f"revert-{args.transaction_id}"
    result = container.wallet().revert(
        args.transaction_id, reason=args.reason, idempotency_key=key, dry_run=args.dry_run, actor=_cli_actor()
    )
    if args.idempotency_key is None and not result.dry_run:
        print(f"wallet: idempotency key: {key}", file=sys.stderr)
    _print(revert_view(result))
    return 0


def _spend(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import spend_view
    from wallet_core.errors import InvalidInput

    metadata = dict(args.metadata)
    if len(metadata) != len(args.metadata):
        raise InvalidInput("--metadata", "names a key twice")
    result = container.wallet().spend(
        args.user,
        args.credits,
        idempotency_key=args.idempotency_key,
        reason=args.reason,
        metadata=metadata,
        actor=_cli_actor(),
    )
    _print(spend_view(result))
    return 0


def _spend_batch(container: Container, args: argparse.Namespace) -> int:
    """Reads the file line by line, sends each full batch, and ends with a summary line. A line that is
    not JSON counts as invalid (reported with its number) and is not sent."""
    from entrypoints.spend_batch_file import spend_file

    if args.file == "-":
        return spend_file(container.wallet(), sys.stdin, batch_size=args.batch_size, actor=_cli_actor(), total=None)
    try:
        with open(args.file, encoding="utf-8") as counting:
            total = sum(1 for _ in counting)
        with open(args.file, encoding="utf-8") as lines:
            return spend_file(container.wallet(), lines, batch_size=args.batch_size, actor=_cli_actor(), total=total)
    except OSError as exc:
        print(f"wallet: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except UnicodeDecodeError:
        print(f"wallet: cannot read {args.file}: it is not UTF-8 text", file=sys.stderr)
        return 1


def _hold(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import hold_view

    result = container.wallet().hold(
        args.user,
        args.credits,
        idempotency_key=args.idempotency_key,
        reason=args.reason,
        expires_in_seconds=args.expires_in,
        actor=_cli_actor(),
    )
    _print(hold_view(result))
    return 0


def _capture(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import hold_view

    _print(hold_view(container.wallet().capture(args.hold_id, args.credits, actor=_cli_actor(), reason=args.reason)))
    return 0


def _release(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import hold_view

    _print(hold_view(container.wallet().release(args.hold_id, actor=_cli_actor(), reason=args.reason)))
    return 0


def _expire(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import expiry_view

    _print(expiry_view(container.wallet().expire()))
    return 0


def _verify(container: Container, args: argparse.Namespace) -> int:
    check = container.wallet().check_ledger()  # one audit, one snapshot
    violations = check.violations
    if not violations:
        print(f"ledger OK: {check.accounts_checked} accounts checked")
        return 0
    for violation in violations:
        print(f"{violation.subject}: {violation.problem}")
    print(f"wallet: ledger verification failed: {len(violations)} violation(s)", file=sys.stderr)
    return 1


def _history(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import history_view

    _print(history_view(container.wallet().transactions(args.user, args.limit, args.cursor)))
    return 0


def _balance(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import wallet_view

    _print(wallet_view(container.wallet().wallet(args.user)))
    return 0


def _card(container: Container, args: argparse.Namespace) -> int:
    """{"payment_method": {...} or null}: after --forget, always null (the card, if any, is detached)."""
    from entrypoints.http.views import payment_method_view

    wallet = container.wallet()
    if args.forget:
        forgotten = wallet.forget_card(args.user)
        if forgotten is not None:
            print(f"forgot card {forgotten.brand} ending {forgotten.last4} ({forgotten.payment_method_id})",
                  file=sys.stderr)
        _print(payment_method_view(None))
    else:
        _print(payment_method_view(wallet.saved_card(args.user)))
    return 0


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _events_table(events: Sequence[StoredEvent]) -> list[str]:
    rows = [("received_at", "event id", "type", "outcome", "source")]
    rows += [
        (e.received_at.astimezone(UTC).isoformat(timespec="seconds"), e.event_id, e.type, e.outcome, e.source)
        for e in events
    ]
    return _table(rows)


def _events(container: Container, args: argparse.Namespace) -> int:
    pi = args.payment_intent
    events = container.wallet().events(pi)
    if not events:
        print(f"no events recorded for {pi} (none received yet, or not a payment of this wallet)")
        return 0
    for line in _events_table(events):
        print(line)
    return 0


class Progress:
    """A text progress line on stderr while reconcile lists PaymentIntents. Stripe does not say how
    many there are, so the bar only shows that work goes on; the count is what was listed so far. On a
    terminal the line is redrawn in place; otherwise (a log file, cron) one line every `every`.

    Ours, not tqdm (tried for issue 10): the lines written to a log must stay as they are, so tqdm
    would only have drawn the terminal line, for as many lines of ours (58 then 57) and a dependency."""

    WIDTH = 20

    def __init__(self, stream: TextIO, *, every: int = 100) -> None:
        self.stream = stream
        self.every = every
        self.seen = 0
        self.tty = stream.isatty()
        self._open = False  # a redrawn line is on the terminal, not ended yet

    def __call__(self, intent: PaymentIntent) -> None:
        self.seen += 1
        if self.tty:
            self._draw(f"{self._line()}  {intent.id[:40]}")
        elif self.seen % self.every == 0:
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def _line(self, done: bool = False) -> str:
        if done:
            bar = "#" * self.WIDTH
        else:
            at = self.seen % self.WIDTH
            bar = "".join("#" if (i - at) % self.WIDTH < 3 else "." for i in range(self.WIDTH))
        noun = "PaymentIntent" if self.seen == 1 else "PaymentIntents"
        return f"reconcile [{bar}] {self.seen} {noun} listed" + (", done" if done else "")

    def _draw(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(79)[:79])
        self.stream.flush()
        self._open = True

    def finish(self) -> None:
        if self.tty:
            self._draw(self._line(done=True))
        else:
            self.stream.write(self._line(done=True))
        self.stream.write("\n")
        self.stream.flush()
        self._open = False

    def abort(self) -> None:
        """End a redrawn line so an error message starts on a line of its own."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _reconcile(container: Container, args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr)
    try:
        report = container.wallet().reconcile(args.since, dry_run=args.dry_run, progress=progress)
    except BaseException:
        progress.abort()
        raise
    progress.finish()
    if args.dry_run:
        print("dry run: nothing was changed")
    for line in _table(
        [
            ("checked", str(report.checked)),
            ("already correct", str(report.correct)),
            ("would repair" if args.dry_run else "repaired", str(report.repaired)),
            ("needs review", str(report.needs_review)),
        ]
    ):
        print(line)
    if report.actions:
        print()
        print("would repair:" if args.dry_run else "repairs:")
        for action in report.actions:
            print(f"  {action}")
    if report.reviews:
        print()
        print("needs review:")
        for review in report.reviews:
            print(f"  {review}")
    if report.needs_review:
        print(f"wallet: {report.needs_review} payment(s) need review by a person", file=sys.stderr)
        return 1
    return 0


def _token(container: Container, args: argparse.Namespace) -> int:
    if container.settings().jwt_secret is None:
        print(
            "wallet: refusing to mint a token: WALLET_JWT_SECRET is not set "
            "(set it, or use WALLET_ENV=development for a local secret)",
            file=sys.stderr,
        )
        return 2
    roles = [role for role, wanted in (("admin", args.admin), ("service", args.service)) if wanted]
    print(container.authenticator().mint(args.user, roles=roles, ttl_seconds=args.ttl))
    return 0


def _worker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker",
        help="deliver outbound webhooks in the foreground until SIGTERM/SIGINT",
        description="Deliver outbound webhooks (what `wallet serve` does in a thread unless WALLET_WEBHOOK_WORKER="
        "false). On SIGTERM or SIGINT the delivery in flight finishes, then it exits 0. Several workers may run "
        "on one PostgreSQL database.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    worker.add_argument("--log-format", choices=("json", "text"), default="json",
                        help="json: one JSON object per line on stderr; text: for a person")
    worker.add_argument("--poll-seconds", type=float, default=1.0, metavar="SECONDS",
                        help="how long to wait after a round that found nothing to deliver")


def _worker(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.container import ensure_schema
    from entrypoints.logs import REDACTOR
    from entrypoints.worker import DeliveryWorker, run_until_signalled
    from wallet_core.errors import InvalidInput

    if not 0.05 <= args.poll_seconds <= 60:
        raise InvalidInput("--poll-seconds", "must be between 0.05 and 60")
    REDACTOR.add_secrets(container.settings())
    warning = ensure_schema(container)  # SQLite is migrated; PostgreSQL must be (`wallet migrate`)
    if warning is not None:
        logging.getLogger("wallet.webhooks").warning("%s", warning)
    wallet = container.wallet()
    run_until_signalled(DeliveryWorker(wallet, poll_seconds=args.poll_seconds, charger=wallet))
    return 0


def _outbound_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`wallet webhooks ...` (endpoints and deliveries) and `wallet outbound-events` (the pull): what the
    admin routes under /api/v1/admin/webhook-endpoints and /api/v1/admin/events do (docs/events.md).
    `wallet events` stays the Stripe events of one payment."""
    webhooks = sub.add_parser("webhooks", help="outbound webhook endpoints: add, list, remove, deliveries, redeliver")
    actions = webhooks.add_subparsers(dest="webhooks_command", required=True)
    add = actions.add_parser("add", help="subscribe a URL to events; prints the endpoint with its secret (only now)")
    add.add_argument("url", help="https:// with a public address (WALLET_WEBHOOK_ALLOW_PRIVATE_URLS=true: any)")
    add.add_argument("--events", nargs="+", default=["*"], metavar="TYPE",
                     help='the event types to receive (default "*": every event)')
    add.add_argument("--description", help="what it is for")
    actions.add_parser("list", help="the registered endpoints, without secrets")
    remove = actions.add_parser("remove", help="remove an endpoint")
    remove.add_argument("endpoint_id")
    rotate = actions.add_parser("rotate-secret", help="a new signing secret (the old one signs too for 24 hours)")
    rotate.add_argument("endpoint_id")
    deliveries = actions.add_parser("deliveries", help="what was sent to an endpoint, newest first")
    deliveries.add_argument("endpoint_id")
    deliveries.add_argument("--status", choices=("pending", "delivered", "failed"))
    deliveries.add_argument("--limit", default="100", help="at most, 1-500 (default 100)")
    redeliver = actions.add_parser("redeliver", help="queue an event again for every endpoint subscribed to it")
    redeliver.add_argument("event_id")

    pull = sub.add_parser("outbound-events", help="page through outbound events (what webhooks deliver), oldest first")
    pull.add_argument("--after", metavar="CURSOR", help="next_cursor from the previous page")
    pull.add_argument("--type", metavar="TYPE", help="only events of this type")
    pull.add_argument("--user", metavar="USER", help="only this user's events")
    pull.add_argument("--limit", default="100", help="at most, 1-500 (default 100)")


def _webhooks(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import deliveries_view, endpoint_listed_view, endpoint_view

    wallet = container.wallet()
    command = args.webhooks_command
    if command == "add":
        _print(endpoint_view(wallet.add_webhook_endpoint(args.url, args.events, args.description)))
    elif command == "list":
        _print({"endpoints": [endpoint_listed_view(e) for e in wallet.webhook_endpoints()]})
    elif command == "remove":
        wallet.remove_webhook_endpoint(args.endpoint_id)
        print(f"removed {args.endpoint_id}")
    elif command == "rotate-secret":
        _print(endpoint_view(wallet.rotate_webhook_secret(args.endpoint_id)))
    elif command == "deliveries":
        _print(deliveries_view(wallet.webhook_deliveries(args.endpoint_id, status=args.status, limit=args.limit)))
    else:
        _print({"event_id": args.event_id, "deliveries_queued": wallet.redeliver_event(args.event_id)})
    return 0


def _auto_top_up(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import auto_top_up_view
    from wallet_core.errors import InvalidInput

    wallet = container.wallet()
    setting = (args.threshold, args.target, args.amount, args.monthly_limit)
    if args.off:
        if any(v is not None for v in setting):
            raise InvalidInput("--off", "takes no other option")
        wallet.remove_auto_top_up(args.user)
        print(f"removed the automatic top-up rule of {args.user}")
        return 0
    if all(v is None for v in setting):
        _print(auto_top_up_view(wallet.auto_top_up(args.user)))
        return 0
    if args.threshold is None:
        raise InvalidInput("--threshold", "is required to set a rule")
    view = wallet.put_auto_top_up(
        args.user,
        args.threshold,
        target_credits=args.target,
        amount_usd=args.amount,
        monthly_limit_usd=args.monthly_limit,
    )
    _print(auto_top_up_view(view))
    return 0


def _outbound_events(container: Container, args: argparse.Namespace) -> int:
    from entrypoints.http.views import outbound_events_view

    page = container.wallet().events_after(args.after, type=args.type, user_id=args.user, limit=args.limit)
    _print(outbound_events_view(page))
    return 0


Command = Callable[["Container", argparse.Namespace], int]
# The commands that read or write the ledger: on SQLite (the zero-configuration default) the schema is
# brought up to date first; on PostgreSQL it must be up to date (`wallet migrate`), else they exit 1
# saying so. serve migrates SQLite by itself, migrate is the migration, token needs no database.
LEDGER_COMMANDS: dict[str, Command] = {
    "grant": _grant,
    "revert": _revert,
    "spend": _spend,
    "spend-batch": _spend_batch,
    "hold": _hold,
    "capture": _capture,
    "release": _release,
    "expire": _expire,
    "verify": _verify,
    "history": _history,
    "balance": _balance,
    "card": _card,
    "events": _events,
    "reconcile": _reconcile,
    "webhooks": _webhooks,
    "outbound-events": _outbound_events,
    "auto-top-up": _auto_top_up,
}
COMMANDS: dict[str, Command] = {
    "serve": _serve, "migrate": _migrate, "token": _token, "worker": _worker, **LEDGER_COMMANDS
}


def main(argv: Sequence[str] | None = None, *, container: Container | None = None) -> int:
    """Run one command. `container` (tests, embedding) is used as given and not shut down."""
    args = _parser().parse_args(argv)
    # The server logs what it does (JSON lines, secrets redacted; see entrypoints.logs); a one-shot
    # command prints its result and, on failure, one line.
    if args.command in ("serve", "worker"):
        from entrypoints.logs import configure_logging

        configure_logging(args.log_format)
    else:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from entrypoints.container import Container, ensure_schema
    from entrypoints.settings import SettingsError
    from wallet_core.errors import InvalidInput, WalletError

    owned = container is None
    container = container or Container()
    try:
        container.settings()  # fail early, naming the bad variable
        if args.command in LEDGER_COMMANDS:
            warning = ensure_schema(container)  # SQLite is migrated; PostgreSQL must be: else exit 1 saying so
            if warning is not None:
                print(f"wallet: warning: {warning}", file=sys.stderr)
        return COMMANDS[args.command](container, args)
    except SettingsError as exc:
        print(f"wallet: configuration error: {exc}", file=sys.stderr)
        return 2
    except InvalidInput as exc:
        print(f"wallet: {exc.title}: {_as_typed(exc)}", file=sys.stderr)
        return 1
    except WalletError as exc:
        print(f"wallet: {exc.title}: {exc.description}", file=sys.stderr)
        return 1
    finally:
        if owned:
            container.shutdown_resources()


if __name__ == "__main__":
    sys.exit(main())
