"""Logging: aiokafka's routine retries while a consumer group finds its coordinator are not shown as
errors; its other errors still are."""

from __future__ import annotations

import inspect
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiokafka import client, errors
from aiokafka.consumer import group_coordinator

from connector import logs

COORDINATOR = "aiokafka.consumer.group_coordinator"
LOOKUP_FAILED = "Group Coordinator Request failed: %s"
COORDINATOR_DEAD = "Marking the coordinator dead (node %s)for group %s."
CLIENT = "aiokafka.client"
UNKNOWN_NODE = "Unable connect to node with id %s: %s"


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Configure logging as `connector run` does (INFO) into a buffer; the JSON lines written."""
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)
    logs.configure("INFO")
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    monkeypatch.undo()
    logs.configure("INFO")


def test_coordinator_not_available_while_a_group_is_created_is_not_an_error(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """The two lines a first start of a group logs (seen in `connector demo`) print nothing."""
    log = logging.getLogger(COORDINATOR)
    log.error(LOOKUP_FAILED, errors.GroupCoordinatorNotAvailableError())
    log.error(LOOKUP_FAILED, errors.CoordinatorLoadInProgressError())
    log.warning(COORDINATOR_DEAD, 1, "demo")
    logging.getLogger(CLIENT).error(
        UNKNOWN_NODE, None, errors.StaleMetadata("Broker id None not in current metadata")
    )
    assert log_lines() == []


def test_other_aiokafka_errors_are_still_errors(log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    """A non-retriable lookup failure, another message of the same logger, and other loggers pass."""
    logging.getLogger(COORDINATOR).error(
        "Group Coordinator Request failed: %s", errors.GroupAuthorizationFailedError()
    )
    logging.getLogger(COORDINATOR).error("Heartbeat session expired - marking coordinator dead")
    logging.getLogger("aiokafka.conn").error("Group Coordinator Request failed: %s", "elsewhere")
    logging.getLogger(CLIENT).error(UNKNOWN_NODE, 1, ConnectionRefusedError("refused"))
    logging.getLogger(CLIENT).error(
        UNKNOWN_NODE, 1, errors.StaleMetadata("Broker id 1 not in current metadata")
    )
    lines = log_lines()
    assert [line["level"] for line in lines] == ["error"] * 5
    assert "GroupAuthorizationFailedError" in lines[0]["event"]
    assert lines[1]["event"] == "Heartbeat session expired - marking coordinator dead"


def test_the_messages_demoted_are_the_ones_aiokafka_logs() -> None:
    """If aiokafka rewords them, the filter would silently stop matching: fail here instead (the
    first test demotes exactly these)."""
    source = inspect.getsource(group_coordinator)
    for message in (LOOKUP_FAILED, COORDINATOR_DEAD):
        assert f'"{message}"' in source, message
    assert f'"{UNKNOWN_NODE}"' in inspect.getsource(client)


def test_names_given_for_a_while_are_on_every_line_of_the_task_then_gone(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """A call names its record on every line logged while it runs (``connector/attempt.py``); a line's
    own keys win, names given inside others add to them, and each is taken back in turn."""
    log = logs.get_logger("test")
    outer = logs.name_in_logs({"topic": "orders", "offset": 7})
    inner = logs.name_in_logs({"offset": 8, "tenant": "acme"})
    log.warning("inside", tenant="own")
    assert dict(logs.named_in_logs()) == {"topic": "orders", "offset": 8, "tenant": "acme"}
    logs.unname_in_logs(inner)
    log.warning("outside")
    logs.unname_in_logs(outer)
    log.warning("after")
    inside, outside, after = log_lines()
    assert (inside["topic"], inside["offset"], inside["tenant"]) == ("orders", 8, "own")
    assert (outside["topic"], outside["offset"]) == ("orders", 7)
    assert "tenant" not in outside
    assert "topic" not in after
    assert dict(logs.named_in_logs()) == {}
