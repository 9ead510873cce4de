"""sipdial.store: one row that SQLite or the encoder refuses fails alone (issue 7 §1).

Before, a lone UTF-16 surrogate in one call's target made the batch's ``executemany`` raise,
the transaction was rolled back and every other write of the batch was lost ("store: lost 15
queued writes"): another user's call kept a truncated history. Now the batch is written again
row by row and only the bad row is left out, logged with what it was.

A real SQLite file, the worker "thread" run synchronously, a ``task.Clock``.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from sipdial.store import (
    CallEvent,
    CallRecord,
    OutboxEntry,
    PublishedEvent,
    RegistrationRecord,
    SqliteStore,
    WriteReport,
)
from tests.unit.deferreds import result, run_now

T0 = 1_763_732_155.0
SURROGATE = "sip:49\ud800@127.0.0.1"  # what json.loads makes of "sip:49\\ud800@127.0.0.1"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sipdial.db"


def started(db: Path) -> tuple[SqliteStore, Clock]:
    clock = Clock()
    clock.advance(T0)
    store = SqliteStore(str(db), clock, run_in_thread=run_now)
    result(store.start())
    return store, clock


def record(call_id: str, user: str = "201", to: str = "+4930123", **changes: object) -> CallRecord:
    call = CallRecord(call_id, user, to, "refer", "calling_user", None, T0, None)
    for name, value in changes.items():
        setattr(call, name, value)
    return call


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_call_with_a_lone_surrogate_fails_alone_and_the_others_keep_their_history(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, clock = started(db)
    good = record("good", user="202")
    with caplog.at_level(logging.ERROR, "sipdial.store"):
        # one batch of 15 writes, as in the issue: the good call's whole history and the bad
        # call's row and events
        store.save_call(good)
        for i in range(12):
            store.add_event("good", CallEvent(f"s{i}", T0 + i))
        store.save_call(record("bad", to=SURROGATE))
        store.add_event("bad", CallEvent("calling_user", T0))
        store.add_event("bad", CallEvent("ended", T0 + 1, None, "to: " + SURROGATE))
        waiting = store.when_committed()
        clock.advance(0.05)

    report = result(waiting)
    assert report.dropped == 2  # the bad call's row and the event whose detail quotes it
    stored = result(store.get_call("good"))
    assert stored is not None and [e.state for e in stored.events] == [
        f"s{i}" for i in range(12)]
    assert rows(db, "SELECT id FROM calls") == [("good",)]
    assert rows(db, "SELECT call_id, state FROM call_events WHERE call_id = 'bad'") == [
        ("bad", "calling_user")]  # the bad call's good event is kept too
    messages = [r.getMessage() for r in caplog.records]
    assert not any("lost" in m and "queued writes" in m for m in messages), messages
    assert any(m.startswith("store: could not write call 'bad', left it out") and
               "UnicodeEncodeError" in m for m in messages), messages
    assert any(m.startswith("store: could not write call event 'bad'") for m in messages)
    # and the store goes on as before
    store.save_call(record("later"))
    assert result(store.get_call("later")) is not None


def test_the_report_names_the_live_events_and_deliveries_left_out(db: Path) -> None:
    store, clock = started(db)
    store.add_published_event(PublishedEvent(1, "c1", "201", "call.dialing", "{}", T0))
    store.add_published_event(PublishedEvent(2, "c2", "201", "call.dialing", SURROGATE, T0))
    store.add_outbox_entry(OutboxEntry(1, "http://crm/hook", 1, "c1", "call.dialing", "{}", T0))
    store.add_outbox_entry(OutboxEntry(2, "http://crm/hook", 2, "c2", "call.dialing",
                                       SURROGATE, T0))
    store.add_outbox_entry(OutboxEntry(3, "http://crm/hook", 1, "c1", "call.dialing", "{}",
                                       T0, attempts=2**64))  # too big for SQLite's INTEGER
    first, second = store.when_committed(), store.when_committed()
    clock.advance(0.05)
    expected = WriteReport(3, frozenset({2}), frozenset({2, 3}))
    assert result(first) == expected and result(second) == expected
    assert rows(db, "SELECT id FROM events") == [(1,)]
    assert rows(db, "SELECT id FROM webhook_outbox") == [(1,)]


def test_a_bad_registration_does_not_take_the_others_with_it(db: Path) -> None:
    store, clock = started(db)

    def registration(user: str, contact: str) -> RegistrationRecord:
        return RegistrationRecord(user, contact, None, "udp", "192.0.2.7", 5060, T0 + 60,
                                  1.0, "UA \udcff", "cid", 1, T0)

    store.save_registration(registration("201", "sip:201@192.0.2.7"))
    good = registration("202", "sip:202@192.0.2.8")
    good.user_agent = "Yealink"
    store.save_registration(good)
    clock.advance(0.05)
    assert [(r.user, r.user_agent) for r in result(store.load_registrations())] == [
        ("202", "Yealink")]


def test_when_committed_waits_for_the_write_and_fires_after_it(db: Path) -> None:
    store, clock = started(db)
    store.save_call(record("c1"))
    waiting = store.when_committed()
    fired: list[WriteReport] = []
    waiting.addCallback(fired.append)
    assert fired == [] and rows(db, "SELECT id FROM calls") == []
    clock.advance(0.05)
    assert fired == [WriteReport()] and rows(db, "SELECT id FROM calls") == [("c1",)]
    # with nothing queued it still fires, behind whatever is being written
    idle = store.when_committed()
    clock.advance(0.05)
    assert result(idle) == WriteReport()
    result(store.stop())


def test_when_committed_before_start_fires_once_started(db: Path) -> None:
    clock = Clock()
    clock.advance(T0)
    store = SqliteStore(str(db), clock, run_in_thread=run_now)
    waiting = store.when_committed()  # nothing queued: it rides on the first flush
    result(store.start())
    clock.advance(0.05)
    assert result(waiting) == WriteReport()
    result(store.stop())
