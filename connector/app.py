"""Composes the resources of `connector run` and closes them in reverse order.

Order of opening: metrics server → vendor sink → dead-letter producer → deliverer → Kafka source.
The source closes first (leaving the group), so its last revoke callback still has every other resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from contextlib import AsyncExitStack

from connector.config import Settings
from connector.deadletter import DeadLetterPublisher
from connector.logs import get_logger, register_secret
from connector.metrics import Metrics, MetricsServer
from connector.pipeline import Pipeline
from connector.sinks import Sink, make_sink
from connector.source import Source

log = get_logger("connector.app")


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    metrics: Metrics | None = None,
    sink: Sink | None = None,
) -> Pipeline:
    """Run the connector until ``stop`` is set; drain, commit and close everything. Returns the
    pipeline (its tracker and metrics) for callers that want to inspect the final state."""
    register_secret(settings.sink.api_key.get_secret_value())
    register_secret(settings.kafka.sasl_password.get_secret_value())
    metrics = metrics or Metrics()
    async with AsyncExitStack() as stack:
        if settings.metrics.port:
            await stack.enter_async_context(
                MetricsServer(metrics, settings.metrics.host, settings.metrics.port)
            )
        sink = await stack.enter_async_context(sink or make_sink(settings.sink))
        dlq = await stack.enter_async_context(
            DeadLetterPublisher(settings.dlq.topic, settings.kafka, settings.dlq.body_max_chars)
        )
        dlq.on_failure = metrics.dead_letter_failures.inc
        pipeline = Pipeline(settings, sink, dlq, metrics)
        await stack.enter_async_context(pipeline.deliverer)
        source = await stack.enter_async_context(
            Source(settings.kafka, pipeline.on_revoked, pipeline.on_assigned)
        )
        log.info(
            "started",
            topics=settings.kafka.topics,
            group_id=settings.kafka.group_id,
            sink=settings.sink.kind,
            rate_limit_per_second=settings.sink.rate_limit_per_second,
            max_in_flight=settings.sink.max_in_flight,
            pid=os.getpid(),
        )
        await pipeline.run(source, stop)
    return pipeline


def install_signal_handlers(stop: asyncio.Event) -> None:
    """First SIGTERM/SIGINT: drain and exit 0. A second one: exit at once, committing nothing more."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second_signal_exit_now", signal=signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)


async def main(settings: Settings) -> None:
    """The `connector run` entry point: serve until a signal arrives."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await serve(settings, stop)
