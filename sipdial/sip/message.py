"""SIP requests and responses: parse one datagram, serialise, frame a TCP stream (RFC 3261 §7).

Sans-IO (STYLE.md §1): bytes in, typed messages out, and back. :func:`parse_message` raises
:class:`~sipdial.sip.errors.ParseError` carrying the status to answer with, and nothing else;
a bad datagram never affects the next one.

    generic-message  =  start-line *message-header CRLF [ message-body ]
    start-line       =  Request-Line / Status-Line
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeAlias

from sipdial.sip.errors import ParseError
from sipdial.sip.headers import FAST_VIA, CSeq, Headers, Via, parse_header_lines, parse_via_fast
from sipdial.sip.uri import (
    TOKEN_RE,
    URI,
    AbsoluteURI,
    NameAddr,
    SipURI,
    fast_match_name_addr,
    name_addr_from_match,
    parse_name_addr_fast,
    parse_name_addr_list,
    parse_uri_fast,
)

__all__ = [
    "MAX_MESSAGE_SIZE",
    "REASONS",
    "Message",
    "Request",
    "Response",
    "StreamFramer",
    "call_id",
    "cseq",
    "from_",
    "from_tag",
    "make_response",
    "parse_message",
    "peek_from",
    "peek_to",
    "peek_top_via",
    "to",
    "to_tag",
    "top_via",
    "vias",
]

#: Largest message accepted, in bytes (the largest UDP payload; RFC 3261 §18.1.1).
#: Bigger -> ParseError(status=413); on a stream the connection is closed.
#: bytes; a larger message is a ParseError with status 413 (a datagram is dropped or answered)
MAX_MESSAGE_SIZE = 65535

#: Standard reason phrases (RFC 3261 §21 and the extensions registered with IANA).
REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity",
    433: "Anonymity Disallowed", 436: "Bad Identity Info", 437: "Unsupported Credential",
    438: "Invalid Identity Header", 439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded", 469: "Bad Info Package", 470: "Consent Needed",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}  # fmt: skip
_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirect", 4: "Client Error", 5: "Server Error",
                  6: "Global Failure"}  # fmt: skip


@dataclass(slots=True)
class Request:
    """A SIP request. ``headers`` hold raw values; use the typed accessors below."""

    method: str
    uri: URI
    headers: Headers
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """Wire form; Content-Length is recomputed from ``len(body)``."""
        return _serialise(f"{self.method} {self.uri} SIP/2.0", self.headers, self.body)


@dataclass(slots=True)
class Response:
    """A SIP response."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """Wire form; Content-Length is recomputed from ``len(body)``."""
        return _serialise(f"SIP/2.0 {self.status} {self.reason}", self.headers, self.body)


Message: TypeAlias = Request | Response


def _serialise(start_line: str, headers: Headers, body: bytes) -> bytes:
    out = [start_line, "\r\n"]
    length_written = False
    for _, name, value in headers._items:
        if name == "Content-Length":
            if length_written:
                continue
            value = str(len(body))
            length_written = True
        out += (name, ": ", value, "\r\n")
    if not length_written:
        out += ("Content-Length: ", str(len(body)), "\r\n")
    out.append("\r\n")
    return "".join(out).encode("utf-8") + body


# --- typed accessors (parsed once per Headers state, then copied out) -------------------------
#
# The parser validates From/To/Via/Contact with fast regexes (or the full parsers when a value
# has an unusual shape) but builds the objects only on first use; the caches live in
# ``Headers._cache``, which every mutation clears. Keys: "from"/"to"/"top_via"/"vias"/"cseq"
# hold parsed objects, "from:m"/"to:m" the fast-path regex match found while validating.


def _parse_vias(headers: Headers) -> list[Via]:
    values = headers.get_all("Via")  # already split on top-level commas
    if not values:
        raise ParseError("missing Via")
    return [Via.parse(v) for v in values]


def _parse_single(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise ParseError(f"missing {name}")
    return value


def _name_addr(h: Headers, key: str, name: str) -> NameAddr:
    cache = h._cache
    value: NameAddr | None = cache.get(key)
    if value is None:
        m = cache.get(key + ":m")
        if m is not None:
            value = name_addr_from_match(m)
        else:
            value = parse_name_addr_fast(_parse_single(h, name))
        cache[key] = value
    return value


def _all_vias(h: Headers) -> list[Via]:
    cache = h._cache
    value: list[Via] | None = cache.get("vias")
    if value is None:
        value = _parse_vias(h)
        cache["vias"] = value
    return value


def _first_via_text(h: Headers) -> str | None:
    """The first via-parm when splitting it off is trivial (no quotes / angle brackets)."""
    raw = h.get("Via")
    if raw is None:
        raise ParseError("missing Via")
    if "," in raw:
        if '"' in raw or "<" in raw:
            return None
        for part in raw.split(","):
            part = part.strip(" \t")
            if part:
                return part
        return None
    return raw


def _top_via(h: Headers) -> Via:
    cache = h._cache
    value: Via | None = cache.get("top_via")
    if value is None:
        text = _first_via_text(h)
        value = None if text is None else parse_via_fast(text)
        if value is None:
            value = _all_vias(h)[0]
        cache["top_via"] = value
    return value


# Typed accessors for requests and responses alike. Each header is parsed once per state of
# the Headers (cached until it is next mutated); NameAddr and Via values are handed out as
# fresh copies, so mutating one never changes the message (the peek_* variants skip the copy).


def call_id(msg: Message) -> str:
    """The Call-ID value; raises ParseError if missing."""
    return _parse_single(msg.headers, "Call-ID")


def cseq(msg: Message) -> CSeq:
    """The parsed CSeq; raises ParseError if missing or malformed."""
    h = msg.headers
    value: CSeq | None = h._cache.get("cseq")
    if value is None:
        value = CSeq.parse(_parse_single(h, "CSeq"))
        h._cache["cseq"] = value
    return value


def from_(msg: Message) -> NameAddr:
    """The parsed From (a fresh copy: mutate freely); raises ParseError."""
    return _name_addr(msg.headers, "from", "From").copy()


def to(msg: Message) -> NameAddr:
    """The parsed To (a fresh copy); raises ParseError."""
    return _name_addr(msg.headers, "to", "To").copy()


def vias(msg: Message) -> list[Via]:
    """All Via values top-down, comma-joined ones split (fresh copies); raises ParseError."""
    return [v.copy() for v in _all_vias(msg.headers)]


def top_via(msg: Message) -> Via:
    """The first Via value (a fresh copy); raises ParseError."""
    return _top_via(msg.headers).copy()


# Read-only views for callers that only read (no copy): the objects are shared with the
# message's cache, so never mutate them.


def peek_from(msg: Message) -> NameAddr:
    """The parsed From, NOT a copy: read only. Raises ParseError."""
    return _name_addr(msg.headers, "from", "From")


def peek_to(msg: Message) -> NameAddr:
    """The parsed To, NOT a copy: read only. Raises ParseError."""
    return _name_addr(msg.headers, "to", "To")


def peek_top_via(msg: Message) -> Via:
    """The first Via value, NOT a copy: read only. Raises ParseError."""
    return _top_via(msg.headers)


def from_tag(msg: Message) -> str | None:
    """The From tag (``from_(msg).tag`` without the copy). Raises ParseError."""
    return _name_addr(msg.headers, "from", "From").params.get("tag")


def to_tag(msg: Message) -> str | None:
    """The To tag (``to(msg).tag`` without the copy). Raises ParseError."""
    return _name_addr(msg.headers, "to", "To").params.get("tag")


# --- parsing ----------------------------------------------------------------------------------

# LWS = [*WSP CRLF] 1*WSP: a line fold and the whitespace around it count as one SP (§7.3.1)
_FOLD = re.compile(r"[ \t]*\r\n[ \t]+")
# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT      ("SIP" is case-insensitive in ABNF)
_VERSION = re.compile(r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+")
# Status-Line   = SIP-Version SP Status-Code SP Reason-Phrase CRLF
# Status-Code   = 3DIGIT
# Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
#   (liberal: any text without control characters; a missing final SP is tolerated)
_STATUS_LINE = re.compile(
    r"(?P<version>[Ss][Ii][Pp]/[0-9]+\.[0-9]+) (?P<code>[0-9]{3})"
    r"(?: (?P<reason>[^\x00-\x08\x0a-\x1f\x7f]*))?"
)
# callid = word [ "@" word ]
# word   = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#          "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
_WORD = r"""[A-Za-z0-9\-.!%*_+`'~()<>:\\"/\[\]?{}]+"""
_CALL_ID = re.compile(rf"{_WORD}(?:@{_WORD})?")
# Max-Forwards = 1*DIGIT ; Content-Length = 1*DIGIT  (10 digits is plenty, and keeps int() cheap)
_DIGITS = re.compile(r"[0-9]{1,10}")

# Header fields that may appear only once (RFC 4475 §3.3.8 multi01, §3.3.9 mcl01).
_SINGLE_VALUED = ("To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")
_MANDATORY = ("To", "From", "Call-ID", "CSeq", "Via")  # §8.1.1; Max-Forwards tolerated
_SINGLE_VALUED_KEYS = tuple((n.lower(), n) for n in _SINGLE_VALUED)
_MANDATORY_KEYS = tuple((n.lower(), n) for n in _MANDATORY)
_FAST_VIA_CHECK = FAST_VIA.fullmatch


def parse_message(data: bytes) -> Message:
    """Parse one complete message (a datagram).

    Validates the start line, SIP/2.0 (else 505), the mandatory headers To/From/Call-ID/
    CSeq/Via (Max-Forwards may be missing, RFC 4475 §3.4.1), single-valued headers, the
    CSeq method against the request method, Contact values, and Content-Length in bytes:
    the body is cut to it (trailing octets are ignored, RFC 3261 §18.3) and a shorter body
    is a 400. Without Content-Length the body is the rest of the datagram.

    Raises ParseError (and nothing else) with ``status`` 400, 505 or 413. For a request whose
    Via/From/To were readable and that has Call-ID and CSeq, ``error.request`` is a
    best-effort Request (empty body; Request-URI an ``AbsoluteURI("", raw)`` if unparseable)
    to build the error response with :func:`make_response`.

    Also rejected: a Contact that is neither ``*`` nor name-addr values, a second To, From,
    Call-ID, CSeq, Max-Forwards or Content-Length, a non-numeric Max-Forwards, headers in the
    Request-URI, extra spaces in the Request-Line, a header section that is not UTF-8. Date
    is not interpreted.
    """
    try:
        return _parse(data)
    except ParseError:
        raise
    except Exception as exc:  # the contract is "ParseError and nothing else": keep it so
        raise ParseError(f"internal parser error ({type(exc).__name__})") from exc


def _parse(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE_SIZE:
        raise ParseError(f"message larger than {MAX_MESSAGE_SIZE} bytes", 413)
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # §7.5: ignore CRLFs before the start-line
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise ParseError("no empty line after the header fields")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("header section is not UTF-8") from None
    if "\r\n " in head or "\r\n\t" in head:
        head = _FOLD.sub(" ", head)
    lines = head.split("\r\n")
    crlfs = len(lines) - 1
    if head.count("\r") != crlfs or head.count("\n") != crlfs:
        raise ParseError("CR or LF outside a CRLF line end")
    rest = data[end + 4 :]
    start = lines[0]
    if start[:4].upper() == "SIP/":
        return _parse_response(start, lines, rest)
    return _parse_request(start, lines, rest)


def _parse_request(start: str, lines: list[str], rest: bytes) -> Request:
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF   (exactly one SP each)
    parts = start.split(" ")
    method = parts[0]
    if not TOKEN_RE.fullmatch(method):  # Method = ... / extension-method ; = token
        raise ParseError(f"malformed start line {start[:60]!r}")
    error: ParseError | None = None
    uri: URI
    if len(parts) != 3:
        # RFC 4475 §3.1.2.8 lwsruri, §3.1.2.9 lwsstart, §3.1.2.10 trws
        error = ParseError("Request-Line is not Method SP Request-URI SP SIP-Version")
        uri = AbsoluteURI("", " ".join(p for p in parts[1:] if p))
    else:
        version = parts[2]
        if not _VERSION.fullmatch(version):
            error = ParseError(f"bad SIP-Version {version[:20]!r}")
        elif version.upper() != "SIP/2.0":
            error = ParseError(f"SIP version {version[:20]!r} not supported", 505)
        try:
            uri = parse_uri_fast(parts[1])
        except ParseError as exc:  # e.g. RFC 4475 §3.1.2.7 ltgtruri: <> around the URI
            error = error or exc
            uri = AbsoluteURI("", parts[1])
        else:
            if isinstance(uri, SipURI) and uri.headers and error is None:
                # §19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 escruri)
                error = ParseError("headers component in Request-URI")
    headers, line_error = parse_header_lines(lines[1:])
    error = error or line_error
    body = b""
    try:
        body = _check_headers(headers, rest, method)
    except ParseError as exc:
        error = error or exc
    if error is not None:
        error.request = _best_effort_request(method, uri, headers)
        try:
            raise error
        finally:  # the traceback keeps this frame: no cycle through its locals (issue 7 §6)
            error = line_error = None
    return Request(method, uri, headers, body)


def _parse_response(start: str, lines: list[str], rest: bytes) -> Response:
    m = _STATUS_LINE.fullmatch(start)
    if m is None:  # e.g. RFC 4475 §3.1.2.19 bigcode: the status code is not 3DIGIT
        raise ParseError(f"malformed Status-Line {start[:60]!r}")
    if m.group("version").upper() != "SIP/2.0":
        raise ParseError("SIP version not supported", 505)
    status = int(m.group("code"))
    if status < 100 or status > 699:
        raise ParseError(f"status code {status} out of range")
    headers, line_error = parse_header_lines(lines[1:])
    if line_error is not None:
        try:
            raise line_error
        finally:  # no cycle through this frame's locals
            line_error = None
    body = _check_headers(headers, rest, None)
    return Response(status, m.group("reason") or "", headers, body)


def _check_headers(headers: Headers, rest: bytes, method: str | None) -> bytes:
    """Validate what every element relies on; return the body. ``method`` None = response.

    From, To, every Via and every Contact are checked to parse, in that order (so the first
    error is the one the full parsers would report): by a fast regex for the usual shapes,
    else by the full parser (whose result, or error, is kept). Objects are built on first use.
    """
    index: dict[str, Any] = headers._idx()  # str, or list[str] if repeated
    for key, name in _MANDATORY_KEYS:
        if key not in index:
            raise ParseError(f"missing {name} header")  # RFC 4475 §3.3.1 insuf
    for key, name in _SINGLE_VALUED_KEYS:
        values = index.get(key)
        if values is not None and type(values) is not str:
            raise ParseError(f"more than one {name} header")
    # From here on a single-valued header's index entry is its value (a str).
    cache = headers._cache
    via_values = index["via"]
    for value in (via_values,) if type(via_values) is str else via_values:
        if "," in value or _FAST_VIA_CHECK(value) is None:
            cache["vias"] = _parse_vias(headers)  # the full parser: raises the right error
            break
    for key in ("from", "to"):
        value = index[key]
        m = fast_match_name_addr(value)
        if m is None:
            cache[key] = NameAddr.parse(value)
        else:
            cache[key + ":m"] = m
    if not _CALL_ID.fullmatch(index["call-id"]):
        raise ParseError("malformed Call-ID")
    seq = CSeq.parse(index["cseq"])
    cache["cseq"] = seq
    if method is not None and seq.method != method:
        # RFC 4475 §3.1.2.17 mismatch01, §3.1.2.18 mismatch02
        raise ParseError("CSeq method does not match the request method")
    max_forwards = index.get("max-forwards")
    if max_forwards is not None and not _DIGITS.fullmatch(max_forwards):
        raise ParseError("malformed Max-Forwards")
    contacts = index.get("contact")
    if contacts is not None:
        for value in (contacts,) if type(contacts) is str else contacts:
            # Contact = ( STAR / (contact-param *(COMMA contact-param)) )
            if value != "*" and ("," in value or fast_match_name_addr(value) is None):
                parse_name_addr_list(value)  # RFC 4475 §3.1.2.13 regbadct
    length = index.get("content-length")
    if length is None:
        return rest  # datagram: the body is the rest of it (RFC 2543 peers, §3.4.1 inv2543)
    if not _DIGITS.fullmatch(length):
        raise ParseError("malformed Content-Length")  # RFC 4475 §3.1.2.3 ncl
    size = int(length)
    if size > len(rest):
        raise ParseError("body shorter than Content-Length")  # RFC 4475 §3.1.2.2 clerr
    return rest[:size] if size < len(rest) else rest  # §18.3: extra octets are ignored


def _best_effort_request(method: str, uri: URI, headers: Headers) -> Request | None:
    """What make_response needs: Via/From/To parsed, Call-ID and CSeq present.

    The CSeq value is copied verbatim into the response, so an out-of-range number (RFC 4475
    §3.1.2.4 scalar02, to be answered with 400) does not prevent the answer; ``cseq()`` on
    such a request raises ParseError.
    """
    request = Request(method, uri, headers)
    try:
        vias(request)
        from_(request)
        to(request)
    except ParseError:
        return None
    if "Call-ID" not in headers or "CSeq" not in headers:
        return None
    return request


def make_response(
    request: Request, status: int, reason: str | None = None, to_tag: str | None = None
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6.

    Copies all Via values, From, To (adding ``to_tag`` if To has no tag yet), Call-ID and
    CSeq (and Timestamp for 100, §8.2.6.1). ``reason`` defaults to :data:`REASONS`.
    """
    src = request.headers
    # Values come from a Headers (already free of CR/LF), so the triples are built directly.
    items = [item for item in src._items if item[0] == "via"]
    items.append(("from", "From", _parse_single(src, "From")))
    to_value = _parse_single(src, "To")
    if to_tag is not None and _name_addr(src, "to", "To").params.get("tag") is None:
        to_value = f"{to_value};tag={to_tag}"
        if "\r" in to_value or "\n" in to_value:
            raise ValueError("CR/LF in the To tag")
    items.append(("to", "To", to_value))
    items.append(("call-id", "Call-ID", _parse_single(src, "Call-ID")))
    items.append(("cseq", "CSeq", _parse_single(src, "CSeq")))
    if status == 100:
        timestamp = src.get("Timestamp")
        if timestamp is not None:
            items.append(("timestamp", "Timestamp", timestamp))
    if reason is None:
        reason = REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")
    return Response(status, reason, Headers._from_parsed(items))


# --- stream framing ---------------------------------------------------------------------------

# Content-Length in an (unfolded) header block; the block starts with the start line, so
# every header line follows a CRLF.   Content-Length = ( "Content-Length" / "l" ) HCOLON 1*DIGIT
_STREAM_FOLD = re.compile(rb"[ \t]*\r\n[ \t]+")
_STREAM_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r]*)", re.IGNORECASE)
# A plausible start line: Status-Line, or a line ending in SIP-Version (a Request-Line).
_STREAM_START = re.compile(rb"SIP/[0-9]+\.[0-9]+ .*|[^ ]+ .* SIP/[0-9]+\.[0-9]+[ \t]*", re.I)


class StreamFramer:
    """RFC 3261 §18.3 framing for stream transports (TCP, TLS).

    :meth:`feed` takes received bytes and returns the complete messages they finish, each as
    bytes for :func:`parse_message`. CRLFs between messages are skipped; an RFC 5626 §3.5.1
    double-CRLF keep-alive ping is returned in order as :data:`PING` (``b"\\r\\n\\r\\n"``),
    which the caller answers with :data:`PONG` (``b"\\r\\n"``) instead of parsing it.

    Content-Length is required on streams: a message without one, a garbage start line, or
    a message larger than ``max_size`` raises ParseError (413 for size); the framer is then
    dead (every later feed raises too) and the caller closes the connection.
    """

    PING = b"\r\n\r\n"
    PONG = b"\r\n"

    __slots__ = ("_buf", "_crlfs", "_error", "_max_size", "_need", "_scanned")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._max_size = max_size
        self._crlfs = 0  # CRLFs seen since the last message (2 = a ping)
        self._need: int | None = None  # total size of the message at the buffer's start
        self._scanned = 0  # bytes already searched for the end of the header block
        self._error: ParseError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """The messages ``data`` completes (and :data:`PING` for each keep-alive), in order.

        Raises ParseError for a broken stream, and again on every later call.
        """
        if self._error is not None:
            raise ParseError(str(self._error), self._error.status)
        try:
            return self._feed(data)
        except ParseError as exc:
            self._error = exc
            self._buf.clear()
            raise

    def _feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while buf:
            if self._need is None and buf[0] in b"\r\n":
                if buf.startswith(b"\r\n"):
                    del buf[:2]
                    self._crlfs += 1
                    if self._crlfs == 2:
                        out.append(self.PING)
                        self._crlfs = 0
                    continue
                if buf[0] == 0x0A:  # a bare LF between messages: skip it
                    del buf[:1]
                    continue
                if len(buf) == 1:  # a CR whose LF has not arrived yet
                    break
                raise ParseError("CR without LF between messages")
            self._crlfs = 0
            if self._need is None:
                end = buf.find(b"\r\n\r\n", self._scanned)
                if end < 0:
                    if len(buf) > self._max_size:
                        raise ParseError("header block too large", 413)
                    self._check_start_line(buf)
                    self._scanned = max(0, len(buf) - 3)
                    break
                self._scanned = 0
                head = bytes(buf[:end])
                self._check_start_line(head + b"\r\n")
                self._need = end + 4 + self._content_length(head)
                if self._need > self._max_size:
                    raise ParseError("message too large", 413)
            if len(buf) < self._need:
                break
            out.append(bytes(buf[: self._need]))
            del buf[: self._need]
            self._need = None
        return out

    @staticmethod
    def _check_start_line(buf: bytes | bytearray) -> None:
        eol = buf.find(b"\r\n")
        if eol >= 0 and not _STREAM_START.fullmatch(buf, 0, eol):
            raise ParseError("stream does not carry SIP (bad start line)")

    @staticmethod
    def _content_length(head: bytes) -> int:
        if b"\r\n " in head or b"\r\n\t" in head:
            head = _STREAM_FOLD.sub(b" ", head)
        values = _STREAM_LENGTH.findall(head)
        if not values:
            raise ParseError("Content-Length is required on stream transports")
        if len(values) > 1:
            raise ParseError("more than one Content-Length header")
        value = values[0].strip(b" \t")
        if not value.isdigit() or len(value) > 10:
            raise ParseError("malformed Content-Length")
        return int(value)
