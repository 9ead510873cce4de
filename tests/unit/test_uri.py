"""SipURI, AbsoluteURI, NameAddr and the list/parameter helpers (RFC 3261 §19.1, §20, §25.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipdial.sip.errors import ParseError
from sipdial.sip.uri import (
    AbsoluteURI,
    NameAddr,
    SipURI,
    fast_match_name_addr,
    name_addr_from_match,
    parse_generic_params,
    parse_name_addr_fast,
    parse_name_addr_list,
    parse_uri,
    parse_uri_fast,
    split_comma_list,
)

# --- SipURI ---------------------------------------------------------------------------------


def test_full_sip_uri_fields() -> None:
    uri = SipURI.parse("sip:alice:secret@Atlanta.Example.COM:5070;transport=TCP;lr?subject=hi&x=1")
    assert uri == SipURI(
        scheme="sip",
        user="alice",
        password="secret",
        host="atlanta.example.com",
        port=5070,
        params={"transport": "TCP", "lr": None},
        headers={"subject": "hi", "x": "1"},
    )
    assert str(uri) == "sip:alice:secret@atlanta.example.com:5070;transport=TCP;lr?subject=hi&x=1"


def test_minimal_uri_and_scheme_case() -> None:
    uri = SipURI.parse("SIPS:example.com")
    assert (uri.scheme, uri.user, uri.host, uri.port, uri.params) == (
        "sips",
        None,
        "example.com",
        None,
        {},
    )
    assert str(uri) == "sips:example.com"


def test_param_keys_lower_cased_values_kept() -> None:
    uri = SipURI.parse("sip:bob@host;Transport=UDP;MADDR=239.255.255.1;User=phone")
    assert uri.params == {"transport": "UDP", "maddr": "239.255.255.1", "user": "phone"}


@pytest.mark.parametrize(
    ("text", "host", "port", "wire"),
    [
        ("sip:[::1]", "::1", None, "sip:[::1]"),
        ("sip:alice@[2001:DB8::10]:5061;transport=tls", "2001:db8::10", 5061,
         "sip:alice@[2001:db8::10]:5061;transport=tls"),
        ("sip:[::ffff:192.0.2.1]:5060", "::ffff:192.0.2.1", 5060, "sip:[::ffff:192.0.2.1]:5060"),
        ("sip:192.0.2.4:0", "192.0.2.4", 0, "sip:192.0.2.4:0"),
        ("sip:example.com.", "example.com.", None, "sip:example.com."),
    ],
)  # fmt: skip
def test_hosts(text: str, host: str, port: int | None, wire: str) -> None:
    uri = SipURI.parse(text)
    assert (uri.host, uri.port) == (host, port)
    assert str(uri) == wire


def test_host_port_brackets_ipv6() -> None:
    assert SipURI.parse("sip:[::1]:5060").host_port() == "[::1]:5060"
    assert SipURI.parse("sip:a@example.com").host_port() == "example.com"
    assert SipURI.parse("sip:a@example.com:5080").host_port() == "example.com:5080"


def test_escapes_kept_on_wire_and_unquote_user() -> None:
    uri = SipURI.parse("sip:I%20have%20spaces;x=%41@example.net;n%61me=v%61lue")
    assert uri.user == "I%20have%20spaces;x=%41"
    assert uri.unquote_user() == "I have spaces;x=A"
    assert uri.params == {"n%61me": "v%61lue"}
    assert str(uri) == "sip:I%20have%20spaces;x=%41@example.net;n%61me=v%61lue"
    assert SipURI.parse("sip:example.com").unquote_user() is None


def test_telephone_subscriber_user_and_empty_password() -> None:
    uri = SipURI.parse("sip:+1-212-555-1212:@gateway.com;user=phone")
    assert uri.user == "+1-212-555-1212"
    assert uri.password == ""
    assert str(uri) == "sip:+1-212-555-1212:@gateway.com;user=phone"


def test_tel_uri() -> None:
    uri = SipURI.parse("tel:+1-201-555-0123;ext=42")
    assert (uri.scheme, uri.user, uri.host, uri.params) == (
        "tel",
        "+1-201-555-0123",
        "",
        {"ext": "42"},
    )
    assert str(uri) == "tel:+1-201-555-0123;ext=42"
    local = SipURI.parse("TEL:7042;phone-context=example.com")
    assert (local.scheme, local.user, local.params) == (
        "tel",
        "7042",
        {"phone-context": "example.com"},
    )


@pytest.mark.parametrize(
    "text",
    [
        "sip:",  # no host
        "sip:@example.com",  # empty user
        "sip:user@",  # no host
        "sip:user@exa mple.com",  # space
        " sip:user@example.com",  # leading space (RFC 4475 badaspec)
        "sip:user@example.com ",
        "sip:user@example.com:99999",  # port out of range
        "sip:user@example.com:",  # empty port
        "sip:user@example.com:12345678901",  # absurd port
        "sip:user@[::1",  # unterminated IPv6 reference
        "sip:user@[1::2::3]",  # invalid IPv6
        "sip:user@[zz::1]",
        "sip:us%2er@%41.com",  # escape in host
        "sip:user%4@example.com",  # broken escape
        "sip:user%@example.com",
        "sip:user@example.com;",  # empty parameter
        "sip:user@example.com;=x",
        "sip:user@example.com;a=",  # pvalue = 1*paramchar
        "sip:user@example.com?",  # empty headers
        "sip:user@example.com?a",  # header without "="
        "sip:user@a@example.com",  # second "@"
        "sip:user@-example.com",  # label starting with "-"
        "sip:user@example.com-",
        "sip:user@example.1com",  # toplabel must start with ALPHA
        "sip:us<er@example.com",
        "sip:user@example.com>",
        "http://example.com",  # not a SIP URI
        "sipexample.com",
        "tel:",
        "tel:xyz",
        "tel:---",
        "tel:+12;",
    ],
)
def test_sip_uri_rejects(text: str) -> None:
    with pytest.raises(ParseError) as info:
        SipURI.parse(text)
    assert info.value.status == 400


def test_copy_is_independent() -> None:
    uri = SipURI.parse("sip:bob@example.com;lr?h=1")
    other = uri.copy(user="carol")
    other.params["transport"] = "tcp"
    other.headers["h"] = "2"
    assert str(uri) == "sip:bob@example.com;lr?h=1"
    assert str(other) == "sip:carol@example.com;lr;transport=tcp?h=2"


def test_str_parse_str_is_stable_for_uncommon_forms() -> None:
    for text in [
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
        "(doesn't-it)@example.com",
        "sips:%61lice@example.com;maddr=[::1];x=%5B",
        "sip:[fe80::1]:5060;transport=udp?Route=%3Csip:a%3E&Subject=x",
    ]:
        once = str(SipURI.parse(text))
        assert str(SipURI.parse(once)) == once


# --- parse_uri / AbsoluteURI ------------------------------------------------------------------


def test_parse_uri_dispatch() -> None:
    assert isinstance(parse_uri("sip:a@b.com"), SipURI)
    assert isinstance(parse_uri("tel:+123"), SipURI)
    unknown = parse_uri("nobodyKnowsThisScheme:totallyopaquecontent")
    assert unknown == AbsoluteURI("nobodyKnowsThisScheme", "totallyopaquecontent")
    assert str(unknown) == "nobodyKnowsThisScheme:totallyopaquecontent"
    assert parse_uri("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6") == AbsoluteURI(
        "urn", "uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    )
    assert str(parse_uri("http://[::1]:80/a?b=c%20d")) == "http://[::1]:80/a?b=c%20d"


@pytest.mark.parametrize(
    "text",
    ["", "nocolon", ":x", "1abc:x", "a b:c", "http:", "http://a b", "http://x%zz", "mailto:<a>"],
)
def test_parse_uri_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)


def test_absolute_uri_without_scheme_is_raw_text() -> None:
    assert str(AbsoluteURI("", "<sip:x@y>")) == "<sip:x@y>"


# --- NameAddr ---------------------------------------------------------------------------------


def test_name_addr_quoted_display_with_specials() -> None:
    na = NameAddr.parse(r'"Bell, Alexander <\"AGB\"> \\o/" <sip:a.g.bell@example.com>;tag=43')
    assert na.display_name == r'Bell, Alexander <"AGB"> \o/'
    assert str(na.uri) == "sip:a.g.bell@example.com"
    assert na.tag == "43"
    assert str(na) == r'"Bell, Alexander <\"AGB\"> \\o/" <sip:a.g.bell@example.com>;tag=43'


def test_name_addr_token_display_and_no_display() -> None:
    na = NameAddr.parse("Alice  Smith <sip:alice@example.com> ; expires = 60 ;q=0.5")
    assert na.display_name == "Alice  Smith"
    assert na.params == {"expires": "60", "q": "0.5"}
    assert str(na) == "Alice  Smith <sip:alice@example.com>;expires=60;q=0.5"
    bare = NameAddr.parse("<sip:bob@example.com>")
    assert bare.display_name is None and bare.params == {} and bare.tag is None
    assert str(bare) == "<sip:bob@example.com>"
    empty = NameAddr.parse('"" <sip:bob@example.com>')
    assert empty.display_name == ""
    assert str(empty) == '"" <sip:bob@example.com>'


def test_addr_spec_params_are_header_params() -> None:
    na = NameAddr.parse("sip:+19725552222@gw1.example.net;unknownparam;tag=1")
    assert isinstance(na.uri, SipURI) and na.uri.params == {}
    assert na.params == {"unknownparam": None, "tag": "1"}
    assert str(na) == "<sip:+19725552222@gw1.example.net>;unknownparam;tag=1"
    inside = NameAddr.parse("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert isinstance(inside.uri, SipURI) and inside.uri.params == {"unknownparam": None}
    assert inside.params == {}


def test_name_addr_with_absolute_uri_and_quoted_param() -> None:
    na = NameAddr.parse('<urn:uuid:1234>;+sip.instance="<urn:uuid:00000000-0000>";reg-id=1')
    assert na.uri == AbsoluteURI("urn", "uuid:1234")
    assert na.params == {"+sip.instance": '"<urn:uuid:00000000-0000>"', "reg-id": "1"}
    assert NameAddr.parse(str(na)) == na


def test_name_addr_ipv6_param_value() -> None:
    na = NameAddr.parse("<sip:a@[::1]>;received=[2001:db8::1]")
    assert na.params == {"received": "[2001:db8::1]"}


def test_display_name_quoting_on_output() -> None:
    uri = SipURI.parse("sip:x@example.com")
    cases = {
        "Plain": "Plain <sip:x@example.com>",
        "Two Words": "Two Words <sip:x@example.com>",
        "Smith, John": '"Smith, John" <sip:x@example.com>',
        "<sip:evil@x>": '"<sip:evil@x>" <sip:x@example.com>',
        'say "hi"': '"say \\"hi\\"" <sip:x@example.com>',
        "J\u00fcrgen M\u00fcller": '"J\u00fcrgen M\u00fcller" <sip:x@example.com>',
        "bell\x07": '"bell\\\x07" <sip:x@example.com>',
        "line\r\nInjected: yes": '"line  Injected: yes" <sip:x@example.com>',
    }
    for display, wire in cases.items():
        assert str(NameAddr(uri, display)) == wire
        if "\r" not in display:
            assert NameAddr.parse(wire).display_name == display


@pytest.mark.parametrize(
    "text",
    [
        '"Mr. J. User <sip:j.user@example.com>',  # RFC 4475 quotbal
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # RFC 4475 baddn
        '"Watson, Thomas" < sip:t.watson@example.org >',  # RFC 4475 badaspec
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # RFC 4475 regbadct
        "sip:a@example.com, sip:b@example.com",  # a list where one value is required
        '"Joe" <sip:joe@example.org>;;;;',  # RFC 4475 badinv01 Contact
        "<sip:a@example.com",
        '"quoted" sip:a@example.com',  # quoted display name without <>
        "<sip:a@example.com>;tag=a b",
        "<sip:a@example.com>;tag=",
        "<sip:a@example.com> junk",
        "",
        "<>",
    ],
)
def test_name_addr_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        NameAddr.parse(text)


def test_name_addr_copy_is_deep_enough() -> None:
    na = NameAddr.parse('"A" <sip:a@example.com;lr>;tag=1')
    other = na.copy()
    other.params["tag"] = "2"
    assert isinstance(other.uri, SipURI)
    other.uri.params["lr"] = "x"
    assert str(na) == "A <sip:a@example.com;lr>;tag=1"


# --- lists and params ---------------------------------------------------------------------------


def test_name_addr_list_keeps_commas_in_quotes_and_brackets() -> None:
    values = parse_name_addr_list(
        '"Smith, J" <sip:j@a.com;x=1>;q=0.7, <sip:b,c@b.com> ,sip:c@c.com;expires=5'
    )
    assert [v.display_name for v in values] == ["Smith, J", None, None]
    assert [str(v.uri) for v in values] == ["sip:j@a.com;x=1", "sip:b,c@b.com", "sip:c@c.com"]
    assert values[0].params == {"q": "0.7"}
    assert values[2].params == {"expires": "5"}


def test_name_addr_list_rejects_empty_and_unbalanced() -> None:
    for text in ["", " , ", '"open <sip:a@b.com>', "<sip:a@b.com"]:
        with pytest.raises(ParseError):
            parse_name_addr_list(text)


def test_split_comma_list() -> None:
    assert split_comma_list("a, b ,c,,") == ["a", "b", "c"]
    assert split_comma_list('"x,y" <u,v>, z') == ['"x,y" <u,v>', "z"]
    assert split_comma_list("") == []
    with pytest.raises(ParseError):
        split_comma_list('"unterminated, a')


def test_generic_params() -> None:
    assert parse_generic_params(' ; a = 1 ;B;c="x;y" ') == {"a": "1", "b": None, "c": '"x;y"'}
    assert parse_generic_params(";x=1", 0) == {"x": "1"}
    assert parse_generic_params("") == {}
    for bad in [";", ";;", "a=1", ";a=", ";a b", ';a="x']:
        with pytest.raises(ParseError):
            parse_generic_params(bad)


# --- fast path (must agree with NameAddr.parse) ----------------------------------------------

FAST_PATH_SAMPLES = [
    "Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
    '"Alice, A." <sip:alice@atlanta.example.com>;tag=1928301774',
    "caller<sip:caller@example.com>;tag=323",
    "<sip:1.2.3.4:5060;transport=udp;lr>",
    "<sip:+4930123@gw.example.com:50600;user=phone>;expires=3600",
    "sip:a@b.com;tag=x",
    "sips:b.com:65535",
    "sip:a@1.2.3.4.example.com",
    "sip:a@b.com:65536",
    "sip:a@b.com:05060",
    "<sip:a@b.com:99999>",
    "<sip:a@-b.com>",
    "<sip:a@b-.com>",
    "<sip:a@b.com.>",
    "<sip:a@b..com>",
    "<sip:a@1.2.3>",
    "<sip:a@1.2.3.4.>",
    "<sip:a@[::1]>",
    "<sip:a%41@b.com>",
    "<sip:a:pw@b.com>",
    "<sip:a@b.com?x=y>",
    "<tel:+4930123>",
    "<SIP:a@b.com>",
    "A  B\t<sip:a@b.com>",
    '"" <sip:a@b.com>',
    '"q\\"x" <sip:a@b.com>',
    "<sip:a@b.com>;tag",
    "<sip:a@b.com>;tag=",
    "<sip:a@b.com>;TAG=X;Tag=y",
    "<sip:a@b.com;lr=>",
    "<sip:a@b.com;;lr>",
    "<sip:a@b.com> ;tag=1",
    "sip:a@b.com ;tag=1",
    "sip:a@b.com,sip:c@d.com",
    "sip:a@b.com?x=y",
    "<sip:@b.com>",
    "<sip:a@>",
    "<sip:a@b.com>>",
    "<<sip:a@b.com>",
    "a <sip:a@b.com",
    "<sip:a@b.com><sip:c@d.com>",
    "<sip:a@b.com;x=[1]>;q=0.5",
    "<sips:a.b-c_d!e~f*g'h(i)j&k=l+m$n@h0st.example.com>",
    '<sip:201@192.168.1.10:5062>;+sip.instance="<urn:uuid:0000-1000>";reg-id=1',
    '<sip:a@b.com>;x="a;b=c"',
    '<sip:a@b.com>;x="a\\"b"',
    '<sip:a@b.com>;x=""',
    '<sip:a@b.com>;x="\t"',
    'sip:a@b.com;x="<y>"',
    'sip:a@b.com;x="y"',
]


def _full_or_error(text: str) -> object:
    try:
        return NameAddr.parse(text)
    except ParseError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("text", FAST_PATH_SAMPLES)
def test_fast_name_addr_agrees_with_full_parser(text: str) -> None:
    m = fast_match_name_addr(text)
    full = _full_or_error(text)
    if m is not None:
        assert name_addr_from_match(m) == full
    if isinstance(full, tuple):  # the full parser rejects it: so must the fast path
        assert m is None
        with pytest.raises(ParseError):
            parse_name_addr_fast(text)
    else:
        assert parse_name_addr_fast(text) == full


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='<>"@:;=.,-+ 0123456789abzABZ[]%?&/\\', max_size=40))
def test_fast_name_addr_never_accepts_what_the_full_parser_rejects(tail: str) -> None:
    for text in (tail, "sip:" + tail, "<sip:" + tail, "A <sip:a@" + tail, "sip:a@b" + tail):
        m = fast_match_name_addr(text)
        if m is not None:
            assert name_addr_from_match(m) == _full_or_error(text), text


def test_hand_written_copies_are_deep_enough() -> None:
    na = NameAddr.parse('"A" <sip:a@b.com;lr?x=1>;tag=t')
    c = na.copy()
    assert c == na and c is not na
    assert isinstance(c.uri, SipURI) and isinstance(na.uri, SipURI)
    c.params["tag"] = "u"
    c.uri.params["lr"] = "1"
    c.uri.headers["x"] = "2"
    assert na.tag == "t" and na.uri.params == {"lr": None} and na.uri.headers == {"x": "1"}
    assert na.copy(display_name="B").display_name == "B"
    assert na.uri.copy(port=5) == SipURI("sip", "a", None, "b.com", 5, {"lr": None}, {"x": "1"})
    absolute = NameAddr.parse("<urn:x:y>")
    assert absolute.copy() == absolute


def _uri_or_error(text: str) -> object:
    try:
        return parse_uri(text)
    except ParseError as exc:
        return ("error", str(exc))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="sip:@.;=,?&%[]-+ 0123456789abzAZ/", max_size=30))
def test_parse_uri_fast_equals_parse_uri(tail: str) -> None:
    for text in (tail, "sip:" + tail, "sips:a@" + tail, "sip:a@b.com" + tail):
        try:
            fast: object = parse_uri_fast(text)
        except ParseError as exc:
            fast = ("error", str(exc))
        assert fast == _uri_or_error(text), text


@pytest.mark.parametrize(
    "text",
    [
        "sip:bob@biloxi.example.com",
        "sip:10.0.0.1:5060;transport=udp;lr",
        "sips:a.b@h:65535",
        "sip:a@h:65536",
        "SIP:a@h",
        "sip:a%41@h",
        "sip:a:pw@h",
        "sip:[::1]",
        "tel:+1",
        "urn:x",
    ],
)
def test_parse_uri_fast_examples(text: str) -> None:
    try:
        fast: object = parse_uri_fast(text)
    except ParseError as exc:
        fast = ("error", str(exc))
    assert fast == _uri_or_error(text)
