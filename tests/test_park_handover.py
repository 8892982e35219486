"""The replay's handover (``connector/park/_handover.py``): a parked tenant gets one replayed event
at a time while its circuit is open (its probe), ``tenants.park_replay_events`` once it closed; each
is offered at its original place, unless a newer parked event of its order follows."""

from __future__ import annotations

from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Resolution
from connector.config import Settings, TenantsSettings
from connector.deadletter.publish import Failure
from connector.metrics import Metrics
from connector.park import ShopHealth
from connector.park._handover import Handover
from connector.parked import Parked, ParkState
from connector.structs import OrderChange, Record, TopicPartition, Version

TP = TopicPartition("orders", 3)


class _Shops:
    def __init__(self) -> None:
        self.closed: dict[str, bool] = {"acme": False, "zeta": True}

    @property
    def many(self) -> bool:
        return True

    def names(self) -> list[str]:
        return list(self.closed)

    def health(self, tenant: str) -> ShopHealth | None:
        if tenant not in self.closed:
            return None
        return ShopHealth(None, self.closed[tenant], 5.0, 1.0)

    def open_circuits(self) -> set[str]:
        return set()

    def canonical(self, name: str) -> str:
        return name


class _Path:
    """The read path and the ledger: every replayed record decodes to a change of its order."""

    def __init__(self) -> None:
        self.offered: list[tuple[OrderChange, float]] = []
        self.resolved: list[tuple[Record, Resolution]] = []
        self.newer: set[str] = set()  # orders a newer parked event of follows

    def accept(self, record: Record) -> OrderChange | None:
        return OrderChange(record, (record.key or b"").decode(), "upsert", tenant="acme")

    def peek(self, record: Record) -> OrderChange | None:
        return self.accept(record)

    async def prefetch(self, records: list[Record]) -> None:
        return None

    def offer(self, change: OrderChange, hold: float = 0.0) -> None:
        self.offered.append((change, hold))

    def resolve(self, record: Record, why: Resolution) -> None:
        self.resolved.append((record, why))

    def dead_letter(self, record: Record, failure: Failure) -> None:
        raise AssertionError("nothing is dead-lettered here")

    def superseded(self, change: OrderChange, record: Record) -> bool:
        return change.external_id in self.newer


def _handover(replay_events: int = 3) -> tuple[Handover, _Shops, _Path]:
    settings = Settings(tenants=TenantsSettings(park_replay_events=replay_events))
    shops, path = _Shops(), _Path()
    handover = Handover(settings, shops, Metrics(), SYSTEM_CLOCK, path)
    handover.connect(path, path)
    return handover, shops, path


def _parked(at: int, tenant: str = "acme", key: str = "A-1", as_of: Version | None = None) -> Parked:
    record = Record("orders", 3, 40 + at, key.encode(), b"{}", (), 1234, parked_at=at)
    return Parked(record, tenant, "0000beef", 0.0, as_of)


def test_a_tenant_with_its_circuit_open_gets_one_event_at_a_time_then_its_share() -> None:
    handover, shops, _ = _handover(replay_events=3)
    state = ParkState(0, "0000beef", 50)
    assert handover.allowance("acme") == 1  # open: the probe only
    handover.hand_over(state, _parked(0))
    assert handover.allowance("acme") == 0
    shops.closed["acme"] = True
    assert handover.allowance("acme") == 2
    handover.returned("acme")
    assert handover.allowance("acme") == 3
    assert handover.allowance("zeta") == 3  # another tenant's share is its own
    assert handover.allowance("gone") > 1_000  # not served: its events go to the DLQ


def test_what_a_revoked_partition_handed_over_no_longer_counts() -> None:
    handover, shops, _ = _handover(replay_events=3)
    shops.closed["acme"] = True
    state = ParkState(0, "0000beef", 50)
    handover.hand_over(state, _parked(0))
    handover.hand_over(state, _parked(1, key="A-2"))
    assert state.dispatched == {0: "acme", 1: "acme"}
    assert handover.allowance("acme") == 1
    handover.forget(state)
    assert handover.allowance("acme") == 3


def test_a_replayed_event_is_offered_at_its_place_unless_a_newer_parked_one_of_its_order_follows() -> None:
    handover, _, path = _handover()
    state = ParkState(0, "0000beef", 50)
    newer = Version(None, TP, 99)
    handover.hand_over(state, _parked(0, key="A-1", as_of=newer))
    path.newer.add("A-2")
    replaced = _parked(1, key="A-2")
    handover.hand_over(state, replaced)
    [(change, hold)] = path.offered
    assert (change.external_id, change.record.offset, hold) == ("A-1", 40, 0.0)
    assert change.version == newer  # it stands for the newer event skipped as identical to it
    assert path.resolved == [(replaced.record, Resolution.REPLACED)]
