"""The sandbox's token bucket, on a clock the test moves by hand."""

from __future__ import annotations

from connector.sandbox._ratelimit import TokenBucket


def test_bucket_gives_its_capacity_then_refills_at_its_rate() -> None:
    """Capacity at once, then exactly ``rate`` tokens a second, never more than capacity."""
    now = [0.0]
    bucket = TokenBucket(rate=2.0, capacity=40.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(41)] == [True] * 40 + [False]
    now[0] += 0.49
    assert not bucket.take()
    now[0] += 0.01
    assert bucket.take()
    assert not bucket.take()
    now[0] += 1000.0
    assert sum(bucket.take() for _ in range(100)) == 40
