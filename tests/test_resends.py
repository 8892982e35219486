"""What a resync hands a shop: each change told back once (sent, skipped, failed); one not sent goes
back in line; one superseded by a live change is never sent after it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from connector._outcomes import Outcome, OutcomeKind
from connector._resends import Resends, Resent
from connector.errors import AuthError, RejectedError, ServerError
from connector.structs import OrderChange, Record, TopicPartition
from tests.fakes import Told

TP = TopicPartition("orders", 0)


def change(key: str, tp: TopicPartition = TP) -> OrderChange:
    return OrderChange(
        Record(tp.topic, tp.partition, 0, key.encode(), b"{}"), key, "upsert", {"external_id": key}
    )


def test_a_change_sent_is_told_sent_once_and_the_line_is_in_order() -> None:
    told, resends = Told(), Resends()
    for key in ("a", "b"):
        resends.add(change(key), told)
    first = resends.take()
    assert first is not None
    assert first.change.key == "a"
    assert resends.ended(Outcome(OutcomeKind.DELIVERED, "a", first.change, attempts=1))
    assert told.ends == [("a", Resent.SENT)]
    assert not resends.ended(Outcome(OutcomeKind.DELIVERED, "a", first.change)), "told once"
    assert not resends.ended(Outcome(OutcomeKind.DELIVERED, "zz", None)), "not a resend: the audit's"


def test_one_never_sent_or_failing_for_a_passing_fault_goes_back_in_line_one_refused_fails() -> None:
    told, resends = Told(), Resends()
    resends.add(change("a"), told)
    item = resends.take()
    assert item is not None
    assert resends.ended(Outcome(OutcomeKind.ABANDONED, "a", item.change, attempts=0))
    assert len(resends) == 1
    assert told.ends == []
    for error in [ServerError("503"), AuthError("401")] * 5:  # an outage: never given up for it
        item = resends.take()
        assert item is not None
        resends.ended(Outcome(OutcomeKind.FAILED, "a", item.change, error, attempts=1))
    assert told.ends == []
    item = resends.take()
    assert item is not None
    resends.ended(Outcome(OutcomeKind.FAILED, "a", item.change, RejectedError("422: bad total"), attempts=1))
    assert told.ends == [("a", Resent.FAILED)]
    assert len(resends) == 0


def test_a_live_change_skips_the_resend_in_line_and_the_one_in_flight_is_never_sent_again() -> None:
    told, resends = Told(), Resends()
    resends.add(change("a"), told)
    resends.add(change("b"), told)
    resends.superseded("a")
    assert told.ends == [("a", Resent.SKIPPED)]
    item = resends.take()
    assert item is not None
    resends.superseded("b")  # while in flight: the live change waits for it
    resends.ended(Outcome(OutcomeKind.FAILED, "b", item.change, attempts=1))
    assert told.ends == [("a", Resent.SKIPPED), ("b", Resent.SKIPPED)]
    assert resends.take() is None, "an older state never follows the live one"


def test_put_back_withdraw_and_forget() -> None:
    told, other, resends = Told(), Told(share=0.5), Resends()
    resends.add(change("a"), told)
    resends.add(change("b", TopicPartition("orders", 1)), other)
    item = resends.take()
    assert item is not None
    resends.put_back(item)
    assert resends.floor() == 0.5, "b is first in line now"
    resends.withdraw(told)
    assert len(resends) == 1
    resends.forget({TopicPartition("orders", 1)})
    assert len(resends) == 0
    assert told.ends == [], "withdrawn ones are not told"
    assert other.ends == [], "forgotten ones are not told"


def test_a_403_again_fails_the_resend_the_first_is_an_outage() -> None:
    """Each attempt is a new job: the second 403 is the operation's missing scope, as the live
    traffic judges it (found by the simulation: seed 113 with a resync sent a DELETE for ever)."""
    told, resends = Told(), Resends()
    resends.add(change("a"), told)
    for _ in range(2):
        item = resends.take()
        assert item is not None
        resends.ended(Outcome(OutcomeKind.FAILED, "a", item.change, AuthError("403", status=403), attempts=1))
    assert told.ends == [("a", Resent.FAILED)]


def test_closing_tells_what_waits_and_what_ends_after_skipped() -> None:
    """A shop removed from the tenants is closed: a resync waiting for its changes would otherwise
    wait until its partition moved (found in review)."""
    told, resends = Told(), Resends()
    resends.add(change("a"), told)
    resends.add(change("b"), told)
    flying = resends.take()
    assert flying is not None
    resends.close()
    assert told.ends == [("b", Resent.SKIPPED)]
    resends.ended(Outcome(OutcomeKind.ABANDONED, "a", flying.change, attempts=1))
    resends.add(change("c"), told)
    assert told.ends == [("b", Resent.SKIPPED), ("a", Resent.SKIPPED), ("c", Resent.SKIPPED)]
    assert len(resends) == 0


def test_a_repair_of_the_same_state_or_a_newer_one_skips_the_resend_in_line_an_older_one_does_not() -> None:
    told, resends = Told(), Resends()
    at = datetime(2026, 12, 1, tzinfo=UTC)
    newer = dataclasses.replace(change("a"), updated_at=at + timedelta(minutes=1))
    resends.add(newer, told)
    resends.covered(dataclasses.replace(change("a"), updated_at=at), 1.0)
    assert len(resends) == 1, "an older state written: the resend is still needed"
    resends.covered(newer, -1.0)
    assert len(resends) == 1, "written before the resync was asked: it may have landed before the loss"
    resends.covered(newer, 1.0)
    assert told.ends == [("a", Resent.SKIPPED)]
    assert len(resends) == 0


def test_one_in_flight_when_its_partition_is_forgotten_never_comes_back_in_line() -> None:
    """Its partition's jobs are refused here once revoked: back in line it would wait at its head
    for ever, and the shop's audits behind it (seed 67 with audits and a resync). Delivered, it is
    still told sent."""
    told, resends = Told(), Resends()
    resends.add(change("a"), told)
    resends.add(change("b"), told)
    a, b = resends.take(), resends.take()
    assert a is not None
    assert b is not None
    resends.forget({TP})
    assert resends.ended(Outcome(OutcomeKind.ABANDONED, "a", a.change, attempts=0))
    assert resends.ended(Outcome(OutcomeKind.DELIVERED, "b", b.change, attempts=1))
    assert len(resends) == 0
    assert resends.in_flight == 0
    assert told.ends == [("b", Resent.SENT)]
