"""Endpoint input handling with bytes and a fake clock: malformed input, RFC 3581, §18.2.2."""

from __future__ import annotations

import pytest

from sipdial.sip.message import Response, top_via
from sipdial.sip.peer import Peer
from tests.unit.simnet import SimNet, parse_response

PHONE = Peer("udp", "127.0.0.1", 5070)


def options(*, via: str = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-opt1",
            cseq: str = "1 OPTIONS", extra: str = "", method: str = "OPTIONS",
            content_length: str = "0", body: bytes = b"") -> bytes:
    text = (
        f"{method} sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:201@127.0.0.1>;tag=f1\r\n"
        "To: <sip:127.0.0.1>\r\n"
        "Call-ID: ep-1@phone\r\n"
        f"CSeq: {cseq}\r\n"
        f"{extra}"
        f"Content-Length: {content_length}\r\n\r\n"
    )
    return text.encode() + body


@pytest.fixture
def net() -> SimNet:
    return SimNet()


def only_response(net: SimNet, peer: Peer) -> Response:
    sent = net.sent_to(peer)
    assert len(sent) == 1, sent
    return parse_response(sent[0])


def test_good_options_is_answered(net: SimNet) -> None:
    net.deliver(options(), PHONE)
    assert only_response(net, PHONE).status == 200


@pytest.mark.parametrize("data", [
    options(cseq="1 INVITE"),  # CSeq method does not match the method
    options(content_length="abc"),  # malformed Content-Length
    options(content_length="40", body=b"short"),  # body shorter than Content-Length
    options(extra="Max-Forwards: 70\r\n"),  # a single-valued header twice
    options(extra="Contact: <sip:201@host;>>\r\n"),  # bad Contact
])
def test_malformed_request_with_readable_via_gets_400(net: SimNet, data: bytes) -> None:
    net.deliver(data, PHONE)
    response = only_response(net, PHONE)
    assert response.status == 400
    assert top_via(response).branch == "z9hG4bK-opt1"
    assert response.headers.get("Call-ID") == "ep-1@phone"
    assert net.endpoint.stats.malformed == 1


def test_bad_sip_version_gets_505(net: SimNet) -> None:
    net.deliver(options().replace(b"sip:127.0.0.1 SIP/2.0", b"sip:127.0.0.1 SIP/3.0"), PHONE)
    assert only_response(net, PHONE).status == 505


@pytest.mark.parametrize("data", [
    b"\x00\x01garbage\xff\r\n\r\n",
    b"hello world",
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: nonsense\r\n\r\n",
    # malformed responses are never answered
    b"SIP/2.0 999 Nope\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
    b"Content-Length: 0\r\n\r\n",  # missing From/To/Call-ID/CSeq
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 99\r\n\r\nshort",
    # a malformed ACK is never answered either
    options(method="ACK", cseq="1 ACK", content_length="abc"),
])
def test_garbage_and_malformed_responses_get_no_answer(net: SimNet, data: bytes) -> None:
    net.deliver(data, PHONE)
    assert net.sent_to(PHONE) == []
    assert net.log == []


def test_keepalive_crlf_is_ignored(net: SimNet) -> None:
    net.deliver(b"\r\n\r\n", PHONE)
    net.deliver(b"\r\n", PHONE)
    assert net.log == []
    assert net.endpoint.stats.malformed == 0


def test_bad_datagram_does_not_affect_the_next_good_one(net: SimNet) -> None:
    for bad in (b"\xff\xfe junk", options(cseq="1 INVITE"), b"SIP/2.0 abc\r\n\r\n",
                b"INVITE sip:x SIP/2.0\r\n\r\n"):
        net.deliver(bad, PHONE)
    net.clear()
    net.deliver(options(via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-good"), PHONE)
    response = only_response(net, PHONE)
    assert response.status == 200
    assert top_via(response).branch == "z9hG4bK-good"


def test_truncated_body_does_not_swallow_the_next_message(net: SimNet) -> None:
    # a UDP datagram is one message: the second one starts fresh
    net.deliver(options(content_length="500", body=b"v=0"), PHONE)
    assert only_response(net, PHONE).status == 400
    net.deliver(options(via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-2"), PHONE)
    assert only_response(net, PHONE).status == 200


def test_rport_filled_in_and_response_goes_to_source_port(net: SimNet) -> None:
    # RFC 3581 §4: the phone is behind NAT; its Via says 5070, the packet came from 40001
    source = Peer("udp", "203.0.113.7", 40001)
    net.deliver(options(via="SIP/2.0/UDP 192.168.1.10:5070;rport;branch=z9hG4bK-nat"), source)
    assert net.sent_to(Peer("udp", "192.168.1.10", 5070)) == []
    assert net.sent_to(Peer("udp", "203.0.113.7", 5070)) == []
    response = only_response(net, source)
    via = top_via(response)
    assert via.params["rport"] == "40001"
    assert via.params["received"] == "203.0.113.7"
    assert via.host == "192.168.1.10" and via.port == 5070
    assert via.branch == "z9hG4bK-nat"


def test_rport_received_added_even_when_host_matches(net: SimNet) -> None:
    # RFC 3581 §4: "MUST add a received parameter" whenever rport is present
    source = Peer("udp", "127.0.0.1", 40002)
    net.deliver(options(via="SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK-r"), source)
    via = top_via(only_response(net, source))
    assert via.params["rport"] == "40002"
    assert via.params["received"] == "127.0.0.1"


def test_no_rport_udp_response_goes_to_via_sent_by_port(net: SimNet) -> None:
    # §18.2.2: no rport -> the received address and the sent-by port
    source = Peer("udp", "203.0.113.7", 40003)
    net.deliver(options(via="SIP/2.0/UDP 192.168.1.10:5075;branch=z9hG4bK-norport"), source)
    assert net.sent_to(source) == []
    response = only_response(net, Peer("udp", "203.0.113.7", 5075))
    via = top_via(response)
    assert via.params["received"] == "203.0.113.7"
    assert "rport" not in via.params


def test_no_rport_no_port_defaults_to_5060(net: SimNet) -> None:
    source = Peer("udp", "127.0.0.1", 40004)
    net.deliver(options(via="SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-np"), source)
    response = only_response(net, Peer("udp", "127.0.0.1", 5060))
    assert "received" not in top_via(response).params  # same host: nothing to add


def test_tcp_response_goes_back_on_the_connection(net: SimNet) -> None:
    source = Peer("tcp", "127.0.0.1", 40005)
    net.deliver(options(via="SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-tcp"), source)
    assert only_response(net, source).status == 200


def test_second_via_is_kept_and_unchanged(net: SimNet) -> None:
    via = ("SIP/2.0/UDP 192.168.1.10:5070;rport;branch=z9hG4bK-a, "
           "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-b")
    source = Peer("udp", "203.0.113.7", 40006)
    net.deliver(options(via=via), source)
    response = only_response(net, source)
    values = response.headers.get_all("Via")
    assert len(values) == 2
    assert values[1] == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-b"


def test_retransmitted_request_gets_the_same_response(net: SimNet) -> None:
    net.deliver(options(), PHONE)
    first = net.sent_to(PHONE)
    net.deliver(options(), PHONE)
    assert net.sent_to(PHONE) == first


def test_stray_response_is_dropped(net: SimNet) -> None:
    net.deliver(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnone\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n", PHONE)
    assert net.log == []
    assert net.endpoint.stats.malformed == 0


def test_400_follows_rport_like_any_response(net: SimNet) -> None:
    source = Peer("udp", "203.0.113.7", 40011)
    net.deliver(options(via="SIP/2.0/UDP 192.168.1.10:5070;rport;branch=z9hG4bK-bad",
                        cseq="1 INVITE"), source)
    response = only_response(net, source)
    assert response.status == 400
    via = top_via(response)
    assert via.params["rport"] == "40011"
    assert via.params["received"] == "203.0.113.7"


def test_400_without_rport_goes_to_via_sent_by_port(net: SimNet) -> None:
    # §18.2.2 holds for error responses too: no rport -> received address, sent-by port
    source = Peer("udp", "203.0.113.7", 40012)
    net.deliver(options(via="SIP/2.0/UDP 192.168.1.10:5075;branch=z9hG4bK-bad2",
                        cseq="1 INVITE"), source)
    assert net.sent_to(source) == []
    response = only_response(net, Peer("udp", "203.0.113.7", 5075))
    assert response.status == 400
    assert top_via(response).params["received"] == "203.0.113.7"
