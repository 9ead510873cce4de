"""What the calls-layer redesign changed on purpose: illegal inputs end a call at once,
destinations are parsed with sipdial.sip.uri (scheme and host kept), an unroutable
destination is refused before anyone is rung, an unregistered extension ends the call as
target_unavailable, every response to a request without a To tag carries one, and /healthz
names what it counts."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sipdial.api import ApiError
from sipdial.calls import Destination, Mode
from sipdial.calls.routing import parse_destination
from sipdial.calls.states import Input
from sipdial.config import parse_config
from sipdial.sip.message import Response, to
from sipdial.sip.peer import Peer
from sipdial.sip.rfc3263 import ResolveError
from sipdial.sip.uri import NameAddr, SipURI
from tests.unit.simnet import (
    BASE_CONFIG,
    Phone,
    SimNet,
    parse_request,
    parse_response,
    sdp_answer,
)
from tests.unit.test_bridge_flow import FakeMedia, FakePrompts
from tests.unit.test_clicktodial_flow import Flow

LOCAL = frozenset({"127.0.0.1", "sipdial.example"})


def _refused(flow: Flow, **create: Any) -> ApiError:
    errors: list[Any] = []
    args: dict[str, Any] = {"user": "201", "device": None, "auto_answer": None, "mode": None}
    args.update(create)
    flow.net.api.create_call(**args).addErrback(lambda f: errors.append(f.value))
    (error,) = errors
    assert isinstance(error, ApiError)
    return error


# ----------------------------------------------------------------- destinations


@pytest.mark.parametrize(("to", "number", "uri"), [
    ("+4930123456", "+4930123456", None),
    ("201", "201", None),
    ("sip:202@127.0.0.1", "202", None),  # our own host: the extension
    ("sip:+4930123@sipdial.example;user=phone", "+4930123", None),
    ("tel:+4930123", "+4930123", None),
    ("sip:bob@example.com", "bob", "sip:bob@example.com"),
    ("sips:bob@example.com", "bob", "sips:bob@example.com"),  # was the user "sips:bob"
    ("sip:alice@192.0.2.7:5090", "alice", "sip:alice@192.0.2.7:5090"),
    # what a Request-URI may not carry is dropped (RFC 3261 §19.1.5)
    ("sip:bob@example.com;method=REGISTER?Subject=hi", "bob", "sip:bob@example.com"),
    ("sip:bob:pw@example.com;transport=tcp", "bob", "sip:bob@example.com;transport=tcp"),
])
def test_destinations_are_parsed_with_the_uri_grammar(to: str, number: str,
                                                      uri: str | None) -> None:
    destination = parse_destination(to, LOCAL)
    assert destination.number == number
    assert (str(destination.uri) if destination.uri is not None else None) == uri


@pytest.mark.parametrize("to", ["sip:@example.com", "sip:example.com", "sip:bob@"])
def test_a_destination_uri_without_user_or_host_is_invalid(to: str) -> None:
    with pytest.raises(ValueError):
        parse_destination(to, LOCAL)


def test_a_foreign_sip_uri_is_called_at_its_host_in_bridge_mode() -> None:
    media = FakeMedia()
    flow = Flow(media=media, prompts=FakePrompts())
    far = flow.net.core.router.route(Destination("alice", SipURI.parse(
        "sip:alice@192.0.2.7:5090")), flow.net.now)
    assert isinstance(far, list) and far[0].peer == Peer("udp", "192.0.2.7", 5090)
    assert str(far[0].uri) == "sip:alice@192.0.2.7:5090"
    named = flow.net.core.router.route(Destination("bob", SipURI.parse(
        "sip:bob@pbx.example.com")), flow.net.now)
    assert isinstance(named, list) and named[0].peer is None  # resolved when the INVITE goes
    flow.create(mode="bridge", to="sip:alice@192.0.2.7:5090")
    flow.ring()
    flow.answer()
    sent = flow.net.sent_to(Peer("udp", "192.0.2.7", 5090))
    assert sent, "the target's host was dropped"
    invite = sent[0]
    assert invite.startswith(b"INVITE sip:alice@192.0.2.7:5090 SIP/2.0")


def test_refer_to_names_the_uri_user_not_the_scheme() -> None:
    flow = Flow()
    flow.create(to="sips:bob@example.com")
    flow.ring()
    flow.answer()
    refer = flow.take_refer()
    refer_to = refer.headers.get("Refer-To") or ""
    assert refer_to.startswith("<sip:bob@127.0.0.1"), refer_to


def test_an_unroutable_destination_is_refused_before_ringing() -> None:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    flow = Flow(config=parse_config(text.replace("^\\\\+?[0-9]+$", "^\\\\+49[0-9]+$")))
    assert flow.net.config.routes[0].match.pattern == "^\\+49[0-9]+$"
    error = _refused(flow, to="+442079460000")
    assert (error.status, error.code) == (422, "no_route")
    assert flow.phone.nothing(), flow.phone.pending()  # nobody was rung
    assert flow.net.store.calls == {}


def test_an_invalid_destination_uri_is_refused() -> None:
    flow = Flow()
    error = _refused(flow, to="sip:bob@")
    assert error.status == 422 and error.code == "invalid_destination"
    assert flow.phone.nothing()


def test_an_unregistered_extension_ends_as_target_unavailable_without_ringing() -> None:
    flow = Flow()
    result = flow.create(to="202")
    assert result["state"] == "ended" and result["cause"] == "target_unavailable"
    assert flow.net_record.events[-1].sip_code == 480
    assert flow.phone.nothing(), flow.phone.pending()  # the user was not rung for nothing
    assert (flow.call_id, "ended") in flow.net.published


def test_an_extension_that_unregisters_meanwhile_ends_as_target_unavailable() -> None:
    flow = Flow()
    bob = Phone(flow.net, "202", "secret202", port=5090, contact_host="192.168.1.50")
    assert bob.register().status == 200
    bob.net.clear()
    flow.create(to="202")
    flow.ring()
    flow.answer()
    flow.take_refer()
    flow.accept_refer()
    assert bob.register(expires=0).status == 200  # 202 goes away before the transfer
    flow.referred_invite()
    assert flow.answered is not None
    assert flow.answered.take_response(480).status == 480
    assert flow.cause == "target_unavailable"


# ----------------------------------------------------------------- illegal transitions


def test_an_illegal_input_ends_the_call_at_once_as_failed(
        caplog: pytest.LogCaptureFixture) -> None:
    flow = Flow()
    flow.create()
    flow.ring()
    call = flow.net.calls.live(flow.call_id)
    assert call is not None
    with caplog.at_level(logging.ERROR, logger="sipdial.calls"):
        call.fire(Input.TARGET_ANSWERED, flow.net.now)  # a bug: nothing rang yet
    assert flow.state == "ended" and flow.cause == "failed"
    assert "internal error" in (flow.net_record.events[-1].detail or "")
    assert flow.net.calls.live(flow.call_id) is None  # not left for the 4-hour sweep
    flow.phone.take_request("CANCEL")  # every leg released
    assert (flow.call_id, "ended") in flow.net.published  # the CRM hears of it
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "TARGET_ANSWERED" in errors[0].getMessage()


def test_an_action_that_raises_ends_the_call_as_failed() -> None:
    flow = Flow()
    flow.create()
    call = flow.net.calls.live(flow.call_id)
    assert call is not None
    call.forks.cancel_others = None  # type: ignore[assignment,method-assign]  # a bug
    flow.ring()
    flow.answer()
    assert flow.cause == "failed"
    assert flow.net.calls.live(flow.call_id) is None


# ----------------------------------------------------------------- To tags (RFC 3261 §8.2.6.2)


PHONE = Peer("udp", "127.0.0.1", 5070)


def _request(method: str, extra: str = "") -> bytes:
    return (f"{method} sip:201@127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-totag-" + method + "\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:201@127.0.0.1>;tag=ft\r\nTo: <sip:201@127.0.0.1>\r\n"
            "Call-ID: totag@phone\r\nCSeq: 1 " + method + "\r\n"
            "Contact: <sip:201@127.0.0.1:5070>\r\n" + extra + "Content-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize(("method", "extra", "status"), [
    ("OPTIONS", "", 200),
    ("REGISTER", "", 401),
    ("INVITE", "", 407),
    ("INVITE", "Max-Forwards: 0\r\n", 483),
    ("SUBSCRIBE", "", 405),
    ("FOO", "", 501),
    ("BYE", "", 481),
])
def test_responses_to_requests_without_to_tag_carry_one(method: str, extra: str,
                                                        status: int) -> None:
    net = SimNet()
    data = _request(method, extra)
    if extra.startswith("Max-Forwards"):
        data = data.replace(b"Max-Forwards: 70\r\n", b"")
    net.deliver(data, PHONE)
    responses = [parse_response(d) for d in net.sent_to(PHONE)]
    final = [r for r in responses if r.status >= 200]
    assert final and final[-1].status == status
    assert all(to(r).tag for r in final), [str(r.headers.get("To")) for r in final]
    assert all(to(r).tag is None for r in responses if r.status == 100)


def test_registered_200_carries_a_to_tag() -> None:
    net = SimNet()
    ok = Phone(net).register()
    assert isinstance(ok, Response) and ok.status == 200 and to(ok).tag


# ----------------------------------------------------------------- /healthz


def test_health_names_what_it_counts() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    health = flow.net.api.health()
    assert health["calls"] == 1  # click-to-dial calls in progress
    assert health["relayed_calls"] == 1  # the phone's referred call, relayed by sipdial
    assert "bridges" not in health
    assert health["registrations"] == 1


def test_bridge_mode_is_a_mode_not_a_string() -> None:
    flow = Flow(media=FakeMedia(), prompts=FakePrompts())
    record = flow.net.create_call(user="201", to="+4930123", mode="bridge")
    assert record.mode == Mode.BRIDGE == "bridge"


# ----------------------------------------------------------------- RFC 3263 resolution


class ScriptedResolver:
    """Answers every lookup with what the test says, and records the lookups."""

    def __init__(self, answer: list[Peer] | ResolveError) -> None:
        self.answer = answer
        self.asked: list[str] = []
        self.pending: list[Any] = []

    def resolve(self, uri: SipURI, default_transport: str, on_done: Any) -> None:
        self.asked.append(str(uri))
        self.pending.append(on_done)


def _trunk_flow(resolver: ScriptedResolver) -> Flow:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    text = text.replace("@127.0.0.1:5080", "@trunk.example.com")
    flow = Flow(config=parse_config(text), resolver=resolver)
    return flow


def test_a_route_host_name_that_does_not_resolve_fails_the_call_cleanly(
        caplog: pytest.LogCaptureFixture) -> None:
    resolver = ScriptedResolver(ResolveError("trunk.example.com", "no such host (NXDOMAIN)"))
    flow = _trunk_flow(resolver)
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    assert resolver.asked == ["sip:+4930123@trunk.example.com"]
    (on_done,) = resolver.pending
    with caplog.at_level(logging.INFO):
        on_done(resolver.answer, flow.net.now)  # the answer comes later, from the reactor
    assert flow.cause == "target_failed"
    assert flow.net_record.events[-1].detail == (
        "cannot resolve trunk.example.com: no such host (NXDOMAIN)")
    assert flow.answered is not None
    assert flow.answered.take_response().status >= 400  # the phone's call is answered
    assert not [r for r in caplog.records if r.exc_info], "a peer's fault is no traceback"


def test_resolved_addresses_are_tried_in_order_on_timeout_and_503() -> None:
    first, second, third = (Peer("udp", "127.0.0.1", p) for p in (5081, 5082, 5083))
    resolver = ScriptedResolver([first, second, third])
    flow = _trunk_flow(resolver)
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    (on_done,) = resolver.pending
    on_done(resolver.answer, flow.net.now)
    one = flow.net.sent_to(first)
    assert one and one[0].startswith(b"INVITE sip:+4930123@trunk.example.com SIP/2.0")
    flow.net.advance(33)  # timer B: no answer from the first address
    two = [m for m in flow.net.sent_to(second) if m.startswith(b"INVITE")]
    assert two, "no fail-over to the second address"
    invite = parse_request(two[0])
    net_peer = Phone(flow.net, "x", None, port=5082, contact_host="127.0.0.1", user_agent=None)
    net_peer.reply(invite, 503)
    three = [m for m in flow.net.sent_to(third) if m.startswith(b"INVITE")]
    assert three, "no fail-over on 503"
    assert flow.state != "ended"


# ----------------------------------------------------------------- review fixes


def test_notify_before_202_then_bye_then_202_keeps_the_call() -> None:
    """RFC 3515 allows the first NOTIFY before the 202; the phone may then leave its first
    dialog. The late 202 must not end the call (it used to be an illegal input)."""
    flow = Flow()
    refer = flow.to_refer()
    flow.notify("SIP/2.0 100 Trying")
    assert flow.dialog is not None and flow.answered is not None
    flow.answered.send(flow.dialog.request("BYE"))
    flow.answered.take_response(200)
    flow.answered.reply(refer, 202, contact=False)
    assert flow.state in ("user_answered", "calling_target"), flow.states()
    flow.referred_invite()
    flow.target_gets_invite()
    flow.target_rings()
    flow.target_answers()
    flow.phone_acks_bridge()
    assert flow.state == "connected"


def test_notify_after_the_phone_left_its_first_dialog_is_still_answered() -> None:
    """RFC 5057: the BYE ends the INVITE usage; the REFER subscription's NOTIFYs still belong
    to the dialog (200, not 481)."""
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    assert flow.dialog is not None and flow.answered is not None
    flow.answered.send(flow.dialog.request("BYE"))
    flow.answered.take_response(200)
    ok = flow.notify("SIP/2.0 180 Ringing")
    assert ok.status == 200
    assert flow.state == "target_ringing"  # the NOTIFY is still news of the target


def test_a_broken_leg_ends_the_call_as_failed_not_hung_up() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    flow.target_gets_invite()
    flow.target_rings()
    flow.target_answers()
    flow.phone_acks_bridge()
    relayed = next(iter(flow.net.inbound.relayed))
    b = relayed.b
    assert b is not None
    b._illegal("a test's bug", flow.net.now)  # what an input missing from a table does
    assert flow.cause == "failed", flow.states()
    assert "internal error" in (flow.net_record.events[-1].detail or "")
    flow.target.take_request("BYE")


def test_an_invite_without_offer_is_relayed_with_the_answer_in_the_ack() -> None:
    """RFC 3264 §4 / RFC 3261 §13.2.2.4: the phone's INVITE has no SDP, so the target's 2xx
    carries the offer; the target's ACK must carry the phone's answer."""
    net = SimNet()
    phone = Phone(net, port=5070)
    assert phone.register().status == 200
    target = Phone(net, "+4930123", None, port=5080, contact_host="127.0.0.1", user_agent=None)
    net.clear()
    uri = "sip:+4930123@127.0.0.1"
    first = phone.request("INVITE", uri, call_id_value="offerless@phone", from_tag="ol",
                          to_value=f"<{uri}>", cseq_number=1)
    phone.send(first)
    challenge = phone.take_response(407)
    from tests.unit.simnet import ack_for, first_via
    phone.send(ack_for(first, challenge, first_via(first)))
    auth = phone.authorization(challenge, "INVITE", uri, proxy=True)
    second = phone.request("INVITE", uri, call_id_value="offerless@phone", from_tag="ol",
                           to_value=f"<{uri}>", cseq_number=2,
                           extra=[("Proxy-Authorization", auth)])
    phone.send(second)
    phone.take_response(100)
    invite = target.take_request("INVITE")
    assert invite.body == b""  # the offer is the target's to make
    offer = sdp_answer("10.7.7.7", 40000)
    target.reply(invite, 200, to_tag="tg", body=offer)
    assert target.nothing(), target.pending()  # no ACK yet: its answer is the phone's
    ok = phone.take_response(200)
    assert ok.body == offer
    answer = sdp_answer("192.168.1.10", 30000)
    contact = str(NameAddr.parse(ok.headers.get("Contact") or "").uri)
    ack = phone.request("ACK", contact, call_id_value="offerless@phone", from_tag="ol",
                        to_value=ok.headers.get("To") or "", cseq_number=2, body=answer,
                        content_type="application/sdp")
    phone.send(ack)
    target_ack = target.take_request("ACK")
    assert target_ack.body == answer


# ----------------------------------------------------------------- one line per change


def test_info_log_has_one_line_per_call_state_change_and_registration(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sipdial"):
        flow = Flow()
        flow.create()
        flow.ring()
        flow.phone.reply(flow.invite(), 486, to_tag="busy")
    lines = [r.getMessage() for r in caplog.records if r.name == "sipdial.calls"]
    call = flow.call_id
    assert [line for line in lines if line.startswith(f"call {call}")] == [
        f"call {call} user 201: calling_user to=+4930123 mode=refer (1 device(s))",
        f"call {call} user 201: user_ringing sip=180 (sip:201@192.168.1.10:5070)",
        f"call {call} user 201: ended cause=user_busy sip=486 (sip:201@192.168.1.10:5070)",
    ]
    registrations = [r.getMessage() for r in caplog.records if r.name == "sipdial.registrar"]
    assert registrations == [
        "registered 201 at sip:201@192.168.1.10:5070 from udp:127.0.0.1:5070 "
        "(Yealink SIP-T46S 66.86.0.15)"]


@pytest.mark.parametrize("number", ["x@evil.example", "1\r\nX-Evil: 1", "1>;lr", "+49 30"])
def test_a_number_from_the_wire_cannot_change_a_routes_host(number: str) -> None:
    """A phone's Request-URI user is percent-decoded; substituted raw into a route template
    ("sip:{number}@gw") it could name another host or break the header. It goes in escaped."""
    import re

    from sipdial.calls import Router
    from sipdial.config import RouteConfig

    route = RouteConfig(re.compile(".*"), "sip:{number}@192.0.2.50:5080")
    router = Router([], [route], lambda user, now: [], LOCAL)
    (target,) = router.route(Destination(number), 0.0)  # type: ignore[misc]
    assert isinstance(target.uri, SipURI)
    assert (target.uri.host, target.uri.port) == ("192.0.2.50", 5080)
    assert target.uri.unquote_user() == number
    assert target.peer == Peer("udp", "192.0.2.50", 5080)
    assert "\r" not in str(target.uri) and "\n" not in str(target.uri)


# ----------------------------------------------------------------- [numbers] (issue 10 §1)


def _numbers_flow(route_format: str = "e164") -> Flow:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    text = text.replace('uri = "sip:{number}@127.0.0.1:5080"',
                        f'uri = "sip:{{number}}@127.0.0.1:5080"\nformat = "{route_format}"')
    text += '\n[numbers]\ncountry = "49"\narea = "211"\nbase = "339903"\noutside_line = "0"\n'
    return Flow(config=parse_config(text))


def test_a_short_number_is_completed_to_e164_for_the_call_the_refer_and_the_route() -> None:
    flow = _numbers_flow()
    flow.create(to="12")
    assert flow.net_record.to == "+4921133990312"  # the call resource (and its events)
    flow.ring()
    flow.answer()
    refer = flow.take_refer()
    assert (refer.headers.get("Refer-To") or "").startswith("<sip:+4921133990312@")
    flow.accept_refer()
    flow.referred_invite()
    assert str(flow.target_gets_invite().uri) == "sip:+4921133990312@127.0.0.1:5080"


def test_a_route_that_wants_the_dialled_form_gets_it() -> None:
    flow = _numbers_flow("dial")
    flow.create(to="030 123456".replace(" ", ""), mode="refer")
    assert flow.net_record.to == "+4930123456"
    flow.ring()
    flow.answer()
    flow.take_refer()
    flow.accept_refer()
    flow.referred_invite()
    assert str(flow.target_gets_invite().uri) == "sip:0030123456@127.0.0.1:5080"


@pytest.mark.parametrize("to, why", [("+491", "too short"), ("+999123456",
                                                              "unknown country code")])
def test_an_impossible_number_is_422_invalid_number_saying_why(to: str, why: str) -> None:
    flow = _numbers_flow()
    error = _refused(flow, to=to)
    assert (error.status, error.code) == (422, "invalid_number")
    assert why in error.message
    assert flow.phone.nothing() and flow.net.store.calls == {}


def test_a_user_s_own_numbers_table_overrides_the_deployment_s() -> None:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    text = text.replace('id = "202"', 'id = "202"\nnumbers = { area = "30", base = "555" }', 1)
    text += '\n[numbers]\ncountry = "49"\narea = "211"\nbase = "339903"\n'
    config = parse_config(text)
    assert config.users["202"].numbers is not None
    assert config.users["202"].numbers.country == "49"  # inherited
    assert config.users["201"].numbers is None
    flow = Flow(config=config)
    flow.create(to="12")
    assert flow.net_record.to == "+4921133990312"  # 201: the deployment's plan
    assert flow.net.calls.router.destination("12", config.users["202"].numbers).number \
        == "+493055512"


def test_metadata_is_on_the_call_and_in_every_event() -> None:
    flow = Flow()
    flow.create(metadata={"ticket": "T-4711"})
    assert flow.net_record.metadata == {"ticket": "T-4711"}
    flow.ring()
    assert flow.net_record.to_json()["metadata"] == {"ticket": "T-4711"}


def test_a_busy_user_is_rung_anyway_unless_refuse_if_busy() -> None:
    """CRMs ask whether to ring a user already on a call (issue 10 §6): by default yes; with
    refuse_if_busy (per request, or the user's setting) 409 user_busy while the user has a
    click-to-dial call in progress."""
    flow = Flow()
    flow.create()
    assert flow.state == "calling_user"
    error = _refused(flow, to="+4930999999", refuse_if_busy=True)
    assert (error.status, error.code) == (409, "user_busy")
    assert flow.phone.nothing(), flow.phone.pending()  # nobody rung for the refused one
    second = flow.net.api.create_call(user="201", to="+4930999998", device=None,
                                      auto_answer=None, mode=None)
    results: list[Any] = []
    second.addBoth(results.append)
    assert isinstance(results[0], dict), results  # rung anyway by default
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    busy = Flow(config=parse_config(text.replace('id = "201"',
                                                 'id = "201"\nrefuse_if_busy = true', 1)))
    busy.create()
    error = _refused(busy, to="+4930999999")
    assert (error.status, error.code) == (409, "user_busy")
    busy.create(to="+4930999997", refuse_if_busy=False)  # the request wins


def test_a_request_s_own_headers_reach_the_phone_when_the_config_allows_them() -> None:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    text = text.replace("[calls]", '[calls]\nextra_headers = ["X-CRM-Id"]', 1)
    flow = Flow(config=parse_config(text))
    flow.create(headers=(("x-crm-id", "T-4711"),))
    invite = next(iter(flow.invites.values()))
    assert invite.headers.get("X-CRM-Id") == "T-4711"
    for headers, why in (((("X-Other", "1"),), "not in [calls] extra_headers"),
                         ((("X-CRM-Id", "a\r\nVia: evil"),), "no line breaks"),
                         ((("X-CRM-Id", "x" * 300),), "at most 256"),
                         ((("X-CRM-\u212aey", "1"),), "not in [calls] extra_headers"),
                         ((("X-CRM-Id", "1"), ("x-crm-id", "2")), "given twice"),
                         ((("X-CRM-Id", "a\u2028b"),), "no line breaks")):
        error = _refused(flow, to="+4930999999", headers=headers)
        assert (error.status, error.code) == (422, "invalid_header") and why in error.message


@pytest.mark.parametrize("name", ["Via", "P-Asserted-Identity", "bad name"])
def test_sipdials_own_headers_cannot_be_allowed(name: str) -> None:
    from sipdial.config import ConfigError

    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    with pytest.raises(ConfigError, match="no header a request may set"):
        parse_config(text.replace("[calls]", f'[calls]\nextra_headers = ["{name}"]', 1))
