"""The parking layout: how many partitions the parking topic has (looked for again while it is not
there), and which of them a source partition parks on.

A part of its own because it is what the parking state of every partition is laid out on, known
before any of it and changing on its own schedule: the topic may be missing at start (created later
by an operator), and the source layout comes with every rebalance."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Mapping

from connector.logs import get_logger
from connector.park.log import ParkLog
from connector.structs import TopicPartition

log = get_logger("connector.park")

_TOPIC_RETRY_S = 5.0


class ParkLayout:
    """The parking topic's partitions, and each source partition's own among them."""

    def __init__(self, park_log: ParkLog | None, topic: str, may_park: bool) -> None:
        self._log = park_log
        self._topic = topic
        self._may_park = may_park
        self._index: dict[TopicPartition, int] = {}
        self.partitions = 0
        """The parking topic's partitions; 0 while it was not found (not there, or not reachable)."""

    async def find(self) -> None:
        """Ask the parking topic for its partitions (an error when it is not reachable)."""
        assert self._log is not None
        self.partitions = await self._log.partitions()
        if not self.partitions and self._may_park:
            log.error(
                "park_topic_missing",
                topic=self._topic,
                action="no shop is parked (a failing shop holds back the partitions it shares), and "
                "partitions whose last commit has parking state wait, until the topic exists: create "
                "it (as many partitions as the sources have, retention.ms=-1)",
            )

    async def watch(self) -> None:
        """The parking topic was not there (or not reachable) at start: look again until it is."""
        while not self.partitions:
            await asyncio.sleep(_TOPIC_RETRY_S)
            with contextlib.suppress(Exception):
                await self.find()
        log.info("park_topic_found", topic=self._topic, partitions=self.partitions)

    def set_layout(self, partitions: Mapping[str, int]) -> None:
        """Every source partition's place in the layout (the same on every member): its index
        modulo the parking topic's partitions is the parking partition of a source partition that
        never parked anything (once something was, its commit records which one)."""
        ordered = [TopicPartition(t, p) for t in sorted(partitions) for p in range(partitions[t])]
        self._index = {tp: i for i, tp in enumerate(ordered)}

    def queue_of(self, tp: TopicPartition) -> int:
        """The parking partition of ``tp`` by the layout (one outside it: by a hash of its name)."""
        return self._index.get(tp, zlib.crc32(str(tp).encode())) % max(1, self.partitions)


__all__ = ["ParkLayout"]
