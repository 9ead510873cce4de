"""Persistence of the call log and registrations (SQLite now, PostgreSQL later).

Backends share one interface (see :class:`SqliteStore`): writes are queued and return at once,
reads return Deferreds and see every earlier write.
"""

from sipdial.store.models import CallEvent, CallRecord, RegistrationRecord, iso_time
from sipdial.store.sqlite import RunInThread, SqliteStore, StoreError, StoreReactor

__all__ = [
    "CallEvent",
    "CallRecord",
    "RegistrationRecord",
    "RunInThread",
    "SqliteStore",
    "StoreError",
    "StoreReactor",
    "iso_time",
]
