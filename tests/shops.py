"""Shops as a tenancy serves them (``connector._served.Served``), built from real parts and never
entered (no worker runs, no call is made), for the tests of the parts that read them: the routing
index (``tests/test_router.py``) and the per-shop view (``tests/test_tenantview.py``)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import datetime
from random import Random

from pydantic import SecretStr

from connector._served import Retirable, Served
from connector.circuit import Circuit
from connector.clock import SYSTEM_CLOCK
from connector.config import SinkSettings
from connector.deliver import Deliverer
from connector.fence import Fence
from connector.metrics import Metrics
from connector.pacing import Pacer
from connector.retry import RetryPolicy
from connector.sinks import Prepaid
from connector.structs import OrderChange, TopicPartition
from tests.fakes import NoWork

TOPIC = "orders"
TP = TopicPartition(TOPIC, 0)


class Silent:
    """A vendor client that is never called here (the shop is never entered)."""

    name = "silent"

    async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
        raise AssertionError("no call is made")

    async def probe(self, prepaid: Prepaid | None = None) -> None:
        raise AssertionError("no call is made")

    async def held_version(self, change: OrderChange) -> tuple[bool, datetime | None]:
        raise AssertionError("no call is made")

    def set_api_key(self, api_key: SecretStr) -> None:
        pass


def owning() -> Fence:
    """A fence owning partition 0 of ``orders`` for good: a shop's pacer paces it at its full rate."""
    fence = Fence(SYSTEM_CLOCK, lease_seconds=float("inf"), settle_seconds=0.0)
    fence.assign(TP, 0.0)
    fence.renew(TP, float("inf"))
    return fence


def shop(
    name: str,
    *,
    shown: str = "",
    aliases: tuple[str, ...] = (),
    budget: float = 10.0,
    kind: str = "loop",
    api_version: str = "",
    retiring: bool = False,
    fence: Fence | None = None,
) -> Served:
    """``name`` served (known in the tenants file as ``shown``, by default its name), paced at
    ``budget`` requests a second over partition 0 of ``orders``; ``retiring``: removed, routed no
    more."""
    settings = SinkSettings(
        kind=kind,
        api_version=api_version,
        base_url=f"http://{name}",
        api_key="key",
        rate_limit_per_second=budget,
    )
    pacer = Pacer(budget, SYSTEM_CLOCK, fence or owning(), name=name)
    pacer.set_layout({TOPIC: 1})
    sink = Retirable(Silent())
    deliverer = Deliverer(
        sink,
        NoWork(),
        Metrics(),
        clock=SYSTEM_CLOCK,
        rng=Random(1),
        pacer=pacer,
        circuit=Circuit(),
        policy=RetryPolicy(),
        target=None,
        max_in_flight=1,
        tenant=name,
    )
    served = Served(
        name, settings, pacer, sink, deliverer, AsyncExitStack(), shown or name, frozenset(aliases)
    )
    served.removed_at = 1.0 if retiring else None
    return served


def by_name(*shops: Served) -> dict[str, Served]:
    """``shops`` as a tenancy holds them: by who each is."""
    return {s.name: s for s in shops}
