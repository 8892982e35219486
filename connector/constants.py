"""Names on the wire, in one place: dead-letter and parking headers, and the dead-letter stages."""

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
# A dead letter too large for the topic is written smaller, saying what it lacks (publish.py).
H_VALUE_SIZE = "__connector.value.size"  # the original value's size in bytes
H_VALUE_SHA256 = "__connector.value.sha256"  # its SHA-256, hex
H_VALUE_TRUNCATED = "__connector.value.truncated"  # bytes of it kept: 0 when left out
H_HEADERS_DROPPED = "__connector.headers.dropped"  # original headers left out (the smallest form)
H_KEY_SIZE = "__connector.key.size"  # a key cut to 1 KiB (the smallest form): its size
H_KEY_SHA256 = "__connector.key.sha256"  # and its SHA-256
ERROR_HEADER_PREFIXES = ("__connect.", "__connector.")


class Stage(StrEnum):
    """The pipeline stage that gave up on an event (the ``__connector.stage`` header)."""

    DECODE = "decode"
    ROUTE = "route"  # names no tenant the deployment serves
    MAP = "map"  # the mapping could not turn the event into an order change
    VALIDATE = "validate"
    DELIVER = "deliver"
    PARK = "park"  # its shop was parked, and the parking topic refuses it for its size


# Parked events (connector/park/): the original record, plus where it was read and who parked it.
H_PARKED_FROM = "__connector.parked.from"  # "<topic>/<partition>/<offset>" of the original record
H_PARKED_BY = "__connector.parked.by"  # the parking member's token for that partition
H_PARKED_HOLD = "__connector.parked.hold_until"  # wall time before which its order may not be sent
H_PARKED_AS_OF = "__connector.parked.as_of"  # "<updated_at>/<offset>": a newer event it stands for


# The commit metadata (the settle-by of the fence and the parking state) is a wire format of its own,
# with its versions: ``connector/metadata.py``.
