"""``GET /v1/events`` over real HTTP on 127.0.0.1: the stream format, user scoping,
``Last-Event-ID`` resume (from memory, and from the database after a restart) and clean
unsubscription when the client goes away.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.selectreactor import SelectReactor

from sipdial.api import build_site
from tests.integration.event_helpers import Events, on_reactor, reactor

__all__ = ["reactor"]  # the fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WAIT = 10.0
TOKENS = {"admin-token": "*", "tok-201": "201", "tok-202": "202"}


class NoCalls:
    """The engine side of the API; the event stream does not use it."""

    def known_user(self, user: str) -> bool:
        return user in ("201", "202")

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}


@dataclass
class Frame:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: str | None = None

    @property
    def json(self) -> Any:
        return json.loads("\n".join(self.data))


class Stream:
    """A minimal EventSource: one HTTP request, frames read line by line."""

    def __init__(self, port: int, path: str = "/v1/events", token: str | None = "admin-token",
                 headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        all_headers = {"Accept": "text/event-stream", **(headers or {})}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        self.conn.request("GET", path, headers=all_headers)
        self.response = self.conn.getresponse()

    def frame(self) -> Frame:
        frame = Frame()
        while True:
            raw = self.response.readline()
            if not raw:
                raise EOFError("stream ended")
            line = raw.decode("utf-8").rstrip("\n")
            if line == "":
                return frame
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                frame.comments.append(value)
            elif name == "data":
                frame.data.append(value)
            elif name in ("id", "event", "retry"):
                setattr(frame, name, value)

    def opened(self) -> Stream:
        """Check the response and read the preamble: after it, the stream is subscribed."""
        assert self.response.status == 200, self.response.read()
        assert self.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        assert self.response.getheader("Cache-Control") == "no-store"
        preamble = self.frame()
        assert preamble.comments == ["sipdial events"] and preamble.retry == "3000"
        return self

    def events(self, n: int) -> list[tuple[int, str, str]]:
        """The next ``n`` events as (id, name, call id)."""
        out = []
        for _ in range(n):
            f = self.frame()
            assert f.id is not None and f.event is not None, f
            body = f.json
            assert (body["id"], body["event"]) == (int(f.id), f.event)
            out.append((int(f.id), f.event, body["call"]["id"]))
        return out

    def close(self) -> None:
        self.conn.close()


@dataclass
class Api:
    reactor: SelectReactor
    events: Events
    port: int
    listener: Any

    def stream(self, *args: Any, **kwargs: Any) -> Stream:
        return Stream(self.port, *args, **kwargs)

    def subscriptions(self) -> int:
        return on_reactor(self.reactor, lambda: len(self.events.hub._subscriptions))

    def stop(self) -> None:
        self.events.stop()  # ends every stream
        on_reactor(self.reactor, self.listener.stopListening)


def serve(reactor: SelectReactor, db: Path, **kw: Any) -> Api:
    events = Events.start(reactor, db, **kw)
    site = build_site(NoCalls(), TOKENS, reactor=reactor, events=events.hub)  # type: ignore[arg-type]
    listener = on_reactor(reactor, reactor.listenTCP, 0, site, interface="127.0.0.1")
    return Api(reactor, events, listener.getHost().port, listener)


@pytest.fixture
def api(reactor: SelectReactor, tmp_path: Path) -> Iterator[Api]:
    running = serve(reactor, tmp_path / "sipdial.db")
    yield running
    running.stop()


def test_admin_stream_gets_every_event_in_order(api: Api) -> None:
    stream = api.stream().opened()
    a, b = api.events.call("a", "201"), api.events.call("b", "202")
    a.enter("calling_user")
    b.enter("calling_user")
    a.enter("user_ringing")
    a.enter("ended", cause="user_no_answer")
    assert stream.events(4) == [
        (1, "call.dialing", "a"), (2, "call.dialing", "b"), (3, "call.ringing", "a"),
        (4, "call.ended", "a")]
    stream.close()


def test_the_data_is_the_webhook_payload(api: Api) -> None:
    stream = api.stream().opened()
    call = api.events.call("a")
    call.enter("calling_user")
    call.enter("ended", cause="user_no_answer")
    stream.frame()
    ended = stream.frame()
    assert ended.event == "call.ended" and len(ended.data) == 1
    body = ended.json
    assert (body["cause"], body["missed"], body["state"]) == ("user_no_answer", True, "ended")
    assert body["call"]["user"] == "201"
    assert [e["state"] for e in body["call"]["events"]] == ["calling_user", "ended"]


def test_user_token_sees_only_its_own_calls(api: Api) -> None:
    mine = api.stream(token="tok-201").opened()
    theirs = api.stream("/v1/events?user=202").opened()  # admin, filtered
    api.events.call("b", "202").enter("calling_user")
    api.events.call("a", "201").enter("calling_user")
    api.events.call("c", "202").enter("calling_user")
    api.events.call("d", "201").enter("calling_user")
    assert mine.events(2) == [(2, "call.dialing", "a"), (4, "call.dialing", "d")]
    assert theirs.events(2) == [(1, "call.dialing", "b"), (3, "call.dialing", "c")]


@pytest.mark.parametrize(
    ("path", "token", "headers", "status", "code"),
    [
        ("/v1/events", None, {}, 401, "unauthorized"),
        ("/v1/events", "nope", {}, 401, "unauthorized"),
        ("/v1/events?user=202", "tok-201", {}, 403, "forbidden"),
        ("/v1/events?user=bad%20user", "admin-token", {}, 422, "invalid_request"),
        ("/v1/events", "admin-token", {"Last-Event-ID": "abc"}, 422, "invalid_request"),
        ("/v1/events?last_event_id=-1", "admin-token", {}, 422, "invalid_request"),
    ],
)
def test_refusals_are_json_errors(api: Api, path: str, token: str | None,
                                  headers: dict[str, str], status: int, code: str) -> None:
    stream = api.stream(path, token=token, headers=headers)
    assert stream.response.status == status
    assert json.loads(stream.response.read())["error"]["code"] == code
    assert api.subscriptions() == 0


def test_other_methods_are_405(api: Api) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=WAIT)
    conn.request("POST", "/v1/events", body=b"{}",
                 headers={"Authorization": "Bearer admin-token"})
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "GET"
    conn.close()


def test_without_a_hub_there_is_no_event_stream(reactor: SelectReactor) -> None:
    site = build_site(NoCalls(), TOKENS, reactor=reactor)  # type: ignore[arg-type]
    listener = on_reactor(reactor, reactor.listenTCP, 0, site, interface="127.0.0.1")
    try:
        stream = Stream(listener.getHost().port)
        assert stream.response.status == 404
    finally:
        on_reactor(reactor, listener.stopListening)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/events", {"Last-Event-ID": "2"}),
        ("/v1/events?last_event_id=2", {}),
        # the header (what a reconnecting EventSource sends) wins over the query
        ("/v1/events?last_event_id=0", {"Last-Event-ID": "2"}),
    ],
)
def test_resume_after_last_event_id(api: Api, path: str, headers: dict[str, str]) -> None:
    call = api.events.call("a")
    for state in ("calling_user", "user_ringing", "user_answered"):
        call.enter(state)
    stream = api.stream(path, headers=headers).opened()
    assert stream.events(1) == [(3, "call.answered", "a")]
    call.enter("calling_target")
    assert stream.events(1) == [(4, "call.dialing", "a")]


def test_resume_after_a_restart_comes_from_the_database(
    reactor: SelectReactor, tmp_path: Path
) -> None:
    db = tmp_path / "sipdial.db"
    first = serve(reactor, db)
    stream = first.stream(token="tok-201").opened()
    a, b = first.events.call("a", "201"), first.events.call("b", "202")
    a.enter("calling_user")
    b.enter("calling_user")
    a.enter("user_ringing")
    assert stream.events(2) == [(1, "call.dialing", "a"), (3, "call.ringing", "a")]
    first.stop()
    with pytest.raises(EOFError):  # sipdial stopping ends the stream cleanly
        stream.frame()

    second = serve(reactor, db, buffer_size=4)
    try:
        again = second.stream(token="tok-201", headers={"Last-Event-ID": "1"}).opened()
        a2 = second.events.call("a2", "201")
        a2.enter("calling_user")
        assert again.events(2) == [(3, "call.ringing", "a"), (4, "call.dialing", "a2")]
    finally:
        second.stop()


def test_a_client_that_goes_away_is_unsubscribed(api: Api) -> None:
    streams = [api.stream().opened() for _ in range(3)]
    assert api.subscriptions() == 3
    for stream in streams:
        stream.close()
    deadline = time.monotonic() + WAIT
    while api.subscriptions() and time.monotonic() < deadline:
        time.sleep(0.01)  # the server learns of the close from the socket; nothing to await
    assert api.subscriptions() == 0
    api.events.call("a").enter("calling_user")  # publishing to nobody is fine
    fresh = api.stream(headers={"Last-Event-ID": "0"}).opened()
    assert fresh.events(1) == [(1, "call.dialing", "a")]
