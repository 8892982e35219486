"""Retry policy: reads the error's class, never its text.

Retryable errors (``error.retryable``) are retried with exponential backoff and full jitter, honouring
the vendor's ``retry_after``; others are given up at once. Outage-like errors (401/403, a wrong
endpoint, an unwritable dead-letter topic) and 429s (someone else spends the budget: the pace adapts)
are retried without limit: they are never the event's fault, so never dead-lettered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from connector.errors import AuthError, ConnectorError, DeadLetterError, EndpointError, RateLimited

_UNLIMITED = (AuthError, DeadLetterError, EndpointError, RateLimited)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**(n-1)))."""

    base_seconds: float = 0.2
    cap_seconds: float = 30.0
    max_attempts: int = 8
    max_elapsed_seconds: float = 0.0  # 0: no limit by time, only by attempts
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempt: int) -> float:
        """The jittered wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        return self.rng.uniform(0, ceiling)

    def delay(self, error: BaseException, attempt: int, elapsed: float = 0.0) -> float | None:
        """Seconds to wait before the next attempt, or None to give up (dead-letter). ``elapsed`` is
        the time since the event's first failure."""
        if not isinstance(error, ConnectorError) or not error.retryable:
            return None
        if not isinstance(error, _UNLIMITED) and (
            attempt >= self.max_attempts or (self.max_elapsed_seconds and elapsed >= self.max_elapsed_seconds)
        ):
            return None
        wait = self.backoff(attempt)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.cap_seconds * 4))
        return wait
