"""Shared by the live event tests: a private reactor in a thread, a real store and hub on it,
and a driver that publishes call state changes the way the engine does.

Everything that touches Twisted objects runs on the reactor thread
(``blockingCallFromThread``); the test thread only waits on queues and sockets, with
timeouts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.threads import blockingCallFromThread

from sipdial.config import WebhookConfig
from sipdial.events.hub import EventHub
from sipdial.events.webhooks import DeliveryPolicy
from sipdial.store.models import CallEvent, CallRecord
from sipdial.store.sqlite import SqliteStore

T = TypeVar("T")


@pytest.fixture(scope="module")
def reactor() -> Iterator[SelectReactor]:
    reactor = SelectReactor()
    thread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
    )
    thread.start()
    yield reactor
    reactor.callFromThread(reactor.stop)
    thread.join(10)


def on_reactor(reactor: SelectReactor, f: Callable[..., T | Deferred[T]], *args: Any,
               **kw: Any) -> T:
    """Run ``f`` on the reactor thread; wait for its result (a Deferred's, too)."""
    value: T = blockingCallFromThread(reactor, f, *args, **kw)
    return value


@dataclass
class Events:
    """A started store and hub over one SQLite file."""

    reactor: SelectReactor
    store: SqliteStore
    hub: EventHub

    @classmethod
    def start(cls, reactor: SelectReactor, db: Path,
              webhooks: tuple[WebhookConfig, ...] = (),
              policy: DeliveryPolicy | None = None, buffer_size: int = 1024) -> Events:
        store = SqliteStore(str(db), reactor, flush_interval=0.01)
        on_reactor(reactor, store.start)
        hub = EventHub(store, reactor, webhooks, policy=policy, buffer_size=buffer_size,
                       rng=lambda: 0.0)
        on_reactor(reactor, hub.start)
        return cls(reactor, store, hub)

    def stop(self) -> None:
        on_reactor(self.reactor, self.hub.stop)
        on_reactor(self.reactor, self.store.stop)

    def call(self, call_id: str, user: str = "201") -> LiveCall:
        return LiveCall(self, CallRecord(call_id, user, "+4930123456", "refer", "calling_user",
                                         None, 0.0, None))


@dataclass
class LiveCall:
    events: Events
    record: CallRecord

    def enter(self, state: str, cause: str | None = None) -> None:
        """Record and publish a state change on the reactor thread, as the engine does."""

        def change() -> None:
            now = self.events.reactor.seconds()
            if not self.record.events:
                self.record.created_at = now
            self.record.state = state
            if cause is not None:
                self.record.cause, self.record.ended_at = cause, now
            event = CallEvent(state, now, None, cause)
            self.record.events.append(event)
            self.events.store.save_call(self.record)
            self.events.store.add_event(self.record.id, event)
            self.events.hub.publish(self.record, event)

        on_reactor(self.events.reactor, change)
