"""Property tests: generated messages round-trip, and no input makes the parser raise anything
but ParseError (random bytes, and valid messages mutated byte by byte)."""

from __future__ import annotations

import ipaddress
import string
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sipdial.sip.errors import ParseError
from sipdial.sip.headers import CSeq, Headers, Via
from sipdial.sip.message import (
    Message,
    Request,
    Response,
    StreamFramer,
    call_id,
    cseq,
    from_,
    parse_message,
    to,
    vias,
)
from sipdial.sip.uri import NameAddr, SipURI, parse_uri

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"
WELL_FORMED = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason",
]  # fmt: skip
SEEDS = [(DATA / f"{name}.dat").read_bytes() for name in WELL_FORMED]

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUNDTRIP = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STREAMS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- grammar-shaped strategies (RFC 3261 §25.1) ---------------------------------------------------

ALNUM = string.ascii_letters + string.digits
UNRESERVED = ALNUM + "-_.!~*'()"
TOKEN = ALNUM + "-.!%*_+`'~"
HEX = "0123456789ABCDEFabcdef"


def chars_or_escapes(alphabet: str, min_size: int, hexdig: str = HEX) -> st.SearchStrategy[str]:
    escape = st.tuples(st.sampled_from(hexdig), st.sampled_from(hexdig)).map(
        lambda t: "%" + "".join(t)
    )
    return st.lists(st.sampled_from(alphabet) | escape, min_size=min_size, max_size=12).map("".join)


tokens = st.text(alphabet=TOKEN.replace("%", ""), min_size=1, max_size=12)
lower_tokens = st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=1,
                       max_size=10)  # fmt: skip
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
toplabel = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.builds(lambda ls, t: ".".join([*ls, t]), st.lists(label, max_size=3), toplabel)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))
hosts = hostnames | ipv4 | ipv6
ports = st.none() | st.integers(0, 65535)

users = chars_or_escapes(UNRESERVED + "&=+$,;?/", 1)
passwords = chars_or_escapes(UNRESERVED + "&=+$,", 0)
paramchars = chars_or_escapes(UNRESERVED + "[]/:&+$", 1)
uri_params = st.dictionaries(  # names are case-insensitive: the parser lower-cases them
    chars_or_escapes(string.ascii_lowercase + string.digits + "-_.!~*'()[]/:&+$", 1, HEX.lower()),
    st.none() | paramchars,
    max_size=3,
)
hnvchars = UNRESERVED + "[]/?:+$"
uri_headers = st.dictionaries(
    chars_or_escapes(hnvchars, 1), chars_or_escapes(hnvchars, 0), max_size=2
)


# Strategies are built once at module level: building them inside a composite costs more
# than drawing from them.
schemes = st.sampled_from(["sip", "sips", "tel"])
tel_numbers = st.from_regex(r"\+[0-9][0-9\-.()]{0,14}", fullmatch=True)
tel_params = st.dictionaries(lower_tokens, st.none() | paramchars, max_size=2)
optional_users = st.none() | users
optional_passwords = st.none() | passwords


@st.composite
def sip_uris(draw: st.DrawFn) -> SipURI:
    scheme = draw(schemes)
    if scheme == "tel":
        return SipURI("tel", draw(tel_numbers), None, "", None, draw(tel_params))
    user = draw(optional_users)
    password = draw(optional_passwords) if user is not None else None
    return SipURI(
        scheme, user, password, draw(hosts), draw(ports), draw(uri_params), draw(uri_headers)
    )


sip_uri_values = sip_uris()


# Display names: any text but CR/LF (which cannot be carried) and lone surrogates.
display_names = st.none() | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20
)
display_specials = st.sampled_from(
    ["Smith, John", "<sip:evil@x>", 'say "hi"', "back\\slash", "tab\there", " padded "]
)
gen_values = (
    st.none()
    | tokens
    | hosts.filter(lambda h: ":" not in h)
    | st.builds(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"',
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=10),  # qdtext + pairs
    )
)


any_display = display_names | display_specials
header_params = st.dictionaries(tokens.map(str.lower), gen_values, max_size=3)


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    return NameAddr(draw(sip_uri_values), draw(any_display), draw(header_params))


name_addr_values = name_addrs()
transports = st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]) | tokens.map(str.upper)
rports = st.none() | st.integers(1, 65535).map(str)


@st.composite
def via_values(draw: st.DrawFn) -> Via:
    params: dict[str, str | None] = {"branch": "z9hG4bK" + draw(tokens)}
    if draw(st.booleans()):
        params["rport"] = draw(rports)
    if draw(st.booleans()):
        params["received"] = draw(ipv4)
    return Via(draw(transports), draw(hosts), draw(ports), params)


via_lists = st.lists(via_values(), min_size=1, max_size=3)
via_names = st.sampled_from(["Via", "v", "VIA"])
from_names = st.sampled_from(["From", "f"])
to_names = st.sampled_from(["To", "t"])
call_id_names = st.sampled_from(["Call-ID", "i", "call-id"])
cseq_numbers = st.integers(0, 2**31 - 1)
max_forwards = st.integers(0, 255)
extra_counts = st.integers(0, 3)


methods = st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "REFER",
                           "NOTIFY", "SUBSCRIBE", "INFO", "MESSAGE", "PRACK"]) | tokens  # fmt: skip
call_ids = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]{1,20}(@[a-z0-9.]{1,10})?",
                         fullmatch=True)  # fmt: skip
extra_values = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=30
).map(str.strip)
bodies = st.binary(max_size=300) | st.text(max_size=50).map(str.encode)


@st.composite
def header_sets(draw: st.DrawFn, method: str) -> tuple[Headers, list[Via], NameAddr, NameAddr]:
    via_list = draw(via_lists)
    from_na = draw(name_addr_values)
    from_na.params["tag"] = draw(tokens)
    to_na = draw(name_addr_values)
    headers = Headers()
    if draw(st.booleans()):  # comma-joined or one Via per line
        headers.add("Via", ", ".join(str(v) for v in via_list))
    else:
        for v in via_list:
            headers.add(draw(via_names), str(v))
    headers.add(draw(from_names), str(from_na))
    headers.add(draw(to_names), str(to_na))
    headers.add(draw(call_id_names), draw(call_ids))
    headers.add("CSeq", f"{draw(cseq_numbers)} {method}")
    headers.add("Max-Forwards", str(draw(max_forwards)))
    for n in range(draw(extra_counts)):
        headers.add(f"X-Extra-{n}", draw(extra_values))
    return headers, via_list, from_na, to_na


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(methods)
    headers, *_ = draw(header_sets(method))
    uri = draw(sip_uri_values)
    uri.headers = {}  # no headers component in a Request-URI (§19.1.1)
    return Request(method, uri, headers, draw(bodies))


@st.composite
def responses(draw: st.DrawFn) -> Response:
    headers, *_ = draw(header_sets(draw(methods)))
    return Response(draw(status_codes), draw(reasons), headers, draw(bodies))


status_codes = st.integers(100, 699)
reasons = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)


def same_message(parsed: Message, original: Message) -> None:
    assert type(parsed) is type(original)
    if isinstance(original, Request):
        assert isinstance(parsed, Request)
        assert parsed.method == original.method
        assert parsed.uri == original.uri
    else:
        assert isinstance(parsed, Response)
        assert (parsed.status, parsed.reason) == (original.status, original.reason)
    assert parsed.body == original.body
    assert vias(parsed) == vias(original)
    assert from_(parsed) == from_(original)
    assert to(parsed) == to(original)
    assert cseq(parsed) == cseq(original)
    assert call_id(parsed) == call_id(original)
    without_length = [(n, v) for n, v in parsed.headers.items() if n != "Content-Length"]
    assert without_length == original.headers.items()
    assert parsed.headers.get("Content-Length") == str(len(original.body))


# --- round trips --------------------------------------------------------------------------------


@ROUNDTRIP
@given(requests())
def test_request_roundtrip(request: Request) -> None:
    same_message(parse_message(request.to_bytes()), request)


@ROUNDTRIP
@given(responses())
def test_response_roundtrip(response: Response) -> None:
    same_message(parse_message(response.to_bytes()), response)


@ROUNDTRIP
@given(st.data())
def test_header_views_roundtrip(data: st.DataObject) -> None:
    method = data.draw(methods)
    headers, via_list, from_na, to_na = data.draw(header_sets(method))
    msg = parse_message(Request(method, SipURI.parse("sip:x.example.com"), headers).to_bytes())
    assert vias(msg) == via_list
    assert from_(msg) == from_na
    assert to(msg) == to_na


@ROUNDTRIP
@given(sip_uri_values)
def test_sip_uri_str_parse_str(uri: SipURI) -> None:
    text = str(uri)
    parsed = SipURI.parse(text)
    assert parsed == uri
    assert str(parsed) == text
    assert parse_uri(text) == uri


@ROUNDTRIP
@given(name_addr_values)
def test_name_addr_str_parse_str(na: NameAddr) -> None:
    text = str(na)
    parsed = NameAddr.parse(text)
    assert parsed == na
    assert str(parsed) == text


@ROUNDTRIP
@given(via_values())
def test_via_str_parse_str(via: Via) -> None:
    text = str(via)
    assert Via.parse(text) == via
    assert str(Via.parse(text)) == text


@ROUNDTRIP
@given(st.integers(0, 2**31 - 1), methods)
def test_cseq_str_parse(number: int, method: str) -> None:
    assert CSeq.parse(str(CSeq(number, method))) == CSeq(number, method)


# --- the parser never raises anything but ParseError -------------------------------------------


def parse_or_parse_error(data: bytes) -> Message | None:
    try:
        return parse_message(data)
    except ParseError as exc:
        assert exc.status in (400, 413, 505)
        assert "internal parser error" not in str(exc)  # the safety net was not needed
        return None


def reserialises(msg: Message) -> None:
    """Whatever parses, serialises to something that parses back to the same fields."""
    again = parse_message(msg.to_bytes())
    assert type(again) is type(msg)
    assert again.body == msg.body
    assert [(n, v) for n, v in again.headers.items() if n != "Content-Length"] == [
        (n, v) for n, v in msg.headers.items() if n != "Content-Length"
    ]
    if isinstance(msg, Request) and isinstance(again, Request):
        assert (again.method, again.uri) == (msg.method, msg.uri)


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    msg = parse_or_parse_error(data)
    if msg is not None:
        reserialises(msg)


@FUZZ
@given(
    st.sampled_from(["INVITE sip:a@b.com SIP/2.0\r\n", "SIP/2.0 200 OK\r\n"]),
    st.lists(
        st.sampled_from(
            [
                "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
                "To: <sip:a@b.com>",
                "From: <sip:c@d.com>;tag=1",
                "Call-ID: x",
                "CSeq: 1 INVITE",
                "Content-Length: 3",
                "l: 0",
                "Contact: *",
            ]
        )
        | st.text(max_size=40).map(lambda t: t.replace("\r", "").replace("\n", "")),
        max_size=10,
    ),
    st.binary(max_size=20),
)
def test_random_header_soup(start: str, lines: list[str], body: bytes) -> None:
    data = (start + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode() + body
    msg = parse_or_parse_error(data)
    if msg is not None:
        reserialises(msg)


INTERESTING = [
    b"\r\n", b"\r\n ", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"%", b"@",
    b"=", b"/", b"[", b"]", b"\x00", b"\xff", b"\xc3", b"9" * 12, b"-1", b"SIP/",
]  # fmt: skip


mutation_counts = st.integers(1, 4)
mutation_ops = st.sampled_from(
    ["flip", "flip", "insert", "insert", "insert", "delete", "duplicate", "truncate"]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(mutation_counts)):
        op = draw(mutation_ops)
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 40))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_torture_messages(data: bytes) -> None:
    msg = parse_or_parse_error(data)
    if msg is not None:
        reserialises(msg)


@FUZZ
@given(mutated(), st.lists(st.integers(1, 200), max_size=10))
def test_stream_framer_only_raises_parse_error(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer()
    pos = 0
    try:
        for size in [*cuts, len(data)]:
            for chunk in framer.feed(data[pos : pos + size]):
                if chunk != StreamFramer.PING:
                    parse_or_parse_error(chunk)
            pos += size
    except ParseError as exc:
        assert exc.status in (400, 413)


@STREAMS
@given(st.lists(requests() | responses(), min_size=1, max_size=4), st.data())
def test_stream_framer_recovers_generated_messages_from_any_chunking(
    messages: list[Message], data: st.DataObject
) -> None:
    wire = [m.to_bytes() for m in messages]
    stream = b"\r\n\r\n".join(wire)
    assume(len(stream) < 20000)
    framer = StreamFramer()
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        size = data.draw(st.integers(1, max(1, len(stream) // 3)))
        out += framer.feed(stream[pos : pos + size])
        pos += size
    assert [chunk for chunk in out if chunk != StreamFramer.PING] == wire
    assert out.count(StreamFramer.PING) == len(wire) - 1
    for chunk, original in zip([c for c in out if c != StreamFramer.PING], messages, strict=True):
        same_message(parse_message(chunk), original)
