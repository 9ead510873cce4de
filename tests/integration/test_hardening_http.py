"""Issue 7 §1 over real sockets: a call whose data UTF-8 cannot carry (a lone surrogate,
stored before the API refused such text) or that holds line separators does not make the
event fan-out drop anyone. Real EventHub and SQLite store, real HTTP on 127.0.0.1, real
SSE clients reading line by line; every later event still reaches every stream.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.selectreactor import SelectReactor

from sipdial.store.models import CallRecord
from tests.integration.c2d_helpers import make_sipdial, place_call
from tests.integration.event_helpers import LiveCall, reactor
from tests.integration.test_sse import Api, serve
from tests.peers.baresip import Baresip
from tests.sipdial_proc import ADMIN

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


# ------------------------------------------------- the request, to a real sipdial

HOSTILE_BODIES: list[tuple[bytes, int, str]] = [
    # the request: a lone surrogate, as valid JSON
    (b'{"user":"201","to":"sip:49\\ud800@127.0.0.1"}', 422, "invalid_destination"),
    (b'{"user":"201","to":"sip:%ED%A0%80@192.0.2.9"}', 422, "invalid_destination"),
    (b'{"user":"201","to":"sip:49%0D%0AX-Evil:%201@127.0.0.1"}', 422, "invalid_destination"),
    (b'{"user":"201","to":"+4930123456","device":"\\ud800"}', 422, "invalid_request"),
    (b'{"user":"201","to":"+4930123456","\\udfff":1}', 422, "invalid_request"),
    (b"[" * 30000 + b"]" * 30000, 400, "invalid_json"),
]


def _admin_events(port: int, out: queue.Queue[dict[str, Any]],
                  stop: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {ADMIN}"})
    response = conn.getresponse()
    data: list[str] = []
    while not stop.is_set():
        line = response.fp.readline()
        if not line:
            out.put({"event": "<stream ended>"})
            break
        text = line.decode("utf-8").rstrip("\n")
        if text.startswith("data: "):
            data.append(text[6:])
        elif text == "" and data:
            out.put(json.loads("\n".join(data)))
            data = []
    conn.close()


def _post(port: int, body: bytes) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/calls", body=body, headers={
            "Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read().decode("utf-8"))
    finally:
        conn.close()


def test_hostile_requests_to_a_real_sipdial_lose_nothing(tmp_path: Path) -> None:
    """Between two real calls, the issue's requests: each is a 4xx JSON error; the admin's
    event stream gets every event of both calls, and the first call keeps its history."""
    stop = threading.Event()
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    with make_sipdial(tmp_path) as sd, \
            Baresip(tmp_path, user="201", password="secret201", auto_answer=False,
                    registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False) as phone:
        phone.wait_registered()
        sd.wait_registered("201")
        port = sd.info["http"]["port"]
        threading.Thread(target=_admin_events, args=(port, events, stop), daemon=True).start()
        try:
            first = place_call(sd)
            sd.wait_state(first["id"], "user_ringing", timeout=10)
            for body, status, code in HOSTILE_BODIES:
                got, reply = _post(port, body)
                assert (got, reply["error"]["code"]) == (status, code), (body[:60], reply)
            assert sd.api("DELETE", f"/v1/calls/{first['id']}")[0] == 200
            sd.wait_state(first["id"], "ended", timeout=10)
            second = place_call(sd)
            assert sd.api("DELETE", f"/v1/calls/{second['id']}")[0] == 200
            sd.wait_state(second["id"], "ended", timeout=10)
            seen: list[tuple[str, str]] = []
            while ("call.ended", second["id"]) not in seen:
                event = events.get(timeout=10)
                assert event["event"] != "<stream ended>"
                seen.append((event["event"], event["call"]["id"]))
            assert {call for _name, call in seen} == {first["id"], second["id"]}
            assert ("call.ended", first["id"]) in seen
            status, call = sd.api("GET", f"/v1/calls/{first['id']}")
            assert status == 200
            assert [e["state"] for e in call["events"]][:2] == ["calling_user", "user_ringing"]
            assert call["events"][-1]["state"] == "ended"
        finally:
            stop.set()
        log = sd.log_text()
        assert "Traceback" not in log and "lost" not in log, log[-3000:]
