"""The queue under group commit: concurrent requests of one process wait together, and one of them books
every request waiting at that moment as one group (use_cases.spend_queue for spends, use_cases.write_group
for grants, holds, captures, releases and webhook grants).

A caller queues its request. If fewer than `groups` groups run, it leads one: it takes every request
waiting at that moment (at most `cap`), has them booked (`_book`, in the subclass: one unit of work,
one commit), hands each waiter its own outcome, and passes the lead to the first request that arrived
meanwhile. No thread of its own. Waiting is bounded: a request still queued after `timeout` seconds
leaves the queue unwritten (StorageUnavailable); one taken by a group that does not end within another
`timeout` is told to retry with its key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from wallet_core.errors import StorageUnavailable

DEFAULT_CAP = 64  # requests per group
# Groups booked at once: 2, so one group's statements run in the database while the next is prepared
# in Python (docs/performance.md: 1 left the CPU idle between groups; more make groups smaller).
DEFAULT_GROUPS = 2
DEFAULT_TIMEOUT = 30.0  # seconds a request may wait for its group before it gives up

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)
class Ticket(Generic[Item, Result]):
    """One caller's request, from queueing to its answer: `_book` sets `result` or `error`."""

    item: Item
    wake: threading.Event = field(default_factory=threading.Event)
    taken: bool = False  # in a group (its outcome will come)
    lead: bool = False  # handed the lead: run the next group
    result: Result | None = None
    error: BaseException | None = None

    @property
    def answered(self) -> bool:
        return self.result is not None or self.error is not None

    def answer(self) -> Result:
        if self.error is not None:
            raise self.error
        assert self.result is not None, "a request of a finished group has an outcome"
        return self.result


class CommitQueue(Generic[Item, Result]):
    """Thread-safe; one per process and kind of request. Subclasses define `_book`."""

    noun = "request"  # in the timeout messages

    def __init__(
        self,
        *,
        cap: int = DEFAULT_CAP,
        groups: int = DEFAULT_GROUPS,
        timeout: float = DEFAULT_TIMEOUT,
        on_group: Callable[[int], object] | None = None,
    ) -> None:
        if cap < 1 or groups < 1:
            raise ValueError("cap and groups must be at least 1")
        self._cap = cap
        self._timeout = timeout
        self._on_group = on_group  # told each group's size (tests, measurements)
        self._lock = threading.Lock()
        self._waiting: list[Ticket[Item, Result]] = []
        self._groups = groups  # groups that may run at once
        self._leaders = 0  # groups running, or waiters handed the lead

    @property
    def waiting(self) -> int:
        """Requests queued for the next group (not yet taken by one)."""
        with self._lock:
            return len(self._waiting)

    def submit(self, item: Item) -> Result:
        """The item's outcome (or its error raised), once its group committed or failed."""
        ticket: Ticket[Item, Result] = Ticket(item)
        with self._lock:
            self._waiting.append(ticket)
            lead = self._leaders < self._groups
            if lead:
                self._leaders += 1
        if not lead:
            self._wait(ticket)
        if ticket.lead or lead:
            self._run_group()
        return ticket.answer()

    def _book(self, group: list[Ticket[Item, Result]]) -> None:
        """Book the group (in arrival order) and answer every ticket of it: result or error."""
        raise NotImplementedError

    def _wait(self, ticket: Ticket[Item, Result]) -> None:
        """Until the ticket is answered or handed the lead. Bounded: still queued after the timeout, it
        leaves the queue unwritten; taken by a group that never ends, the caller is told so."""
        if ticket.wake.wait(self._timeout):
            return
        with self._lock:
            if not ticket.taken and not ticket.lead:
                self._waiting.remove(ticket)
                raise StorageUnavailable(f"the {self.noun} waited too long for its turn; nothing was written, retry")
        if ticket.lead or ticket.wake.wait(self._timeout):
            return
        raise StorageUnavailable(
            f"the database did not answer in time; retry with the same Idempotency-Key (it answers the {self.noun} "
            "if it was made)"
        )

    def _run_group(self) -> None:
        with self._lock:
            group = self._waiting[: self._cap]
            del self._waiting[: self._cap]
            for ticket in group:
                ticket.taken = True
        try:
            if self._on_group is not None:
                self._on_group(len(group))
            self._book(group)
        except BaseException as exc:  # noqa: BLE001 - every request of the group gets the group's failure
            for ticket in group:
                if not ticket.answered:
                    ticket.error = exc
        finally:
            with self._lock:
                if self._waiting:
                    self._waiting[0].lead = True
                    self._waiting[0].wake.set()
                else:
                    self._leaders -= 1
            for ticket in group:
                ticket.wake.set()
