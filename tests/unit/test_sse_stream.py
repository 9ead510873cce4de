"""sipdial.api.sse.EventStream without sockets: the frame format, ONE heartbeat timer for all
streams, back-pressure, and the end of a stream from either side."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from sipdial.api.sse import EventStream, format_event
from sipdial.store.models import PublishedEvent


def event(event_id: int, payload: str = '{"id":1}') -> PublishedEvent:
    return PublishedEvent(event_id, "c1", "201", "call.ringing", payload, 0.0)


@dataclass
class FakeRequest:
    written: list[bytes] = field(default_factory=list)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    code: int | None = None
    finished: int = 0
    producer: object | None = None
    finish_notifications: list[Deferred[None]] = field(default_factory=list)

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def write(self, data: bytes) -> None:
        assert not self.finished
        self.written.append(data)

    def finish(self) -> None:
        self.finished += 1
        for d in self.finish_notifications:
            d.callback(None)

    def notifyFinish(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.finish_notifications.append(d)
        return d

    def registerProducer(self, producer: object, streaming: bool) -> None:
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def lose_connection(self) -> None:
        for d in self.finish_notifications:
            d.errback(Failure(ConnectionError("gone")))

    @property
    def body(self) -> bytes:
        return b"".join(self.written)


@dataclass
class FakeSubscription:
    cancelled: int = 0

    def cancel(self) -> None:
        self.cancelled += 1


@dataclass
class FakeSource:
    subscribers: list[tuple[object, str | None, int | None, FakeSubscription]] = field(
        default_factory=list
    )

    def subscribe(self, subscriber: object, *, user: str | None = None,
                  after: int | None = None) -> FakeSubscription:
        subscription = FakeSubscription()
        self.subscribers.append((subscriber, user, after, subscription))
        return subscription

    def send(self, e: PublishedEvent, index: int = 0) -> None:
        self.subscribers[index][0].event(e)  # type: ignore[attr-defined]


def opened(clock: Clock, source: FakeSource, **kw: int) -> tuple[EventStream, FakeRequest]:
    stream = EventStream(source, clock, heartbeat=15.0, **kw)
    request = FakeRequest()
    stream.open(request, user="201", after=7)
    return stream, request


def test_format_event() -> None:
    assert format_event(event(57)) == b'id: 57\nevent: call.ringing\ndata: {"id":1}\n\n'
    assert format_event(event(1, "a\nb\r\nc")) == (
        b"id: 1\nevent: call.ringing\ndata: a\ndata: b\ndata: c\n\n")
    assert format_event(event(1, "")) == b"id: 1\nevent: call.ringing\ndata: \n\n"


def test_open_writes_headers_and_preamble_and_subscribes() -> None:
    clock, source = Clock(), FakeSource()
    _stream, request = opened(clock, source)
    assert request.code == 200
    assert request.headers[b"Content-Type"] == b"text/event-stream; charset=utf-8"
    assert request.body == b": sipdial events\nretry: 3000\n\n"
    ((_sub, user, after, _s),) = source.subscribers
    assert (user, after) == ("201", 7)
    source.send(event(8))
    assert request.written[-1] == format_event(event(8))


def test_one_heartbeat_timer_for_every_stream_and_none_when_idle() -> None:
    clock, source = Clock(), FakeSource()
    stream = EventStream(source, clock, heartbeat=15.0)
    requests = [FakeRequest() for _ in range(3)]
    for request in requests:
        stream.open(request, user=None, after=None)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(15)
    assert all(r.written[-1] == b": keepalive\n\n" for r in requests)
    for request in requests:
        request.lose_connection()
    assert stream.open_streams == 0
    assert clock.getDelayedCalls() == []
    assert all(sub.cancelled == 1 for *_, sub in source.subscribers)


def test_a_paused_client_gets_the_events_when_it_reads_again() -> None:
    clock, source = Clock(), FakeSource()
    _stream, request = opened(clock, source)
    producer = request.producer
    producer.pauseProducing()  # type: ignore[attr-defined]
    before = len(request.written)
    source.send(event(8))
    source.send(event(9))
    clock.advance(15)  # no keepalive into a full pipe either
    assert len(request.written) == before
    producer.resumeProducing()  # type: ignore[attr-defined]
    assert request.written[-1] == format_event(event(8)) + format_event(event(9))


def test_a_client_that_does_not_read_is_cut_off_to_resume_later() -> None:
    clock, source = Clock(), FakeSource()
    stream, request = opened(clock, source, max_pending=3)
    request.producer.pauseProducing()  # type: ignore[attr-defined]
    for i in range(8, 12):
        source.send(event(i))
    assert request.finished == 1
    assert source.subscribers[0][3].cancelled == 1
    assert stream.open_streams == 0
    source.send(event(12))  # late events are ignored


def test_close_ends_the_response_once() -> None:
    clock, source = Clock(), FakeSource()
    stream, request = opened(clock, source)
    subscriber = source.subscribers[0][0]
    subscriber.close()  # type: ignore[attr-defined]
    subscriber.close()  # type: ignore[attr-defined]
    assert request.finished == 1
    assert request.producer is None
    assert stream.open_streams == 0


def test_stop_producing_ends_the_stream_without_writing() -> None:
    clock, source = Clock(), FakeSource()
    stream, request = opened(clock, source)
    request.producer.stopProducing()  # type: ignore[attr-defined]
    assert request.finished == 0
    assert stream.open_streams == 0
    assert source.subscribers[0][3].cancelled == 1


def test_a_source_that_refuses_ends_the_response() -> None:
    class Refusing(FakeSource):
        def subscribe(self, subscriber: object, *, user: str | None = None,
                      after: int | None = None) -> FakeSubscription:
            raise RuntimeError("event hub is stopped")

    clock = Clock()
    stream = EventStream(Refusing(), clock)
    request = FakeRequest()
    stream.open(request, user=None, after=None)
    assert request.finished == 1
    assert stream.open_streams == 0
    assert clock.getDelayedCalls() == []


# --------------------------------------------------------------- issue 7 §1: never deaf


def test_format_event_writes_a_lone_surrogate_as_its_json_escape() -> None:
    payload = json.dumps({"to": "sip:49\ud800@127.0.0.1"}, ensure_ascii=False)
    frame = format_event(event(5, payload)).decode("utf-8")  # strict: well-formed UTF-8
    (data,) = [line for line in frame.split("\n") if line.startswith("data: ")]
    assert json.loads(data.removeprefix("data: ")) == {"to": "sip:49\ud800@127.0.0.1"}


def test_format_event_splits_lines_only_where_sse_does() -> None:
    """U+2028, NEL, VT, FF and the separators 0x1c-0x1e stay in their data line (JSON
    writes them raw; ``str.splitlines`` cut the document there)."""
    document = {"device": "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg"}
    frame = format_event(event(5, json.dumps(document, ensure_ascii=False))).decode("utf-8")
    lines = frame.split("\n")
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert len(data) == 1 and json.loads(data[0]) == document


@dataclass
class FakeTransport:
    lost: int = 0

    def loseConnection(self) -> None:
        self.lost += 1


@dataclass
class BrokenRequest(FakeRequest):
    """A connection whose writes fail once ``broken`` is set (and whose finish fails too)."""

    broken: bool = False
    transport: FakeTransport = field(default_factory=FakeTransport)

    def write(self, data: bytes) -> None:
        if self.broken:
            raise RuntimeError("transport is broken")
        super().write(data)

    def finish(self) -> None:
        if self.broken:
            raise RuntimeError("transport is broken")
        super().finish()


def opened_broken(clock: Clock, source: FakeSource) -> tuple[EventStream, BrokenRequest]:
    stream = EventStream(source, clock, heartbeat=15.0)
    request = BrokenRequest()
    stream.open(request, user=None, after=None)
    request.broken = True
    return stream, request


def test_a_stream_whose_write_fails_closes_itself_instead_of_raising() -> None:
    clock, source = Clock(), FakeSource()
    stream, request = opened_broken(clock, source)
    source.send(event(8))  # must not raise into the hub (it would unsubscribe silently)
    assert source.subscribers[0][3].cancelled == 1
    assert request.transport.lost == 1  # the connection is closed: the client reconnects
    assert stream.open_streams == 0
    assert clock.getDelayedCalls() == []
    source.send(event(9))  # a late event to a closed stream is ignored
    assert request.transport.lost == 1


def test_an_event_that_cannot_be_formatted_closes_only_its_stream() -> None:
    clock, source = Clock(), FakeSource()
    stream = EventStream(source, clock, heartbeat=15.0)
    requests = [FakeRequest(), FakeRequest()]
    for request in requests:
        stream.open(request, user=None, after=None)
    bad = PublishedEvent(3, "c1", "201", "call.ringing", None, 0.0)  # type: ignore[arg-type]
    source.send(bad, 0)
    assert requests[0].finished == 1 and source.subscribers[0][3].cancelled == 1
    source.send(event(4), 1)
    assert requests[1].written[-1] == format_event(event(4))
    assert stream.open_streams == 1


def test_a_failing_keepalive_or_resume_closes_the_stream() -> None:
    clock, source = Clock(), FakeSource()
    stream, request = opened_broken(clock, source)
    clock.advance(15)
    assert request.transport.lost == 1 and stream.open_streams == 0
    stream2, request2 = opened_broken(clock, source)
    request2.producer.pauseProducing()  # type: ignore[attr-defined]
    source.send(event(8), 1)  # held: the client does not read
    request2.producer.resumeProducing()  # type: ignore[attr-defined]
    assert request2.transport.lost == 1 and stream2.open_streams == 0


def test_a_stream_whose_credentials_no_longer_hold_ends_at_the_next_heartbeat() -> None:
    """A token removed, a password changed, an administrator's right taken by a reload:
    the stream opened with them ends (the client reconnects, and is refused)."""
    clock, source = Clock(), FakeSource()
    stream = EventStream(source, clock, heartbeat=15.0)
    allowed = [True]
    revoked, kept = FakeRequest(), FakeRequest()
    stream.open(revoked, user=None, after=None, allowed=lambda: allowed[0])
    stream.open(kept, user="201", after=None, allowed=lambda: True)
    clock.advance(15)
    assert revoked.written[-1] == b": keepalive\n\n" and not revoked.finished
    allowed[0] = False
    source.send(event(9))  # events still go until the heartbeat notices
    clock.advance(15)
    assert revoked.finished and stream.open_streams == 1
    assert source.subscribers[0][3].cancelled == 1
    assert kept.written[-1] == b": keepalive\n\n" and not kept.finished
