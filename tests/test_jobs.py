"""The book of a deliverer's unfinished jobs: kept by partition, what a drain walks and waits for."""

from __future__ import annotations

import asyncio

from connector.jobs import Call, Job, JobBook, JobState, Lane
from connector.structs import OrderChange, Record, TopicPartition

A, B, C = TopicPartition("orders", 0), TopicPartition("orders", 1), TopicPartition("orders", 2)


def test_jobs_are_counted_and_listed_by_partition_in_order() -> None:
    book = JobBook()
    first, second, third = Job("k1", B), Job("k2", A), Job("k3", B)
    for job in (first, second, third):
        book.add(job)
    assert len(book) == 3
    assert book.partitions() == [A, B]
    assert book.of(B) == [first, third], "oldest first"
    assert list(book.each({B, A})) == [second, first, third], "partition by partition, in order"
    assert book.any_of({C, A})
    assert not book.any_of({C})


def change_of(key: str, tp: TopicPartition) -> OrderChange:
    return OrderChange(Record(tp.topic, tp.partition, 0, key.encode(), b"{}"), key, "upsert")


def test_a_job_moves_to_the_partition_of_its_newer_change_and_is_forgotten_when_finished() -> None:
    book = JobBook()
    job = Job("k1", A, attempts=3, first_failure_ts=1.0, last_failure_ts=2.0, forbidden_at=1)
    book.add(job)
    newer = change_of("k1", B)
    book.take(job, newer)
    assert (job.change, job.attempts, job.first_failure_ts, job.last_failure_ts, job.forbidden_at) == (
        newer,
        0,
        0.0,
        0.0,
        -1,
    ), "a newer change starts with no failure history"
    assert job.tp == B
    assert book.get("k1") is job
    assert book.partitions() == [B]
    assert book.of(A) == []
    book.forget(job)
    assert len(book) == 0
    assert book.partitions() == []
    book.forget(job)  # twice is harmless
    assert len(book) == 0


def test_walking_a_partition_may_finish_its_jobs_as_it_goes() -> None:
    """What a drain does: each job abandoned (forgotten) while the walk goes on."""
    book = JobBook()
    jobs = [Job(f"k{i}", A if i % 2 else B) for i in range(6)]
    for job in jobs:
        book.add(job)
    walked = []
    for job in book.each({A, B}):
        job.state = JobState.ABANDONED
        book.forget(job)
        walked.append(job)
    assert sorted(j.key for j in walked) == [f"k{i}" for i in range(6)]
    assert len(book) == 0


def test_calls_in_flight_are_those_of_the_partitions_asked() -> None:
    async def main() -> None:
        book = JobBook()
        idle, sending, other = Job("k1", A), Job("k2", A), Job("k3", B)
        async with asyncio.timeout(None) as one, asyncio.timeout(None) as two:
            sending.call, other.call = Call(one), Call(two)
            for job in (idle, sending, other):
                book.add(job)
            assert book.calls({A}) == [sending.call]
            assert book.calls({A, B}) == [sending.call, other.call]
            await asyncio.sleep(0)

    asyncio.run(main())


def test_a_cancelled_call_ends_its_scope_not_the_task_running_it() -> None:
    """A drain's cancel reaches the call as the end of its timeout scope (``TimeoutError``, and the
    call counts as cancelled); the task running it goes on. A call that ended is not cancelled."""

    async def main() -> None:
        started = asyncio.Event()
        call: Call | None = None

        async def worker() -> str:
            nonlocal call
            try:
                async with asyncio.timeout(None) as scope:
                    call = Call(scope)
                    started.set()
                    await asyncio.Event().wait()
            except TimeoutError:
                assert scope.expired()
            finally:
                assert call is not None
                call.end()
            return "went on"

        task = asyncio.create_task(worker())
        await started.wait()
        assert call is not None
        waiting = asyncio.ensure_future(asyncio.wait([call.ended]))
        call.cancel()
        assert await task == "went on"
        await waiting
        assert call.cancelled
        assert call.ended.done()

        async with asyncio.timeout(None) as scope:
            done = Call(scope)
            done.end()
            done.cancel()
            await asyncio.sleep(0)
        assert not done.cancelled
        assert not scope.expired()

    asyncio.run(main())


def test_draining_partitions_until_undrained() -> None:
    book = JobBook()
    book.drain({A, B})
    assert book.draining(A)
    assert book.draining(B)
    assert not book.draining(C)
    book.undrain({A})
    assert not book.draining(A)
    assert book.draining(B)


def test_idle_while_no_live_job_is_in_the_book() -> None:
    """The audits read only while no live work is in hand: a live job clears :attr:`JobBook.idle`
    until every live job is forgotten; an audit's job does not, until it is made live (a live
    change took it over). A job moved to another partition is still counted once."""
    book = JobBook()
    first, second, audit = Job("k1", A), Job("k2", B), Job("k3", A, lane=Lane.AUDIT)
    for job in (first, second, audit):
        book.add(job)
    assert book.idle.is_set(), "an audit's job is not live work"
    book.make_live(first)
    book.make_live(second)
    assert not book.idle.is_set()
    book.take(first, change_of("k1", C))
    book.forget(first)
    assert not book.idle.is_set(), "one live job left"
    book.forget(second)
    assert book.idle.is_set()
    book.make_live(audit)
    assert audit.lane is Lane.LIVE
    assert not book.idle.is_set()
    book.forget(audit)
    book.forget(audit)  # twice is harmless: counted once
    assert book.idle.is_set()
