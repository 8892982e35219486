"""Kafka client plumbing shared by the source and the producers of the dead-letter and parking topics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from connector.config import KafkaSettings
from connector.errors import BrokerUnavailable, ConfigError
from connector.logs import get_logger

log = get_logger("connector.kafka")


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security options shared by every aiokafka client the connector makes."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        if not settings.sasl_username:
            raise ConfigError(
                "kafka.sasl_username is required with security_protocol " + settings.security_protocol
            )
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.get_secret_value(),
        )
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        context = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
        context.check_hostname = settings.ssl_check_hostname
        options["ssl_context"] = context
    return options


HEADERS_ROOM = 64 * 1024
"""Bytes a parked record may take beyond ``kafka.max_message_bytes``: its key, its own headers and the
parking headers (a value larger than the maximum is dead-lettered unparsed, never parked)."""


def durable_producer(settings: KafkaSettings, role: str, max_bytes: int | None = None) -> AIOKafkaProducer:
    """A producer whose writes count once every in-sync replica has them (idempotent, ``acks=all``):
    what an event may be resolved on (a dead letter, a parked event). It takes records up to
    ``max_bytes`` (default: ``kafka.max_message_bytes`` and :data:`HEADERS_ROOM`), not aiokafka's
    fixed 1 MiB, so what the settings let through can be written."""
    return AIOKafkaProducer(
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=15_000,
        client_id=f"{settings.client_id}-{role}",
        max_request_size=max_bytes or settings.max_message_bytes + HEADERS_ROOM,
        **client_options(settings),
    )


async def topic_partitions(options: dict[str, Any], topic: str) -> list[int]:
    """The partition numbers of ``topic`` (empty when it does not exist), from the admin API;
    ``options`` are the client options (see :func:`client_options`)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if not described or described[0].get("error_code"):
        return []
    return sorted(p["partition"] for p in described[0]["partitions"])


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
