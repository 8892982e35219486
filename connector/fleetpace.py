"""One budget per key across the fleet: the members tell each other of the cuts 429s made them make.

The vendor's 429s fall on whichever member's request found its bucket empty, often on one member for
many seconds while the others see none. Each cut a member makes (:class:`~connector.adapt.Cut`) is
therefore published on a small compacted topic, the *pace topic* (``delivery.pace_topic``, by default
``<first of kafka.topics>.pace``), and every other member of the group follows the newest cut of the
budget: the whole fleet slows at once, and a member that starts reads the cuts in force before it
sends (:mod:`connector.adapt` explains why a cut is all there is to share).

Wire format, version 1. Key: UTF-8 ``<group id>/<tenant>`` (the tenant is ``""`` for the single shop),
so compaction keeps the newest cut of each budget. Value: a UTF-8 JSON object::

    {"v": 1, "group": "orders-connector", "tenant": "acme", "by": "orders-connector-1f0c9a2b",
     "at": 1800000000.125, "estimate": 0.5, "factor": 0.25, "resume": 0.425,
     "hold_until": 1800000002.125}

``at`` and ``hold_until`` are wall-clock seconds; ``estimate``, ``factor`` and ``resume`` are shares of
the budget (see :class:`~connector.adapt.Cut`); ``by`` names the member that made it. Version rule:
fields may be added within a version and a reader ignores names it does not know; removing a field or
changing the meaning or type of one is a new ``v``. A reader skips a record of a version it does not
know, or that it cannot read, with one log line per kind (``pace_signal_skipped``): an older member
then paces on its own 429s alone, as before the topic existed. Records of another group are ignored.

The topic is advisory, never in the way of delivery: publishing is fire-and-forget from a task of its
own, and if the topic does not exist (``pace_topic_missing``), or cannot be written or read
(``pace_publish_failed``, ``pace_read_failed``, retried), each member paces on its own 429s alone.

:class:`PaceLog` is the seam: :class:`KafkaPaceLog` here, an in-memory one in the simulation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Protocol, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP

from connector._kafka import client_options, topic_partitions
from connector._wire import Unreadable, json_object, number, share
from connector.adapt import Cut
from connector.clock import Clock
from connector.config import KafkaSettings
from connector.instruments import NO_HOOKS, PaceCut, PaceHooks
from connector.logs import get_logger
from connector.pacing import Pacer

log = get_logger("connector.fleetpace")

_CUT_HERE, _CUT_FOLLOWED = PaceCut("429"), PaceCut("fleet")

VERSION = 1
"""The version of the records this member writes, and the only one it reads."""
PUBLISH_TIMEOUT_S = 5.0
"""A cut not written within this is given up (a newer one will follow if the 429s go on)."""
RETRY_S = (1.0, 30.0)
"""Waits between attempts to read the topic again after a failure: first, most."""
FIRST_READ_S = 2.0
"""At start, the cuts in force are read before anything is sent, for at most this long."""


class PaceLog(Protocol):
    """The pace topic, as a member writes and reads it."""

    async def partitions(self) -> int:
        """The topic's partition count (0: it does not exist)."""
        ...

    async def publish(self, key: bytes, value: bytes) -> None:
        """Write one record; raise if it could not be."""
        ...

    async def read(self) -> list[bytes]:
        """The values of records not read yet. The first call returns at once what the topic holds
        (from its beginning: perhaps nothing); a later one waits a moment when there is nothing new
        (and returns an empty list then). Raises if the topic cannot be read."""
        ...


def encode(group: str, tenant: str, by: str, cut: Cut) -> tuple[bytes, bytes]:
    """The record of ``cut`` (key, value), in the current version."""
    value = {
        "v": VERSION,
        "group": group,
        "tenant": tenant,
        "by": by,
        "at": cut.at,
        "estimate": cut.estimate,
        "factor": cut.factor,
        "resume": cut.resume,
        "hold_until": cut.hold_until,
    }
    return f"{group}/{tenant}".encode(), json.dumps(value, separators=(",", ":")).encode()


def decode(value: bytes) -> tuple[str, str, str, Cut]:
    """``(group, tenant, by, cut)`` of a record; :class:`Unreadable` if it is not one this version
    reads (another version, not JSON, a field missing or of the wrong type)."""
    data = json_object(value, VERSION)
    try:
        names = (str(data["group"]), str(data["tenant"]), str(data["by"]))
        cut = Cut(
            at=number(data["at"]),
            estimate=share(data["estimate"]),
            factor=share(data["factor"]),
            resume=share(data["resume"]),
            hold_until=number(data["hold_until"]),
        )
    except (KeyError, TypeError, ValueError):
        raise Unreadable("a field missing or invalid") from None
    return (*names, cut)


class FleetPace:
    """This member's side of the pace topic: publishes its cuts, follows the others' (see the module
    docstring). :meth:`attach` each budget's pacer; a cut read before its pacer exists is kept and
    followed when it is attached."""

    def __init__(
        self,
        pace_log: AbstractAsyncContextManager[PaceLog] | None,
        *,
        group: str,
        member: str,
        clock: Clock,
        topic: str = "",
        hooks: PaceHooks = NO_HOOKS,
    ) -> None:
        self.group = group
        self.member = member
        self._opener = pace_log
        self._clock = clock
        self._topic = topic
        self._hooks = hooks
        self._log: PaceLog | None = None
        self._pacers: dict[str, Pacer] = {}
        self._latest: dict[str, Cut] = {}  # the newest cut read per budget, for pacers attached later
        self._outbox: dict[str, Cut] = {}  # the newest cut of each budget not yet written
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._skipped: set[str] = set()
        self.published = 0
        self.followed = 0

    @property
    def active(self) -> bool:
        """Whether cuts are shared (the topic exists and could be opened)."""
        return self._log is not None

    async def __aenter__(self) -> Self:
        if self._opener is None:
            return self
        try:
            opened = await self._stack.enter_async_context(self._opener)
            partitions = await opened.partitions()
        except Exception as exc:  # the fleet paces on its own 429s: never a reason not to deliver
            await self._close_quietly()
            log.warning(
                "pace_topic_unavailable",
                topic=self._topic,
                error=f"{type(exc).__name__}: {exc}"[:300],
                action="each member paces on its own 429s only",
            )
            return self
        if partitions == 0:
            await self._close_quietly()
            log.warning(
                "pace_topic_missing",
                topic=self._topic,
                action="each member paces on its own 429s only; create the topic (compacted, one "
                "partition) and restart to share them",
            )
            return self
        self._log = opened
        try:
            async with asyncio.timeout(FIRST_READ_S):
                for value in await opened.read():
                    self._receive(value)
        except Exception as exc:  # read on in the background
            log.warning("pace_read_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        self._tasks = [
            asyncio.create_task(self._read_loop(opened), name="pace-read"),
            asyncio.create_task(self._write_loop(opened), name="pace-write"),
        ]
        log.info("pace_topic_shared", topic=self._topic, member=self.member)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._log = None
        await self._close_quietly()

    async def _close_quietly(self) -> None:
        try:
            await self._stack.aclose()
        except Exception as exc:
            log.warning("pace_topic_close_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    # -- the pacers ---------------------------------------------------------------------------
    def attach(self, pacer: Pacer) -> None:
        """Share the cuts of ``pacer``'s budget (named by ``pacer.name``), and follow the newest one
        already read."""
        self._pacers[pacer.name] = pacer
        pacer.sharing = self
        cut = self._latest.get(pacer.name)
        if cut is not None:
            pacer.adopt(cut)

    def publish(self, budget: str, cut: Cut) -> None:
        """Queue ``cut`` of ``budget`` for the topic (only the newest of a budget is written)."""
        self._hooks.pace_cut(_CUT_HERE)
        if self._log is None:
            return
        self._outbox[budget] = cut
        self._wake.set()

    @property
    def pacers(self) -> Mapping[str, Pacer]:
        """The pacers attached, by budget."""
        return self._pacers

    # -- the topic ----------------------------------------------------------------------------
    async def _write_loop(self, pace_log: PaceLog) -> None:
        failing = False
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                budget = next(iter(self._outbox))
                cut = self._outbox.pop(budget)
                key, value = encode(self.group, budget, self.member, cut)
                try:
                    async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                        await pace_log.publish(key, value)
                except Exception as exc:
                    if not failing:
                        log.warning(
                            "pace_publish_failed",
                            tenant=budget,
                            error=f"{type(exc).__name__}: {exc}"[:300],
                            action="the other members pace on their own 429s until it works again",
                        )
                    failing = True
                    continue
                if failing:
                    log.info("pace_publish_recovered", tenant=budget)
                failing = False
                self.published += 1

    async def _read_loop(self, pace_log: PaceLog) -> None:
        wait = RETRY_S[0]
        failing = False
        while True:
            try:
                values = await pace_log.read()
            except Exception as exc:
                if not failing:
                    log.warning(
                        "pace_read_failed",
                        error=f"{type(exc).__name__}: {exc}"[:300],
                        action="this member paces on its own 429s until it can read again",
                    )
                failing = True
                await asyncio.sleep(wait)
                wait = min(RETRY_S[1], wait * 2)
                continue
            if failing:
                log.info("pace_read_recovered")
            failing, wait = False, RETRY_S[0]
            for value in values:
                self._receive(value)

    def _receive(self, value: bytes) -> None:
        try:
            group, tenant, by, cut = decode(value)
        except Unreadable as exc:
            if exc.kind not in self._skipped:
                self._skipped.add(exc.kind)
                log.warning(
                    "pace_signal_skipped",
                    reason=exc.kind,
                    reads_version=VERSION,
                    action="records like it are skipped; this member paces on its own 429s for them",
                )
            return
        if group != self.group or by == self.member:
            return
        known = self._latest.get(tenant)
        if known is None or cut.at > known.at:
            self._latest[tenant] = cut
        pacer = self._pacers.get(tenant)
        if pacer is not None and pacer.adopt(cut):
            self.followed += 1
            self._hooks.pace_cut(_CUT_FOLLOWED)
            log.debug(
                "pace_cut_followed",
                tenant=tenant,
                by=by,
                factor=round(cut.factor, 3),
                estimate=round(cut.estimate, 3),
                late_s=round(self._clock.wall() - cut.at, 3),
            )


class KafkaPaceLog:
    """The pace topic on the real broker: a producer (``acks=1``: a lost cut only costs a 429) and a
    group-less consumer of every partition from the beginning. Any small compacted topic read whole
    and written by the members is one (the resync topic: ``role="resync"``, ``acks="all"``)."""

    def __init__(self, kafka: KafkaSettings, topic: str, role: str = "pace", acks: int | str = 1) -> None:
        self.topic = topic
        self._kafka = kafka
        self._producer = AIOKafkaProducer(
            acks=acks,
            request_timeout_ms=int(PUBLISH_TIMEOUT_S * 1000),
            client_id=f"{kafka.client_id}-{role}",
            **client_options(kafka),
        )
        self._consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{kafka.client_id}-{role}-reader",
            **client_options(kafka),
        )
        self._assigned = False

    async def __aenter__(self) -> Self:
        await self._producer.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._consumer.stop()
        finally:
            await self._producer.stop()

    async def partitions(self) -> int:
        """The topic's partitions, from the admin API (asking a producer's metadata for a topic that
        does not exist could create it, uncompacted)."""
        return len(await topic_partitions(client_options(self._kafka), self.topic))

    async def publish(self, key: bytes, value: bytes) -> None:
        """Send and wait for the leader's acknowledgement."""
        await self._producer.send_and_wait(self.topic, value=value, key=key)

    async def read(self) -> list[bytes]:
        """Fetch what was written since the last read (waits up to half a second; the first time,
        not at all if the topic is empty)."""
        if not self._assigned:
            found = await topic_partitions(client_options(self._kafka), self.topic)
            if not found:  # not created yet: looked for again on the next read
                return []
            parts = [KafkaTP(self.topic, p) for p in found]
            self._consumer.assign(parts)
            await self._consumer.seek_to_beginning(*parts)
            self._assigned = True
            ends = await self._consumer.end_offsets(parts)
            if not any(ends.values()):
                return []
        batches = await self._consumer.getmany(timeout_ms=500)
        return [r.value for records in batches.values() for r in records if r.value is not None]


__all__ = ["VERSION", "FleetPace", "KafkaPaceLog", "PaceLog", "Unreadable", "decode", "encode"]
