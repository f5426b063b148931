"""`wallet serve` as shipped, except that the SQL outbox's `add` does nothing: no event is kept, so
commit() writes none (and the server's webhook worker finds none to publish). The "without" side of
`python bench/outbox.py --http`; nothing in src/ can switch the outbox off.

    python bench/serve_without_outbox.py --port 8001 --threads 8    # the arguments of `wallet serve`
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if (BENCH.parent / "src").is_dir():
    sys.path.insert(0, str(BENCH.parent / "src"))

from adapters.sql.outbox_repository import SqlOutbox  # noqa: E402
from entrypoints.cli import main  # noqa: E402


def serve_without_outbox(argv: Sequence[str]) -> int:
    setattr(SqlOutbox, "add", lambda self, event: None)  # noqa: B010
    return main(["serve", *argv])


if __name__ == "__main__":
    sys.exit(serve_without_outbox(sys.argv[1:]))
