"""SQLite backend of the store, with batched writes on one worker thread.

The reactor thread never touches the database. Writes (:meth:`SqliteStore.save_call`,
:meth:`~SqliteStore.add_event`, ...) only append to an in-memory batch and, if none is pending
yet, arm ONE ``reactor.callLater(flush_interval)``. When it fires the whole batch is written by
the worker thread in one transaction, one ``executemany`` per statement. Reads run on the same
thread and carry the pending batch with them, so a read always sees every earlier write.

A batch is never cut inside one reactor turn: what one turn writes (a call's end, its event,
its live event and webhook rows) commits together or not at all. A full batch (``max_batch``)
and the start and the end of a call (``save_call`` of a call with one event, or ended) are
flushed after ``end_flush_interval`` (5 ms) instead of ``flush_interval`` (50 ms): they are
durable within milliseconds; those closer together share one transaction (at 1,000
calls/s: ~170 transactions/s instead of 20, ~0.08 ms more CPU per call).

One bad row fails alone. If the batch's transaction fails, it is written again row by row in
one transaction, each row under a SAVEPOINT: a row that SQLite or the encoder refuses (a lone
UTF-16 surrogate, an integer beyond 64 bits, a constraint) is logged and left out, every other
row is committed. Only when every row fails (the database itself is broken) is the batch lost,
and logged with how many writes. :meth:`SqliteStore.when_committed` tells when a write is
durable, with a :class:`~sipdial.store.models.WriteReport` of what was left out.

All SQL lives in the ``_SQL_*`` constants below and is portable to PostgreSQL apart from the
``?`` placeholders: no SQLite-only upsert forms, no reserved words as column names.

Schema versions: 1 = calls, call events, registrations; 2 adds ``events`` (the live events
of :mod:`sipdial.events`, for SSE resume) and ``webhook_outbox`` (webhook deliveries, so a
restart loses none). :data:`_SQL_MIGRATIONS` brings an older database up to date at start.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from sipdial.reactor_types import DelayedCall, TimeReactor, exc_info
from sipdial.store.models import (
    CallEvent,
    CallRecord,
    Metadata,
    OutboxEntry,
    PublishedEvent,
    RegistrationRecord,
    WriteReport,
    iso_time,
)

__all__ = ["RunInThread", "SqliteEventReader", "SqliteStore", "StoreError", "StoreReactor",
           "used_links_in"]

_T = TypeVar("_T")
log = logging.getLogger("sipdial.store")

SCHEMA_VERSION: Final = 7

# --------------------------------------------------------------------------------------------
# SQL: every statement the store runs
# --------------------------------------------------------------------------------------------

_SQL_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS calls (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        target TEXT NOT NULL,
        mode TEXT NOT NULL,
        state TEXT NOT NULL,
        cause TEXT,
        created_at REAL NOT NULL,
        ended_at REAL,
        device TEXT,
        auto_answer INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS calls_user_created ON calls (user_id, created_at)",
    "CREATE INDEX IF NOT EXISTS calls_state ON calls (state)",
    "CREATE INDEX IF NOT EXISTS calls_created ON calls (created_at)",
    # seq: insertion order, which is the order events happened in
    """CREATE TABLE IF NOT EXISTS call_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT NOT NULL,
        state TEXT NOT NULL,
        time REAL NOT NULL,
        sip_code INTEGER,
        detail TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS call_events_call ON call_events (call_id, seq)",
    """CREATE TABLE IF NOT EXISTS registrations (
        user_id TEXT NOT NULL,
        contact TEXT NOT NULL,
        instance TEXT,
        transport TEXT NOT NULL,
        source_host TEXT NOT NULL,
        source_port INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        q REAL NOT NULL,
        user_agent TEXT,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        registered_at REAL NOT NULL,
        PRIMARY KEY (user_id, contact)
    )""",
)
#: statements that bring a database of version ``n - 1`` to version ``n``, by ``n``
_SQL_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    2: (
        # id: assigned by the event hub, one more per event (the SSE id)
        """CREATE TABLE IF NOT EXISTS events (
            id INTEGER PRIMARY KEY,
            call_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            name TEXT NOT NULL,
            payload TEXT NOT NULL,
            time REAL NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS events_user ON events (user_id, id)",
        """CREATE TABLE IF NOT EXISTS webhook_outbox (
            id INTEGER PRIMARY KEY,
            webhook_url TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            call_id TEXT NOT NULL,
            event_name TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at REAL NOT NULL,
            attempts INTEGER NOT NULL,
            next_attempt_at REAL NOT NULL,
            status TEXT NOT NULL,
            last_error TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS webhook_outbox_status ON webhook_outbox (status, id)",
    ),
    # RFC 3327: a binding's Path (its preloaded route set) survives a restart
    3: ("ALTER TABLE registrations ADD COLUMN path TEXT NOT NULL DEFAULT ''",),
    # the CRM's correlation data of a call (issue 10 §6), compact JSON or NULL
    4: ("ALTER TABLE calls ADD COLUMN metadata TEXT",),
    # single-use call links (issue 10 §4): the links used, until they would have expired
    5: ("""CREATE TABLE IF NOT EXISTS used_links (
            nonce TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        )""",),
    # inbound calls (issue 10 §3): who called, and who that is
    6: ("ALTER TABLE calls ADD COLUMN direction TEXT NOT NULL DEFAULT 'outbound'",
        "ALTER TABLE calls ADD COLUMN caller TEXT",
        "ALTER TABLE calls ADD COLUMN contact TEXT"),
    # CAMARA ClickToDial (issue 10 §5): a call's CloudEvents sink, in the same outbox
    7: ("ALTER TABLE calls ADD COLUMN sink_url TEXT",
        "ALTER TABLE calls ADD COLUMN sink_token TEXT",
        "ALTER TABLE webhook_outbox ADD COLUMN sink_token TEXT"),
}
_SQL_GET_VERSION: Final = "SELECT MAX(version) FROM schema_version"
_SQL_SET_VERSION: Final = "INSERT INTO schema_version (version) VALUES (?)"

_CALL_COLUMNS: Final = (
    "id, user_id, target, mode, state, cause, created_at, ended_at, device, auto_answer, "
    "metadata, direction, caller, contact, sink_url, sink_token"
)
_SQL_UPSERT_CALL: Final = f"""
    INSERT INTO calls ({_CALL_COLUMNS})
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        user_id = excluded.user_id, target = excluded.target, mode = excluded.mode,
        state = excluded.state, cause = excluded.cause, created_at = excluded.created_at,
        ended_at = excluded.ended_at, device = excluded.device,
        auto_answer = excluded.auto_answer, metadata = excluded.metadata,
        direction = excluded.direction, caller = excluded.caller, contact = excluded.contact,
        sink_url = excluded.sink_url, sink_token = excluded.sink_token"""
_SQL_INSERT_EVENT: Final = (
    "INSERT INTO call_events (call_id, state, time, sip_code, detail) VALUES (?, ?, ?, ?, ?)"
)
_SQL_GET_CALL: Final = f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = ?"
# the filters are optional: "? IS NULL OR column = ?" keeps it one statement; the user is
# not (the statement per case below): "user_id = ?" lets the index on (user_id, created_at)
# find one user's calls among everyone's
_SQL_CALL_FILTERS: Final = """
    (? IS NULL OR state = ?) AND (? IS NULL OR direction = ?)
        AND created_at >= coalesce(?, -1e300) AND created_at < coalesce(?, 1e300)
        AND (? = 0 OR (state = 'ended' AND (
            (direction = 'outbound' AND cause = 'user_no_answer')
            OR (direction = 'inbound' AND NOT EXISTS (
                SELECT 1 FROM call_events e WHERE e.call_id = calls.id
                    AND e.state = 'connected')))))"""
_SQL_LIST_CALLS: Final = f"""
    SELECT {_CALL_COLUMNS} FROM calls WHERE {{user}} {_SQL_CALL_FILTERS} {{after}}
    ORDER BY created_at DESC, id DESC
    LIMIT ?"""
#: at most this many more calls of a full page's last millisecond (sipdial creates far fewer)
_SAME_MILLISECOND_MAX: Final = 1000
# the rest of a page's last millisecond (the API's times have milliseconds: a page ends on
# a whole millisecond, so "before" that millisecond loses no call that shares it)
_AFTER: Final = "AND created_at >= ? AND (created_at < ? OR (created_at = ? AND id < ?))"
#: by (one user's, the rest of a millisecond): the statement
_SQL_LISTS: Final = {
    (by_user, rest): _SQL_LIST_CALLS.format(user="user_id = ? AND" if by_user else "",
                                            after=_AFTER if rest else "")
    for by_user in (False, True) for rest in (False, True)}
_SQL_EVENTS_OF: Final = (
    "SELECT call_id, state, time, sip_code, detail FROM call_events "
    "WHERE call_id IN ({placeholders}) ORDER BY seq"
)
_SQL_UNFINISHED_CALLS: Final = (
    f"SELECT {_CALL_COLUMNS} FROM calls WHERE state <> 'ended' ORDER BY created_at, id"
)

_REG_COLUMNS: Final = (
    "user_id, contact, instance, transport, source_host, source_port, expires_at, q, "
    "user_agent, call_id, cseq, registered_at, path"
)
_SQL_UPSERT_REGISTRATION: Final = f"""
    INSERT INTO registrations ({_REG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (user_id, contact) DO UPDATE SET
        instance = excluded.instance, transport = excluded.transport,
        source_host = excluded.source_host, source_port = excluded.source_port,
        expires_at = excluded.expires_at, q = excluded.q, user_agent = excluded.user_agent,
        call_id = excluded.call_id, cseq = excluded.cseq,
        registered_at = excluded.registered_at, path = excluded.path"""
_SQL_DELETE_REGISTRATION: Final = "DELETE FROM registrations WHERE user_id = ? AND contact = ?"
_SQL_LOAD_REGISTRATIONS: Final = (
    f"SELECT {_REG_COLUMNS} FROM registrations ORDER BY user_id, registered_at, contact"
)

# never twice (a duplicate key would fail the whole batch): (nonce, expires_at, nonce)
_SQL_INSERT_USED_LINK: Final = (
    "INSERT INTO used_links (nonce, expires_at) SELECT ?, ? "
    "WHERE NOT EXISTS (SELECT 1 FROM used_links WHERE nonce = ?)"
)
_SQL_LOAD_USED_LINKS: Final = "SELECT nonce, expires_at FROM used_links WHERE expires_at > ?"
_SQL_PURGE_USED_LINKS: Final = "DELETE FROM used_links WHERE expires_at <= ?"
_SQL_INSERT_PUBLISHED: Final = (
    "INSERT INTO events (id, call_id, user_id, name, payload, time) VALUES (?, ?, ?, ?, ?, ?)"
)
_SQL_EVENTS_AFTER: Final = """
    SELECT id, call_id, user_id, name, payload, time FROM events
    WHERE id > ? AND (? IS NULL OR user_id = ?)
    ORDER BY id
    LIMIT ?"""
_OUTBOX_COLUMNS: Final = (
    "id, webhook_url, event_id, call_id, event_name, payload, created_at, attempts, "
    "next_attempt_at, status, last_error, sink_token"
)
_SQL_INSERT_OUTBOX: Final = (
    f"INSERT INTO webhook_outbox ({_OUTBOX_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_UPDATE_OUTBOX: Final = """
    UPDATE webhook_outbox SET attempts = ?, next_attempt_at = ?, status = ?, last_error = ?
    WHERE id = ?"""
_SQL_PENDING_OUTBOX: Final = (
    f"SELECT {_OUTBOX_COLUMNS} FROM webhook_outbox WHERE status = 'pending' ORDER BY id"
)
_SQL_LAST_EVENT_ID: Final = "SELECT MAX(id) FROM events"
_SQL_LAST_OUTBOX_ID: Final = "SELECT MAX(id) FROM webhook_outbox"

_IN_CHUNK: Final = 500  # ids per "IN (...)": far below SQLite's variable limit
_ROW_ERRORS_LOGGED: Final = 10  #: rows of one batch logged one by one; the rest are counted
_NOTHING_LOST: Final = WriteReport()


# --------------------------------------------------------------------------------------------
# Injected dependencies
# --------------------------------------------------------------------------------------------


StoreReactor = TimeReactor  # what the store needs of the reactor


class RunInThread(Protocol):
    """Runs ``f`` on the store's single worker thread; the Deferred fires on the reactor."""

    def __call__(self, f: Callable[[], _T], /) -> Deferred[_T]: ...


class StoreError(RuntimeError):
    """The store cannot be used (not started, stopped, or a database newer than this code)."""


# --------------------------------------------------------------------------------------------
# Pending writes
# --------------------------------------------------------------------------------------------

_CallRow = tuple[str, str, str, str, str, str | None, float, float | None, str | None, int,
                 str | None, str, str | None, str | None, str | None, str | None]
_EventRow = tuple[str, str, float, int | None, str | None]
_RegRow = tuple[
    str, str, str | None, str, str, int, float, float, str | None, str, int, float, str
]
_PublishedRow = tuple[int, str, str, str, str, float]
_OutboxRow = tuple[int, str, int, str, str, str, float, int, float, str, str | None, str | None]
_OutboxUpdate = tuple[int, float, str, str | None, int]


@dataclass(frozen=True, slots=True)
class _Step:
    """One statement of a batch with its rows; ``kind`` and ``key`` name a row in the log."""

    kind: str  #: "call", "call event", ...
    sql: str
    rows: Sequence[tuple[Any, ...]]
    key: Callable[[tuple[Any, ...]], object]  #: what identifies a row (its id)


@dataclass(slots=True)
class _Batch:
    """Writes not yet sent to the database, coalesced: only the latest row per key matters."""

    calls: dict[str, _CallRow] = field(default_factory=dict)  #: by call id, latest wins
    events: list[_EventRow] = field(default_factory=list)  #: in order
    #: by (user, contact): the row to upsert, or None to delete
    registrations: dict[tuple[str, str], _RegRow | None] = field(default_factory=dict)
    published: list[_PublishedRow] = field(default_factory=list)  #: live events, in order
    outbox: list[_OutboxRow] = field(default_factory=list)  #: new deliveries, in order
    #: by outbox id, latest wins; written after ``outbox`` so a new row can be updated at once
    outbox_updates: dict[int, _OutboxUpdate] = field(default_factory=dict)
    #: (nonce, expires_at, nonce) for _SQL_INSERT_USED_LINK
    used_links: list[tuple[str, float, str]] = field(default_factory=list)
    #: fired (on the reactor thread) once the batch is committed: see ``when_committed``
    waiters: list[Deferred[WriteReport]] = field(default_factory=list)

    def steps(self) -> list[_Step]:
        """The statements that write the batch, in order, with their rows."""
        upserts = [row for row in self.registrations.values() if row is not None]
        deletes = [key for key, row in self.registrations.items() if row is None]
        steps = [
            _Step("call", _SQL_UPSERT_CALL, list(self.calls.values()), _first),
            _Step("call event", _SQL_INSERT_EVENT, self.events, _first),
            _Step("registration", _SQL_UPSERT_REGISTRATION, upserts, _first_two),
            _Step("registration delete", _SQL_DELETE_REGISTRATION, deletes, _first_two),
            _Step("live event", _SQL_INSERT_PUBLISHED, self.published, _first),
            _Step("webhook delivery", _SQL_INSERT_OUTBOX, self.outbox, _first),
            _Step("webhook delivery update", _SQL_UPDATE_OUTBOX,
                  list(self.outbox_updates.values()), _last),
            _Step("used link", _SQL_INSERT_USED_LINK, self.used_links, _first),
        ]
        return [step for step in steps if step.rows]

    def __len__(self) -> int:
        return (
            len(self.calls)
            + len(self.events)
            + len(self.registrations)
            + len(self.published)
            + len(self.outbox)
            + len(self.outbox_updates)
            + len(self.used_links)
        )


def _first(row: tuple[Any, ...]) -> object:
    return row[0]


def _first_two(row: tuple[Any, ...]) -> object:
    return row[:2]


def _last(row: tuple[Any, ...]) -> object:
    return row[-1]


def _call_row(call: CallRecord) -> _CallRow:
    return (
        call.id,
        call.user,
        call.to,
        call.mode,
        call.state,
        call.cause,
        call.created_at,
        call.ended_at,
        call.device,
        int(call.auto_answer),
        None if call.metadata is None else _metadata_text(call.metadata),
        call.direction,
        call.caller,
        None if call.contact is None else _metadata_text(call.contact),
        call.sink_url,
        call.sink_token,
    )


def _metadata_text(metadata: Mapping[str, object]) -> str:
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)


def _metadata_of(text: str | None) -> Metadata | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _call_from_row(row: Sequence[Any]) -> CallRecord:
    return CallRecord(
        id=row[0],
        user=row[1],
        to=row[2],
        mode=row[3],
        state=row[4],
        cause=row[5],
        created_at=row[6],
        ended_at=row[7],
        device=row[8],
        auto_answer=bool(row[9]),
        metadata=_metadata_of(row[10]),
        direction=row[11],
        caller=row[12],
        contact=_contact_of(row[13]),
        sink_url=row[14],
        sink_token=row[15],
    )


def _contact_of(text: str | None) -> dict[str, str] | None:
    value = _metadata_of(text)
    return None if value is None else {str(k): str(v) for k, v in value.items()}


def _registration_row(reg: RegistrationRecord) -> _RegRow:
    return (
        reg.user,
        reg.contact,
        reg.instance,
        reg.transport,
        reg.source_host,
        reg.source_port,
        reg.expires_at,
        reg.q,
        reg.user_agent,
        reg.call_id,
        reg.cseq,
        reg.registered_at,
        reg.path,
    )


def _registration_from_row(row: Sequence[Any]) -> RegistrationRecord:
    return RegistrationRecord(*row)


def _outbox_row(entry: OutboxEntry) -> _OutboxRow:
    return (
        entry.id,
        entry.webhook_url,
        entry.event_id,
        entry.call_id,
        entry.event_name,
        entry.payload,
        entry.created_at,
        entry.attempts,
        entry.next_attempt_at,
        entry.status,
        entry.last_error,
        entry.sink_token,
    )


def _outbox_from_row(row: Sequence[Any]) -> OutboxEntry:
    return OutboxEntry(*row)


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class SqliteStore:
    """Call log, registrations, live events and the webhook outbox in one SQLite file.

    ``reactor`` provides ``callLater``/``seconds`` (``IReactorTime``) and, unless
    ``run_in_thread`` is given, ``callFromThread`` (``IReactorFromThreads``) for the default
    one-thread :class:`ThreadPool`. ``run_in_thread`` replaces that pool (tests pass a
    synchronous one). ``connect`` opens the database (tests wrap it to count statements).
    A batch reaching ``max_batch`` writes, or holding the end of a call, is flushed after
    ``end_flush_interval`` (5 ms; never split inside a reactor turn) instead of
    ``flush_interval``.
    """

    def __init__(
        self,
        path: str,
        reactor: StoreReactor,
        flush_interval: float = 0.05,
        *,
        max_batch: int = 10_000,
        end_flush_interval: float = 0.005,
        run_in_thread: RunInThread | None = None,
        connect: Callable[[str], sqlite3.Connection] = sqlite3.connect,
    ) -> None:
        if flush_interval < 0 or end_flush_interval < 0:
            raise ValueError("flush_interval and end_flush_interval must be >= 0, got "
                             f"{flush_interval} and {end_flush_interval}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._path = path
        self._reactor = reactor
        self._flush_interval = flush_interval
        self._end_flush_interval = min(end_flush_interval, flush_interval)
        self._max_batch = max_batch
        self._connect = connect
        self._pool: ThreadPool | None = None
        if run_in_thread is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="sipdial-store")
            pool = self._pool
            from_threads = cast(IReactorFromThreads, reactor)

            def run_in_pool(f: Callable[[], _T]) -> Deferred[_T]:
                return deferToThreadPool(from_threads, pool, f)

            run_in_thread = run_in_pool
        self._run = run_in_thread
        self._pending = _Batch()
        self._flush_call: DelayedCall | None = None
        self._flush_at = 0.0  #: when ``_flush_call`` fires
        self._state = "new"  # -> "running" -> "stopped"
        self._conn: sqlite3.Connection | None = None  # used only on the worker thread

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Open the database, create the schema or bring it up to date.

        Calls a crash left running are still in progress in the database: read them with
        :meth:`unfinished_calls` and end them (``CallService.end_interrupted``) together with
        their ``call.ended``, so that the end and its event commit in one transaction.
        """
        if self._state != "new":
            raise StoreError(f"cannot start a store that is {self._state}")
        self._state = "running"
        if self._pool is not None:
            self._pool.start()
        d = self._run(self._open)

        def failed(failure: Failure) -> Failure:
            self._state = "stopped"
            for waiter in self._take_pending().waiters:  # nowhere to write it
                waiter.errback(failure)
            if self._pool is not None:
                self._pool.stop()
            return failure

        d.addErrback(failed)
        if self._pending or self._pending.waiters:
            self._schedule_flush()
        return d

    def stop(self) -> Deferred[None]:
        """Write everything pending, close the database and stop the worker thread."""
        if self._state != "running":
            raise StoreError(f"cannot stop a store that is {self._state}")
        batch = self._take_pending()
        self._state = "stopped"
        self._submit_logged(batch)
        d = self._run(self._close)

        def stop_pool(result: object) -> object:
            if self._pool is not None:
                self._pool.stop()
            return result

        d.addBoth(stop_pool)
        return d.addCallback(lambda _: None)

    # --- writes (queued) ----------------------------------------------------------------------

    def save_call(self, call: CallRecord) -> None:
        """Insert or update the call's row (not its events) with its current values.

        The row of a new call (one event so far) or an ended one is flushed after
        ``end_flush_interval`` (with whatever else was written meanwhile: its event, its live
        events), not after ``flush_interval``: the API has just answered 201 for the one, a
        CRM will be told of the other.
        """
        self._check_writable()
        self._pending.calls[call.id] = _call_row(call)
        if (call.ended_at is not None or len(call.events) == 1) and self._state == "running":
            self._schedule_flush(self._end_flush_interval)
        self._queued()

    def add_event(self, call_id: str, event: CallEvent) -> None:
        """Append an event to the call's history; events keep the order they are added in."""
        self._check_writable()
        self._pending.events.append(
            (call_id, event.state, event.time, event.sip_code, event.detail)
        )
        self._queued()

    def save_registration(self, reg: RegistrationRecord) -> None:
        """Insert or update the binding of ``reg.contact`` for ``reg.user``."""
        self._check_writable()
        self._pending.registrations[(reg.user, reg.contact)] = _registration_row(reg)
        self._queued()

    def delete_registration(self, user: str, contact: str) -> None:
        """Forget the binding of ``contact`` for ``user`` (no error if there is none)."""
        self._check_writable()
        self._pending.registrations[(user, contact)] = None
        self._queued()

    def add_used_link(self, nonce: str, expires_at: float) -> None:
        """A single-use link was used (kept until it would have expired)."""
        self._check_writable()
        self._pending.used_links.append((nonce, expires_at, nonce))
        self._queued()

    def used_links(self, now: float) -> Deferred[list[tuple[str, float]]]:
        """The links used that have not expired (``(nonce, expires_at)``); the expired are
        deleted."""
        self._check_running()
        self._submit_logged(self._take_pending())

        def read() -> list[tuple[str, float]]:
            conn = self._connection()
            with _transaction(conn):
                conn.execute(_SQL_PURGE_USED_LINKS, (now,))
            return [(str(n), float(e))
                    for n, e in conn.execute(_SQL_LOAD_USED_LINKS, (now,)).fetchall()]

        return self._run(read)

    def add_published_event(self, event: PublishedEvent) -> None:
        """Append a live event (for SSE resume); ``event.id`` must be new and increasing."""
        self._check_writable()
        self._pending.published.append(
            (event.id, event.call_id, event.user, event.name, event.payload, event.time)
        )
        self._queued()

    def add_outbox_entry(self, entry: OutboxEntry) -> None:
        """Insert a webhook delivery with its current values; ``entry.id`` must be new."""
        self._check_writable()
        self._pending.outbox.append(_outbox_row(entry))
        self._queued()

    def update_outbox_entry(self, entry: OutboxEntry) -> None:
        """Write the delivery's ``attempts``, ``next_attempt_at``, ``status``, ``last_error``."""
        self._check_writable()
        self._pending.outbox_updates[entry.id] = (
            entry.attempts,
            entry.next_attempt_at,
            entry.status,
            entry.last_error,
            entry.id,
        )
        self._queued()

    def flush(self) -> Deferred[None]:
        """Write everything queued so far; fires once it is committed."""
        self._check_running()
        return self._submit(self._take_pending()).addCallback(lambda _: None)

    def when_committed(self) -> Deferred[WriteReport]:
        """Fires, on the reactor thread, once every write queued so far is committed.

        Its :class:`WriteReport` names the live events and webhook deliveries that were left
        out (their rows failed alone, logged); the Deferred fails only if the whole batch was
        lost. Costs no extra transaction: it rides on the next flush.
        """
        self._check_writable()
        waiter: Deferred[WriteReport] = Deferred()
        self._pending.waiters.append(waiter)
        if self._state == "running":
            self._schedule_flush()
        return waiter

    # --- reads (see every earlier write) ------------------------------------------------------

    def get_call(self, call_id: str) -> Deferred[CallRecord | None]:
        """The call with its events in order, or None."""
        self._check_running()
        self._submit_logged(self._take_pending())

        def read() -> CallRecord | None:
            conn = self._connection()
            row = conn.execute(_SQL_GET_CALL, (call_id,)).fetchone()
            if row is None:
                return None
            call = _call_from_row(row)
            self._attach_events(conn, [call])
            return call

        return self._run(read)

    def list_calls(
        self, *, user: str | None = None, state: str | None = None, limit: int = 50,
        direction: str | None = None, missed: bool = False, since: float | None = None,
        before: float | None = None,
    ) -> Deferred[list[CallRecord]]:
        """Calls newest first (by ``created_at``), optionally of one user / in one state /
        in one direction / missed only (:func:`sipdial.events.names.is_missed`) / created
        at or after ``since`` / before ``before`` (unix times).

        A full page (``limit`` calls) is completed with the other calls of its last call's
        millisecond (so it can hold a few more than ``limit``): the API shows times in
        milliseconds, and the next page asks for calls ``before`` that millisecond."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._check_running()
        self._submit_logged(self._take_pending())
        # (since/before as a range on created_at: the index bounds the scan)
        filters = (*(() if user is None else (user,)), state, state, direction, direction,
                   since, before, 1 if missed else 0)
        first, rest_of = _SQL_LISTS[user is not None, False], _SQL_LISTS[user is not None, True]

        def read() -> list[CallRecord]:
            conn = self._connection()
            rows = conn.execute(first, (*filters, limit)).fetchall()
            calls = [_call_from_row(row) for row in rows]
            if len(calls) == limit:
                last = calls[-1]
                shown = iso_time(last.created_at)
                # a millisecond earlier is surely another millisecond: read it and drop it
                rest = conn.execute(rest_of, (
                    *filters, last.created_at - 0.002, last.created_at, last.created_at,
                    last.id, _SAME_MILLISECOND_MAX)).fetchall()
                calls.extend(c for c in map(_call_from_row, rest)
                             if iso_time(c.created_at) == shown)
            self._attach_events(conn, calls)
            return calls

        return self._run(read)

    def events_after(
        self, after: int, *, user: str | None = None, limit: int = 500
    ) -> Deferred[list[PublishedEvent]]:
        """Live events with ``id > after`` in id order, optionally of one user's calls."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._check_running()
        self._submit_logged(self._take_pending())

        def read() -> list[PublishedEvent]:
            rows = self._connection().execute(_SQL_EVENTS_AFTER, (after, user, user, limit))
            return [PublishedEvent(*row) for row in rows.fetchall()]

        return self._run(read)

    def pending_outbox(self) -> Deferred[list[OutboxEntry]]:
        """Every webhook delivery still ``"pending"``, in id order (to resume at start)."""
        self._check_running()
        self._submit_logged(self._take_pending())

        def read() -> list[OutboxEntry]:
            rows = self._connection().execute(_SQL_PENDING_OUTBOX).fetchall()
            return [_outbox_from_row(row) for row in rows]

        return self._run(read)

    def last_published_ids(self) -> Deferred[tuple[int, int]]:
        """The highest live event id and outbox id used so far (0 when there are none)."""
        self._check_running()
        self._submit_logged(self._take_pending())

        def read() -> tuple[int, int]:
            conn = self._connection()
            (event_id,) = conn.execute(_SQL_LAST_EVENT_ID).fetchone()
            (outbox_id,) = conn.execute(_SQL_LAST_OUTBOX_ID).fetchone()
            return (event_id or 0, outbox_id or 0)

        return self._run(read)

    def load_registrations(self) -> Deferred[list[RegistrationRecord]]:
        """Every stored binding (expired ones too: the registrar decides)."""
        self._check_running()
        self._submit_logged(self._take_pending())

        def read() -> list[RegistrationRecord]:
            rows = self._connection().execute(_SQL_LOAD_REGISTRATIONS).fetchall()
            return [_registration_from_row(row) for row in rows]

        return self._run(read)

    def unfinished_calls(self) -> Deferred[list[CallRecord]]:
        """Calls not ``"ended"``, oldest first, with their events: at start, the calls a
        crash cut off (the caller ends them as ``interrupted``)."""
        self._check_running()
        self._submit_logged(self._take_pending())

        def read() -> list[CallRecord]:
            conn = self._connection()
            calls = [_call_from_row(row) for row in conn.execute(_SQL_UNFINISHED_CALLS)]
            self._attach_events(conn, calls)
            return calls

        return self._run(read)

    # --- reactor-thread helpers -----------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._state == "stopped":
            raise StoreError("store is stopped")

    def _check_running(self) -> None:
        if self._state != "running":
            raise StoreError(f"store is {self._state}, not running")

    def _queued(self) -> None:
        if self._state != "running":
            return  # start() schedules the flush
        if len(self._pending) >= self._max_batch:
            # at the end of this turn, not now: a turn's writes are never split
            self._schedule_flush(self._end_flush_interval)
        else:
            self._schedule_flush()

    def _schedule_flush(self, delay: float | None = None) -> None:
        """Arm the ONE flush timer ``delay`` (default ``flush_interval``) from now, unless it
        is armed to fire sooner already."""
        if self._flush_call is not None and delay is None:
            return  # armed with at most flush_interval: never later than a new one
        if delay is None:
            delay = self._flush_interval
        at = self._reactor.seconds() + delay
        if self._flush_call is not None:
            if self._flush_at <= at:
                return
            self._flush_call.cancel()
        self._flush_call = cast(DelayedCall, self._reactor.callLater(delay, self._flush))
        self._flush_at = at

    def _take_pending(self) -> _Batch:
        """The pending batch, now owned by the caller; cancels the scheduled flush."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, self._pending = self._pending, _Batch()
        return batch

    def _flush(self) -> None:
        self._flush_call = None
        self._submit_logged(self._take_pending())

    def _submit(self, batch: _Batch) -> Deferred[WriteReport]:
        """Write ``batch`` on the worker thread (behind the batches before it), then fire its
        waiters with the report (or the failure)."""
        waiters = batch.waiters
        if not batch and not waiters:
            return succeed(_NOTHING_LOST)
        d = self._run(lambda: self._write(batch))
        if waiters:
            d.addBoth(_notify, waiters)
        return d

    def _submit_logged(self, batch: _Batch) -> None:
        """:meth:`_submit`, with a lost batch logged (nobody waits for the outcome)."""
        if batch or batch.waiters:
            self._submit(batch).addErrback(self._flush_failed, len(batch))

    def _flush_failed(self, failure: Failure, size: int) -> None:
        log.error("store: lost %d queued writes", size, exc_info=exc_info(failure))

    # --- worker-thread side -----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store database is not open")
        return self._conn

    def _open(self) -> None:
        if self._path != ":memory:" and not self._path.startswith("file:"):
            parent = os.path.dirname(os.path.abspath(self._path))
            os.makedirs(parent, exist_ok=True)
        conn = self._connect(self._path)
        conn.isolation_level = None  # explicit BEGIN/COMMIT below
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with _transaction(conn):
                self._create_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        for statement in _SQL_SCHEMA:
            conn.execute(statement)
        (version,) = conn.execute(_SQL_GET_VERSION).fetchone()
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {version} is newer than this sipdial "
                f"(supports {SCHEMA_VERSION})"
            )
        # a new database gets the version 1 tables above, then every migration
        current = 1 if version is None else version
        for target in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _SQL_MIGRATIONS[target]:
                conn.execute(statement)
        if version != SCHEMA_VERSION:
            conn.execute(_SQL_SET_VERSION, (SCHEMA_VERSION,))

    def _write(self, batch: _Batch) -> WriteReport:
        if not batch:
            return _NOTHING_LOST
        conn = self._connection()
        steps = batch.steps()
        try:
            with _transaction(conn):
                for step in steps:
                    conn.executemany(step.sql, step.rows)
        except Exception as exc:  # one bad row fails the executemany: find it, keep the rest
            return self._write_row_by_row(conn, steps, exc)
        return _NOTHING_LOST

    @staticmethod
    def _write_row_by_row(
        conn: sqlite3.Connection, steps: list[_Step], first: Exception
    ) -> WriteReport:
        """Write every row under its own SAVEPOINT in one transaction; leave out (and log) the
        rows that fail. Raises ``first`` when every row fails: the database is broken, not a
        row, and the batch is lost."""
        failed: list[tuple[_Step, tuple[Any, ...], Exception]] = []
        total = 0
        with _transaction(conn):
            for step in steps:
                for row in step.rows:
                    total += 1
                    conn.execute("SAVEPOINT one_row")
                    try:
                        conn.execute(step.sql, row)
                    except Exception as exc:
                        if not conn.in_transaction:  # SQLite rolled it all back itself
                            raise
                        conn.execute("ROLLBACK TO one_row")
                        failed.append((step, row, exc))
                    conn.execute("RELEASE one_row")
            if len(failed) == total and total > 1:
                raise first
        for step, row, error in failed[:_ROW_ERRORS_LOGGED]:
            log.error("store: could not write %s %r, left it out (the other %d writes of "
                      "its batch are kept): %s: %s", step.kind, step.key(row),
                      total - len(failed), type(error).__name__, error)
        if len(failed) > _ROW_ERRORS_LOGGED:
            log.error("store: left out %d more writes of the same batch",
                      len(failed) - _ROW_ERRORS_LOGGED)
        events = frozenset(cast(int, row[0]) for step, row, _ in failed
                           if step.sql is _SQL_INSERT_PUBLISHED)
        outbox = frozenset(cast(int, row[0]) for step, row, _ in failed
                           if step.sql is _SQL_INSERT_OUTBOX)
        return WriteReport(len(failed), events, outbox)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _attach_events(conn: sqlite3.Connection, calls: list[CallRecord]) -> None:
        by_id = {call.id: call for call in calls}
        ids = list(by_id)
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            sql = _SQL_EVENTS_OF.format(placeholders=", ".join("?" * len(chunk)))
            for call_id, state, time, sip_code, detail in conn.execute(sql, chunk):
                by_id[call_id].events.append(CallEvent(state, time, sip_code, detail))


def _notify(outcome: WriteReport | Failure,
            waiters: list[Deferred[WriteReport]]) -> WriteReport | Failure:
    """Hand a batch's outcome to everyone waiting for it."""
    for waiter in waiters:
        if isinstance(outcome, Failure):
            waiter.errback(outcome)
        else:
            waiter.callback(outcome)
    return outcome


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN ... COMMIT, or ROLLBACK if the block raises."""
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # (SQLite may have rolled back already: SQLITE_FULL, ...)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def used_links_in(path: str, now: float) -> list[tuple[str, float]]:
    """The unexpired used links of another worker's file, read once (read-only, blocking:
    at start); an older file without the table, or an unreadable one: none."""
    try:
        uri = Path(path).resolve().as_uri() + "?mode=ro"  # ?, # and % quoted
        conn = sqlite3.connect(uri, uri=True, timeout=5)
        try:
            rows = conn.execute(_SQL_LOAD_USED_LINKS, (now,)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    return [(str(n), float(e)) for n, e in rows]


class SqliteEventReader:
    """Read-only access to the live events another process writes (``serve --workers``:
    another worker's file). Each read opens its own read-only connection on the reactor's
    thread pool (WAL: it never waits for the writer); reads are rare (an SSE client
    resuming, a worker restarting)."""

    def __init__(self, path: str, reactor: Any) -> None:
        self._path = path
        self._reactor = reactor

    def _read(self, sql: str, args: tuple[object, ...]) -> Deferred[list[tuple[Any, ...]]]:
        from twisted.internet.threads import deferToThreadPool

        def read() -> list[tuple[Any, ...]]:
            if not os.path.exists(self._path):
                return []  # that worker has not written anything yet
            uri = Path(self._path).resolve().as_uri() + "?mode=ro"  # ?, # and % quoted
            conn = sqlite3.connect(uri, uri=True, timeout=5)
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
            finally:
                conn.close()

        d: Deferred[list[tuple[Any, ...]]] = deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), read)
        return d

    def events_after(self, after: int, *, user: str | None = None,
                     limit: int = 500) -> Deferred[list[PublishedEvent]]:
        """Events with ``id > after`` in id order, optionally of one user's calls."""
        d = self._read(_SQL_EVENTS_AFTER, (after, user, user, limit))
        return d.addCallback(lambda rows: [PublishedEvent(*row) for row in rows])

    def last_event_id(self) -> Deferred[int]:
        d = self._read(_SQL_LAST_EVENT_ID, ())
        return d.addCallback(lambda rows: int(rows[0][0] or 0) if rows else 0)
