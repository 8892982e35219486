"""Tenancy: one deliverer per shop, and what reloads of the tenants do to the shops being served:
removed ones closed, mass removals refused, keys rotated, renames, mappings loaded once; what parking
asks of a shop (its health, quiescing and resuming it on some partitions), drains, each shop's vendor,
and the single shop of a deployment without tenants. Driven through its public methods, with vendor
clients of our own and the coalescer the pipeline uses."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from random import Random
from types import TracebackType
from typing import Any, Self

import pytest
from pydantic import SecretStr

from connector import constants as wire
from connector import logs
from connector._reloads import APPLY
from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Coalescer
from connector.config import (
    AuditSettings,
    DeliverySettings,
    Reload,
    Settings,
    SinkSettings,
    TenantsSettings,
    VendorAccount,
    reload_of,
)
from connector.decode import decode
from connector.deliver import Outcome, OutcomeKind
from connector.errors import AuthError, OrderValidationError, RouteError
from connector.fence import Fence
from connector.mapping import Event
from connector.metadata import CommitMeta
from connector.metrics import Metrics
from connector.ownership import Assignment, PartitionStatus
from connector.pacing import Pacer
from connector.park import Parking
from connector.sinks import Prepaid
from connector.structs import OrderChange, Record, TopicPartition
from connector.tenancy import Served, Tenancy
from connector.vendors import target
from tests.fakes import NoLinger, ParkPorts

TOPIC = "orders"
TP = TopicPartition(TOPIC, 0)


class Vendor:
    """A shop's vendor client of our own: what it was asked to send, with which keys; it answers as
    told (``fail``), and holds every call while ``gate`` is closed."""

    name = "fake"

    def __init__(self, settings: SinkSettings) -> None:
        self.base_url = settings.base_url
        self.keys = [settings.api_key.get_secret_value()]
        self.applied: list[str] = []
        self.calls = 0
        self.fail: BaseException | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed = False

    async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
        self.calls += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.applied.append(change.external_id)

    async def probe(self, prepaid: Prepaid | None = None) -> None:
        if self.fail is not None:
            raise self.fail

    async def held_version(self, change: OrderChange) -> tuple[bool, datetime | None]:
        raise NotImplementedError

    def set_api_key(self, api_key: SecretStr) -> None:
        self.keys.append(api_key.get_secret_value())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True


class Vendors:
    """The sink factory: every client it made, by the tenant's address."""

    def __init__(self) -> None:
        self.made: defaultdict[str, list[Vendor]] = defaultdict(list)

    def __call__(self, settings: SinkSettings, pacer: Pacer) -> Vendor:
        vendor = Vendor(settings)
        self.made[settings.base_url].append(vendor)
        return vendor

    def of(self, shop: str) -> Vendor:
        """The newest client made for ``shop`` (served at ``http://<shop>``)."""
        return self.made[f"http://{shop}"][-1]


class Desk:
    """What the pipeline does around a tenancy, reduced: coalesce each event, hand the newest to the
    deliverer, and note how each ended."""

    def __init__(self) -> None:
        self.coalescer = Coalescer()
        self.metrics = Metrics()
        self.delivered: list[str] = []
        self.failed: list[tuple[str, BaseException | None]] = []
        self._offset = 0

    def report(self, outcome: Outcome) -> OrderChange | None:
        if outcome.kind is OutcomeKind.ABANDONED or outcome.change is None:
            return None
        delivered = outcome.kind is OutcomeKind.DELIVERED
        if delivered:
            self.delivered.append(outcome.key)
        else:
            self.failed.append((outcome.key, outcome.error))
        return self.coalescer.finish(outcome.key, delivered)

    def hand(self, tenancy: Tenancy, change: OrderChange) -> None:
        """What the ledger does with a change it coalesced: start its order's job, or hand it over."""
        offer = self.coalescer.offer(change)
        if offer.start:
            tenancy.submit(change)
        elif offer.waits and tenancy.replace(change):
            self.coalescer.promote(change.key)

    def offer(self, tenancy: Tenancy, shop: str, order: str, locate: Any = None) -> OrderChange:
        """Read an event of ``shop``'s ``order`` as the pipeline does (routed by ``shop``), and start
        its delivery."""
        self._offset += 1
        value = {"shop": shop, "external_id": order, "updated_at": f"2026-01-01T00:00:{self._offset:02d}Z"}
        record = Record(TOPIC, 0, self._offset, order.encode(), json.dumps(value).encode())
        change = decode(record, validate=False, locate=locate or tenancy.router.locate)
        self.hand(tenancy, change)
        return change


def held(desk: Desk, key: str) -> OrderChange:
    """The change ``key`` has in the coalescer (to start its job again, as a ledger would)."""
    change = desk.coalescer.current(key)
    assert change is not None
    return change


def shop_file(folder: Path, shop: str, key: str = "", **fields: Any) -> Path:
    """Write (or rewrite, as a change) ``shop``'s file in the tenants directory ``folder``."""
    lines = [
        f'base_url = "{fields.pop("base_url", f"http://{shop}")}"',
        f'api_key = "{key or shop + "-key"}"',
    ]
    lines += ["rate_limit_per_second = 200"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items() if not isinstance(v, dict)]
    for table, values in ((k, v) for k, v in fields.items() if isinstance(v, dict)):
        lines += [f"[{table}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    return touch(folder / f"{shop}.toml", "\n".join(lines) + "\n")


def touch(path: Path, text: str) -> Path:
    """Write ``path``, its modification time moved on: a rewrite within the file system's time
    granularity still reads as a change."""
    existed = path.exists()
    before = path.stat().st_mtime_ns if existed else 0
    path.write_text(text)
    if existed:
        os.utime(path, ns=(before, before + 1_000_000_000))
    return path


def settings_for(path: Path, **tenants: Any) -> Settings:
    return Settings(
        tenants=TenantsSettings(path=str(path), route="field:shop", reload_seconds=3600, **tenants),
        sink=SinkSettings(api_key="deployment-key"),
        delivery=DeliverySettings(
            probe_interval_seconds=0.05,
            backoff_base_seconds=0.01,
            backoff_cap_seconds=0.05,
        ),
        shutdown_grace_seconds=0.3,
    )


@asynccontextmanager
async def serving(
    settings: Settings, vendors: Vendors, desk: Desk, before: Callable[[Tenancy], None] | None = None
) -> AsyncIterator[Tenancy]:
    """A tenancy started as a member starts it, owning partition 0 of ``orders`` (``before``: called
    with it before it starts)."""
    fence = Fence(SYSTEM_CLOCK, lease_seconds=float("inf"), settle_seconds=0.0)
    fence.assign(TP, 0.0)
    fence.renew(TP, float("inf"))
    tenancy = Tenancy(settings, vendors, desk.metrics, clock=SYSTEM_CLOCK, rng=Random(1), fence=fence)
    tenancy.connect(work=desk, linger=NoLinger())
    if before is not None:
        before(tenancy)
    async with tenancy:
        tenancy.set_layout({TOPIC: 1})
        yield tenancy


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.01)


def workers() -> int:
    """Deliverer workers running, every tenant's."""
    return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("deliver-") and not t.done())


def rows(tenancy: Tenancy) -> dict[str, dict[str, object]]:
    return {str(row["tenant"]): row for row in tenancy.state()}


def sample(desk: Desk, name: str, **labels: str) -> float | None:
    return desk.metrics.registry.get_sample_value(name, labels)


@pytest.fixture(autouse=True)
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON log lines written meanwhile (logging configured as `connector run` does), in every
    test: what another test left configured does not matter here."""
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)
    logs.configure("INFO")
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    monkeypatch.undo()
    logs.configure("INFO")


# -- removed shops ----------------------------------------------------------------------------------
async def test_a_removed_shop_delivers_what_it_holds_then_its_workers_client_and_series_go(
    tmp_path: Path,
) -> None:
    """Removed, a shop is routed no more at once; what it has in hand is still delivered; once it
    holds nothing its workers stop, its client (HTTP pool) is closed and its metric series removed,
    while the other shop's stay."""
    for shop in ("acme", "bolt"):
        shop_file(tmp_path, shop)
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        bolt = vendors.of("bolt")
        bolt.gate.clear()
        desk.offer(tenancy, "bolt", "B1")
        desk.offer(tenancy, "acme", "A1")
        await until(lambda: "acme/A1" in desk.delivered and bolt.calls == 1)
        tenancy.refresh_metrics({})
        assert sample(desk, "connector_tenant_pace_requests_per_second", tenant="bolt") is not None
        running = workers()

        (tmp_path / "bolt.toml").unlink()
        await tenancy.reload()
        with pytest.raises(RouteError, match="'bolt' is not served"):
            desk.offer(tenancy, "bolt", "B2")
        assert rows(tenancy)["bolt"]["routed"] is False
        assert rows(tenancy)["bolt"]["jobs"] == 1
        await tenancy.reload()
        assert not bolt.closed, "closed with a call in flight"

        bolt.gate.set()
        await until(lambda: "bolt/B1" in desk.delivered)
        await tenancy.reload()
        assert bolt.closed
        assert "bolt" not in rows(tenancy)
        assert "bolt" not in tenancy.served()
        assert workers() == running - tenancy.served()["acme"].settings.max_in_flight == running // 2
        tenancy.refresh_metrics({})
        for name in (
            "pace_requests_per_second",
            "circuit_open",
            "parked",
            "oldest_unsynced_event_age_seconds",
        ):
            assert sample(desk, f"connector_tenant_{name}", tenant="bolt") is None, name
            assert sample(desk, f"connector_tenant_{name}", tenant="acme") is not None, name
        assert desk.failed == []


async def test_a_removed_shop_whose_api_refuses_its_key_stops_retrying_after_the_grace(
    tmp_path: Path, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """A removed shop whose key is refused (its circuit open, retrying for ever) gets
    ``shutdown_grace_seconds`` (0.3 s here); then what it holds is refused without calling its API,
    dead-lettered as a RouteError naming the shop and how to replay it, and the shop is closed."""
    for shop in ("acme", "bolt"):
        shop_file(tmp_path, shop)
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        bolt = vendors.of("bolt")
        bolt.fail = AuthError("401 Unauthorized", status=401)
        desk.offer(tenancy, "bolt", "B1")
        await until(lambda: bolt.calls >= 2)  # its circuit opened; it probes
        (tmp_path / "bolt.toml").unlink()
        await tenancy.reload()
        await asyncio.sleep(0.4)
        assert bolt.calls >= 3, "retried during the grace"
        assert desk.failed == []
        await tenancy.reload()  # the grace is over
        await until(lambda: desk.failed)
        calls = bolt.calls
        [(key, error)] = desk.failed
        assert key == "bolt/B1"
        assert isinstance(error, RouteError)
        assert "tenant bolt was removed from tenants.path" in str(error)
        assert "redrive --tenant bolt" in str(error)
        await tenancy.reload()
        assert bolt.closed
        assert bolt.calls == calls, "nothing sent once refused"
    retired = [line for line in log_lines() if line["event"] == "tenant_retired"]
    assert [line["tenant"] for line in retired] == ["bolt"]
    assert all("bolt-key" not in json.dumps(line) for line in log_lines())


async def test_a_shop_removed_then_added_again_starts_afresh_and_delivers(tmp_path: Path) -> None:
    for shop in ("acme", "bolt"):
        shop_file(tmp_path, shop)
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        first = vendors.of("bolt")
        (tmp_path / "bolt.toml").unlink()
        await tenancy.reload()
        await tenancy.reload()
        assert first.closed
        shop_file(tmp_path, "bolt")
        await tenancy.reload()
        assert len(vendors.made["http://bolt"]) == 2
        desk.offer(tenancy, "bolt", "B1")
        await until(lambda: "bolt/B1" in desk.delivered)
        assert vendors.of("bolt").applied == ["B1"]
        assert first.applied == []


async def test_a_change_for_a_shop_no_longer_served_is_refused_not_lost(tmp_path: Path) -> None:
    """A change whose shop was closed meanwhile (on its way back from a revoke) is handed back as
    failed, a RouteError: dead-lettered, never left unresolved."""
    shop_file(tmp_path, "acme")
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        desk.offer(tenancy, "ghost", "G1", locate=lambda record, data: ("ghost", target("loop", "v1")))
        await until(lambda: desk.failed)  # told a loop turn later, as any delivery's end
        [(key, error)] = desk.failed
        assert key == "ghost/G1"
        assert isinstance(error, RouteError)
        assert "'ghost' is no longer served" in str(error)


# -- reloads that would remove too much -------------------------------------------------------------
async def test_a_reload_removing_every_shop_or_too_many_is_refused_until_one_removes_fewer(
    tmp_path: Path, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """An emptied directory, then one keeping 1 of 4 shops (more than ``tenants.max_removed_share`` =
    0.5 removed), are refused: logged with the setting to change, counted, flagged, every shop still
    served. Keeping 2 of 4 applies, and clears the flag."""
    shops = ["a1", "b2", "c3", "d4"]
    for shop in shops:
        shop_file(tmp_path, shop)
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path, max_removed_share=0.5), vendors, desk) as tenancy:
        for shop in shops:
            (tmp_path / f"{shop}.toml").unlink()
        await tenancy.reload()
        assert sample(desk, "connector_tenants_reloads_refused_total", reason="removal") == 1
        assert sample(desk, "connector_tenants_reload_refused") == 1
        assert all(rows(tenancy)[shop]["routed"] for shop in shops)
        desk.offer(tenancy, "d4", "D1")
        await until(lambda: "d4/D1" in desk.delivered)

        shop_file(tmp_path, "a1")
        await tenancy.reload()
        assert sample(desk, "connector_tenants_reloads_refused_total", reason="removal") == 2
        assert all(rows(tenancy)[shop]["routed"] for shop in shops)

        shop_file(tmp_path, "b2")
        await tenancy.reload()
        assert sample(desk, "connector_tenants_reload_refused") == 0
        assert {shop: rows(tenancy)[shop]["routed"] for shop in shops} == {
            "a1": True,
            "b2": True,
            "c3": False,
            "d4": False,
        }
    refused = [line for line in log_lines() if line["event"] == "tenants_reload_refused"]
    assert len(refused) == 2
    assert refused[0]["level"] == "error"
    assert refused[0]["setting"] == "tenants.max_removed_share"
    assert "would leave no shop" in refused[0]["error"]
    assert "would remove 3 of the 4 shops" in refused[1]["error"]


# -- changes ----------------------------------------------------------------------------------------
async def test_a_rotated_key_applies_even_when_another_field_needs_a_restart(
    tmp_path: Path, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """A new key and a new address in one edit: the key is used from the next request on; the
    address is logged as needing a restart and kept. Neither key is logged."""
    shop_file(tmp_path, "acme", key="old-secret")
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        acme = vendors.of("acme")
        shop_file(tmp_path, "acme", key="new-secret", base_url="http://acme-moved")
        await tenancy.reload()
        assert acme.keys == ["old-secret", "new-secret"]
        assert rows(tenancy)["acme"]["base_url"] == "http://acme"
        assert vendors.made.keys() == {"http://acme"}
        shop_file(tmp_path, "acme", key="newer-secret", base_url="http://acme-moved")
        await tenancy.reload()
        assert acme.keys[-1] == "newer-secret"
    [*_, restart] = [line for line in log_lines() if line["event"] == "tenant_change_needs_restart"]
    assert (restart["fields"], restart["applied"]) == (["base_url"], ["api_key"])
    assert not any("secret" in json.dumps(line) for line in log_lines())


async def test_what_applies_in_place_is_what_the_account_declares(
    tmp_path: Path, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """A new budget paces the running shop at once (``rate_limit_per_second``, declared in place); a
    new ``max_in_flight`` (derived from the budget by default) is neither applied nor reported; a new
    mode is reported as needing a restart."""
    shop_file(tmp_path, "acme")
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        served = tenancy.served()["acme"]
        workers = served.settings.max_in_flight
        shop_file(tmp_path, "acme", max_in_flight=workers * 2, mode="create_update")
        await tenancy.reload()
        assert served.settings.max_in_flight == workers
        assert served.settings.mode == "upsert"
        path = tmp_path / "acme.toml"
        touch(path, path.read_text().replace("rate_limit_per_second = 200", "rate_limit_per_second = 50"))
        await tenancy.reload()
        assert (served.pacer.budget, rows(tenancy)["acme"]["budget_per_second"]) == (50.0, 50.0)
        assert tenancy.served()["acme"] is served
    restarts = [line for line in log_lines() if line["event"] == "tenant_change_needs_restart"]
    assert [line["fields"] for line in restarts] == [["mode"], ["mode"]]
    assert [line["applied"] for line in restarts] == [[], ["rate_limit_per_second"]]


def test_every_field_declared_in_place_has_its_way_to_a_running_shop() -> None:
    """The reloader applies each vendor-account field declared ``Reload.IN_PLACE`` its own way."""
    declared = {name for name, how in reload_of(VendorAccount).items() if how is Reload.IN_PLACE}
    assert set(APPLY) == declared == {"api_key", "rate_limit_per_second"}


async def test_a_renamed_shop_keeps_its_deliverer_and_both_names_reach_it(tmp_path: Path) -> None:
    """``acme`` becomes ``acme-eu`` with ``aliases = ["acme"]`` in one edit: the same client, budget
    and circuit go on (no second client on one account), what it had in hand is delivered, and
    events naming either name are its."""
    shop_file(tmp_path, "acme")
    shop_file(tmp_path, "bolt")
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        acme = vendors.of("acme")
        acme.gate.clear()
        desk.offer(tenancy, "acme", "A1")
        await until(lambda: acme.calls == 1)
        (tmp_path / "acme.toml").unlink()
        shop_file(tmp_path, "acme-eu", base_url="http://acme", aliases=["acme"])
        await tenancy.reload()
        assert len(vendors.made["http://acme"]) == 1
        row = rows(tenancy)["acme-eu"]
        assert (row["routed"], row["aliases"]) == (True, ["acme"])
        assert "acme" not in rows(tenancy)
        acme.gate.set()
        await until(lambda: acme.applied == ["A1"])
        old = desk.offer(tenancy, "acme", "A2")
        new = desk.offer(tenancy, "acme-eu", "A3")
        await until(lambda: sorted(acme.applied) == ["A1", "A2", "A3"])
        assert old.tenant == new.tenant == tenancy.canonical("acme-eu") == tenancy.canonical("acme")
        assert desk.failed == []
        await tenancy.reload()
        assert not acme.closed


async def test_a_member_started_after_a_rename_takes_over_what_was_parked_under_the_old_name(
    tmp_path: Path,
) -> None:
    """A partition's commit says ``acme`` is parked on it; this member knows the shop as ``acme-eu``
    (aliases ``acme``): the shop is parked there under its new name, before and after the commit, so
    its events keep their order behind what waits on the parking topic."""
    shop_file(tmp_path, "acme-eu", aliases=["acme"])
    settings = settings_for(tmp_path)
    vendors, desk = Vendors(), Desk()
    ports = ParkPorts()
    async with serving(settings, vendors, desk) as tenancy:
        assignment = Assignment()
        parking = Parking(
            settings,
            _ParkingTopic(),
            assignment,
            desk.coalescer,
            tenancy,
            desk.metrics,
            clock=SYSTEM_CLOCK,
            rng=Random(1),
        )
        ports.connect(parking)
        async with parking:
            parking.set_layout({TOPIC: 1})
            assignment.add(TP)
            meta = CommitMeta(0.0, parked=("acme", "zeta"), replay_from=(("acme", 0), ("zeta", 0)))
            assert await parking.assign(TP, meta, 10)
            assert parking.parked(TP, "acme-eu")
            part = assignment.get(TP)
            assert part is not None
            assert part.park is not None
            assert part.park.starts == {"acme-eu": 0, "zeta": 0}, "its replay under its new name"
            assert parking.parked(TP, "zeta"), "a shop not served here keeps its name"


async def test_what_was_parked_under_the_old_name_keeps_the_renamed_shop_parked_until_resolved(
    tmp_path: Path,
) -> None:
    """A record parked as ``acme`` is replayed for ``acme-eu`` (its alias): the shop stays parked on
    the partition until that replay is resolved, so that no newer event of it overtakes the older one
    on its way; then it is unparked."""
    shop_file(tmp_path, "acme-eu", aliases=["acme"])
    settings = settings_for(tmp_path)
    vendors, desk = Vendors(), Desk()
    topic = _ParkingTopic()
    topic.records.append(
        Record(
            "orders.parked",
            0,
            0,
            b"A1",
            b'{"shop": "acme", "external_id": "A1"}',
            (
                (wire.H_PARKED_FROM, b"orders/0/3"),
                (wire.H_TENANT, b"acme"),
                (wire.H_PARKED_BY, b"0000beef"),
            ),
        )
    )
    ports = ParkPorts()
    replayed = ports.handed
    async with serving(settings, vendors, desk) as tenancy:
        assignment = Assignment()
        parking = Parking(
            settings,
            topic,
            assignment,
            desk.coalescer,
            tenancy,
            desk.metrics,
            clock=SYSTEM_CLOCK,
            rng=Random(1),
        )
        ports.connect(parking)
        async with parking:
            parking.set_layout({TOPIC: 1})
            assignment.add(TP)
            v1 = CommitMeta(0.0, version=1, park_from=0, parked=("acme",), tokens=(("0000beef", 10),))
            assert await parking.assign(TP, v1, 10)
            await until(lambda: replayed)
            await asyncio.sleep(0.5)  # a few rounds of the replay loop
            assert parking.parked(TP, "acme-eu"), "unparked while its replay is on its way"
            parking.resolve(replayed[0])
            await until(lambda: not parking.parked(TP, "acme-eu"))
        assert [(r.tp, r.offset) for r in replayed] == [(TP, 3)]


class _ParkingTopic:
    """A parking topic of one partition, in memory."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def partitions(self) -> int:
        return 1

    async def end(self, partition: int) -> int:
        return len(self.records)

    async def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        return self.records[offset : offset + max_records]

    async def append(self, partition: int, key: Any, value: Any, headers: Any, timestamp_ms: int) -> Any:
        self.records.append(Record("orders.parked", 0, len(self.records), key, value, tuple(headers)))
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(len(self.records) - 1)
        return done


# -- mappings ---------------------------------------------------------------------------------------
def _mapped(tenancy: Tenancy, tenant: str) -> Any:
    mapping = tenancy.router.mapping_of(tenant)
    assert mapping is not None
    return mapping.apply(Event({"ref": 7, "title": "#7"}, None, {}, TOPIC))


async def test_a_shops_mapping_is_loaded_once_and_again_only_when_its_file_changes(tmp_path: Path) -> None:
    """The mapping object loaded with the tenants is the one used: another shop's change, or the
    file vanishing, leave it as it was; an edit of the file loads it again."""
    folder = tmp_path / "tenants"
    folder.mkdir()
    mapping = tmp_path / "acme-mapping.toml"
    mapping.write_text('external_id = "str(ref)"\norder = "{name: title}"\n')
    shop_file(folder, "acme", mapping={"file": str(mapping)})
    shop_file(folder, "bolt")
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(folder), vendors, desk) as tenancy:
        loaded = tenancy.router.mapping_of("acme")
        assert _mapped(tenancy, "acme")["order"] == {"name": "#7"}
        assert tenancy.router.mapping_of("bolt") is None, "the deployment's applies"

        shop_file(folder, "bolt", key="rotated")
        await tenancy.reload()
        assert tenancy.router.mapping_of("acme") is loaded

        mapping.unlink()
        await tenancy.reload()
        assert rows(tenancy)["acme"]["routed"], "kept as it was"
        assert tenancy.router.mapping_of("acme") is loaded
        assert _mapped(tenancy, "acme")["order"] == {"name": "#7"}

        touch(mapping, 'external_id = "str(ref)"\norder = "{title: title, ref: ref}"\n')
        await tenancy.reload()
        assert tenancy.router.mapping_of("acme") is not loaded
        assert _mapped(tenancy, "acme")["order"] == {"title": "#7", "ref": 7}


async def test_a_shop_whose_mapping_is_broken_is_not_served_and_the_others_are(
    tmp_path: Path, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """At start: the shop with a broken mapping file is reported with its file and field and not
    served (its events are dead-lettered, stage route); the others are. Fixed, it is added."""
    mapping = tmp_path / "m.toml"
    mapping.write_text('external_id = "str(ref)"\norder = "{"\n')
    folder = tmp_path / "tenants"
    folder.mkdir()
    shop_file(folder, "acme", mapping={"file": str(mapping)})
    shop_file(folder, "bolt")
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(folder), vendors, desk) as tenancy:
        assert sorted(tenancy.served()) == ["bolt"]
        assert sample(desk, "connector_tenants_invalid") == 1
        with pytest.raises(RouteError, match="'acme' is not served"):
            desk.offer(tenancy, "acme", "A1")
        touch(mapping, 'external_id = "str(ref)"\norder = "{name: title}"\n')
        await tenancy.reload()
        assert sorted(tenancy.served()) == ["acme", "bolt"]
        assert sample(desk, "connector_tenants_invalid") == 0
        assert _mapped(tenancy, "acme")["order"] == {"name": "#7"}
    [invalid] = [line for line in log_lines() if line["event"] == "tenant_invalid"]
    assert invalid["tenant"] == "acme"
    assert str(folder / "acme.toml") in invalid["error"]
    assert "order: not a JMESPath expression" in invalid["error"]


async def test_a_member_started_with_no_shop_on_disk_waits_for_one(tmp_path: Path) -> None:
    """Found by the simulation (many-shop seed 125: a member joined while the tenants file was being
    rewritten): started with a tenants path that names no shop, the member served none and
    dead-lettered every event (stage ``route``). It waits until a shop is there, and only then starts."""
    vendors, desk = Vendors(), Desk()
    base = settings_for(tmp_path)
    settings = base.model_copy(update={"tenants": base.tenants.model_copy(update={"reload_seconds": 0.05})})
    served: list[set[str]] = []
    done = asyncio.Event()

    async def member() -> None:
        async with serving(settings, vendors, desk) as tenancy:
            served.append(set(tenancy.served()))
            await done.wait()

    task = asyncio.create_task(member())
    await asyncio.sleep(0.3)
    assert not served, "started with no shop"
    shop_file(tmp_path, "acme")
    await until(lambda: served)
    assert served == [{"acme"}]
    done.set()
    await task


# -- deletes that name no shop (issue 21) ------------------------------------------------------------
PRECISE = json.loads((Path(__file__).parent / "fixtures" / "mapping" / "debezium-precise.json").read_text())


def _debezium(kind: str, offset: int, shop: str | None = None) -> Record:
    """The fixture's Debezium record ``kind`` (JSON converter with schemas), its row's shop set."""
    fields = json.loads(json.dumps(PRECISE[kind]))
    value = fields["value"]
    if value is not None and value["payload"]["after"] is not None:
        value["payload"]["after"]["shop"] = shop
    key = json.dumps(fields["key"]).encode()
    return Record(TOPIC, 0, offset, key, json.dumps(value).encode() if value is not None else None)


async def test_a_debezium_delete_and_tombstone_naming_no_shop_go_to_the_shop_of_their_rows_last_event(
    tmp_path: Path,
) -> None:
    """Issue 21: with field routing, the tombstone and a delete at the default replica identity
    (before: the key only) are routed by the shop their key's last event was routed to, not
    dead-lettered; an update naming no shop still is, and so is a delete whose key was never seen."""
    from connector.config import MappingSettings
    from connector.mapping import Mapper

    shop_file(tmp_path, "acme")
    shop_file(tmp_path, "bolt")
    mapping = tmp_path / "m.toml"
    mapping.write_text('external_id = "str(id)"\nupdated_at = "updated_at"\norder = "{name: note}"\n')
    mapper = Mapper(MappingSettings(envelope="debezium", file=str(mapping)))
    async with serving(settings_for(tmp_path), Vendors(), Desk()) as tenancy:
        update = mapper.read(_debezium("update", 1, "bolt"), locate=tenancy.router.locate)
        delete = mapper.read(_debezium("delete", 2), locate=tenancy.router.locate)
        tombstone = mapper.read(_debezium("tombstone", 3), locate=tenancy.router.locate)
        assert [c.tenant for c in (update, delete, tombstone)] == ["bolt", "bolt", "bolt"]
        assert (delete.op, tombstone.op, delete.key) == ("delete", "delete", "bolt/1")
        with pytest.raises(RouteError, match="field shop is missing"):
            mapper.read(_debezium("update", 4), locate=tenancy.router.locate)  # an update names its shop
        other = Record(TOPIC, 0, 5, b'{"payload": {"id": 2}}', None)
        with pytest.raises(RouteError, match="no event of its key was routed"):
            mapper.read(other, locate=tenancy.router.locate)


async def test_the_shops_of_keys_are_remembered_within_remember_keys(tmp_path: Path) -> None:
    """Native tombstones too; the memory is bounded by kafka.remember_keys, least recent out."""
    shop_file(tmp_path, "acme")
    settings = settings_for(tmp_path)
    settings.kafka.remember_keys = 2
    desk = Desk()
    async with serving(settings, Vendors(), desk) as tenancy:
        for order in ("A-1", "A-2", "A-3"):
            desk.offer(tenancy, "acme", order)
        assert decode(Record(TOPIC, 0, 9, b"A-3", None), locate=tenancy.router.locate).tenant == "acme"
        with pytest.raises(RouteError, match="no event of its key was routed"):
            decode(Record(TOPIC, 0, 10, b"A-1", None), locate=tenancy.router.locate)


async def test_a_member_that_cannot_route_deletes_by_key_says_so_at_start(tmp_path: Path) -> None:
    shop_file(tmp_path, "acme")
    settings = settings_for(tmp_path)
    settings.kafka.remember_keys = 0
    out = io.StringIO()
    logs.configure("INFO", stream=out)
    try:
        async with serving(settings, Vendors(), Desk()):
            pass
    finally:
        logs.configure("INFO")
    assert '"route_deletes_unroutable"' in out.getvalue()
    assert "kafka.remember_keys = 0" in out.getvalue()


async def test_a_shop_parked_again_keeps_the_jobs_of_its_replayed_events(tmp_path: Path) -> None:
    """Found in review (issue 20): parking a shop drains its deliverer on the partitions it parks on;
    the changes it was replaying stay in the coalescer (they are on the parking topic already), and
    their jobs, dropped by the drain, were never submitted again: the replay never finished."""
    shop_file(tmp_path, "acme")
    settings = settings_for(tmp_path, park_after_seconds=0.05)
    vendors, desk = Vendors(), Desk()
    ports = ParkPorts()
    async with serving(settings, vendors, desk) as tenancy:
        assignment = Assignment()
        assignment.add(TP).status = PartitionStatus.OWNED
        parking = Parking(
            settings,
            _ParkingTopic(),
            assignment,
            desk.coalescer,
            tenancy,
            desk.metrics,
            clock=SYSTEM_CLOCK,
            rng=Random(1),
        )
        ports.connect(parking)
        async with parking:
            parking.set_layout({TOPIC: 1})
            assert await parking.assign(TP, CommitMeta(0.0), 10)
            vendor = vendors.of("acme")
            vendor.fail = AuthError("PUT /orders answered 401", status=401)
            replayed = Record(TOPIC, 0, 3, b"A1", b'{"shop": "acme", "external_id": "A1"}', parked_at=7)
            change = decode(replayed, validate=False, locate=tenancy.router.locate)
            desk.hand(tenancy, change)
            await until(lambda: tenancy.served()["acme"].deliverer.circuit.is_open)
            await asyncio.sleep(0.1)
            parking.check()
            await until(lambda: parking.parked(TP, "acme"))
            vendor.fail = None
            await until(lambda: "A1" in vendor.applied)


# -- one shop's health and quiescence (what parking asks), drains and vendors --------------------
async def test_a_shops_health_is_its_own_circuit_and_a_shop_not_served_has_none(tmp_path: Path) -> None:
    """What parking judges a shop by: its circuit (open since when) and its pace; one shop whose key
    is refused has its circuit open, the other's stays closed."""
    for shop in ("acme", "bolt"):
        shop_file(tmp_path, shop)
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        healthy = tenancy.health("acme")
        assert healthy is not None
        assert (healthy.open_since, healthy.closed, healthy.pace_factor) == (None, True, 1.0)
        assert healthy.full_rate > 0
        assert tenancy.health("ghost") is None
        assert tenancy.open_circuits() == set()
        vendors.of("bolt").fail = AuthError("401 Unauthorized", status=401)
        desk.offer(tenancy, "bolt", "B1")
        await until(lambda: (h := tenancy.health("bolt")) is not None and h.open_since is not None)
        down = tenancy.health("bolt")
        assert down is not None
        assert not down.closed
        assert tenancy.health("acme") == healthy
        assert tenancy.open_circuits() == {"bolt"}  # the shops parking judges besides those with orders


async def test_a_quiesced_shop_takes_no_job_of_those_partitions_until_resumed(tmp_path: Path) -> None:
    """Parking quiesces one shop on the partitions it parks it on: that shop's jobs there are dropped
    (reported abandoned, nothing sent), the other shop's go on; resumed, it takes jobs again."""
    for shop in ("acme", "bolt"):
        shop_file(tmp_path, shop)
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        assert await tenancy.quiesce("acme", {TP}, timeout=1.0)
        assert not await tenancy.quiesce("ghost", {TP}, timeout=1.0)
        desk.offer(tenancy, "acme", "A1")
        desk.offer(tenancy, "bolt", "B1")
        await until(lambda: "bolt/B1" in desk.delivered)
        assert vendors.of("acme").calls == 0
        assert rows(tenancy)["acme"]["jobs"] == 0
        tenancy.resume("acme", {TP})
        tenancy.submit(held(desk, "acme/A1"))
        await until(lambda: "acme/A1" in desk.delivered)
        assert vendors.of("acme").applied == ["A1"]


async def test_a_partition_being_revoked_stays_drained_when_parking_resumes_a_shop(tmp_path: Path) -> None:
    """Every shop drains a partition being revoked; a park ending meanwhile resumes its shop on it, but
    not on what every shop drains: only the next assignment (undrain) lets jobs of it in again."""
    shop_file(tmp_path, "acme")
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        await tenancy.drain({TP}, timeout=0.1)
        tenancy.resume("acme", {TP})
        desk.offer(tenancy, "acme", "A1")
        await asyncio.sleep(0.1)
        assert vendors.of("acme").calls == 0
        tenancy.undrain({TP})
        tenancy.submit(held(desk, "acme/A1"))
        await until(lambda: "acme/A1" in desk.delivered)


async def test_changes_are_checked_against_their_shops_vendor_and_version(tmp_path: Path) -> None:
    """Each shop's deliverer checks what it sends against its own API version: Loop from 2026-10
    requires ``created_at``, so the same body is refused for one shop (never sent) and delivered for
    the other."""
    shop_file(tmp_path, "acme", api_version="2026-10")
    shop_file(tmp_path, "bolt")
    vendors, desk = Vendors(), Desk()
    async with serving(settings_for(tmp_path), vendors, desk) as tenancy:
        assert sorted(tenancy.names()) == ["acme", "bolt"]
        desk.offer(tenancy, "acme", "A1")
        desk.offer(tenancy, "bolt", "B1")
        await until(lambda: desk.failed and desk.delivered)
        [(key, error)] = desk.failed
        assert key == "acme/A1"
        assert isinstance(error, OrderValidationError)
        assert "created_at" in str(error)
        assert desk.delivered == ["bolt/B1"]
        assert vendors.of("acme").calls == 0


async def test_without_tenants_path_the_sink_section_is_the_one_shop() -> None:
    """The single-shop deployment: one shop named "", made of the ``sink`` section, nothing routed."""
    settings = Settings(sink=SinkSettings(base_url="http://solo", api_key="solo-key"))
    vendors, desk = Vendors(), Desk()
    async with serving(settings, vendors, desk) as tenancy:
        assert not tenancy.many
        assert tenancy.names() == [""]
        desk.offer(tenancy, "", "A1", locate=lambda record, data: ("", target("loop", "v1")))
        await until(lambda: "A1" in desk.delivered)
        assert vendors.of("solo").applied == ["A1"]
        assert vendors.of("solo").keys == ["solo-key"]


async def test_the_first_load_routes_every_shop_after_one_reindex(tmp_path: Path) -> None:
    """Starting with many shops reindexes the router once, after opening them all: after each one made
    starting N shops cost N² (2,000 shops: 3.4 s). Every shop is routed once it is entered."""
    shops = [f"s{i:02d}" for i in range(40)]
    for shop in shops:
        shop_file(tmp_path, shop)
    reindexed: list[int] = []

    def count_reindexes(tenancy: Tenancy) -> None:
        router_reindex = tenancy.router.reindex

        def counting(served: Mapping[str, Served]) -> None:
            reindexed.append(len(served))
            router_reindex(served)

        tenancy.router.reindex = counting  # type: ignore[method-assign]

    desk = Desk()
    async with serving(settings_for(tmp_path), Vendors(), desk, before=count_reindexes) as tenancy:
        assert reindexed == [40]
        for shop in shops:
            desk.offer(tenancy, shop, "A1")
        await until(lambda: len(desk.delivered) == 40)


async def test_the_shops_share_out_the_members_memory_for_their_audits(tmp_path: Path) -> None:
    """Each shop keeps at most audit.remember_orders delivered orders for its audits, and all of them
    together audit.remember_orders_per_member, shared out evenly as shops come and go (a thousand
    shops at 10,000 each would have been 11 GB)."""
    for shop in ("acme", "bolt", "cork"):
        shop_file(tmp_path, shop)
    settings = settings_for(tmp_path).model_copy(
        update={"audit": AuditSettings(remember_orders=20, remember_orders_per_member=30)}
    )
    vendors, desk = Vendors(), Desk()
    async with serving(settings, vendors, desk) as tenancy:

        def limits() -> dict[str, int]:
            return {n: a.limit for n in ("acme", "bolt", "cork") if (a := tenancy.resending(n)) is not None}

        assert limits() == {"acme": 10, "bolt": 10, "cork": 10}
        (tmp_path / "cork.toml").unlink()
        await tenancy.reload()
        await tenancy.reload()
        assert limits() == {"acme": 15, "bolt": 15}
        (tmp_path / "bolt.toml").unlink()
        await tenancy.reload()
        await tenancy.reload()
        assert limits() == {"acme": 20}, "never above audit.remember_orders"
