"""What the process says of itself on ``/healthz`` and ``/readyz``: alive (the consumer loop beats),
and ready (in the group, the API not down for every shop, reading not waiting for the schema
registry). One owner for that state; the parts tell it what changed, and the metrics server reads
it. Metrics are a separate, write-only instrument (``connector.instruments``): nothing reads
health back from them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from connector.instruments import NO_HOOKS, ReadHooks, RegistryWait


class Shops(Protocol):
    """The shops this member serves (``connector.tenancy.Tenancy``): whether their APIs are all
    down, and what ``/tenants`` lists."""

    @property
    def all_down(self) -> bool: ...

    def state(self) -> list[dict[str, object]]: ...


class Health:
    """Liveness and readiness of this member."""

    def __init__(self, hooks: ReadHooks = NO_HOOKS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._hooks = hooks  # told of the registry's outages
        self._monotonic = monotonic
        self.last_progress = monotonic()
        self.joined = False
        self.registry_down = False
        self.shops: Shops | None = None

    def beat(self) -> None:
        """The consumer loop made progress (``/healthz``)."""
        self.last_progress = self._monotonic()

    def join(self) -> None:
        """Connected to the group (assigned, or waiting for an assignment)."""
        self.joined = True

    def registry_waiting(self, waiting: bool) -> None:
        """Reading began (True) or stopped (False) waiting for the schema registry: alive (it beats)
        but not ready meanwhile."""
        self._hooks.registry_wait_changed(RegistryWait(waiting, began=waiting and not self.registry_down))
        self.registry_down = waiting

    def watch(self, shops: Shops) -> None:
        """The shops whose APIs being all down makes this member not ready, and ``/tenants`` lists."""
        self.shops = shops

    @property
    def outage(self) -> bool:
        """Every shop this member serves has its API down (its outage circuit open)."""
        return self.shops is not None and self.shops.all_down

    def tenants(self) -> list[dict[str, object]]:
        """What ``/tenants`` lists."""
        return self.shops.state() if self.shops is not None else []

    @property
    def ready(self) -> bool:
        """What ``/readyz`` answers: in the group, the API not down, reading not waiting for the
        schema registry."""
        return self.joined and not self.outage and not self.registry_down

    def age(self) -> float:
        """Seconds since the consumer loop last made progress."""
        return self._monotonic() - self.last_progress


__all__ = ["Health", "Shops"]
