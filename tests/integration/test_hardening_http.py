"""Issue 7 §1 over real sockets: a call whose data UTF-8 cannot carry (a lone surrogate,
stored before the API refused such text) or that holds line separators does not make the
event fan-out drop anyone. Real EventHub and SQLite store, real HTTP on 127.0.0.1, real
SSE clients reading line by line; every later event still reaches every stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.selectreactor import SelectReactor

from sipdial.store.models import CallRecord
from tests.integration.event_helpers import LiveCall, reactor
from tests.integration.test_sse import Api, serve

__all__ = ["reactor"]  # the fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def api(reactor: SelectReactor, tmp_path: Path) -> Iterator[Api]:
    running = serve(reactor, tmp_path / "sipdial.db")
    yield running
    running.stop()


def hostile_call(api: Api, call_id: str, *, to: str, device: str | None) -> LiveCall:
    record = CallRecord(call_id, "201", to, "refer", "calling_user", None, 0.0, None,
                        device=device)
    return LiveCall(api.events, record)


@pytest.mark.parametrize(("to", "device"), [
    ("sip:49\ud800@127.0.0.1", None),  # a lone surrogate: no UTF-8 for it
    ("+4930123456", "desk\u2028phone\x85"),  # line separators JSON writes raw
])
def test_every_stream_gets_every_event_after_a_hostile_one(api: Api, to: str,
                                                           device: str | None) -> None:
    admin = api.stream().opened()
    mine = api.stream(token="tok-201").opened()
    hostile_call(api, "bad", to=to, device=device).enter("calling_user")
    api.events.call("next", "201").enter("calling_user")
    api.events.call("later", "202").enter("calling_user")
    for stream in (admin, mine):
        frame = stream.frame()
        assert frame.id == "1" and len(frame.data) == 1  # one data line, as sent
        call = frame.json["call"]
        assert (call["to"], call["device"]) == (to, device)  # the same text, JSON-escaped
    assert mine.events(1) == [(2, "call.dialing", "next")]
    assert admin.events(2) == [(2, "call.dialing", "next"), (3, "call.dialing", "later")]
    assert api.subscriptions() == 2
    admin.close()
    mine.close()
