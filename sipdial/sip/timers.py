"""One heap for every timer in the process (sans-IO).

The Twisted adapter keeps exactly one ``callLater`` armed for :meth:`TimerHeap.next_deadline`
and calls :meth:`TimerHeap.pop_due` when it fires, so thousands of transactions with
retransmission timers cost one reactor timer, not thousands (aioquic ``get_timer`` style).
Cancellation is lazy: a cancelled entry stays in the heap and is skipped when popped.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True, slots=True)
class TimerHandle:
    deadline: float
    seq: int
    callback: Callable[[float], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[TimerHandle] = []
        self._seq = itertools.count()
        self._on_change: Callable[[], None] | None = None

    def set_change_hook(self, hook: Callable[[], None] | None) -> None:
        """``hook`` is told when the earliest deadline may have moved earlier."""
        self._on_change = hook

    def schedule(self, deadline: float, callback: Callable[[float], None]) -> TimerHandle:
        handle = TimerHandle(deadline, next(self._seq), callback)
        earlier = not self._heap or deadline < self._heap[0].deadline
        heapq.heappush(self._heap, handle)
        if earlier and self._on_change is not None:
            self._on_change()
        return handle

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0].deadline if heap else None

    def run_due(self, now: float) -> int:
        """Fire every timer whose deadline is <= now, in deadline order. Returns how many."""
        fired = 0
        heap = self._heap
        while heap and heap[0].deadline <= now:
            handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            handle.cancelled = True
            fired += 1
            handle.callback(now)
        return fired

    def __len__(self) -> int:
        return sum(1 for h in self._heap if not h.cancelled)
