"""The real change-data-capture chain (issue 21): PostgreSQL (Debian's package) with logical decoding,
and the Debezium PostgreSQL connector in Kafka Connect at its defaults (JSON converter with schemas,
``decimal.handling.mode=precise``, tombstones on, the table at its default ``REPLICA IDENTITY``),
fetched and started by ``scripts/debezium``; Kafka Connect is killed (``kill -9``) mid-stream, after
the row updates, deletes and tombstones of a phase were sent and before their offsets were flushed, so
that it sends all of them again once restarted. One connector serves the rows as one shop, another
as two shops routed by the row's ``shop`` column (which a delete's ``before`` lacks). Both end at the
database's rows exactly (decimals in minor units), each deleted order deleted once, and no order ever
written an older state after a newer one, nor written after its delete.

Skipped, with the reason, only where the chain cannot run here (no Java, no Maven before the jars are
cached, no PostgreSQL server). The second test plays the same sequence as Debezium writes it (the
fixture's events) on the real broker without Kafka Connect, so that it runs wherever the broker does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connector.config import MappingSettings, Settings, TenantsSettings
from connector.localkafka import free_port
from connector.sandbox import Sandbox
from tests.helpers import (
    committed_offsets,
    create_topics,
    end_offsets,
    produce,
    read_topic,
    running,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "debezium"
TOPIC = "pg.public.orders"
SHOPS = ("acme", "bolt")
MAPPING = """
external_id = "join('', ['pg-', str(id)])"
updated_at = "updated_at"
order = '''{
  name: join('', ['#', str(id)]),
  total_price: {amount: minor_units(total), currency_code: 'EUR'},
  tags: [discount, note]
}'''
"""


def _script(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=check, timeout=600)


def _psql(folder: Path, statements: Sequence[str]) -> None:
    script = "".join(f"{s};\n" for s in statements)
    subprocess.run(
        [str(SCRIPT), "psql", str(folder / "pg"), "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


@dataclass
class Chain:
    """PostgreSQL and Kafka Connect running Debezium, as ``scripts/debezium`` started them."""

    folder: Path
    connect_port: int
    bootstrap: str
    connector: Path

    async def sql(self, *statements: str) -> None:
        """Run ``statements`` in one psql session (in a thread: the connectors' loop runs on)."""
        await asyncio.to_thread(_psql, self.folder, statements)

    async def start_connect(self) -> None:
        folder, port = str(self.folder / "connect"), str(self.connect_port)
        await asyncio.to_thread(_script, "connect-start", folder, port, self.bootstrap, str(self.connector))

    async def kill_connect(self) -> None:
        await asyncio.to_thread(_script, "connect-kill", str(self.folder / "connect"))

    async def stop_connect(self) -> None:
        await asyncio.to_thread(_script, "connect-stop", str(self.folder / "connect"))


@pytest.fixture
def chain(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Chain]:
    checked = _script("check", check=False)
    if checked.returncode != 0:
        pytest.skip(f"the Debezium chain cannot run here: {checked.stderr.strip()}")
    fetched = _script("fetch", check=False)
    if fetched.returncode != 0:
        pytest.skip(f"Kafka Connect and Debezium could not be fetched: {fetched.stderr.strip()[-300:]}")
    pg_port, slot = free_port(), f"orders_{os.getpid()}_{free_port()}"
    _script("postgres-start", str(tmp_path / "pg"), str(pg_port))
    connector = tmp_path / "orders-cdc.properties"
    connector.write_text(
        "\n".join(
            [
                "name=orders-cdc",
                "connector.class=io.debezium.connector.postgresql.PostgresConnector",
                "database.hostname=127.0.0.1",
                f"database.port={pg_port}",
                "database.user=postgres",
                "database.password=unused",
                "database.dbname=postgres",
                "topic.prefix=pg",
                "plugin.name=pgoutput",
                f"slot.name={slot}",
                "table.include.list=public.orders",
                "",
            ]
        )
    )
    made = Chain(tmp_path, free_port(), kafka_bootstrap, connector)
    try:
        _psql(
            tmp_path,
            [
                "CREATE TABLE orders (id int PRIMARY KEY, shop text NOT NULL, total numeric(12,2) NOT NULL, "
                "discount numeric, note text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ],
        )
        yield made
    finally:
        _script("connect-kill", str(tmp_path / "connect"), check=False)
        _script("postgres-stop", str(tmp_path / "pg"), check=False)


def _workload(rng: Random) -> tuple[list[str], list[str], list[str], dict[int, dict[str, Any]], set[int]]:
    """Three phases of statements over 12 rows, and the rows they leave (by id) and those deleted."""
    rows: dict[int, dict[str, Any]] = {}

    def values() -> dict[str, Any]:
        return {
            "total": Decimal(rng.randint(1, 999_999)).scaleb(-2),
            "discount": Decimal(rng.randint(-9_999, 9_999)).scaleb(-rng.randint(0, 4)),
            "note": f"n{rng.randint(0, 10**6)}",
        }

    def update(row_id: int) -> str:
        rows[row_id].update(values())
        r = rows[row_id]
        return (
            f"UPDATE orders SET total = {r['total']}, discount = {r['discount']}, note = '{r['note']}', "
            f"updated_at = clock_timestamp() WHERE id = {row_id}"
        )

    first = []
    for row_id in range(1, 13):
        rows[row_id] = {"shop": SHOPS[row_id % 2], **values()}
        r = rows[row_id]
        first.append(
            f"INSERT INTO orders (id, shop, total, discount, note) VALUES "
            f"({row_id}, '{r['shop']}', {r['total']}, {r['discount']}, '{r['note']}')"
        )
    first += [update(rng.randint(1, 12)) for _ in range(10)]
    deleted = set(rng.sample(range(1, 13), 5))
    second = []
    for row_id in rng.sample(range(1, 13), 12):  # each deleted row: its last updates, then the delete
        second += [update(row_id) for _ in range(rng.randint(1, 2))]
        if row_id in deleted:
            second.append(f"DELETE FROM orders WHERE id = {row_id}")
            del rows[row_id]
    third = [update(rng.choice(sorted(rows))) for _ in range(8)]
    return first, second, third, rows, deleted


def _expected(row: dict[str, Any]) -> dict[str, Any]:
    return {"amount": int(row["total"] * 100), "tags": [format(row["discount"], "f"), row["note"]]}


def _held(box: Sandbox, row_id: int) -> dict[str, Any] | None:
    order = box.store.get_external(f"pg-{row_id}")
    if order is None:
        return None
    return {"amount": order["total_price"]["amount"], "tags": order["tags"]}


async def _events_on_topic(bootstrap: str, at_least: int) -> None:
    async def there() -> bool:
        return sum((await end_offsets(bootstrap, TOPIC)).values()) >= at_least

    await wait_until(there, timeout=90, interval=0.2)


def _check_history(box: Sandbox, row_ids: set[int], deleted: set[int]) -> list[str]:
    """Per order: its writes never go back in updated_at, nothing after its delete, one delete."""
    problems = []
    history: dict[str, list[tuple[str, datetime | None]]] = defaultdict(list)
    for r in box.store.requests:
        written = r.method in ("PUT", "POST") and r.status < 300
        if r.external_id is not None and (written or r.method == "DELETE"):
            stamp = datetime.fromisoformat(r.updated_at) if r.updated_at else None
            history[r.external_id].append((r.method, stamp))
    for row_id in sorted(row_ids):
        calls = history[f"pg-{row_id}"]
        stamps = [stamp for method, stamp in calls if method != "DELETE"]
        if None in stamps or stamps != sorted(s for s in stamps if s is not None):
            problems.append(f"pg-{row_id}: written back in time: {calls}")
        deletes = [i for i, (method, _) in enumerate(calls) if method == "DELETE"]
        if row_id in deleted and (len(deletes) != 1 or deletes[0] != len(calls) - 1):
            problems.append(f"pg-{row_id}: deleted {len(deletes)} times, not last: {calls}")
        if row_id not in deleted and deletes:
            problems.append(f"pg-{row_id}: deleted, but it is still in the table: {calls}")
    return problems


async def test_debezium_at_its_defaults_with_connect_killed_mid_stream_ends_exact(
    chain: Chain, tmp_path: Path
) -> None:
    bootstrap = chain.bootstrap
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(TOPIC, 3, 1), NewTopic(f"{TOPIC}.dlq", 1, 1), NewTopic(f"{TOPIC}.shops.dlq", 1, 1)]
        )
    finally:
        await admin.close()
    first, second, third, rows, deleted = _workload(Random(21))
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    keys = {name: f"key-{name}" for name in SHOPS}
    shops = {name: Sandbox(api_key=keys[name], rate_per_minute=60_000) for name in SHOPS}
    tenants = tmp_path / "tenants.toml"
    await chain.start_connect()
    async with (
        Sandbox(api_key="one-shop", rate_per_minute=60_000) as one,
        Sandbox(api_key="not-a-tenant", tenants=shops),
    ):
        lines = []
        for name, box in shops.items():
            lines += [
                f"[{name}]",
                'kind = "loop"',
                f'base_url = "{box.url}"',
                f'api_key = "{keys[name]}"',
                "",
            ]
        tenants.write_text("\n".join(lines))
        base = settings_for(bootstrap, TOPIC, one.url, api_key="one-shop")
        single = base.model_copy(update={"mapping": MappingSettings(envelope="debezium", file=str(mapping))})
        many = Settings.model_validate(
            {
                **single.model_dump(),
                "kafka": {**single.kafka.model_dump(), "group_id": f"{TOPIC}-shops"},
                "dlq": {"topic": f"{TOPIC}.shops.dlq"},
                "tenants": TenantsSettings(path=str(tenants), route="field:shop").model_dump(),
                "metrics": {"host": "127.0.0.1", "port": free_port()},
            }
        )
        async with running(single), running(many):
            await chain.sql(*first)
            await _events_on_topic(bootstrap, len(first))
            await chain.stop_connect()  # a clean stop flushes its offsets: what follows is sent again
            await chain.start_connect()
            await chain.sql(*second)
            sent = len(first) + len(second) + len(deleted)  # a delete is followed by its tombstone
            await _events_on_topic(bootstrap, sent)
            await chain.kill_connect()  # mid-stream: the second phase's offsets were never flushed
            await chain.start_connect()
            await chain.sql(*third)
            resent_at_least = sent + len(second) + len(deleted) + len(third)
            await _events_on_topic(bootstrap, resent_at_least)

            def exact() -> bool:
                for row_id in range(1, 13):
                    want = _expected(rows[row_id]) if row_id in rows else None
                    box = shops[rows[row_id]["shop"]] if row_id in rows else None
                    if _held(one, row_id) != want:
                        return False
                    if row_id in rows and (box is None or _held(box, row_id) != want):
                        return False
                    if row_id not in rows and any(_held(b, row_id) is not None for b in shops.values()):
                        return False
                return True

            await wait_until(exact, timeout=120, interval=0.3)
        records = sum((await end_offsets(bootstrap, TOPIC)).values())
        print(f"\n{records} change events on {TOPIC} for {len(first) + len(second) + len(third)} statements")
        assert records >= resent_at_least, "Kafka Connect sent the second phase again after the kill"
        assert _check_history(one, set(range(1, 13)), deleted) == []
        for name, box in shops.items():
            own = {i for i in range(1, 13) if (i % 2 == 0) == (name == "acme")}
            assert _check_history(box, own, deleted & own) == []
        for dlq in (f"{TOPIC}.dlq", f"{TOPIC}.shops.dlq"):
            dead = await read_topic(bootstrap, dlq, expect=1, timeout=3)
            assert dead == [], (
                f"{dlq}: {[dict(r.headers).get('__connect.errors.exception.message') for r in dead]}"
            )
        deletes = Counter(r.external_id for r in one.store.requests if r.method == "DELETE")
        assert deletes == Counter({f"pg-{i}": 1 for i in deleted})
        print(json.dumps({"deleted": sorted(deleted), "left": sorted(rows)}))


PRECISE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "mapping" / "debezium-precise.json").read_text()
)


def _change(kind: str, shop: str, ts_us: int) -> tuple[bytes, bytes | None]:
    """The fixture's Debezium record ``kind`` of row 1 (JSON converter with schemas), committed at
    ``ts_us``, its row naming ``shop`` (a delete's before names none: the default replica identity)."""
    fields = json.loads(json.dumps(PRECISE[kind]))
    value = fields["value"]
    if value is not None:
        payload = value["payload"]
        if payload["after"] is not None:
            payload["after"]["shop"] = shop
            payload["after"]["updated_at"] = f"2026-12-06T06:27:{ts_us % 60_000_000 / 1e6:09.6f}Z"
        payload["source"].update(ts_ms=ts_us // 1000, ts_us=ts_us, ts_ns=ts_us * 1000)
    return json.dumps(fields["key"]).encode(), json.dumps(value).encode() if value is not None else None


async def test_the_debezium_delete_sequence_on_the_real_broker_deletes_once_and_never_brings_back(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """Without Kafka Connect (this runs wherever the broker does): the sequence Debezium writes at its
    defaults for a row updated then deleted, and after a restart of Connect sends again (update,
    delete at the default replica identity, tombstone, the same three again), read by a one-shop and
    a two-shop connector (field routing: the delete and tombstone name no shop). The order is deleted
    once, never upserted after that, on both."""
    base = 1796538440_000_000  # 2026-12-06T06:27:20Z, in microseconds
    sequence = [
        _change("create", "bolt", base + 1_000),
        _change("update", "bolt", base + 2_000),
        _change("delete", "bolt", base + 2_600),
        _change("tombstone", "bolt", 0),
    ]
    await create_topics(
        kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1, f"{topic_name}.shops.dlq": 1}
    )
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    keys = {name: f"key-{name}" for name in SHOPS}
    shops = {name: Sandbox(api_key=keys[name], rate_per_minute=60_000) for name in SHOPS}
    tenants = tmp_path / "tenants.toml"
    async with (
        Sandbox(api_key="one-shop", rate_per_minute=60_000) as one,
        Sandbox(api_key="not-a-tenant", tenants=shops),
    ):
        tenants.write_text(
            "\n".join(
                f'[{name}]\nkind = "loop"\nbase_url = "{box.url}"\napi_key = "{keys[name]}"\n'
                for name, box in shops.items()
            )
        )
        single = settings_for(kafka_bootstrap, topic_name, one.url, api_key="one-shop").model_copy(
            update={"mapping": MappingSettings(envelope="debezium", file=str(mapping))}
        )
        many = Settings.model_validate(
            {
                **single.model_dump(),
                "kafka": {**single.kafka.model_dump(), "group_id": f"{topic_name}-shops"},
                "dlq": {"topic": f"{topic_name}.shops.dlq"},
                "tenants": TenantsSettings(path=str(tenants), route="field:shop").model_dump(),
                "metrics": {"host": "127.0.0.1", "port": free_port()},
            }
        )
        async with running(single), running(many):
            await produce(kafka_bootstrap, topic_name, sequence)

            def deleted() -> bool:
                return all(
                    any(r.method == "DELETE" and r.external_id == "pg-1" for r in box.store.requests)
                    for box in (one, shops["bolt"])
                )

            await wait_until(deleted, timeout=60)
            await produce(kafka_bootstrap, topic_name, sequence[1:])  # Connect restarted: sent again
            ends = await end_offsets(kafka_bootstrap, topic_name)

            async def read_through() -> bool:
                done = [
                    await committed_offsets(kafka_bootstrap, s.kafka.group_id, topic_name) == ends
                    for s in (single, many)
                ]
                return all(done)

            await wait_until(read_through, timeout=60)
        for box in (one, shops["bolt"]):
            calls = [(r.method, r.status) for r in box.store.requests if r.external_id == "pg-1"]
            assert box.store.get_external("pg-1") is None
            assert [m for m, _ in calls].count("DELETE") == 1, calls
            writes = [method for method, _ in calls if method != "GET"]  # an audit may read it back
            assert writes[-1] == "DELETE", f"written after its delete: {calls}"
        assert shops["acme"].store.requests == []
    for dlq in (f"{topic_name}.dlq", f"{topic_name}.shops.dlq"):
        assert await read_topic(kafka_bootstrap, dlq, expect=1, timeout=3) == []
