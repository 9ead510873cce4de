"""CAMARA ClickToDial (issue 10 §5) without sockets or phones: the request checks, the
status/reason mapping, the CloudEvent, and the HTTP surface on a fake engine (the Gherkin
scenarios of 0.1.0-rc.1 that need no call to progress). Live: test_camara_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.selectreactor import SelectReactor

from sipdial.api import ApiError
from sipdial.api.camara import camara_error, parse_create
from sipdial.events.camara import CLOUDEVENT_TYPE, cloud_event, status_changed, status_of
from sipdial.numbers import check_e164
from sipdial.store import CallEvent, CallRecord
from tests.unit.test_http_api import FakeApi, Server, serve
from tests.unit.test_http_api import reactor as reactor

CALLS = "/click-to-dial/v0.1rc1/calls"
UUID = "b4333c46-49c0-4f62-80d7-f0ef930f1c46"
NOW = 1_800_000_000.0  # 2027-01-15


def body(**overrides: Any) -> dict[str, Any]:
    return {"caller": {"number": "+4930201"}, "callee": {"number": "+4930123456"},
            **overrides}


@pytest.mark.parametrize(("payload", "status", "code"), [
    ([], 400, "INVALID_ARGUMENT"),
    ({"callee": {"number": "+4930123456"}}, 400, "INVALID_ARGUMENT"),
    (body(caller={}), 400, "INVALID_ARGUMENT"),
    (body(caller={"number": "+4930201", "x": 1}), 400, "INVALID_ARGUMENT"),
    (body(unknownProperty="someValue"), 400, "INVALID_ARGUMENT"),
    (body(caller={"number": "030201"}), 422, "INVALID_PHONE_NUMBER"),
    (body(callee={"number": "+999123"}), 422, "INVALID_PHONE_NUMBER"),  # no such country
    (body(callee={"number": "+4930201"}), 422, "SAME_CALLER_CALLEE"),
    (body(recordingEnabled=True), 422, "RECORDING_NOT_SUPPORTED"),
    (body(recordingEnabled="yes"), 400, "INVALID_ARGUMENT"),
    (body(sink="ftp://x"), 400, "INVALID_ARGUMENT"),
    (body(sink="https://s/x", sinkCredential={"credentialType": "PRIVATE_KEY_JWT"}), 400,
     "INVALID_ARGUMENT"),
    (body(sink="https://s/x", sinkCredential={
        "credentialType": "ACCESSTOKEN", "accessToken": "a b", "accessTokenType": "bearer",
        "accessTokenExpiresUtc": "2030-01-01T00:00:00Z"}), 400, "INVALID_ARGUMENT"),
    (body(sink="https://s/x", sinkCredential={
        "credentialType": "ACCESSTOKEN", "accessToken": "t", "accessTokenType": "bearer",
        "accessTokenExpiresUtc": "2020-01-01T00:00:00Z"}), 400, "INVALID_ARGUMENT"),
    (body(sink="https://s/x", sinkCredential={
        "credentialType": "ACCESSTOKEN", "accessToken": "t", "accessTokenType": "bearer",
        "accessTokenExpiresUtc": "tomorrow"}), 400, "INVALID_ARGUMENT"),
])
def test_create_call_bodies_are_checked_as_camara_says(payload: object, status: int,
                                                        code: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_create(payload, check_e164, NOW)
    assert (refused.value.status, refused.value.code) == (status, code)


def test_a_good_body_with_a_sink() -> None:
    call = parse_create(body(sink="https://crm.example/sink", sinkCredential={
        "credentialType": "ACCESSTOKEN", "accessToken": "ya29.token",
        "accessTokenType": "bearer", "accessTokenExpiresUtc": "2030-01-01T00:00:00Z"}),
        check_e164, NOW)
    assert (call.caller, call.callee, call.sink, call.sink_token) == (
        "+4930201", "+4930123456", "https://crm.example/sink", "ya29.token")


@pytest.mark.parametrize(("state", "cause", "connected", "expected"), [
    ("calling_user", None, False, ("callingCaller", None)),
    ("awaiting_confirmation", None, False, ("callingCaller", None)),
    ("target_ringing", None, False, ("callingCallee", None)),
    ("connected", None, True, ("connected", None)),
    ("ended", "completed", True, ("disconnected", "hangUp")),
    ("ended", "cancelled", True, ("disconnected", "hangUp")),
    # CAMARA gives a reason only with disconnected: the unanswered end so, with a reason
    ("ended", "user_busy", False, ("disconnected", "callerBusy")),
    ("ended", "user_no_answer", False, ("disconnected", "callerNoAnswer")),
    ("ended", "not_confirmed", False, ("disconnected", "callerAbandon")),
    ("ended", "target_busy", False, ("disconnected", "calleeBusy")),
    ("ended", "target_no_answer", False, ("disconnected", "calleeNoAnswer")),
    ("ended", "target_failed", False, ("disconnected", "calleeFailure")),
    ("ended", "cancelled", False, ("disconnected", "hangUp")),  # DELETE before answer
    ("ended", "interrupted", True, ("disconnected", "other")),
    ("ended", "failed", False, ("failed", None)),
    ("ended", "interrupted", False, ("failed", None)),
])
def test_states_and_causes_map_to_camara(state: str, cause: str | None, connected: bool,
                                         expected: tuple[str, str | None]) -> None:
    assert status_of(state, cause, connected) == expected


def test_the_cloud_event_of_a_disconnected_call() -> None:
    record = CallRecord(id="c1", user="201", to="+4930123456", mode="bridge", state="ended",
                        cause="completed", created_at=100.0, ended_at=190.0,
                        caller="+4930201")
    events = [CallEvent("calling_user", 100.0), CallEvent("calling_target", 104.0),
              CallEvent("connected", 110.0), CallEvent("ended", 190.0)]
    record.events = events
    assert not status_changed(record, CallEvent("user_ringing", 101.0),
                              CallEvent("user_answered", 102.0))
    assert status_changed(record, events[0], events[1])
    document = json.loads(cloud_event(record, events[3]))
    assert document["type"] == CLOUDEVENT_TYPE and document["specversion"] == "1.0"
    assert document["data"] == {
        "callId": "c1", "caller": "+4930201", "callee": "+4930123456",
        "status": {"state": "disconnected", "reason": "hangUp"}, "callDuration": "80",
        "timestamp": "1970-01-01T00:03:10.000Z"}
    assert json.loads(cloud_event(record, events[1]))["data"]["status"] == {
        "state": "callingCallee"}
    first = json.loads(cloud_event(record, events[0]))
    assert first["id"] != document["id"]


def test_errors_become_camara_error_info() -> None:
    assert camara_error(401, "unauthorized", "m") == {
        "status": 401, "code": "UNAUTHENTICATED", "message": "m"}
    assert camara_error(409, "user_not_registered", "m") == {
        "status": 422, "code": "CALLER_NOT_AVAILABLE", "message": "m"}
    assert camara_error(409, "user_busy", "m")["code"] == "CALL_ALREADY_ACTIVE"
    assert camara_error(409, "user_busy", "m", "v0.1")["code"] == "ALREADY_EXISTS"
    assert camara_error(422, "invalid_header", "m")["status"] == 400
    assert camara_error(422, "no_route", "m")["code"] == "CALLEE_NOT_AVAILABLE"
    assert camara_error(403, "destination_forbidden", "m")["code"] == "PERMISSION_DENIED"
    assert camara_error(429, "rate_limited", "m")["code"] == "TOO_MANY_REQUESTS"


# ------------------------------------------------------------------------------- HTTP

@pytest.fixture
def camara(reactor: SelectReactor) -> Iterator[Server]:
    yield from serve(reactor, FakeApi(), camara_sinks=("https://crm.example/",))


def _request(server: Server, method: str, path: str, **kw: Any) -> Any:
    headers = {"x-correlator": UUID, **kw.pop("headers", {})}
    return server.request(method, path, headers=headers, **kw)


def test_create_call_for_a_users_number_rings_that_user(camara: Server) -> None:
    r = _request(camara, "POST", CALLS, body=body())
    assert r.status == 201, r.json
    assert r.headers["x-correlator"] == UUID
    assert r.json["caller"] == {"number": "+4930201"}
    assert r.json["callee"] == {"number": "+4930123456"}
    assert r.json["status"] == "callingCaller" and r.json["callId"] == "c1"
    assert camara.api.created[-1]["user"] == "201" and "first_leg" not in camara.api.created[-1]
    assert camara.api.created[-1]["mode"] == "bridge"  # CAMARA follows the call to its end


def test_an_external_caller_is_rung_first_for_the_tokens_user(camara: Server) -> None:
    r = _request(camara, "POST", CALLS, token="tok-202",
                 body=body(caller={"number": "+491712345678"}))
    assert r.status == 201, r.json
    assert camara.api.created[-1]["user"] == "202"
    assert camara.api.created[-1]["first_leg"] == "+491712345678"
    assert camara.api.created[-1]["mode"] == "bridge"
    r = _request(camara, "POST", CALLS, body=body(caller={"number": "+491712345678"}))
    assert (r.status, r.json["code"]) == (422, "CALLER_NOT_AVAILABLE")  # admin: whose?


def test_a_user_token_cannot_call_as_another_user_nor_to_any_sink(camara: Server) -> None:
    r = _request(camara, "POST", CALLS, token="tok-202", body=body())
    assert (r.status, r.json["code"]) == (403, "INVALID_TOKEN_CONTEXT")
    r = _request(camara, "POST", CALLS, token="tok-201",
                 body=body(sink="https://elsewhere.example/x"))
    assert (r.status, r.json["code"]) == (403, "PERMISSION_DENIED")
    r = _request(camara, "POST", CALLS, token="tok-201",
                 body=body(sink="https://crm.example/hooks/1"))
    assert r.status == 201
    assert camara.api.created[-1]["sink"] == ("https://crm.example/hooks/1", None)
    r = _request(camara, "POST", CALLS, body=body(sink="http://127.0.0.1:8080/v1/calls"))
    assert (r.status, r.json["code"]) == (403, "PERMISSION_DENIED")  # [camara] sinks: all


def test_errors_are_error_info_with_the_correlator(camara: Server) -> None:
    r = _request(camara, "POST", CALLS, token=None, body=body())
    assert r.status == 401
    assert r.json == {"status": 401, "code": "UNAUTHENTICATED", "message": r.json["message"]}
    assert r.headers["x-correlator"] == UUID
    r = _request(camara, "POST", CALLS, body=body(caller={"number": "12"}))
    assert (r.status, r.json["status"], r.json["code"]) == (422, 422, "INVALID_PHONE_NUMBER")
    r = _request(camara, "POST", CALLS, body="{not json")
    assert (r.status, r.json["code"]) == (400, "INVALID_ARGUMENT")
    r = _request(camara, "POST", CALLS, body=body(), headers={"x-correlator": "bad value!"})
    assert (r.status, r.json["code"]) == (400, "INVALID_ARGUMENT")
    assert "x-correlator" not in r.headers
    r = _request(camara, "PUT", CALLS)
    assert (r.status, r.json["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_get_and_terminate_and_recording(camara: Server) -> None:
    camara.api.add_call("c9", "201", state="connected")
    camara.api.calls["c9"].update(events=[{"state": "connected"}], created_at="t", to="+49301")
    r = _request(camara, "GET", f"{CALLS}/c9")
    assert r.status == 200 and r.headers["x-correlator"] == UUID
    assert (r.json["status"], r.json["caller"], r.json["callee"]) == (
        "connected", {"number": "+4930201"}, {"number": "+49301"})
    assert _request(camara, "GET", f"{CALLS}/nope").json["code"] == "NOT_FOUND"
    for bad in ("", "a%20b", "x" * 200):  # missing or malformed: 400
        r = _request(camara, "GET", f"{CALLS}/{bad}")
        assert (r.status, r.json["code"]) == (400, "INVALID_ARGUMENT"), bad
    assert _request(camara, "GET", f"{CALLS}/c9", token="tok-202").status == 403
    r = _request(camara, "GET", f"{CALLS}/c9/recording")
    assert (r.status, r.json["code"]) == (404, "NOT_FOUND")
    r = _request(camara, "DELETE", f"{CALLS}/c9")
    assert r.status == 204 and r.raw == b"" and camara.api.hung_up == ["c9"]
    assert "Content-Length" not in r.headers
    r = _request(camara, "DELETE", f"{CALLS}/c9")  # ended now
    assert (r.status, r.json["code"]) == (409, "CONFLICT")
    r = _request(camara, "GET", "/click-to-dial/v0.1/calls/c9")  # 0.1.0 too
    assert r.json["status"] == "disconnected"


# ------------------------------------------------------------------- the first leg (engine)

def test_an_external_first_leg_needs_first_leg_allow_and_counts_twice() -> None:
    from sipdial.calls import CallRefused, Refusal
    from sipdial.config import parse_config
    from tests.unit.simnet import BASE_CONFIG, Phone, SimNet
    from tests.unit.test_bridge_flow import FakeMedia, FakePrompts

    base = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=10)
    net = SimNet(parse_config(base), media=FakeMedia(), prompts=FakePrompts())
    with pytest.raises(CallRefused) as refused:
        net.create_call(user="201", to="+4930123456", first_leg="+491712345678",
                        mode="bridge")
    assert refused.value.refusal is Refusal.FIRST_LEG_FORBIDDEN
    allowed = base.replace("[calls]\n", '[calls]\nfirst_leg_allow = ["^\\\\+49171"]\n')
    net = SimNet(parse_config(allowed + '\n[[policy]]\nmax_per_minute = 2\n'),
                 media=FakeMedia(), prompts=FakePrompts())
    gateway = Phone(net, "gw", None, port=5080)  # the [[routes]] entry's address
    record = net.create_call(user="201", to="+4930123456", first_leg="+491712345678",
                             mode="bridge")
    assert record.caller == "+491712345678"
    invite = gateway.take_request("INVITE")  # the mobile is rung first, through the route
    assert str(invite.uri).startswith("sip:+491712345678@")
    identity = invite.headers.get("P-Asserted-Identity") or ""
    assert "<sip:201@" in identity, identity  # the user's identity, not the callee's number
    assert "sip:+4930123456@" not in identity and "sip:+4930123456@" not in (
        invite.headers.get("From") or "")
    with pytest.raises(CallRefused) as refused:  # two legs counted: the cap of 2 is used
        net.create_call(user="201", to="+4930123457", first_leg="+491712345678",
                        mode="bridge")
    assert refused.value.refusal is Refusal.RATE_LIMITED


def test_terminate_at_another_worker_is_204_here_too(reactor: SelectReactor) -> None:
    from sipdial.api import WorkerReply
    from tests.unit.test_http_api import FakeWorkers

    workers = FakeWorkers()
    workers.replies[f"DELETE {CALLS}/01abc"] = WorkerReply(204, b"")
    for server in serve(reactor, FakeApi(), workers=workers):
        r = _request(server, "DELETE", f"{CALLS}/01abc")
        assert r.status == 204 and r.raw == b"", (r.status, r.raw)
        assert r.headers["x-correlator"] == UUID
