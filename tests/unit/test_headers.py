"""Header names, the Headers multi-map, Via and CSeq (RFC 3261 §7.3, §20.16, §20.42)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipdial.sip.errors import ParseError
from sipdial.sip.headers import (
    COMPACT,
    CSeq,
    Headers,
    Via,
    canonical_name,
    parse_header_lines,
    parse_via_fast,
    parse_via_list,
)

# --- names ------------------------------------------------------------------------------------


def test_compact_forms_cover_the_registered_letters() -> None:
    expected = {
        "i": "Call-ID", "m": "Contact", "f": "From", "t": "To", "v": "Via",
        "l": "Content-Length", "c": "Content-Type", "e": "Content-Encoding", "k": "Supported",
        "s": "Subject", "r": "Refer-To", "b": "Referred-By", "o": "Event", "u": "Allow-Events",
        "x": "Session-Expires", "y": "Identity",
    }  # fmt: skip
    for letter, name in expected.items():
        assert COMPACT[letter] == name
        assert canonical_name(letter) == name
        assert canonical_name(letter.upper()) == name


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("call-id", "Call-ID"),
        ("CALL-ID", "Call-ID"),
        ("cseq", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("max-FORWARDS", "Max-Forwards"),
        ("p-asserted-identity", "P-Asserted-Identity"),
        ("X-Custom-Thing", "X-Custom-Thing"),  # unknown: as given
        ("newFangledHeader", "newFangledHeader"),
    ],
)
def test_canonical_name(given: str, canonical: str) -> None:
    assert canonical_name(given) == canonical


# --- Headers ----------------------------------------------------------------------------------


def make() -> Headers:
    return Headers(
        [
            ("v", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"),
            ("Via", "SIP/2.0/UDP b.example.com;branch=z9hG4bK2, SIP/2.0/TCP c;branch=z9hG4bK3"),
            ("f", "<sip:alice@example.com>;tag=1"),
            ("X-Thing", "one"),
            ("x-thing", "two, three"),
            ("Supported", "replaces, timer"),
            ("k", "100rel"),
            ("WWW-Authenticate", 'Digest realm="a", nonce="b"'),
        ]
    )


def test_get_is_case_insensitive_and_compact_aware() -> None:
    h = make()
    assert h.get("From") == "<sip:alice@example.com>;tag=1"
    assert h.get("f") == h.get("FROM") == h.get("from")
    assert h.get("via") == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"
    assert h.get("To") is None
    assert h.get("To", "dflt") == "dflt"
    assert h.get("X-THING") == "one"


def test_get_all_splits_list_headers_only() -> None:
    h = make()
    assert h.get_all("v") == [
        "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
        "SIP/2.0/UDP b.example.com;branch=z9hG4bK2",
        "SIP/2.0/TCP c;branch=z9hG4bK3",
    ]
    assert h.get_all("Supported") == ["replaces", "timer", "100rel"]
    assert h.get_all("X-Thing") == ["one", "two, three"]  # unknown: not split
    assert h.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']  # auth-params
    assert h.get_all("Route") == []


def test_get_all_result_is_a_copy() -> None:
    h = make()
    h.get_all("Via").append("junk")
    assert len(h.get_all("Via")) == 3


def test_names_are_canonical_in_items() -> None:
    names = [n for n, _ in make().items()]
    assert names == [
        "Via", "Via", "From", "X-Thing", "x-thing", "Supported", "Supported", "WWW-Authenticate",
    ]  # fmt: skip


def test_contains() -> None:
    h = make()
    assert "via" in h and "V" in h and "From" in h and "x-THING" in h
    assert "To" not in h
    assert 42 not in h


def test_set_replaces_all_at_first_position() -> None:
    h = make()
    h.set("via", "SIP/2.0/UDP only;branch=z9hG4bKx")
    assert h.items()[0] == ("Via", "SIP/2.0/UDP only;branch=z9hG4bKx")
    assert h.get_all("Via") == ["SIP/2.0/UDP only;branch=z9hG4bKx"]
    h.set("To", "<sip:bob@example.com>")
    assert h.items()[-1] == ("To", "<sip:bob@example.com>")


def test_add_prepend_remove() -> None:
    h = Headers([("Max-Forwards", "70"), ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2")])
    h.prepend("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")
    assert h.items()[1] == ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")
    h.prepend("Record-Route", "<sip:p;lr>")  # none yet: goes to the top
    assert h.items()[0] == ("Record-Route", "<sip:p;lr>")
    h.add("i", "abc")
    assert h.items()[-1] == ("Call-ID", "abc")
    h.remove("VIA")
    assert "Via" not in h
    h.remove("Not-There")
    assert len(h) == 3


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "a\rb"])
def test_mutators_refuse_cr_lf(value: str) -> None:
    h = Headers()
    with pytest.raises(ValueError):
        h.add("Subject", value)
    with pytest.raises(ValueError):
        h.set("Subject", value)
    with pytest.raises(ValueError):
        h.prepend("Subject", value)
    with pytest.raises(ValueError):
        Headers([("Subject", value)])
    assert len(h) == 0


def test_copy_and_equality() -> None:
    h = make()
    c = h.copy()
    assert c == h and c is not h
    c.add("To", "<sip:x@y.com>")
    assert c != h
    assert "To" not in h
    assert Headers([("i", "x")]) == Headers([("Call-ID", "x")])
    assert Headers([("A", "1")]) != Headers([("A", "2")])
    assert (Headers() == "x") is False


def test_cached_views_are_dropped_by_every_mutation() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")])
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(h.get_all("Via"))

    assert h.cached("n", compute) == 1
    assert h.cached("n", compute) == 1
    assert len(calls) == 1
    h.add("Via", "SIP/2.0/UDP b;branch=z9hG4bK2")
    assert h.get_all("Via")[-1] == "SIP/2.0/UDP b;branch=z9hG4bK2"  # list cache dropped too
    assert h.cached("n", compute) == 2
    for mutate in (
        lambda: h.set("Via", "SIP/2.0/UDP c"),
        lambda: h.prepend("Via", "SIP/2.0/UDP d"),
        lambda: h.remove("Via"),
    ):
        before = len(calls)
        mutate()
        h.cached("n", compute)
        assert len(calls) == before + 1


def test_parse_header_lines() -> None:
    headers, error = parse_header_lines(["TO :  <sip:a@b.com> ", "l:0", "bad line", "Xyz\t: y"])
    assert headers.items() == [("To", "<sip:a@b.com>"), ("Content-Length", "0"), ("Xyz", "y")]
    assert error is not None and "malformed header line" in str(error)
    _, error = parse_header_lines(["Ba d: 1"])
    assert error is not None
    _, error = parse_header_lines([": value"])
    assert error is not None
    _, error = parse_header_lines(["Good: 1"])
    assert error is None


# --- Via --------------------------------------------------------------------------------------


def test_via_fields() -> None:
    via = Via.parse("SIP/2.0/udp pc33.Atlanta.com:5066;branch=z9hG4bK776;rport;received=1.2.3.4")
    assert via == Via("UDP", "pc33.atlanta.com", 5066, {
        "branch": "z9hG4bK776", "rport": None, "received": "1.2.3.4",
    })  # fmt: skip
    assert via.branch == "z9hG4bK776"
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776;rport;received=1.2.3.4"


def test_via_ipv6_and_whitespace() -> None:
    via = Via.parse("SIP / 2.0 / TLS   [2001:DB8::9] : 5061 ; branch = z9hG4bKa ; rport = 5061")
    assert (via.transport, via.host, via.port) == ("TLS", "2001:db8::9", 5061)
    assert via.params == {"branch": "z9hG4bKa", "rport": "5061"}
    assert via.host_port() == "[2001:db8::9]:5061"
    assert str(via) == "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKa;rport=5061"
    assert Via.parse(str(via)) == via


def test_via_without_branch() -> None:
    via = Via.parse("SIP/2.0/UDP iftgw.example.com")
    assert via.branch is None and via.port is None and via.params == {}


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",  # no sent-by
        "SIP/2.0 host",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP 192.0.2.15;;",  # RFC 4475 badinv01
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP [::g]",
        "SIP/2.0/UDPhost",
        "",
    ],
)
def test_via_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        Via.parse(text)


def test_via_list() -> None:
    vias = parse_via_list("SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/TCP b:5070;branch=z9hG4bK2")
    assert [(v.transport, v.host, v.port, v.branch) for v in vias] == [
        ("UDP", "a", None, "z9hG4bK1"),
        ("TCP", "b", 5070, "z9hG4bK2"),
    ]
    for bad in ["", ",", "SIP/2.0/UDP 192.0.2.15;;,;,,"]:
        with pytest.raises(ParseError):
            parse_via_list(bad)


def test_via_copy_is_independent() -> None:
    via = Via.parse("SIP/2.0/UDP a;branch=z9hG4bK1")
    other = via.copy(host="b")
    other.params["received"] = "1.2.3.4"
    assert str(via) == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert str(other) == "SIP/2.0/UDP b;branch=z9hG4bK1;received=1.2.3.4"


# --- CSeq -------------------------------------------------------------------------------------


def test_cseq() -> None:
    assert CSeq.parse("314159 INVITE") == CSeq(314159, "INVITE")
    assert CSeq.parse(" 0009  \tINVITE ") == CSeq(9, "INVITE")
    assert CSeq.parse("2147483647 ACK") == CSeq(2**31 - 1, "ACK")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    with pytest.raises(AttributeError):
        CSeq(1, "BYE").number = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "2147483648 INVITE",  # >= 2**31
        "36893488147419103232 REGISTER",  # RFC 4475 scalar02
        "9" * 5000 + " INVITE",  # would hit int()'s digit limit if not guarded
        "-1 INVITE",
        "1",
        "INVITE",
        "1 INVITE extra",
        "1 IN<VITE",
        "",
    ],
)
def test_cseq_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        CSeq.parse(text)


def test_via_received_ipv6_unbracketed_rfc5118() -> None:
    # RFC 3261 §20.42 via-received = IPv4address / IPv6address (no brackets), RFC 5118 §4.5
    via = Via.parse("SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3")
    assert via.params == {"received": "2001:db8::9:255", "branch": "z9hG4bKas3"}
    assert Via.parse(str(via)).params["received"] == "2001:db8::9:255"


# --- the index and the fast Via path -----------------------------------------------------------


def test_index_follows_every_mutation_in_any_spelling() -> None:
    h = Headers([("Via", "v1"), ("f", "<sip:a@b.com>"), ("X-Odd", "1")])
    assert h.get("via") == "v1" and h.get("FROM") == "<sip:a@b.com>" and h.get("x-odd") == "1"
    h.add("v", "v2")
    assert h.get_all("Via") == ["v1", "v2"] and h.count("VIA") == 2
    h.prepend("Via", "v0")
    assert h.get("Via") == "v0" and h.get_all("Via") == ["v0", "v1", "v2"]
    h.set("V", "only")
    assert h.get_all("Via") == ["only"] and h.count("Via") == 1
    h.remove("via")
    assert "Via" not in h and h.get("Via") is None and h.get_all("Via") == [] and h.count("v") == 0
    h.prepend("Route", "<sip:r@b.com;lr>")
    assert h.items()[0] == ("Route", "<sip:r@b.com;lr>") and h.get("route") == "<sip:r@b.com;lr>"
    h.set("Call-ID", "c1")
    h.add("X-ODD", "2")
    assert h.get("i") == "c1" and h.get_all("x-odd") == ["1", "2"]
    assert [n for n, _ in h.items()] == ["Route", "From", "X-Odd", "Call-ID", "X-ODD"]
    parsed, _ = parse_header_lines(["v: a", "Via: b", "l: 0"])
    parsed.add("Via", "c")  # added before the first read: the index is built from the list
    assert parsed.get_all("via") == ["a", "b", "c"] and parsed.get("Content-Length") == "0"


VIA_SAMPLES = [
    "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport",
    "SIP/2.0/tcp 10.0.0.1:50600;received=1.2.3.4;rport=5060",
    "SIP/2.0/UDP 1.2.3.4.example.com",
    "SIP/2.0/UDP 1.2.3.4:5060",
    "SIP/2.0/UDP 1.2.3.4:65536",
    "SIP/2.0/UDP h:05060",
    "SIP/2.0/UDP h;;branch=1",
    "SIP/2.0/UDP h;branch=",
    "SIP/2.0/UDP h ;branch=1",
    "SIP/2.0/UDP h;received=::1",
    "SIP/2.0/UDP [::1]:5060",
    "SIP/2.0/UDP -h",
    "SIP/2.0/UDP h.",
    "SIP/2.0/UDPh",
    "SIP/2.0/UDP  h",
    "SIP / 2.0 / UDP h",
    "SIP/2.0/UDP h;BRANCH=Z9hG4bK1;branch=2",
]


@pytest.mark.parametrize("text", VIA_SAMPLES)
def test_fast_via_agrees_with_via_parse(text: str) -> None:
    fast = parse_via_fast(text)
    try:
        full: object = Via.parse(text)
    except ParseError:
        full = None
        assert fast is None
    if fast is not None:
        assert fast == full


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=" ;=:.,-[]0123456789abzZ", max_size=30))
def test_fast_via_never_accepts_what_via_parse_rejects(tail: str) -> None:
    for text in ("SIP/2.0/UDP " + tail, "SIP/2.0/UDP h" + tail, "SIP/2.0/UDP 1.2.3.4" + tail):
        fast = parse_via_fast(text)
        if fast is not None:
            assert fast == Via.parse(text), text


def test_hand_written_via_copy_is_independent() -> None:
    v = Via.parse("SIP/2.0/UDP h:5;branch=z9hG4bK1")
    c = v.copy()
    c.params["received"] = "x"
    assert c != v and "received" not in v.params
    assert v.copy(port=6).port == 6 and v.port == 5
