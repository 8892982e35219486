"""Names on the wire, in one place: dead-letter headers and stages, and the commit metadata."""

from __future__ import annotations

from dataclasses import dataclass
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


# Parked events (connector/park/): the original record, plus where it was read and who parked it.
H_PARKED_FROM = "__connector.parked.from"  # "<topic>/<partition>/<offset>" of the original record
H_PARKED_BY = "__connector.parked.by"  # the parking member's token for that partition
H_PARKED_HOLD = "__connector.parked.hold_until"  # wall time before which its order may not be sent
H_PARKED_AS_OF = "__connector.parked.as_of"  # "<updated_at>/<offset>": a newer event it stands for


# Commit metadata, ``settle_by=<t>[;park_from=<o>;parked=<a,b>;tokens=<t:o,...>]``: the wall-clock time
# after which no request this member sent for the partition can still land at the vendor (the next owner
# sends nothing before it, see fence.py), and the partition's parking state (see connector/park/).
SETTLE_BY = "settle_by="


@dataclass(frozen=True, slots=True)
class CommitMeta:
    """What a commit of one partition carries besides its offset."""

    settle_by: float = 0.0
    park_from: int | None = None  # first parking offset still to replay for this partition
    parked: tuple[str, ...] = ()  # tenants whose events of this partition go to the parking topic
    tokens: tuple[tuple[str, int], ...] = ()  # parking writers whose records count, with their limit


def commit_metadata(meta: CommitMeta) -> str:
    """The commit metadata for ``meta`` (tenant names and tokens never hold ``,;:=``)."""
    text = f"{SETTLE_BY}{meta.settle_by:.3f}"
    if meta.park_from is not None:
        text += f";park_from={meta.park_from}"
    if meta.parked:
        text += ";parked=" + ",".join(meta.parked)
    if meta.tokens:
        text += ";tokens=" + ",".join(f"{t}:{limit}" for t, limit in meta.tokens)
    return text


def settle_metadata(settle_by: float) -> str:
    """The commit metadata announcing only ``settle_by`` (epoch seconds)."""
    return commit_metadata(CommitMeta(settle_by))


def parse_commit_metadata(metadata: str | None) -> CommitMeta:
    """The :class:`CommitMeta` of a commit; empty when absent, written by something else, or
    malformed (then no hold and no parking state is inherited: the fields read so far are dropped)."""
    if not metadata or not metadata.startswith(SETTLE_BY):
        return CommitMeta()
    fields = dict(part.partition("=")[::2] for part in metadata.split(";"))
    try:
        park_from = int(fields["park_from"]) if "park_from" in fields else None
        tokens = tuple(
            (token, int(limit))
            for token, _, limit in (t.partition(":") for t in fields.get("tokens", "").split(",") if t)
        )
        parked = tuple(name for name in fields.get("parked", "").split(",") if name)
        return CommitMeta(float(fields["settle_by"]), park_from, parked, tokens)
    except ValueError:
        return CommitMeta()


def parse_settle_metadata(metadata: str | None) -> float:
    """``settle_by`` from commit metadata; 0.0 when absent or written by something else."""
    return parse_commit_metadata(metadata).settle_by
