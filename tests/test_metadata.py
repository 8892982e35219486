"""Names and formats on the wire: the commit metadata carries the fence's settle-by and the parking
state, and is read back exactly by the partition's next owner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.constants import CommitMeta, commit_metadata, parse_commit_metadata, parse_settle_metadata

_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
_TOKENS = st.from_regex(r"[0-9a-f]{8}", fullmatch=True)


@given(
    settle_by=st.floats(0, 4e9).map(lambda f: round(f, 3)),
    park_from=st.none() | st.integers(0, 2**62),
    parked=st.lists(_NAMES, max_size=50, unique=True).map(lambda names: tuple(sorted(names))),
    tokens=st.lists(st.tuples(_TOKENS, st.integers(0, 2**62)), max_size=4, unique_by=lambda t: t[0]),
)
def test_commit_metadata_reads_back_what_was_written(
    settle_by: float, park_from: int | None, parked: tuple[str, ...], tokens: list[tuple[str, int]]
) -> None:
    """Whatever a commit carries comes back the same, and fits Kafka's default 4 KB limit with the
    most tenants that may be parked on a partition (tenants.max_parked = 50, names of 64)."""
    meta = CommitMeta(settle_by, park_from, parked, tuple(sorted(tokens)))
    text = commit_metadata(meta)
    assert parse_commit_metadata(text) == meta
    assert len(text.encode()) <= 4096


def test_settle_only_metadata_of_earlier_versions_still_reads() -> None:
    """A commit written before parking existed carries only the settle-by."""
    assert parse_commit_metadata("settle_by=1800000000.250") == CommitMeta(1800000000.25)
    assert parse_settle_metadata("settle_by=12.000") == 12.0


def test_metadata_written_by_something_else_holds_nothing() -> None:
    """Another tool's metadata, or a malformed one, gives no hold and no parking state."""
    assert parse_commit_metadata("") == CommitMeta()
    assert parse_commit_metadata("by kafka-consumer-groups") == CommitMeta()
    assert parse_commit_metadata("settle_by=x;park_from=1") == CommitMeta()
    assert parse_commit_metadata("settle_by=1.000;park_from=a") == CommitMeta()
