"""Webhooks over real HTTP: a twisted.web receiver on 127.0.0.1 that checks every signature
itself (HMAC-SHA256 over "<timestamp>.<body>"), answers 500 when told to and records the
order of deliveries; a restart of the hub over the same database loses nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.selectreactor import SelectReactor
from twisted.web import resource, server

from sipdial.config import WebhookConfig
from sipdial.events.webhooks import DeliveryPolicy
from tests.integration.event_helpers import Events, on_reactor, reactor

__all__ = ["reactor"]  # the fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = "whsec-test"
WAIT = 10.0  # seconds: the longest any single step may take
FAST = DeliveryPolicy(first_retry=0.2, max_retry=1.0, jitter=0.0, timeout=5.0, stop_grace=5.0)


@dataclass
class Delivery:
    """One POST as the receiver saw it."""

    status: int  #: what the receiver answered
    event: str
    delivery: str
    timestamp: int
    signature_ok: bool
    body: dict[str, Any]


@dataclass
class Receiver(resource.Resource):
    """A CRM's webhook endpoint: answers the scripted statuses, then ``default``."""

    script: list[int] = field(default_factory=list)
    default: int = 200
    received: queue.Queue[Delivery] = field(default_factory=queue.Queue)
    isLeaf = True

    def __post_init__(self) -> None:
        resource.Resource.__init__(self)

    def render_POST(self, request: Any) -> bytes:
        body: bytes = request.content.read()
        timestamp = request.getHeader(b"x-sipdial-timestamp").decode()
        signed = timestamp.encode() + b"." + body
        expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        given = request.getHeader(b"x-sipdial-signature").decode()
        status = self.script.pop(0) if self.script else self.default
        assert request.getHeader(b"content-type") == b"application/json"
        self.received.put(Delivery(
            status=status,
            event=request.getHeader(b"x-sipdial-event").decode(),
            delivery=request.getHeader(b"x-sipdial-delivery").decode(),
            timestamp=int(timestamp),
            signature_ok=hmac.compare_digest(expected, given),
            body=json.loads(body),
        ))
        request.setResponseCode(status)
        return b"ok"

    def take(self, n: int) -> list[Delivery]:
        return [self.received.get(timeout=WAIT) for _ in range(n)]


@pytest.fixture
def receiver(reactor: SelectReactor) -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    site = server.Site(rec)  # type: ignore[no-untyped-call]
    port = on_reactor(reactor, reactor.listenTCP, 0, site, interface="127.0.0.1")
    yield rec, f"http://127.0.0.1:{port.getHost().port}/hooks/sipdial"
    on_reactor(reactor, port.stopListening)


def outbox(db: Path) -> list[tuple[int, int, int, str, str | None]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT id, event_id, attempts, status, last_error FROM webhook_outbox ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def test_signed_in_order_and_retried_after_a_500(
    reactor: SelectReactor, receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    rec, url = receiver
    rec.script = [500]
    db = tmp_path / "sipdial.db"
    events = Events.start(reactor, db, (WebhookConfig(url, SECRET),), FAST)
    call = events.call("c1")
    for state in ("calling_user", "user_ringing", "user_answered", "calling_target",
                  "target_ringing", "connected"):
        call.enter(state)
    call.enter("ended", cause="completed")

    got = rec.take(8)  # 7 events, the first twice
    events.stop()  # lets the last POST finish, then the store writes everything

    assert all(d.signature_ok for d in got)
    assert all(abs(d.timestamp - time.time()) < 60 for d in got)
    assert [d.status for d in got] == [500] + [200] * 7
    assert [d.body["id"] for d in got] == [1, 1, 2, 3, 4, 5, 6, 7]  # retried, still in order
    assert [d.delivery for d in got[:2]] == ["1", "1"]  # the same delivery, twice
    assert [d.event for d in got[1:]] == [
        "call.dialing", "call.ringing", "call.answered", "call.dialing", "call.ringing",
        "call.connected", "call.ended"]
    assert [d.body["leg"] for d in got[1:]] == [
        "user", "user", "user", "target", "target", None, None]
    assert all(d.event == d.body["event"] for d in got)
    ended = got[-1].body
    assert (ended["cause"], ended["missed"]) == ("completed", False)
    assert ended["call"]["id"] == "c1" and ended["call"]["state"] == "ended"
    assert outbox(db) == [(1, 1, 2, "done", "HTTP 500")] + [
        (i, i, 1, "done", None) for i in range(2, 8)]
    assert rec.received.empty()


def test_calls_are_delivered_in_parallel_only_one_call_waits(
    reactor: SelectReactor, receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    rec, url = receiver
    rec.script = [503]  # call a's first event fails ...
    slow = DeliveryPolicy(first_retry=2.0, max_retry=2.0, jitter=0.0, stop_grace=5.0)
    events = Events.start(reactor, tmp_path / "sipdial.db", (WebhookConfig(url, SECRET),),
                          slow)
    a, b = events.call("a"), events.call("b", user="202")
    a.enter("calling_user")
    (first,) = rec.take(1)
    assert (first.body["call"]["id"], first.status) == ("a", 503)
    a.enter("user_ringing")
    b.enter("calling_user")
    b.enter("user_ringing")
    # ... so b's events arrive while a's wait for the retry (2 s away)
    assert [(d.body["call"]["id"], d.event) for d in rec.take(2)] == [
        ("b", "call.dialing"), ("b", "call.ringing")]
    assert [(d.body["call"]["id"], d.event) for d in rec.take(2)] == [
        ("a", "call.dialing"), ("a", "call.ringing")]
    events.stop()


def test_pending_deliveries_survive_a_restart(
    reactor: SelectReactor, receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    rec, url = receiver
    rec.default = 500  # the CRM is down
    db = tmp_path / "sipdial.db"
    webhooks = (WebhookConfig(url, SECRET, ("call.dialing", "call.ended")),)
    slow = DeliveryPolicy(first_retry=60.0, max_retry=60.0, jitter=0.0, stop_grace=5.0)
    first = Events.start(reactor, db, webhooks, slow)
    call = first.call("c1")
    call.enter("calling_user")
    call.enter("user_ringing")  # not subscribed: no row
    call.enter("ended", cause="user_no_answer")
    (failed,) = rec.take(1)
    assert (failed.status, failed.event) == (500, "call.dialing")
    first.stop()
    assert outbox(db) == [(1, 1, 1, "pending", "HTTP 500"), (2, 3, 0, "pending", None)]

    rec.default = 200  # the CRM is back; sipdial starts again on the same database
    second = Events.start(reactor, db, webhooks, slow)
    resumed = rec.take(2)
    assert [(d.delivery, d.event, d.status) for d in resumed] == [
        ("1", "call.dialing", 200), ("2", "call.ended", 200)]
    assert resumed[1].body["missed"] is True
    assert all(d.signature_ok for d in resumed)
    call2 = second.call("c2")
    call2.enter("calling_user")
    (new,) = rec.take(1)
    assert (new.delivery, new.body["id"]) == ("3", 4)  # ids continue after the restart
    second.stop()
    assert [row[3] for row in outbox(db)] == ["done", "done", "done"]
    assert rec.received.empty()
