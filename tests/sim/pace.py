"""An in-memory pace topic (:class:`connector.fleetpace.PaceLog`), for the simulation and the tests: records
in the order written, each visible to readers ``delay`` seconds after it was written (a produce and a
fetch); a member reaches it only while ``reachable`` says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self


class Unreachable(Exception):
    """The pace topic cannot be reached from this member."""


class PaceTopic:
    """The topic: ``(visible at, key, value)`` of every record written."""

    def __init__(self, delay: float = 0.05, exists: bool = True) -> None:
        self.delay = delay
        self.exists = exists
        self.records: list[tuple[float, bytes, bytes]] = []
        self._written = asyncio.Event()

    def log_for(self, reachable: Callable[[], bool] = lambda: True) -> MemoryPaceLog:
        """What one member reaches of the topic."""
        return MemoryPaceLog(self, reachable)

    def write(self, key: bytes, value: bytes) -> None:
        """Append a record (visible ``delay`` seconds from now)."""
        self.records.append((asyncio.get_running_loop().time() + self.delay, key, value))
        self._written.set()

    async def written(self, timeout: float) -> None:
        """Wait until something is written, at most ``timeout`` seconds."""
        self._written.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._written.wait()
        except TimeoutError:
            return


class MemoryPaceLog:
    """One member's reader and writer of a :class:`PaceTopic`."""

    def __init__(self, topic: PaceTopic, reachable: Callable[[], bool]) -> None:
        self._topic = topic
        self._reachable = reachable
        self._position = 0
        self._read = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def partitions(self) -> int:
        return 1 if self._topic.exists else 0

    async def publish(self, key: bytes, value: bytes) -> None:
        await asyncio.sleep(0.002)  # a round trip to the leader
        if not self._reachable():
            raise Unreachable("the pace topic refused the write")
        self._topic.write(key, value)

    async def read(self) -> list[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0.5 if self._read else 0.0)  # the first read does not wait
        self._read = True
        while True:
            if not self._reachable():
                await asyncio.sleep(0.002)
                raise Unreachable("broker unreachable")
            records = self._topic.records
            now = loop.time()
            ready = self._position
            while ready < len(records) and records[ready][0] <= now:
                ready += 1
            if ready > self._position:
                values = [value for _, _, value in records[self._position : ready]]
                self._position = ready
                return values
            if now >= deadline:
                return []
            if ready < len(records):  # written, not visible yet
                await asyncio.sleep(min(records[ready][0], deadline) - now)
            else:
                await self._topic.written(deadline - now)
