"""The event hub: turns call state changes into live events for SSE streams and webhooks.

``publish(record, event)`` runs on the reactor thread right after the engine's ``persist``.
For every event :func:`~sipdial.events.names.events_for` yields it

1. assigns the next event id (one more than the last),
2. queues an ``events`` row (SSE resume survives restarts),
3. queues one ``webhook_outbox`` row per configured webhook that wants the event name;

then, once the store says these rows are committed (``when_committed``), it

4. keeps the event in a ring buffer of the latest ``buffer_size`` and hands it to every SSE
   subscriber whose user filter matches,
5. gives the outbox entries to the :class:`~sipdial.events.webhooks.WebhookDeliverer`.

Commit before send: nothing leaves sipdial before its row is durable, so the ids that a
restart continues from (the database's highest) were never seen outside — an event id or a
delivery id is never used for two different events, even after ``kill -9``. The rows are
written in the same transaction as the call's own row and event (the store never splits a
reactor turn), so a ``call.ended`` is sent only for an end that is committed; a row the store
had to leave out (``WriteReport``) is never sent. The wait is one store flush (at most
``flush_interval``, 50 ms; the end of a call is flushed within 5 ms).

``start()`` resumes every delivery still pending, at once (a waiting retry is brought
forward; its attempt count, and so its backoff, is kept), with its own delivery id: a POST
in flight at a crash goes again with the same ``X-Sipdial-Delivery`` (at least once).

Payload (the webhook body and the SSE ``data:``)::

    {"id": 57, "event": "call.ended", "time": "2026-11-21T13:36:40.512Z",
     "state": "ended", "leg": null, "cause": "user_no_answer", "missed": true,
     "sip_code": 408, "detail": "user_no_answer",
     "call": { ...the call resource, as GET /v1/calls/{id}... }}

``cause`` is the call's cause (null until ``call.ended``); ``missed`` is true only for a
``call.ended`` whose cause is ``user_no_answer``. A lone UTF-16 surrogate in any text (it
cannot be UTF-8) is written as its JSON escape (``\\ud800``), as ``ensure_ascii`` would.
"""

from __future__ import annotations

import json
import json.encoder
import logging
import operator
import random
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from sipdial.config import WebhookConfig
from sipdial.events.camara import CLOUDEVENT_TYPE, cloud_event, status_changed
from sipdial.events.names import EventName, EventSpec, events_for, is_missed
from sipdial.events.webhooks import DeliveryPolicy, Poster, WebhookDeliverer, shown_url
from sipdial.reactor_types import exc_info
from sipdial.store import (
    CallEvent,
    CallRecord,
    OutboxEntry,
    PublishedEvent,
    WriteReport,
    iso_time,
)
from sipdial.vocabulary import CallState

__all__ = ["EventHub", "EventStore", "Subscriber", "Subscription"]

log = logging.getLogger("sipdial.events")

_REPLAY_PAGE: Final = 500  #: events read from the database per query when resuming
#: calls whose events' JSON the hub keeps (see ``EventHub._events_text``); past this the
#: cache is emptied (it only saves work, a miss recomputes)
_EVENT_TEXT_CALLS: Final = 20_000
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _make_dumps() -> Callable[[object], str]:
    """``json.dumps(obj, ensure_ascii=False, separators=(",", ":"))``, with the C encoder
    built once: ``JSONEncoder.encode`` builds a new one (and a closure) on every call, which
    costs more than encoding a small document."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:
        return encoder.encode
    # the arguments JSONEncoder.iterencode passes, minus the circular-reference check
    c_encode = c_make_encoder(None, encoder.default, json.encoder.encode_basestring, None,
                              ":", ",", False, False, True)

    def dumps(obj: object) -> str:
        return "".join(c_encode(obj, 0))

    return dumps


_dumps = _make_dumps()


def _utf8_safe(text: str) -> str:
    """JSON ``text`` with every lone surrogate as its ``\\uXXXX`` escape: the same document,
    but text that UTF-8 (the store, SSE, webhooks) can carry. ASCII text is returned as is."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class EventStore(Protocol):
    """What the hub needs of the store (:class:`~sipdial.store.sqlite.SqliteStore`)."""

    def add_published_event(self, event: PublishedEvent) -> None: ...

    def add_outbox_entry(self, entry: OutboxEntry) -> None: ...

    def update_outbox_entry(self, entry: OutboxEntry) -> None: ...

    def when_committed(self) -> Deferred[WriteReport]: ...

    def events_after(
        self, after: int, *, user: str | None = None, limit: int = 500
    ) -> Deferred[list[PublishedEvent]]: ...

    def pending_outbox(self) -> Deferred[list[OutboxEntry]]: ...

    def last_published_ids(self) -> Deferred[tuple[int, int]]: ...


class _Unsent(NamedTuple):
    """An event and its webhook deliveries, queued in the store, waiting for the commit."""

    published: PublishedEvent
    entries: list[OutboxEntry]


class Subscriber(Protocol):
    """An SSE stream (or a test) receiving live events."""

    def event(self, event: PublishedEvent) -> None:
        """The next event, in id order, never twice."""

    def close(self) -> None:
        """The hub is stopping: end the stream (the client resumes elsewhere / later)."""


@dataclass(eq=False)
class Subscription:
    """One subscriber and its user filter; :meth:`cancel` stops the events."""

    hub: EventHub
    subscriber: Subscriber
    user: str | None  #: only this user's calls; None = every call
    last_sent: int  #: id of the last event handed over (events are never sent twice)
    #: events published while the history is still being read from the database
    backlog: list[PublishedEvent] | None = field(default=None)
    active: bool = True

    def cancel(self) -> None:
        """Stop the events (the client went away). Safe to call more than once."""
        if self.active:
            self.active = False
            self.hub._subscriptions.discard(self)

    def _offer(self, event: PublishedEvent) -> None:
        if not self.active or event.id <= self.last_sent:
            return
        if self.user is not None and event.user != self.user:
            return
        if self.backlog is not None:
            self.backlog.append(event)
            return
        self.last_sent = event.id
        self.subscriber.event(event)


class EventHub:
    """Live events of every call: SSE subscribers, the webhook outbox and its delivery.

    ``reactor`` drives delivery timers and HTTP (an ``IReactorTime`` + ``IReactorTCP``);
    ``clock`` (default ``reactor.seconds``) is the unix time used for outbox scheduling and
    signature timestamps. ``poster`` replaces the Agent-based HTTP client (tests), ``rng``
    the randomness of retry jitter.
    """

    def __init__(
        self,
        store: EventStore,
        reactor: Any,
        webhooks: tuple[WebhookConfig, ...] = (),
        clock: Callable[[], float] | None = None,
        *,
        policy: DeliveryPolicy | None = None,
        poster: Poster | None = None,
        buffer_size: int = 1024,
        rng: Callable[[], float] = random.random,
        ids: tuple[int, int] = (0, 1),
        id_floor: tuple[int, int] = (0, 0),
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        #: (worker index, worker count): with ``sipdial serve --workers`` each worker's event
        #: and delivery ids are ≡ its index (mod the count), so no two workers ever use one
        #: id; (0, 1) for one process: 1, 2, 3, ...
        self._id_offset, self._id_step = ids
        #: event and delivery ids continue above these too (the other workers' files)
        self._id_floor = id_floor
        self._store = store
        self._clock: Callable[[], float] = clock or reactor.seconds
        policy = policy or DeliveryPolicy()
        self._webhooks: dict[str, WebhookConfig] = {}
        for webhook in webhooks:
            if webhook.url in self._webhooks:
                log.warning("webhook %s is configured twice: using the first",
                            shown_url(webhook.url))
                continue
            self._webhooks[webhook.url] = webhook
        if poster is None:
            from sipdial.events.http_client import AgentPoster

            poster = AgentPoster(reactor, connect_timeout=policy.timeout,
                                 per_host=policy.concurrency)
        self._deliverer = WebhookDeliverer(
            reactor,
            poster,
            {url: webhook.secret for url, webhook in self._webhooks.items()},
            store.update_outbox_entry,
            policy=policy,
            clock=self._clock,
            rng=rng,
        )
        self._ring: deque[PublishedEvent] = deque(maxlen=buffer_size)
        self._subscriptions: set[Subscription] = set()
        self._last_event_id = 0  #: the last id assigned
        self._last_released = 0  #: the last id committed and handed to subscribers
        self._last_outbox_id = 0
        self._state = "new"  # -> "starting" -> "running" -> "stopped"
        #: told of every event once it is released (committed), in id order: with
        #: ``serve --workers``, the forwarding to the workers that have SSE clients
        self.on_release: Callable[[PublishedEvent], None] | None = None
        #: call id -> (its CallEvents, each one's JSON text): every payload embeds the whole
        #: call resource with all its events, so each event is serialised once, not per event
        self._event_texts: dict[str, tuple[list[CallEvent], list[str]]] = {}

    @property
    def last_event_id(self) -> int:
        """The id of the newest event subscribers have been given (it is committed)."""
        return self._last_released

    @property
    def deliverer(self) -> WebhookDeliverer:
        return self._deliverer

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Continue the ids where the database left off and resume pending deliveries.

        The store must be started. Call before the engine takes calls: events published
        before ``start`` has fired are dropped (and logged).
        """
        if self._state != "new":
            raise RuntimeError(f"cannot start an event hub that is {self._state}")
        self._state = "starting"
        d = self._store.last_published_ids()

        def got_ids(ids: tuple[int, int]) -> Deferred[list[OutboxEntry]]:
            self._last_event_id, self._last_outbox_id = (
                self._aligned(max(last, floor)) for last, floor in zip(ids, self._id_floor,
                                                                       strict=True))
            # (-1 for a worker whose ids start at its index: nothing released is 0)
            self._last_released = max(0, self._last_event_id)
            return self._store.pending_outbox()

        def resume(entries: list[OutboxEntry]) -> None:
            orphans = 0
            now = self._clock()
            for entry in entries:
                if entry.webhook_url in self._webhooks or entry.sink_token is not None:
                    # a restart is a good moment to try again: due now, backoff kept after
                    entry.next_attempt_at = min(entry.next_attempt_at, now)
                    self._deliverer.add(entry)
                else:
                    entry.status = "failed"
                    entry.last_error = "webhook no longer configured"
                    self._store.update_outbox_entry(entry)
                    orphans += 1
            if orphans:
                log.warning(
                    "%d pending webhook deliveries are for URLs no longer configured: "
                    "marked failed",
                    orphans,
                )
            if entries:
                log.info("resuming %d pending webhook deliveries", len(entries) - orphans)
            self._state = "running"
            self._deliverer.start()

        def failed(failure: Failure) -> Failure:
            self._state = "stopped"
            return failure

        return d.addCallback(got_ids).addCallback(resume).addErrback(failed)

    def _aligned(self, last: int) -> int:
        """Where this worker's ids continue after the database's ``last``: the id one step
        before its first id above ``last``."""
        step = self._id_step
        if step == 1:
            return last
        # the next id is last + step: the smallest id > last that is ≡ offset (mod step)
        nxt = last + 1 + (self._id_offset - (last + 1)) % step
        return nxt - step

    def stop(self) -> Deferred[None]:
        """End every SSE stream and stop delivering (POSTs in flight get a short grace).

        Call after the engine's last ``publish`` and before the store stops: pending
        deliveries stay in the outbox for the next start.
        """
        if self._state == "stopped":
            return succeed(None)
        self._state = "stopped"
        for subscription in list(self._subscriptions):
            subscription.cancel()
            self._close(subscription)
        return self._deliverer.stop()

    @staticmethod
    def _close(subscription: Subscription) -> None:
        try:
            subscription.subscriber.close()
        except Exception:
            log.exception("event hub: closing a subscriber failed")

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, record: CallRecord, event: CallEvent) -> None:
        """Publish the events of ``event``, the state change just recorded for ``record``.

        Never raises: live events must not disturb a call.
        """
        if self._state != "running":
            log.warning(
                "event hub is %s: dropped the events of call %s entering %s",
                self._state,
                record.id,
                event.state,
            )
            return
        unsent: list[_Unsent] = []
        try:
            for spec in events_for(_previous_state(record, event), event.state,
                                   record.direction):
                unsent.append(self._publish_one(record, event, spec))
            if record.sink_url is not None and unsent:
                self._queue_cloud_event(record, event, unsent[-1].entries)
        except Exception:
            log.exception("event hub: cannot publish call %s entering %s", record.id, event.state)
        if unsent:
            self._release_when_committed(unsent, f"call {record.id}")

    def publish_notice(self, name: EventName, document: dict[str, object], time: float) -> None:
        """A live event that is about no call (``auth.locked_out``, :mod:`sipdial.guard`):
        ``{"id", "event", "time", **document}`` to administrators' SSE streams (not to user
        tokens') and to the webhooks that list ``name`` itself (``"*"`` means every *call*
        event, so existing receivers see no new shape). Like call events it goes out only once
        its rows are committed. Never raises."""
        if self._state != "running":
            log.warning("event hub is %s: dropped %s", self._state, name)
            return
        try:
            self._last_event_id += self._id_step
            payload = _utf8_safe(_dumps({"id": self._last_event_id, "event": name.value,
                                         "time": iso_time(time), **document}))
            published = PublishedEvent(id=self._last_event_id, call_id="", user="",
                                       name=name.value, payload=payload, time=time)
            self._store.add_published_event(published)
            entries = self._queue_deliveries(published, call_event=False)
        except Exception:
            log.exception("event hub: cannot publish %s", name)
            return
        self._release_when_committed([_Unsent(published, entries)], name.value)

    def _release_when_committed(self, unsent: list[_Unsent], what: str) -> None:
        try:
            d = self._store.when_committed()
        except Exception:  # the store is stopped: nothing was queued, nothing goes out
            log.exception("event hub: cannot wait for the events of %s", what)
            return
        d.addCallbacks(self._release, self._not_committed,
                       callbackArgs=(unsent,), errbackArgs=(unsent,))

    def _release(self, report: WriteReport, unsent: list[_Unsent]) -> None:
        """The rows of ``unsent`` are committed: now subscribers and webhooks get them."""
        if self._state != "running":
            return  # stopping: the deliveries are pending in the outbox for the next start
        for published, entries in unsent:
            if published.id in report.lost_events:
                self._drop(published, entries, report.lost_outbox)
                continue
            self._last_released = published.id
            self._ring.append(published)
            for subscription in list(self._subscriptions):
                try:
                    subscription._offer(published)
                except Exception:
                    # never left open and deaf: the client sees its stream end and resumes
                    log.exception("event hub: a subscriber failed; unsubscribed and closed")
                    subscription.cancel()
                    self._close(subscription)
            if self.on_release is not None:
                try:
                    self.on_release(published)
                except Exception:
                    log.exception("event hub: forwarding event %d failed", published.id)
            for entry in entries:
                if entry.id in report.lost_outbox:
                    log.error("webhook %s: delivery %d (%s, call %s) could not be stored: "
                              "not sent", shown_url(entry.webhook_url), entry.id, entry.event_name,
                              entry.call_id)
                    continue
                try:
                    self._deliverer.add(entry)
                except Exception:  # one bad entry must not hold back the others
                    log.exception("webhook %s: cannot queue delivery %d",
                                  shown_url(entry.webhook_url), entry.id)

    def _drop(self, published: PublishedEvent, entries: list[OutboxEntry],
              lost_outbox: frozenset[int]) -> None:
        """The event's row could not be stored: it is sent nowhere (its id may come again
        after a restart), and its stored deliveries are marked failed."""
        log.error("event hub: event %d (%s, call %s) could not be stored: not sent",
                  published.id, published.name, published.call_id)
        for entry in entries:
            if entry.id not in lost_outbox:
                entry.status = "failed"
                entry.last_error = "its event could not be stored"
                self._store.update_outbox_entry(entry)

    def _not_committed(self, failure: Failure, unsent: list[_Unsent]) -> None:
        log.error("event hub: the store lost events %s: not sent",
                  ", ".join(str(published.id) for published, _ in unsent),
                  exc_info=exc_info(failure))

    def _publish_one(self, record: CallRecord, event: CallEvent, spec: EventSpec) -> _Unsent:
        self._last_event_id += self._id_step
        ended = spec.name is EventName.ENDED
        document = {
            "id": self._last_event_id,
            "event": spec.name.value,
            "time": iso_time(event.time),
            "state": event.state,
            "leg": spec.leg,
            "cause": record.cause,
            "missed": ended and is_missed(
                record.cause, record.direction,
                any(e.state == CallState.CONNECTED for e in record.events)),
            "sip_code": event.sip_code,
            "detail": event.detail,
        }
        # exactly json.dumps(document | {"call": record.to_json()}, ensure_ascii=False,
        # separators=(",", ":")): "call" is the last key, "events" the last key in it
        payload = _utf8_safe("".join((
            _dumps(document)[:-1], ',"call":', _dumps(record.summary_json())[:-1],
            ',"events":[', self._events_text(record), "]}}",
        )))
        published = PublishedEvent(
            id=self._last_event_id,
            call_id=record.id,
            user=record.user,
            name=spec.name.value,
            payload=payload,
            time=event.time,
        )
        self._store.add_published_event(published)
        entries = self._queue_deliveries(published, call_event=True)
        if ended:
            self._event_texts.pop(record.id, None)
        return _Unsent(published, entries)

    def _queue_cloud_event(self, record: CallRecord, event: CallEvent,
                           entries: list[OutboxEntry]) -> None:
        """CAMARA: a status change of the call goes to its sink as a CloudEvent, from the
        same outbox as the webhooks (durable, retried, in order per call)."""
        assert record.sink_url is not None
        if not status_changed(record, _previous_event(record, event), event):
            return
        now = self._clock()
        self._last_outbox_id += self._id_step
        entry = OutboxEntry(id=self._last_outbox_id, webhook_url=record.sink_url,
                            event_id=self._last_event_id, call_id=record.id,
                            event_name=CLOUDEVENT_TYPE, payload=cloud_event(record, event),
                            created_at=now, next_attempt_at=now,
                            sink_token=record.sink_token or "")
        self._store.add_outbox_entry(entry)
        entries.append(entry)

    def _queue_deliveries(self, published: PublishedEvent, *,
                          call_event: bool) -> list[OutboxEntry]:
        """One outbox row per webhook that wants ``published`` (``"*"``: every call event)."""
        entries: list[OutboxEntry] = []
        now = self._clock()
        for url, webhook in self._webhooks.items():
            if published.name not in webhook.events and not (
                    call_event and "*" in webhook.events):
                continue
            self._last_outbox_id += self._id_step
            entry = OutboxEntry(
                id=self._last_outbox_id,
                webhook_url=url,
                event_id=published.id,
                call_id=published.call_id,
                event_name=published.name,
                payload=published.payload,
                created_at=now,
                next_attempt_at=now,
            )
            self._store.add_outbox_entry(entry)
            entries.append(entry)
        return entries

    def _events_text(self, record: CallRecord) -> str:
        """The JSON of ``record.events`` (without the brackets); events already serialised for
        this call are reused as long as they are still the record's first events."""
        events = record.events
        cached = self._event_texts.get(record.id)
        if cached is not None:
            objs, texts = cached
            done = len(objs)
            if done > len(events) or not all(map(operator.is_, objs, events)):
                objs, texts, done = [], [], 0
        else:
            if len(self._event_texts) >= _EVENT_TEXT_CALLS:
                self._event_texts.clear()
            objs, texts, done = [], [], 0
        for event in events[done:]:
            objs.append(event)
            texts.append(_dumps(event.to_json()))
        self._event_texts[record.id] = (objs, texts)
        return ",".join(texts)

    # --- subscribing --------------------------------------------------------------------------

    def subscribe(
        self, subscriber: Subscriber, *, user: str | None = None,
        after: int | tuple[int, ...] | None = None,
    ) -> Subscription:
        """Hand ``subscriber`` every event from now on (of ``user``'s calls, or all).

        ``after`` (an SSE ``Last-Event-ID``) first replays the events with a greater id: from
        the ring buffer when it still holds them all, else from the database, page by page;
        events published meanwhile follow without gaps or repeats.
        """
        if self._state == "stopped":
            raise RuntimeError("event hub is stopped")
        if isinstance(after, tuple):  # a cursor of several workers' (a run with workers):
            after = min(after, default=0)  # from its lowest entry, at least once
        newest = self._last_released
        # an id up to the last one assigned is the client's (events not yet committed are
        # still to come, and are skipped up to it); a greater one is unknown: live only
        start = newest if after is None or after > self._last_event_id else after
        subscription = Subscription(self, subscriber, user, last_sent=start)
        self._subscriptions.add(subscription)
        if start >= newest:
            return subscription
        if self._ring and self._ring[0].id <= start + 1:
            for event in list(self._ring):
                subscription._offer(event)
            return subscription
        subscription.backlog = []
        self._replay(subscription)
        return subscription

    def _replay(self, subscription: Subscription) -> None:
        d = self._store.events_after(
            subscription.last_sent, user=subscription.user, limit=_REPLAY_PAGE
        )

        def page(events: list[PublishedEvent]) -> None:
            if not subscription.active:
                return
            _hand_over(subscription, events)
            if len(events) == _REPLAY_PAGE:
                self._replay(subscription)
                return
            backlog, subscription.backlog = subscription.backlog or [], None
            _hand_over(subscription, backlog)

        def failed(failure: Failure) -> None:
            log.error("event hub: cannot replay events from the database",
                      exc_info=exc_info(failure))
            subscription.cancel()
            subscription.subscriber.close()

        d.addCallback(page).addErrback(failed)



def _hand_over(subscription: Subscription, events: Iterable[PublishedEvent]) -> None:
    """Send ``events`` (already filtered by user) that are newer than the last one sent."""
    for event in events:
        if not subscription.active:
            return
        if event.id > subscription.last_sent:
            subscription.last_sent = event.id
            subscription.subscriber.event(event)


def _previous_event(record: CallRecord, event: CallEvent) -> CallEvent | None:
    events = record.events
    for index in range(len(events) - 1, -1, -1):
        if events[index] is event:
            return events[index - 1] if index > 0 else None
    return events[-1] if events and events[-1] is not event else None


def _previous_state(record: CallRecord, event: CallEvent) -> str | None:
    """The state the call was in before ``event`` (None for a new call).

    The engine appends ``event`` to ``record.events`` before persisting; if it has not, the
    last recorded event is the previous state.
    """
    events = record.events
    for index in range(len(events) - 1, -1, -1):
        if events[index] is event:
            return events[index - 1].state if index > 0 else None
    return events[-1].state if events else None
