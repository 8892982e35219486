"""One tenant being served, with the resources only it holds, so that each can be closed on its own.

A tenant's vendor client (its HTTP pool), pacer, circuit and deliverer (its workers) live in an
:class:`~contextlib.AsyncExitStack` of their own: a shop removed from ``tenants.path`` is closed when
it has nothing left in hand, while every other shop goes on (``tenancy.py``).

A removed shop is first *retiring*: it is routed no more, and its deliverer goes on with what it has
in hand for ``shutdown_grace_seconds``, as a stopping member would. After that its client
:class:`Retirable` refuses every event without calling the vendor (a :class:`RouteError`, dead-lettered
by the pipeline as a refusal, stage ``deliver``), so that a shop whose API is down or whose key is
revoked cannot retry forever; once its deliverer holds no job it is closed.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Self

from pydantic import SecretStr

from connector.audit import Auditor
from connector.config import SinkSettings
from connector.deliver import Deliverer
from connector.errors import RouteError
from connector.mapping import FileMapping, FunctionMapping
from connector.pacing import Pacer
from connector.readback import Held, read_back
from connector.sinks import Prepaid, Sink
from connector.structs import OrderChange

RETIRED_BUDGET = 1000.0
"""Requests a second a refusing client is paced at: it sends nothing, so only the event loop bounds
how fast what the shop had in hand is dead-lettered."""


class Retirable:
    """A tenant's vendor client that can be told to refuse every event (:meth:`refuse`) instead of
    sending it: the end of a removed tenant's grace."""

    def __init__(self, inner: Sink) -> None:
        self._inner = inner
        self.name = inner.name
        self.refusal = ""  # while set, why every event is refused

    def refuse(self, reason: str) -> None:
        """From now on, every event is refused with ``reason`` (a RouteError) and nothing is sent."""
        self.refusal = reason

    def resume(self) -> None:
        """Send again (the tenant was added back before it was closed)."""
        self.refusal = ""

    async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
        """Upsert or delete the order through the vendor's client, or refuse it (see :meth:`refuse`)."""
        if self.refusal:
            raise RouteError(self.refusal, tenant=change.tenant or None)
        await self._inner.apply(change, prepaid)

    async def probe(self, prepaid: Prepaid | None = None) -> None:
        """The vendor's probe; nothing to ask while refusing (the circuit then lets the refusals go)."""
        if not self.refusal:
            await self._inner.probe(prepaid)

    async def held_version(self, change: OrderChange) -> tuple[bool, datetime | None]:
        """What the vendor holds for ``change``'s order (see :meth:`Sink.held_version`)."""
        return await self._inner.held_version(change)

    async def read_back(self, change: OrderChange, prepaid: Prepaid | None = None) -> Held | None:
        """What the vendor holds for ``change``'s order (:func:`connector.readback.read_back`)."""
        return await read_back(self._inner, change, prepaid)

    def set_api_key(self, api_key: SecretStr) -> None:
        """Send ``api_key`` from the next request on."""
        self._inner.set_api_key(api_key)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None  # the vendor's client is closed by the stack that opened it


@dataclass(eq=False, slots=True)
class Served:
    """One tenant being served: its settings, and the parts that deliver for it.

    ``name`` is who the tenant is to this member: its orders' coalescing keys, its parked records and
    its partitions' commit metadata carry it. A tenant renamed while served keeps it (``shown``, its
    name in the tenants file now, and ``aliases`` change), so that nothing in hand or parked changes
    owner under way; a member started after the rename knows it by its new name, and takes over what
    carries the old one through ``aliases`` (``Tenancy.canonical``).
    """

    name: str
    settings: SinkSettings
    pacer: Pacer
    sink: Retirable
    deliverer: Deliverer
    stack: AsyncExitStack = field(repr=False)
    shown: str = ""
    aliases: frozenset[str] = frozenset()
    mapping: FileMapping | FunctionMapping | None = None
    auditor: Auditor | None = None  # its read-back audits, and what a resync hands it
    reported_429_before: int = 0
    removed_at: float | None = None  # monotonic: when it was removed from the tenants (retiring)

    @property
    def retiring(self) -> bool:
        """Removed from the tenants: routed no more, closed once it has nothing in hand."""
        return self.removed_at is not None

    @property
    def names(self) -> frozenset[str]:
        """Every name that is this tenant's: who it is, its name in the tenants file, its aliases."""
        return frozenset({self.name, self.shown, *self.aliases})

    async def close(self) -> None:
        """Stop its workers and close its vendor client (its deliverer first)."""
        await self.stack.aclose()


__all__ = ["RETIRED_BUDGET", "Retirable", "Served"]
