"""The compacted side topics' records (pace, resync): a record this release cannot read is refused
by name, whichever topic it is on."""

from __future__ import annotations

import json
import re

import pytest

from connector._wire import Unreadable, json_object, number, share


@pytest.mark.parametrize(
    ("value", "why"),
    [(b"{", "not JSON"), (b"[]", "not a JSON object"), (b'{"v": 2}', "version 2"), (b"{}", "version None")],
)
def test_a_record_it_cannot_read_is_refused_saying_why(value: bytes, why: str) -> None:
    with pytest.raises(Unreadable) as caught:
        json_object(value, 1)
    assert caught.value.kind == why


def test_an_object_of_its_version_is_read_whole() -> None:
    assert json_object(json.dumps({"v": 1, "a": [1]}).encode(), 1) == {"v": 1, "a": [1]}


@pytest.mark.parametrize("bad", [True, "1", float("nan"), float("inf"), None])
def test_a_number_is_finite_and_not_a_boolean(bad: object) -> None:
    assert number(3) == 3.0
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        number(bad)


@pytest.mark.parametrize("bad", [0, -0.5, 1.01])
def test_a_share_is_above_zero_and_at_most_one(bad: float) -> None:
    assert share(1) == 1.0
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        share(bad)
