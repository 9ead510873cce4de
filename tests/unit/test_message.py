"""parse_message, serialisation, typed accessors, make_response and StreamFramer (RFC 3261 §7,
§8.2.6, §18.3)."""

from __future__ import annotations

import pytest

from sipdial.sip.errors import ParseError, SipError
from sipdial.sip.headers import CSeq, Headers
from sipdial.sip.message import (
    MAX_MESSAGE_SIZE,
    REASONS,
    Request,
    Response,
    StreamFramer,
    call_id,
    cseq,
    from_,
    from_tag,
    make_response,
    parse_message,
    peek_from,
    peek_to,
    peek_top_via,
    to,
    to_tag,
    top_via,
    vias,
)
from sipdial.sip.uri import AbsoluteURI, SipURI

SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=Caf\u00e9 \u2615\r\n".encode()  # non-ASCII: bytes


def invite(body: bytes = SDP, length: int | None = None, extra: str = "") -> bytes:
    n = len(body) if length is None else length
    head = (
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: Bob <sip:bob@biloxi.example.com>\r\n"
        'From: "Alice, A." <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        "Content-Type: application/sdp\r\n"
        f"{extra}"
        f"Content-Length: {n}\r\n"
        "\r\n"
    )
    return head.encode() + body


RESPONSE = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bK4b43c2ff8.1\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def reject(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_message(data)
    return info.value


# --- parsing ----------------------------------------------------------------------------------


def test_parse_request_fields() -> None:
    msg = parse_message(invite())
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri == SipURI("sip", "bob", None, "biloxi.example.com", None)
    assert msg.body == SDP
    assert call_id(msg) == "a84b4c76e66710@pc33.atlanta.example.com"
    assert cseq(msg) == CSeq(314159, "INVITE")
    assert from_(msg).display_name == "Alice, A."
    assert from_(msg).tag == "1928301774"
    assert to(msg).tag is None
    assert top_via(msg).branch == "z9hG4bK776asdhds"
    assert top_via(msg).params["rport"] is None


def test_parse_response_fields() -> None:
    msg = parse_message(RESPONSE)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason, msg.body) == (180, "Ringing", b"")
    assert [v.host for v in vias(msg)] == [
        "server10.biloxi.example.com",
        "pc33.atlanta.example.com",
    ]
    assert to(msg).tag == "a6c85cf"


def test_content_length_counts_bytes_not_characters() -> None:
    body = "\u00e4\u00f6\u00fc\u20ac".encode()  # 4 characters, 9 bytes
    msg = parse_message(invite(body))
    assert msg.body == body
    assert msg.headers.get("Content-Length") == "9"
    assert b"Content-Length: 9\r\n" in msg.to_bytes()


def test_body_is_cut_to_content_length_and_trailing_octets_ignored() -> None:
    msg = parse_message(invite(b"0123456789", length=4))
    assert msg.body == b"0123"


def test_body_shorter_than_content_length_is_400_with_request() -> None:
    err = reject(invite(b"0123", length=10))
    assert err.status == 400
    assert isinstance(err.request, Request)
    assert err.request.method == "INVITE"
    assert err.request.body == b""


def test_missing_content_length_on_a_datagram_means_rest_of_datagram() -> None:
    data = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    assert b"Content-Length" not in data
    assert parse_message(data).body == SDP


def test_compact_forms_and_folding() -> None:
    data = (
        b"OPTIONS sip:carol@chicago.example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP pc1.example.com\r\n"
        b"  ;branch=z9hG4bKa1\r\n"
        b"f: <sip:alice@example.com>;tag=ab\r\n"
        b"t:\r\n\t<sip:carol@chicago.example.com>\r\n"
        b"i: x1@pc1\r\n"
        b"CSeq: 2\r\n OPTIONS\r\n"
        b"k: timer, 100rel\r\n"
        b"Subject: I know you're there,\r\n"
        b"    pick up the phone\r\n"
        b"l: 0\r\n"
        b"\r\n"
    )
    msg = parse_message(data)
    assert top_via(msg).branch == "z9hG4bKa1"
    assert str(to(msg).uri) == "sip:carol@chicago.example.com"
    assert call_id(msg) == "x1@pc1"
    assert cseq(msg) == CSeq(2, "OPTIONS")
    assert msg.headers.get_all("Supported") == ["timer", "100rel"]
    assert msg.headers.get("Subject") == "I know you're there, pick up the phone"
    assert [n for n, _ in msg.headers.items()] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Supported", "Subject", "Content-Length",
    ]  # fmt: skip


def test_repeated_and_comma_joined_vias_are_equivalent() -> None:
    joined = invite().replace(
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n",
        b"Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP p2.example.com"
        b";branch=z9hG4bK2\r\nVia: SIP/2.0/TCP p3.example.com;branch=z9hG4bK3\r\n",
    )
    msg = parse_message(joined)
    assert [v.host for v in vias(msg)] == ["p1.example.com", "p2.example.com", "p3.example.com"]
    assert msg.headers.get_all("Via")[1] == "SIP/2.0/UDP p2.example.com;branch=z9hG4bK2"


def test_leading_crlfs_are_ignored() -> None:
    msg = parse_message(b"\r\n\r\n" + RESPONSE)
    assert isinstance(msg, Response) and msg.status == 180


def test_ipv6_and_tel_and_sips_request_uris() -> None:
    for uri in ["sip:[2001:db8::1]:5060;transport=udp", "tel:+4930123456", "sips:bob@b.com"]:
        data = invite().replace(b"sip:bob@biloxi.example.com SIP/2.0", f"{uri} SIP/2.0".encode())
        msg = parse_message(data)
        assert isinstance(msg, Request) and str(msg.uri) == uri


def test_unknown_scheme_request_uri_is_kept() -> None:
    data = invite().replace(b"sip:bob@biloxi.example.com SIP/2.0", b"urn:service:sos SIP/2.0")
    msg = parse_message(data)
    assert isinstance(msg, Request) and msg.uri == AbsoluteURI("urn", "service:sos")


def test_contact_star_is_accepted() -> None:
    data = invite(extra="Contact: *\r\nExpires: 0\r\n")
    assert parse_message(data).headers.get_all("Contact")[-1] == "*"


@pytest.mark.parametrize(
    ("data", "status", "why"),
    [
        (b"", 400, "no empty line"),
        (b"\r\n\r\n", 400, "no empty line"),  # only CRLFs: skipped as before a start line
        (b" \r\n\r\n", 400, "malformed start line"),
        (invite()[:-len(SDP) - 2], 400, "no empty line"),
        (invite().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505, "not supported"),
        (invite().replace(b"SIP/2.0\r\n", b"SIP/2\r\n", 1), 400, "bad SIP-Version"),
        (RESPONSE.replace(b"SIP/2.0 180", b"SIP/1.0 180"), 505, "not supported"),
        (RESPONSE.replace(b" 180 ", b" 18 "), 400, "Status-Line"),
        (RESPONSE.replace(b" 180 ", b" 099 "), 400, "out of range"),
        (RESPONSE.replace(b" 180 ", b" 700 "), 400, "out of range"),
        (invite().replace(b"INVITE sip", b"INV<ITE sip", 1), 400, "malformed start line"),
        (invite().replace(b"Max-Forwards: 70", b"Max-Forwards: lots"), 400, "Max-Forwards"),
        (invite().replace(b"Max-Forwards: 70", b"Max-Forwards 70"), 400, "header line"),
        (invite().replace(b"Call-ID: a84b", b"Call-ID: a 84b"), 400, "Call-ID"),
        (invite().replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 ACK"), 400, "CSeq method"),
        (invite(extra="Content-Length: 5\r\n"), 400, "more than one Content-Length"),
        (invite(extra="Call-ID: other\r\n"), 400, "more than one Call-ID"),
        (invite().replace(b"Content-Length: ", b"Content-Length: +"), 400, "Content-Length"),
        (invite().replace(b"Via: SIP/2.0/UDP pc33", b"Via: pc33"), 400, "bad Via"),
        (invite(extra="Contact: sip:a@b.com?x=y\r\n"), 400, "enclosed in <>"),
        (invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\rX: y\r\n"), 400, "CR or LF"),
        (invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\nX: y\r\n"), 400, "CR or LF"),
        (invite().replace(b"Bob <", b"B\xffb <"), 400, "not UTF-8"),
        (invite().replace(b"To: Bob <sip:bob@biloxi.example.com>\r\n", b""), 400, "missing To"),
        (RESPONSE.replace(b"CSeq: 314159 INVITE\r\n", b""), 400, "missing CSeq"),
    ],
)  # fmt: skip
def test_malformed_messages(data: bytes, status: int, why: str) -> None:
    err = reject(data)
    assert err.status == status
    assert why in str(err)


def test_size_limit_is_413() -> None:
    head_size = len(invite(b"x" * 60000)) - 60000  # same number of Content-Length digits
    just_fits = invite(b"x" * (MAX_MESSAGE_SIZE - head_size))
    assert len(just_fits) == MAX_MESSAGE_SIZE
    assert len(parse_message(just_fits).body) == MAX_MESSAGE_SIZE - head_size
    err = reject(just_fits + b"x")
    assert err.status == 413
    assert err.request is None


def test_parse_error_is_a_sip_error_with_status() -> None:
    err = ParseError("x", 505)
    assert isinstance(err, SipError)
    assert (err.status, str(err), err.request) == (505, "x", None)
    assert SipError("y").status == 400


def test_best_effort_request_on_bad_version_and_bad_request_line() -> None:
    err = reject(invite().replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1))
    assert err.status == 505 and err.request is not None
    assert err.request.method == "INVITE"
    assert str(err.request.uri) == "sip:bob@biloxi.example.com"
    bad_line = reject(invite().replace(b"INVITE sip:bob", b"INVITE  sip:bob", 1))
    assert bad_line.request is not None
    assert bad_line.request.uri == AbsoluteURI("", "sip:bob@biloxi.example.com SIP/2.0")
    response = make_response(bad_line.request, 400, to_tag="x")
    assert response.to_bytes().startswith(b"SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP pc33")


def test_no_best_effort_request_when_via_or_to_unreadable() -> None:
    assert reject(invite().replace(b"To: Bob <", b"To: Bob, X <")).request is None
    assert reject(invite().replace(b"SIP/2.0/UDP", b"SIP/2.0/UDP;;")).request is None
    assert reject(RESPONSE.replace(b"SIP/2.0 180", b"SIP/2.0 18")).request is None


def test_garbage_start_line_has_no_request() -> None:
    assert reject(b"\x16\x03\x01 hello\r\n\r\n").request is None


def test_bad_datagram_does_not_affect_the_next() -> None:
    reject(invite(b"0123", length=10))
    assert parse_message(invite()).body == SDP


# --- accessors ----------------------------------------------------------------------------------


def test_accessors_return_copies_of_cached_values() -> None:
    msg = parse_message(invite())
    t = to(msg)
    t.params["tag"] = "mine"
    assert isinstance(t.uri, SipURI)
    t.uri.user = "mallory"
    assert to(msg).tag is None
    assert str(to(msg).uri) == "sip:bob@biloxi.example.com"
    v = top_via(msg)
    v.params["received"] = "192.0.2.9"
    assert "received" not in top_via(msg).params
    vias(msg).clear()
    assert len(vias(msg)) == 1


def test_accessors_follow_header_mutation() -> None:
    msg = parse_message(invite())
    assert cseq(msg).number == 314159
    msg.headers.set("CSeq", "314160 INVITE")
    assert cseq(msg) == CSeq(314160, "INVITE")
    msg.headers.prepend("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp")
    assert top_via(msg).host == "proxy.example.com"
    msg.headers.set("To", "<sip:carol@example.com>;tag=9")
    assert to(msg).tag == "9"


def test_accessors_raise_parse_error_when_missing_or_bad() -> None:
    empty = Request("OPTIONS", SipURI.parse("sip:a@b.com"), Headers())
    for accessor in (call_id, cseq, from_, to, vias, top_via):
        with pytest.raises(ParseError):
            accessor(empty)
    bad = Request("OPTIONS", SipURI.parse("sip:a@b.com"), Headers([("CSeq", "x OPTIONS")]))
    with pytest.raises(ParseError):
        cseq(bad)


# --- serialisation ----------------------------------------------------------------------------


def test_to_bytes_recomputes_content_length_and_keeps_order() -> None:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
            ("l", "999"),
            ("Content-Length", "1"),
            ("To", "<sip:b@b.com>"),
        ]
    )
    req = Request("MESSAGE", SipURI.parse("sip:b@b.com"), headers, "h\u00e9".encode())
    assert req.to_bytes() == (
        b"MESSAGE sip:b@b.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"Content-Length: 3\r\n"
        b"To: <sip:b@b.com>\r\n"
        b"\r\n" + "h\u00e9".encode()
    )
    assert req.headers.get_all("Content-Length") == ["999", "1"]  # to_bytes does not mutate


def test_to_bytes_appends_content_length_when_absent() -> None:
    resp = Response(200, "OK", Headers([("CSeq", "1 BYE")]))
    assert resp.to_bytes() == b"SIP/2.0 200 OK\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"


def test_roundtrip_of_parsed_message() -> None:
    first = parse_message(invite())
    second = parse_message(first.to_bytes())
    assert second == first


# --- make_response ----------------------------------------------------------------------------


def test_make_response_copies_rfc3261_8_2_6_headers() -> None:
    data = invite(extra="Timestamp: 54\r\nRecord-Route: <sip:p.example.com;lr>\r\n").replace(
        b"Via: SIP/2.0/UDP pc33",
        b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp, SIP/2.0/UDP x;branch=z9hG4bKx\r\n"
        b"Via: SIP/2.0/UDP pc33",
    )
    request = parse_message(data)
    assert isinstance(request, Request)
    response = make_response(request, 180, to_tag="a6c85cf")
    assert (response.status, response.reason, response.body) == (180, "Ringing", b"")
    assert [n for n, _ in response.headers.items()] == [
        "Via", "Via", "From", "To", "Call-ID", "CSeq",
    ]  # fmt: skip
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.headers.get("From") == request.headers.get("From")
    assert to(response).tag == "a6c85cf"
    assert response.headers.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=a6c85cf"
    assert call_id(response) == call_id(request)
    assert cseq(response) == cseq(request)
    trying = make_response(request, 100)
    assert trying.reason == "Trying"
    assert trying.headers.get("Timestamp") == "54"  # §8.2.6.1
    assert to(trying).tag is None
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, Response) and to(parsed).tag == "a6c85cf"


def test_make_response_keeps_existing_to_tag_and_custom_reason() -> None:
    request = parse_message(
        invite().replace(
            b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:bob@biloxi.example.com>;tag=old"
        )
    )
    assert isinstance(request, Request)
    response = make_response(request, 486, "Busy Here Now", to_tag="new")
    assert to(response).tag == "old"
    assert response.reason == "Busy Here Now"


def test_default_reasons() -> None:
    assert REASONS[200] == "OK"
    assert REASONS[481] == "Call/Transaction Does Not Exist"
    assert REASONS[505] == "Version Not Supported"
    request = parse_message(invite())
    assert isinstance(request, Request)
    assert make_response(request, 299).reason == "OK"  # unknown code: class default
    assert make_response(request, 499).reason == "Client Error"


def test_make_response_needs_the_copied_headers() -> None:
    with pytest.raises(ParseError):
        make_response(Request("BYE", SipURI.parse("sip:a@b.com"), Headers()), 400)


# --- StreamFramer -------------------------------------------------------------------------------


def test_framer_whole_messages_in_one_chunk_with_keepalives() -> None:
    framer = StreamFramer()
    stream = b"\r\n" + invite() + b"\r\n\r\n" + RESPONSE + invite(b"")
    out = framer.feed(stream)
    assert out == [invite(), StreamFramer.PING, RESPONSE, invite(b"")]
    assert StreamFramer.PING == b"\r\n\r\n" and StreamFramer.PONG == b"\r\n"
    assert [type(parse_message(m)) for m in out if m != StreamFramer.PING] == [
        Request,
        Response,
        Request,
    ]


def test_framer_split_at_every_byte_boundary() -> None:
    stream = invite() + b"\r\n\r\n" + RESPONSE
    expected = [invite(), StreamFramer.PING, RESPONSE]
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        out = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert out == expected, cut


def test_framer_one_byte_at_a_time() -> None:
    stream = invite() + RESPONSE + b"\r\n"
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += framer.feed(stream[i : i + 1])
    assert out == [invite(), RESPONSE]  # a lone CRLF (a pong) is skipped silently


def test_framer_ping_split_across_feeds() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n") == [StreamFramer.PING]


def test_framer_requires_content_length() -> None:
    framer = StreamFramer()
    no_length = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    with pytest.raises(ParseError) as info:
        framer.feed(no_length)
    assert "Content-Length is required" in str(info.value)
    with pytest.raises(ParseError):  # dead after an error: the caller closes the connection
        framer.feed(RESPONSE)


def test_framer_compact_and_folded_content_length() -> None:
    framer = StreamFramer()
    folded = RESPONSE.replace(b"Content-Length: 0\r\n", b"l :\r\n 4\r\n") + b"abcd"
    assert framer.feed(folded + RESPONSE) == [folded, RESPONSE]


@pytest.mark.parametrize(
    ("stream", "status", "why"),
    [
        (invite(extra="l: 3\r\n"), 400, "more than one Content-Length"),
        (invite().replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: -1"), 400,
         "malformed Content-Length"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad start line"),
        (b"\r\x00", 400, "CR without LF"),
        (b"INVITE sip:a@b.com SIP/2.0\r\n" + b"X: y\r\n" * 12000, 413, "too large"),
        (invite(length=MAX_MESSAGE_SIZE), 413, "too large"),
    ],
)  # fmt: skip
def test_framer_errors(stream: bytes, status: int, why: str) -> None:
    framer = StreamFramer()
    with pytest.raises(ParseError) as info:
        framer.feed(stream)
    assert info.value.status == status
    assert why in str(info.value)


def test_framer_waits_for_the_body() -> None:
    framer = StreamFramer()
    data = invite()
    assert framer.feed(data[:-1]) == []
    assert framer.feed(data[-1:] + RESPONSE[:5]) == [data]
    assert framer.feed(RESPONSE[5:]) == [RESPONSE]


def test_framer_custom_max_size() -> None:
    framer = StreamFramer(max_size=100)
    with pytest.raises(ParseError) as info:
        framer.feed(RESPONSE)
    assert info.value.status == 413


# --- read-only accessors, lazy parsing ---------------------------------------------------------


def test_peek_accessors_equal_the_copying_ones() -> None:
    for data in (invite(), RESPONSE):
        msg = parse_message(data)
        assert peek_to(msg) == to(msg) and peek_from(msg) == from_(msg)
        assert peek_top_via(msg) == top_via(msg) == vias(msg)[0]
        assert to_tag(msg) == to(msg).tag and from_tag(msg) == from_(msg).tag
        assert peek_to(msg) is peek_to(msg)  # cached, not copied
        assert to(msg) is not to(msg)


def test_unusual_shapes_parse_like_before() -> None:
    # values that miss the fast regexes take the full parsers, with the same results
    data = (
        invite()
        .replace(b"Bob <sip:bob@biloxi", rb'"B\\o\"b" <sip:b%6fb:pw@biloxi')
        .replace(b"pc33.atlanta.example.com;branch", b"[2001:db8::1]:5060 ;branch")
        .replace(b"Contact: <sip:alice@pc33.atlanta.example.com>", b"m: sip:a@b.com, <tel:+1>")
    )
    msg = parse_message(data)
    assert to(msg).display_name == 'B\\o"b'
    assert str(to(msg).uri) == "sip:b%6fb:pw@biloxi.example.com"
    assert top_via(msg).host == "2001:db8::1" and top_via(msg).port == 5060
    assert peek_top_via(msg).branch == "z9hG4bK776asdhds"


def test_top_via_of_comma_joined_and_mutated_vias() -> None:
    msg = parse_message(invite())
    msg.headers.set("Via", "SIP/2.0/UDP a.example.com;branch=z9hG4bKa , SIP/2.0/UDP b;branch=x")
    assert peek_top_via(msg).host == "a.example.com"
    assert [v.host for v in vias(msg)] == ["a.example.com", "b"]
    msg.headers.set("Via", ' , SIP/2.0/UDP c;x="1,2", SIP/2.0/UDP d')
    assert top_via(msg).host == "c" and top_via(msg).params["x"] == '"1,2"'
    msg.headers.set("Via", "bogus, SIP/2.0/UDP e")
    with pytest.raises(ParseError):
        peek_top_via(msg)


def test_errors_in_later_vias_and_contacts_are_still_found() -> None:
    second_bad = invite(extra="Via: SIP/2.0/UDP ok.example.com;;\r\n")
    assert "bad parameter" in str(reject(second_bad))
    two_contacts = invite(extra="Contact: <sip:b@c.com>, sip:a@b.com?x\r\n")
    assert "enclosed in <>" in str(reject(two_contacts))
    assert reject(invite().replace(b"To: Bob <", b"To: Bob <<")).request is None


def test_make_response_rejects_cr_lf_in_the_tag() -> None:
    request = parse_message(invite())
    assert isinstance(request, Request)
    with pytest.raises(ValueError):
        make_response(request, 200, to_tag="x\r\nInjected: 1")
