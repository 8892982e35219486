"""The 429 adaptation, pure: outcomes and times in, the share of ticks used out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.adapt import (
    BETA,
    BLIND,
    DEBOUNCE,
    FAST,
    FLOOR,
    HOLD,
    MEDIUM,
    MEMORY,
    NEAR,
    QUICK,
    SLOW,
    Cut,
    Estimating,
)

T0 = 1_800_000_000.0
FULL = 5.0  # requests a second at factor 1


def test_accepted_requests_leave_the_whole_share() -> None:
    """No 429, no cut: every tick is used."""
    a = Estimating()
    for i in range(100):
        assert a.observe(False, T0 + i * 0.2, FULL) is None
    assert a.factor(T0 + 20) == 1.0
    assert a.estimate(T0 + 20) == 1.0


def test_a_429_out_of_the_blue_halves_holds_and_climbs_back_to_beta_of_where_it_came() -> None:
    """Nothing is known of how much the other client takes: the factor halves, every request waits
    ``HOLD`` seconds, and the factor climbs by ``MEDIUM`` a second back to ``BETA`` of the factor the
    429 came at, then by ``SLOW``."""
    a = Estimating()
    cut = a.observe(True, T0, FULL)
    assert cut == Cut(T0, 1.0, BLIND, BETA, T0 + HOLD)
    assert a.factor(T0) == BLIND
    assert a.factor(T0 + 10) == pytest.approx(BLIND + 10 * MEDIUM)
    back = (BETA - BLIND) / MEDIUM
    assert a.factor(T0 + back) == pytest.approx(BETA)
    assert a.factor(T0 + back + 50) == pytest.approx(BETA + 50 * SLOW)


def test_429s_within_the_debounce_are_one_signal() -> None:
    """The requests in flight when the bucket ran dry come back 429 too: one cut."""
    a = Estimating()
    assert a.observe(True, T0, FULL) is not None
    assert a.observe(True, T0 + 0.1, FULL) is None
    assert a.observe(True, T0 + DEBOUNCE - 0.01, FULL) is None
    assert a.factor(T0 + 1) == pytest.approx(BLIND + MEDIUM)


def test_a_later_429_cuts_to_beta_of_the_factor_it_came_at() -> None:
    """Once the other client is known, a 429 long after the hold drops to ``BETA`` of the pace it came
    at, and the factor then climbs slowly to ``NEAR`` times that, fast beyond (it may have left)."""
    a = Estimating()
    a.observe(True, T0, FULL)
    at = T0 + 30
    level = a.factor(at)
    cut = a.observe(True, at, FULL)
    assert cut is not None
    assert (cut.estimate, cut.factor, cut.resume) == pytest.approx((level, BETA * level, BETA * level))
    slow = (NEAR * level - BETA * level) / SLOW
    assert a.factor(at + slow) == pytest.approx(NEAR * level)
    assert a.factor(at + slow + 10) == pytest.approx(NEAR * level + 10 * FAST)
    assert a.factor(at + slow + 1_000) == 1.0


def test_a_429_right_after_the_hold_halves_again() -> None:
    """The last cut was not enough, and by how much is not known: halve again."""
    a = Estimating()
    a.observe(True, T0, FULL)
    at = T0 + HOLD + QUICK / 2
    cut = a.observe(True, at, FULL)
    assert cut is not None
    assert cut.factor == pytest.approx(BLIND * a.last_cut.estimate)
    assert cut.estimate == pytest.approx(BLIND + (at - T0) * MEDIUM)


def test_a_429_long_after_the_last_one_is_out_of_the_blue_again() -> None:
    """After ``MEMORY`` seconds the other client may have gone and another come: halve."""
    a = Estimating()
    a.observe(True, T0, FULL)
    cut = a.observe(True, T0 + MEMORY, FULL)
    assert cut is not None
    assert cut.factor == pytest.approx(BLIND * cut.estimate)


def test_the_factor_never_drops_below_the_floor() -> None:
    """However many 429s, a share of the ticks is still used (the probe that finds the key free)."""
    a = Estimating()
    for i in range(60):
        a.observe(True, T0 + i * (HOLD + 0.1), FULL)
    assert a.factor(T0 + 60 * (HOLD + 0.1)) == pytest.approx(FLOOR, abs=0.01)


def test_a_newer_cut_made_elsewhere_is_followed_an_older_one_is_not() -> None:
    """Another member's cut, newer than the last one here, replaces it; an older one (or this one's
    own, echoed) changes nothing; a 429 within the debounce of the cut followed is the same signal."""
    here, there = Estimating(), Estimating()
    here.observe(True, T0, FULL)
    cut = there.observe(True, T0 + 1, FULL)
    assert cut is not None
    assert here.adopt(cut)
    assert here.last_cut == cut
    assert not here.adopt(cut)
    assert not here.adopt(Cut(T0 - 5, 0.2, 0.1, 0.1, T0 - 3))
    assert here.observe(True, T0 + 2, FULL) is None


@given(st.lists(st.tuples(st.floats(min_value=0.05, max_value=60.0), st.booleans()), min_size=1, max_size=60))
def test_a_member_following_every_cut_paces_exactly_as_the_one_that_made_them(
    outcomes: list[tuple[float, bool]],
) -> None:
    """Whatever the outcomes one member sees, another that follows each of its cuts uses the same
    share of its ticks at every moment, and holds as long: the fleet paces as one member."""
    maker, follower = Estimating(), Estimating()
    now = T0
    for gap, limited in outcomes:
        now += gap
        cut = maker.observe(limited, now, FULL)
        if cut is not None:
            assert follower.adopt(cut)
        for later in (0.0, 1.0, 17.0, 300.0):
            assert follower.factor(now + later) == maker.factor(now + later)
        assert follower.last_cut.hold_until == maker.last_cut.hold_until
