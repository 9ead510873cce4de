"""Live call events: names (:mod:`.names`), the hub that publishes them (:mod:`.hub`) to SSE
streams (:mod:`sipdial.api.sse`) and to webhooks (:mod:`.webhooks`, delivered from an outbox
in the store).

What receivers see — the event names, the JSON document, the webhook request and its
signature, retries and ordering, the SSE stream and its resume — is an external contract,
documented for CRM developers in ``docs/events.md``; a change here that changes the wire is a
change of that document too.

Wiring (``sipdial.app``)::

    hub = EventHub(store, reactor, config.webhooks)  # store: an EventStore (SqliteStore)
    yield hub.start()          # after store.start(), before calls are taken: continues the
                               # event ids, resumes pending webhook deliveries
    calls.end_interrupted(unfinished)  # the calls a crash cut off: one call.ended each
    hub.publish(record, event) # on the reactor thread, right after the engine's persist();
                               # sent (SSE, webhooks) once the store has committed the rows
    build_site(api, tokens, reactor=reactor, events=hub)   # GET /v1/events
    # at stop: no more calls; yield hub.stop(); yield store.stop()

With ``sipdial serve --workers``, :class:`MergedEvents` (:mod:`.merged`) is the SSE source:
every worker's events, with a cursor of every worker's position as the SSE id.

:func:`verify_signature` is what a Python receiver needs to check a webhook request.
"""

from sipdial.events.hub import EventHub, EventStore, Subscriber, Subscription
from sipdial.events.merged import (
    Cursor,
    CursorSubscriber,
    EventReader,
    MergedEvents,
    decode_event,
    encode_event,
    format_cursor,
    parse_cursor,
)
from sipdial.events.names import EventName, events_for
from sipdial.events.webhooks import (
    SINKS,
    DeliveryPolicy,
    DeliveryStatus,
    Poster,
    sign,
    verify_signature,
)

__all__ = [
    "SINKS",
    "Cursor",
    "CursorSubscriber",
    "DeliveryPolicy",
    "DeliveryStatus",
    "EventHub",
    "EventName",
    "EventReader",
    "EventStore",
    "MergedEvents",
    "Poster",
    "Subscriber",
    "Subscription",
    "decode_event",
    "encode_event",
    "events_for",
    "format_cursor",
    "parse_cursor",
    "sign",
    "verify_signature",
]
