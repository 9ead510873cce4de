"""sipdial.store: schema version 2 (live events and the webhook outbox) and its migration;
recovery of the calls a crash cut off."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from sipdial.app import build_core
from sipdial.config import WebhookConfig
from sipdial.events import EventHub
from sipdial.store.models import CallRecord, OutboxEntry, PublishedEvent
from sipdial.store.sqlite import _SQL_SCHEMA, SCHEMA_VERSION, SqliteStore
from tests.unit.deferreds import result, run_now
from tests.unit.simnet import make_config

T = TypeVar("T")
T0 = 1_763_732_155.0






def started(db: Path) -> tuple[SqliteStore, Clock]:
    clock = Clock()
    clock.advance(T0)
    store = SqliteStore(str(db), clock, run_in_thread=run_now)
    result(store.start())
    return store, clock


def published(event_id: int, user: str = "201") -> PublishedEvent:
    return PublishedEvent(event_id, f"c{event_id}", user, "call.dialing", f'{{"id":{event_id}}}',
                          T0 + event_id)


def outbox(entry_id: int, event_id: int = 1, **changes: object) -> OutboxEntry:
    return OutboxEntry(entry_id, "http://crm.example/hook", event_id, "c1", "call.dialing",
                       "{}", T0, **changes)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sipdial.db"


def test_version_1_database_is_migrated_and_keeps_its_data(db: Path) -> None:
    conn = sqlite3.connect(db)
    for statement in _SQL_SCHEMA:  # exactly what version 1 created
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.execute("INSERT INTO calls VALUES ('old', '201', '+49', 'refer', 'ended', 'completed',"
                 f" {T0}, {T0 + 1}, NULL, 0)")
    conn.commit()
    conn.close()

    store, _clock = started(db)
    call = result(store.get_call("old"))
    assert call is not None and call.cause == "completed"
    store.add_published_event(published(1))
    assert result(store.events_after(0)) == [published(1)]
    result(store.stop())

    conn = sqlite3.connect(db)
    try:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(1,), (SCHEMA_VERSION,)]
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"events", "webhook_outbox"} <= tables
    finally:
        conn.close()


def test_a_new_database_starts_at_the_current_version_once(db: Path) -> None:
    for _ in range(2):
        store, _clock = started(db)
        result(store.stop())
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_events_after_filters_by_id_and_user_in_order(db: Path) -> None:
    store, _clock = started(db)
    for event_id, user in ((1, "201"), (2, "202"), (3, "201"), (4, "201")):
        store.add_published_event(published(event_id, user))
    assert [e.id for e in result(store.events_after(0))] == [1, 2, 3, 4]
    assert [e.id for e in result(store.events_after(1, user="201"))] == [3, 4]
    assert [e.id for e in result(store.events_after(0, user="201", limit=2))] == [1, 3]
    assert result(store.events_after(4)) == []
    with pytest.raises(ValueError):
        store.events_after(0, limit=0)


def test_last_ids_are_zero_for_an_empty_database(db: Path) -> None:
    store, _clock = started(db)
    assert result(store.last_published_ids()) == (0, 0)
    store.add_published_event(published(7))
    store.add_outbox_entry(outbox(3, 7))
    assert result(store.last_published_ids()) == (7, 3)


def test_outbox_insert_and_update_in_one_batch_and_pending_only(db: Path) -> None:
    store, _clock = started(db)
    first, second = outbox(1), outbox(2)
    store.add_outbox_entry(first)
    store.add_outbox_entry(second)
    first.attempts, first.status = 1, "done"
    store.update_outbox_entry(first)  # same batch as its insert
    second.attempts, second.last_error, second.next_attempt_at = 1, "HTTP 500", T0 + 1
    store.update_outbox_entry(second)
    second.attempts = 2
    store.update_outbox_entry(second)  # latest wins
    assert result(store.pending_outbox()) == [outbox(2, attempts=2, last_error="HTTP 500",
                                                     next_attempt_at=T0 + 1)]
    result(store.stop())
    store2, _ = started(db)
    (row,) = result(store2.pending_outbox())
    assert (row.id, row.attempts, row.status) == (2, 2, "pending")


def test_event_and_outbox_writes_wait_for_the_batch(db: Path) -> None:
    store, clock = started(db)
    for i in range(1, 4):
        store.add_published_event(published(i))
        store.add_outbox_entry(outbox(i, i))

    def count() -> tuple[int, int]:
        conn = sqlite3.connect(db)
        try:
            (events,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
            (rows,) = conn.execute("SELECT COUNT(*) FROM webhook_outbox").fetchone()
            return events, rows
        finally:
            conn.close()

    assert count() == (0, 0)
    clock.advance(0.05)  # the store's flush interval: one transaction for all six
    assert count() == (3, 3)


# --- recovery after a crash (issue 7 §3) ------------------------------------------------------


class _NoPoster:
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[int]:
        return Deferred()  # never answered: the rows stay pending

    def close(self) -> Deferred[None]:
        return succeed(None)


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_crash_during_recovery_neither_loses_nor_doubles_call_ended(db: Path) -> None:
    store, _clock = started(db)
    store.save_call(CallRecord("live", "201", "+4930123", "refer", "connected", None, T0, None))
    store.save_call(CallRecord("done", "201", "+4930123", "refer", "ended", "completed", T0,
                               T0 + 1))
    result(store.flush())  # and then sipdial is killed: nothing is stopped

    for crash_before_the_flush in (True, False):
        store, clock = started(db)
        unfinished = result(store.unfinished_calls())
        assert [c.id for c in unfinished] == ["live"]  # "done" keeps its cause
        hub = EventHub(store, clock, (WebhookConfig("http://crm.example/hook", "k"),),
                       poster=_NoPoster())
        result(hub.start())
        core = build_core(make_config(), clock=clock.seconds, store=store, events=hub,
                          secret=b"s" * 32, rtp_sinks={4: ("127.0.0.1", 40000)})
        assert core.calls.end_interrupted(unfinished) == 1
        if crash_before_the_flush:  # the end, its event and its call.ended are lost together
            store._take_pending()
            assert _rows(db, "SELECT state FROM calls WHERE id = 'live'") == [("connected",)]
            assert _rows(db, "SELECT COUNT(*) FROM events") == [(0,)]
            continue
        clock.advance(0.005)  # the end of a call is flushed within 5 ms

    assert _rows(db, "SELECT id, state, cause FROM calls ORDER BY id") == [
        ("done", "ended", "completed"), ("live", "ended", "interrupted")]
    ended = _rows(db, "SELECT call_id, name, payload FROM events")
    assert [(call_id, name) for call_id, name, _ in ended] == [("live", "call.ended")]
    document = json.loads(str(ended[0][2]))
    assert (document["cause"], document["detail"]) == ("interrupted", "sipdial restarted")
    assert _rows(db, "SELECT call_id, event_name FROM webhook_outbox") == [
        ("live", "call.ended")]
    assert _rows(db, "SELECT state, detail FROM call_events WHERE call_id = 'live'") == [
        ("ended", "sipdial restarted")]
    store, _clock = started(db)
    assert result(store.unfinished_calls()) == []
