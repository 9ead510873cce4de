"""sipdial.store: batching, read-your-writes, restart recovery, registrations, JSON form.

Most tests run the worker "thread" synchronously (``run_in_thread=run_now``) under a
``task.Clock``, so every flush happens exactly when the test advances the clock. One test uses
the real one-thread pool, with a fake reactor whose ``callFromThread`` the test pumps.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from sipdial.store import (
    CallEvent,
    CallRecord,
    RegistrationRecord,
    SqliteStore,
    StoreError,
    iso_time,
)
from sipdial.store.sqlite import SCHEMA_VERSION
from tests.unit.deferreds import result, run_now

T = TypeVar("T")

T0 = datetime(2026, 11, 21, 13, 35, 55, 123000, tzinfo=UTC).timestamp()


# --- harness ---------------------------------------------------------------------------------






class CountingConnection(sqlite3.Connection):
    """Records every statement: ("execute", sql) / ("executemany", sql, rows)."""

    log: list[tuple[Any, ...]]
    fail_next_executemany = False

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self.log.append(("execute", sql.strip().split()[0].upper()))
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        rows = list(parameters)
        self.log.append(("executemany", sql.strip().split()[0].upper(), len(rows)))
        if self.fail_next_executemany:
            self.fail_next_executemany = False
            raise sqlite3.OperationalError("disk I/O error (test)")
        return super().executemany(sql, rows)


class Harness:
    def __init__(self, path: Path, now: float = T0, **kw: Any) -> None:
        self.clock = Clock()
        self.clock.advance(now)
        self.connections: list[CountingConnection] = []
        self.store = SqliteStore(
            str(path), self.clock, run_in_thread=run_now, connect=self._connect, **kw
        )

    def _connect(self, path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, factory=CountingConnection)
        assert isinstance(conn, CountingConnection)
        conn.log = []
        self.connections.append(conn)
        return conn

    @property
    def log(self) -> list[tuple[Any, ...]]:
        return self.connections[-1].log

    def transactions(self) -> int:
        return self.log.count(("execute", "BEGIN"))

    def executemanys(self) -> list[tuple[Any, ...]]:
        return [entry for entry in self.log if entry[0] == "executemany"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sipdial.db"


def started(path: Path, now: float = T0, **kw: Any) -> Harness:
    h = Harness(path, now, **kw)
    result(h.store.start())
    h.log.clear()
    return h


def call(call_id: str = "c1", **changes: Any) -> CallRecord:
    fields: dict[str, Any] = {
        "id": call_id,
        "user": "201",
        "to": "+4930123",
        "mode": "refer",
        "state": "calling_user",
        "cause": None,
        "created_at": T0,
        "ended_at": None,
    }
    fields.update(changes)
    return CallRecord(**fields)


def registration(contact: str = "sip:201@10.0.0.5:5060", **changes: Any) -> RegistrationRecord:
    fields: dict[str, Any] = {
        "user": "201",
        "contact": contact,
        "instance": "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>",
        "transport": "udp",
        "source_host": "192.0.2.7",
        "source_port": 40312,
        "expires_at": T0 + 3600,
        "q": 1.0,
        "user_agent": "Yealink SIP-T46S",
        "call_id": "reg-1@10.0.0.5",
        "cseq": 7,
        "registered_at": T0,
    }
    fields.update(changes)
    return RegistrationRecord(**fields)


# --- batching --------------------------------------------------------------------------------


def test_writes_are_batched_into_one_transaction(db: Path) -> None:
    h = started(db)
    h.store.save_call(call("c1"))
    for i in range(100):
        h.store.add_event("c1", CallEvent(f"s{i}", T0 + i))
    h.store.save_call(call("c2"))
    h.store.save_call(call("c1", state="user_ringing"))  # coalesced with the first save

    assert h.log == []  # nothing written yet
    assert len(h.clock.getDelayedCalls()) == 1  # ONE timer, not one per write
    h.clock.advance(0.049)
    assert h.log == []
    h.clock.advance(0.001)

    assert h.transactions() == 1
    assert h.executemanys() == [("executemany", "INSERT", 2), ("executemany", "INSERT", 100)]
    assert h.clock.getDelayedCalls() == []
    stored = result(h.store.get_call("c1"))
    assert stored is not None
    assert stored.state == "user_ringing"
    assert [e.state for e in stored.events] == [f"s{i}" for i in range(100)]


def test_next_write_after_a_flush_arms_a_new_timer(db: Path) -> None:
    h = started(db, flush_interval=1.0)
    h.store.add_event("c1", CallEvent("a", T0))
    h.clock.advance(1.0)
    assert h.clock.getDelayedCalls() == []
    h.store.add_event("c1", CallEvent("b", T0))
    h.store.add_event("c1", CallEvent("c", T0))
    assert len(h.clock.getDelayedCalls()) == 1
    h.clock.advance(1.0)
    assert h.transactions() == 2
    assert h.executemanys() == [("executemany", "INSERT", 1), ("executemany", "INSERT", 2)]


def test_full_batch_is_flushed_soon_but_never_inside_the_turn(db: Path) -> None:
    h = started(db, max_batch=10, end_flush_interval=0.0)
    for i in range(25):
        h.store.add_event("c1", CallEvent(str(i), T0))
    assert h.transactions() == 0  # a turn's writes are never cut in two ...
    h.clock.advance(0)  # ... but go at the end of the turn, not after flush_interval
    assert h.transactions() == 1
    assert h.executemanys() == [("executemany", "INSERT", 25)]
    assert h.clock.getDelayedCalls() == []


def test_the_end_of_a_call_is_flushed_within_end_flush_interval(db: Path) -> None:
    h = started(db, flush_interval=1.0)
    h.store.save_call(call("live", state="connected"))
    delayed: Any = h.clock.getDelayedCalls()[0]
    assert delayed.getTime() == T0 + 1.0
    h.store.save_call(call("over", state="ended", cause="completed", ended_at=T0))
    h.store.add_event("over", CallEvent("ended", T0))  # same turn: same transaction
    (timer,) = h.clock.getDelayedCalls()  # the one timer, brought forward
    assert cast(Any, timer).getTime() == T0 + 0.005
    h.clock.advance(0.005)
    assert h.transactions() == 1
    assert h.executemanys() == [("executemany", "INSERT", 2), ("executemany", "INSERT", 1)]


def test_flush_writes_at_once(db: Path) -> None:
    h = started(db)
    h.store.save_call(call())
    result(h.store.flush())
    assert h.transactions() == 1
    assert h.clock.getDelayedCalls() == []
    result(h.store.flush())  # nothing pending: no empty transaction
    assert h.transactions() == 1


def test_save_call_stores_values_at_the_time_of_the_call(db: Path) -> None:
    h = started(db)
    record = call(state="calling_user")
    h.store.save_call(record)
    record.state = "connected"  # changed, but not saved again
    stored = result(h.store.get_call("c1"))
    assert stored is not None and stored.state == "calling_user"


def test_a_batch_that_fails_once_is_written_again_row_by_row(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = started(db)
    with caplog.at_level(logging.ERROR, "sipdial.store"):
        h.store.save_call(call())
        h.store.add_event("c1", CallEvent("kept", T0))
        h.connections[-1].fail_next_executemany = True
        h.clock.advance(0.05)
    assert ("execute", "ROLLBACK") in h.log
    assert caplog.records == []  # nothing was lost: nothing to say
    stored = result(h.store.get_call("c1"))
    assert stored is not None and [e.state for e in stored.events] == ["kept"]


def test_a_broken_database_loses_the_batch_logged_and_later_writes_still_work(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = started(db)
    conn = h.connections[-1]
    real_execute = CountingConnection.execute

    def broken(self: CountingConnection, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if sql.lstrip().startswith("INSERT"):
            raise sqlite3.OperationalError("disk I/O error (test)")
        return real_execute(self, sql, parameters)

    with caplog.at_level(logging.ERROR, "sipdial.store"):
        h.store.add_event("c1", CallEvent("lost", T0))
        h.store.add_event("c1", CallEvent("lost too", T0))
        conn.fail_next_executemany = True
        conn.execute = broken.__get__(conn)  # type: ignore[method-assign]
        waiting = h.store.when_committed()
        h.clock.advance(0.05)
        conn.execute = real_execute.__get__(conn)  # type: ignore[method-assign]
    lost = [r for r in caplog.records if r.getMessage() == "store: lost 2 queued writes"]
    assert [r.name for r in lost] == ["sipdial.store"]
    assert lost[0].exc_info is not None  # with the database error's traceback
    with pytest.raises(sqlite3.OperationalError):
        result(waiting)
    h.store.save_call(call())
    h.store.add_event("c1", CallEvent("kept", T0))
    stored = result(h.store.get_call("c1"))
    assert stored is not None and [e.state for e in stored.events] == ["kept"]


# --- reads -----------------------------------------------------------------------------------


def test_reads_see_pending_writes(db: Path) -> None:
    h = started(db)
    h.store.save_call(call("c1"))
    h.store.add_event("c1", CallEvent("calling_user", T0))
    h.store.save_registration(registration())

    stored = result(h.store.get_call("c1"))  # no clock advance: still pending until now
    assert stored is not None and stored.id == "c1"
    assert [e.state for e in stored.events] == ["calling_user"]
    assert h.clock.getDelayedCalls() == []  # the read took the batch; the timer is gone
    assert h.transactions() == 1
    assert [c.id for c in result(h.store.list_calls())] == ["c1"]
    assert result(h.store.load_registrations()) == [registration()]


def test_get_unknown_call(db: Path) -> None:
    assert result(started(db).store.get_call("nope")) is None


def test_events_keep_their_order(db: Path) -> None:
    h = started(db)
    h.store.save_call(call("c1"))
    h.store.save_call(call("c2"))
    # interleaved calls, equal and decreasing times, across several flushes
    h.store.add_event("c1", CallEvent("b", T0 + 5, 180, "Ringing"))
    h.store.add_event("c2", CallEvent("x", T0))
    h.store.add_event("c1", CallEvent("a", T0 + 5))
    h.clock.advance(0.05)
    h.store.add_event("c1", CallEvent("c", T0 + 1, None, "late clock"))
    stored = result(h.store.get_call("c1"))
    assert stored is not None
    assert stored.events == [
        CallEvent("b", T0 + 5, 180, "Ringing"),
        CallEvent("a", T0 + 5),
        CallEvent("c", T0 + 1, None, "late clock"),
    ]


def test_list_calls_newest_first_with_filters(db: Path) -> None:
    h = started(db)
    h.store.save_call(call("old", created_at=T0, user="201"))
    h.store.save_call(call("mid", created_at=T0 + 1, user="202", state="ended", cause="ok"))
    h.store.save_call(call("new", created_at=T0 + 2, user="201", state="ended", cause="ok"))
    h.store.add_event("new", CallEvent("ended", T0 + 3))
    h.store.add_event("old", CallEvent("calling_user", T0))

    def ids(**kw: Any) -> list[str]:
        return [c.id for c in result(h.store.list_calls(**kw))]

    assert ids() == ["new", "mid", "old"]
    assert ids(user="201") == ["new", "old"]
    assert ids(state="ended") == ["new", "mid"]
    assert ids(user="201", state="ended") == ["new"]
    assert ids(user="999") == []
    assert ids(limit=2) == ["new", "mid"]
    calls = {c.id: c for c in result(h.store.list_calls())}
    assert [e.state for e in calls["new"].events] == ["ended"]
    assert [e.state for e in calls["old"].events] == ["calling_user"]
    assert calls["mid"].events == []
    with pytest.raises(ValueError):
        h.store.list_calls(limit=0)


def test_list_calls_missed_since_before(db: Path) -> None:
    h = started(db)
    h.store.save_call(call("rang-out", created_at=T0, state="ended", cause="user_no_answer"))
    h.store.save_call(call("talked", created_at=T0 + 1, state="ended", cause="completed"))
    h.store.save_call(call("in-missed", created_at=T0 + 2, state="ended",
                           cause="caller_cancelled", direction="inbound"))
    h.store.save_call(call("in-answered", created_at=T0 + 3, state="ended",
                           cause="completed", direction="inbound"))
    h.store.add_event("in-answered", CallEvent("connected", T0 + 3.5))
    h.store.save_call(call("live", created_at=T0 + 4, state="user_ringing"))

    def ids(**kw: Any) -> list[str]:
        return [c.id for c in result(h.store.list_calls(**kw))]

    assert ids(missed=True) == ["in-missed", "rang-out"]
    assert ids(since=T0 + 2) == ["live", "in-answered", "in-missed"]
    assert ids(before=T0 + 2) == ["talked", "rang-out"]
    assert ids(since=T0 + 1, before=T0 + 3, missed=True) == ["in-missed"]


def test_a_full_page_ends_on_a_whole_millisecond(db: Path) -> None:
    """Calls sharing the page's last millisecond come with it (the next page asks for
    calls before that millisecond), so paging by the API's times loses none."""
    h = started(db)
    for i, offset in enumerate((0.0, 0.0001, 0.0002, 0.0003, 0.0011, 0.005)):
        h.store.save_call(call(f"c{i}", created_at=T0 + offset))

    def ids(**kw: Any) -> list[str]:
        return [c.id for c in result(h.store.list_calls(**kw))]

    assert ids(limit=1) == ["c5"]
    assert ids(limit=2) == ["c5", "c4"]
    assert ids(limit=3) == ["c5", "c4", "c3", "c2", "c1", "c0"]  # all of T0's millisecond
    assert ids(before=T0 + 0.001, limit=1) == ["c3", "c2", "c1", "c0"]
    assert ids(before=T0, limit=1) == []


def test_list_calls_with_many_calls(db: Path) -> None:
    h = started(db)
    for i in range(1200):  # more than one "IN (...)" chunk of events
        h.store.save_call(call(f"c{i:04}", created_at=T0 + i))
        h.store.add_event(f"c{i:04}", CallEvent("calling_user", T0 + i))
    calls = result(h.store.list_calls(limit=2000))
    assert len(calls) == 1200
    assert calls[0].id == "c1199" and calls[-1].id == "c0000"
    assert all(len(c.events) == 1 for c in calls)


def test_all_call_fields_round_trip(db: Path) -> None:
    h = started(db)
    record = call(
        state="ended",
        cause="completed",
        ended_at=T0 + 42.5,
        device="sip:201@10.0.0.5:5060",
        auto_answer=True,
        mode="bridge",
    )
    h.store.save_call(record)
    assert result(h.store.get_call("c1")) == record


# --- restart ---------------------------------------------------------------------------------


def test_restart_finds_the_calls_in_progress_and_leaves_them_to_the_caller(db: Path) -> None:
    h = started(db)
    h.store.save_call(call("ringing", state="user_ringing", created_at=T0 + 2))
    h.store.add_event("ringing", CallEvent("user_ringing", T0))
    h.store.save_call(call("connected", state="connected"))
    done = call("done", state="ended", cause="completed", ended_at=T0 + 1)
    h.store.save_call(done)
    h.store.add_event("done", CallEvent("ended", T0 + 1, 200))
    result(h.store.stop())

    h2 = Harness(db, now=T0 + 100)
    result(h2.store.start())
    unfinished = result(h2.store.unfinished_calls())
    assert [(c.id, c.state, c.cause) for c in unfinished] == [
        ("connected", "connected", None), ("ringing", "user_ringing", None)]  # oldest first
    assert unfinished[1].events == [CallEvent("user_ringing", T0)]
    # the store changes nothing by itself: ending them (with their call.ended, in one
    # transaction) is the call service's job, so a crash meanwhile loses neither
    kept = result(h2.store.get_call("done"))
    assert kept is not None
    assert (kept.state, kept.cause, kept.ended_at) == ("ended", "completed", T0 + 1)
    result(h2.store.stop())


def test_schema_is_created_once_and_versioned(db: Path) -> None:
    for _ in range(2):
        h = Harness(db)
        result(h.store.start())
        result(h.store.stop())
    conn = sqlite3.connect(db)
    try:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
        assert versions == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        indexes = {
            (table, name)
            for name, table in conn.execute(
                "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'"
            )
        }
        assert ("calls", "calls_user_created") in indexes
        assert ("calls", "calls_state") in indexes
        columns = [row[2] for row in conn.execute("PRAGMA index_info(calls_user_created)")]
        assert columns == ["user_id", "created_at"]
    finally:
        conn.close()


def test_newer_schema_is_refused(db: Path) -> None:
    result(started(db).store.stop())
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    conn.commit()
    conn.close()
    h = Harness(db)
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        result(h.store.start())
    with pytest.raises(StoreError):
        h.store.get_call("c1")


def test_parent_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "sipdial.db"
    h = started(path)
    result(h.store.stop())
    assert path.is_file()


def test_memory_database(tmp_path: Path) -> None:
    h = Harness(Path(":memory:"))
    result(h.store.start())
    h.store.save_call(call())
    assert result(h.store.get_call("c1")) is not None
    result(h.store.stop())


# --- life cycle ------------------------------------------------------------------------------


def test_stop_writes_pending_and_closes(db: Path) -> None:
    h = started(db)
    h.store.save_call(call())
    result(h.store.stop())
    assert h.clock.getDelayedCalls() == []
    assert h.transactions() == 1
    with pytest.raises(StoreError):
        h.store.save_call(call())
    with pytest.raises(StoreError):
        h.store.get_call("c1")
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id FROM calls").fetchall() == [("c1",)]
    conn.close()


def test_writes_before_start_are_kept(db: Path) -> None:
    h = Harness(db)
    h.store.save_call(call())
    assert h.clock.getDelayedCalls() == []  # no timer before the database is open
    with pytest.raises(StoreError):
        h.store.get_call("c1")
    result(h.store.start())
    assert len(h.clock.getDelayedCalls()) == 1
    h.clock.advance(0.05)
    assert result(h.store.get_call("c1")) is not None


def test_start_twice_is_an_error(db: Path) -> None:
    h = started(db)
    with pytest.raises(StoreError):
        h.store.start()


# --- registrations ---------------------------------------------------------------------------


def test_registrations_round_trip_update_and_delete(db: Path) -> None:
    h = started(db)
    desk = registration("sip:201@10.0.0.5:5060")
    mobile = registration("sip:201@10.0.0.9:5062;transport=tcp", instance=None, transport="tcp")
    other = registration("sip:202@10.0.0.6", user="202", user_agent=None, q=0.5)
    for reg in (desk, mobile, other):
        h.store.save_registration(reg)
    h.clock.advance(0.05)

    refreshed = registration("sip:201@10.0.0.5:5060", expires_at=T0 + 7200, cseq=8)
    h.store.save_registration(refreshed)
    h.store.delete_registration("201", mobile.contact)
    gone = registration("sip:202@10.0.0.7", user="202")
    h.store.save_registration(gone)
    h.store.delete_registration("202", gone.contact)  # same batch: the delete wins
    h.store.delete_registration("203", "sip:nobody@nowhere")  # not there: fine
    assert result(h.store.load_registrations()) == [refreshed, other]
    result(h.store.stop())

    h2 = Harness(db)
    result(h2.store.start())
    assert result(h2.store.load_registrations()) == [refreshed, other]


def test_delete_then_save_in_one_batch_keeps_the_binding(db: Path) -> None:
    h = started(db)
    h.store.save_registration(registration())
    h.clock.advance(0.05)
    h.store.delete_registration("201", registration().contact)
    h.store.save_registration(registration(cseq=9))
    assert result(h.store.load_registrations()) == [registration(cseq=9)]


# --- JSON ------------------------------------------------------------------------------------


def test_iso_time() -> None:
    assert iso_time(T0) == "2026-11-21T13:35:55.123Z"
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"


def test_call_to_json() -> None:
    record = call(
        state="ended",
        cause="completed",
        ended_at=T0 + 60.5,
        device="sip:201@10.0.0.5",
        auto_answer=True,
        events=[CallEvent("calling_user", T0), CallEvent("ended", T0 + 60.5, 200, "OK")],
    )
    assert record.to_json() == {
        "id": "c1",
        "user": "201",
        "to": "+4930123",
        "mode": "refer",
        "state": "ended",
        "cause": "completed",
        "created_at": "2026-11-21T13:35:55.123Z",
        "ended_at": "2026-11-21T13:36:55.623Z",
        "device": "sip:201@10.0.0.5",
        "auto_answer": True,
        "metadata": None,
        "direction": "outbound",
        "caller": None,
        "contact": None,
        "events": [
            {
                "state": "calling_user",
                "time": "2026-11-21T13:35:55.123Z",
                "sip_code": None,
                "detail": None,
            },
            {"state": "ended", "time": "2026-11-21T13:36:55.623Z", "sip_code": 200, "detail": "OK"},
        ],
    }
    assert call().to_json()["ended_at"] is None


# --- the real worker thread ------------------------------------------------------------------


class ThreadedClock(Clock):
    """Clock plus ``callFromThread``: the test pumps what worker threads hand back."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue[tuple[Callable[..., object], tuple[object, ...]]] = (
            queue.Queue()
        )

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.from_threads.put((f, args))


def wait(clock: ThreadedClock, d: Deferred[T]) -> T:
    results: list[T | Failure] = []
    d.addBoth(results.append)
    while not results:
        f, args = clock.from_threads.get(timeout=10)
        f(*args)
    value = results[0]
    if isinstance(value, Failure):
        value.raiseException()
    return value


def test_real_worker_thread(db: Path) -> None:
    clock = ThreadedClock()
    clock.advance(T0)
    threads: set[str] = set()

    def connect(path: str) -> sqlite3.Connection:
        threads.add(threading.current_thread().name)
        return sqlite3.connect(path)  # check_same_thread: any other thread would raise

    store = SqliteStore(str(db), clock, connect=connect)
    wait(clock, store.start())
    for i in range(1000):
        store.add_event("c1", CallEvent(str(i), T0 + i))
    store.save_call(call())
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.05)  # the flush goes to the worker thread; the read queues behind it
    stored = wait(clock, store.get_call("c1"))
    assert stored is not None and [e.state for e in stored.events] == [str(i) for i in range(1000)]
    wait(clock, store.stop())
    (name,) = threads
    assert "sipdial-store" in name and name != threading.current_thread().name
    assert name not in {t.name for t in threading.enumerate()}  # the pool is stopped


def test_a_new_call_is_flushed_within_end_flush_interval_too(db: Path) -> None:
    h = started(db, flush_interval=1.0)
    record = call("new")
    record.events.append(CallEvent("calling_user", T0))  # the API answers 201 for it now
    h.store.save_call(record)
    h.clock.advance(0.005)
    assert h.transactions() == 1
    record.events.append(CallEvent("user_ringing", T0))
    h.store.save_call(record)  # a later change waits for flush_interval
    h.clock.advance(0.005)
    assert h.transactions() == 1


def test_metadata_is_kept_with_the_call_and_an_old_database_gets_the_column(
        db: Path) -> None:
    """A CRM's correlation data (issue 10 §6) survives the store, and a version 3 database
    is migrated (calls.metadata added, NULL for the calls it had)."""
    metadata: dict[str, Any] = {"lead": 4711, "crm": "consol", "tags": ["a", "ü"]}
    h = started(db)
    h.store.save_call(call("m1", metadata=metadata))
    h.store.save_call(call("m2"))
    h.clock.advance(1.0)
    stored = result(h.store.get_call("m1"))
    assert stored is not None and stored.metadata == metadata
    assert stored.to_json()["metadata"] == metadata
    result(h.store.stop())
    with sqlite3.connect(db) as conn:  # back to version 3, as an older sipdial left it
        conn.execute("ALTER TABLE calls DROP COLUMN metadata")
        for column in ("direction", "caller", "contact", "sink_url", "sink_token"):
            conn.execute(f"ALTER TABLE calls DROP COLUMN {column}")  # what 5 to 7 added
        conn.execute("ALTER TABLE webhook_outbox DROP COLUMN sink_token")
        conn.execute("DROP TABLE used_links")
        conn.execute(f"UPDATE schema_version SET version = 3 WHERE version = {SCHEMA_VERSION}")
    h = started(db)
    old = result(h.store.get_call("m1"))
    assert old is not None and old.metadata is None and old.state == "calling_user"
    result(h.store.stop())


def test_used_links_are_kept_until_they_expire_and_never_written_twice(db: Path) -> None:
    h = started(db)
    h.store.add_used_link("00aa", T0 + 100)
    h.store.add_used_link("00bb", T0 + 5)
    h.store.add_used_link("00aa", T0 + 100)  # the same link twice: one row, no failed batch
    h.clock.advance(1.0)
    assert sorted(result(h.store.used_links(T0))) == [("00aa", T0 + 100), ("00bb", T0 + 5)]
    result(h.store.stop())
    h = started(db)  # a restart keeps them; the expired go
    assert result(h.store.used_links(T0 + 10)) == [("00aa", T0 + 100)]
    result(h.store.stop())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT nonce FROM used_links").fetchall() == [("00aa",)]
