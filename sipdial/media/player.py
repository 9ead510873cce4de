"""One shared 20 ms tick for every stream sipdial plays (sans-IO: time is an argument).

The Twisted adapter calls :meth:`Player.tick` from a single ``LoopingCall`` and sends what it
returns; there are no per-call timers. Every playing stream gets one frame per 20 ms slot. The
slot grid starts at the first tick after the player was idle; a tick within ±10 ms of a slot
boundary counts as that slot, so reactor jitter neither drops nor doubles frames. A late tick
(GC pause, busy reactor) sends the frames of the missed slots at once, at most
``max_catchup`` per stream; beyond that the lag is forgiven and the grid restarts at ``now``
(audio is delayed, never skipped).
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
    """Sends the frames of every playing stream from ONE shared 20 ms tick (no per-call timers)."""

    def __init__(self, *, max_catchup: int = 5) -> None:
        if max_catchup < 1:
            raise ValueError("max_catchup must be >= 1")
        self._max_catchup = max_catchup  # frames per stream and tick at most (100 ms)
        self._streams: dict[str, _Stream] = {}
        self._due: float | None = None  # when the next slot starts; None: no grid yet

    def play(self, key: str, remote: tuple[str, int], sender: RtpSender,
             frames: Sequence[bytes], *, loop: bool = False,
             on_done: OnDone | None = None) -> None:
        """Play ``frames`` to ``remote`` with ``sender``, from the next tick on. Replaces what
        ``key`` was playing (whose ``on_done`` is then never called); the first packet has the
        marker bit. ``frames`` is kept by reference, not copied."""
        old = self._streams.get(key)
        if old is not None:
            old.on_done = None
        sender.new_talkspurt()
        self._streams[key] = _Stream(remote, sender, frames, loop, on_done)

    def stop(self, key: str) -> None:
        """Stop ``key`` (no ``on_done``); unknown keys are ignored."""
        old = self._streams.pop(key, None)
        if old is not None:
            old.on_done = None

    @property
    def active(self) -> int:
        """Number of streams still to send a frame."""
        return len(self._streams)

    def tick(self, now: float) -> list[Datagram]:
        """The RTP packets due at ``now``: one per playing stream per elapsed 20 ms slot
        (capped). Streams whose last frame is in the result are removed, then their
        ``on_done(key, now)`` is called (a ``play`` from it starts at the next tick)."""
        streams = self._streams
        if not streams:
            self._due = None  # idle: the next stream starts a new grid
            return []
        if self._due is None:
            slots = 1
            self._due = now + FRAME
        else:
            slots = math.floor((now - self._due) / FRAME + 0.5) + 1
            if slots <= 0:  # early or repeated tick
                return []
            if slots > self._max_catchup:
                slots = self._max_catchup
                self._due = now + FRAME
            else:
                self._due += slots * FRAME
        out: list[Datagram] = []
        append = out.append
        done: list[tuple[str, _Stream]] = []
        for key, st in streams.items():
            frames = st.frames
            end = len(frames)
            if not end:
                done.append((key, st))
                continue
            n = 1 if st.fresh else slots
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
            del streams[key]
        for key, st in done:
            on_done = st.on_done
            if on_done is not None:
                try:
                    on_done(key, now)
                except Exception:  # one call's bug must not stop every other call's audio
                    log.exception("on_done for %r failed", key)
        return out
