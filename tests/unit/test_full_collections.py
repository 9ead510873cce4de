"""The safety net's full garbage collections (sipdial.app.FullCollections): rarer while they
find little, every FULL_GC_INTERVAL again once one finds cycles. Time is passed in."""

from __future__ import annotations

import itertools

import pytest

from sipdial.app import FULL_GC_FEW, FULL_GC_INTERVAL, FULL_GC_LONGEST, FullCollections


def test_the_interval_doubles_while_collections_find_little_and_resets_when_one_finds_much(
        caplog: pytest.LogCaptureFixture) -> None:
    freed = [0]
    runs: list[float] = []

    def collect() -> int:
        return freed[0]

    schedule = FullCollections(1000.0, collect=collect)
    now = 1000.0
    assert schedule.run_if_due(now + FULL_GC_INTERVAL - 1) is None
    while now < 1000.0 + 3 * 24 * 3600:
        now += 10.0  # the sweeper's interval
        if schedule.run_if_due(now) is not None:
            runs.append(now)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert runs[0] == pytest.approx(1000.0 + FULL_GC_INTERVAL, abs=10)
    assert gaps[:2] == pytest.approx([2 * FULL_GC_INTERVAL, 4 * FULL_GC_INTERVAL], abs=10)
    assert max(gaps) == pytest.approx(FULL_GC_LONGEST, abs=10)

    freed[0] = FULL_GC_FEW  # something leaves cycles
    caplog.set_level("WARNING", logger="sipdial")
    nxt = schedule.next
    assert schedule.run_if_due(nxt) == FULL_GC_FEW
    assert schedule.next == nxt + FULL_GC_INTERVAL
    assert "something leaves cycles" in caplog.text
