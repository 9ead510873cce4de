"""Issue 7 §1 and §5b: one request never damages anyone else's data, and a destination is
built by sipdial, never pasted into a header.

- The HTTP edge: a lone surrogate (valid JSON, no Unicode text), a control character, a
  query value that is not UTF-8 or JSON nested past the parser's recursion limit is a 4xx
  JSON error, never a 500 and never a call; hypothesis drives the call-creating routes with
  hostile bodies and queries against the real engine (SimNet) and every reply is < 500.
- Destinations: what reaches the phone's INVITE (From, P-Asserted-Identity), the REFER's
  Refer-To and the target's Request-URI for hostile ``to`` values, through SimNet, and that
  every message sipdial sent re-parses with sipdial's own parser.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import succeed

from sipdial.api import ApiError, ApiParts
from sipdial.api.http import _encode, _Incoming, _Router, normalise_destination
from sipdial.calls import escape_user
from sipdial.calls.routing import parse_destination, user_uri
from sipdial.config import Config, parse_config
from sipdial.sip import NameAddr, Response, SipURI, parse_message
from tests.unit.simnet import BASE_CONFIG, Phone, SimNet, ack_for, first_via, sdp_answer
from tests.unit.test_clicktodial_flow import Flow
from tests.unit.test_http_api import TOKENS, FakeApi, Server, reactor, server

__all__ = ["reactor", "server"]  # the fixtures

# ------------------------------------------------------------------------------ helpers


def ask(router: _Router, method: str, path: str, *, query: bytes = b"", body: bytes = b"",
        token: str = "admin-token") -> tuple[int, Any]:
    """One request through the router and the serialiser, as the Twisted adapter does it:
    (status, the JSON document). The bytes must be UTF-8 (a strict decode)."""
    replies: list[Any] = []
    incoming = _Incoming(method=method, path=path, query=query,
                         authorization=f"Bearer {token}", body=body)
    router.handle(incoming).addBoth(replies.append)
    (reply,) = replies
    reply, payload = _encode(reply)
    return reply.status, json.loads(payload.decode("utf-8"))


def post(router: _Router, document: Any) -> tuple[int, Any]:
    # json.dumps writes a lone surrogate as the escape \ud800: valid JSON, as a client sends
    return ask(router, "POST", "/v1/calls", body=json.dumps(document).encode("ascii"))


def fake_router(api: FakeApi | None = None) -> tuple[_Router, FakeApi]:
    api = api or FakeApi()
    return _Router(api, TOKENS, ApiParts()), api


def catch_all_config() -> Config:
    """SimNet's configuration with one route taking any number to 127.0.0.1:5080."""
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    return parse_config(re.sub(r"^match = .*$", 'match = "."', text, flags=re.MULTILINE))


_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def check_wire(net: SimNet) -> list[Any]:
    """Every SIP message sipdial sent re-parses; no header line holds a control byte.
    Returns the parsed messages (and forgets them)."""
    parsed = []
    for _peer, data in net.log:
        head = data.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            assert not _CONTROL_BYTES.search(line), line
            assert all(b < 0x80 for b in line), line  # no raw non-ASCII in a header
        parsed.append(parse_message(data))
    net.log.clear()
    return parsed


def final_response(phone: Phone) -> Response:
    """The next response other than 100 Trying."""
    while True:
        response = phone.take_response()
        if response.status != 100:
            return response


def uri_of(header: str | None) -> SipURI:
    assert header is not None
    uri = NameAddr.parse(header).uri
    assert isinstance(uri, SipURI)
    return uri


def assert_user_part(uri: SipURI, number: str) -> None:
    """The user part is escaped: no ";" or "?" that could read as parameters or headers,
    and it means ``number``."""
    assert uri.user is not None
    assert ";" not in uri.user and "?" not in uri.user, uri
    assert uri.headers == {}, uri
    assert uri.unquote_user() == number


# ----------------------------------------------------------------------- the JSON edge


@pytest.mark.parametrize("body", [
    b"[" * 30000 + b"]" * 30000,
    b'{"user": "201", "to": ' + b'{"a": ' * 10000 + b"1" + b"}" * 10000 + b"}",
], ids=["array", "object"])
def test_deeply_nested_json_is_a_400_json_error(body: bytes) -> None:
    router, api = fake_router()
    status, document = ask(router, "POST", "/v1/calls", body=body)
    assert (status, document["error"]["code"]) == (400, "invalid_json")
    assert "nested too deeply" in document["error"]["message"]
    assert api.created == []


def test_deeply_nested_json_over_http(server: Server) -> None:
    r = server.request("POST", "/v1/calls", body=b"[" * 20000 + b"]" * 20000)
    assert (r.status, r.error_code) == (400, "invalid_json")


@pytest.mark.parametrize(("document", "code", "field"), [
    ({"user": "201", "to": "sip:49\ud800@127.0.0.1"}, "invalid_destination", "to"),
    ({"user": "201", "to": "+49\udfff30"}, "invalid_destination", "to"),
    ({"user": "201", "to": "\ud800"}, "invalid_destination", "to"),
    ({"user": "201", "to": "+4930", "device": "desk\ud800"}, "invalid_request", "device"),
    ({"user": "201\ud800", "to": "+4930"}, "invalid_request", "user"),
    ({"user": "201", "to": "+4930", "mode": "\ud800"}, "invalid_request", "mode"),
    ({"user": "201", "to": "+4930", "caller_id": "\ud800"}, "invalid_request", "caller_id"),
    ({"user": "201", "to": "+4930", "\ud800": 1}, "invalid_request", "'\\ud800'"),
])
def test_a_lone_surrogate_is_refused_with_a_clear_error(
    document: dict[str, Any], code: str, field: str
) -> None:
    router, api = fake_router()
    status, reply = post(router, document)
    assert (status, reply["error"]["code"]) == (422, code)
    assert reply["error"]["message"].startswith(f"{field}: ")
    assert api.created == []


@pytest.mark.parametrize("to", [
    "sip:bob%00@192.0.2.9",  # NUL, %-escaped
    "sip:49%0D%0AX-Evil:%201@127.0.0.1",  # CRLF, %-escaped
    "sip:bob\x00@example.com", "+49\x1b30", "sip:bob\x7f@example.com", "49\x8530",
    "sip:%ED%A0%80@192.0.2.9",  # an encoded surrogate: not UTF-8
    "sip:%FF@192.0.2.9",  # not UTF-8
])
def test_control_characters_and_bad_escapes_in_to_are_invalid_destination(to: str) -> None:
    router, api = fake_router()
    status, reply = post(router, {"user": "201", "to": to})
    assert (status, reply["error"]["code"]) == (422, "invalid_destination"), reply
    assert reply["error"]["message"].startswith("to: ")
    assert api.created == []


@pytest.mark.parametrize(("device", "ok"), [
    ("desk", True), ("Yealink T46S (Büro)", True),
    ("desk\x00", False), ("desk\x1b[31m", False), ("desk\x85", False), ("\u2028", True),
])
def test_device_is_printable_text(device: str, ok: bool) -> None:
    router, api = fake_router()
    status, _reply = post(router, {"user": "201", "to": "+4930", "device": device})
    assert status == (201 if ok else 422)
    assert len(api.created) == (1 if ok else 0)


@pytest.mark.parametrize(("given", "dialled"), [
    ("sip:jürgen@example.com", "sip:j%C3%BCrgen@example.com"),  # raw non-ASCII: escaped
    ("sip:*31#100@example.com", "sip:*31%23100@example.com"),
    ("sip:100%@example.com", "sip:100%25@example.com"),  # a stray "%"
    ("sip:49;x=1@example.com", "sip:49%3Bx=1@example.com"),  # no ";params" in the user
    ("sip:49?Replaces=a@example.com", "sip:49%3FReplaces=a@example.com"),  # nor "?headers"
    ("sip:bob:secret@example.com", "sip:bob@example.com"),  # no password in the call log
    ("sip:bob@Example.COM;transport=tcp?Subject=x", "sip:bob@example.com;transport=tcp"),
    ("sip:bob@example.com;method=BYE", "sip:bob@example.com"),
    ("sip:%62ob@example.com", "sip:bob@example.com"),  # unreserved: unescaped
    ("sip:a%40b@example.com", "sip:a%40b@example.com"),
])
def test_a_sip_uri_destination_is_rebuilt_escaped(given: str, dialled: str) -> None:
    assert normalise_destination(given) == dialled
    router, api = fake_router()
    status, reply = post(router, {"user": "201", "to": given})
    assert status == 201, reply
    assert api.created[0]["to"] == dialled


@pytest.mark.parametrize(("path", "query", "field"), [
    ("/call-init.php", b"user=201&to=%ED%A0%80", "to"),  # an encoded surrogate
    ("/locaphone/prov/call-init.php", b"user=201&to=%FF49", "to"),
    ("/call-init.php", b"user=201&to=49\xff", "to"),  # a raw byte, not UTF-8
    ("/remote_call.htm", b"user=201&dest=%C3", "dest"),
    ("/call-init.php", b"user=%C3&to=49", "user"),
    ("/v1/calls", b"user=%ED%A0%80", "user"),
    ("/v1/registrations", b"user=%80", "user"),
])
def test_query_values_that_are_not_utf8_are_a_400(path: str, query: bytes,
                                                  field: str) -> None:
    router, api = fake_router()
    status, reply = ask(router, "GET", path, query=query)
    assert (status, reply["error"]["code"]) == (400, "invalid_query")
    assert reply["error"]["message"] == f"{field}: is not UTF-8 text once %-decoded"
    assert api.created == []


def test_a_utf8_query_value_is_decoded_once() -> None:
    router, api = fake_router()
    status, reply = ask(router, "GET", "/call-init.php", query=b"user=201&to=%C3%A4")
    assert (status, reply["error"]["code"]) == (422, "invalid_destination")
    status, _reply = ask(router, "GET", "/call-init.php", query=b"user=201&to=%2B49%2030")
    assert status == 201 and api.created[0]["to"] == "+4930"


def test_an_error_quoting_a_surrogate_is_still_sent() -> None:
    api = FakeApi(create_error=ApiError(409, "device_not_registered", "no device '\ud800'"))
    router, _api = fake_router(api)
    status, reply = post(router, {"user": "201", "to": "+4930"})
    assert status == 409
    assert reply["error"]["message"] == "no device '\ud800'"  # the JSON escape, decoded


def test_a_stored_call_with_a_surrogate_does_not_break_the_list() -> None:
    """A call stored before the edge refused such text is still listed (not a 500)."""
    api = FakeApi()
    api.add_call("c1", "201")["to"] = "sip:49\ud800@127.0.0.1"
    api.add_call("c2", "201")
    router, _api = fake_router(api)
    status, reply = ask(router, "GET", "/v1/calls")
    assert status == 200
    assert [c["id"] for c in reply["calls"]] == ["c1", "c2"]
    api.pending = succeed({"id": "c3", "user": "201", "to": "\ud800"})
    assert post(router, {"user": "201", "to": "+4930"})[0] == 201


def test_an_odd_path_is_named_escaped_in_the_404() -> None:
    router, _api = fake_router()
    status, reply = ask(router, "GET", "/v1/\x1b[2Jx")
    assert status == 404
    assert "\x1b" not in reply["error"]["message"]


# ------------------------------------------------------------- fuzzing the edge (hypothesis)

_HOSTILE = ["\ud800", "\udfff", "\x00", "\x1b", "\x7f", "\x85", "\r\n", "\u2028", ";", "?",
            "@", "%", "%0", "%00", "%0D%0A", "%ED%A0%80", "%FF", "<", ">", '"', "ä", "+",
            "sip:", "tel:", "#", " ", "201", "49", "127.0.0.1", "example.com", ":", "&", "="]
_text = st.lists(
    st.one_of(st.sampled_from(_HOSTILE), st.characters(exclude_categories=[])), max_size=10,
).map("".join)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_fields = ["user", "to", "device", "auto_answer", "mode", "confirm", "caller_id", "clir"]
_body = st.one_of(
    st.dictionaries(st.sampled_from(_fields) | _text,
                    st.sampled_from(["201", "202", "+4930123", "sip:bob@192.0.2.9"]) | _json,
                    max_size=5).map(lambda d: {"user": "201", "to": "+4930", **d}),
    _json,
).map(lambda doc: json.dumps(doc).encode("ascii")) | st.binary(max_size=64)


def _encode_value(value: str, how: int) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")  # a surrogate's bytes: not UTF-8
    return [quote(raw, safe="+").encode("ascii"), raw, quote(raw).encode("ascii")][how]


_pair = st.tuples(
    st.sampled_from(["user", "to", "dest", "cidnum", "clir", "connect", "auth", "from", "prv",
                     "state", "limit", "last_event_id"]) | _text,
    _text | st.sampled_from(["201", "+4930123", "1", "true"]),
    st.integers(0, 2),
)
_query = st.lists(_pair, max_size=5).map(
    lambda pairs: b"&".join(_encode_value(k, h) + b"=" + _encode_value(v, h) for k, v, h in pairs))
_route = st.sampled_from(["/call-init.php", "/locaphone/prov/call-init.php", "/remote_call.htm",
                          "/v1/calls", "/v1/registrations", "/v1/events"])

#: a longer run: SIPDIAL_FUZZ_EXAMPLES=20000 pytest tests/unit/test_hardening_http.py -k fuzz
FUZZ = settings(max_examples=int(os.environ.get("SIPDIAL_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[_Router, SimNet]]:
    """The real engine behind the router: SimNet with user 201's phone registered."""
    net = SimNet(catch_all_config())
    assert Phone(net).register().status == 200
    yield _Router(net.api, {"admin-token": "*", "tok-201": "201"}, ApiParts()), net


def _check_reply(status: int, reply: Any, net: SimNet) -> None:
    assert status < 500, reply
    if status >= 400:
        assert set(reply["error"]) == {"code", "message"}
    check_wire(net)


@FUZZ
@given(body=_body, token=st.sampled_from(["admin-token", "tok-201"]))
def test_fuzz_post_calls_never_500(engine: tuple[_Router, SimNet], body: bytes,
                                   token: str) -> None:
    router, net = engine
    status, reply = ask(router, "POST", "/v1/calls", body=body, token=token)
    _check_reply(status, reply, net)


@FUZZ
@given(path=_route, query=_query, token=st.sampled_from(["admin-token", "tok-201"]))
def test_fuzz_query_routes_never_500(engine: tuple[_Router, SimNet], path: str, query: bytes,
                                     token: str) -> None:
    router, net = engine
    status, reply = ask(router, "GET", path, query=query, token=token)
    _check_reply(status, reply, net)


# ------------------------------------------------------------- destinations on the wire


@pytest.mark.parametrize(("to", "number"), [
    ("sip:49%3Bx=1@127.0.0.1", "49;x=1"),
    ("sip:49%3FReplaces=abc%3Bto-tag%3D1@127.0.0.1", "49?Replaces=abc;to-tag=1"),
    ("sip:4%3C9%3E%22@127.0.0.1", '4<9>"'),
    ("sip:j%C3%BCrgen@127.0.0.1", "jürgen"),
])
def test_hostile_numbers_reach_every_header_escaped(to: str, number: str) -> None:
    """A number at sipdial's own host goes into From/P-Asserted-Identity (the phone's
    INVITE), Refer-To (the REFER) and the trunk's Request-URI escaped: it re-parses to the
    same number and carries no parameters or headers of its own."""
    flow = Flow(config=catch_all_config())
    flow.create(to=to)
    invite = flow.invite()
    assert_user_part(uri_of(invite.headers.get("From")), number)
    assert_user_part(uri_of(invite.headers.get("P-Asserted-Identity")), number)
    flow.ring()
    flow.answer()
    refer = flow.take_refer()
    refer_to = uri_of(refer.headers.get("Refer-To"))
    assert_user_part(refer_to, number)
    assert set(refer_to.params) == {"x-c2d"}  # only the call's own tag
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    flow.referred_invite()
    trunk = flow.target_gets_invite()
    assert isinstance(trunk.uri, SipURI)
    assert_user_part(trunk.uri, number)
    assert (trunk.uri.host, trunk.uri.port) == ("127.0.0.1", 5080)
    assert_user_part(uri_of(trunk.headers.get("To")), number)
    check_wire(flow.net)


@pytest.mark.parametrize(("to", "user"), [
    ("sip:bob;evil=1@192.0.2.9:5090", "bob;evil=1"),
    ("sip:bob%3Fsubject=x@192.0.2.9:5090", "bob?subject=x"),
])
def test_a_uri_destination_is_called_at_its_host_with_its_user_escaped(to: str,
                                                                       user: str) -> None:
    flow = Flow(config=catch_all_config())
    flow.target = Phone(flow.net, "bob", None, host="192.0.2.9", port=5090, user_agent=None)
    flow.create(to=to)
    flow.ring()
    flow.answer()
    flow.take_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    flow.referred_invite()
    target = flow.target_gets_invite()
    assert isinstance(target.uri, SipURI)
    assert_user_part(target.uri, user)
    assert (target.uri.host, target.uri.port) == ("192.0.2.9", 5090)
    check_wire(flow.net)


@pytest.mark.parametrize("to", [
    "sip:bob%00@192.0.2.9", "sip:49%0D%0AX-Evil:%201@127.0.0.1", "sip:%ED%A0%80@192.0.2.9",
    "sip:%FF@192.0.2.9", "sip:49%1B@127.0.0.1", "sip:49%7F@127.0.0.1", "49\x00",
    "4\u0669", "sip:49\ud800@127.0.0.1",
])
def test_the_engine_refuses_what_no_header_may_carry(to: str) -> None:
    """The engine's own check (for any caller of CallService, not only the HTTP edge):
    422 invalid_destination, and nobody is rung."""
    flow = Flow(config=catch_all_config())
    errors: list[Any] = []
    flow.net.api.create_call(user="201", to=to, device=None, auto_answer=None,
                             mode=None).addErrback(errors.append)
    (failure,) = errors
    assert (failure.value.status, failure.value.code) == (422, "invalid_destination")
    assert flow.phone.nothing()
    assert flow.net.store.calls == {}
    check_wire(flow.net)


def test_parse_destination_rebuilds_the_uri() -> None:
    local = {"127.0.0.1"}
    destination = parse_destination("sip:a;b?c@192.0.2.9;transport=tcp;method=BYE?X=y", local)
    assert destination.number == "a;b?c"
    assert str(destination.uri) == "sip:a%3Bb%3Fc@192.0.2.9;transport=tcp"
    assert parse_destination("sip:49%3B1@127.0.0.1", local).number == "49;1"
    with pytest.raises(ValueError, match="control character"):
        parse_destination("sip:4%009@127.0.0.1", local)


@pytest.mark.parametrize(("user", "escaped"), [
    ("+4930123", "+4930123"), ("*31#1", "*31%231"), ("a;b", "a%3Bb"), ("a?b=c", "a%3Fb=c"),
    ("a b", "a%20b"), ("ü", "%C3%BC"), ("\udcff", "%FF"), ("\ud800", "%ED%A0%80"),
    ("a@b", "a%40b"), ("a:b", "a%3Ab"), ("<>", "%3C%3E"),
])
def test_escape_user_never_leaves_a_delimiter_and_never_raises(user: str, escaped: str) -> None:
    assert escape_user(user) == escaped
    uri = user_uri(user, "127.0.0.1")
    assert NameAddr.parse(str(NameAddr(uri, "x"))).uri == uri


def test_a_phone_dialling_a_non_utf8_number_is_relayed_escaped() -> None:
    """A phone's own call to ``sip:%FF%3B1@sipdial``: the number reaches the route
    template escaped back to the same bytes (``quote`` raised UnicodeEncodeError on the
    surrogate escape ``unquote_user`` makes of ``%FF``)."""
    flow = Flow(config=catch_all_config())
    phone = flow.phone
    uri = "sip:%FF%3B1@127.0.0.1"
    cid = phone.new_id("dial")
    first = phone.request("INVITE", uri, call_id_value=cid, from_tag="d1",
                          to_value=f"<{uri}>", cseq_number=1, body=sdp_answer(),
                          content_type="application/sdp")
    phone.send(first)
    challenge = final_response(phone)
    assert challenge.status == 407
    phone.send(ack_for(first, challenge, first_via(first)))
    auth = phone.authorization(challenge, "INVITE", uri, proxy=True)
    second = phone.request("INVITE", uri, call_id_value=cid, from_tag="d1",
                           to_value=f"<{uri}>", cseq_number=2, body=sdp_answer(),
                           content_type="application/sdp",
                           extra=[("Proxy-Authorization", auth)])
    phone.send(second)
    relayed = flow.target.take_request("INVITE")
    assert isinstance(relayed.uri, SipURI)
    assert relayed.uri.user == "%FF%3B1"
    check_wire(flow.net)
