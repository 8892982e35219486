"""One shop being served: its client that can be told to refuse (the end of a removed shop's grace),
and the names it goes by."""

from __future__ import annotations

from contextlib import AsyncExitStack
from random import Random

import pytest
from pydantic import SecretStr

from connector._served import Retirable, Served
from connector.circuit import Circuit
from connector.clock import SYSTEM_CLOCK
from connector.config import SinkSettings
from connector.deliver import Deliverer
from connector.errors import AuthError, RouteError
from connector.metrics import Metrics
from connector.pacing import Pacer
from connector.retry import RetryPolicy
from connector.structs import OrderChange, Record
from tests.fakes import NoWork, Vendor


def change(key: str, tenant: str = "acme") -> OrderChange:
    return OrderChange(Record("orders", 0, 0, key.encode(), b"{}"), key, "upsert", {}, tenant=tenant)


async def test_a_retirable_client_sends_until_told_to_refuse_then_sends_nothing() -> None:
    """Refusing, every change is a RouteError naming the shop and the reason, and nothing reaches
    the vendor, nor its probe (the circuit lets the refusals go); resumed, it sends again."""
    vendor = Vendor()
    client = Retirable(vendor)
    await client.apply(change("A1"))
    client.refuse("tenant acme was removed from tenants.path")
    with pytest.raises(RouteError, match="acme was removed") as refused:
        await client.apply(change("A2"))
    assert refused.value.tenant == "acme"
    vendor.fail = AuthError("401", status=401)
    await client.probe()
    assert [c.external_id for c in vendor.applied] == ["A1"]
    assert vendor.calls == 1
    client.resume()
    vendor.fail = None
    await client.apply(change("A3"))
    assert [c.external_id for c in vendor.applied] == ["A1", "A3"]


async def test_a_retirable_client_passes_a_rotated_key_and_its_name_through() -> None:
    vendor = Vendor()
    client = Retirable(vendor)
    client.set_api_key(SecretStr("new-key"))
    assert vendor.keys == ["new-key"]
    assert client.name == vendor.name
    async with client:
        pass
    assert not vendor.closed, "closed by the stack that opened it, not by this wrapper"


def test_a_served_shop_answers_to_its_name_its_shown_name_and_its_aliases() -> None:
    pacer = Pacer.standalone(5.0, SYSTEM_CLOCK)
    vendor = Retirable(Vendor())
    deliverer = Deliverer(
        vendor,
        NoWork(),
        Metrics(),
        clock=SYSTEM_CLOCK,
        rng=Random(1),
        pacer=pacer,
        circuit=Circuit(10, 5, 0.5, 1.0),
        policy=RetryPolicy(rng=Random(2)),
        target=None,
        max_in_flight=1,
    )
    served = Served(
        "acme", SinkSettings(), pacer, vendor, deliverer, AsyncExitStack(), "acme-eu", frozenset({"acme-us"})
    )
    assert served.names == {"acme", "acme-eu", "acme-us"}
    assert not served.retiring
    served.removed_at = 12.0
    assert served.retiring
