"""The 20 ms tick for every stream sipdial plays (sans-IO: time is an argument).

The Twisted adapter calls :meth:`Player.tick` from a single ``LoopingCall`` every
:attr:`Player.interval` and sends what it returns; there are no per-call timers. Every playing
stream gets one frame per 20 ms slot. The slot grid starts at the first tick after the player
was idle; a tick within ±half an interval of a slot boundary counts as that slot, so reactor
jitter neither drops nor doubles frames. A late tick (GC pause, busy reactor) sends the frames
of the missed slots at once, at most ``max_catchup`` per stream; beyond that the lag is
forgiven and the grid restarts at ``now`` (audio is delayed, never skipped).

``phases`` splits the 20 ms into that many sub-slots, each stream in one of them (the least
busy when it starts): a tick then sends 1/``phases`` of the streams. Sending 1,000 packets
takes 5-7 ms and varies by ±1.5 ms from tick to tick, so with one phase the last streams of a
tick see intervals off by that much; ten phases of 100 streams each keep every stream within
about the reactor's wake-up accuracy (loadtest/bench_media_jitter.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from sipdial.media.rtp import RtpSender

log = logging.getLogger("sipdial.media")

FRAME = 0.020  #: seconds of audio per frame and per tick
OnDone = Callable[[str, float], None]
Datagram = tuple[str, tuple[str, int], bytes]  #: (key, remote address, RTP packet)


class _Stream:
    __slots__ = ("frames", "fresh", "loop", "on_done", "pos", "remote", "sender")

    def __init__(self, remote: tuple[str, int], sender: RtpSender, frames: Sequence[bytes],
                 loop: bool, on_done: OnDone | None) -> None:
        self.remote = remote
        self.sender = sender
        self.frames = frames
        self.loop = loop
        self.on_done = on_done
        self.pos = 0  # index of the next frame
        self.fresh = True  # nothing sent yet: exactly one frame at the first tick


class Player:
    """Sends the frames of every playing stream from ONE periodic tick (no per-call timers)."""

    def __init__(self, *, max_catchup: int = 5, phases: int = 1) -> None:
        if max_catchup < 1:
            raise ValueError("max_catchup must be >= 1")
        if not 1 <= phases <= 20:
            raise ValueError("phases must be 1..20")
        self._max_catchup = max_catchup  # frames per stream and tick at most (100 ms)
        self._phases = phases
        self.interval = FRAME / phases  #: seconds between two ticks
        self._groups: list[dict[str, _Stream]] = [{} for _ in range(phases)]
        self._where: dict[str, int] = {}  # key -> its phase
        self._due: float | None = None  # when the next sub-slot starts; None: no grid yet
        self._next = 0  # the phase of that sub-slot

    def play(self, key: str, remote: tuple[str, int], sender: RtpSender,
             frames: Sequence[bytes], *, loop: bool = False,
             on_done: OnDone | None = None) -> None:
        """Play ``frames`` to ``remote`` with ``sender``, from the next tick of its phase on.
        Replaces what ``key`` was playing (whose ``on_done`` is then never called); the first
        packet has the marker bit. ``frames`` is kept by reference, not copied."""
        self.stop(key)
        groups = self._groups
        phase = min(range(self._phases), key=lambda p: len(groups[p]))
        sender.new_talkspurt()
        groups[phase][key] = _Stream(remote, sender, frames, loop, on_done)
        self._where[key] = phase

    def stop(self, key: str) -> None:
        """Stop ``key`` (no ``on_done``); unknown keys are ignored."""
        phase = self._where.pop(key, None)
        if phase is not None:
            self._groups[phase].pop(key).on_done = None

    @property
    def active(self) -> int:
        """Number of streams still to send a frame."""
        return len(self._where)

    @property
    def next_due(self) -> float | None:
        """When the next sub-slot starts (where the next tick belongs); None before the first
        tick after the player was idle."""
        return self._due

    def tick(self, now: float) -> list[Datagram]:
        """The RTP packets due at ``now``: one per stream per elapsed 20 ms slot of its phase
        (capped). Streams whose last frame is in the result are removed, then their
        ``on_done(key, now)`` is called (a ``play`` from it starts at a later tick)."""
        if not self._where:
            self._due = None  # idle: the next stream starts a new grid
            return []
        interval, phases = self.interval, self._phases
        if self._due is None:
            slots = 1
            self._due = now + interval
        else:
            slots = math.floor((now - self._due) / interval + 0.5) + 1
            if slots <= 0:  # early or repeated tick
                return []
            if slots > self._max_catchup * phases:
                slots = self._max_catchup * phases
                self._due = now + interval
            else:
                self._due += slots * interval
        first = self._next
        self._next = (first + slots) % phases
        out: list[Datagram] = []
        append = out.append
        done: list[tuple[str, _Stream]] = []
        for i in range(min(slots, phases)):
            count = (slots - i + phases - 1) // phases  # this phase's sub-slots among them
            for key, st in self._groups[(first + i) % phases].items():
                frames = st.frames
                end = len(frames)
                if not end:
                    done.append((key, st))
                    continue
                n = 1 if st.fresh else count
                st.fresh = False
                pos = st.pos
                packet = st.sender.packet
                remote = st.remote
                for _ in range(n):
                    append((key, remote, packet(frames[pos])))
                    pos += 1
                    if pos == end:
                        if not st.loop:
                            done.append((key, st))
                            break
                        pos = 0
                st.pos = pos
        for key, _ in done:
            del self._groups[self._where.pop(key)][key]
        for key, st in done:
            on_done = st.on_done
            if on_done is not None:
                try:
                    on_done(key, now)
                except Exception:  # one call's bug must not stop every other call's audio
                    log.exception("on_done for %r failed", key)
        return out
