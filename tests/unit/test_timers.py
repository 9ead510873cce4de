"""TimerHeap: ordering, lazy cancellation, dropping cancelled callbacks, compaction."""

from __future__ import annotations

import gc
import weakref

from sipdial.sip.timers import TimerHeap


def test_fires_in_deadline_then_schedule_order() -> None:
    heap = TimerHeap()
    fired: list[str] = []
    heap.schedule(2.0, lambda t: fired.append("b"))
    heap.schedule(1.0, lambda t: fired.append("a1"))
    heap.schedule(1.0, lambda t: fired.append("a2"))
    heap.schedule(3.0, lambda t: fired.append("c"))
    assert heap.next_deadline() == 1.0 and len(heap) == 4
    assert heap.run_due(2.0) == 3
    assert fired == ["a1", "a2", "b"]
    assert heap.next_deadline() == 3.0 and len(heap) == 1
    assert heap.run_due(10.0) == 1 and heap.next_deadline() is None and len(heap) == 0


def test_cancelled_timers_do_not_fire_and_are_not_counted() -> None:
    heap = TimerHeap()
    fired: list[int] = []
    first = heap.schedule(1.0, lambda t: fired.append(1))
    heap.schedule(2.0, lambda t: fired.append(2))
    first.cancel()
    first.cancel()  # idempotent
    assert first.cancelled and len(heap) == 1
    assert heap.next_deadline() == 2.0
    assert heap.run_due(5.0) == 1 and fired == [2]
    assert len(heap) == 0


def test_cancel_drops_the_callback_so_its_closure_can_be_freed() -> None:
    class Call:
        def on_timer(self, now: float) -> None:
            raise AssertionError("cancelled")

    heap = TimerHeap()
    call = Call()
    ref = weakref.ref(call)
    handle = heap.schedule(30.0, call.on_timer)
    handle.cancel()
    del call
    gc.collect()
    assert ref() is None  # the heap still holds the entry, but not the call
    assert heap.run_due(60.0) == 0


def test_fired_timer_releases_its_callback_and_cancel_after_fire_is_harmless() -> None:
    heap = TimerHeap()
    seen: list[float] = []
    handle = heap.schedule(1.0, seen.append)
    assert heap.run_due(1.0) == 1 and seen == [1.0]
    handle.cancel()
    assert len(heap) == 0 and heap.next_deadline() is None


def test_callback_may_schedule_and_cancel_during_run_due() -> None:
    heap = TimerHeap()
    fired: list[str] = []
    later = heap.schedule(1.5, lambda t: fired.append("later"))

    def first(now: float) -> None:
        fired.append("first")
        later.cancel()
        heap.schedule(now, lambda t: fired.append("now"))  # due in this same run

    heap.schedule(1.0, first)
    assert heap.run_due(2.0) == 2
    assert fired == ["first", "now"]


def test_heap_is_compacted_when_mostly_cancelled() -> None:
    heap = TimerHeap()
    handles = [heap.schedule(float(i), lambda t: None) for i in range(4000)]
    for h in handles[:3000]:
        h.cancel()
    assert len(heap) == 1000
    assert len(heap._heap) < 3000  # compacted, not 4000 entries
    assert heap.next_deadline() == 3000.0
    assert heap.run_due(1e9) == 1000 and len(heap) == 0


def test_change_hook_told_about_an_earlier_deadline_only() -> None:
    heap = TimerHeap()
    told: list[int] = []
    heap.set_change_hook(lambda: told.append(1))
    heap.schedule(5.0, lambda t: None)
    heap.schedule(7.0, lambda t: None)
    heap.schedule(1.0, lambda t: None)
    assert len(told) == 2
