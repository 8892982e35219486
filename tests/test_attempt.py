"""One attempt of a delivery job (``connector/attempt.py``): the request on its tick, what the hooks
hear of it, and a drain's cancel told apart from an answer."""

from __future__ import annotations

import asyncio

from connector import errors
from connector.attempt import Attempted, Attempts
from connector.instruments import CallEnded, CallSent
from connector.jobs import Job, JobState, Lane
from connector.logs import named_in_logs
from connector.metrics import Metrics
from connector.readback import Held
from connector.sinks import Prepaid
from connector.structs import OrderChange, Record, TopicPartition
from tests.fakes import LoopClock, Vendor

TP = TopicPartition("orders", 0)


class Hooks(Metrics):
    """A deliverer's hooks, noting what they hear of the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[CallSent] = []
        self.ended: list[CallEnded] = []

    def call_sent(self, event: CallSent) -> None:
        self.sent.append(event)
        super().call_sent(event)

    def call_ended(self, event: CallEnded) -> None:
        self.ended.append(event)
        super().call_ended(event)


def change_of(key: str) -> OrderChange:
    record = Record(TP.topic, TP.partition, 0, key.encode(), b"{}")
    return OrderChange(record, key, "upsert", {"status": "active"})


def attempts(vendor: Vendor, hooks: Hooks) -> Attempts:
    return Attempts(vendor, hooks, clock=LoopClock(), tenant="acme")


def test_an_answered_apply_is_counted_and_reported_with_its_status_class() -> None:
    async def main() -> None:
        vendor, hooks = Vendor(), Hooks()
        job = Job("A1", TP, tick=1.0)
        sent = await attempts(vendor, hooks).send(job, change_of("A1"))
        assert sent == Attempted(None, None, False)
        assert [c.external_id for c in vendor.applied] == ["A1"]
        assert (job.attempts, job.state, job.call) == (1, JobState.IN_FLIGHT, None)
        assert hooks.sent == [CallSent("acme")]
        assert [(e.tenant, e.status_class) for e in hooks.ended] == [("acme", "2xx")]

    asyncio.run(main())


class NamingVendor(Vendor):
    """A vendor client noting what log lines name while it is called."""

    def __init__(self) -> None:
        super().__init__()
        self.named: list[dict[str, object]] = []

    async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
        self.named.append(dict(named_in_logs()))
        await super().apply(change, prepaid)


def test_log_lines_name_the_changes_record_while_its_call_runs_and_not_after() -> None:
    async def main() -> None:
        vendor, hooks = NamingVendor(), Hooks()
        change = change_of("A1")
        await attempts(vendor, hooks).send(Job("A1", TP, tick=1.0), change)
        expected = {"topic": TP.topic, "partition": TP.partition, "offset": 0, "external_id": "A1"}
        assert vendor.named == [{**expected, "tenant": "acme"}]
        assert dict(named_in_logs()) == {}
        await Attempts(vendor, hooks, clock=LoopClock()).send(Job("A1", TP, tick=2.0), change)
        assert vendor.named[-1] == expected, "the only shop is not named"

    asyncio.run(main())


def test_a_failed_apply_ends_in_its_error_and_an_audits_read_in_what_the_vendor_holds() -> None:
    async def main() -> None:
        vendor, hooks = Vendor(), Hooks()
        send = attempts(vendor, hooks)
        vendor.fail = errors.ServerError("503", status=503)
        failed = await send.send(Job("A1", TP), change_of("A1"))
        assert isinstance(failed.error, errors.ServerError)
        assert not failed.cancelled
        assert hooks.ended[-1].status_class == "5xx"
        vendor.fail = None
        await send.send(Job("A1", TP), change_of("A1"))
        read = await send.send(Job("A1", TP, lane=Lane.AUDIT), change_of("A1"))
        assert read.held == Held(True, None, {"status": "active"})
        assert vendor.reads == ["A1"]

    asyncio.run(main())


def test_a_call_a_drain_cancels_is_told_apart_from_an_answer() -> None:
    """The drain cancels the call through ``job.call``: the attempt ends as cancelled (its request may
    have been sent), with no status class, and the worker running it is not cancelled itself."""

    async def main() -> None:
        vendor, hooks = Vendor(), Hooks()
        vendor.gate.clear()  # the call hangs until cancelled
        job = Job("A1", TP)
        running = asyncio.ensure_future(attempts(vendor, hooks).send(job, change_of("A1")))
        while job.call is None:
            await asyncio.sleep(0)
        call = job.call
        call.cancel()
        sent = await running
        assert sent.cancelled
        assert sent.error is None
        assert call.ended.done()
        assert job.call is None
        assert [e.status_class for e in hooks.ended] == [None]
        assert vendor.applied == []

    asyncio.run(main())
