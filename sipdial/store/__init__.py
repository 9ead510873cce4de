"""Persistence of the call log, registrations, live events and the webhook outbox (SQLite now,
PostgreSQL later).

The records (:mod:`.models`) are plain dataclasses that every room may pass around:
:class:`CallRecord` with its :class:`CallEvent` list, :class:`RegistrationRecord`,
:class:`PublishedEvent` (a live event, for SSE resume) and :class:`OutboxEntry` (one webhook
delivery). Times are unix seconds; :func:`iso_time` is their JSON form.

Backends share one interface (see :class:`SqliteStore`), used on the reactor thread:

* writes (``save_call``, ``add_event``, ``save_registration``, ``add_published_event``,
  ``add_outbox_entry``, ...) are queued and return at once; one timer writes the batch in one
  transaction on the store's worker thread. What one reactor turn writes is never split
  between two transactions; the end of a call is flushed within 5 ms;
* ``when_committed()`` fires once everything queued so far is committed, with a
  :class:`WriteReport` (the event hub sends nothing before that);
* reads (``get_call``, ``list_calls``, ``events_after``, ``load_registrations``,
  ``unfinished_calls``, ...) return Deferreds and see every earlier write;
* ``start()`` opens the database (the calls a crash left running are read with
  ``unfinished_calls()`` and ended by the call service); ``stop()`` writes what is pending
  and closes it.

One bad row fails alone: a row SQLite or the encoder refuses is logged (``sipdial.store``)
and left out, the rest of its batch is committed. Only a broken database loses a batch
(logged with how many writes); later writes still go through.
"""

from sipdial.store.contacts import ContactBook, ContactEntry, contact_book_path
from sipdial.store.models import (
    MAX_METADATA_BYTES,
    CallEvent,
    CallRecord,
    JsonValue,
    Metadata,
    OutboxEntry,
    PublishedEvent,
    RegistrationRecord,
    WriteReport,
    iso_time,
)
from sipdial.store.sqlite import (
    RunInThread,
    SqliteEventReader,
    SqliteStore,
    StoreError,
    StoreReactor,
    used_links_in,
)

__all__ = [
    "MAX_METADATA_BYTES",
    "CallEvent",
    "CallRecord",
    "ContactBook",
    "ContactEntry",
    "JsonValue",
    "Metadata",
    "OutboxEntry",
    "PublishedEvent",
    "RegistrationRecord",
    "RunInThread",
    "SqliteEventReader",
    "SqliteStore",
    "StoreError",
    "StoreReactor",
    "WriteReport",
    "contact_book_path",
    "iso_time",
    "used_links_in",
]
