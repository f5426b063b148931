"""`wallet spend-batch FILE`: a file of JSON lines (one spend a line, e.g. usage logs) replayed into the
wallet through Wallet.spend_many, a batch at a time, with a progress bar on a terminal and a summary.

Each batch is one unit of work and one commit; lines already committed by an earlier run (or batch)
answer `replayed`, so running a file again after a failure spends nothing twice.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TextIO

from tqdm import tqdm

from entrypoints.http.body import loads
from wallet_core.service import Wallet
from wallet_core.use_cases import BatchItemResult, BatchStatus


def _batches(lines: Iterable[str], size: int) -> Iterator[list[tuple[int, str]]]:
    """(line number, text) of the non-blank lines, `size` at a time."""
    batch: list[tuple[int, str]] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        batch.append((number, text))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def spend_file(
    wallet: Wallet, lines: Iterable[str], *, batch_size: int, actor: str, total: int | None, err: TextIO | None = None
) -> int:
    """0 when every line was spent or replayed, else 1. Failed lines go to `err` (stderr), one each; the
    summary to stdout. The progress bar is drawn only when `err` is a terminal."""
    err = err or sys.stderr
    counts: Counter[BatchStatus] = Counter()
    with tqdm(total=total, unit="line", file=err, disable=not err.isatty(), leave=False) as progress:
        for batch in _batches(lines, batch_size):
            items: list[Mapping[str, object]] = []
            numbers: list[int] = []
            for number, text in batch:
                try:
                    item = loads(text)
                except ValueError as exc:  # not JSON (JsonRefused and JSONDecodeError are ValueErrors)
                    item = exc
                if not isinstance(item, dict):
                    why = f"not JSON: {item}" if isinstance(item, ValueError) else "must be a JSON object"
                    counts[BatchStatus.INVALID] += 1
                    progress.write(f"line {number}: invalid: item: {why}", file=err)
                    continue
                items.append(item)
                numbers.append(number)
            results = wallet.spend_many(items, actor=actor) if items else []
            for number, result in zip(numbers, results, strict=True):
                counts[result.status] += 1
                if not result.status.ok:
                    progress.write(_failure(number, result), file=err)
            progress.update(batch[-1][0] - progress.n if total is not None else len(batch))
    print(", ".join(f"{status} {counts[status]}" for status in BatchStatus) + f" ({sum(counts.values())} lines)")
    return 0 if all(status.ok for status in counts) else 1


def _failure(number: int, result: BatchItemResult) -> str:
    key = f" (idempotency_key {result.idempotency_key})" if result.idempotency_key is not None else ""
    error = result.error
    field = f"{error.field}: " if error is not None and error.field is not None else ""
    message = error.message if error is not None else ""
    return f"line {number}{key}: {result.status}: {field}{message}"
