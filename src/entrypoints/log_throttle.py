"""One log line per cause, not per request: while the database is locked every request fails the
same way, and a line for each would bury the first one.

    DATABASE_503 = Throttle(log, interval=60)
    DATABASE_503.warning("database is locked", "503 Service Unavailable: %s", "database is locked")

The first occurrence of a cause is logged at once; the same cause again within `interval` seconds is
only counted, and the next line written for it says how many were left out meanwhile. Causes are
short strings the caller has already made safe (no URL, host or secret).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

MAX_CAUSES = 256  # bounded memory even if causes were to vary without end


class Throttle:
    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}  # cause -> (when last logged, left out since)

    def warning(self, cause: str, message: str, *args: object) -> bool:
        """Log `message % args` at WARNING unless `cause` was logged within the interval; True if logged."""
        now = self._clock()
        with self._lock:
            logged_at, left_out = self._last.get(cause, (None, 0))
            if logged_at is not None and now - logged_at < self._interval:
                self._last[cause] = (logged_at, left_out + 1)
                return False
            if len(self._last) >= MAX_CAUSES and cause not in self._last:
                self._last.pop(next(iter(self._last)))
            self._last[cause] = (now, 0)
        if left_out:
            message += f" ({left_out} more like it in the last {self._interval:g}s not logged)"
        self._logger.warning(message, *args, extra={"cause": cause, "suppressed": left_out})
        return True
