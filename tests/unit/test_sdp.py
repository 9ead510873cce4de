"""sipdial.sip.sdp: what a peer's SDP answer gives sipdial's media, and what it refuses."""

from __future__ import annotations

import pytest

from sipdial.sip import sdp


def answer(conn: str = "c=IN IP4 192.0.2.7", m: str = "m=audio 40000 RTP/AVP 8 0 101",
           extra: str = "a=rtpmap:101 telephone-event/8000") -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.7", "s=-", conn, "t=0 0", m, extra]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_the_first_g711_format_the_address_and_the_event_type() -> None:
    info = sdp.parse_answer(answer())
    assert info == sdp.MediaAnswer("192.0.2.7", 40000, 8, 101)


def test_ipv6() -> None:
    info = sdp.parse_answer(answer(conn="c=IN IP6 2001:db8::7"))
    assert info is not None and info.host == "2001:db8::7"


@pytest.mark.parametrize("conn, m", [
    ("c=IN IP4 phone.example.com", "m=audio 40000 RTP/AVP 0"),  # a host name: no DNS here
    ("c=IN IP4 999.1.1.1", "m=audio 40000 RTP/AVP 0"),
    ("c=IN IP4 2001:db8::7", "m=audio 40000 RTP/AVP 0"),  # IPv6 address under IP4
    ("c=IN IP6 192.0.2.7", "m=audio 40000 RTP/AVP 0"),
    ("c=IN IP4 192.0.2.7", "m=audio 0 RTP/AVP 0"),  # the stream is rejected
    ("c=IN IP4 192.0.2.7", "m=audio 70000 RTP/AVP 0"),  # not a port
    ("c=IN IP4 192.0.2.7", "m=audio 40000 RTP/AVP 9 18"),  # no G.711
])
def test_answers_sipdial_cannot_send_to_are_unusable(conn: str, m: str) -> None:
    assert sdp.parse_answer(answer(conn=conn, m=m)) is None


def test_an_event_type_that_is_no_payload_type_means_no_rfc4733() -> None:
    info = sdp.parse_answer(answer(extra="a=rtpmap:300 telephone-event/8000"))
    assert info is not None and info.event_payload_type is None
