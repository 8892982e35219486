"""Names on the wire, in one place: dead-letter headers and stages, and the commit metadata."""

from __future__ import annotations

from enum import StrEnum

# Kafka Connect's own error headers, so that existing tooling reads our dead letters.
H_TOPIC = "__connect.errors.topic"
H_PARTITION = "__connect.errors.partition"
H_OFFSET = "__connect.errors.offset"
H_EXCEPTION_CLASS = "__connect.errors.exception.class.name"
H_EXCEPTION_MESSAGE = "__connect.errors.exception.message"
# Ours.
H_STAGE = "__connector.stage"
H_EXTERNAL_ID = "__connector.external_id"
H_TENANT = "__connector.tenant"
H_HTTP_STATUS = "__connector.http.status"
H_HTTP_BODY = "__connector.http.body"
H_ATTEMPTS = "__connector.attempts"
H_FIRST_FAILURE = "__connector.first_failure_ts"
H_LAST_FAILURE = "__connector.last_failure_ts"
ERROR_HEADER_PREFIXES = ("__connect.", "__connector.")


class Stage(StrEnum):
    """The pipeline stage that gave up on an event (the ``__connector.stage`` header)."""

    DECODE = "decode"
    ROUTE = "route"  # names no tenant the deployment serves
    MAP = "map"  # the mapping could not turn the event into an order change
    VALIDATE = "validate"
    DELIVER = "deliver"


# Commit metadata: the wall-clock time after which no request this member sent for the partition can
# still land at the vendor. The next owner of the partition sends nothing before it (see fence.py).
SETTLE_BY = "settle_by="


def settle_metadata(settle_by: float) -> str:
    """The commit metadata announcing ``settle_by`` (epoch seconds)."""
    return f"{SETTLE_BY}{settle_by:.3f}"


def parse_settle_metadata(metadata: str | None) -> float:
    """``settle_by`` from commit metadata; 0.0 when absent or written by something else."""
    if not metadata or not metadata.startswith(SETTLE_BY):
        return 0.0
    try:
        return float(metadata.removeprefix(SETTLE_BY))
    except ValueError:
        return 0.0
