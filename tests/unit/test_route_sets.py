"""Record-Route and route sets (RFC 3261 §12.1.1, §12.1.2, §12.2.1.1, §16.12.1) and the outbound
proxy (§8.1.2): every dialog sipdial is in follows the proxies that Record-Routed it.

Unit tests with the real sans-IO stack (SimNet) and numbers for time. A "proxy" is only an
address here: the test reads what sipdial sent there, which is what a proxy would receive.
"""

from __future__ import annotations

import pytest

from sipdial.config import ConfigError, parse_config
from sipdial.sip import (
    Dialog,
    NameAddr,
    Peer,
    Request,
    call_id,
    cseq,
    make_response,
    parse_uri,
    route_request,
)
from sipdial.sip.message import parse_message
from tests.unit.simnet import BASE_CONFIG, Phone, ack_for, first_via, sdp_answer
from tests.unit.test_clicktodial_flow import TARGET, Flow

PROXY = Peer("udp", "127.0.0.1", 5098)
PROXY_RR = "<sip:127.0.0.1:5098;lr;ftag=x>"
FAR = Peer("udp", "127.0.0.2", 5097)


def _routes(request: Request) -> list[str]:
    return request.headers.get_all("Route")


def _parse_request(text: str) -> Request:
    message = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Request)
    return message


# ------------------------------------------------------------------ Dialog, sans anything

INVITE = """INVITE sip:sipdial@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5098;branch=z9hG4bKp1
Via: SIP/2.0/UDP 192.168.1.10:5070;branch=z9hG4bKa1
Record-Route: <sip:10.0.0.2;lr>
Record-Route: <sip:127.0.0.1:5098;lr>
From: <sip:201@127.0.0.1>;tag=a
To: <sip:sipdial@127.0.0.1>
Call-ID: c1
CSeq: 1 INVITE
Contact: <sip:201@192.168.1.10:5070>
Content-Length: 0

"""


def test_uas_route_set_is_record_route_in_order_and_requests_go_to_the_first() -> None:
    invite = _parse_request(INVITE)
    dialog = Dialog.from_uas(invite, "us", Peer("udp", "127.0.0.1", 5070), "<sip:s@127.0.0.1>")
    assert [str(r.uri) for r in dialog.route_set] == ["sip:10.0.0.2;lr", "sip:127.0.0.1:5098;lr"]
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:201@192.168.1.10:5070"  # loose: R-URI is the remote target
    assert _routes(bye) == ["<sip:10.0.0.2;lr>", "<sip:127.0.0.1:5098;lr>"]
    # the requester wrote this route set: its first hop is another host than the request
    # came from, so the BYE goes to the source (which routes on by the Route header), not
    # to an address the requester chose
    assert dialog.peer == Peer("udp", "127.0.0.1", 5070)
    same = Dialog.from_uas(invite, "us", Peer("udp", "10.0.0.2", 40000), "<sip:s@127.0.0.1>")
    assert same.peer == Peer("udp", "10.0.0.2", 5060)  # same host: the route's port counts


def test_uac_route_set_is_record_route_reversed() -> None:
    request = _parse_request(INVITE.replace("Record-Route: <sip:10.0.0.2;lr>\n", "")
                             .replace("Record-Route: <sip:127.0.0.1:5098;lr>\n", ""))
    response = make_response(request, 200, to_tag="b")
    response.headers.add("Record-Route", "<sip:127.0.0.3:5001;lr>, <sip:127.0.0.4:5002;lr>")
    response.headers.add("Contact", "<sip:bob@10.9.9.9>")
    # the INVITE went elsewhere (a Path hop, an outbound proxy): the route set decides now
    dialog = Dialog.from_uac(request, response, Peer("udp", "127.0.0.9", 5000), "<sip:s@x>")
    ack = dialog.create_ack(1)
    assert str(ack.uri) == "sip:bob@10.9.9.9"
    assert _routes(ack) == ["<sip:127.0.0.4:5002;lr>", "<sip:127.0.0.3:5001;lr>"]
    assert dialog.peer == Peer("udp", "127.0.0.4", 5002)


def test_strict_router_gets_its_uri_as_request_uri_and_the_target_last() -> None:
    target = parse_uri("sip:bob@10.9.9.9")
    routed = route_request(target, [NameAddr(parse_uri("sip:127.0.0.5:5003;transport=tcp")),
                                    NameAddr(parse_uri("sip:127.0.0.6;lr"))])
    assert str(routed.request_uri) == "sip:127.0.0.5:5003;transport=tcp"
    assert [str(r) for r in routed.routes] == ["<sip:127.0.0.6;lr>", "<sip:bob@10.9.9.9>"]
    assert routed.next_hop == routed.request_uri
    invite = _parse_request(INVITE.replace("<sip:10.0.0.2;lr>", "<sip:127.0.0.5:5003>"))
    dialog = Dialog.from_uas(invite, "us", Peer("udp", "127.0.0.1", 5070), "<sip:s@x>")
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:127.0.0.5:5003"
    assert _routes(bye) == ["<sip:127.0.0.1:5098;lr>", "<sip:201@192.168.1.10:5070>"]
    assert dialog.peer == Peer("udp", "127.0.0.1", 5070)  # another host: the source
    from_router = Dialog.from_uas(invite, "us", Peer("udp", "127.0.0.5", 6000), "<sip:s@x>")
    assert from_router.peer == Peer("udp", "127.0.0.5", 5003)


def test_a_route_over_a_transport_other_than_the_dialogs_falls_back_to_its_address() -> None:
    """A Record-Route naming TLS on a UDP dialog (sipdial may serve no TLS): the ACK and BYE
    go where the INVITE went instead of raising for want of a TLS transport."""
    request = _parse_request(INVITE.replace("Record-Route: <sip:10.0.0.2;lr>\n", "")
                             .replace("Record-Route: <sip:127.0.0.1:5098;lr>\n", ""))
    response = make_response(request, 200, to_tag="b")
    response.headers.add("Record-Route", "<sip:127.0.0.9:5098;transport=tls;lr>")
    response.headers.add("Contact", "<sip:bob@10.9.9.9>")
    sent_to = Peer("udp", "127.0.0.9", 5000)
    dialog = Dialog.from_uac(request, response, sent_to, "<sip:s@x>")
    assert dialog.peer == sent_to
    assert _routes(dialog.create_ack(1)) == ["<sip:127.0.0.9:5098;transport=tls;lr>"]


def test_route_named_by_a_host_name_falls_back_to_the_dialogs_address() -> None:
    invite = _parse_request(INVITE.replace("<sip:10.0.0.2;lr>", "<sip:proxy.example.com;lr>"))
    source = Peer("udp", "127.0.0.1", 5098)
    dialog = Dialog.from_uas(invite, "us", source, "<sip:s@x>")
    assert dialog.peer == source
    assert _routes(dialog.create_request("BYE"))[0] == "<sip:proxy.example.com;lr>"


# ------------------------------------------------------------------ refer mode, the phone leg


def _phone_answers_through_proxy(flow: Flow) -> tuple[Phone, Request]:
    """sipdial INVITEd the phone; a proxy Record-Routed it: 180 and 200 carry the RR."""
    proxy = Phone(flow.net, "proxy", None, port=PROXY.port, user_agent=None)
    flow.create()
    invite = flow.invite()
    phone = flow.phone
    phone.reply(invite, 180, to_tag="ph", headers=[("Record-Route", PROXY_RR)])
    phone.reply(invite, 200, to_tag="ph", body=sdp_answer(),
                headers=[("Record-Route", PROXY_RR)])
    return proxy, invite


def test_ack_and_refer_to_the_phone_follow_its_record_route() -> None:
    flow = Flow()
    proxy, invite = _phone_answers_through_proxy(flow)
    ack = proxy.take_request("ACK")  # before: straight to the phone, around the proxy
    assert cseq(ack).number == cseq(invite).number
    assert str(ack.uri) == flow.phone.contact_uri
    assert _routes(ack) == [PROXY_RR]
    refer = proxy.take_request("REFER")
    assert _routes(refer) == [PROXY_RR] and str(refer.uri) == flow.phone.contact_uri
    assert flow.phone.nothing(), flow.phone.pending()
    # the phone's NOTIFY comes through the proxy too; answered as usual
    proxy.reply(refer, 202, contact=False)
    assert flow.state == "user_answered"


def _referred_invite_via_proxy(flow: Flow, proxy: Phone, refer: Request) -> Request:
    """The phone follows the REFER through the proxy, which Record-Routes it."""
    uri = str(NameAddr.parse(refer.headers.get("Refer-To") or "").uri)
    proxy.contact_uri = flow.phone.contact_uri  # the phone's Contact, forwarded by the proxy
    sdp = sdp_answer(port=31000)
    extra = [("Record-Route", PROXY_RR),
             ("Referred-By", refer.headers.get("Referred-By") or "")]
    first = proxy.request("INVITE", uri, call_id_value="ref-1", from_tag="rf-a", from_user="201",
                          to_value=f"<sip:{TARGET}@127.0.0.1>", cseq_number=1, extra=extra,
                          body=sdp, content_type="application/sdp")
    proxy.send(first)
    challenge = proxy.take_response(407)
    proxy.send(ack_for(first, challenge, first_via(first)))
    auth = flow.phone.authorization(challenge, "INVITE", uri, proxy=True)
    second = proxy.request("INVITE", uri, call_id_value="ref-1", from_tag="rf-a",
                           from_user="201", to_value=f"<sip:{TARGET}@127.0.0.1>",
                           cseq_number=2, extra=[*extra, ("Proxy-Authorization", auth)],
                           body=sdp, content_type="application/sdp")
    proxy.send(second)
    proxy.take_response(100)
    return second


def _to_bridged_target(config_text: str | None = None) -> tuple[Flow, Phone, Request]:
    flow = Flow(config=parse_config(config_text) if config_text else None)
    proxy, _invite = _phone_answers_through_proxy(flow)
    proxy.take_request("ACK")
    refer = proxy.take_request("REFER")
    proxy.reply(refer, 202, contact=False)
    referred = _referred_invite_via_proxy(flow, proxy, refer)
    return flow, proxy, referred


def test_referred_invite_responses_echo_record_route_and_bye_follows_it() -> None:
    flow, proxy, referred = _to_bridged_target()
    target_invite = flow.target.take_request("INVITE")
    flow.target.reply(target_invite, 180, to_tag="tgt")
    ringing = proxy.take_response(180)
    assert ringing.headers.get_all("Record-Route") == [PROXY_RR]  # §12.1.1: before, none
    flow.target.reply(target_invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7"))
    flow.target.take_request("ACK")
    ok = proxy.take_response(200)
    assert ok.headers.get_all("Record-Route") == [PROXY_RR]
    # the target hangs up: sipdial's BYE to the phone goes through the proxy
    bye = flow.target.request("BYE", "sip:sipdial@127.0.0.1", call_id_value=call_id(
        target_invite), from_tag="tgt", from_user=TARGET,
        to_value=target_invite.headers.get("From") or "", cseq_number=1)
    bye.headers.set("To", target_invite.headers.get("From") or "")
    bye.headers.set("From", f"{target_invite.headers.get('To')};tag=tgt")
    flow.target.send(bye)
    flow.target.take_response(200)
    phone_bye = proxy.take_request("BYE")
    assert call_id(phone_bye) == call_id(referred)
    assert _routes(phone_bye) == [PROXY_RR]
    assert str(phone_bye.uri) == flow.phone.contact_uri


def test_bridge_target_leg_follows_a_strict_router_in_its_record_route() -> None:
    flow, proxy, _referred = _to_bridged_target()
    far = Phone(flow.net, "far", None, host=FAR.host, port=FAR.port, user_agent=None)
    target_invite = flow.target.take_request("INVITE")
    flow.target.reply(target_invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7"),
                      headers=[("Record-Route", "<sip:127.0.0.2:5097>")])  # no ;lr
    ack = far.take_request("ACK")  # before: to the target's address
    assert str(ack.uri) == "sip:127.0.0.2:5097"
    assert _routes(ack) == [f"<{flow.target.contact_uri}>"]
    assert flow.target.nothing(), flow.target.pending()
    proxy.take_response(200)
    assert flow.state == "connected"


# ------------------------------------------------------------------ outbound proxy


def _with_sip_key(line: str) -> str:
    text = BASE_CONFIG.format(auto_answer="true", user_answer_timeout=30.0,
                              target_answer_timeout=60.0, refer_timeout=32.0,
                              max_concurrent=2000)
    return text.replace('domain = "127.0.0.1"\n', f'domain = "127.0.0.1"\n{line}\n', 1)


def test_outbound_proxy_is_a_preloaded_route_for_the_target_invite() -> None:
    flow, _proxy, _referred = _to_bridged_target(
        _with_sip_key('outbound_proxy = "sip:127.0.0.2:5097;lr"'))
    far = Phone(flow.net, "far", None, host=FAR.host, port=FAR.port, user_agent=None)
    invite = far.take_request("INVITE")  # before: straight to the route's 127.0.0.1:5080
    assert str(invite.uri) == f"sip:{TARGET}@127.0.0.1:5080"
    assert _routes(invite) == ["<sip:127.0.0.2:5097;lr>"]
    assert flow.target.nothing()
    far.reply(invite, 100)
    # a CANCEL (the API hangs up) carries the same Route (§9.1) to the same hop
    flow.net.api.hangup_call(flow.call_id)
    cancel = far.take_request("CANCEL")
    assert _routes(cancel) == ["<sip:127.0.0.2:5097;lr>"]


def test_route_outbound_proxy_without_lr_is_a_strict_router() -> None:
    text = _with_sip_key('outbound_proxy = "sip:127.0.0.9:5000;lr"').replace(
        'uri = "sip:{number}@127.0.0.1:5080"',
        'uri = "sip:{number}@127.0.0.1:5080"\noutbound_proxy = "sip:127.0.0.2:5097"')
    flow, _proxy, _referred = _to_bridged_target(text)
    far = Phone(flow.net, "far", None, host=FAR.host, port=FAR.port, user_agent=None)
    invite = far.take_request("INVITE")  # the route's own proxy wins over [sip]'s
    assert str(invite.uri) == "sip:127.0.0.2:5097"
    assert _routes(invite) == [f"<sip:{TARGET}@127.0.0.1:5080>"]


@pytest.mark.parametrize("value", ["http://proxy", "sip:", "<sip:a;lr", "tel:+49"])
def test_bad_outbound_proxy_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="outbound_proxy"):
        parse_config(_with_sip_key(f'outbound_proxy = "{value}"'))


def test_malformed_record_route_in_a_2xx_never_raises_out_of_the_core() -> None:
    flow = Flow()
    flow.create()
    invite = flow.invite()
    flow.phone.reply(invite, 200, to_tag="ph", body=sdp_answer(),
                     headers=[("Record-Route", "<sip:127.0.0.1:5098;lr")])
    ack = flow.phone.take_request("ACK")  # ACKed anyway (§13.2.2.4), then hung up
    assert isinstance(ack, Request)
    flow.phone.take_request("BYE")
    assert flow.state == "ended"

