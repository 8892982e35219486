"""Sharing a key with another client: the adaptation in use against the plain alternative, on the
simulated vendor's bucket (``tests/sim/sharing.py``)."""

from __future__ import annotations

from connector.adapt import Estimating, Halving
from tests.sim.sharing import compare


def test_with_another_client_on_half_the_key_few_429s_and_most_of_what_is_left() -> None:
    """Found by review (32 429s for 300 accepted requests with a client on half the key): the fleet
    now draws at most 3 429s per 100 accepted requests and uses at least 90% of what the other client
    leaves; plain AIMD (halving) draws several times more."""
    chosen, plain = compare(Estimating, share=0.5), compare(Halving, share=0.5)
    assert chosen.share_429 <= 0.03
    assert chosen.of_available >= 0.90
    assert plain.share_429 > 3 * chosen.share_429


def test_the_budget_comes_back_after_the_other_client_leaves() -> None:
    """Probing upward never stops: once the other client is gone the fleet is back at 95% of the
    budget within five minutes."""
    result = compare(Estimating, share=0.5, seconds=700.0, leave_at=300.0)
    assert result.recovery_s is not None
    assert result.recovery_s <= 300
