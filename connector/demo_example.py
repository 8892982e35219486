"""`connector demo --example NAME|DIR`: one of ``examples/`` end to end, on a local broker and the sandbox.

An example is a folder with ``connector.toml`` (its ``[mapping]`` section, and optionally the topic),
the mapping it names, and ``events.jsonl`` (records, ``{"key", "headers", "value"}`` a line). The demo
works out offline what the API must end with (the newest valid state of each order, or its absence
after a delete) and how many events must be dead-lettered, produces the records, runs the connector
with the example's mapping, and prints what reached the API and the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from connector import app, logs
from connector.config import (
    DlqSettings,
    KafkaSettings,
    MappingSettings,
    MetricsSettings,
    Settings,
    SinkSettings,
)
from connector.demo import create_topics, read_topic
from connector.errors import ConfigError, InputError
from connector.localkafka import LocalKafka
from connector.mapping import Mapper
from connector.sandbox import Sandbox
from connector.structs import OrderChange, Record
from connector.validate import read_lines, record_of

PARTITIONS = 2


def find_example(name: str) -> Path:
    """The example folder ``name`` names: a path, or a folder of ``examples/`` (in the working
    directory or the checkout the package runs from)."""
    candidates = [
        Path(name),
        Path("examples") / name,
        Path(__file__).resolve().parents[1] / "examples" / name,
    ]
    for folder in candidates:
        if (folder / "connector.toml").is_file() and (folder / "events.jsonl").is_file():
            return folder
    raise ConfigError(
        f"example {name!r}: no folder with connector.toml and events.jsonl (looked in "
        f"{', '.join(str(c) for c in candidates)}); examples ship with the source checkout"
    )


@dataclass
class Example:
    """An example loaded: its mapping, topic, records and what the API must end with."""

    folder: Path
    mapping: MappingSettings
    topic: str
    records: list[Record]
    final: dict[str, OrderChange] = field(default_factory=dict)
    invalid: list[tuple[int, str]] = field(default_factory=list)

    @property
    def upserts(self) -> dict[str, dict[str, Any]]:
        """Orders the API must hold, by external_id, at their newest state."""
        return {k: c.body for k, c in self.final.items() if c.op == "upsert"}

    @property
    def deleted(self) -> list[str]:
        """Orders the API must not hold."""
        return [k for k, c in self.final.items() if c.op == "delete"]


def load_example(name: str) -> Example:
    """The example ``name``, with its expected outcome worked out offline by the mapping stage."""
    folder = find_example(name)
    config = tomllib.loads((folder / "connector.toml").read_text(encoding="utf-8"))
    section = dict(config.get("mapping", {}))
    if section.get("file") and not Path(section["file"]).is_file():
        section["file"] = str(folder / Path(section["file"]).name)
    mapping = MappingSettings.model_validate(section)
    topic = (config.get("kafka", {}).get("topics") or [f"{folder.name}.orders"])[0]
    with open(folder / "events.jsonl", "rb") as handle:
        records = [record_of(line, number, True, topic) for number, line in read_lines(handle)]
    example = Example(folder, mapping, topic, records)
    mapper = Mapper(mapping, blocking=True)
    for number, record in enumerate(records, start=1):
        try:
            change = mapper.read(record, validate=True)
        except InputError as exc:
            example.invalid.append((number, f"{exc.stage}: {exc}"))
            continue
        held = example.final.get(change.external_id)
        if held is None or not change.version.older_than(held.version):
            example.final[change.external_id] = change
    return example


async def _produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(topic, value=r.value, key=r.key, headers=list(r.headers))
    finally:
        await producer.stop()


def _in_sync(sandbox: Sandbox, example: Example) -> tuple[int, int]:
    held = sum(
        1
        for key, body in example.upserts.items()
        if (got := sandbox.store.get_external(key)) is not None
        and got.get("updated_at") == body.get("updated_at")
    )
    gone = sum(1 for key in example.deleted if sandbox.store.get_external(key) is None)
    return held, gone


async def _run(bootstrap: str, example: Example) -> int:
    dlq = f"{example.topic}.dlq"
    await create_topics(bootstrap, {example.topic: PARTITIONS, dlq: 1})
    await _produce(bootstrap, example.topic, example.records)
    want_held, want_gone = len(example.upserts), len(example.deleted)
    print(
        f"produced {len(example.records)} records of {example.folder} to '{example.topic}': expect "
        f"{want_held} orders held, {want_gone} deleted, {len(example.invalid)} dead-lettered"
    )
    async with Sandbox(api_key="demo-key", rate_per_minute=300) as sandbox:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap, topics=[example.topic], group_id="demo-example"),
            dlq=DlqSettings(topic=dlq),
            sink=SinkSettings(base_url=sandbox.url, api_key="demo-key", rate_limit_per_second=5),
            metrics=MetricsSettings(port=0),
            mapping=example.mapping,
            log_level="WARNING",
            shutdown_grace_seconds=10,
        )
        print(f"sandbox at {sandbox.url}; connector running with {example.mapping.envelope} envelope and "
              f"{example.mapping.file or example.mapping.function or 'no mapping'}")  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(app.serve(settings, stop))
        started = time.monotonic()
        dead: list[Any] = []
        while time.monotonic() - started < 120 and not task.done():
            held, gone = _in_sync(sandbox, example)
            dead = await read_topic(bootstrap, dlq, len(example.invalid), timeout=0.5)
            elapsed = time.monotonic() - started
            print(f"  {elapsed:5.1f}s  held {held}/{want_held}  deleted {gone}/{want_gone}  "
                  f"dead letters {len(dead)}/{len(example.invalid)}", flush=True)  # fmt: skip
            if (held, gone, len(dead)) == (want_held, want_gone, len(example.invalid)):
                break
            await asyncio.sleep(1)
        stop.set()
        await task
        return _report(example, sandbox, dead)


def _report(example: Example, sandbox: Sandbox, dead: list[Any]) -> int:
    print("\nwhat reached the API:")
    for key in sorted(example.upserts):
        got = sandbox.store.get_external(key) or {}
        shown = {k: got.get(k) for k in ("name", "status", "total_price", "updated_at")}
        print(f"  {key}: {json.dumps(shown)}")
    for key in sorted(example.deleted):
        print(f"  {key}: {'deleted' if sandbox.store.get_external(key) is None else 'STILL HELD'}")
    stats = sandbox.stats()
    print(
        f"  {stats['requests']} API calls for {len(example.records)} records; by status {stats['by_status']}"
    )
    print("what went to the dead-letter topic:")
    for rec in dead:
        headers = {k: v.decode() for k, v in rec.headers}
        stage, reason = headers.get("__connector.stage"), headers.get("__connect.errors.exception.message")
        print(f"  stage={stage} reason={reason}")
    held, gone = _in_sync(sandbox, example)
    ok = (held, gone, len(dead)) == (len(example.upserts), len(example.deleted), len(example.invalid))
    print("\ndemo " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


def run_example(name: str) -> int:
    """``connector demo --example name``; returns the process exit code."""
    logs.configure("WARNING")
    example = load_example(name)
    print("starting a local Kafka broker (KRaft, single node) ...", flush=True)
    with LocalKafka() as kafka:
        return asyncio.run(_run(kafka.bootstrap_servers, example))
