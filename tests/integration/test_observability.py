"""What on-call sees: every metric with the right values, readiness that follows the API, and no
secret anywhere in logs, metrics or dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.config import AuditSettings
from connector.localkafka import LocalKafka, free_port
from connector.samples import make_stream
from connector.sandbox import Sandbox
from tests.conftest import SASL_PASSWORD
from tests.helpers import create_topics, produce, read_topic, running, settings_for, wait_until
from tests.procs import ConnectorProcess, connector_env

pytestmark = pytest.mark.integration

EXPECTED_FAMILIES = {
    "connector_events_consumed", "connector_events_resolved", "connector_events_dead_lettered",
    "connector_api_requests", "connector_api_request_seconds", "connector_api_retries",
    "connector_api_rate_limited", "connector_circuit_open", "connector_api_in_flight",
    "connector_rate_limiter_wait_seconds", "connector_consumer_lag", "connector_committed_offset",
    "connector_unresolved_events", "connector_unresolved_bytes", "connector_paused_partitions",
    "connector_oldest_unsynced_event_age_seconds", "connector_unknown_fields",
    "connector_dead_letter_write_failures",
}  # fmt: skip


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_expose_every_figure_with_the_right_values(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """After a run: consumed = produced, dead-lettered = poison count by stage, delivered + coalesced
    account for every event, offsets and lag per partition, nothing held, nothing unsynced."""
    stream = make_stream(300, 60, seed=61)
    poison = [(b"p1", b"{"), (b"p2", b'{"external_id": "x", "status": "nope"}')]
    events = [*stream.events[:100], *poison, *stream.events[100:]]
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, events)
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url)
    # The calls counted here are the deliveries; the audits' reads are counted in tests/integration/test_audit.py.
    settings = settings.model_copy(update={"audit": AuditSettings(enabled=False)})
    async with running(settings) as metrics:
        await wait_until(lambda: len(sandbox.store.orders) == 60, timeout=30)
        await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=2, timeout=20)
        await asyncio.sleep(1.5)  # a commit and a gauge refresh
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{metrics.port}/metrics")).text
            health = await client.get(f"http://127.0.0.1:{metrics.port}/healthz")
            ready = await client.get(f"http://127.0.0.1:{metrics.port}/readyz")
    assert health.status_code == 200
    assert ready.status_code == 200
    families = {f.name for f in text_string_to_metric_families(text)}
    assert families >= EXPECTED_FAMILIES
    got = samples(text)
    assert got[("connector_events_consumed_total", ())] == len(events)
    assert got[("connector_events_dead_lettered_total", (("stage", "decode"),))] == 1
    assert got[("connector_events_dead_lettered_total", (("stage", "validate"),))] == 1
    resolved = {
        dict(k[1])["resolution"]: v for k, v in got.items() if k[0] == "connector_events_resolved_total"
    }
    assert sum(resolved.values()) == len(events)
    assert (
        resolved["delivered"]
        == got[("connector_api_requests_total", (("status_class", "2xx"),))]
        == len(sandbox.store.requests)
    )
    assert resolved["dead_lettered"] == 2
    for p in ("0", "1"):
        assert got[("connector_committed_offset", (("partition", p), ("topic", topic_name)))] > 0
        assert got[("connector_consumer_lag", (("partition", p), ("topic", topic_name)))] == 0
    assert got[("connector_unresolved_events", ())] == 0
    assert got[("connector_oldest_unsynced_event_age_seconds", ())] == 0
    assert got[("connector_circuit_open", ())] == 0
    assert got[("connector_api_request_seconds_count", ())] == len(sandbox.store.requests)


async def test_readyz_follows_the_api_key(kafka_bootstrap: str, topic_name: str, sandbox: Sandbox) -> None:
    """/readyz: ready, then not ready while the API refuses the key, then ready once it accepts it."""
    stream = make_stream(200, 200, seed=67)
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, stream.events[:20])
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url, probe_interval_seconds=1.0)
    async with running(settings) as metrics, httpx.AsyncClient() as client:

        async def status() -> int:
            return (await client.get(f"http://127.0.0.1:{metrics.port}/readyz")).status_code

        await wait_until(lambda: len(sandbox.store.orders) == 20, timeout=30)
        assert await status() == 200
        sandbox.api_key = "rotated-by-the-vendor"
        await produce(kafka_bootstrap, topic_name, stream.events[20:])

        async def not_ready() -> bool:
            return await status() == 503

        await wait_until(not_ready, timeout=30)
        sandbox.api_key = "test-key"

        async def ready() -> bool:
            return await status() == 200

        await wait_until(ready, timeout=30)
        await wait_until(lambda: len(sandbox.store.orders) == 200, timeout=30)
    assert await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=3) == []


API_KEY = "sk_live_9f8e7d6c5b4a-VERY-SECRET"


async def test_no_secret_in_any_log_line_metric_or_dead_letter(
    sasl_kafka: LocalKafka, topic_name: str, tmp_path: Path
) -> None:
    """A full run over SASL with failures (401s whose bodies echo the key, a 422 echoing it, poison
    events) at DEBUG: neither the API key nor the SASL password appears anywhere."""
    stream = make_stream(60, 30, seed=71)
    await create_topics(sasl_kafka.bootstrap_servers, {topic_name: 2, f"{topic_name}.dlq": 1})
    await produce(
        sasl_kafka.bootstrap_servers,
        topic_name,
        [
            *stream.events,
            (b"poison", b"{"),
            (b"order-00003", b'{"external_id": "order-00003", "status": "active"}'),
        ],
    )
    async with Sandbox(api_key="not-yet", rate_per_minute=60_000) as sandbox:
        sandbox.faults.update({"echo_credentials": True, "reject_external_ids": {"order-00003": 422}})
        env = connector_env(
            sasl_kafka.sasl_bootstrap_servers, topic_name, sandbox.url, LOG_LEVEL="DEBUG",
            KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA__SASL_MECHANISM="SCRAM-SHA-512",
            KAFKA__SASL_USERNAME="alice", KAFKA__SASL_PASSWORD=SASL_PASSWORD, SINK__PROBE_INTERVAL_SECONDS=1,
            METRICS__PORT=str(port := free_port()),
        )  # fmt: skip
        env["CONNECTOR_SINK__API_KEY"] = API_KEY
        proc = ConnectorProcess(env, tmp_path / "run.log").start()
        try:
            await wait_until(lambda: any(r.status == 401 for r in sandbox.store.requests), timeout=60)
            await asyncio.sleep(2)
            sandbox.api_key = API_KEY
            await wait_until(lambda: len(sandbox.store.orders) >= 29, timeout=60)
            dead = await read_topic(sasl_kafka.bootstrap_servers, f"{topic_name}.dlq", expect=2, timeout=30)
            async with httpx.AsyncClient() as client:
                metrics_text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            proc.terminate()
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            proc.stop()
    command = [sys.executable, "-m", "connector", "config", "show"]
    shown = (await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True)).stdout
    log_text = (tmp_path / "run.log").read_text()
    dead_text = json.dumps(
        [[r.key.decode(), r.value.decode(), [(k, v.decode()) for k, v in r.headers]] for r in dead]
    )
    assert len(dead) == 2
    assert "Received X-Authorization: ***" in log_text, "the echoed key was there, and masked"
    assert "event_rejected" in log_text
    for secret in (API_KEY, SASL_PASSWORD):
        for where, text in (
            ("logs", log_text),
            ("metrics", metrics_text),
            ("dead letters", dead_text),
            ("config show", shown),
        ):
            assert secret not in text, f"secret found in {where}"
    assert os.environ.get("CONNECTOR_SINK__API_KEY") != API_KEY
