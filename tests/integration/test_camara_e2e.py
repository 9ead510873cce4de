"""CAMARA ClickToDial with real phones (issue 10 §5): the createCall / getCall /
terminateCall scenarios of 0.1.0-rc.1 against a running sipdial, baresip as user 201 (its
number +4921133990201 is the caller), SIPp as the callee, and a CloudEvents receiver as the
sink. And an external caller: a "mobile" SIPp behind a route is rung first, then the
callee, and bridged."""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import ROUTE_MATCH, wait_until
from tests.peers.baresip import Baresip
from tests.peers.sipp import LOOPBACK, Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

CALLS = "/click-to-dial/v0.1rc1/calls"
CALLER = "+4921133990201"
CALLEE = "+4930123456"
TOKEN = "ya29.sink-token"


class Sink(ThreadingHTTPServer):
    """The CloudEvents receiver (the request's ``sink``)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.events: queue.Queue[tuple[dict[str, str], dict[str, Any]]] = queue.Queue()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/sink/"

    def states_until(self, last: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not got or got[-1]["data"]["status"]["state"] != last:
            headers, event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            assert headers["Authorization"] == f"Bearer {TOKEN}", headers
            assert headers["Content-Type"] == "application/cloudevents+json", headers
            got.append(event)
        return got


class _SinkHandler(BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:
        data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.events.put((dict(self.headers), data))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _create(sd: Sipdial, sink: Sink, caller: str = CALLER, token: str = "admin-secret",
            ) -> dict[str, Any]:
    status, call = sd.api("POST", CALLS, {
        "caller": {"number": caller}, "callee": {"number": CALLEE}, "sink": sink.url,
        "sinkCredential": {"credentialType": "ACCESSTOKEN", "accessToken": TOKEN,
                           "accessTokenType": "bearer",
                           "accessTokenExpiresUtc": "2099-01-01T00:00:00Z"}}, token=token)
    assert status == 201, call
    assert (call["caller"], call["callee"]) == ({"number": caller}, {"number": CALLEE})
    return dict(call)


def _sipdial(tmp_path: Path, routes: list[dict[str, str]], sink: Sink) -> Sipdial:
    return Sipdial(tmp_path, users=[{"id": "201", "password": "secret201", "name": "Alice",
                                     "auto_answer": True, "number": CALLER}],
                   routes=routes, calls={"first_leg_allow": ["^\\+49171"]},
                   extra=f'[camara]\nsinks = ["{sink.url}"]\n')


def test_create_get_and_the_events_of_a_call_that_completes(tmp_path: Path) -> None:
    sink = Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        with Sipp.uas(tmp_path, "uas_answer_then_bye.xml", duration_ms=1500,
                      timeout=60) as dest:
            sd = _sipdial(tmp_path, [{"match": ROUTE_MATCH,
                                      "uri": f"sip:{{number}}@{LOOPBACK}:{dest.port}"}],
                          sink)
            with sd.start():
                dest.start()
                with Baresip(tmp_path, user="201", password="secret201",
                             registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False):
                    sd.wait_registered("201")
                    call = _create(sd, sink)
                    assert call["status"] in ("initiating", "callingCaller")
                    events = sink.states_until("disconnected")
                    states = [e["data"]["status"]["state"] for e in events]
                    assert states == ["callingCaller", "callingCallee", "connected",
                                      "disconnected"], states
                    last = events[-1]
                    assert last["type"] == "org.camaraproject.click-to-dial.v0.status-changed"
                    assert last["data"]["callId"] == call["callId"]
                    assert (last["data"]["caller"], last["data"]["callee"]) == (CALLER, CALLEE)
                    assert last["data"]["status"]["reason"] == "hangUp"
                    assert int(last["data"]["callDuration"]) >= 1
                    assert len({e["id"] for e in events}) == len(events)
                    status, got = sd.api("GET", f"{CALLS}/{call['callId']}")
                    assert (status, got["status"]) == (200, "disconnected"), got
    finally:
        sink.shutdown()


def test_terminate_a_connected_call_and_an_external_caller_is_rung_first(
        tmp_path: Path) -> None:
    sink = Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        with Sipp.uas(tmp_path, "uas_answer.xml", timeout=60, calls=2) as dest, \
                Sipp.uas(tmp_path, "uas_answer.xml", timeout=60, name="mobile",
                         service="mobile") as mobile:
            sd = _sipdial(tmp_path, [
                {"match": "^\\+49171", "uri": f"sip:{{number}}@{LOOPBACK}:{mobile.port}"},
                {"match": ROUTE_MATCH, "uri": f"sip:{{number}}@{LOOPBACK}:{dest.port}"}],
                sink)
            with sd.start():
                dest.start()
                mobile.start()
                with Baresip(tmp_path, user="201", password="secret201",
                             registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False):
                    sd.wait_registered("201")
                    # terminateCall: 204, then the call is disconnected (hangUp); again: 409
                    call = _create(sd, sink)
                    path = f"{CALLS}/{call['callId']}"
                    wait_until(lambda: sd.api("GET", path)[1]["status"] == "connected", 20,
                               "connected")
                    status, _ = sd.api("DELETE", path)
                    assert status == 204
                    events = sink.states_until("disconnected")
                    assert events[-1]["data"]["status"]["reason"] == "hangUp"
                    status, again = sd.api("DELETE", path)
                    assert (status, again["code"]) == (409, "CONFLICT"), again

                # an external caller: the "mobile" behind the route answers first, then the
                # callee; the call is bridged (the token's user's call)
                external = "+491712345678"
                call = _create(sd, sink, caller=external, token="tok-201")
                path = f"{CALLS}/{call['callId']}"
                wait_until(lambda: sd.api("GET", path)[1]["status"] == "connected", 20,
                           "the external caller connected to the callee")
                assert f"INVITE sip:{external}@" in mobile.messages()
                status, listed = sd.api("GET", f"/v1/calls/{call['callId']}")
                assert (listed["user"], listed["caller"], listed["mode"]) == (
                    "201", external, "bridge"), listed
                assert sd.api("DELETE", path)[0] == 204
                sink.states_until("disconnected")
                # an admin token cannot say whose call an external caller's is
                status, error = sd.api("POST", CALLS, {"caller": {"number": external},
                                                      "callee": {"number": CALLEE}})
                assert (status, error["code"]) == (422, "CALLER_NOT_AVAILABLE")
    finally:
        sink.shutdown()
