"""Persistence of the call log, registrations, live events and the webhook outbox (SQLite now,
PostgreSQL later).

The records (:mod:`.models`) are plain dataclasses that every room may pass around:
:class:`CallRecord` with its :class:`CallEvent` list, :class:`RegistrationRecord`,
:class:`PublishedEvent` (a live event, for SSE resume) and :class:`OutboxEntry` (one webhook
delivery). Times are unix seconds; :func:`iso_time` is their JSON form.

Backends share one interface (see :class:`SqliteStore`), used on the reactor thread:

* writes (``save_call``, ``add_event``, ``save_registration``, ``add_published_event``,
  ``add_outbox_entry``, ...) are queued and return at once; one timer writes the batch in one
  transaction on the store's worker thread;
* reads (``get_call``, ``list_calls``, ``events_after``, ``load_registrations``, ...) return
  Deferreds and see every earlier write;
* ``start()`` opens the database and ends the calls a crash left running (cause
  ``interrupted``); ``stop()`` writes what is pending and closes it. A write that fails is
  logged (``sipdial.store``) with how many writes were lost; later writes still go through.
"""

from sipdial.store.models import (
    CallEvent,
    CallRecord,
    OutboxEntry,
    PublishedEvent,
    RegistrationRecord,
    iso_time,
)
from sipdial.store.sqlite import RunInThread, SqliteStore, StoreError, StoreReactor

__all__ = [
    "CallEvent",
    "CallRecord",
    "OutboxEntry",
    "PublishedEvent",
    "RegistrationRecord",
    "RunInThread",
    "SqliteStore",
    "StoreError",
    "StoreReactor",
    "iso_time",
]
