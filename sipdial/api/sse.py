"""``GET /v1/events``: live call events as Server-Sent Events (the HTML "EventSource" format).

:mod:`sipdial.api.http` routes, authenticates and validates the request (a user token sees
only its own user's calls, an admin token every call or ``?user=``'s) and then hands it to
:meth:`EventStream.open`, which keeps the response open::

    HTTP/1.1 200 OK
    Content-Type: text/event-stream; charset=utf-8

    : sipdial events
    retry: 3000

    id: 57
    event: call.ringing
    data: {"id":57,"event":"call.ringing",...,"call":{...}}

    : keepalive

Every event is one ``id:``/``event:``/``data:`` block; ``data`` is the same JSON document a
webhook receives (:mod:`sipdial.events.hub`). A comment line goes out every ``heartbeat``
seconds (15) from ONE shared timer, so proxies keep the connection and a dead client is
noticed. A client that reconnects with ``Last-Event-ID: 57`` (or ``?last_event_id=57``)
first gets every later event, from memory or the database, also after a restart of sipdial.

Back-pressure: the stream is a push producer on the connection. While the client does not
read, events wait in memory; past ``max_pending`` of them the stream ends (the client
reconnects with its ``Last-Event-ID`` and is replayed from the database).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Final, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from sipdial.store import PublishedEvent

__all__ = ["EventSource", "EventStream", "format_event"]

log = logging.getLogger("sipdial.api")

_CONTENT_TYPE: Final = b"text/event-stream; charset=utf-8"
_PREAMBLE: Final = b": sipdial events\nretry: 3000\n\n"
_KEEPALIVE: Final = b": keepalive\n\n"


class _Subscription(Protocol):
    def cancel(self) -> None: ...


class EventSource(Protocol):
    """Where the events come from (:class:`sipdial.events.hub.EventHub`; with several
    workers :class:`sipdial.events.MergedEvents`, whose ``after`` may be a cursor: one
    position per worker)."""

    def subscribe(
        self, subscriber: _Stream, *, user: str | None = None,
        after: int | tuple[int, ...] | None = None,
    ) -> _Subscription: ...


class _Request(Protocol):
    """The part of ``twisted.web.server.Request`` used here (Twisted leaves it untyped)."""

    def setResponseCode(self, code: int) -> None: ...
    def setHeader(self, name: bytes, value: bytes) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def notifyFinish(self) -> Deferred[None]: ...
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


def format_event(event: PublishedEvent, cursor: str | None = None) -> bytes:
    """One SSE block: ``id:``, ``event:``, one ``data:`` line per line of the payload.

    The payload is JSON: a lone surrogate in one of its strings (which UTF-8 cannot carry)
    is written as its JSON escape ``\\ud800``, the same value to a JSON parser, instead of
    failing the frame. The payload is split on CR and LF only (an SSE line ends there):
    U+2028 and friends, which ``str.splitlines`` also splits at, stay in their line.
    ``cursor``: the SSE id when it is not the event's (several workers: every one's
    position, sipdial.events.merged)."""
    lines = [f"id: {cursor or event.id}", f"event: {event.name}"]
    lines += [f"data: {line}" for line in _SSE_LINE_END.split(event.payload)]
    return ("\n".join(lines) + "\n\n").encode("utf-8", "backslashreplace")


_SSE_LINE_END: Final = re.compile(r"\r\n|\r|\n")


class EventStream:
    """Opens SSE responses on a source of events and keeps them alive.

    ``reactor`` (an ``IReactorTime``) runs the heartbeat; ``max_pending`` bounds the events
    held for a client that does not read.
    """

    def __init__(
        self,
        source: EventSource,
        reactor: Any,
        *,
        heartbeat: float = 15.0,
        max_pending: int = 1000,
    ) -> None:
        if heartbeat <= 0:
            raise ValueError(f"heartbeat must be > 0, got {heartbeat}")
        self._source = source
        self._reactor = reactor
        self._heartbeat_interval = heartbeat
        self._max_pending = max_pending
        self._streams: set[_Stream] = set()
        self._heartbeat: LoopingCall | None = None

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def open(self, request: _Request, *, user: str | None,
             after: int | tuple[int, ...] | None,
             allowed: Callable[[], bool] | None = None) -> None:
        """Answer ``request`` with a stream of ``user``'s events (None: every call's).
        ``allowed``: asked at every heartbeat whether the credentials that opened it still
        hold (a token removed, a password changed, an administrator's right taken by a
        reload): a stream no longer allowed ends."""
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", _CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")  # nginx: pass every event through
        request.write(_PREAMBLE)
        stream = _Stream(request, self._max_pending, self._closed, allowed)
        self._streams.add(stream)
        request.registerProducer(stream, True)
        request.notifyFinish().addBoth(stream.finished)
        try:
            stream.subscription = self._source.subscribe(stream, user=user, after=after)
        except Exception:
            log.exception("events: cannot subscribe")
            stream.close()
            return
        self._start_heartbeat()

    # --- heartbeat: one timer for every stream ------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None and self._streams:
            beat = LoopingCall(self._beat)
            beat.clock = self._reactor
            beat.start(self._heartbeat_interval, now=False)
            self._heartbeat = beat

    def _beat(self) -> None:
        for stream in list(self._streams):
            stream.keepalive()

    def _closed(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        if not self._streams and self._heartbeat is not None:
            if self._heartbeat.running:
                self._heartbeat.stop()
            self._heartbeat = None


@implementer(IPushProducer)
class _Stream:
    """One open SSE response: a :class:`Subscriber` and the connection's push producer."""

    def __init__(
        self, request: _Request, max_pending: int, on_close: Callable[[_Stream], None],
        allowed: Callable[[], bool] | None = None,
    ) -> None:
        self.subscription: _Subscription | None = None
        self._allowed = allowed
        self._request = request
        self._max_pending = max_pending
        self._on_close = on_close
        self._paused = False
        self._pending: list[bytes] = []
        self._done = False

    # --- Subscriber ---------------------------------------------------------------------------

    def event(self, event: PublishedEvent, cursor: str | None = None) -> None:
        """Send ``event`` (or hold it while the client does not read). Never raises into
        the publisher: a stream that cannot send an event closes itself, so its client
        reconnects and resumes after its last event instead of staying open and deaf."""
        if self._done:
            return
        try:
            frame = format_event(event, cursor)
            if not self._paused:
                self._request.write(frame)
                return
        except Exception:
            log.exception("events: cannot send event %s to a stream; closing it", event.id)
            self._end(finish=True, abort=True)
            return
        self._pending.append(frame)
        if len(self._pending) > self._max_pending:
            log.info("events: client reads too slowly; ending its stream (it will resume)")
            self._end(finish=True)

    def close(self) -> None:
        """End the response (sipdial is stopping, or the stream overflowed)."""
        self._end(finish=True)

    def keepalive(self) -> None:
        if not self._done and self._allowed is not None and not self._allowed():
            log.info("events: a stream's credentials no longer hold; ending it")
            self._end(finish=True)
            return
        if not self._done and not self._paused:
            try:
                self._request.write(_KEEPALIVE)
            except Exception:
                log.exception("events: cannot write to a stream; closing it")
                self._end(finish=True, abort=True)

    # --- IPushProducer (the connection's flow control) ----------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._pending and not self._done:
            frames, self._pending = self._pending, []
            try:
                self._request.write(b"".join(frames))
            except Exception:
                log.exception("events: cannot write to a stream; closing it")
                self._end(finish=True, abort=True)

    def stopProducing(self) -> None:
        self._end(finish=False)

    # --- the end --------------------------------------------------------------------------------

    def finished(self, result: Failure | None) -> None:
        """``notifyFinish`` fired: the response ended or the client went away."""
        self._end(finish=False)

    def _end(self, *, finish: bool, abort: bool = False) -> None:
        """Unsubscribe and end the response. ``abort``: a write failed, so the response may
        be broken half-way through a frame; the connection is closed as well (a client that
        got the response's end reconnects; one that did not notices the closed socket)."""
        if self._done:
            return
        self._done = True
        self._pending = []
        if self.subscription is not None:
            try:
                self.subscription.cancel()
            except Exception:
                log.exception("events: cancelling a subscription failed")
        self._on_close(self)
        # twisted.web's Request forgets its channel when it finishes; its transport stays
        transport = getattr(self._request, "transport", None) if abort else None
        try:
            self._request.unregisterProducer()
            if finish:
                self._request.finish()
        except Exception:  # the connection is already gone
            log.debug("events: stream ended after its connection")
        if transport is not None:
            try:
                transport.loseConnection()
            except Exception:
                log.debug("events: the stream's connection is already gone")
