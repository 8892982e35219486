"""The shared record types: a partition's identity across processes, a record's size."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys

from connector.structs import Record, TopicPartition, Version


def test_a_partition_equals_hashes_and_sorts_by_topic_then_number() -> None:
    a, again = TopicPartition("orders", 1), TopicPartition("orders", 1)
    assert a is not again
    assert a == again
    assert hash(a) == hash(again)
    assert {a: "x"}[again] == "x"
    assert a != TopicPartition("orders", 2)
    assert a != TopicPartition("other", 1)
    assert a != ("orders", 1), "not a tuple, nor the Kafka client's own type"
    assert sorted([TopicPartition("orders", 0), TopicPartition("b", 3), a]) == [
        TopicPartition("b", 3),
        TopicPartition("orders", 0),
        a,
    ]
    assert str(a) == "orders-1"


def test_a_partition_pickled_in_another_process_hashes_as_one_made_here() -> None:
    """Its hash is made once (every stage looks partitions up, several times a record); a string's
    hash differs between processes, so a partition read back from another is hashed again."""
    script = (
        "import pickle, sys; from connector.structs import TopicPartition; "
        "sys.stdout.buffer.write(pickle.dumps(TopicPartition('orders', 1)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=True).stdout
    theirs = pickle.loads(out)
    assert theirs == TopicPartition("orders", 1)
    assert hash(theirs) == hash(TopicPartition("orders", 1))
    assert {TopicPartition("orders", 1): "found"}.get(theirs) == "found"


def test_a_records_size_counts_key_value_and_headers() -> None:
    assert Record("t", 0, 0, b"key", b"value").size == 8
    assert Record("t", 0, 0, None, None).size == 0
    assert Record("t", 0, 0, b"k", b"v", (("name", b"12"), ("none", b""))).size == 2 + 6 + 4
    assert Record("t", 3, 0, None, None).tp is Record("t", 3, 9, None, None).tp, "one per partition"


def test_records_and_versions_compare_and_hash_by_their_fields() -> None:
    """Not frozen dataclasses (their ``Final`` fields are checked by mypy; a frozen one costs 1.1 µs a
    record to make), yet equal and hashed by value as those were (``unsafe_hash``: sound, as no field is assigned)."""
    a, again = (
        Record("t", 1, 5, b"k", b"v", (("h", b"1"),), 7),
        Record("t", 1, 5, b"k", b"v", (("h", b"1"),), 7),
    )
    assert a == again
    assert hash(a) == hash(again)
    assert {a: "x"}[again] == "x"
    assert a != Record("t", 1, 6, b"k", b"v", (("h", b"1"),), 7)
    assert a != dataclasses.replace(a, parked_at=3)
    assert dataclasses.replace(a, parked_at=3).tp is a.tp
    tp = TopicPartition("t", 1)
    assert Version(1.5, tp, 5) == Version(1.5, TopicPartition("t", 1), 5)
    assert hash(Version(1.5, tp, 5)) == hash(Version(1.5, tp, 5))
    assert Version(None, tp, 5) != Version(1.5, tp, 5)
