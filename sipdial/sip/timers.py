"""One heap for every timer in the process (sans-IO).

The Twisted adapter keeps exactly one ``callLater`` armed for :meth:`TimerHeap.next_deadline`
and calls :meth:`TimerHeap.pop_due` when it fires, so thousands of transactions with
retransmission timers cost one reactor timer, not thousands (aioquic ``get_timer`` style).

The heap holds ``(deadline, seq, handle)`` tuples, so ordering is done by C tuple comparison
(``seq`` is unique, the handle is never compared). Cancellation is lazy: a cancelled entry
stays in the heap and is skipped when popped, but ``cancel()`` drops the callback at once, so
a cancelled timer no longer keeps its closure (a transaction, a call) alive; the heap is
compacted when more than half of it is cancelled entries.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

_COMPACT_MIN = 1024  # below this many entries, never bother compacting


def _cancelled(now: float) -> None:  # the callback of a cancelled or fired handle
    pass


class TimerHandle:
    __slots__ = ("_heap", "callback", "cancelled", "deadline", "seq")

    def __init__(
        self,
        deadline: float,
        seq: int,
        callback: Callable[[float], None],
        heap: TimerHeap | None = None,
    ) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.cancelled = False
        self._heap = heap

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.callback = _cancelled  # drop the closure (and all it references) now
        heap = self._heap
        if heap is not None:
            self._heap = None
            heap._note_cancelled()

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<TimerHandle at {self.deadline:.3f} #{self.seq}{state}>"


class TimerHeap:
    """Every timer of the process; the adapter arms one reactor timer for
    :meth:`next_deadline` and calls :meth:`run_due` when it fires."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._on_change: Callable[[], None] | None = None
        self._n_cancelled = 0  # cancelled entries still in the heap

    def set_change_hook(self, hook: Callable[[], None] | None) -> None:
        """``hook`` is told when the earliest deadline may have moved earlier."""
        self._on_change = hook

    def schedule(self, deadline: float, callback: Callable[[float], None]) -> TimerHandle:
        seq = next(self._seq)
        handle = TimerHandle(deadline, seq, callback, self)
        heap = self._heap
        earlier = not heap or deadline < heap[0][0]
        heapq.heappush(heap, (deadline, seq, handle))
        if earlier and self._on_change is not None:
            self._on_change()
        return handle

    def _note_cancelled(self) -> None:
        self._n_cancelled += 1
        heap = self._heap
        if self._n_cancelled * 2 > len(heap) and len(heap) >= _COMPACT_MIN:
            # Rebuild in place (callers may hold no reference to the list, but keep it anyway).
            heap[:] = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self._n_cancelled = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._n_cancelled -= 1
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Fire every timer whose deadline is <= now, in deadline order. Returns how many."""
        fired = 0
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= now:
            handle = pop(heap)[2]
            if handle.cancelled:
                self._n_cancelled -= 1
                continue
            handle.cancelled = True
            handle._heap = None
            callback = handle.callback
            handle.callback = _cancelled
            fired += 1
            callback(now)
        return fired

    def __len__(self) -> int:
        return len(self._heap) - self._n_cancelled
