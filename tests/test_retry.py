"""The retry policy reads the error's class: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import (
    AuthError,
    ConflictError,
    DeadLetterError,
    DecodeError,
    NotFoundError,
    RateLimited,
    RejectedError,
    ServerError,
    SinkConnectError,
    SinkTimeout,
)
from connector.retry import RetryPolicy

POLICY = RetryPolicy(base_seconds=0.5, cap_seconds=8.0, max_attempts=5)


@pytest.mark.parametrize(
    "error",
    [SinkConnectError("x"), SinkTimeout("x"), RateLimited("x"), ServerError("x", status=503)],
)
def test_transient_errors_are_retried(error: Exception) -> None:
    """Connection errors, timeouts, 429 and 5xx wait and try again."""
    assert POLICY.delay(error, 1) is not None


@pytest.mark.parametrize(
    "error",
    [
        RejectedError("x", status=422),
        RejectedError("x", status=400),
        NotFoundError("x"),
        ConflictError("x"),
        DecodeError("x"),
        ValueError("a bug"),
    ],
)
def test_permanent_errors_give_up_at_once(error: Exception) -> None:
    """4xx rejections, input errors and unexpected exceptions are not retried."""
    assert POLICY.delay(error, 1) is None


def test_transient_errors_give_up_after_max_attempts() -> None:
    """The attempt budget is finite for errors that can be the event's fault."""
    assert POLICY.delay(ServerError("x"), 4) is not None
    assert POLICY.delay(ServerError("x"), 5) is None


@pytest.mark.parametrize("error", [AuthError("x", status=401), DeadLetterError("x"), RateLimited("x")])
def test_outage_errors_are_retried_without_limit(error: Exception) -> None:
    """401/403, an unwritable DLQ and 429s (someone else spends the budget: issue 20) are never the
    event's fault: never given up."""
    assert POLICY.delay(error, 1000) is not None


def test_retry_after_is_honoured() -> None:
    """A vendor's Retry-After is a floor on the wait."""
    assert POLICY.delay(RateLimited("x", retry_after=7.0), 1) == 7.0


@given(st.integers(min_value=1, max_value=40))
def test_full_jitter_stays_within_the_exponential_ceiling(attempt: int) -> None:
    """Wait is uniform in [0, min(cap, base * 2**(attempt-1))]."""
    wait = POLICY.backoff(attempt)
    assert 0.0 <= wait <= min(8.0, 0.5 * 2 ** (attempt - 1))
