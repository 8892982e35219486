"""Kafka client plumbing shared by the source and the dead-letter producer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.errors import KafkaConnectionError

from connector.errors import BrokerUnavailable
from connector.logs import get_logger

log = get_logger("connector.kafka")


async def start_within(client: Any, bootstrap_servers: str, timeout: float) -> None:
    """Start an aiokafka client, retrying while the broker is unreachable, for at most ``timeout``
    seconds; then raise BrokerUnavailable naming the broker."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.start()
            return
        except KafkaConnectionError as exc:
            if time.monotonic() >= deadline:
                await client.stop()
                raise BrokerUnavailable(
                    f"Kafka broker {bootstrap_servers} unreachable after {timeout:g}s ({exc})"
                ) from None
            log.warning("broker_unreachable", bootstrap_servers=bootstrap_servers)
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
