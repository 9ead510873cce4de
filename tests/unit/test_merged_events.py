"""Every worker's events in one SSE stream (sipdial.events.merged): the interest / ack /
catch-up protocol, cursors, resume, a restarted worker. A real hub (worker 0 of 2) on
SQLite; worker 1 is a scripted file and a scripted mesh. No sockets, a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed

from sipdial.events import MergedEvents, decode_event, encode_event, parse_cursor
from sipdial.events.merged import ASK_AGAIN, LINGER
from sipdial.store import PublishedEvent
from tests.unit.test_webhooks import Hub


def remote_event(ident: int, user: str = "201") -> PublishedEvent:
    return PublishedEvent(ident, f"01call{ident}", user, "call.ringing",
                          f'{{"id": {ident}}}', 1.8e9 + ident)


@dataclass
class File:
    """Worker 1's file: what it has committed; reads can be held to race with the mesh."""

    events: list[PublishedEvent] = field(default_factory=list)
    held: list[tuple[Deferred[list[PublishedEvent]], int, str | None]] = field(
        default_factory=list)
    hold: bool = False

    def events_after(self, after: int, *, user: str | None = None,
                     limit: int = 500) -> Deferred[list[PublishedEvent]]:
        if self.hold:
            d: Deferred[list[PublishedEvent]] = Deferred()
            self.held.append((d, after, user))
            return d
        return succeed(self._after(after, user, limit))

    def _after(self, after: int, user: str | None, limit: int = 500) -> list[PublishedEvent]:
        return [e for e in self.events if e.id > after and user in (None, e.user)][:limit]

    def release(self) -> None:
        self.hold = False
        held, self.held = self.held, []
        for d, after, user in held:
            d.callback(self._after(after, user))

    def last_event_id(self) -> Deferred[int]:
        return succeed(max((e.id for e in self.events), default=0))


@dataclass
class Sink:
    got: list[tuple[int, str | None]] = field(default_factory=list)
    closed: int = 0

    def event(self, event: PublishedEvent, cursor: str | None = None) -> None:
        self.got.append((event.id, cursor))

    def close(self) -> None:
        self.closed += 1


class Worker0:
    def __init__(self, tmp_path: Path) -> None:
        self.h = Hub(tmp_path / "w0.db", ids=(0, 2))
        self.file = File()
        self.asked: list[tuple[bool, int | None]] = []
        self.merged = MergedEvents(0, 2, self.h.hub, {1: self.file},
                                   lambda on, w: self.asked.append((on, w)), self.h.clock)

    def committed_at_1(self, *ids: int) -> list[PublishedEvent]:
        events = [remote_event(i) for i in ids]
        self.file.events += events
        return events


@pytest.fixture
def w0(tmp_path: Path) -> Worker0:
    return Worker0(tmp_path)


def test_a_new_stream_asks_for_the_others_events_and_gets_them_with_cursors(
        w0: Worker0) -> None:
    w0.committed_at_1(1, 3)  # before the client came: not sent
    sink = Sink()
    w0.merged.subscribe(sink)
    assert w0.asked == [(True, None)]
    early = remote_event(5)
    w0.merged.remote(1, early, 3)  # before its ack: worker 1 does not forward yet
    w0.committed_at_1(5, 7)  # released at worker 1 before it took our interest
    w0.merged.acked(1, 7)  # "forwarding after 7": 5 and 7 are read from its file
    for event in w0.committed_at_1(9):
        w0.merged.remote(1, event, 7)
    w0.h.call("c1").enter("user_ringing")  # worker 0's own: ids 2, 4
    assert [i for i, _ in sink.got] == [5, 7, 9, 2, 4]
    assert [c for _, c in sink.got] == ["0.5", "0.7", "0.9", "2.9", "4.9"]
    w0.h.stop()


def test_resume_from_a_cursor_reads_what_was_missed_once(w0: Worker0) -> None:
    w0.h.call("c1").enter("user_ringing")  # 2, 4 at worker 0
    w0.committed_at_1(1, 3, 5)
    sink = Sink()
    w0.merged.subscribe(sink, after=parse_cursor("2.3", 2))
    w0.merged.acked(1, 5)
    w0.merged.remote(1, w0.committed_at_1(7)[0], 5)
    assert sorted(i for i, _ in sink.got) == [4, 5, 7]  # 2 and 1, 3 the client had
    assert sink.got[-1][1] == "4.7"
    w0.h.stop()


def test_an_ack_while_reading_the_file_reads_again(w0: Worker0) -> None:
    """The read may have been answered before the acked events were committed."""
    sink = Sink()
    w0.committed_at_1(1)
    w0.file.hold = True
    w0.merged.subscribe(sink, after=(0, 0))
    w0.merged.acked(1, 3)  # forwarding after 3, while the first read is out
    held = w0.file.held.pop(0)[0]
    held.callback([remote_event(1)])  # answered before 3 was committed
    assert [i for i, _ in sink.got] == [1] and len(w0.file.held) == 1  # asked again
    w0.committed_at_1(3)
    w0.file.release()
    assert [i for i, _ in sink.got] == [1, 3]
    w0.h.stop()


def test_a_restarted_worker_is_asked_again_and_its_gap_read(w0: Worker0) -> None:
    sink = Sink()
    w0.merged.subscribe(sink)
    w0.merged.acked(1, 0)
    w0.merged.remote(1, w0.committed_at_1(1)[0], 0)
    w0.merged.restarted(1)  # its hello: it forwards nothing now
    assert w0.asked[-1] == (True, 1)
    w0.merged.remote(1, remote_event(99), 1)  # a straggler from before: ignored
    w0.committed_at_1(3, 5)  # e.g. its calls ended "interrupted" at its start
    w0.merged.acked(1, 5)
    assert [i for i, _ in sink.got] == [1, 3, 5]
    w0.h.stop()


def test_a_forwarded_event_that_was_dropped_on_the_way_is_read_from_the_file(
        w0: Worker0) -> None:
    sink = Sink()
    w0.merged.subscribe(sink)
    w0.merged.acked(1, 0)
    first, _lost, third = w0.committed_at_1(1, 3, 5)
    w0.merged.remote(1, first, 0)
    w0.merged.remote(1, third, 3)  # 3 was forwarded but never arrived (a full link)
    assert [i for i, _ in sink.got] == [1, 3, 5]
    assert sink.got[-1][1] == "0.5"
    w0.h.stop()


def test_positions_beyond_what_a_worker_has_start_from_its_newest(w0: Worker0) -> None:
    """A cursor from another database, or one id meant for one process: not waiting for
    ids that may never come."""
    w0.committed_at_1(1, 3)
    sink = Sink()
    w0.merged.subscribe(sink, after=(500, 501))
    w0.merged.acked(1, 3)
    w0.merged.remote(1, w0.committed_at_1(5)[0], 3)
    w0.h.call("c1").enter("user_ringing")
    assert sorted(i for i, _ in sink.got) == [2, 4, 5]
    # a cursor of another number of workers: from its lowest entry, every worker
    other = Sink()
    w0.merged.subscribe(other, after=(2, 1, 9))
    assert sorted(i for i, _ in other.got) == [2, 3, 4, 5]  # after 1 everywhere
    w0.h.stop()


def test_a_user_stream_sees_only_its_calls_and_interest_ends_after_the_linger(
        w0: Worker0) -> None:
    sink = Sink()
    sub = w0.merged.subscribe(sink, user="202")
    w0.merged.acked(1, 0)
    w0.merged.remote(1, w0.committed_at_1(1)[0], 0)
    w0.merged.remote(1, remote_event(3, user="202"), 1)
    assert [i for i, _ in sink.got] == [3]
    sub.cancel()
    w0.h.clock.advance(LINGER - 1)
    assert w0.asked == [(True, None)]
    w0.h.clock.advance(1)
    assert w0.asked == [(True, None), (False, None)]
    w0.h.stop()


def test_a_worker_that_does_not_ack_is_asked_again_until_it_does(w0: Worker0) -> None:
    """The interest may have been dropped on the way (or that worker was restarting)."""
    w0.merged.subscribe(Sink())
    assert w0.asked == [(True, None)]
    w0.h.clock.advance(ASK_AGAIN)
    assert w0.asked == [(True, None), (True, 1)]
    w0.h.clock.advance(ASK_AGAIN)
    assert w0.asked[-1] == (True, 1) and len(w0.asked) == 3
    w0.merged.acked(1, 0)
    w0.h.clock.advance(10 * ASK_AGAIN)
    assert len(w0.asked) == 3  # answered: not asked again
    w0.h.stop()


def test_the_mesh_form_of_an_event_round_trips() -> None:
    event = PublishedEvent(7, "01c", "2\u00e901", "call.ended", '{"x": "\\u0000 \u2028"}',
                           1.8e9 + 0.123)
    assert decode_event(encode_event(1, event, 5)) == (1, event, 5)
    assert decode_event(b"nonsense") is None
    assert parse_cursor("1.2", 2) == (1, 2)
    for bad in ("1.2", "1.x", "1..2", "-1.2", ""):
        assert parse_cursor(bad, 3 if bad == "1.2" else 2) is None
