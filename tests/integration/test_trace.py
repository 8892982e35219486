"""``connector trace`` against the real broker and the sandbox: one order's story, before and after the
connector ran, and after the vendor lost it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from connector.config import TenantsSettings
from connector.constants import H_EXTERNAL_ID, H_STAGE, H_TENANT
from connector.errors import ConfigError
from connector.readback import Verdict
from connector.samples import envelope, order_body
from connector.sandbox import Sandbox
from connector.trace import as_json, render, trace
from tests.helpers import (
    committed_offsets,
    create_topics,
    end_offsets,
    produce,
    running,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration


def event(version: int, **fields: Any) -> tuple[bytes, bytes]:
    body = {**order_body("T-1", version), **fields}
    return b"T-1", envelope(body, version)


async def test_trace_tells_one_orders_story_and_judges_the_vendors_copy(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """T-1's events (v1, v2, v2 again, an older v0 written late, v3) among another order's: before
    the connector ran, each record's decision, nothing committed, and the vendor behind (it holds v2);
    after it ran, in sync and committed; after an edit in the vendor's admin, differs (naming the
    field); after the vendor lost the order, missing. The other order's records (in the other
    partition) are read but not told, and not read when T-1's key is given."""
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})

    def partition_of(key: str) -> int:
        return int(DefaultPartitioner()(key.encode(), [0, 1], [0, 1]))

    other = next(f"O-{i}" for i in range(2, 99) if partition_of(f"O-{i}") != partition_of("T-1"))
    others = [(other.encode(), envelope(order_body(other, v), v)) for v in (1, 2)]
    placed = [
        partition
        for partition, _ in await produce(
            kafka_bootstrap,
            topic_name,
            [event(1), others[0], event(2), event(2), event(0), others[1], event(3)],
        )
    ]
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url)
    sandbox.store.upsert(order_body("T-1", 2))
    lines: list[str] = []

    story = await trace(settings, "T-1", progress=lines.append)
    assert story.scanned == 7
    assert [s.decision for s in story.steps] == ["superseded", "superseded", "identical", "stale", "newest"]
    assert not any(s.committed for s in story.steps)
    assert story.verdict is Verdict.BEHIND, story.line
    assert order_body("T-1", 3)["updated_at"][:19] in story.line
    assert "reading 7 records" in lines[0]
    assert "T-1" in render(story)
    assert json.loads(json.dumps(as_json(story)))["verdict"] == "behind"

    async with running(settings):
        await wait_until(lambda: sandbox.holds({"T-1": order_body("T-1", 3)}), timeout=60)
        ends = await end_offsets(kafka_bootstrap, topic_name)

        async def committed() -> bool:
            return await committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic_name) == ends

        await wait_until(committed, timeout=20)
    story = await trace(settings, "T-1", progress=lines.append)
    assert story.verdict is Verdict.IN_SYNC, story.line
    assert all(s.committed for s in story.steps)

    sandbox.store.tamper([], [], {"T-1": {"name": "#edited in the admin"}})
    story = await trace(settings, "T-1", progress=lines.append)
    assert story.verdict is Verdict.DIFFERS, story.line
    assert story.differs == ["name"]
    naive = order_body("T-1", 3)["updated_at"].removesuffix("+00:00")  # the same instant, no offset
    sandbox.store.tamper([], [], {"T-1": {"updated_at": naive}})
    story = await trace(settings, "T-1", progress=lines.append)
    assert story.verdict is Verdict.DIFFERS, story.line
    assert story.differs == ["name", "updated_at"], "read as UTC: the newest version, not as sent"

    sandbox.store.tamper(["T-1"], [], {})
    story = await trace(settings, "T-1", progress=lines.append)
    assert story.verdict is Verdict.MISSING, story.line
    assert (await trace(settings, "NOPE", progress=lines.append)).verdict is Verdict.NO_EVENTS
    keyed = await trace(settings, "T-1", key=b"T-1", progress=lines.append)
    assert keyed.verdict is Verdict.MISSING
    assert len(keyed.steps) == 5
    assert keyed.scanned == placed.count(placed[0]) == 5, "only T-1's partition is read"


async def test_with_many_shops_a_trace_tells_one_shops_order(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """Two shops with an order of the same id, routed by ``shop`` (one of them by an alias): the
    trace of shop b's order tells b's records only and asks b's account; without --tenant, or with
    a shop not served, it says which to name."""
    boxes = {n: Sandbox(api_key=f"key-{n}") for n in ("a", "b")}
    events = [
        (b"T-1", json.dumps({**json.loads(envelope(order_body("T-1", v), v)), "shop": shop}).encode())
        for v, shop in ((1, "a"), (1, "b-old"), (2, "a"), (2, "b"))
    ]
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, events)
    path = tmp_path / "tenants.toml"
    async with Sandbox(api_key="not-a-tenant", tenants=boxes) as root:
        path.write_text(
            f'[a]\nbase_url = "{boxes["a"].url}"\napi_key = "key-a"\n\n'
            f'[b]\nbase_url = "{boxes["b"].url}"\napi_key = "key-b"\naliases = ["b-old"]\n'
        )
        settings = settings_for(kafka_bootstrap, topic_name, root.url)
        settings = settings.model_copy(
            update={"tenants": TenantsSettings(path=str(path), route="field:shop")}
        )
        boxes["b"].store.upsert(order_body("T-1", 1))
        boxes["a"].store.upsert(order_body("T-1", 2))
        story = await trace(settings, "T-1", tenant="b", progress=lambda _: None)
        assert story.scanned == 4
        assert [s.decision for s in story.steps] == ["superseded", "newest"]
        assert story.verdict is Verdict.BEHIND, story.line
        assert (
            await trace(settings, "T-1", tenant="b-old", progress=lambda _: None)
        ).verdict is Verdict.BEHIND
        assert (await trace(settings, "T-1", tenant="a", progress=lambda _: None)).verdict is Verdict.IN_SYNC
        await _dead_letter(kafka_bootstrap, f"{topic_name}.dlq", "T-1", "a")
        assert len((await trace(settings, "T-1", tenant="a", progress=lambda _: None)).dead_letters) == 1
        assert (await trace(settings, "T-1", tenant="b", progress=lambda _: None)).dead_letters == []
        for wrong in ("", "ghost"):
            with pytest.raises(ConfigError, match="--tenant"):
                await trace(settings, "T-1", tenant=wrong, progress=lambda _: None)


async def _dead_letter(bootstrap: str, topic: str, order: str, shop: str) -> None:
    """A dead letter of ``shop``'s ``order``, with the headers the connector writes."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        headers = [(H_EXTERNAL_ID, order.encode()), (H_TENANT, shop.encode()), (H_STAGE, b"validate")]
        await producer.send_and_wait(topic, b"{}", key=order.encode(), headers=headers)
    finally:
        await producer.stop()
