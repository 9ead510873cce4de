"""The users' phonebooks (issue 11): contacts with one or more numbers, kept in one SQLite
file beside the store that every worker opens (WAL; a write waits for another at most 5 s),
so an edit at one worker is what every other reads. Each operation opens its own
connection on the reactor's thread pool: phonebook edits and lookups are rare next to calls.

A contact belongs to a user, or to everyone (owner ``"*"``, an administrator's). Numbers are
stored as typed and, for lookups, as E.164 keys (``sipdial.contacts.number_key``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

__all__ = ["ContactBook", "ContactEntry", "contact_book_path"]

_T = TypeVar("_T")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS contacts (
        id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        numbers TEXT NOT NULL,
        keys TEXT NOT NULL,
        url TEXT,
        updated REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS contacts_owner ON contacts (owner, name)",
    # each number's E.164 key: an incoming call's caller is found by index, not by a scan
    """CREATE TABLE IF NOT EXISTS contact_numbers (
        key TEXT NOT NULL,
        contact_id INTEGER NOT NULL,
        owner TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS contact_numbers_key ON contact_numbers (key, owner)",
    "CREATE INDEX IF NOT EXISTS contact_numbers_contact ON contact_numbers (contact_id)",
)
#: PRAGMA user_version once contact_numbers holds every contact's keys
_NUMBERS_INDEXED: Final = 1
_COLUMNS: Final = "id, owner, name, numbers, url"
MAX_CONTACTS: Final = 100_000  #: per owner


@dataclass(frozen=True, slots=True)
class ContactEntry:
    id: int
    owner: str  #: a user id, or "*" (everyone's)
    name: str
    numbers: tuple[str, ...]
    url: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "owner": self.owner, "name": self.name,
                "numbers": list(self.numbers), "url": self.url}


def contact_book_path(store_path: str) -> str:
    """The phonebook file beside the store (``calls.db`` -> ``calls.contacts.db``)."""
    if store_path == ":memory:":
        return ":memory:"
    if store_path.startswith("file:"):  # a URI: its path part
        store_path = store_path[5:].partition("?")[0]
    root = store_path[:-3] if store_path.endswith(".db") else store_path
    return f"{root}.contacts.db"


def _entry(row: Sequence[Any]) -> ContactEntry:
    numbers = json.loads(row[3])
    return ContactEntry(int(row[0]), str(row[1]), str(row[2]),
                        tuple(str(n) for n in numbers), row[4])


def _keys(keys: Sequence[str]) -> str:
    return " " + " ".join(keys) + " "


def _index(conn: sqlite3.Connection, contact_id: int, owner: str, keys: Sequence[str]) -> None:
    conn.executemany("INSERT INTO contact_numbers (key, contact_id, owner) VALUES (?, ?, ?)",
                     [(key, contact_id, owner) for key in dict.fromkeys(keys)])


class ContactBook:
    def __init__(self, path: str, reactor: Any, clock: Callable[[], float]) -> None:
        self._path = path
        self._reactor = reactor
        self._clock = clock
        self._memory: sqlite3.Connection | None = None  # ":memory:": one shared connection
        self._lock = threading.Lock()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        if self._path == ":memory:":  # (callers hold self._lock around its use)
            if self._memory is None:
                self._memory = sqlite3.connect(":memory:", check_same_thread=False)
                for statement in _SCHEMA:
                    self._memory.execute(statement)
                self._memory.execute(f"PRAGMA user_version = {_NUMBERS_INDEXED}")
            return self._memory
        conn = sqlite3.connect(self._path, timeout=5)
        conn.execute("PRAGMA journal_mode=WAL")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < _NUMBERS_INDEXED:
            # a new book, or one of an earlier sipdial: its numbers into the index, once —
            # by the first worker to take the write lock (the others then find it done)
            conn.execute("BEGIN IMMEDIATE")
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                if version < _NUMBERS_INDEXED:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute("DELETE FROM contact_numbers")
                    for contact_id, owner, keys in conn.execute(
                            "SELECT id, owner, keys FROM contacts").fetchall():
                        _index(conn, contact_id, owner, keys.split())
                    conn.execute(f"PRAGMA user_version = {_NUMBERS_INDEXED}")
                conn.commit()
            except BaseException:
                conn.rollback()
                conn.close()
                raise
        return conn

    def _do(self, work: Callable[[sqlite3.Connection], _T]) -> Deferred[_T]:
        def run() -> _T:
            if self._path == ":memory:":  # one connection: one thread at a time
                with self._lock:
                    conn = self._connect()
                    with conn:
                        return work(conn)
            conn = self._connect()
            try:
                with conn:
                    return work(conn)
            finally:
                conn.close()

        d: Deferred[_T] = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), run)
        return d

    def search(self, owner: str | None, query: str = "", limit: int = 50,
             offset: int = 0) -> Deferred[list[ContactEntry]]:
        """``owner``'s and everyone's contacts (None: all), by name; ``query`` in the name or
        a number."""
        like = "%" + query.replace("%", "").replace("_", "") + "%"

        def work(conn: sqlite3.Connection) -> list[ContactEntry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM contacts WHERE (? IS NULL OR owner IN (?, '*')) "
                "AND (name LIKE ? OR numbers LIKE ? OR keys LIKE ?) "
                "ORDER BY name COLLATE NOCASE, id LIMIT ? OFFSET ?",
                (owner, owner, like, like, like, limit, offset)).fetchall()
            return [_entry(r) for r in rows]

        return self._do(work)

    def add(self, owner: str, entries: Sequence[tuple[str, Sequence[str], Sequence[str],
                                                      str | None]]) -> Deferred[list[int]]:
        """Add (name, numbers, their E.164 keys, url) entries; their ids. Refuses (ValueError)
        to grow an owner's book past MAX_CONTACTS."""
        now = self._clock()

        def work(conn: sqlite3.Connection) -> list[int]:
            (count,) = conn.execute("SELECT COUNT(*) FROM contacts WHERE owner = ?",
                                    (owner,)).fetchone()
            if count + len(entries) > MAX_CONTACTS:
                raise ValueError(f"at most {MAX_CONTACTS} contacts")
            ids = []
            for name, numbers, keys, url in entries:
                cur = conn.execute(
                    "INSERT INTO contacts (owner, name, numbers, keys, url, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (owner, name, json.dumps(list(numbers)), _keys(keys), url, now))
                ids.append(int(cur.lastrowid or 0))
                _index(conn, ids[-1], owner, keys)
            return ids

        return self._do(work)

    def update(self, contact_id: int, owner: str | None, name: str, numbers: Sequence[str],
               keys: Sequence[str], url: str | None) -> Deferred[bool]:
        def work(conn: sqlite3.Connection) -> bool:
            # (no UPDATE ... RETURNING: SQLite 3.35 and later only)
            changed = conn.execute(
                "SELECT owner FROM contacts WHERE id = ? AND (? IS NULL OR owner = ?)",
                (contact_id, owner, owner)).fetchone()
            if changed is None:
                return False
            conn.execute(
                "UPDATE contacts SET name = ?, numbers = ?, keys = ?, url = ?, updated = ? "
                "WHERE id = ?",
                (name, json.dumps(list(numbers)), _keys(keys), url, self._clock(), contact_id))
            conn.execute("DELETE FROM contact_numbers WHERE contact_id = ?", (contact_id,))
            _index(conn, contact_id, str(changed[0]), keys)
            return True

        return self._do(work)

    def delete(self, contact_id: int, owner: str | None) -> Deferred[bool]:
        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM contacts WHERE id = ? AND (? IS NULL OR owner = ?)",
                               (contact_id, owner, owner))
            if cur.rowcount == 0:
                return False
            conn.execute("DELETE FROM contact_numbers WHERE contact_id = ?", (contact_id,))
            return True

        return self._do(work)

    def find_number(self, user: str, key: str) -> Deferred[ContactEntry | None]:
        """The first contact of ``user`` (or everyone's) with the number ``key`` (E.164)."""
        def work(conn: sqlite3.Connection) -> ContactEntry | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM contacts WHERE id = (SELECT contact_id FROM "
                "contact_numbers WHERE key = ? AND owner IN (?, '*') "
                "ORDER BY owner = '*', contact_id LIMIT 1)", (key, user)).fetchone()
            return None if row is None else _entry(row)

        return self._do(work)
