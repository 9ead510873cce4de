"""One event stream of every worker's calls: ``GET /v1/events`` under ``serve --workers``.

Each worker publishes its own calls' events (ids ≡ its index modulo the worker count, in
its own SQLite file: :class:`~sipdial.events.hub.EventHub`). A worker with SSE clients
tells the others it is *interested*; each answers with the id of the last event it has
released (the *ack*) and from then on forwards every event it releases, in order, over the
mesh (:mod:`sipdial.transport.mesh`). A worker without SSE clients (60 s after its last
one left) is told nothing: no per-event work that nobody reads.

An SSE client's position is a *cursor*: for each worker, the id of the last of its events
the client got, written as the SSE ``id:`` (``id: 1042.977`` with two workers); the
payload's own ``"id"`` stays the event's id, as in the webhook. ``Last-Event-ID`` with a
cursor resumes exactly: per worker, the events after its entry are read from that worker's
file (paged, :class:`~sipdial.store.SqliteEventReader`), then its live events follow,
duplicates dropped by id. An ack always starts such a catch-up from the subscription's
entry for that worker, so nothing released before the forwarding began is missed — not
at the first subscription, and not after that worker restarted (its hello asks for a new
ack). Order: each worker's events in their order; between workers, as they arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from twisted.internet.defer import Deferred, DeferredList, FirstError
from twisted.python.failure import Failure

from sipdial.events.hub import EventHub, Subscription
from sipdial.reactor_types import exc_info
from sipdial.store import PublishedEvent

__all__ = ["Cursor", "CursorSubscriber", "EventReader", "MergedEvents", "decode_event",
           "encode_event", "format_cursor", "parse_cursor"]

log = logging.getLogger("sipdial.events")

#: per worker, the id of the last of its events a client got
Cursor = tuple[int, ...]

_PAGE: Final = 500
#: seconds the others keep forwarding after this worker's last SSE client left (reconnects)
LINGER: Final = 60.0
#: seconds after which a worker that has not acked the interest is asked again (the message
#: may have been dropped on the way, or that worker was restarting)
ASK_AGAIN: Final = 5.0


def format_cursor(cursor: Cursor) -> str:
    return ".".join(str(i) for i in cursor)


def parse_cursor(text: str, count: int) -> Cursor | None:
    """``"1042.977"`` for ``count`` workers; None if it is not one."""
    parts = text.strip().split(".")
    if len(parts) != count or not all(p.isascii() and p.isdigit() and len(p) <= 18
                                      for p in parts):
        return None
    return tuple(int(p) for p in parts)


def encode_event(origin: int, event: PublishedEvent, previous: int) -> bytes:
    """A released event as the mesh carries it, with the id forwarded (or acked) before it
    to that worker (a gap shows a dropped one): NUL-separated (JSON has no raw NUL)."""
    fields = (str(origin), str(previous), str(event.id), repr(event.time), event.call_id,
              event.user, event.name, event.payload)
    return "\x00".join(fields).encode("utf-8", "surrogatepass")


def decode_event(data: bytes) -> tuple[int, PublishedEvent, int] | None:
    """(origin, event, previous), or None."""
    try:
        origin, previous, ident, time, call_id, user, name, payload = data.decode(
            "utf-8", "surrogatepass").split("\x00", 7)
        return (int(origin), PublishedEvent(int(ident), call_id, user, name, payload,
                                            float(time)), int(previous))
    except ValueError:
        return None


class EventReader(Protocol):
    """Another worker's events, read from its file."""

    def events_after(self, after: int, *, user: str | None = None,
                     limit: int = 500) -> Deferred[list[PublishedEvent]]: ...

    def last_event_id(self) -> Deferred[int]: ...


class CursorSubscriber(Protocol):
    """An SSE stream: each event with the cursor after it (its SSE ``id:``)."""

    def event(self, event: PublishedEvent, cursor: str | None = None) -> None: ...

    def close(self) -> None: ...


class _LocalFeed:
    """This worker's own events, from its hub (which replays from its own file)."""

    def __init__(self, merged: _Merged) -> None:
        self.merged = merged

    def event(self, event: PublishedEvent) -> None:
        self.merged.offer(self.merged.owner.index, event)

    def close(self) -> None:
        self.merged.end()


class _Merged:
    """One SSE client's subscription to every worker's events."""

    def __init__(self, owner: MergedEvents, subscriber: CursorSubscriber, user: str | None,
                 after: Cursor | None) -> None:
        self.owner = owner
        self.subscriber = subscriber
        self.user = user
        count = owner.count
        self.last: list[int | None] = list(after) if after is not None else [None] * count
        self.catching = [False] * count  #: reading that worker's file: its live events wait
        #: an ack during a catch-up: read again unless the catch-up got that far
        self.recheck = [0] * count
        self.reading = [False] * count  #: a read of that worker's file is out
        self.hints: list[int | None] = []
        self.backlog: list[list[PublishedEvent]] = [[] for _ in range(count)]
        self.active = True
        self.local: Subscription | None = None

    # --- start ---------------------------------------------------------------------------

    def start(self) -> None:
        owner = self.owner
        own = owner.index
        newest_here = owner.hub.last_event_id
        given = self.last[own]
        # a position beyond what this worker has (another database, a single id meant for
        # one process): from its newest, not waiting for ids that may never come
        self.last[own] = newest_here if given is None else min(given, newest_here)
        # own events (the hub replays them from this worker's file itself) wait in the
        # backlog until every worker's position is known
        self.local = owner.hub.subscribe(_LocalFeed(self), user=self.user, after=self.last[own])
        others = [k for k in range(owner.count) if k != own]
        unknown = []
        self.hints = list(self.last)  # the client's positions, clamped once known
        for origin in others:
            if origin in owner.newest:  # it forwards from there: live
                known = owner.newest[origin]
                hint = self.last[origin]
                self.last[origin] = known if hint is None else min(hint, known)
            else:  # where it stands is read from its file first
                self.last[origin] = None
                unknown.append(origin)
        if not unknown:
            for origin in others:
                self.catch_up(origin)
            return
        for origin in unknown:
            self.catching[origin] = True
        d = DeferredList([owner.readers[k].last_event_id() for k in unknown],
                         fireOnOneErrback=True, consumeErrors=True)
        d.addCallbacks(self._positions, self._failed, callbackArgs=(unknown, others),
                       errbackArgs=(unknown[0],))

    def _positions(self, results: list[tuple[bool, int]], unknown: list[int],
                   others: list[int]) -> None:
        """Where the workers without forwarding stand now: the client starts from there."""
        for origin, (_ok, last) in zip(unknown, results, strict=True):
            hint = self.hints[origin]
            self.last[origin] = last if hint is None else min(hint, last)
        for origin in others:
            self.catch_up(origin)
        self._flush()

    # --- events --------------------------------------------------------------------------

    def offer(self, origin: int, event: PublishedEvent) -> None:
        if not self.active or (self.user is not None and event.user != self.user):
            return
        if self.catching[origin] or not self._ready():
            self.backlog[origin].append(event)
            return
        self._send(origin, event)

    def _send(self, origin: int, event: PublishedEvent) -> None:
        last = self.last[origin]
        if last is not None and event.id <= last:
            return  # had it (from the file, or before a reconnect)
        self.last[origin] = event.id
        cursor = format_cursor(tuple(max(0, i or 0) for i in self.last))
        self.subscriber.event(event, cursor)

    def _ready(self) -> bool:
        return all(last is not None for last in self.last)

    def catch_up(self, origin: int) -> None:
        """Read that worker's events after our entry from its file, then hand over its
        live ones that waited; again when its ack says it forwards only from further on."""
        last = self.last[origin]
        if not self.active or last is None:
            return
        if self.reading[origin]:  # one read at a time: it reads again when it ends
            self.recheck[origin] = max(self.recheck[origin], last + 1)
            return
        self.catching[origin] = True
        self.reading[origin] = True
        self.recheck[origin] = 0
        d = self.owner.readers[origin].events_after(last, user=self.user, limit=_PAGE)
        d.addCallbacks(self._page, self._failed, callbackArgs=(origin,),
                       errbackArgs=(origin,))

    def _page(self, events: list[PublishedEvent], origin: int) -> None:
        self.reading[origin] = False
        if not self.active:
            return
        for event in events:
            self._send(origin, event)
        last = self.last[origin] or 0
        if len(events) == _PAGE or last < self.recheck[origin]:
            # a full page, or an ack came meanwhile for events this read may have missed
            self.catch_up(origin)
            return
        self.catching[origin] = False
        self._flush()

    def _flush(self) -> None:
        """Everything that waited, once every worker's position is known."""
        if not self._ready():
            return
        for origin in range(self.owner.count):
            if self.catching[origin]:
                continue
            waiting, self.backlog[origin] = self.backlog[origin], []
            for event in sorted(waiting, key=lambda e: e.id):
                if not self.active:
                    return
                self._send(origin, event)

    def acked(self, origin: int, forwarded_after: int) -> None:
        last = self.last[origin]
        if self.catching[origin] or self.reading[origin]:
            self.recheck[origin] = max(self.recheck[origin], forwarded_after)
        elif last is not None and last < forwarded_after:
            self.catch_up(origin)

    def _failed(self, failure: Failure, origin: int) -> None:
        if isinstance(failure.value, FirstError):
            failure = failure.value.subFailure
        log.error("events: cannot read worker %d's events; ending a stream (it resumes)",
                  origin, exc_info=exc_info(failure))
        self.end()

    def end(self) -> None:
        if not self.active:
            return
        self.cancel()
        self.subscriber.close()

    def cancel(self) -> None:
        if not self.active:
            return
        self.active = False
        if self.local is not None:
            self.local.cancel()
        self.owner._gone(self)


class MergedEvents:
    """The SSE event source of one worker among ``count`` (see the module docstring).

    ``readers`` read the other workers' files; ``want_events(on, worker)`` asks one other
    worker (None: all) to forward its events, or to stop. The mesh handlers call
    :meth:`remote`, :meth:`acked` and :meth:`restarted`."""

    def __init__(self, index: int, count: int, hub: EventHub,
                 readers: Mapping[int, EventReader],
                 want_events: Callable[[bool, int | None], None], reactor: Any) -> None:
        self.index = index
        self.count = count
        self.hub = hub
        self.readers = readers
        self._want = want_events
        self._reactor = reactor
        self._subs: set[_Merged] = set()
        self._interested = False
        self._linger: Any = None
        self._asking: Any = None  #: the timer that asks the workers that did not ack
        #: per other worker: the newest of its events known here (the ack, then each one
        #: forwarded); present only while it forwards to this worker
        self.newest: dict[int, int] = {}

    def subscribe(self, subscriber: CursorSubscriber, *, user: str | None = None,
                  after: int | Cursor | None = None) -> _Merged:
        """``after``: a cursor (``Last-Event-ID``); a single id (a client of one process)
        stands for every worker's position."""
        cursor = (after,) * self.count if isinstance(after, int) else after
        if cursor is not None and len(cursor) != self.count:
            # from a run with another number of workers: every worker from the lowest
            # position in it (at least once, rather than nothing)
            log.info("events: a cursor of %d workers with %d running: resuming every worker "
                     "after %d", len(cursor), self.count, min(cursor, default=0))
            cursor = (min(cursor, default=0),) * self.count
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        if not self._interested:
            self._interested = True
            self._want(True, None)
            self._ask_again_later()
        merged = _Merged(self, subscriber, user, cursor)
        self._subs.add(merged)
        merged.start()
        return merged

    def _ask_again_later(self) -> None:
        if self._asking is None or not self._asking.active():
            self._asking = self._reactor.callLater(ASK_AGAIN, self._ask_again)

    def _ask_again(self) -> None:
        """While interested: ask again every worker that has not acked (one timer)."""
        self._asking = None
        if not self._interested:
            return
        missing = [k for k in range(self.count) if k != self.index and k not in self.newest]
        for origin in missing:
            log.info("events: worker %d has not answered; asking it again", origin)
            self._want(True, origin)
        if missing:
            self._ask_again_later()

    def _gone(self, merged: _Merged) -> None:
        self._subs.discard(merged)
        if not self._subs and self._interested and self._linger is None:
            self._linger = self._reactor.callLater(LINGER, self._lose_interest)

    def _lose_interest(self) -> None:
        self._linger = None
        if self._subs:
            return
        self._interested = False
        self.newest.clear()
        self._want(False, None)

    # --- from the mesh -------------------------------------------------------------------

    def remote(self, origin: int, event: PublishedEvent, previous: int) -> None:
        """``event`` forwarded by ``origin``, which forwarded ``previous`` (or acked it)
        just before: if that is not the last one seen here, something was dropped on the
        way, and every stream reads that worker's file from its position first."""
        newest = self.newest.get(origin)
        if newest is None:
            return  # not (or no longer) forwarding to us: a straggler
        if previous != newest:
            log.warning("events: worker %d's events after %d did not arrive (next seen: "
                        "%d): read from its file", origin, newest, event.id)
            for merged in list(self._subs):
                merged.acked(origin, event.id)
        self.newest[origin] = event.id
        for merged in list(self._subs):
            merged.offer(origin, event)

    def acked(self, origin: int, forwarded_after: int) -> None:
        if not self._interested or not 0 <= origin < self.count or origin == self.index:
            return
        self.newest[origin] = forwarded_after
        for merged in list(self._subs):
            merged.acked(origin, forwarded_after)

    def restarted(self, origin: int) -> None:
        """That worker started again: it forwards nothing until asked anew."""
        self.newest.pop(origin, None)
        if self._interested:
            self._want(True, origin)
            self._ask_again_later()

    def stop(self) -> None:
        for merged in list(self._subs):
            merged.end()
        for timer in (self._linger, self._asking):
            if timer is not None and timer.active():
                timer.cancel()
