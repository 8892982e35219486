"""Known defects, put back on purpose: each one is a way the pipeline used to be (or could easily be)
wrong. The simulation must catch every one of them; ``test_simulation.py`` pins, for each, a seed
that does, and that the same seed passes without the defect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from connector import errors
from connector._lastseen import LastSeen
from connector.circuit import Circuit, State
from connector.coalesce import Coalescer, Resolution
from connector.decode import decode as real_decode
from connector.deliver import Deliverer, Job, JobState, Lane
from connector.fence import Fence
from connector.lookahead import Lookahead
from connector.membership import Membership
from connector.metadata import CommitMeta
from connector.outages import Outages
from connector.park import Parking
from connector.park._replay import Replay
from connector.park._writer import ParkWriter
from connector.structs import TopicPartition, Version
from connector.vendors.loop import LoopSink

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

    import connector.reader as reader_module

    with _patched(reader_module, "decode", decode):
        yield


@contextlib.contextmanager
def not_found_on_upsert_is_a_poison_event() -> Iterator[None]:
    """A 404 from ``PUT /orders`` (wrong base URL, retired version) dead-letters every event in
    turn instead of being an outage."""
    real = LoopSink.apply

    async def apply(self: LoopSink, change: Any, prepaid: Any = None) -> None:
        try:
            await real(self, change, prepaid)
        except errors.EndpointError as exc:
            raise errors.NotFoundError(str(exc), status=exc.status, body=exc.body) from None

    with _patched(LoopSink, "apply", apply):
        yield


@contextlib.contextmanager
def a_403_is_always_an_outage() -> Iterator[None]:
    """A 403 that applies to one operation only flips the circuit open and closed for ever and its
    event never resolves."""
    with _patched(Outages, "per_operation", lambda self, job, op, error: error):
        yield


@contextlib.contextmanager
def an_outage_pauses_consumption() -> Iterator[None]:
    """The circuit pauses every partition while open (and only a queued job can probe): after a
    rebalance during an outage no job is left, nothing probes, and nothing resumes."""
    real = Deliverer.__init__

    def init(self: Deliverer, *args: Any, linger: Any = None, on_circuit: Any = None, **kwargs: Any) -> None:
        def changed(tenant: str, state: State) -> None:  # every change the circuit announces
            if on_circuit is not None:
                on_circuit(tenant, state)
            if linger is not None:  # the member's Membership (``connector.deliver.Linger``)
                linger.set_paused("outage", state is State.OPEN)

        real(self, *args, linger=linger, on_circuit=changed, **kwargs)

    with _patched(Deliverer, "__init__", init):
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
    with _patched(Coalescer, "remember", lambda self, change, delivered=True: None):
        yield


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
    real = Membership.on_assigned

    async def on_assigned(self: Membership, partitions: set[TopicPartition]) -> None:
        source = self.source
        assert source is not None
        real_pause = source.pause
        source.pause = lambda parts: None  # type: ignore[method-assign]
        try:
            await real(self, partitions)
        finally:
            source.pause = real_pause  # type: ignore[method-assign]
        if self.paused:
            source.pause(partitions)

    with _patched(Membership, "on_assigned", on_assigned):
        yield


MUTATIONS[fetched_while_assigning.__name__] = fetched_while_assigning


@contextlib.contextmanager
def read_ahead_resumes_an_assignment_being_warmed() -> Iterator[None]:
    """Found by the simulation (seed 3576 of the soak): the read-ahead bound, releasing, resumed every
    owned partition, also those an assignment had just paused until its warm-up seek; their records
    from the committed offset came first and a late, older delete was sent."""

    def apply_pauses(self: Membership) -> None:
        if self.source is None:
            return
        owned = self.assignment.partitions()
        if self.paused:
            self.source.pause(owned)
        else:
            self.source.resume(owned)

    with _patched(Membership, "_apply_pauses", apply_pauses):
        yield


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
    real = ParkWriter.put

    def put(self: ParkWriter, record: Any, tenant: str, hold_until: float, as_of: Any, part: Any) -> None:
        real(self, record, tenant, hold_until, as_of, part)
        self._ledger.resolve(record, Resolution.PARKED)

    with _patched(ParkWriter, "put", put):
        yield


@contextlib.contextmanager
def any_parked_record_counts() -> Iterator[None]:
    """Every record parked from a partition is replayed, also one parked by a member that never
    committed past it: its event was read again and sent by the next owner, and the stale copy
    replayed after it brings the order back to an older state."""
    with _patched(Replay, "valid", lambda self, part, tp, parked, at: parked.record.tp == tp):
        yield


@contextlib.contextmanager
def warm_up_trusts_digests() -> Iterator[None]:
    """Found by the simulation with short warm-ups (seeds 84 and 801), and before it by the many-shop
    schedules for parked shops (seeds 9 and 618): the warm-up noted every event before the committed
    offset as delivered, digest and all, though it may have been replaced, skipped as stale, parked or
    dead-lettered; a later event equal to it was then skipped as identical and never sent."""
    real = Coalescer.remember

    def remember(self: Coalescer, change: Any, delivered: bool = True) -> None:
        real(self, change, delivered=True)

    with _patched(Coalescer, "remember", remember):
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
    warm_up_trusts_digests,
    parked_change_forgets_what_it_stands_for,
):
    MUTATIONS[_m.__name__] = _m


@contextlib.contextmanager
def replay_goes_on_while_revoking() -> Iterator[None]:
    """Found by the simulation (seed 807 of the many-shop schedules): parked events were still handed
    over while their partition was being revoked, after its changes had been dropped; the same member,
    assigned the partition again, found them in its coalescer, and skipped their replay as identical."""

    def state(self: Replay, tp: TopicPartition) -> Any:
        part = self._assignment.get(tp)
        return part.park if part is not None else None

    with _patched(Replay, "state", state):
        yield


MUTATIONS[replay_goes_on_while_revoking.__name__] = replay_goes_on_while_revoking


# -- issue 20: Kafka as unkind as it really is ------------------------------------------------------


@contextlib.contextmanager
def no_lookahead() -> Iterator[None]:
    """A new owner sends what it re-reads from the committed offset as it comes: an order the previous
    owner already brought to a newer state is sent an older one first (the previous owner's commit was
    held back by another order, a slow read split the order's events over several fetches)."""
    with _patched(Lookahead, "superseded", lambda self, change, offset: False):
        yield


@contextlib.contextmanager
def an_empty_read_is_caught_up() -> Iterator[None]:
    """A parking read right after a seek came back empty and counted as caught up; only this member's
    own appends were checked, not what was on the parking topic when it was assigned: the shop was
    unparked with inherited events unread, its next commit dropped them, and they were never replayed."""
    real = Replay._unpark

    def unpark(self: Replay, tp: TopicPartition, part: Any) -> None:
        end = part.end_at_assign
        part.end_at_assign = 0
        try:
            real(self, tp, part)
        finally:
            part.end_at_assign = end

    with _patched(Replay, "_unpark", unpark):
        yield


@contextlib.contextmanager
def one_replay_start_per_partition() -> Iterator[None]:
    """Every parked shop of a partition was replayed from one watermark, the first parking offset any
    shop still had to replay: a shop stuck on its first parked event made every other shop's delivered
    parked events replay again after each rebalance, older states over newer ones."""
    real = Replay.valid

    def valid(self: Replay, part: Any, tp: TopicPartition, parked: Any, at: int) -> bool:
        if parked.record.tp != tp or not part.starts:
            return False
        if at < min(part.starts.values()):
            return False
        if parked.token == part.token:
            return True
        return part.start is not None and parked.record.offset < part.start

    del real
    with _patched(Replay, "valid", valid):
        yield


@contextlib.contextmanager
def no_parking_lookahead() -> Iterator[None]:
    """What a new owner replays is sent as it is read: a parked event whose order a previous owner
    already replayed to a newer state goes out first."""
    with _patched(Replay, "superseded", lambda self, change, record: False):
        yield


@contextlib.contextmanager
def lookahead_starts_over() -> Iterator[None]:
    """Found by the simulation (many-shop seed 24): the parking lookahead gave up on an empty read and
    started over on its next round; with reads after a seek often empty it never finished, and the
    parked shops were never replayed."""
    real = Replay._look_ahead

    async def look_ahead(self: Replay, tp: TopicPartition, part: Any) -> None:
        part.lookahead = None
        await real(self, tp, part)

    with _patched(Replay, "_look_ahead", look_ahead):
        yield


@contextlib.contextmanager
def parking_partition_recomputed() -> Iterator[None]:
    """The parking partition of a source partition was its index in the layout, modulo the parking
    topic's partitions, computed again at each assignment: partitions added to the topic moved it,
    and what was parked before was never replayed."""
    real = Parking.assign

    async def assign(self: Parking, tp: TopicPartition, meta: Any, committed: int | None) -> bool:
        from dataclasses import replace

        return await real(self, tp, replace(meta, park_partition=None), committed)

    with _patched(Parking, "assign", assign):
        yield


@contextlib.contextmanager
def re_park_drops_replayed_jobs() -> Iterator[None]:
    """Parking a shop again dropped the jobs of its replayed changes (the drain abandons them) and
    nothing submitted them again: their parking offsets stayed unresolved, and the shop's replay never
    finished."""
    with _patched(Coalescer, "slots_of", lambda self, tenant, partitions: []):
        yield


@contextlib.contextmanager
def no_horizon() -> Iterator[None]:
    """A member reads and sends any distance past what its last commit announced: its successor's
    lookahead does not reach what it sent, and an older state follows a newer one."""
    with _patched(Membership, "horizon", lambda self, part: float("inf")):
        yield


@contextlib.contextmanager
def parking_off_drops_parked_events() -> Iterator[None]:
    """A member with parking switched off (``tenants.park_after_seconds = 0``), as 0.1.0 did, neither
    read the parking topic nor kept the parking state of its partitions' commits: what other members
    had parked was never replayed, and its shop's newer events went straight past it."""
    real_init = Parking.__init__

    def init(self: Parking, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        if not self.may_park:
            self.available = False

    real_state = Parking.commit_state

    def commit_state(self: Parking, partitions: set[TopicPartition]) -> Any:
        if not self.available:
            return dict.fromkeys(partitions, CommitMeta())
        return real_state(self, partitions)

    with _patched(Parking, "__init__", init), _patched(Parking, "commit_state", commit_state):
        yield


for _m in (
    parking_off_drops_parked_events,
    no_lookahead,
    an_empty_read_is_caught_up,
    one_replay_start_per_partition,
    no_parking_lookahead,
    lookahead_starts_over,
    parking_partition_recomputed,
    re_park_drops_replayed_jobs,
    no_horizon,
):
    MUTATIONS[_m.__name__] = _m


@contextlib.contextmanager
def rescan_starts_over() -> Iterator[None]:
    """Found by the simulation (many-shop seed 1029): reading again what a shop had held back, a scan
    that gave up on reads coming back empty started over from the first held-back record on its next
    round; with reads after a seek often empty, a shop's last parked events waited minutes, and the run
    never converged."""
    real = Replay._rescan

    async def rescan(self: Replay, tp: TopicPartition, part: Any, tenant: str) -> None:
        first = part.held_from[tenant]
        await real(self, tp, part, tenant)
        if tenant in part.held_from and part.held_from[tenant] > first:
            part.held_from[tenant] = first

    with _patched(Replay, "_rescan", rescan):
        yield


MUTATIONS[rescan_starts_over.__name__] = rescan_starts_over


@contextlib.contextmanager
def an_unknown_outcome_keeps_the_digest() -> Iterator[None]:
    """Found by the simulation (many-shop seed 1237): an order's request ended ambiguously (a 500 the
    vendor may have applied), its newer change was then refused for good; the order kept the digest of
    the state delivered before, so a later event equal to that state was skipped as identical while the
    vendor held the ambiguous one."""
    real = Coalescer.finish

    def finish(self: Coalescer, key: str, delivered: bool, unknown: bool = False) -> Any:
        return real(self, key, delivered)

    with _patched(Coalescer, "finish", finish):
        yield


MUTATIONS[an_unknown_outcome_keeps_the_digest.__name__] = an_unknown_outcome_keeps_the_digest


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


@contextlib.contextmanager
def a_renamed_shop_paced_under_its_new_name() -> Iterator[None]:
    """Found by the simulation (many-shop seed 374): a member started after a shop's rename paced it
    under its new name (another grid of ticks, other 429 cuts) while a member started before paced it
    under its old one: together they sent 6 requests in one second on a budget of 5."""
    import connector.tenancy as tenancy_module

    with _patched(tenancy_module, "budget_name", lambda name, tenant: name):
        yield


MUTATIONS[a_renamed_shop_paced_under_its_new_name.__name__] = a_renamed_shop_paced_under_its_new_name


@contextlib.contextmanager
def a_starved_shop_is_never_parked() -> Iterator[None]:
    """Found by the simulation (many-shop seed 2879): once 429s no longer opened the circuit, a shop
    whose key another client took almost whole was never parked (too few orders for
    ``tenants.park_max_keys``), and its slow drain held back the commits of a healthy shop beside it."""
    import connector.park._rules as rules_module

    with _patched(rules_module, "STARVED", 0.0):
        yield


MUTATIONS[a_starved_shop_is_never_parked.__name__] = a_starved_shop_is_never_parked


@contextlib.contextmanager
def tombstone_takes_the_deletes_time() -> Iterator[None]:
    """Issue 21 (found with Debezium at its defaults, on the real chain too): a tombstone after a
    delete, skipped as identical, left the delete's mark with its own version, an offset without
    ``updated_at``; an update Debezium sent again after a restart was then newer by offset, upserted,
    and the order came back until the re-sent delete deleted it a second time."""

    def newer(self: Version, other: Version | None) -> Version:
        return other if other is not None and self.older_than(other) else self

    with _patched(Version, "joined", newer):
        yield


@contextlib.contextmanager
def deletes_routed_by_their_fields_only() -> Iterator[None]:
    """Issue 21: with many shops, a delete that names no shop (a tombstone, a Debezium delete at the
    default replica identity) was dead-lettered, stage route: the order was never deleted."""
    with _patched(LastSeen, "shop_of", lambda self, record: None):
        yield


MUTATIONS[tombstone_takes_the_deletes_time.__name__] = tombstone_takes_the_deletes_time
MUTATIONS[deletes_routed_by_their_fields_only.__name__] = deletes_routed_by_their_fields_only


@contextlib.contextmanager
def the_tombstone_ahead_replaces_its_delete() -> Iterator[None]:
    """Found by the simulation (seed 260 with Debezium's rows): a new owner's lookahead replaced a
    delete by the tombstone after it, so the coalescer saw the tombstone alone, ordered by offset, and
    the update Debezium sent again after it replaced it: the order was upserted, not deleted, until the
    delete came again."""

    def superseded(self: Lookahead, change: Any, offset: int) -> bool:
        newest = self._newest.get(change.key) if self.covers(offset) else None
        return newest is not None and change.version.older_than(newest)

    with _patched(Lookahead, "superseded", superseded):
        yield


MUTATIONS[the_tombstone_ahead_replaces_its_delete.__name__] = the_tombstone_ahead_replaces_its_delete


# -- issue 24: read-back audits (caught by the schedules with the audits on) -----------------------


@contextlib.contextmanager
def an_unknown_read_frees_its_order() -> Iterator[None]:
    """Found by the simulation (seed 843 with the audits on; pinned: 49): an audit's read that timed out ended
    its order's job at once, though the request could still be at the vendor; a live change of the
    order was then sent beside it (two requests of one order at once). Now the job stays until
    ``settle_seconds`` after the read, as after an ambiguous write."""
    real = Deliverer._read

    async def _read(self: Deliverer, job: Job) -> None:
        await real(self, job)
        if job.lane is Lane.AUDIT and job.timer is not None:
            job.timer.cancel()
            job.timer = None
            job.state = JobState.DONE
            self._jobs.forget(job)

    with _patched(Deliverer, "_read", _read):
        yield


MUTATIONS[an_unknown_read_frees_its_order.__name__] = an_unknown_read_frees_its_order
