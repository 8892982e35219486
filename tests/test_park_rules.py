"""The park decisions (``connector/park/_rules.py``), from the shops' health, the coalescer's load and
the partitions' parking state: which shop is due to be parked, why, and on which partitions it may
be (how parking acts on them: ``tests/test_park.py``)."""

from __future__ import annotations

from typing import Any

from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Coalescer
from connector.config import KafkaSettings, Settings, TenantsSettings
from connector.metrics import Metrics
from connector.ownership import Assignment, PartitionStatus
from connector.park import ParkState, ShopHealth
from connector.park._rules import ParkRules
from connector.structs import TopicPartition
from tests.fakes import Shops, read_change

TP = TopicPartition("orders", 3)
OTHER = TopicPartition("orders", 5)


class World:
    """Rules over two owned partitions of this member, with parking state, and the shops given."""

    def __init__(self, *shops: str, kafka: dict[str, Any] | None = None, **tenants: Any) -> None:
        settings = Settings(tenants=TenantsSettings(**tenants), kafka=KafkaSettings(**(kafka or {})))
        self.shops, self.coalescer, self.metrics = Shops(*shops), Coalescer(), Metrics()
        self.assignment = Assignment()
        for tp in (TP, OTHER):
            part = self.assignment.add(tp)
            part.park = ParkState(0, "0badcafe", 0)
            part.status = PartitionStatus.OWNED
        self.rules = ParkRules(
            settings, self.assignment, self.coalescer, self.shops, self.metrics, SYSTEM_CLOCK
        )

    def waiting(self, tenant: str, orders: int, age: float) -> None:
        """``orders`` of ``tenant`` read ``age`` seconds ago and not delivered."""
        for offset in range(orders):
            self.coalescer.offer(read_change(TP, f"{tenant}-{offset}", offset, tenant, age=age))

    def starve(self, tenant: str, factor: float) -> None:
        """``tenant``'s pace cut to ``factor`` of its 10/s by 429s; its circuit closed."""
        self.shops.healths[tenant] = ShopHealth(
            open_since=None, closed=True, full_rate=10.0, pace_factor=factor
        )

    def due(self, skip: set[str] | None = None) -> dict[str, str]:
        return dict(self.rules.due(skip or set()))


def test_a_shop_whose_circuit_stays_open_is_due_once_it_was_open_long_enough() -> None:
    w = World("acme", "bolt", park_after_seconds=30.0)
    w.shops.down("acme", 29.0)
    assert w.due() == {}
    w.shops.down("acme", 31.0)
    assert w.due() == {"acme": "circuit open"}
    assert w.due(skip={"acme"}) == {}, "a park under way is not started twice"


def test_a_shop_far_behind_more_orders_than_park_max_keys_is_due() -> None:
    w = World("acme", "bolt", park_after_seconds=60.0, park_max_keys=2)
    w.waiting("acme", 3, age=120.0)
    w.waiting("bolt", 2, age=120.0)
    assert w.due() == {"acme": "3 orders waiting"}


def test_orders_waiting_less_than_park_after_seconds_are_not_behind() -> None:
    w = World("acme", park_after_seconds=60.0, park_max_keys=2)
    w.waiting("acme", 3, age=10.0)
    assert w.due() == {}


def test_only_a_shop_that_may_be_due_has_its_health_read() -> None:
    """Every second, with many shops: a shop whose orders all wait less than ``park_after_seconds``,
    its circuit closed, cannot be due whatever its health, so its health (its pace worked out) is not
    read; one waiting longer, or whose circuit is open, is judged by it."""
    w = World("acme", "bolt", "cole", park_after_seconds=60.0, park_max_keys=2)
    w.waiting("acme", 3, age=10.0)
    w.waiting("bolt", 1, age=120.0)
    w.shops.down("cole", 5.0)
    assert w.due() == {}
    assert sorted(w.shops.health_reads) == ["bolt", "cole"]


def test_a_shop_starved_by_429s_is_judged_by_what_its_pace_sends() -> None:
    """Under ``park_max_keys``, but its pace cut to a tenth of 10/s sends 30 orders in 30 s: 40 waiting
    that long are too many. Cut to a half, it is not starved: 40 are under the limit."""
    w = World("acme", park_after_seconds=30.0, park_max_keys=1_000)
    w.waiting("acme", 40, age=60.0)
    w.starve("acme", 0.5)
    assert w.due() == {}
    w.starve("acme", 0.1)
    assert w.due() == {"acme": "40 orders waiting"}


def test_room_is_the_owned_partitions_it_is_not_parked_on_under_max_parked() -> None:
    w = World("acme", "bolt", max_parked=1)
    assert w.rules.room("acme") == {TP, OTHER}
    state = w.assignment.get(TP)
    assert state is not None
    assert state.park is not None
    state.park.parked.add("acme")
    assert w.rules.room("acme") == {OTHER}, "parked there already"
    assert w.rules.room("bolt") == {OTHER}, "max_parked reached on the other"
    other = w.assignment.get(OTHER)
    assert other is not None
    other.status = PartitionStatus.REVOKING
    assert w.rules.room("bolt") == set()


def test_a_shop_with_no_room_is_not_due() -> None:
    w = World("acme", max_parked=1, park_after_seconds=30.0)
    for tp in (TP, OTHER):
        part = w.assignment.get(tp)
        assert part is not None
        assert part.park is not None
        part.park.parked.add("bolt")
    w.shops.down("acme", 3600.0)
    assert w.due() == {}


def test_a_partition_whose_metadata_would_not_fit_is_refused_and_counted() -> None:
    """A shop name that does not fit in the commit metadata beside the writer tokens' reserve."""
    w = World("acme", kafka={"metadata_max_bytes": 512})
    long_name = "s" * 400
    w.shops.healths[long_name] = w.shops.healths["acme"]
    assert w.rules.room(long_name) == set()
    assert w.rules.room("acme") == {TP, OTHER}
    refused = w.metrics.registry.get_sample_value("connector_park_refused_total")
    assert refused == 2
