"""sipdial.events: signing, backoff and ordering of webhook deliveries, the hub's outbox and
SSE subscriptions.

No sockets: a ``task.Clock`` for time, a fake poster whose Deferreds the test fires, and the
real :class:`SqliteStore` with its worker "thread" run synchronously (as in test_store.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from sipdial.config import WebhookConfig
from sipdial.events.hub import EventHub
from sipdial.events.webhooks import (
    SINKS,
    DeliveryPolicy,
    OutboxQueue,
    WebhookDeliverer,
    delivery_headers,
    shown_url,
    sign,
    verify_signature,
)
from sipdial.store.models import CallEvent, CallRecord, OutboxEntry, PublishedEvent
from sipdial.store.sqlite import SqliteStore
from tests.unit.deferreds import result, run_now

T = TypeVar("T")
T0 = 1_763_732_155.0
URL = "http://crm.example/hook"
URL2 = "http://other.example/hook"
NO_JITTER: Callable[[], float] = lambda: 0.0  # noqa: E731
POLICY = DeliveryPolicy(first_retry=1.0, max_retry=300.0, jitter=0.2, max_age=3600.0,
                        concurrency=2, timeout=10.0, stop_grace=2.0)






def entry(entry_id: int, call_id: str = "c1", url: str = URL, created: float = T0,
          **changes: Any) -> OutboxEntry:
    return OutboxEntry(id=entry_id, webhook_url=url, event_id=entry_id, call_id=call_id,
                       event_name="call.ringing", payload=f'{{"id":{entry_id}}}',
                       created_at=created, next_attempt_at=changes.pop("next_at", created),
                       **changes)


# --------------------------------------------------------------------------- signing


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = '{"id":1,"event":"call.ringing","x":"Wählt"}'.encode()
    expected = hmac.new(b"s3cret", b"1763732155." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", 1763732155, body) == "sha256=" + expected


def test_verify_accepts_fresh_and_refuses_old_tampered_or_foreign() -> None:
    body = b'{"id":1}'
    signature = sign("k", int(T0), body)
    assert verify_signature("k", str(int(T0)), body, signature, now=T0 + 299)
    assert not verify_signature("k", str(int(T0)), body, signature, now=T0 + 301)
    assert not verify_signature("k", str(int(T0)), body, signature, now=T0 - 301)
    assert not verify_signature("k", str(int(T0)), b'{"id":2}', signature, now=T0)
    assert not verify_signature("other", str(int(T0)), body, signature, now=T0)
    assert not verify_signature("k", str(int(T0) + 1), body, signature, now=T0)
    assert not verify_signature("k", "-5", body, signature, now=T0)


def test_delivery_headers() -> None:
    e = entry(42)
    headers = delivery_headers(e, "k", T0 + 0.9)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Sipdial-Event"] == "call.ringing"
    assert headers["X-Sipdial-Delivery"] == "42"
    assert headers["X-Sipdial-Timestamp"] == str(int(T0))
    assert headers["X-Sipdial-Signature"] == sign("k", int(T0), e.payload.encode())


# ----------------------------------------------------------------------- backoff policy


def test_retry_delays_double_up_to_the_cap() -> None:
    delays = [POLICY.retry_delay(n, 0.0) for n in range(1, 12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert POLICY.retry_delay(10_000, 0.0) == 300


def test_jitter_only_shortens_by_at_most_its_fraction() -> None:
    assert POLICY.retry_delay(3, 0.999) == pytest.approx(4 * (1 - 0.2 * 0.999))
    assert POLICY.retry_delay(3, 0.5) == pytest.approx(3.6)


@pytest.mark.parametrize(
    "kw",
    [{"first_retry": 0}, {"first_retry": 5, "max_retry": 1}, {"jitter": 1.0},
     {"concurrency": 0}, {"timeout": 0}],
)
def test_bad_policy_is_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DeliveryPolicy(**kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the queue


def test_queue_sends_only_the_head_of_each_call() -> None:
    q = OutboxQueue(POLICY, NO_JITTER)
    for e in (entry(1, "a"), entry(2, "a"), entry(3, "b")):
        q.add(e)
    assert [e.id for e in q.due(T0)] == [1, 3]
    assert q.due(T0) == []
    assert q.next_wakeup() is None  # everything due is in flight


def test_queue_retries_the_head_and_keeps_the_rest_of_the_call_waiting() -> None:
    q = OutboxQueue(POLICY, NO_JITTER)
    first, second = entry(1), entry(2)
    q.add(first)
    q.add(second)
    (sent,) = q.due(T0)
    q.failed(sent, T0, "HTTP 500")
    assert (first.attempts, first.last_error, first.next_attempt_at) == (1, "HTTP 500", T0 + 1)
    assert q.due(T0 + 0.999) == []
    assert q.next_wakeup() == T0 + 1
    assert q.due(T0 + 1) == [first]
    q.failed(first, T0 + 1, "HTTP 502")
    assert first.next_attempt_at == T0 + 3  # then 2 s
    assert q.due(T0 + 3) == [first]
    q.delivered(first, T0 + 3)
    assert (first.status, first.attempts) == ("done", 3)
    assert q.due(T0 + 3) == [second]  # the next event of the call goes at once
    q.delivered(second, T0 + 3)
    assert len(q) == 0


def test_queue_bounds_concurrency_per_url() -> None:
    q = OutboxQueue(POLICY, NO_JITTER)  # concurrency 2
    for i, call in enumerate(("a", "b", "c", "d"), start=1):
        q.add(entry(i, call))
    q.add(entry(5, "e", url=URL2))
    assert [e.id for e in q.due(T0)] == [1, 2, 5]
    assert q.in_flight == 3
    assert q.next_wakeup() is None  # URL is full, URL2 has nothing waiting
    q.delivered(entry_of(q, 1), T0)
    assert q.next_wakeup() == T0
    assert [e.id for e in q.due(T0)] == [3]


def entry_of(q: OutboxQueue, entry_id: int) -> OutboxEntry:
    for line in q._lines.values():
        for e in line:
            if e.id == entry_id:
                return e
    raise KeyError(entry_id)


def test_queue_gives_up_after_max_age_and_moves_on() -> None:
    q = OutboxQueue(POLICY, NO_JITTER)
    old, new = entry(1), entry(2)
    q.add(old)
    q.add(new)
    q.due(T0)
    q.failed(old, T0 + 3599, "HTTP 500")
    assert old.status == "pending"
    q.due(old.next_attempt_at)
    q.failed(old, T0 + 3600, "HTTP 500")
    assert (old.status, old.attempts) == ("failed", 2)
    assert q.due(T0 + 3600) == [new]


def test_queue_released_entry_is_not_counted_and_stays_first() -> None:
    q = OutboxQueue(POLICY, NO_JITTER)
    e = entry(1)
    q.add(e)
    q.add(entry(2))
    q.due(T0)
    q.released(e)
    assert e.attempts == 0
    assert q.due(T0) == [e]


def test_queue_refuses_out_of_order_and_finished_entries() -> None:
    q = OutboxQueue(POLICY, NO_JITTER)
    q.add(entry(5))
    with pytest.raises(ValueError):
        q.add(entry(4))
    with pytest.raises(ValueError):
        q.add(entry(6, "other", status="done"))
    with pytest.raises(ValueError):
        q.delivered(entry_of(q, 5), T0)  # not in flight


# -------------------------------------------------------------------- the deliverer


@dataclass
class Post:
    url: str
    body: bytes
    headers: Mapping[str, str]
    d: Deferred[int]
    cancelled: bool = False


@dataclass
class FakePoster:
    posts: list[Post] = field(default_factory=list)
    closed: int = 0
    answer: int | None = None  #: answer every POST at once with this status

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[int]:
        def cancel(_: Deferred[int]) -> None:
            post.cancelled = True

        post = Post(url, body, dict(headers), Deferred(cancel))
        self.posts.append(post)
        if self.answer is not None:
            post.d.callback(self.answer)
        return post.d

    def close(self) -> Deferred[None]:
        self.closed += 1
        return succeed(None)

    def ids(self) -> list[int]:
        return [json.loads(p.body)["id"] for p in self.posts]


class Delivery:
    def __init__(self, policy: DeliveryPolicy = POLICY) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.poster = FakePoster()
        self.changes: list[tuple[int, str, int]] = []
        self.deliverer = WebhookDeliverer(
            self.clock, self.poster, {URL: "k", URL2: "k2"}, self.changed,
            policy=policy, rng=NO_JITTER,
        )
        self.deliverer.start()

    def changed(self, e: OutboxEntry) -> None:
        self.changes.append((e.id, e.status, e.attempts))

    def tick(self, seconds: float = 0.0) -> None:
        self.clock.advance(seconds)


def test_deliverer_posts_signed_json_on_the_next_tick() -> None:
    h = Delivery()
    h.deliverer.add(entry(1))
    assert h.poster.posts == []  # never from inside add (it runs inside the engine)
    h.tick()
    (post,) = h.poster.posts
    assert post.url == URL
    assert post.body == b'{"id":1}'
    assert post.headers["X-Sipdial-Signature"] == sign("k", int(T0), post.body)
    post.d.callback(204)
    assert h.changes == [(1, "done", 1)]


def test_deliverer_retries_after_500_with_backoff_and_keeps_order() -> None:
    h = Delivery()
    h.deliverer.add(entry(1, "a"))
    h.deliverer.add(entry(2, "a"))
    h.deliverer.add(entry(3, "b"))
    h.tick()
    assert h.poster.ids() == [1, 3]
    h.poster.posts[0].d.callback(500)
    h.poster.posts[1].d.callback(200)  # call b is not held up by call a
    assert h.changes == [(1, "pending", 1), (3, "done", 1)]
    h.tick(0.999)
    assert h.poster.ids() == [1, 3]  # neither the retry nor event 2 yet
    h.tick(0.001)
    assert h.poster.ids() == [1, 3, 1]
    h.poster.posts[2].d.callback(500)
    h.tick(1.999)
    assert h.poster.ids() == [1, 3, 1]
    h.tick(0.001)  # 2 s after the second failure
    assert h.poster.ids() == [1, 3, 1, 1]
    h.poster.posts[3].d.callback(200)
    h.tick()
    assert h.poster.ids() == [1, 3, 1, 1, 2]
    h.poster.posts[4].d.callback(200)
    assert h.changes[-2:] == [(1, "done", 3), (2, "done", 1)]
    assert len(h.deliverer.queue) == 0


def test_delivery_status_by_target_for_the_admin_view() -> None:
    h = Delivery()
    h.deliverer.add(entry(1, "a"))
    h.deliverer.add(entry(2, "a"))
    h.deliverer.add(entry(3, "b", url="https://user:pw@crm.example:8443/in?key=secret#x",
                          sink_token="tok"))
    h.tick()
    h.poster.posts[0].d.callback(500)
    h.poster.posts[1].d.callback(204)
    first, second, sinks = h.deliverer.status()
    assert (first.target, second.target, sinks.target) == (URL, URL2, SINKS)
    assert (first.webhook, second.webhook, sinks.webhook) == (1, 2, None)
    assert (first.delivered, first.failed_attempts, first.given_up, first.queued) == (0, 1, 0, 2)
    assert (first.last_error, first.last_error_at, first.last_delivered_at) == (
        "HTTP 500", T0, None)
    assert (second.delivered, second.queued) == (0, 0)  # configured, nothing sent yet
    assert (sinks.delivered, sinks.queued, sinks.last_delivered_at) == (1, 0, T0)
    h.tick(1.0)
    h.poster.posts[2].d.callback(200)
    h.tick()
    h.poster.posts[3].d.callback(200)
    first = h.deliverer.status()[0]
    assert (first.delivered, first.failed_attempts, first.queued) == (2, 1, 0)
    assert first.last_delivered_at == T0 + 1.0 and first.last_error == "HTTP 500"


def test_shown_url_leaves_out_what_may_be_secret() -> None:
    assert shown_url("https://user:pw@crm.example:8443/in?key=secret#x") == \
        "https://crm.example:8443/in"
    assert shown_url("http://[::1]:9/h?t=1") == "http://[::1]:9/h"
    assert shown_url("https://hooks.slack.example/services/T0/B0/sEcReT") == \
        "https://hooks.slack.example/services/…"
    assert shown_url("https://crm.example") == "https://crm.example"
    assert shown_url("http://crm.example:99999/") == "(a URL that does not parse)"


def test_each_retry_is_signed_with_its_own_timestamp() -> None:
    h = Delivery()
    h.deliverer.add(entry(1))
    h.tick()
    h.poster.posts[0].d.callback(503)
    h.tick(1)
    first, retry = h.poster.posts
    assert first.headers["X-Sipdial-Delivery"] == retry.headers["X-Sipdial-Delivery"] == "1"
    assert int(retry.headers["X-Sipdial-Timestamp"]) == int(T0) + 1
    assert retry.headers["X-Sipdial-Signature"] == sign("k", int(T0) + 1, retry.body)


def test_one_timer_for_every_delivery_and_retry() -> None:
    h = Delivery(DeliveryPolicy(concurrency=1000))
    for i in range(1, 201):
        h.deliverer.add(entry(i, f"call{i}"))
    assert len(h.clock.getDelayedCalls()) == 1
    h.tick()
    for post in h.poster.posts:
        post.d.callback(500)
    # 200 retries pending plus their 200 finished POSTs' timeouts cancelled: one timer left
    assert len(h.clock.getDelayedCalls()) == 1
    h.tick(1)
    assert len(h.poster.posts) == 400


def test_a_post_that_hangs_times_out_and_is_retried() -> None:
    h = Delivery()
    h.deliverer.add(entry(1))
    h.tick()
    h.tick(10)
    assert h.poster.posts[0].cancelled
    assert h.changes == [(1, "pending", 1)]
    assert entry_last_error(h) == "timeout after 10 s"
    h.tick(1)
    assert len(h.poster.posts) == 2


def entry_last_error(h: Delivery) -> str | None:
    return entry_of(h.deliverer.queue, 1).last_error


def test_connection_errors_are_retried_with_their_reason() -> None:
    h = Delivery()
    h.deliverer.add(entry(1))
    h.tick()
    h.poster.posts[0].d.errback(ConnectionRefusedError("Connection refused"))
    assert entry_last_error(h) == "ConnectionRefusedError: Connection refused"
    h.tick(1)
    assert len(h.poster.posts) == 2


def test_a_poster_that_answers_at_once_is_handled() -> None:
    h = Delivery()
    h.poster.answer = 200
    h.deliverer.add(entry(1))
    h.deliverer.add(entry(2))
    h.tick()
    h.tick()
    assert h.poster.ids() == [1, 2]
    assert h.changes == [(1, "done", 1), (2, "done", 1)]
    assert h.deliverer._in_flight == {}


def test_deliverer_refuses_an_unknown_url() -> None:
    h = Delivery()
    with pytest.raises(ValueError):
        h.deliverer.add(entry(1, url="http://unknown.example/"))


def test_stop_waits_for_posts_in_flight_then_aborts_them() -> None:
    h = Delivery()
    h.deliverer.add(entry(1, "a"))
    h.deliverer.add(entry(2, "b"))
    h.tick()
    stopped = h.deliverer.stop()
    assert not stopped.called
    h.poster.posts[0].d.callback(200)  # finishes within the grace period
    h.tick(2)  # grace over: the other is aborted, not counted, left pending
    assert h.poster.posts[1].cancelled
    assert result(stopped) is None
    assert h.changes == [(1, "done", 1)]
    assert h.poster.closed == 1
    assert entry_of(h.deliverer.queue, 2).attempts == 0
    h.tick(100)
    assert len(h.poster.posts) == 2  # nothing new after stop


def test_stop_with_nothing_in_flight_closes_at_once() -> None:
    h = Delivery()
    h.deliverer.add(entry(1, next_at=T0 + 50))
    assert result(h.deliverer.stop()) is None
    assert h.clock.getDelayedCalls() == []


# ---------------------------------------------------------------------------- the hub


class Hub:
    """A hub on a real SQLite file, with synchronous store writes and a fake poster."""

    def __init__(self, path: Path, webhooks: tuple[WebhookConfig, ...] = (),
                 buffer_size: int = 1024,
                 store_wrapper: Callable[[SqliteStore], Any] | None = None,
                 ids: tuple[int, int] = (0, 1), id_floor: tuple[int, int] = (0, 0)) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = SqliteStore(str(path), self.clock, run_in_thread=run_now)
        result(self.store.start())
        self.poster = FakePoster()
        store: Any = self.store if store_wrapper is None else store_wrapper(self.store)
        self.hub = EventHub(store, self.clock, webhooks, policy=POLICY, poster=self.poster,
                            buffer_size=buffer_size, rng=NO_JITTER, ids=ids,
                            id_floor=id_floor)
        result(self.hub.start())

    def commit(self) -> None:
        """The store's flush: the rows are committed, the hub hands the events on."""
        result(self.store.flush())

    def call(self, call_id: str = "c1", user: str = "201") -> Call:
        """A call whose every state change is committed at once (as if the flush timer had
        fired right after it)."""
        return Call.new(self.hub, call_id, user, commit=self.commit)

    def stop(self) -> None:
        stopped = self.hub.stop()
        self.clock.advance(POLICY.stop_grace)  # POSTs still in flight are aborted
        result(stopped)
        result(self.store.stop())

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        result(self.store.flush())
        conn = sqlite3.connect(self.store._path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


def _no_commit() -> None:
    pass


@dataclass
class Call:
    """Drives a CallRecord through states the way the engine does; ``commit`` after each."""

    hub: EventHub
    record: CallRecord
    commit: Callable[[], None] = _no_commit

    @classmethod
    def new(cls, hub: EventHub, call_id: str = "c1", user: str = "201",
            commit: Callable[[], None] = _no_commit) -> Call:
        record = CallRecord(call_id, user, "+4930123456", "refer", "calling_user", None, T0,
                            None)
        call = cls(hub, record, commit)
        call.enter("calling_user")
        return call

    def enter(self, state: str, cause: str | None = None, sip_code: int | None = None) -> None:
        self.record.state = state
        if cause is not None:
            self.record.cause = cause
            self.record.ended_at = T0 + 5
        event = CallEvent(state, T0 + len(self.record.events), sip_code, cause)
        self.record.events.append(event)
        self.hub.publish(self.record, event)
        self.commit()


@dataclass
class Collector:
    events: list[PublishedEvent] = field(default_factory=list)
    closed: int = 0

    def event(self, event: PublishedEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed += 1

    def ids(self) -> list[int]:
        return [e.id for e in self.events]


WEBHOOK = WebhookConfig(URL, "k")
ENDED_ONLY = WebhookConfig(URL2, "k2", ("call.ended",))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sipdial.db"


def test_publish_builds_the_payload(db: Path) -> None:
    h = Hub(db)
    sub = Collector()
    h.hub.subscribe(sub)
    call = h.call()
    call.enter("user_ringing", sip_code=180)
    call.enter("ended", cause="user_no_answer", sip_code=408)
    dialing, ringing, ended = (json.loads(e.payload) for e in sub.events)
    assert dialing["id"] == 1
    assert dialing["event"] == "call.dialing"
    assert dialing["leg"] == "user"
    assert dialing["cause"] is None and dialing["missed"] is False
    assert dialing["call"]["id"] == "c1"
    assert dialing["call"]["state"] == "calling_user"
    assert dialing["time"] == "2025-11-21T13:35:55.000Z"
    assert (ringing["event"], ringing["sip_code"], ringing["state"]) == (
        "call.ringing", 180, "user_ringing")
    assert ended["event"] == "call.ended"
    assert (ended["cause"], ended["missed"], ended["leg"]) == ("user_no_answer", True, None)
    assert ended["call"]["state"] == "ended"
    assert [e["state"] for e in ended["call"]["events"]] == [
        "calling_user", "user_ringing", "ended"]
    assert [(e.name, e.user, e.call_id) for e in sub.events] == [
        ("call.dialing", "201", "c1"), ("call.ringing", "201", "c1"), ("call.ended", "201", "c1")]


def test_payload_is_exactly_json_dumps_of_the_document(db: Path) -> None:
    """The hub serialises each call event once and splices the texts; the payload must be
    the very text json.dumps gives for the whole document, also after the record's events
    were replaced (a read from the store) and for non-ASCII text."""
    h = Hub(db)
    sub = Collector()
    h.hub.subscribe(sub)
    call = h.call()
    call.record.to = "Zoë \"Ω\" \u2028"
    call.enter("user_ringing", sip_code=180)
    call.record.events = [CallEvent(e.state, e.time, e.sip_code, e.detail)
                          for e in call.record.events]
    call.enter("user_answered", sip_code=200)
    call.enter("ended", cause="completed")
    for published in sub.events:
        document = json.loads(published.payload)
        assert published.payload == json.dumps(document, ensure_ascii=False,
                                               separators=(",", ":"))
    last = json.loads(sub.events[-1].payload)
    assert last["call"] == call.record.to_json()
    assert h.hub._event_texts == {}  # dropped once the call ended


def test_publish_writes_events_and_one_outbox_row_per_matching_webhook(db: Path) -> None:
    h = Hub(db, (WEBHOOK, ENDED_ONLY))
    call = h.call()
    call.enter("user_ringing")
    call.enter("ended", cause="user_busy")
    assert h.rows("SELECT id, call_id, user_id, name FROM events ORDER BY id") == [
        (1, "c1", "201", "call.dialing"), (2, "c1", "201", "call.ringing"),
        (3, "c1", "201", "call.ended")]
    assert h.rows("SELECT id, webhook_url, event_id, event_name, status FROM webhook_outbox "
                  "ORDER BY id") == [
        (1, URL, 1, "call.dialing", "pending"), (2, URL, 2, "call.ringing", "pending"),
        (3, URL, 3, "call.ended", "pending"), (4, URL2, 3, "call.ended", "pending")]
    payloads = h.rows("SELECT e.payload, o.payload FROM events e JOIN webhook_outbox o "
                      "ON o.event_id = e.id")
    assert all(a == b for a, b in payloads)


def test_hub_delivers_in_order_and_marks_rows_done(db: Path) -> None:
    h = Hub(db, (WEBHOOK,))
    call = h.call()
    call.enter("user_ringing")
    h.clock.advance(0)
    assert h.poster.ids() == [1]
    h.poster.posts[0].d.callback(500)
    h.clock.advance(1)
    h.poster.posts[1].d.callback(200)
    h.clock.advance(0)
    h.poster.posts[2].d.callback(200)
    assert h.poster.ids() == [1, 1, 2]
    assert h.rows("SELECT id, attempts, status, last_error FROM webhook_outbox") == [
        (1, 2, "done", "HTTP 500"), (2, 1, "done", None)]


def test_ids_continue_and_pending_deliveries_resume_after_a_restart(db: Path) -> None:
    h = Hub(db, (WEBHOOK,))
    call = h.call()
    call.enter("user_ringing")
    call.enter("user_answered")
    h.clock.advance(0)
    h.poster.posts[0].d.callback(200)  # 1 delivered; 2 in flight at stop; 3 waiting
    h.clock.advance(0)
    h.stop()

    h2 = Hub(db, (WEBHOOK,))
    assert h2.hub.last_event_id == 3
    h2.clock.advance(0)
    assert h2.poster.ids() == [2]  # the one in flight at stop goes again, first
    h2.poster.posts[0].d.callback(200)
    h2.clock.advance(0)
    h2.poster.posts[1].d.callback(200)
    assert h2.poster.ids() == [2, 3]
    h2.call("c2")
    assert h2.rows("SELECT MAX(id) FROM events") == [(4,)]
    assert h2.rows("SELECT id, status FROM webhook_outbox ORDER BY id") == [
        (1, "done"), (2, "done"), (3, "done"), (4, "pending")]


def test_pending_rows_of_a_removed_webhook_are_marked_failed(db: Path) -> None:
    h = Hub(db, (WEBHOOK,))
    h.call()
    h.stop()
    h2 = Hub(db, ())
    assert h2.rows("SELECT status, last_error FROM webhook_outbox") == [
        ("failed", "webhook no longer configured")]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_each_worker_uses_its_own_event_and_delivery_ids(tmp_path: Path, index: int) -> None:
    """``sipdial serve --workers 3``: worker k's ids are ≡ k (mod 3), in its own file, and
    continue so after a restart: no two workers ever send one id (sipdial/workers.py)."""
    db = tmp_path / f"w{index}.db"
    h = Hub(db, (WEBHOOK,), ids=(index, 3))
    seen = Collector()
    h.hub.subscribe(seen)
    h.call().enter("user_ringing")
    h.stop()
    h2 = Hub(db, (WEBHOOK,), ids=(index, 3))  # the worker restarted
    h2.call("c2").enter("ended", cause="completed")
    event_ids = [row[0] for row in h2.rows("SELECT id FROM events ORDER BY id")]
    outbox_ids = [row[0] for row in h2.rows("SELECT id FROM webhook_outbox ORDER BY id")]
    h2.stop()
    assert seen.ids() == event_ids[:2]
    assert len(event_ids) == 4 and len(outbox_ids) == 4
    for ids in (event_ids, outbox_ids):
        assert all(i > 0 and i % 3 == index for i in ids), ids
        assert ids == [ids[0] + 3 * n for n in range(4)], ids


def test_a_worker_that_released_nothing_says_0(tmp_path: Path) -> None:
    """Worker 1 of 2 starts its ids at 1: before it, its last released id is 0 (not -1,
    which in an SSE cursor '-1.5' a client could not send back)."""
    h = Hub(tmp_path / "w1.db", ids=(1, 2))
    assert h.hub.last_event_id == 0
    h.call().enter("user_ringing")
    assert h.hub.last_event_id == 3  # 1, 3
    h.stop()


def test_ids_continue_above_the_other_workers_files(tmp_path: Path) -> None:
    """Fewer workers than before: worker 0's ids go on above the highest id of any file,
    not only its own, so an id an old worker 2 sent is not sent again."""
    h = Hub(tmp_path / "w0.db", (WEBHOOK,), ids=(0, 2), id_floor=(1002, 77))
    h.call().enter("ended", cause="completed")
    ids = [row[0] for row in h.rows("SELECT id FROM events ORDER BY id")]
    outbox = [row[0] for row in h.rows("SELECT id FROM webhook_outbox ORDER BY id")]
    h.stop()
    assert ids == [1004, 1006] and outbox == [78, 80]


def test_events_before_start_or_after_stop_are_dropped(db: Path) -> None:
    h = Hub(db)
    clock = Clock()
    early = EventHub(h.store, clock, (), poster=FakePoster())
    Call.new(early)  # logged and dropped, does not raise
    h.stop()
    assert h.hub.last_event_id == 0


def test_a_failing_subscriber_does_not_disturb_publishing(db: Path) -> None:
    h = Hub(db)

    class Broken(Collector):
        def event(self, event: PublishedEvent) -> None:
            raise RuntimeError("boom")

    broken, good = Broken(), Collector()
    h.hub.subscribe(broken)
    h.hub.subscribe(good)
    call = h.call()
    call.enter("user_ringing")
    assert good.ids() == [1, 2]
    # never left open and deaf: the failing stream is closed (its client reconnects and
    # resumes with Last-Event-ID) and gets nothing more
    assert broken.closed == 1 and good.closed == 0
    call.enter("connected")
    assert good.ids() == [1, 2, 3] and broken.closed == 1


def test_duplicate_webhook_urls_are_used_once(db: Path) -> None:
    h = Hub(db, (WEBHOOK, WebhookConfig(URL, "other")))
    h.call()
    assert h.rows("SELECT COUNT(*) FROM webhook_outbox") == [(1,)]


# --------------------------------------------------------------------- subscriptions


def test_subscribers_get_live_events_filtered_by_user(db: Path) -> None:
    h = Hub(db)
    everyone, only_201 = Collector(), Collector()
    h.hub.subscribe(everyone)
    h.hub.subscribe(only_201, user="201")
    h.call("a", user="201")
    h.call("b", user="202")
    assert everyone.ids() == [1, 2]
    assert only_201.ids() == [1]


def test_cancelled_subscription_gets_nothing(db: Path) -> None:
    h = Hub(db)
    sub = Collector()
    subscription = h.hub.subscribe(sub)
    subscription.cancel()
    subscription.cancel()
    h.call()
    assert sub.events == []


def test_resume_from_the_ring_buffer(db: Path) -> None:
    h = Hub(db)
    call = h.call(user="201")
    h.call("other", user="202")
    call.enter("user_ringing")
    sub = Collector()
    h.hub.subscribe(sub, user="201", after=1)
    assert sub.ids() == [3]
    call.enter("user_answered")
    assert sub.ids() == [3, 4]


def test_resume_after_the_newest_or_a_future_id_is_live_only(db: Path) -> None:
    h = Hub(db)
    h.call()
    sub = Collector()
    h.hub.subscribe(sub, after=99)
    h.call("c2")
    assert sub.ids() == [2]


def test_resume_from_the_database_when_the_ring_no_longer_has_it(db: Path) -> None:
    h = Hub(db, buffer_size=2)
    call = h.call()
    for state in ("user_ringing", "user_answered", "calling_target", "target_ringing"):
        call.enter(state)
    sub = Collector()
    h.hub.subscribe(sub, after=1)
    assert sub.ids() == [2, 3, 4, 5]
    call.enter("connected")
    assert sub.ids() == [2, 3, 4, 5, 6]


def test_resume_after_a_restart_reads_the_database(db: Path) -> None:
    h = Hub(db)
    h.call("a", user="201")
    h.call("b", user="202")
    h.call("c", user="201")
    h.stop()
    h2 = Hub(db)
    sub = Collector()
    h2.hub.subscribe(sub, user="201", after=0)
    assert sub.ids() == [1, 3]


class SlowStore:
    """The real store, but ``events_after`` answers only when the test says so."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.reads: list[tuple[Deferred[list[PublishedEvent]], Deferred[Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def events_after(self, after: int, *, user: str | None = None,
                     limit: int = 500) -> Deferred[list[PublishedEvent]]:
        real = self._store.events_after(after, user=user, limit=limit)
        later: Deferred[list[PublishedEvent]] = Deferred()
        self.reads.append((real, later))
        return later

    def answer(self) -> None:
        real, later = self.reads.pop(0)
        later.callback(result(real))


def test_events_published_during_a_database_replay_follow_without_gaps_or_repeats(
    db: Path,
) -> None:
    slow: list[SlowStore] = []

    def wrap(store: SqliteStore) -> SlowStore:
        slow.append(SlowStore(store))
        return slow[0]

    h = Hub(db, buffer_size=1, store_wrapper=wrap)
    call = h.call()
    call.enter("user_ringing")
    call.enter("user_answered")
    sub = Collector()
    h.hub.subscribe(sub, after=0)
    call.enter("calling_target")  # published while the history is being read
    assert sub.ids() == []
    slow[0].answer()  # the read saw events 1-3 (it was issued before event 4)
    assert sub.ids() == [1, 2, 3, 4]
    call.enter("target_ringing")
    assert sub.ids() == [1, 2, 3, 4, 5]


def test_replay_reads_page_by_page(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sipdial.events.hub._REPLAY_PAGE", 2)
    h = Hub(db, buffer_size=1)
    for i in range(5):
        h.call(f"c{i}")
    sub = Collector()
    h.hub.subscribe(sub, after=0)
    assert sub.ids() == [1, 2, 3, 4, 5]


def test_stop_closes_every_subscriber(db: Path) -> None:
    h = Hub(db)
    a, b = Collector(), Collector()
    h.hub.subscribe(a)
    h.hub.subscribe(b)
    h.stop()
    assert (a.closed, b.closed) == (1, 1)
    with pytest.raises(RuntimeError):
        h.hub.subscribe(Collector())


def test_a_waiting_retry_is_brought_forward_by_a_restart(db: Path) -> None:
    h = Hub(db, (WEBHOOK,))
    h.call()
    h.clock.advance(0)
    h.poster.posts[0].d.callback(500)  # next try at T0 + 1
    h.stop()
    h2 = Hub(db, (WEBHOOK,))  # its clock is at T0 again
    h2.clock.advance(0)
    assert h2.poster.ids() == [1]
    h2.poster.posts[0].d.callback(500)
    (row,) = h2.rows("SELECT attempts, next_attempt_at FROM webhook_outbox")
    assert row == (2, T0 + 2)  # the backoff went on from the attempts made


# ------------------------------------------------- after a crash (issue 7 §3, §1)


def committed_outbox_ids(path: Path) -> set[int]:
    """What another process (a restart) would find: read with a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM webhook_outbox")}
    finally:
        conn.close()


def test_nothing_leaves_before_its_rows_are_committed(db: Path) -> None:
    h = Hub(db, (WEBHOOK,))
    at_post: list[set[int]] = []
    real_post = h.poster.post

    def post(url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[int]:
        at_post.append(committed_outbox_ids(db))
        return real_post(url, body, headers)

    h.poster.post = post  # type: ignore[method-assign]
    sub = Collector()
    h.hub.subscribe(sub)
    call = Call.new(h.hub)  # the engine's write and publish; the store has not flushed yet
    call.enter("ended", cause="completed")
    h.clock.advance(0)  # the deliverer's timer would have sent it here, before the commit
    assert h.poster.posts == [] and sub.events == []
    assert h.hub.last_event_id == 0
    h.clock.advance(0.05)  # the store's flush: committed, then handed on
    assert sub.ids() == [1, 2]
    h.clock.advance(0)
    assert h.poster.ids() == [1]
    assert at_post == [{1, 2}]  # the delivery's row was committed before its POST
    h.poster.posts[0].d.callback(200)
    h.clock.advance(0)
    assert h.poster.ids() == [1, 2]
    assert 2 in at_post[1]


def crash(h: Hub) -> None:
    """kill -9: whatever the store has not committed is gone; nothing is stopped."""
    h.store._take_pending()
    h.hub._deliverer._cancel_timer()


def test_ids_seen_outside_are_never_used_again_after_a_crash(db: Path) -> None:
    seen: dict[str, dict[int, str]] = {"event": {}, "delivery": {}}

    def record(h: Hub, sub: Collector) -> None:
        for event in sub.events:
            assert seen["event"].setdefault(event.id, event.payload) == event.payload
        for post in h.poster.posts:
            delivery = int(post.headers["X-Sipdial-Delivery"])
            body = post.body.decode()
            assert seen["delivery"].setdefault(delivery, body) == body, delivery

    for run in range(3):
        h = Hub(db, (WEBHOOK,))
        h.poster.answer = 200
        sub = Collector()
        h.hub.subscribe(sub)
        committed = h.call(f"a{run}")  # committed: delivered
        committed.enter("user_ringing")
        h.clock.advance(0)
        Call.new(h.hub, f"b{run}").enter("user_ringing")  # not yet committed at the crash
        h.clock.advance(0)
        record(h, sub)
        crash(h)
    assert len(seen["event"]) == 6 and len(seen["delivery"]) == 6


def test_a_delivery_in_flight_at_a_crash_goes_again_with_the_same_id(db: Path) -> None:
    h = Hub(db, (WEBHOOK,))
    h.call()
    h.clock.advance(0)
    (first,) = h.poster.posts  # in flight: no answer yet
    crash(h)
    h2 = Hub(db, (WEBHOOK,))
    h2.clock.advance(0)
    (again,) = h2.poster.posts
    assert again.headers["X-Sipdial-Delivery"] == first.headers["X-Sipdial-Delivery"] == "1"
    assert again.body == first.body


def test_a_lone_surrogate_is_escaped_so_the_event_is_stored_and_sent(db: Path) -> None:
    h = Hub(db, (WEBHOOK,))
    sub = Collector()
    h.hub.subscribe(sub)
    call = Call(h.hub, CallRecord("c1", "201", "sip:49\ud800@127.0.0.1", "refer",
                                  "calling_user", None, T0, None), h.commit)
    call.enter("calling_user")
    other = h.call("c2")
    h.clock.advance(0)
    assert sub.ids() == [1, 2]
    document = json.loads(sub.events[0].payload)
    assert document["call"]["to"] == "sip:49\ud800@127.0.0.1"  # the same document
    assert '"to":"sip:49\\ud800@127.0.0.1"' in sub.events[0].payload
    sub.events[0].payload.encode("utf-8")  # and UTF-8 can carry it
    assert h.rows("SELECT id FROM events ORDER BY id") == [(1,), (2,)]
    assert [json.loads(p.body)["call"]["id"] for p in h.poster.posts] == ["c1", "c2"]
    assert other.record.id == "c2"


def test_an_event_whose_row_is_refused_is_sent_nowhere(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Hub(db, (WEBHOOK,))
    sub = Collector()
    h.hub.subscribe(sub)
    # the events row carries the user as text: the encoder refuses it (the payload and the
    # outbox row escape or do not carry it)
    bad = Call(h.hub, CallRecord("bad", "20\udc01", "+49", "refer", "calling_user", None, T0,
                                 None), h.commit)
    with caplog.at_level(logging.ERROR):
        bad.enter("calling_user")
        h.call("good")
    h.clock.advance(0)
    assert [e.call_id for e in sub.events] == ["good"]
    assert [json.loads(p.body)["call"]["id"] for p in h.poster.posts] == ["good"]
    assert h.rows("SELECT event_id, status, last_error FROM webhook_outbox ORDER BY id") == [
        (1, "failed", "its event could not be stored"), (2, "pending", None)]
    assert any("event 1 (call.dialing, call bad) could not be stored" in r.getMessage()
               for r in caplog.records)


def test_a_body_that_cannot_be_encoded_fails_alone_and_the_timer_goes_on() -> None:
    h = Delivery()
    bad = entry(1, call_id="bad")
    bad.payload = '{"to":"\ud800"}'
    h.deliverer.add(bad)
    h.deliverer.add(entry(2, call_id="good"))
    h.tick(0)
    assert [json.loads(p.body)["id"] for p in h.poster.posts] == [2]
    assert bad.attempts == 1 and bad.last_error is not None
    assert "UnicodeEncodeError" in bad.last_error


def test_resume_after_an_id_whose_event_is_not_yet_committed(db: Path) -> None:
    h = Hub(db)
    call = Call.new(h.hub)  # ids 1-3 assigned, none committed yet
    call.enter("user_ringing")
    call.enter("user_answered")
    sub = Collector()
    h.hub.subscribe(sub, after=2)  # a client that saw 1 and 2 in an earlier stream
    h.commit()
    assert sub.ids() == [3]
