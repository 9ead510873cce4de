"""Header names, the header multi-map, and the Via and CSeq values (RFC 3261 §7.3, §20).

:class:`Headers` keeps raw (unfolded) values in message order under canonical names; typed
views (Via, CSeq, NameAddr) are parsed on demand by :mod:`sipdial.sip.message` and cached on
the Headers object until it is next mutated.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sipdial.sip.errors import ParseError
from sipdial.sip.uri import (
    FAST_HOST,
    FAST_PARAMS,
    FAST_PORT,
    HOST_PATTERN,
    TOKEN_CHARS,
    TOKEN_RE,
    format_params,
    normalize_host,
    parse_generic_params,
    split_comma_list,
    split_params,
)

T = TypeVar("T")

__all__ = [
    "COMPACT",
    "CSeq",
    "Headers",
    "Via",
    "canonical_name",
    "parse_header_lines",
    "parse_via_list",
]

#: RFC 3261 §7.3.3 compact forms (and the ones later RFCs registered with IANA).
COMPACT: dict[str, str] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}

_KNOWN_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Diversion", "Error-Info", "Event", "Expires", "From",
    "History-Info", "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version",
    "Min-Expires", "Min-SE", "Organization", "P-Asserted-Identity", "P-Preferred-Identity",
    "Path", "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization",
    "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-Sub", "Refer-To", "Referred-By",
    "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition", "Require", "Retry-After",
    "Route", "RSeq", "Security-Client", "Security-Server", "Security-Verify", "Server",
    "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Target-Dialog", "Timestamp", "To", "Unsupported",
    "User-Agent", "Via", "Warning", "WWW-Authenticate",
)  # fmt: skip

# lower-case name or compact letter -> canonical spelling, and -> (lookup key, canonical)
_CANONICAL: dict[str, str] = {n.lower(): n for n in _KNOWN_NAMES}
_CANONICAL.update(COMPACT)
_KEYED: dict[str, tuple[str, str]] = {k: (v.lower(), v) for k, v in _CANONICAL.items()}

#: Headers whose grammar is ``#element`` (comma lists, RFC 3261 §7.3.1): get_all() splits them.
#: WWW-Authenticate & co. are not here: their commas separate auth-params, not values.
LIST_HEADERS = frozenset(
    n.lower()
    for n in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
        "Allow", "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "History-Info", "In-Reply-To", "P-Asserted-Identity",
        "P-Preferred-Identity", "Path", "Proxy-Require", "Reason", "Record-Route",
        "Reject-Contact", "Request-Disposition", "Require", "Route", "Security-Client",
        "Security-Server", "Security-Verify", "Service-Route", "Supported", "Unsupported",
        "Via", "Warning",
    )
)  # fmt: skip


def canonical_name(name: str) -> str:
    """``"call-id"``/``"i"`` -> ``"Call-ID"``; unknown names are returned as given."""
    return _CANONICAL.get(name.lower(), name)


# Every spelling we know (canonical, lower-case, compact letter in both cases) -> (lookup key,
# canonical name): one dict look-up instead of lower() + look-up on the hot paths.
_NAME_INFO: dict[str, tuple[str, str]] = {}
for _lower, (_k, _canon) in _KEYED.items():
    for _spelling in (_lower, _lower.upper(), _canon, _k):
        _NAME_INFO[_spelling] = (_k, _canon)
del _lower, _k, _canon, _spelling


def _name_info(name: str) -> tuple[str, str]:
    """``name`` -> (lookup key, canonical spelling)."""
    info = _NAME_INFO.get(name)
    if info is not None:
        return info
    lower = name.lower()
    keyed = _KEYED.get(lower)
    return (lower, name) if keyed is None else keyed


def _key(name: str) -> str:
    info = _NAME_INFO.get(name)
    if info is not None:
        return info[0]
    lower = name.lower()
    keyed = _KEYED.get(lower)
    return lower if keyed is None else keyed[0]


def _check_value(name: str, value: str) -> None:
    # A CR or LF in a value would let a caller inject headers (or a body) into a message.
    if "\r" in value or "\n" in value:
        raise ValueError(f"CR/LF in value of header {name!r}")


class Headers:
    """Ordered, case-insensitive multi-map of raw header values, canonical names.

    Names are stored canonically (compact forms expanded: ``i`` -> ``Call-ID``); unknown
    names keep the spelling first given. Values are the unfolded text without surrounding
    whitespace. Mutators raise ValueError for a value containing CR or LF.

    Reads go through an index (lookup key -> the value, or a list of the values in order if
    there are several), built on the first read and kept up to date by every mutator, so
    ``get``/``get_all``/``in`` do not scan the list. (A lone value is stored bare: a dict of
    strings is not tracked by the cyclic GC, a dict of lists is, and so are the lists.)
    """

    __slots__ = ("_cache", "_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []  # (key, canonical name, value)
        self._cache: dict[str, Any] = {}  # parsed views, cleared by every mutation
        self._index: dict[str, str | list[str]] | None = None  # None = not built yet
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str, str]]) -> Headers:
        """Adopt (key, name, value) triples already checked by the message parser."""
        self = cls.__new__(cls)
        self._items = items
        self._cache = {}
        self._index = None
        return self

    def _idx(self) -> dict[str, str | list[str]]:
        index = self._index
        if index is None:
            index = {}
            for k, _, v in self._items:
                values = index.get(k)
                if values is None:
                    index[k] = v
                elif isinstance(values, list):
                    values.append(v)
                else:
                    index[k] = [values, v]
            self._index = index
        return index

    def _values(self, key: str) -> list[str]:
        values = self._idx().get(key)
        if values is None:
            return []
        if type(values) is str:
            return [values]
        return list(values)

    # -- reading ---------------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (raw, not split on commas)."""
        values = self._idx().get(_key(name))
        if values is None:
            return default
        return values if type(values) is str else values[0]

    def get_all(self, name: str) -> list[str]:
        """All values of ``name`` in order; comma-list headers (Via, Contact, Route, Allow,
        Supported, Require, ...) are also split on top-level commas. May raise ParseError
        for a list value with an unterminated quote."""
        key = _key(name)
        values = self._values(key)
        if key not in LIST_HEADERS or not values:
            return values
        ck = "all:" + key
        cached: list[str] | None = self._cache.get(ck)
        if cached is None:
            cached = []
            for v in values:
                cached.extend(split_comma_list(v))
            self._cache[ck] = cached
        return list(cached)

    def count(self, name: str) -> int:
        """How many header lines (not comma-separated values) of ``name`` there are."""
        values = self._idx().get(_key(name))
        if values is None:
            return 0
        return 1 if type(values) is str else len(values)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return _key(name) in self._idx()

    def items(self) -> list[tuple[str, str]]:
        """(canonical name, raw value) pairs in order."""
        return [(n, v) for _, n, v in self._items]

    def __len__(self) -> int:
        """The number of header lines."""
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        """The same names and values in the same order."""
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def copy(self) -> Headers:
        return Headers._from_parsed(list(self._items))

    def cached(self, key: str, compute: Callable[[], T]) -> T:
        """Memoise a parsed view (``compute()``) of these headers until the next mutation.

        Used by the typed accessors in :mod:`sipdial.sip.message`; callers must not mutate
        the returned object (the accessors hand out copies).
        """
        value: T | None = self._cache.get(key)
        if value is None:
            value = compute()
            self._cache[key] = value
        return value

    # -- writing ---------------------------------------------------------------------------
    def _invalidate(self) -> None:
        if self._cache:
            self._cache.clear()

    def set(self, name: str, value: str) -> None:
        """Replace all values of ``name`` by ``value`` (at the position of the first)."""
        _check_value(name, value)
        key, canonical = _name_info(name)
        entry = (key, canonical, value)
        out: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    out.append(entry)
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append(entry)
        self._items = out
        if self._index is not None:
            self._index[key] = value
        self._invalidate()

    def add(self, name: str, value: str) -> None:
        """Append a value."""
        if "\r" in value or "\n" in value:
            _check_value(name, value)
        key, canonical = _name_info(name)
        self._items.append((key, canonical, value))
        index = self._index
        if index is not None:
            values = index.get(key)
            if values is None:
                index[key] = value
            elif isinstance(values, list):
                values.append(value)
            else:
                index[key] = [values, value]
        if self._cache:
            self._cache.clear()

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first header of that name (Via, Record-Route), else at the top."""
        _check_value(name, value)
        key, canonical = _name_info(name)
        index = next((i for i, item in enumerate(self._items) if item[0] == key), 0)
        self._items.insert(index, (key, canonical, value))
        if self._index is not None:
            values = self._index.get(key)
            if values is None:
                self._index[key] = value
            elif isinstance(values, list):
                values.insert(0, value)
            else:
                self._index[key] = [value, values]
        self._invalidate()

    def remove(self, name: str) -> None:
        """Remove all values of ``name`` (no error if absent)."""
        key = _key(name)
        self._items = [item for item in self._items if item[0] != key]
        if self._index is not None:
            self._index.pop(key, None)
        self._invalidate()


def parse_header_lines(lines: Iterable[str]) -> tuple[Headers, ParseError | None]:
    """Unfolded header lines -> Headers, plus the first malformed-line error (or None).

    Malformed lines are skipped rather than fatal here so that the caller can still build a
    best-effort request for its 400 response; the caller raises the returned error.

        message-header =  header-name HCOLON header-value
        HCOLON         =  *( SP / HTAB ) ":" SWS
        header-name    =  token
    """
    items: list[tuple[str, str, str]] = []
    append = items.append
    error: ParseError | None = None
    keyed_get = _KEYED.get
    info_get = _NAME_INFO.get
    token = TOKEN_RE.fullmatch
    for line in lines:
        name, colon, value = line.partition(":")
        info = info_get(name)  # a known spelling: a token, no whitespace to strip
        if info is not None and colon:
            append((info[0], info[1], value.strip(" \t")))
            continue
        name = name.rstrip(" \t")
        if not colon or not token(name):
            if error is None:
                error = ParseError(f"malformed header line {line[:60]!r}")
            continue
        lower = name.lower()
        keyed = keyed_get(lower)
        if keyed is None:
            items.append((lower, name, value.strip(" \t")))
        else:
            items.append((keyed[0], keyed[1], value.strip(" \t")))
    return Headers._from_parsed(items), error


# via-parm      =  sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol =  protocol-name SLASH protocol-version SLASH transport
# protocol-name =  "SIP" / token        protocol-version = token
# transport     =  "UDP" / "TCP" / "TLS" / "SCTP" / other-transport      (other = token)
# sent-by       =  host [ COLON port ]
# SLASH = SWS "/" SWS   COLON = SWS ":" SWS   (LWS already unfolded to SP/HTAB)
_VIA = re.compile(
    rf"""
    [ \t]*
    [{TOKEN_CHARS}]+ [ \t]* / [ \t]*                 # protocol-name SLASH
    [{TOKEN_CHARS}]+ [ \t]* / [ \t]*                 # protocol-version SLASH
    (?P<transport> [{TOKEN_CHARS}]+ )                # transport
    [ \t]+                                            # LWS
    """
    + HOST_PATTERN  # sent-by = host ...
    + r"""
    (?: [ \t]* : [ \t]* (?P<port> [0-9]{1,5} ) )?     # ... [ COLON port ]
    """,
    re.VERBOSE,
)


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42, §18.2.1; rport RFC 3581)."""

    transport: str  #: upper-case "UDP", "TCP", "TLS", "SCTP", ...
    host: str  #: lower-case, IPv6 without brackets
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)  #: branch, received, rport...

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one via-parm (no commas); raises ParseError."""
        m = _VIA.match(text)
        if m is None:
            raise ParseError(f"bad Via {text[:80]!r}")
        port = int(m.group("port")) if m.group("port") else None
        if port is not None and port > 65535:
            raise ParseError(f"Via port out of range {text[:80]!r}")
        # via-params = via-ttl / via-maddr / via-received / via-branch / via-extension
        # (all generic-param shaped; values are checked by whoever uses them)
        params = parse_generic_params(text, m.end())
        return cls(m.group("transport").upper(), normalize_host(m.group("host")), port, params)

    def host_port(self) -> str:
        """sent-by: ``host[:port]`` with brackets around an IPv6 host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.host_port()}{format_params(self.params)}"

    def copy(self, **changes: Any) -> Via:
        if not changes:  # hand-written: dataclasses.replace costs ~10x more
            return Via(self.transport, self.host, self.port, dict(self.params))
        changes.setdefault("params", dict(self.params))
        return dataclasses.replace(self, **changes)


# Fast path: "SIP/2.0/UDP host[:port]*(;token[=token])" — a strict subset of what Via.parse
# accepts, split the same way (the host group is atomic because Via.parse *matches* its head
# regex and then reads parameters from where the host ended: "1.2.3.4.example.com" is an IPv4
# address followed by a bad parameter there). Anything else takes Via.parse.
FAST_VIA = re.compile(
    rf"SIP/2\.0/(?P<transport>[A-Za-z]+) (?>(?P<host>{FAST_HOST}))"
    rf"(?::(?P<port>{FAST_PORT}))?(?P<params>{FAST_PARAMS})"
)


def parse_via_fast(text: str) -> Via | None:
    """Via.parse(text) for a common-shape via-parm, else None (then call Via.parse)."""
    m = FAST_VIA.fullmatch(text)
    if m is None:
        return None
    port = m.group("port")
    return Via(
        m.group("transport").upper(),
        m.group("host").lower(),
        int(port) if port else None,
        split_params(m.group("params")),
    )


def parse_via_list(text: str) -> list[Via]:
    """A Via header value: ``via-parm *(COMMA via-parm)``; raises ParseError (also if empty)."""
    items = split_comma_list(text)
    if not items:
        raise ParseError("empty Via")
    return [Via.parse(item) for item in items]


# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
# Method = INVITEm / ACKm / OPTIONSm / BYEm / CANCELm / REGISTERm / extension-method(token)
_CSEQ = re.compile(rf"[ \t]*(?P<number>[0-9]+)[ \t]+(?P<method>[{TOKEN_CHARS}]+)[ \t]*")


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq value (RFC 3261 §20.16): sequence number < 2**31 and method."""

    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = _CSEQ.fullmatch(text)
        if m is None:
            raise ParseError(f"bad CSeq {text[:80]!r}")
        digits = m.group("number")
        if len(digits) > 10 or int(digits) >= 2**31:
            # §8.1.1.5: "MUST be expressible as a 32-bit unsigned integer and MUST be less
            # than 2**31" (RFC 4475 §3.1.2.4 scalar02, §3.1.2.5 scalarlg)
            raise ParseError(f"CSeq number out of range {text[:80]!r}")
        return cls(int(digits), m.group("method"))

    def __str__(self) -> str:
        return f"{self.number} {self.method}"
