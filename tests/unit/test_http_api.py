"""The HTTP API over real loopback sockets, with a fake call engine.

A private Twisted reactor (not the global one, which other tests may want to run) runs in a
daemon thread for the session; each test listens on 127.0.0.1:0 and talks plain HTTP to it
from the test thread with ``http.client``.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from io import BytesIO
from typing import Any, BinaryIO

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from sipdial.api import ApiError, ApiParts, WorkerReply, build_site
from sipdial.api.http import (
    MAX_BODY_BYTES,
    _loggable,
    _Resource,
    _Router,
    normalise_destination,
)

TOKENS = {"admin-token": "*", "tok-201": "201", "tok-202": "202"}
JSON_TYPE = "application/json; charset=utf-8"


# ----------------------------------------------------------------------------- fixtures


@dataclass
class FakeApi:
    """A scripted CallApi; it records what the HTTP layer asked for."""

    users: set[str] = field(default_factory=lambda: {"201", "202"})
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    list_args: list[dict[str, Any]] = field(default_factory=list)
    registration_args: list[str | None] = field(default_factory=list)
    hung_up: list[str] = field(default_factory=list)
    create_error: Exception | None = None
    create_raises: Exception | None = None
    pending: Deferred[dict[str, Any]] | None = None
    create_called: threading.Event = field(default_factory=threading.Event)
    health_doc: dict[str, Any] = field(default_factory=lambda: {"status": "ok"})

    def add_call(self, call_id: str, user: str, state: str = "user_ringing") -> dict[str, Any]:
        call = {"id": call_id, "user": user, "to": "+4930123456", "state": state, "cause": None,
                "created_at": f"2026-12-03T08:00:{59 - len(self.calls):02}.000Z"}
        self.calls[call_id] = call
        return call

    def create_call(
        self,
        *,
        user: str,
        to: str,
        device: str | None,
        auto_answer: bool | None,
        mode: str | None,
        confirm: bool | None = None,
        caller_id: str | None = None,
        clir: bool | None = None,
        metadata: dict[str, Any] | None = None,
        refuse_if_busy: bool | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        first_leg: str | None = None,
        sink: tuple[str, str | None] | None = None,
        caller_number: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        args: dict[str, Any] = {"user": user, "to": to, "device": device,
                                "auto_answer": auto_answer, "mode": mode}
        # the issue-3 fields are recorded only when given, so older expectations stay exact
        for name, value in (("confirm", confirm), ("caller_id", caller_id), ("clir", clir),
                            ("metadata", metadata), ("refuse_if_busy", refuse_if_busy),
                            ("headers", headers or None), ("first_leg", first_leg),
                            ("sink", sink)):
            if value is not None:
                args[name] = value
        self.created.append(args)
        self.create_called.set()
        if self.create_raises is not None:
            raise self.create_raises
        if self.create_error is not None:
            return fail(self.create_error)
        if self.pending is not None:
            return self.pending
        call = self.add_call(f"c{len(self.created)}", user, state="calling_user")
        return succeed(dict(call, to=to))

    def get_call(self, call_id: str) -> Deferred[dict[str, Any] | None]:
        return succeed(self.calls.get(call_id))

    def list_calls(
        self, *, user: str | None, state: str | None, limit: int, direction: Any = None,
        missed: bool = False, since: float | None = None, before: float | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        args: dict[str, Any] = {"user": user, "state": state, "limit": limit}
        extra = {"direction": direction, "missed": missed or None, "since": since,
                 "before": before}
        self.list_args.append(args | {k: v for k, v in extra.items() if v is not None})
        calls = [c for c in self.calls.values() if user is None or c["user"] == user]
        return succeed(calls[:limit])

    def hangup_call(self, call_id: str) -> Deferred[dict[str, Any]]:
        self.hung_up.append(call_id)
        call = self.calls.get(call_id)
        if call is None:
            return fail(ApiError(404, "not_found", f"no call {call_id}"))
        call.update(state="ended", cause="cancelled")
        return succeed(call)

    def list_registrations(self, user: str | None) -> list[dict[str, Any]]:
        self.registration_args.append(user)
        regs = [{"user": "201", "contact": "sip:201@192.0.2.1"}, {"user": "202", "contact": "x"}]
        return [r for r in regs if user is None or r["user"] == user]

    def known_user(self, user: str) -> bool:
        return user in self.users

    numbers: dict[str, str] = field(default_factory=lambda: {"201": "+4930201"})

    def user_number(self, user: str) -> str | None:
        return self.numbers.get(user)

    def user_by_number(self, number: str) -> str | None:
        return next((u for u, n in self.numbers.items() if n == number), None)

    def health(self) -> dict[str, Any]:
        return self.health_doc

    def webhook_status(self) -> list[dict[str, Any]]:
        return [{"webhook": 1, "target": "http://crm.example/hook", "delivered": 3,
                 "failed_attempts": 1, "given_up": 0, "queued": 1,
                 "last_delivered_at": "2026-12-03T10:00:00.000Z",
                 "last_error": "HTTP 500", "last_error_at": "2026-12-03T09:00:00.000Z"}]


@pytest.fixture(scope="session")
def reactor() -> Iterator[SelectReactor]:
    reactor = SelectReactor()
    thread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
    )
    thread.start()
    yield reactor
    reactor.callFromThread(reactor.stop)
    thread.join(10)


@dataclass
class Server:
    reactor: SelectReactor
    api: FakeApi
    port: int

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "admin-token",
        body: bytes | str | dict[str, Any] | list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers.setdefault("Authorization", f"Bearer {token}")
        if isinstance(body, dict | list):
            body = json.dumps(body)
            all_headers.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=all_headers)
            return Response.read(conn.getresponse())
        finally:
            conn.close()


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    @classmethod
    def read(cls, response: http.client.HTTPResponse) -> Response:
        return cls(response.status, response.headers, response.read())

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def error_code(self) -> str:
        code: str = self.json["error"]["code"]
        return code

    @property
    def error_message(self) -> str:
        message: str = self.json["error"]["message"]
        return message


@dataclass
class FakeEventSource:
    """An :class:`~sipdial.api.sse.EventSource` that publishes nothing."""

    subscribed: threading.Event = field(default_factory=threading.Event)

    def subscribe(
        self, subscriber: object, *, user: str | None = None, after: int | None = None
    ) -> FakeEventSource:
        self.subscribed.set()
        return self

    def cancel(self) -> None:
        pass


def check_password(user: str, password: str, client: str = "") -> bool:
    return (user, password) == ("201", "secret")


def serve(reactor: SelectReactor, api: FakeApi, **kwargs: Any) -> Iterator[Server]:
    """``kwargs``: :func:`build_site`'s, and :class:`ApiParts`' fields by name."""
    names = {f.name for f in fields(ApiParts)}
    parts = ApiParts(**{k: v for k, v in kwargs.items() if k in names})
    site = build_site(api, TOKENS, reactor=reactor, parts=parts,
                      **{k: v for k, v in kwargs.items() if k not in names})
    port = blockingCallFromThread(reactor, reactor.listenTCP, 0, site, interface="127.0.0.1")
    try:
        yield Server(reactor, api, port.getHost().port)
    finally:
        blockingCallFromThread(reactor, port.stopListening)


@pytest.fixture
def server(reactor: SelectReactor) -> Iterator[Server]:
    yield from serve(reactor, FakeApi(), check_password=check_password)


def call_body(**overrides: Any) -> dict[str, Any]:
    return {"user": "201", "to": "+4930123456", **overrides}


# ------------------------------------------------------------------------- POST /v1/calls


def test_create_call_returns_201_with_location_and_resource(server: Server) -> None:
    r = server.request(
        "POST", "/v1/calls", body=call_body(device="desk", auto_answer=True, mode="refer")
    )
    assert r.status == 201
    assert r.headers["Location"] == "/v1/calls/c1"
    assert r.headers["Content-Type"] == JSON_TYPE
    assert r.json["id"] == "c1"
    assert r.json["state"] == "calling_user"
    assert server.api.created == [
        {"user": "201", "to": "+4930123456", "device": "desk", "auto_answer": True, "mode": "refer"}
    ]


def test_create_call_passes_none_for_omitted_options(server: Server) -> None:
    assert server.request("POST", "/v1/calls", body=call_body()).status == 201
    assert server.api.created == [
        {"user": "201", "to": "+4930123456", "device": None, "auto_answer": None, "mode": None}
    ]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("+49 (30) 123-456", "+4930123456"),
        ("+49 (0)30 123456", "+4930123456"),
        ("030/123.456", "030123456"),
        ("0049-30-123456", "004930123456"),
        ("  201 ", "201"),
        ("tel:+49-30-123456", "+4930123456"),
        ("callto:+49 30 123456", "+4930123456"),  # CRMs' links (seed 002)
        ("phone:030/123.456", "030123456"),
        ("callto://+4930123456", "+4930123456"),
        ("SIP:alice@example.com", "sip:alice@example.com"),
        ("sips:bob@[2001:db8::1]:5061;transport=tls", "sips:bob@[2001:db8::1]:5061;transport=tls"),
        ("sip:192.0.2.7", "sip:192.0.2.7"),
    ],
)
def test_create_call_normalises_to(server: Server, given: str, kept: str) -> None:
    r = server.request("POST", "/v1/calls", body=call_body(to=given))
    assert r.status == 201, r.json
    assert server.api.created[0]["to"] == kept
    assert r.json["to"] == kept


@pytest.mark.parametrize("to", ["abc", "", "+", "++49", "12ab", "49+30", "tel:+49;ext=1", "sip:"])
def test_create_call_rejects_bad_to(server: Server, to: str) -> None:
    r = server.request("POST", "/v1/calls", body=call_body(to=to))
    assert r.status == 422
    assert r.error_code == "invalid_destination"
    assert r.error_message == "to: must be a phone number or SIP URI"
    assert server.api.created == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"to": "1"}, "user: is required"),
        ({"user": "201"}, "to: is required"),
        (call_body(user=201), "user: must be a string"),
        (call_body(user="2 01"), "user: must be 1-64 characters"),
        (call_body(to=4930123456), "to: must be a string"),
        (call_body(device=""), "device: must be a non-empty string"),
        (call_body(device=7), "device: must be a non-empty string"),
        (call_body(auto_answer="yes"), "auto_answer: must be true or false"),
        (call_body(mode="conference"), 'mode: must be "refer" or "bridge"'),
        (call_body(autoanswer=True), "autoanswer: unknown field"),
        (["201", "+49"], "body: must be a JSON object"),
    ],
)
def test_create_call_validation_names_the_field(
    server: Server, body: dict[str, Any] | list[Any], message: str
) -> None:
    r = server.request("POST", "/v1/calls", body=body)
    assert r.status == 422
    assert r.error_code == "invalid_request"
    assert r.error_message.startswith(message)


def test_bridge_mode_with_confirm_caller_id_and_clir(server: Server) -> None:
    r = server.request("POST", "/v1/calls", body=call_body(
        mode="bridge", confirm=True, caller_id="+4940111", clir=True))
    assert r.status == 201
    assert server.api.created[0] == {
        "user": "201", "to": "+4930123456", "device": None, "auto_answer": None,
        "mode": "bridge", "confirm": True, "caller_id": "+4940111", "clir": True}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("confirm", "yes", "confirm: must be true or false"),
    ("clir", 1, "clir: must be true or false"),
    ("caller_id", "abc", "caller_id: must be a number"),
])
def test_issue3_fields_are_validated(server: Server, field: str, value: object,
                                     message: str) -> None:
    r = server.request("POST", "/v1/calls", body=call_body(**{field: value}))
    assert (r.status, r.error_code) == (422, "invalid_request")
    assert r.error_message.startswith(message)


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe{}", b"user=201&to=1"])
def test_bad_json_is_400(server: Server, raw: bytes) -> None:
    r = server.request("POST", "/v1/calls", body=raw, headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert r.error_code == "invalid_json"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_wrong_content_type_is_tolerated_for_json_bodies(
    server: Server, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = server.request("POST", "/v1/calls", body=json.dumps(call_body()), headers=headers)
    assert r.status == 201


def test_unknown_user_is_404(server: Server) -> None:
    r = server.request("POST", "/v1/calls", body=call_body(user="299"))
    assert r.status == 404
    assert r.error_code == "unknown_user"
    assert server.api.created == []


def test_engine_api_error_is_passed_through(server: Server) -> None:
    server.api.create_error = ApiError(
        409, "user_not_registered", "user 201 has no registered device"
    )
    r = server.request("POST", "/v1/calls", body=call_body())
    assert r.status == 409
    assert r.json == {
        "error": {"code": "user_not_registered", "message": "user 201 has no registered device"}
    }


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """What ``sipdial.api`` logs (INFO and up) during the test, from the reactor thread too."""
    with caplog.at_level(logging.INFO, "sipdial.api"):
        yield caplog


@pytest.mark.parametrize("how", ["errback", "raise"])
def test_unexpected_engine_error_is_500_logged_without_traceback(
    server: Server, how: str, logged: pytest.LogCaptureFixture
) -> None:
    error = RuntimeError("secret internals")
    if how == "errback":
        server.api.create_error = error
    else:
        server.api.create_raises = error
    r = server.request("POST", "/v1/calls", body=call_body())
    assert r.status == 500
    assert r.json == {"error": {"code": "internal", "message": "internal server error"}}
    assert b"secret" not in r.raw and b"Traceback" not in r.raw
    failures = [r.exc_info[1] for r in logged.records if r.exc_info]
    assert error in failures


def test_resource_that_is_not_json_is_500(
    server: Server, logged: pytest.LogCaptureFixture
) -> None:
    server.api.pending = succeed({"id": "c1", "user": "201", "created_at": object()})
    r = server.request("POST", "/v1/calls", body=call_body())
    assert r.status == 500
    assert r.error_code == "internal"
    assert any(r.exc_info and r.levelno == logging.ERROR for r in logged.records)


def test_body_over_64k_is_413(server: Server) -> None:
    body = json.dumps(call_body(device="x" * MAX_BODY_BYTES))
    r = server.request("POST", "/v1/calls", body=body)
    assert r.status == 413
    assert r.error_code == "body_too_large"
    assert server.api.created == []


def test_chunked_body_over_64k_is_413(server: Server) -> None:
    chunks = [b"{" + b" " * 8192] * 9 + [b"}"]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/calls",
            body=iter(chunks),
            headers={"Authorization": "Bearer admin-token"},
            encode_chunked=True,
        )
        r = Response.read(conn.getresponse())
    finally:
        conn.close()
    assert r.status == 413


def test_body_of_exactly_64k_is_accepted(server: Server) -> None:
    body = json.dumps(call_body(device="d"))
    body = body[:-1] + " " * (MAX_BODY_BYTES - len(body)) + "}"
    assert len(body) == MAX_BODY_BYTES
    assert server.request("POST", "/v1/calls", body=body).status == 201


def test_create_call_waits_for_the_engine(server: Server) -> None:
    """The response is written when the engine's Deferred fires (NOT_DONE_YET)."""
    pending: Deferred[dict[str, Any]] = Deferred()
    server.api.pending = pending
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/calls",
            body=json.dumps(call_body()),
            headers={"Authorization": "Bearer admin-token"},
        )
        assert server.api.create_called.wait(10)
        resource = {"id": "late", "user": "201", "state": "calling_user"}
        blockingCallFromThread(server.reactor, pending.callback, resource)
        r = Response.read(conn.getresponse())
    finally:
        conn.close()
    assert r.status == 201
    assert r.headers["Location"] == "/v1/calls/late"


def test_location_quotes_the_id(server: Server) -> None:
    server.api.pending = succeed({"id": "a/b c", "user": "201", "state": "calling_user"})
    r = server.request("POST", "/v1/calls", body=call_body())
    assert r.headers["Location"] == "/v1/calls/a%2Fb%20c"


class _DummyRequest(DummyRequest):
    content: BinaryIO | None = None


def test_nothing_is_written_after_the_client_went_away(
    logged: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi()
    pending: Deferred[dict[str, Any]] = Deferred()
    api.pending = pending
    times = iter([100.0, 101.5])  # received, then the engine answers 1.5 s later
    resource = _Resource(_Router(api, TOKENS, ApiParts()), clock=lambda: next(times))
    request = _DummyRequest([b""])
    request.method = b"POST"
    request.uri = b"/v1/calls"
    request.requestHeaders.addRawHeader(b"Authorization", b"Bearer admin-token")
    request.content = BytesIO(json.dumps(call_body()).encode())
    assert resource.render(request) is NOT_DONE_YET
    lost = Failure(ConnectionDone("client closed"))  # type: ignore[no-untyped-call]
    request.processingFailed(lost)  # type: ignore[no-untyped-call]
    pending.callback({"id": "c9", "user": "201", "state": "calling_user"})
    assert request.written == []
    assert request.finished == 0
    assert [r.getMessage() for r in logged.records] == [
        "POST /v1/calls 201 1500.0 ms (not sent: the client went away)"
    ]


def test_a_request_whose_client_left_does_not_disturb_the_next(server: Server) -> None:
    pending: Deferred[dict[str, Any]] = Deferred()
    server.api.pending = pending
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        body = json.dumps(call_body()).encode()
        sock.sendall(
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-token\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert server.api.create_called.wait(10)
    blockingCallFromThread(
        server.reactor, pending.callback, {"id": "c1", "user": "201", "state": "ended"}
    )
    server.api.pending = None
    assert server.request("POST", "/v1/calls", body=call_body()).status == 201


# -------------------------------------------------------------------------------- auth


def test_missing_token_is_401_with_bearer_challenge(server: Server) -> None:
    r = server.request("POST", "/v1/calls", token=None, body=call_body())
    assert r.status == 401
    assert r.error_code == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert server.api.created == []


@pytest.mark.parametrize(
    "authorization",
    ["Bearer nope", "Bearer ", "Bearer admin-token2", "Basic YWRtaW46eA==", "admin-token"],
)
def test_unknown_or_malformed_token_is_401(server: Server, authorization: str) -> None:
    r = server.request("GET", "/v1/calls", token=None, headers={"Authorization": authorization})
    assert r.status == 401
    assert r.error_code == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_bearer_scheme_is_case_insensitive(server: Server) -> None:
    r = server.request("GET", "/v1/calls", token=None, headers={"Authorization": "bearer tok-201"})
    assert r.status == 200


def test_user_token_may_create_calls_for_its_user_only(server: Server) -> None:
    assert server.request("POST", "/v1/calls", token="tok-201", body=call_body()).status == 201
    r = server.request("POST", "/v1/calls", token="tok-202", body=call_body())
    assert r.status == 403
    assert r.error_code == "forbidden"
    assert len(server.api.created) == 1


def test_user_token_for_unknown_user_is_403_not_404(server: Server) -> None:
    r = server.request("POST", "/v1/calls", token="tok-202", body=call_body(user="299"))
    assert r.status == 403


def test_empty_token_in_configuration_never_matches(reactor: SelectReactor) -> None:
    api = FakeApi()
    site = build_site(api, {"": "*"}, reactor=reactor)
    port = blockingCallFromThread(reactor, reactor.listenTCP, 0, site, interface="127.0.0.1")
    try:
        srv = Server(reactor, api, port.getHost().port)
        r = srv.request("GET", "/v1/calls", token=None, headers={"Authorization": "Bearer "})
        assert r.status == 401
    finally:
        blockingCallFromThread(reactor, port.stopListening)


# --------------------------------------------------------------------- GET/DELETE a call


def test_get_call(server: Server) -> None:
    call = server.api.add_call("abc", "201")
    r = server.request("GET", "/v1/calls/abc")
    assert r.status == 200
    assert r.json == call
    assert r.headers["Content-Type"] == JSON_TYPE


def test_get_unknown_call_is_404(server: Server) -> None:
    r = server.request("GET", "/v1/calls/nope")
    assert r.status == 404
    assert r.error_code == "not_found"


def test_user_token_sees_own_calls_only(server: Server) -> None:
    server.api.add_call("abc", "201")
    assert server.request("GET", "/v1/calls/abc", token="tok-201").status == 200
    r = server.request("GET", "/v1/calls/abc", token="tok-202")
    assert r.status == 403
    assert r.error_code == "forbidden"


def test_head_call_has_no_body(server: Server) -> None:
    server.api.add_call("abc", "201")
    r = server.request("HEAD", "/v1/calls/abc")
    assert r.status == 200
    assert r.raw == b""
    assert int(r.headers["Content-Length"]) > 0


def test_delete_call_returns_resource(server: Server) -> None:
    server.api.add_call("abc", "201")
    r = server.request("DELETE", "/v1/calls/abc", token="tok-201")
    assert r.status == 200
    assert r.json["state"] == "ended"
    assert server.api.hung_up == ["abc"]


def test_delete_unknown_call_is_404(server: Server) -> None:
    r = server.request("DELETE", "/v1/calls/nope")
    assert r.status == 404
    assert r.error_code == "not_found"


def test_delete_other_users_call_is_403_and_does_not_hang_up(server: Server) -> None:
    server.api.add_call("abc", "201")
    r = server.request("DELETE", "/v1/calls/abc", token="tok-202")
    assert r.status == 403
    assert server.api.hung_up == []


# ------------------------------------------------------------------------ list calls


def test_list_calls_defaults(server: Server) -> None:
    server.api.add_call("a", "201")
    server.api.add_call("b", "202")
    r = server.request("GET", "/v1/calls")
    assert r.status == 200
    assert [c["id"] for c in r.json["calls"]] == ["a", "b"]
    assert server.api.list_args == [{"user": None, "state": None, "limit": 50}]


def test_list_calls_filters(server: Server) -> None:
    r = server.request("GET", "/v1/calls?user=202&state=connected&limit=500")
    assert r.status == 200
    assert server.api.list_args == [{"user": "202", "state": "connected", "limit": 500}]


@pytest.mark.parametrize(
    ("query", "field_name"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=", "limit"),
        ("limit=1&limit=2", "limit"),
        ("state=bogus", "state"),
        ("user=a%20b", "user"),
        ("missed=maybe", "missed"),
        ("since=yesterday", "since"),
        ("since=2026-12-03T08:00:00", "since"),  # no offset: whose 8 o'clock?
        ("before=2026-13-03T08:00:00Z", "before"),
        ("before=" + "9" * 50, "before"),
    ],
)
def test_list_calls_bad_query_is_422(server: Server, query: str, field_name: str) -> None:
    r = server.request("GET", f"/v1/calls?{query}")
    assert r.status == 422
    assert r.error_code == "invalid_request"
    assert r.error_message.startswith(f"{field_name}:")


def test_list_calls_missed_since_before_and_the_next_page(server: Server) -> None:
    from datetime import UTC, datetime
    r = server.request("GET", "/v1/calls?missed=true&since=2026-12-03T00:00:00Z"
                              "&before=2026-12-03T09:00:00+01:00")  # "+" unencoded: a space
    assert r.status == 200, r.json
    assert server.api.list_args[-1] == {
        "user": None, "state": None, "limit": 50, "missed": True,
        "since": datetime(2026, 12, 3, tzinfo=UTC).timestamp(),
        "before": datetime(2026, 12, 3, 8, tzinfo=UTC).timestamp()}
    assert r.json["next"] is None  # fewer than limit: no more
    server.request("GET", "/v1/calls?missed=false&before=2026-12-03T09:00:00%2B01:00")
    assert server.api.list_args[-1]["before"] == datetime(2026, 12, 3, 8,
                                                          tzinfo=UTC).timestamp()
    assert "missed" not in server.api.list_args[-1]
    for i in range(3):
        server.api.add_call(f"c{i}", "201")
    r = server.request("GET", "/v1/calls?limit=2")
    assert len(r.json["calls"]) == 2 and r.json["next"] == r.json["calls"][-1]["created_at"]


def test_list_calls_user_token_is_limited_to_own_user(server: Server) -> None:
    server.api.add_call("a", "201")
    server.api.add_call("b", "202")
    r = server.request("GET", "/v1/calls", token="tok-201")
    assert [c["id"] for c in r.json["calls"]] == ["a"]
    assert server.api.list_args[-1]["user"] == "201"
    assert server.request("GET", "/v1/calls?user=201", token="tok-201").status == 200
    r = server.request("GET", "/v1/calls?user=202", token="tok-201")
    assert r.status == 403
    assert r.error_code == "forbidden"


# ----------------------------------------------------------- registrations and health


def test_registrations(server: Server) -> None:
    r = server.request("GET", "/v1/registrations")
    assert r.status == 200
    assert len(r.json["registrations"]) == 2
    r = server.request("GET", "/v1/registrations?user=202")
    assert [reg["user"] for reg in r.json["registrations"]] == ["202"]


def test_registrations_user_token_scoping(server: Server) -> None:
    r = server.request("GET", "/v1/registrations", token="tok-201")
    assert [reg["user"] for reg in r.json["registrations"]] == ["201"]
    assert server.request("GET", "/v1/registrations?user=202", token="tok-201").status == 403
    assert server.request("GET", "/v1/registrations", token=None).status == 401


def test_healthz_needs_no_token(server: Server) -> None:
    server.api.health_doc = {"status": "ok", "registrations": 2}
    r = server.request("GET", "/healthz", token=None)
    assert r.status == 200
    assert r.json == {"status": "ok", "registrations": 2}
    assert r.headers["Content-Type"] == JSON_TYPE


# ---------------------------------------------------------------- routing and methods


@pytest.mark.parametrize("path", ["/index.html", "/v1", "/v1/calls/", "/v1/calls/a/b", "/v2/calls"])
def test_unknown_path_is_404_json(server: Server, path: str) -> None:
    r = server.request("GET", path)
    assert r.status == 404
    assert r.error_code == "not_found"
    assert r.headers["Content-Type"] == JSON_TYPE


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/calls", "GET, HEAD, POST"),
        ("PATCH", "/v1/calls/abc", "DELETE, GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/v1/registrations", "GET, HEAD"),
        ("POST", "/call-init.php", "GET"),
        ("HEAD", "/remote_call.htm", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(server: Server, method: str, path: str, allow: str) -> None:
    r = server.request(method, path, body=b"{}" if method != "HEAD" else None)
    assert r.status == 405
    assert r.headers["Allow"] == allow
    if method != "HEAD":
        assert r.error_code == "method_not_allowed"


# -------------------------------------------------------------- LocaPhone call-init.php


def test_locaphone_call_init(server: Server) -> None:
    r = server.request(
        "GET", "/call-init.php?user=201&to=0049%2030%20123456&from=201&cidnum=99&clir=1&prv=1"
    )
    assert r.status == 201
    assert r.headers["Location"] == "/v1/calls/c1"
    assert r.json["id"] == "c1"
    # cidnum = the number the target sees, clir=1 hides it (bridge mode)
    assert server.api.created == [
        {"user": "201", "to": "004930123456", "device": None, "auto_answer": None, "mode": None,
         "caller_id": "99", "clir": True}
    ]


@pytest.mark.parametrize(
    ("raw_to", "kept"),
    [("+4930123456", "+4930123456"), ("%2B49+30+123456", "+4930123456"), ("201", "201")],
)
def test_compat_keeps_a_literal_leading_plus(server: Server, raw_to: str, kept: str) -> None:
    assert (
        server.request("GET", f"/locaphone/prov/call-init.php?user=201&to={raw_to}").status == 201
    )
    assert server.api.created[0]["to"] == kept


def test_locaphone_call_init_errors(server: Server) -> None:
    r = server.request("GET", "/call-init.php?user=201")
    assert (r.status, r.error_message) == (422, "to: is required")
    r = server.request("GET", "/call-init.php?user=201&to=abc")
    assert (r.status, r.error_message) == (422, "to: must be a phone number or SIP URI")
    r = server.request("GET", "/call-init.php?user=299&to=1")
    assert (r.status, r.error_code) == (404, "unknown_user")
    r = server.request("GET", "/call-init.php?user=201&to=1", token=None)
    assert r.status == 401
    r = server.request("GET", "/call-init.php?user=201&to=1", token="tok-202")
    assert (r.status, r.error_code) == (403, "forbidden")
    assert server.api.created == []


# ------------------------------------------------------------------ pbxnsip remote_call


def test_pbxnsip_remote_call_with_auth_parameter(server: Server) -> None:
    r = server.request(
        "GET",
        "/remote_call.htm?user=201%40pbx.example.com&dest=030-123456"
        "&auth=201%40pbx.example.com%3Asecret",
        token=None,
    )
    assert r.status == 201
    assert r.headers["Location"] == "/v1/calls/c1"
    # pbxnsip always asks the user to press 1 unless connect=true
    assert server.api.created == [
        {"user": "201", "to": "030123456", "device": None, "auto_answer": None, "mode": None,
         "confirm": True}
    ]


@pytest.mark.parametrize(("connect", "confirm"), [("true", False), ("false", True)])
def test_pbxnsip_connect_true_skips_the_confirmation(
    server: Server, connect: str, confirm: bool
) -> None:
    r = server.request(
        "GET", f"/remote_call.htm?user=201&dest=+4930123456&connect={connect}", token="tok-201"
    )
    assert r.status == 201
    assert server.api.created[0]["confirm"] is confirm
    assert server.api.created[0]["to"] == "+4930123456"


def test_pbxnsip_basic_auth_with_sip_credentials(server: Server) -> None:
    basic = base64.b64encode(b"201@pbx:secret").decode()
    r = server.request(
        "GET",
        "/remote_call.htm?user=201&dest=1234",
        token=None,
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status == 201


def test_pbxnsip_auth_failures(server: Server) -> None:
    r = server.request("GET", "/remote_call.htm?user=201&dest=1&auth=201%3Awrong", token=None)
    assert (r.status, r.error_code) == (401, "unauthorized")
    challenges = r.headers.get_all("WWW-Authenticate")
    assert challenges is not None
    assert challenges[0].startswith("Bearer") and challenges[1].startswith("Basic")
    r = server.request("GET", "/remote_call.htm?user=201&dest=1&auth=201secret", token=None)
    assert r.status == 401
    r = server.request("GET", "/remote_call.htm?user=201&dest=1", token=None)
    assert r.status == 401
    assert "token" not in (r.error_message or "").split(":")[0]  # not only tokens work here
    assert "auth=user:password" in (r.error_message or "")
    r = server.request("GET", "/remote_call.htm?user=202&dest=1&auth=201%3Asecret", token=None)
    assert (r.status, r.error_code) == (403, "forbidden")
    assert r.error_message == "these credentials may not act for user 202"  # no "token"
    assert server.api.created == []


def test_pbxnsip_validation(server: Server) -> None:
    r = server.request("GET", "/remote_call.htm?user=201&dest=x")
    assert (r.status, r.error_message) == (422, "dest: must be a phone number or SIP URI")
    r = server.request("GET", "/remote_call.htm?dest=1")
    assert (r.status, r.error_message) == (422, "user: is required")
    r = server.request("GET", "/remote_call.htm?user=201&dest=1&connect=maybe")
    assert (r.status, r.error_message) == (422, "connect: must be true or false")


def test_pbxnsip_auth_parameter_without_password_checker(reactor: SelectReactor) -> None:
    for srv in serve(reactor, FakeApi()):
        r = srv.request("GET", "/remote_call.htm?user=201&dest=1&auth=201%3Asecret", token=None)
        assert r.status == 401


# -------------------------------------------------------------------------- access log


_ACCESS_LINE = re.compile(r"(?P<request>\S+ \S+ \d{3}) \d+\.\d ms(?P<note>.*)")


def access_lines(logged: pytest.LogCaptureFixture) -> list[str]:
    """The access-log lines (``sipdial.api``, INFO) without their milliseconds."""
    lines = []
    for record in logged.records:
        match = _ACCESS_LINE.fullmatch(record.getMessage())
        if match and record.name == "sipdial.api" and record.levelno == logging.INFO:
            lines.append(match.group("request") + match.group("note"))
    return lines


def test_one_info_line_per_request(server: Server, logged: pytest.LogCaptureFixture) -> None:
    server.api.add_call("abc", "201")
    assert server.request("GET", "/v1/calls/abc").status == 200
    assert server.request("POST", "/v1/calls", body=call_body()).status == 201
    assert server.request("GET", "/v1/calls?user=201&limit=5").status == 200
    assert server.request("HEAD", "/v1/calls/abc").status == 200
    assert server.request("GET", "/nowhere").status == 404
    assert server.request("GET", "/v1/calls", token="wrong").status == 401
    assert access_lines(logged) == [
        "GET /v1/calls/abc 200",
        "POST /v1/calls 201",
        "GET /v1/calls 200",  # never the query string
        "HEAD /v1/calls/abc 200",
        "GET /nowhere 404",
        "GET /v1/calls 401",
    ]
    # no credentials, no bodies
    assert "admin-token" not in logged.text and "wrong" not in logged.text
    assert "4930123456" not in logged.text


@pytest.mark.parametrize(
    "path",
    [
        "/remote_call.htm?user=201&dest=1234&auth=201:secret201",
        "/pbx/remote_call.htm?user=201&dest=1234&auth=201%3Asecret201",
        "/remote_call.htm?auth=201%40pbx.example.com%3Asecret&user=201&dest=1234",
    ],
)
def test_the_pbxnsip_password_never_reaches_the_log(
    server: Server, logged: pytest.LogCaptureFixture, path: str
) -> None:
    status = server.request("GET", path, token=None).status
    assert status in (201, 401)  # "secret" is 201's password in these tests
    assert access_lines(logged) == [f"GET {path.partition('?')[0]} {status}"]
    assert "secret" not in logged.text and "auth" not in logged.text


def test_an_event_stream_is_logged_when_it_opens(
    reactor: SelectReactor, logged: pytest.LogCaptureFixture
) -> None:
    source = FakeEventSource()
    for srv in serve(reactor, FakeApi(), events=source):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"GET /v1/events?user=201 HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer admin-token\r\n\r\n")
            received = b""
            while b"retry: 3000" not in received:
                chunk = sock.recv(4096)
                assert chunk, received
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 ")
            lines = access_lines(logged)
        assert source.subscribed.wait(10)
    assert lines == ["GET /v1/events 200 (event stream opened)"]


def test_loggable_path_is_short_and_printable() -> None:
    assert _loggable("/v1/calls/abc") == "/v1/calls/abc"
    assert _loggable("/a\x1b[31mb\x85") == "/a\\x1b[31mb\\x85"
    assert _loggable("/" + "x" * 300) == "/" + "x" * 199 + "..."


# ---------------------------------------------------------------------------- helpers


def test_normalise_destination_rejects_overlong_input() -> None:
    assert normalise_destination("1" * 32) == "1" * 32
    assert normalise_destination("1" * 33) is None
    assert normalise_destination("sip:" + "a" * 300 + "@example.com") is None


# ----------------------------------------------------------- sipdial serve --workers


@dataclass
class FakeWorkers:
    """:class:`~sipdial.api.OtherWorkers`: worker 1 answers from ``replies``, worker 2 is
    restarting (its requests fail); ids starting "01"/"02" are theirs."""

    replies: dict[str, WorkerReply] = field(default_factory=dict)
    asked: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    extra: list[dict[str, str]] = field(default_factory=list)

    def owner_of(self, call_id: str) -> int | None:
        return {"01": 1, "02": 2}.get(call_id[:2])

    def others(self) -> list[int]:
        return [1, 2]

    def index(self) -> int:
        return 0

    def primary(self) -> int | None:
        return 1  # stands for worker 0 here: the one that registers upstream

    def request(self, worker: int, method: str, target: str,
                authorization: str | None,
                extra: Any = None) -> Deferred[WorkerReply]:
        self.asked.append((worker, method, target, authorization))
        self.extra.append(dict(extra or {}))
        if worker == 2:
            return fail(ConnectionRefusedError("worker 2 is restarting"))
        return succeed(self.replies[f"{method} {target}"])


@pytest.fixture
def workers() -> FakeWorkers:
    return FakeWorkers()


@pytest.fixture
def sharded(reactor: SelectReactor, workers: FakeWorkers) -> Iterator[Server]:
    yield from serve(reactor, FakeApi(), check_password=check_password, workers=workers,
                     events=FakeEventSource())


def test_another_workers_call_is_answered_by_that_worker(sharded: Server,
                                                         workers: FakeWorkers) -> None:
    call = {"id": "01abc", "user": "201", "state": "connected"}
    workers.replies["GET /v1/calls/01abc"] = WorkerReply(200, json.dumps(call).encode())
    workers.replies["DELETE /v1/calls/01abc"] = WorkerReply(
        401, b'{"error": {"code": "unauthorized", "message": "no"}}',
        (("WWW-Authenticate", 'Bearer realm="sipdial"'),))
    r = sharded.request("GET", "/v1/calls/01abc", token="tok-201")
    assert (r.status, r.json) == (200, call)
    r = sharded.request("DELETE", "/v1/calls/01abc", token="tok-201")
    assert r.status == 401 and r.error_code == "unauthorized"  # the owner's answer
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="sipdial"'
    # the owner authenticates again: the credentials go along as they came
    assert workers.asked == [(1, "GET", "/v1/calls/01abc", "Bearer tok-201"),
                             (1, "DELETE", "/v1/calls/01abc", "Bearer tok-201")]
    assert sharded.api.hung_up == []
    # bad credentials are refused here: the owner is not asked
    r = sharded.request("GET", "/v1/calls/01abc", token="bad")
    assert r.status == 401 and len(workers.asked) == 2


def test_a_restarting_owner_is_503_with_retry_after(sharded: Server) -> None:
    r = sharded.request("GET", "/v1/calls/02abc")
    assert r.status == 503 and r.error_code == "worker_unavailable"
    assert r.headers["Retry-After"] == "1"
    assert "worker 2" in r.error_message


def test_this_workers_own_call_is_answered_here(sharded: Server, workers: FakeWorkers) -> None:
    sharded.api.add_call("00abc", "201")
    assert sharded.request("GET", "/v1/calls/00abc").json["id"] == "00abc"
    assert workers.asked == []


def test_the_call_list_is_every_workers_newest_first(sharded: Server,
                                                     workers: FakeWorkers) -> None:
    sharded.api.calls["00a"] = {"id": "00a", "user": "201", "created_at": "2026-12-03T10:00:02Z"}
    sharded.api.calls["00b"] = {"id": "00b", "user": "201", "created_at": "2026-12-03T10:00:00Z"}
    theirs = [{"id": "01c", "user": "201", "created_at": "2026-12-03T10:00:03Z"},
              {"id": "01d", "user": "201", "created_at": "2026-12-03T10:00:01Z"}]
    workers.replies["GET /v1/calls?limit=3"] = WorkerReply(200, json.dumps(
        {"calls": theirs}).encode())
    r = sharded.request("GET", "/v1/calls?limit=3")
    assert r.status == 200
    assert [c["id"] for c in r.json["calls"]] == ["01c", "00a", "01d"]
    assert r.json["unavailable_workers"] == [2]  # said, not silently left out
    assert [w for w, *_ in workers.asked] == [1, 2]


def test_a_merged_page_ends_on_a_whole_millisecond(sharded: Server,
                                                   workers: FakeWorkers) -> None:
    """Calls of two workers that share the page's last millisecond all come with it (and
    next names that millisecond), so before=next loses none of them."""
    same = "2026-12-03T10:00:01.500Z"
    sharded.api.calls["00a"] = {"id": "00a", "user": "201", "created_at": same}
    theirs = [{"id": "01c", "user": "201", "created_at": "2026-12-03T10:00:03.000Z"},
              {"id": "01d", "user": "201", "created_at": same}]
    workers.replies["GET /v1/calls?limit=2"] = WorkerReply(200, json.dumps(
        {"calls": theirs, "next": same}).encode())
    r = sharded.request("GET", "/v1/calls?limit=2")
    assert [c["id"] for c in r.json["calls"]] == ["01c", "01d", "00a"]
    assert r.json["next"] == same


def test_webhook_status_is_for_administrators_and_summed_over_workers(
        sharded: Server, workers: FakeWorkers) -> None:
    theirs = {"webhook": 1, "target": "http://crm.example/hook", "delivered": 2,
              "failed_attempts": 4, "given_up": 1, "queued": 0,
              "last_delivered_at": "2026-12-03T08:00:00.000Z",
              "last_error": "timeout after 10 s", "last_error_at": "2026-12-03T09:30:00.000Z"}
    sinks = {"webhook": None, "target": "camara-sinks", "delivered": 1, "failed_attempts": 0,
             "given_up": 0, "queued": 0, "last_delivered_at": None, "last_error": None,
             "last_error_at": None}
    workers.replies["GET /v1/webhooks"] = WorkerReply(200, json.dumps(
        {"webhooks": [theirs, sinks]}).encode())
    r = sharded.request("GET", "/v1/webhooks")
    assert r.status == 200, r.json
    hook, camara = r.json["webhooks"]
    assert (hook["delivered"], hook["failed_attempts"], hook["given_up"], hook["queued"]) \
        == (5, 5, 1, 1)
    assert hook["last_delivered_at"] == "2026-12-03T10:00:00.000Z"  # the latest: worker 0's
    assert (hook["last_error"], hook["last_error_at"]) == (
        "timeout after 10 s", "2026-12-03T09:30:00.000Z")  # the latest: worker 1's
    assert camara == sinks
    assert r.json["unavailable_workers"] == [2]
    r = sharded.request("GET", "/v1/webhooks", token="tok-201")
    assert (r.status, r.error_code) == (403, "forbidden")


def test_the_upstream_registration_is_read_from_the_worker_that_holds_it(
        sharded: Server, workers: FakeWorkers) -> None:
    workers.replies["GET /v1/upstream"] = WorkerReply(200, b'{"state": "registered"}')
    r = sharded.request("GET", "/v1/upstream")
    assert (r.status, r.json) == (200, {"state": "registered"})
    assert sharded.request("GET", "/v1/upstream", token="tok-201").status == 403


def test_with_several_workers_last_event_id_may_be_a_cursor(sharded: Server,
                                                            server: Server) -> None:
    """Several workers: the SSE id is every worker's position (sipdial.events.merged)."""
    bad = sharded.request("GET", "/v1/events", headers={"Last-Event-ID": "12.x.9"})
    assert bad.status == 422 and "cursor" in bad.error_message
    single = server.request("GET", "/v1/events", headers={"Last-Event-ID": "12.7.9"})
    assert single.status in (422, 404)  # one process: ids only (or no stream at all)


# ------------------------------------------------------------------------- allow_from


def test_allow_from_refuses_other_sources_before_any_credential(reactor: SelectReactor) -> None:
    """LocaPhone's GS_CALL_INIT_FROM_NET: per scope, the networks that may ask; the others
    get 403 before the token or password is looked at (a wrong one gets the same 403)."""
    import ipaddress

    api = FakeApi()
    here = (ipaddress.ip_network("127.0.0.0/8"),)
    elsewhere = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32"))
    for server in serve(reactor, api, check_password=check_password,
                        allow_from={"api": here, "remote_call": elsewhere,
                                    "call_init": None}):
        assert server.request("GET", "/healthz").status == 200  # from 127.0.0.1: allowed
        for token in ("admin-token", "wrong"):
            r = server.request("GET", "/remote_call.htm?user=201&dest=4930123", token=token)
            assert (r.status, r.error_code) == (403, "forbidden_source"), r.raw
            assert "remote_call_allow_from" in r.error_message
        assert api.created == []
        # call-init.php: no list for it, anyone may ask (and is then authenticated)
        r = server.request("GET", "/call-init.php?user=201&to=4930123", token=None)
        assert (r.status, r.error_code) == (401, "unauthorized"), r.raw  # asked, not refused
        r = server.request("GET", "/call-init.php?user=201&to=4930123")
        assert r.status == 201, r.raw


# ------------------------------------------------------------------------- metadata


def test_metadata_goes_to_the_engine_and_bad_metadata_is_refused(server: Server) -> None:
    """A CRM's correlation data (issue 10 §6): a JSON object of at most 2048 bytes."""
    metadata = {"ticket": "T-4711", "lead": 42, "owner": {"name": "Jürgen"}}
    r = server.request("POST", "/v1/calls", body=call_body(metadata=metadata))
    assert r.status == 201, r.raw
    assert server.api.created[-1]["metadata"] == metadata
    for bad, why in ((["a"], "must be a JSON object"), ("x", "must be a JSON object"),
                     ({"blob": "x" * 2100}, "at most 2048")):
        r = server.request("POST", "/v1/calls", body=call_body(metadata=bad))
        assert r.status in (400, 422) and why in r.error_message, r.raw
    raw = '{"user": "201", "to": "+4930123456", "metadata": {"score": NaN}}'
    r = server.request("POST", "/v1/calls", body=raw, headers={"Content-Type": "application/json"})
    assert r.status == 422 and "NaN" in r.error_message, r.raw
    raw = '{"user": "201", "to": "+4930123456", "metadata": {"x": "\\ud800"}}'
    r = server.request("POST", "/v1/calls", body=raw, headers={"Content-Type": "application/json"})
    assert r.status == 422 and "Unicode" in r.error_message, r.raw
    assert len(server.api.created) == 1


def test_headers_go_to_the_engine_as_pairs_and_other_shapes_are_refused(server: Server) -> None:
    r = server.request("POST", "/v1/calls", body=call_body(headers={"X-CRM-Id": "T-1"}))
    assert r.status == 201, r.raw
    assert server.api.created[-1]["headers"] == (("X-CRM-Id", "T-1"),)
    for bad in (["X-CRM-Id"], {"X-CRM-Id": 1}, "X-CRM-Id: 1"):
        r = server.request("POST", "/v1/calls", body=call_body(headers=bad))
        assert (r.status, r.error_code) == (422, "invalid_request"), r.raw
