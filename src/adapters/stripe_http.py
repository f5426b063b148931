"""The HTTP client the Stripe gateway hands to the `stripe` SDK: its own requests-based client, with
STRIPE_TIMEOUT_SECONDS as the budget of a whole call, retries and their back-off included.

The SDK gives every attempt the full timeout and sleeps 0.5-5 s between attempts, so with its network
retries (2 by default) a top-up against a Stripe that does not answer took 3 x 10 s plus back-off,
~32 s, before answering 502. Here each attempt gets what is left of the budget, a retry is only made
when at least MIN_ATTEMPT_SECONDS would be left for it, and the back-off never eats into that.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import stripe

MIN_ATTEMPT_SECONDS = 0.5  # a retry with less time than this left is not worth sending


class DeadlineRequestsClient(stripe.RequestsClient):
    def __init__(self, budget_seconds: float) -> None:
        self._budget = budget_seconds
        self._deadline = threading.local()  # per calling thread: the SDK client is shared
        super().__init__(timeout=budget_seconds)

    # The SDK reads `_timeout` for each attempt: what is left of this call's budget.
    @property
    def _timeout(self) -> float:
        return max(0.001, self._left())

    @_timeout.setter
    def _timeout(self, value: Any) -> None:  # the SDK's __init__ sets it
        self._budget = float(value)

    def request_with_retries(self, *args: Any, **kwargs: Any) -> Any:
        return self._within_budget(super().request_with_retries, *args, **kwargs)

    def request_stream_with_retries(self, *args: Any, **kwargs: Any) -> Any:
        return self._within_budget(super().request_stream_with_retries, *args, **kwargs)

    def _within_budget(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        self._deadline.at = time.monotonic() + self._budget
        try:
            return call(*args, **kwargs)
        finally:
            self._deadline.at = None

    def _left(self) -> float:
        deadline: float | None = getattr(self._deadline, "at", None)
        return self._budget if deadline is None else deadline - time.monotonic()

    def _should_retry(self, response: Any, api_connection_error: Any, num_retries: int,
                      max_network_retries: Any) -> bool:
        if self._left() < 2 * MIN_ATTEMPT_SECONDS:  # the back-off (at least 0.5 s) and an attempt
            return False
        return bool(super()._should_retry(response, api_connection_error, num_retries, max_network_retries))

    def _sleep_time_seconds(self, num_retries: int) -> float:
        wanted: float = super()._sleep_time_seconds(num_retries)
        return max(0.0, min(wanted, self._left() - MIN_ATTEMPT_SECONDS))
