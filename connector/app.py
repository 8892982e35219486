"""Composes the resources of `connector run` and closes them in reverse order.

Order of opening: metrics server → dead-letter writer → parking topic (many tenants) → pace topic →
tenancy (per tenant: vendor sink, deliverer; each tenant's pacer shares its cuts through the pace
topic) → parking → resync (the resync topic, and the source topic read outside the group) → source.
The source closes first (leaving the group), so its last revoke callback still has every other
resource. Everything the pipeline touches outside
itself is a :class:`Parts` field: production uses the real clock, Kafka and HTTP; the simulation
(``tests/sim``) passes virtual ones and runs the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import signal
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from random import Random

import httpx

from connector.clock import SYSTEM_CLOCK, Clock
from connector.coalesce import Coalescer
from connector.config import Settings, SinkSettings
from connector.deadletter import DeadLetterPublisher, DeadLetterWriter, KafkaDeadLetterWriter
from connector.endpoints import MetricsServer
from connector.errors import ConfigError
from connector.fence import Fence
from connector.fleetpace import FleetPace, KafkaPaceLog, PaceLog
from connector.gauges import Gauges
from connector.health import Health
from connector.instruments import DeadLetterFailed
from connector.ledger import Ledger
from connector.logs import get_logger, register_secret
from connector.membership import Membership
from connector.metrics import Metrics
from connector.ownership import Assignment
from connector.pacing import Pacer
from connector.park import KafkaParkLog, Parking, ParkLog
from connector.pipeline import Pipeline
from connector.reader import Reader, mapper_for
from connector.resync import KafkaSourceLog, Resyncer, ResyncLog, SourceLog
from connector.sinks import Sink
from connector.source import KafkaSource, SourceFactory
from connector.tenancy import Tenancy
from connector.vendors import make_sink

log = get_logger("connector.app")


@dataclass
class Parts:
    """The pipeline's surroundings; each None field gets the production default."""

    clock: Clock = SYSTEM_CLOCK
    rng: Random = field(default_factory=Random)
    metrics: Metrics | None = None
    health: Health | None = None
    transport: httpx.AsyncBaseTransport | None = None  # the vendor, at the HTTP level
    sink: Sink | None = None  # or the vendor at the Sink level (tests)
    dead_letters: AbstractAsyncContextManager[DeadLetterWriter] | None = None
    park_log: AbstractAsyncContextManager[ParkLog] | None = None  # the parking topic (many tenants)
    pace_log: AbstractAsyncContextManager[PaceLog] | None = None  # the pace topic (cuts after 429s)
    source: SourceFactory | None = None
    # Resyncs: the resync topic, and the source topic read outside the group. By default the Kafka
    # ones when the source is Kafka's; with a source of a test's own, none unless given.
    resync_log: AbstractAsyncContextManager[ResyncLog] | None = None
    source_log: AbstractAsyncContextManager[SourceLog] | None = None


async def serve(settings: Settings, stop: asyncio.Event, parts: Parts | None = None) -> Pipeline:
    """Run the connector until ``stop`` is set; drain, commit and close everything. Returns the
    pipeline (its tracker and metrics) for callers that want to inspect the final state."""
    parts = parts or Parts()
    register_secret(settings.sink.api_key.get_secret_value())
    register_secret(settings.kafka.sasl_password.get_secret_value())
    registry_password = httpx.URL(settings.mapping.registry_url or "http://-").password
    register_secret(settings.mapping.registry_basic_auth_user_info.get_secret_value().partition(":")[2])
    register_secret(registry_password or "")
    metrics = parts.metrics or Metrics()
    health = parts.health or Health(metrics)
    clock = parts.clock
    fence = Fence(clock, settings.kafka.lease_seconds, settings.kafka.settle_seconds)

    if parts.sink is not None and settings.tenants.path:
        raise ConfigError("Parts.sink is one vendor client: it cannot serve tenants.path's tenants")

    fleet: FleetPace | None = None

    def make(sink_settings: SinkSettings, pacer: Pacer) -> AbstractAsyncContextManager[Sink]:
        if fleet is not None:
            fleet.attach(pacer)
        return parts.sink or make_sink(sink_settings, parts.transport, pacer)

    async with AsyncExitStack() as stack:
        if settings.metrics.port:
            await stack.enter_async_context(
                MetricsServer(metrics, health, settings.metrics.host, settings.metrics.port)
            )
        dlq_bytes = settings.dlq.max_message_bytes
        writer = await stack.enter_async_context(
            parts.dead_letters or KafkaDeadLetterWriter(settings.kafka, dlq_bytes)
        )
        dlq = DeadLetterPublisher(
            settings.dlq.topic,
            writer,
            settings.dlq.body_max_chars,
            clock=clock,
            rng=parts.rng,
            max_bytes=dlq_bytes,
        )
        dlq.on_failure = lambda: metrics.dead_letter_failed(DeadLetterFailed())
        park_log = None
        if settings.tenants.path:  # also with parking off: parked events are still replayed
            park_log = await stack.enter_async_context(
                parts.park_log or KafkaParkLog(settings.kafka, settings.park_topic)
            )
        fleet = await stack.enter_async_context(
            FleetPace(
                parts.pace_log or KafkaPaceLog(settings.kafka, settings.pace_topic),
                group=settings.kafka.group_id,
                member=f"{settings.kafka.client_id}-{os.getpid()}-{secrets.token_hex(4)}",
                clock=clock,
                topic=settings.pace_topic,
                hooks=metrics,
            )
        )
        # The parts of one member, each built once, here. The record path is a loop (what is
        # offered is delivered and reported back; parked records come back as replays), so the two
        # parts at its turns, tenancy and parking, are connected once the rest is built.
        assignment = Assignment()
        coalescer = Coalescer(settings.kafka.remember_keys)
        tenancy = Tenancy(settings, make, metrics, clock=clock, rng=parts.rng, fence=fence)
        park = Parking(
            settings, park_log, assignment, coalescer, tenancy, metrics, clock=clock, rng=parts.rng
        )
        membership = Membership(
            settings,
            metrics,
            assignment,
            clock=clock,
            fence=fence,
            coalescer=coalescer,
            tenancy=tenancy,
            park=park,
        )
        ledger = Ledger(
            settings,
            coalescer,
            assignment,
            dlq,
            metrics,
            clock=clock,
            dispatch=tenancy,
            parked=park,
            leases=membership,
        )
        router = tenancy.router if tenancy.many else None  # which shop a record is for, its mapping
        mapper = mapper_for(settings, health, router.mapping_of if router else None)
        reader = Reader(settings, mapper, ledger, clock=clock, locate=router.locate if router else None)
        tenancy.connect(work=ledger, linger=membership)
        park.connect(ledger=ledger, reader=reader, warmth=membership)
        gauges = Gauges(metrics, assignment, coalescer, tenancy, park)
        pipeline = Pipeline(
            settings,
            reader,
            ledger,
            membership,
            park,
            assignment,
            coalescer,
            gauges,
            metrics,
            health,
            clock=clock,
            drain=tenancy,
        )
        health.watch(tenancy)
        await stack.enter_async_context(tenancy)
        await stack.enter_async_context(park)
        kafka_source = parts.source is None
        source_log = parts.source_log or (KafkaSourceLog(settings.kafka) if kafka_source else None)
        resync_log = parts.resync_log or (
            KafkaPaceLog(settings.kafka, settings.resync_topic, role="resync", acks="all")
            if kafka_source
            else None
        )
        if source_log is not None and resync_log is not None:
            resyncer = Resyncer(
                resync_log,
                await stack.enter_async_context(source_log),
                group=settings.kafka.group_id,
                member=f"{settings.kafka.client_id}-{os.getpid()}",
                settings=settings.resync,
                clock=clock,
                hooks=metrics,
            )
            resyncer.connect(owned=assignment, shops=tenancy, reader=reader, newer=coalescer)
            await stack.enter_async_context(resyncer)
        make_source = parts.source or (
            lambda revoked, assigned: KafkaSource(settings.kafka, revoked, assigned)
        )
        source = await stack.enter_async_context(make_source(membership.on_revoked, membership.on_assigned))
        log.info(
            "started",
            topics=settings.kafka.topics,
            group_id=settings.kafka.group_id,
            sink=settings.sink.kind,
            rate_limit_per_second=settings.sink.rate_limit_per_second,
            max_in_flight=settings.sink.max_in_flight,
            tenants=len(tenancy.served()) if tenancy.many else None,
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


GC_THRESHOLDS = (100_000, 20, 10)
"""The garbage collector's thresholds while serving (Python's defaults: 700, 10, 10). With the
defaults, the objects a backlog keeps for seconds (changes, records, jobs) outlive the young
generation and are scanned again by the older ones: in ``bench.tenants`` (1,000 shops) the collector
took 9 s of a 60 CPU s run, and full collections of about 230 ms each stalled the loop (a stall gives
up every budget tick due in it). With these, 0.4 s in 96 collections, 8 of them over 5 ms. The price:
garbage in reference cycles waits longer to be freed. The largest was aiokafka's dropped fetches, now
freed at once (``connector._fetches``: K's peak RSS 154 MB, where it had risen from 164 to 190 with
these thresholds; see ``docs/benchmarks.md``)."""


async def main(settings: Settings) -> None:
    """The `connector run` entry point: serve until a signal arrives.

    What is loaded at start (modules, vendor models: about 67,000 objects) lives as long as the
    process, so it is moved out of the garbage collector's way first: every full collection would
    otherwise scan it again, about 20 ms of a loop that must not stall at high budgets (at 1,000
    requests a second, each stall of the loop is that many budget ticks given up). The collector's
    thresholds are then raised (:data:`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await serve(settings, stop)
