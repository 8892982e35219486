"""``connector resync status`` as people and scripts read it (the topic is read by the real-broker
test, tests/integration/test_resync.py)."""

from __future__ import annotations

from pathlib import Path

from connector.config import Settings
from connector.resynccmd import Status, as_json, budget_of, new_request, render
from connector.resynclog import Progress, Request, State


def test_no_request_says_so() -> None:
    assert render(Status(None, 4), 5.0) == "no resync was asked of this group"


def test_status_shows_a_bar_the_counts_the_partitions_and_an_estimate_at_the_floor() -> None:
    request = Request("g", "r-1", None, 1800000000.0, 0.2, 0.0)
    state = Status(request, 3)
    state.progress[("orders", 0)] = Progress("g", "r-1", "orders", 0, 0, 100, 100, 50, 45, 5, done=True)
    state.progress[("orders", 1)] = Progress("g", "r-1", "orders", 1, 0, 100, 10, 50, 5)
    text = render(state, 5.0)
    assert "orders with an event since 2027-01-15T08:00:00+00:00" in text
    assert "55 of 100 orders" in text
    assert "55%" in text
    assert "50 sent, 5 skipped" in text
    assert "1 done, 1 under way, 1 not begun" in text
    assert "at most ~45 s left at the floor (20% of 5/s) and the partitions not begun" in text
    assert not state.done
    data = as_json(state)
    assert (data["orders"], data["sent"], data["done"]) == (100, 50, False)


def test_done_and_cancelled() -> None:
    request = Request("g", "r-1", "acme", None, 0.2, 0.0, State.CANCELLED)
    state = Status(request, 1)
    state.progress[("orders", 0)] = Progress("g", "r-1", "orders", 0, 0, 10, 10, 3, 3, done=True)
    assert state.done
    text = render(state, 5.0)
    assert "every order, shop acme" in text
    assert "cancelled" in text
    assert text.endswith("done")


def test_a_new_request_names_the_group_and_takes_the_default_floor() -> None:
    settings = Settings(kafka={"topics": ["orders"], "group_id": "grp"})
    request = new_request(settings, None, None, None)
    assert (request.group, request.share, request.state) == ("grp", settings.resync.share, State.ACTIVE)
    assert request.id.startswith("r-")


def test_with_many_shops_the_estimate_is_at_the_named_shops_budget_or_the_slowest(tmp_path: Path) -> None:
    """The progress does not say whose orders are left: with every shop asked, the estimate is an
    upper bound at the slowest shop's budget, and says so."""
    shops = tmp_path / "tenants.toml"
    shops.write_text(
        '[acme]\nbase_url = "http://a"\napi_key = "k1"\nrate_limit_per_second = 5\n\n'
        '[bolt]\nbase_url = "http://b"\napi_key = "k2"\nrate_limit_per_second = 2\n'
    )
    settings = Settings(kafka={"topics": ["orders"]}, tenants={"path": str(shops)})
    every = Request("g", "r-1", None, None, 0.5, 0.0)
    assert budget_of(settings, every) == (2.0, True)
    assert budget_of(settings, Request("g", "r-1", "acme", None, 0.5, 0.0)) == (5.0, False)
    assert budget_of(Settings(sink={"rate_limit_per_second": 4}), every) == (4.0, False)
    state = Status(every, 1)
    state.progress[("orders", 0)] = Progress("g", "r-1", "orders", 0, 0, 100, 10, 60, 0)
    assert "at most ~60 s left at the floor (50% of the slowest shop's 2/s)" in render(state, 2.0, True)
