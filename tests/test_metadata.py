"""The commit metadata wire format: read back exactly by the partition's next owner, readable by the
previous release (0.1.0, format v1), its version rule (unknown fields carried forward, must-understand
fields refused), and its size budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector import metadata as wire
from connector.metadata import CommitMeta, Origin

_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
_TOKENS = st.from_regex(r"[0-9a-f]{8}", fullmatch=True)
_OFFSETS = st.integers(0, 2**62)


def parse_v1(metadata: str) -> tuple[float, int | None, tuple[str, ...], tuple[tuple[str, int], ...]]:
    """0.1.0's parse_commit_metadata, verbatim in what it does: ``settle_by`` first, then
    ``park_from``, ``parked`` and ``tokens`` from a ``;``-separated dict; other fields ignored; any
    error, or another prefix, reads as nothing at all."""
    if not metadata or not metadata.startswith("settle_by="):
        return (0.0, None, (), ())
    fields = dict(part.partition("=")[::2] for part in metadata.split(";"))
    try:
        park_from = int(fields["park_from"]) if "park_from" in fields else None
        tokens = tuple(
            (token, int(limit))
            for token, _, limit in (t.partition(":") for t in fields.get("tokens", "").split(",") if t)
        )
        parked = tuple(name for name in fields.get("parked", "").split(",") if name)
        return (float(fields["settle_by"]), park_from, parked, tokens)
    except ValueError:
        return (0.0, None, (), ())


@given(
    settle_by=st.floats(0, 4e9).map(lambda f: round(f, 3)),
    read_to=st.none() | _OFFSETS,
    pq=st.none() | st.integers(0, 999),
    starts=st.dictionaries(_NAMES, _OFFSETS, max_size=12),
    tokens=st.lists(st.tuples(_TOKENS, _OFFSETS), max_size=8, unique_by=lambda t: t[0]),
)
def test_what_a_commit_carries_comes_back_the_same_and_v1_reads_its_part(
    settle_by: float,
    read_to: int | None,
    pq: int | None,
    starts: dict[str, int],
    tokens: list[tuple[str, int]],
) -> None:
    """Every field comes back as written; a 0.1.0 member reads the settle-by, the parked shops, the
    first parking offset to replay and the tokens from the same text (never a hold of 0)."""
    replay = tuple(sorted(starts.items()))
    meta = CommitMeta(
        settle_by=settle_by,
        read_to=read_to,
        park_partition=pq,
        park_from=min(starts.values()) if starts else None,
        parked=tuple(sorted(starts)),
        replay_from=replay,
        tokens=tuple(tokens),
    )
    text = wire.encode(meta, budget=1 << 20)
    read = wire.decode(text)
    assert (read.origin, read.meta) == (Origin.OURS, meta)
    assert parse_v1(text) == (settle_by, meta.park_from, meta.parked, meta.tokens)


def test_metadata_of_earlier_versions_still_reads() -> None:
    """v0 carried only the settle-by; v1 (0.1.0) added one replay start for every parked shop."""
    assert wire.decode("settle_by=1800000000.250").meta == CommitMeta(1800000000.25, version=1)
    v1 = wire.decode("settle_by=12.000;park_from=40;parked=acme,bolt;tokens=0badcafe:99").meta
    assert (v1.version, v1.park_partition, v1.read_to) == (1, None, None)
    assert v1.replay_starts == {"acme": 40, "bolt": 40}
    assert v1.tokens == (("0badcafe", 99),)


def test_fields_of_a_newer_version_are_carried_forward_and_must_understand_ones_refused() -> None:
    """The version rule: a field this release does not know is kept, verbatim, and written back; one
    marked ``!`` makes the partition unusable here, rather than acted on without it."""
    read = wire.decode("settle_by=5.000;v=3;read_to=9;zone=eu-1")
    assert read.origin is Origin.OURS
    assert read.meta.extra == (("zone", "eu-1"),)
    assert wire.encode(read.meta).endswith(";zone=eu-1")
    refused = wire.decode("settle_by=5.000;v=3;!fence=epoch:4")
    assert refused.origin is Origin.UNREADABLE
    assert "'!fence'" in refused.problem


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("", Origin.NONE),
        ("by kafka-consumer-groups", Origin.FOREIGN),
        ("settle_by=x;park_from=1", Origin.UNREADABLE),
        ("settle_by=1.000;park_from=a", Origin.UNREADABLE),
        ("settle_by=1.000;from=acme", Origin.UNREADABLE),
        ("settle_by=1.000;parked", Origin.UNREADABLE),
        ("settle_by=1.000;v=2;v=3", Origin.UNREADABLE),
    ],
)
def test_metadata_that_is_not_ours_or_does_not_parse_is_never_read_as_nothing_to_hold(
    text: str, origin: Origin
) -> None:
    """0.1.0 read these as "no hold, nothing parked" and committed over them; now the reader is told
    which case it is (the membership holds the partition back for the last one)."""
    assert wire.decode(text).origin is origin


def test_the_oldest_tokens_go_first_when_the_text_would_not_fit() -> None:
    """Only 0.1.0 members read tokens; the rest must fit, or encoding refuses rather than truncates."""
    tokens = tuple((f"{i:08x}", 10**15 + i) for i in range(300))
    meta = CommitMeta(settle_by=1.0, parked=("acme",), replay_from=(("acme", 3),), tokens=tokens)
    text = wire.encode(meta)
    assert len(text.encode()) <= wire.MAX_BYTES
    kept = wire.decode(text).meta.tokens
    assert kept == tokens[-len(kept) :]
    assert 100 < len(kept) < 300
    with pytest.raises(ValueError, match="exceeds 4096"):
        wire.encode(CommitMeta(parked=tuple(f"shop-{i:060d}" for i in range(80))))
