"""`connector demo --drift` on the real broker: the vendor loses, reverts and edits delivered orders
while live traffic flows; the demo ends OK only when the audits repaired the lost and reverted ones
on spare ticks, left the edits as edited and drew no 429."""

from __future__ import annotations

import pytest

from connector.demo_drift import drift_demo

pytestmark = pytest.mark.integration


async def test_the_drift_demo_ends_ok(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await drift_demo(kafka_bootstrap) == 0
    out = capsys.readouterr().out
    assert "the vendor, by itself: lost" in out
    assert "edits reported, not overwritten: True" in out
    assert "429s: 0" in out
    assert "demo OK" in out
