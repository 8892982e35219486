"""Known defects, put back on purpose: each one is a way the pipeline used to be (or could easily be)
wrong. The simulation must catch every one of them; ``test_simulation.py`` pins, for each, a seed
that does, and that the same seed passes without the defect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from connector import errors
from connector.circuit import Circuit, State
from connector.coalesce import Coalescer
from connector.decode import decode as real_decode
from connector.deliver import Deliverer
from connector.fence import Fence
from connector.park import Parking
from connector.pipeline import Pipeline
from connector.sinks.loop import LoopSink
from connector.structs import TopicPartition

Mutation = Callable[[], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _patched(target: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


@contextlib.contextmanager
def marks_survive_revoke() -> Iterator[None]:
    """What was delivered from a partition is remembered after it moved away (``_sent`` was never
    cleared on revoke, and nothing was re-read on assignment, as the code was): a revert is skipped
    as identical while another member changed the order meanwhile."""
    real = Coalescer.drop_partitions

    def keep_marks(self: Coalescer, partitions: Any) -> list[str]:
        marks = dict(self._marks)
        restart = real(self, partitions)
        self._marks.update(marks)
        return restart

    with _patched(Coalescer, "drop_partitions", keep_marks), no_warm_up():
        yield


@contextlib.contextmanager
def timeouts_are_not_ambiguous() -> Iterator[None]:
    """A request that timed out is treated as never applied: the next state goes out at once and the
    late write may land after it."""
    with contextlib.ExitStack() as stack:
        for cls in (errors.SinkTimeout, errors.SinkCutOff, errors.ServerError):
            stack.enter_context(_patched(cls, "ambiguous", False))
        yield


@contextlib.contextmanager
def ambiguity_counted_from_the_call_start() -> Iterator[None]:
    """Found by the simulation: the settle time counted from the start of an ``apply``, not from
    the ambiguous request, which may be its second or third (create then update)."""
    real = Fence.note_ambiguous

    def early(self: Fence, tp: TopicPartition, sent_by: float) -> None:
        real(self, tp, sent_by - 3.0)

    real_monotonic_settle = Deliverer._failed

    def failed(self: Deliverer, job: Any, change: Any, error: BaseException) -> None:
        if isinstance(error, errors.ConnectorError) and error.ambiguous:
            job.not_before -= 3.0
        real_monotonic_settle(self, job, change, error)

    with _patched(Fence, "note_ambiguous", early), _patched(Deliverer, "_failed", failed):
        yield


@contextlib.contextmanager
def deletes_drop_updated_at() -> Iterator[None]:
    """A delete forgets its ``updated_at``, so a late, older upsert brings the order back."""

    def decode(*args: Any, **kwargs: Any) -> Any:
        change = real_decode(*args, **kwargs)
        if change.op == "delete":
            change.updated_at = None
        return change

    import connector.pipeline as pipeline_module

    with _patched(pipeline_module, "decode", decode):
        yield


@contextlib.contextmanager
def not_found_on_upsert_is_a_poison_event() -> Iterator[None]:
    """A 404 from ``PUT /orders`` (wrong base URL, retired version) dead-letters every event in
    turn instead of being an outage."""
    real = LoopSink.apply

    async def apply(self: LoopSink, change: Any) -> None:
        try:
            await real(self, change)
        except errors.EndpointError as exc:
            raise errors.NotFoundError(str(exc), status=exc.status, body=exc.body) from None

    with _patched(LoopSink, "apply", apply):
        yield


@contextlib.contextmanager
def a_403_is_always_an_outage() -> Iterator[None]:
    """A 403 that applies to one operation only flips the circuit open and closed for ever and its
    event never resolves."""
    with _patched(Deliverer, "_per_event_forbidden", lambda self, job, change, error: error):
        yield


@contextlib.contextmanager
def an_outage_pauses_consumption() -> Iterator[None]:
    """The circuit pauses every partition while open (and only a queued job can probe): after a
    rebalance during an outage no job is left, nothing probes, and nothing resumes."""
    real = Deliverer._on_circuit

    def on_circuit(self: Deliverer, changed: State | None) -> None:
        real(self, changed)
        pipeline = self._report.__self__  # type: ignore[attr-defined]
        if changed is not None:
            pipeline._set_paused("outage", changed is State.OPEN)

    with _patched(Deliverer, "_on_circuit", on_circuit):
        yield


@contextlib.contextmanager
def hand_over_forgets_the_inherited_hold() -> Iterator[None]:
    """Found by the simulation: a member that gave a partition back before its previous owner's
    requests could land wrote its own, earlier settle-by, and the next owner sent too soon."""

    def settle_by(self: Fence, tp: TopicPartition, lease_until: float | None) -> float:
        grant = self._grants.get(tp)
        ambiguous = grant.ambiguous_until if grant is not None else 0.0
        return ambiguous if lease_until is None else max(ambiguous, lease_until + self.settle_seconds)

    with _patched(Fence, "settle_by", settle_by):
        yield


@contextlib.contextmanager
def no_hold_after_assignment() -> Iterator[None]:
    """A new owner sends at once, while an expelled or killed owner's requests may still land."""
    real = Fence.assign

    def assign(self: Fence, tp: TopicPartition, hold_until: float) -> None:
        real(self, tp, 0.0)

    with _patched(Fence, "assign", assign):
        yield


@contextlib.contextmanager
def no_lease() -> Iterator[None]:
    """A member sends whether or not it could commit lately (an expelled member keeps sending)."""
    real = Fence.renew

    def renew(self: Fence, tp: TopicPartition, lease_until: float) -> None:
        real(self, tp, float("inf"))

    with _patched(Fence, "renew", renew):
        yield


@contextlib.contextmanager
def no_warm_up() -> Iterator[None]:
    """A new owner remembers nothing of what was delivered before the committed offset: a late,
    older event is sent."""
    real = Pipeline._warm

    def warm(self: Pipeline, record: Any) -> None:
        return None

    with _patched(Pipeline, "_warm", warm):
        yield
    del real


MUTATIONS: dict[str, Mutation] = {
    f.__name__: f
    for f in (
        marks_survive_revoke,
        timeouts_are_not_ambiguous,
        ambiguity_counted_from_the_call_start,
        deletes_drop_updated_at,
        not_found_on_upsert_is_a_poison_event,
        a_403_is_always_an_outage,
        an_outage_pauses_consumption,
        hand_over_forgets_the_inherited_hold,
        no_hold_after_assignment,
        no_lease,
        no_warm_up,
    )
}


@contextlib.contextmanager
def fetched_while_assigning() -> Iterator[None]:
    """Found on the real broker: records fetched from the committed offset while the assign callback
    awaited came before the warm-up re-read, then again (the process crashed on the second read)."""
    real = Pipeline.on_assigned

    async def on_assigned(self: Pipeline, partitions: set[TopicPartition]) -> None:
        source = self._source
        assert source is not None
        real_pause = source.pause
        source.pause = lambda parts: None  # type: ignore[method-assign]
        try:
            await real(self, partitions)
        finally:
            source.pause = real_pause  # type: ignore[method-assign]
        if self._paused:
            source.pause(partitions)

    with _patched(Pipeline, "on_assigned", on_assigned):
        yield


MUTATIONS[fetched_while_assigning.__name__] = fetched_while_assigning


@contextlib.contextmanager
def read_ahead_resumes_an_assignment_being_warmed() -> Iterator[None]:
    """Found by the simulation (seed 3576 of the soak): the read-ahead bound, releasing, resumed every
    owned partition, also those an assignment had just paused until its warm-up seek; their records
    from the committed offset came first and a late, older delete was sent."""
    with _patched(Pipeline, "__init__", _without_assigning(Pipeline.__init__)):
        yield


def _without_assigning(init: Any) -> Any:
    class _Never(set[Any]):
        def __ior__(self, other: Any) -> Any:
            return self

    def patched(self: Pipeline, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._assigning = _Never()

    return patched


MUTATIONS[read_ahead_resumes_an_assignment_being_warmed.__name__] = (
    read_ahead_resumes_an_assignment_being_warmed
)


@contextlib.contextmanager
def a_failed_change_forgets_its_version() -> Iterator[None]:
    """Found by the simulation (seed 682): only delivered changes left a mark, so after the newest
    change of an order was dead-lettered (and an older one had landed late), a delete older than both
    was sent and applied after the newer state."""
    real = Coalescer._mark

    def mark(self: Coalescer, key: str, change: Any, delivered: bool) -> None:
        if delivered:
            real(self, key, change, delivered)

    with _patched(Coalescer, "_mark", mark):
        yield


MUTATIONS[a_failed_change_forgets_its_version.__name__] = a_failed_change_forgets_its_version


# -- parking (many shops): defects of the parking stage, caught by the many-shop schedules ---------


@contextlib.contextmanager
def no_parking() -> Iterator[None]:
    """A shop that cannot be served is never parked: its events hold the commit of the partitions it
    shares, and fill the read-ahead, so a healthy shop waits for the failing one to recover."""
    with _patched(Parking, "check", lambda self: None):
        yield


@contextlib.contextmanager
def parked_resolved_before_it_is_written() -> Iterator[None]:
    """An event handed to the parking writer is resolved at once, not when the parking topic
    acknowledged it: with the topic refusing writes and the member then dying, it is lost."""
    real = Parking.park

    def park(self: Parking, record: Any, tenant: str, hold_until: float = 0.0) -> None:
        real(self, record, tenant, hold_until)
        self._resolved(record)

    with _patched(Parking, "park", park):
        yield


@contextlib.contextmanager
def any_parked_record_counts() -> Iterator[None]:
    """Every record parked from a partition is replayed, also one parked by a member that never
    committed past it: its event was read again and sent by the next owner, and the stale copy
    replayed after it brings the order back to an older state."""
    with _patched(Parking, "_valid", lambda self, part, tp, parked: parked.record.tp == tp):
        yield


@contextlib.contextmanager
def warm_up_marks_parked_events_delivered() -> Iterator[None]:
    """Found by the simulation (seed 9 of the many-shop schedules): the warm-up noted a parked shop's
    events as delivered, and their replay was skipped as identical: the order never got its state."""
    real = Pipeline._warm

    def warm(self: Pipeline, record: Any) -> None:
        parked = self.park.parked_before
        self.park.parked_before = lambda tp, tenant: False  # type: ignore[method-assign]
        try:
            real(self, record)
        finally:
            self.park.parked_before = parked  # type: ignore[method-assign]

    with _patched(Pipeline, "_warm", warm):
        yield


@contextlib.contextmanager
def warm_up_reads_the_parked_tenants_of_now() -> Iterator[None]:
    """Found by the simulation (seed 618 of the many-shop schedules, in review): the warm-up asked
    whether a tenant is parked now, and this member parked one while re-reading, so the tenant's
    older events were noted as delivered (a delete's digest) and its newer ones by version only;
    its parked delete was then skipped as identical."""
    with _patched(Parking, "parked_before", Parking.parked):
        yield


@contextlib.contextmanager
def parked_change_forgets_what_it_stands_for() -> Iterator[None]:
    """Found by the simulation (seeds 226 and 692 of the many-shop schedules): a change parked from
    the coalescer did not carry the newer version of an event skipped as identical to it (a copy, or a
    newer delete: every delete has the same payload), so the next owner's warm-up, noting that newer
    version, found the replay stale and the order never got its state."""
    real = Coalescer.take_tenant

    def take(self: Coalescer, tenant: str, partitions: Any) -> Any:
        return [(change, None) for change, _ in real(self, tenant, partitions)]

    with _patched(Coalescer, "take_tenant", take):
        yield


for _m in (
    no_parking,
    parked_resolved_before_it_is_written,
    any_parked_record_counts,
    warm_up_marks_parked_events_delivered,
    warm_up_reads_the_parked_tenants_of_now,
    parked_change_forgets_what_it_stands_for,
):
    MUTATIONS[_m.__name__] = _m


@contextlib.contextmanager
def replay_goes_on_while_revoking() -> Iterator[None]:
    """Found by the simulation (seed 807 of the many-shop schedules): parked events were still handed
    over while their partition was being revoked, after its changes had been dropped; the same member,
    assigned the partition again, found them in its coalescer, and skipped their replay as identical."""
    with _patched(Parking, "freeze", lambda self, partitions: None):
        yield


MUTATIONS[replay_goes_on_while_revoking.__name__] = replay_goes_on_while_revoking


@contextlib.contextmanager
def a_429_opens_the_circuit() -> Iterator[None]:
    """Found on the real broker (issue 20): the circuit counted every retryable failure, 429s too, so a
    stranger spending half a shop's key opened its outage circuit ("26 of the last 50 calls failed;
    last: ... answered 429") and, in many-shop mode, parked the shop as if its API were down."""
    real = Circuit.record

    def record(self: Circuit, error: BaseException | None, now: float) -> State | None:
        if isinstance(error, errors.RateLimited):
            error = errors.ServerError(str(error), status=429)  # counted as a failure, as it was
        return real(self, error, now)

    with _patched(Circuit, "record", record):
        yield


MUTATIONS[a_429_opens_the_circuit.__name__] = a_429_opens_the_circuit
