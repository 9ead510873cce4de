"""SIP, SIPS and tel URIs, other URIs kept verbatim, and name-addr values (RFC 3261 §19.1, §25.1).

Grammar is written from RFC 3261 §25.1 (and RFC 3966 for ``tel:``); the ABNF rule each regex
implements stands beside it. Escaped characters (``%41``) are kept exactly as on the wire in
every field, so a URI re-serialises to the same text; :meth:`SipURI.unquote_user` gives the
unescaped user part when an application needs it.

Parsing raises :class:`~sipdial.sip.errors.ParseError` (status 400) and nothing else.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import unquote

from sipdial.sip.errors import ParseError

__all__ = [
    "URI",
    "AbsoluteURI",
    "NameAddr",
    "SipURI",
    "parse_generic_params",
    "parse_name_addr_list",
    "parse_uri",
    "split_comma_list",
]

# --- character classes (RFC 3261 §25.1), as regex class bodies ------------------------------
#   alphanum   =  ALPHA / DIGIT
#   mark       =  "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
#   unreserved =  alphanum / mark
#   escaped    =  "%" HEXDIG HEXDIG      (checked once per text by _BAD_ESCAPE, so the classes
#                                         below simply admit "%")
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
#   token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE = re.compile(rf"[{TOKEN_CHARS}]+")

# A "%" that does not start an `escaped` triplet.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

#   user             =  1*( unreserved / escaped / user-unreserved )
#   user-unreserved  =  "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
_USER = re.compile(rf"[{_UNRESERVED}%&=+$,;?/]+")
#   password         =  *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD = re.compile(rf"[{_UNRESERVED}%&=+$,]*")

#   paramchar        =  param-unreserved / unreserved / escaped
#   param-unreserved =  "[" / "]" / "/" / ":" / "&" / "+" / "$"
_PARAMCHAR = rf"[{_UNRESERVED}%\[\]/:&+$]"
#   hnv-unreserved   =  "[" / "]" / "/" / "?" / ":" / "+" / "$"
_HNVCHAR = rf"[{_UNRESERVED}%\[\]/?:+$]"

#   host          =  hostname / IPv4address / IPv6reference
#   hostname      =  *( domainlabel "." ) toplabel [ "." ]
#   domainlabel   =  alphanum / alphanum *( alphanum / "-" ) alphanum
#   toplabel      =  ALPHA / ALPHA *( alphanum / "-" ) alphanum
#   IPv4address   =  1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
#   IPv6reference =  "[" IPv6address "]"      (IPv6address itself is checked by ipaddress)
# Verbose-mode source, shared with the Via parser (sent-by = host [ COLON port ]).
HOST_PATTERN = r"""
    (?P<host>
        \[ [0-9A-Fa-f:.]+ \]
      | [0-9]{1,3} \. [0-9]{1,3} \. [0-9]{1,3} \. [0-9]{1,3}
      | (?: [A-Za-z0-9] (?: [A-Za-z0-9-]* [A-Za-z0-9] )? \. )*
        [A-Za-z] (?: [A-Za-z0-9-]* [A-Za-z0-9] )? \.?
    )
"""

#   hostport       =  host [ ":" port ]        port = 1*DIGIT
#   uri-parameters =  *( ";" uri-parameter )
#   headers        =  "?" header *( "&" header )
_SIP_HOSTPART = re.compile(
    HOST_PATTERN
    + rf"""
    (?: : (?P<port> [0-9]{{1,5}} ) )?                 # [ ":" port ]
    (?P<params> (?: ; {_PARAMCHAR}+ (?: = {_PARAMCHAR}+ )? )* )
                                                      # uri-parameter = pname [ "=" pvalue ]
                                                      #   pname = 1*paramchar, pvalue likewise
    (?: \? (?P<headers> {_HNVCHAR}+ = {_HNVCHAR}* (?: & {_HNVCHAR}+ = {_HNVCHAR}* )* ) )?
                                                      # header = hname "=" hvalue
    """,
    re.VERBOSE,
)

# RFC 3966 tel URI:
#   telephone-uri       = "tel:" telephone-subscriber
#   global-number-digits = "+" *phonedigit DIGIT *phonedigit
#   local-number-digits  = *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex
#   visual-separator    = "-" / "." / "(" / ")"
#   par                 = ";" pname [ "=" pvalue ]     pname = 1*( alphanum / "-" )
_TEL = re.compile(
    rf"""
    (?P<number> \+ [0-9\-.()]+ | [0-9A-Fa-f*#\-.()]+ )
    (?P<params> (?: ; [A-Za-z0-9-]+ (?: = {_PARAMCHAR}+ )? )* )
    """,
    re.VERBOSE,
)
_TEL_HAS_DIGIT = re.compile(r"[0-9A-Fa-f*#]")

# RFC 2396 (as referenced by RFC 3261 §25.1):
#   absoluteURI = scheme ":" ( hier-part / opaque-part )
#   scheme      = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
#   uric        = reserved / unreserved / escaped      ("[" "]" admitted for RFC 2732 hosts)
#   reserved    = ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_URIC = re.compile(rf"[{_UNRESERVED}%;/?:@&=+$,\[\]]+")

# Header parameters (§25.1):
#   SEMI          = SWS ";" SWS          EQUAL = SWS "=" SWS
#   generic-param = token [ EQUAL gen-value ]
#   gen-value     = token / host / quoted-string
#   quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext        = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair   = "\" (%x00-09 / %x0B-0C / %x0E-7F)
# (LWS is already unfolded to SP by the message parser, so SWS here is *( SP / HTAB ).)
_QUOTED_STRING = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
_GENERIC_PARAM = re.compile(
    rf"""
    [ \t]* ; [ \t]*                                   # SEMI
    (?P<name> [{TOKEN_CHARS}]+ )                     # token
    (?: [ \t]* = [ \t]*                               # EQUAL
        (?P<value> [0-9A-Fa-f]* : [0-9A-Fa-f:.]+      # via-received = IPv6address, unbracketed
                                                      #   (RFC 3261 §20.42, RFC 5118 §4.5)
                 | [{TOKEN_CHARS}]+                  # gen-value = token
                 | \[ [0-9A-Fa-f:.]+ \]               #           / host (IPv6reference; the
                                                      #             other hosts are tokens)
                 | {_QUOTED_STRING} )                 #           / quoted-string
    )?
    [ \t]*
    """,
    re.VERBOSE,
)

# name-addr  = [ display-name ] LAQUOT addr-spec RAQUOT
# display-name = *(token LWS) / quoted-string
_QUOTED_DISPLAY = re.compile(rf"[ \t]*(?P<q>{_QUOTED_STRING})[ \t]*")
_TOKEN_DISPLAY = re.compile(rf"[{TOKEN_CHARS}]+(?:[ \t]+[{TOKEN_CHARS}]+)*")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# Characters that need a quoted-pair inside a quoted-string (CTLs other than HTAB, DQUOTE, "\").
_NEEDS_QUOTED_PAIR = re.compile(r'([\x00-\x08\x0b\x0c\x0e-\x1f\x7f"\\])')

# One element of a comma-separated header value: quoted strings and <...> are opaque.
_LIST_PIECE = re.compile(rf'{_QUOTED_STRING}|"|<[^>]*>|[^",<]+|,')


def _check_escapes(text: str) -> None:
    if "%" in text and _BAD_ESCAPE.search(text):
        raise ParseError(f"bad %-escape in URI {text[:80]!r}")


def normalize_host(host: str) -> str:
    """A host matched by HOST_PATTERN -> lower case, IPv6 brackets removed and checked."""
    host = host.lower()
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ParseError(f"bad IPv6 address {host[:60]!r}") from None
    return host


def split_params(text: str) -> dict[str, str | None]:
    """``;a=b;c`` (already validated) -> {"a": "b", "c": None}, keys lower-cased."""
    params: dict[str, str | None] = {}
    if text:
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True)
class SipURI:
    """A ``sip:``, ``sips:`` or ``tel:`` URI (RFC 3261 §19.1.1, RFC 3966).

    All text fields keep their %-escapes as received. For ``tel:`` the number is in ``user``
    and ``host`` is ``""``.
    """

    scheme: str  #: lower-case "sip" | "sips" | "tel"
    user: str | None  #: escaped form as on the wire; see :meth:`unquote_user`
    password: str | None
    host: str  #: lower-case; IPv6 without brackets; "" for tel:
    port: int | None
    #: in order; keys lower-cased; a flag parameter (``;lr``) has the value None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  #: ?h=v&h2=v2, escaped form

    @classmethod
    def parse(cls, text: str) -> SipURI:
        """Parse a sip:, sips: or tel: URI; raises :class:`ParseError`."""
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon:
            raise ParseError(f"URI without scheme: {text[:80]!r}")
        _check_escapes(rest)
        if scheme == "tel":
            return cls._parse_tel(rest, text)
        if scheme not in ("sip", "sips"):
            raise ParseError(f"not a SIP URI: {text[:80]!r}")
        # SIP-URI  = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
        # userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
        # "@" is legal nowhere else in a SIP URI (it is escaped in params/headers), so the
        # first one ends the userinfo.
        user: str | None = None
        password: str | None = None
        if "@" in rest:
            userinfo, _, rest = rest.partition("@")
            user, colon, pw = userinfo.partition(":")
            if not _USER.fullmatch(user):
                raise ParseError(f"bad user part in URI {text[:80]!r}")
            if colon:
                if not _PASSWORD.fullmatch(pw):
                    raise ParseError(f"bad password in URI {text[:80]!r}")
                password = pw
        m = _SIP_HOSTPART.fullmatch(rest)
        if m is None:
            raise ParseError(f"bad host, port, parameters or headers in URI {text[:80]!r}")
        host = normalize_host(m.group("host"))
        port_text = m.group("port")
        port = int(port_text) if port_text else None
        if port is not None and port > 65535:
            raise ParseError(f"port out of range in URI {text[:80]!r}")
        headers: dict[str, str] = {}
        header_text = m.group("headers")
        if header_text:
            for item in header_text.split("&"):
                hname, _, hvalue = item.partition("=")
                headers[hname] = hvalue
        return cls(scheme, user, password, host, port, split_params(m.group("params")), headers)

    @classmethod
    def _parse_tel(cls, rest: str, text: str) -> SipURI:
        m = _TEL.fullmatch(rest)
        if m is None or not _TEL_HAS_DIGIT.search(m.group("number")):
            raise ParseError(f"bad tel URI {text[:80]!r}")
        return cls("tel", m.group("number"), None, "", None, split_params(m.group("params")))

    def __str__(self) -> str:
        """The canonical wire form, with brackets around an IPv6 host."""
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":")
                out.append(self.password)
            out.append("@")
        out.append(self.host_port())
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out.append("?")
            out.append("&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    def host_port(self) -> str:
        """``host[:port]``, with brackets around an IPv6 host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def unquote_user(self) -> str | None:
        """The user part with %-escapes resolved (``%40`` -> ``@``), or None."""
        return None if self.user is None else unquote(self.user, errors="surrogateescape")

    def copy(self, **changes: Any) -> SipURI:
        """A copy (params and headers dicts copied too) with ``changes`` applied."""
        if changes:
            changes.setdefault("params", dict(self.params))
            changes.setdefault("headers", dict(self.headers))
            return dataclasses.replace(self, **changes)
        # hand-written: dataclasses.replace costs ~10x more (fields(), kwargs __init__)
        return SipURI(
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            dict(self.params),
            dict(self.headers),
        )


@dataclass(slots=True)
class AbsoluteURI:
    """Any non-SIP URI (RFC 3261 §19.1, RFC 2396 absoluteURI), kept verbatim.

    RFC 4475 §3.3.2-3.3.4: these must parse; the application answers e.g. 416.
    ``scheme == ""`` only occurs in :attr:`ParseError.request` and holds an unparseable
    Request-URI in ``rest``.
    """

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}" if self.scheme else self.rest


URI: TypeAlias = SipURI | AbsoluteURI


def parse_uri(text: str) -> URI:
    """Parse a Request-URI or addr-spec: SipURI for sip/sips/tel, AbsoluteURI otherwise."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise ParseError(f"bad URI {text[:80]!r}")
    if scheme.lower() in ("sip", "sips", "tel"):
        return SipURI.parse(text)
    if not _URIC.fullmatch(rest):
        raise ParseError(f"bad URI {text[:80]!r}")
    _check_escapes(rest)
    return AbsoluteURI(scheme, rest)


def parse_generic_params(text: str, pos: int = 0) -> dict[str, str | None]:
    """``*( SEMI generic-param )`` from ``text[pos:]``; keys lower-cased, flags -> None.

    Quoted-string values keep their quotes (``+sip.instance="<urn:...>"``).
    """
    params: dict[str, str | None] = {}
    end = len(text)
    while pos < end:
        m = _GENERIC_PARAM.match(text, pos)
        if m is None:
            if not text[pos:].strip(" \t"):
                break
            raise ParseError(f"bad parameter in {text[:80]!r}")
        params[m.group("name").lower()] = m.group("value")
        pos = m.end()
    return params


def split_comma_list(text: str) -> list[str]:
    """Split a header value on commas outside quoted strings and <...>; empty items dropped.

    ``#element`` lists (RFC 3261 §7.3.1). Raises ParseError on an unterminated quote.
    """
    if '"' not in text and "<" not in text:
        return [s for s in (p.strip(" \t") for p in text.split(",")) if s]
    items: list[str] = []
    current: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _LIST_PIECE.match(text, pos)
        # No match: "<" without ">"; a lone DQUOTE: a quoted string that never ends.
        if m is None or m.group() == '"':
            raise ParseError(f"unbalanced quote or angle bracket in {text[:80]!r}")
        piece = m.group()
        if piece == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(piece)
        pos += len(piece)
    items.append("".join(current))
    return [s for s in (i.strip(" \t") for i in items) if s]


def _unquote_display(quoted: str) -> str:
    inner = quoted[1:-1]
    return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner


def _quote_display(name: str) -> str:
    if name and _TOKEN_DISPLAY.fullmatch(name):
        return name
    # CR and LF cannot be carried even as quoted-pairs: never let them reach the wire.
    name = name.replace("\r", " ").replace("\n", " ")
    return '"' + _NEEDS_QUOTED_PAIR.sub(r"\\\1", name) + '"'


@dataclass(slots=True)
class NameAddr:
    """A From/To/Contact/Route/... value: optional display name, URI, header parameters."""

    uri: URI
    display_name: str | None = None  #: unquoted text (quoted-pairs resolved)
    #: header parameters (tag, expires, q, +sip.instance, ...): keys lower-cased, quoted-string
    #: values keep their quotes
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse ``( name-addr / addr-spec ) *( SEMI generic-param )``; raises ParseError.

        In the addr-spec form every ``;`` parameter is a header parameter (RFC 3261 §20.10),
        and the URI may not contain ``,``, ``?`` or ``;`` (§20: then it must be in <>).
        """
        s = text.strip(" \t")
        display: str | None = None
        if s.startswith('"'):
            # name-addr with display-name = quoted-string; LAQUOT = SWS "<"
            m = _QUOTED_DISPLAY.match(s)
            if m is None:
                raise ParseError(f"unterminated quoted display name in {text[:80]!r}")
            display = _unquote_display(m.group("q"))
            lt = m.end()
            if not s.startswith("<", lt):
                raise ParseError(f"quoted display name not followed by <URI> in {text[:80]!r}")
        else:
            lt = s.find("<")
            if lt > 0:
                # display-name = *(token LWS)
                tokens = s[:lt].strip(" \t")
                if tokens:
                    if not _TOKEN_DISPLAY.fullmatch(tokens):
                        raise ParseError(f"display name is not tokens: {text[:80]!r}")
                    display = tokens
        if lt >= 0:
            # LAQUOT addr-spec RAQUOT; RAQUOT = ">" SWS — no whitespace inside the brackets
            gt = s.find(">", lt + 1)
            if gt < 0:
                raise ParseError(f"missing '>' in {text[:80]!r}")
            uri = parse_uri(s[lt + 1 : gt])
            return cls(uri, display, parse_generic_params(s, gt + 1))
        # addr-spec form
        semi = s.find(";")
        uri_text = (s if semi < 0 else s[:semi]).rstrip(" \t")
        if "," in uri_text or "?" in uri_text:
            raise ParseError(f"URI with ',' or '?' must be enclosed in <>: {text[:80]!r}")
        uri = parse_uri(uri_text)
        return cls(uri, None, parse_generic_params(s, semi) if semi >= 0 else {})

    def __str__(self) -> str:
        """Always the ``<uri>`` form; the display name quoted when it needs to be."""
        head = "" if self.display_name is None else _quote_display(self.display_name) + " "
        return f"{head}<{self.uri}>{format_params(self.params)}"

    def copy(self, **changes: Any) -> NameAddr:
        """A deep-enough copy (URI and params copied) with ``changes`` applied."""
        uri = self.uri.copy() if isinstance(self.uri, SipURI) else self.uri
        if not changes:
            return NameAddr(uri, self.display_name, dict(self.params))
        changes.setdefault("uri", uri)
        changes.setdefault("params", dict(self.params))
        return dataclasses.replace(self, **changes)


# --- fast path -------------------------------------------------------------------------------
# The values real phones send (``Bob <sip:bob@host:5060;transport=udp>;tag=x``) are matched by
# one regex that accepts a strict SUBSET of what NameAddr.parse accepts, and whose groups split
# the text exactly as NameAddr.parse does: no %-escapes, no IPv6, no password, no URI headers,
# no tel:, token-valued header parameters, no stray whitespace. Anything else takes the full
# parser, so acceptance, errors and results are unchanged (tests/unit/test_uri.py compares
# both on every shape).
#: host without IPv6 (same alternatives and order as HOST_PATTERN)
FAST_HOST = (
    r"(?:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
    r"|(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?)"
)
#: 0-65535, at most 4 digits or no leading zero (the full parsers take 1*5DIGIT <= 65535)
FAST_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: ``*( ";" token [ "=" ( token / quoted-string ) ] )``: generic-params whose quoted values
#: have no quoted-pair, CTL, ";" or "=" (so that split_params cuts them like the full parser;
#: e.g. ``+sip.instance="<urn:uuid:...>"``)
FAST_PARAMS = rf'(?:;[{TOKEN_CHARS}]+(?:=(?:[{TOKEN_CHARS}]+|"[^"\\;=\x00-\x1f\x7f]*"))?)*'
_FAST_USER = r"[A-Za-z0-9\-_.!~*'()&=+$]+"  # user without "%", ",", ";", "?", "/"
_FAST_PC = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+"  # 1*paramchar without "%"
_FAST_QDN = r'"(?P<qdn>[^"\\\x00-\x1f\x7f]*)"'  # quoted display name without quoted-pairs
_FAST_NAME_ADDR = re.compile(
    rf"(?:(?P<dn>[{TOKEN_CHARS}]+(?:[ \t]+[{TOKEN_CHARS}]+)*)[ \t]*|{_FAST_QDN}[ \t]*)?"
    rf"<(?P<scheme>sips?):(?:(?P<user>{_FAST_USER})@)?(?P<host>{FAST_HOST})"
    rf"(?::(?P<port>{FAST_PORT}))?(?P<uparams>(?:;{_FAST_PC}(?:={_FAST_PC})?)*)>"
    rf"(?P<params>{FAST_PARAMS})"
)
_FAST_ADDR_SPEC = re.compile(
    rf"(?P<scheme>sips?):(?:(?P<user>{_FAST_USER})@)?(?P<host>{FAST_HOST})"
    rf"(?::(?P<port>{FAST_PORT}))?(?P<params>{FAST_PARAMS})"
)


_FAST_URI = re.compile(
    rf"(?P<scheme>sips?):(?:(?P<user>{_FAST_USER})@)?(?P<host>{FAST_HOST})"
    rf"(?::(?P<port>{FAST_PORT}))?(?P<uparams>(?:;{_FAST_PC}(?:={_FAST_PC})?)*)"
)


def parse_uri_fast(text: str) -> URI:
    """:func:`parse_uri` with a fast path for plain sip:/sips: URIs: same results, errors."""
    m = _FAST_URI.fullmatch(text)
    if m is None:
        return parse_uri(text)
    port = m.group("port")
    return SipURI(
        m.group("scheme"),
        m.group("user"),
        None,
        m.group("host").lower(),
        int(port) if port else None,
        split_params(m.group("uparams")),
        {},
    )


def fast_match_name_addr(text: str) -> re.Match[str] | None:
    """A match if ``text`` is a common-shape name-addr/addr-spec (so NameAddr.parse accepts
    it); None means "ask NameAddr.parse" (which may still accept it)."""
    if "<" in text:
        return _FAST_NAME_ADDR.fullmatch(text)
    return _FAST_ADDR_SPEC.fullmatch(text)


def name_addr_from_match(m: re.Match[str]) -> NameAddr:
    """The NameAddr of a :func:`fast_match_name_addr` match (equal to NameAddr.parse's)."""
    port = m.group("port")
    if m.re is _FAST_ADDR_SPEC:
        uri = SipURI(
            m.group("scheme"),
            m.group("user"),
            None,
            m.group("host").lower(),
            int(port) if port else None,
            {},
            {},
        )
        return NameAddr(uri, None, split_params(m.group("params")))
    uri = SipURI(
        m.group("scheme"),
        m.group("user"),
        None,
        m.group("host").lower(),
        int(port) if port else None,
        split_params(m.group("uparams")),
        {},
    )
    display = m.group("dn")
    if display is None:
        display = m.group("qdn")
    return NameAddr(uri, display, split_params(m.group("params")))


def parse_name_addr_fast(text: str) -> NameAddr:
    """NameAddr.parse with the fast path first: same results, same errors."""
    m = fast_match_name_addr(text)
    return NameAddr.parse(text) if m is None else name_addr_from_match(m)


def parse_name_addr_list(text: str) -> list[NameAddr]:
    """Comma-separated name-addr/addr-spec values (Contact, Route, ...); commas inside
    quotes and <> are kept. Raises ParseError, also for an empty list."""
    items = split_comma_list(text)
    if not items:
        raise ParseError("empty address list")
    return [NameAddr.parse(item) for item in items]
