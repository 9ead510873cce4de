"""The HTTP API: JSON routes under ``/v1``, ``/healthz`` and the compatibility URLs.

Layout: :func:`build_site` is the one public entry point. ``_Router`` holds everything a
request means (routing, authentication, validation, talking to :class:`CallApi`) and maps an
``_Incoming`` request to a ``_Reply`` without touching Twisted's request object; the
``_Resource`` adapter copies bytes in, writes the reply out and logs one INFO line per request
on ``sipdial.api`` (method, path without the query string, status, milliseconds).

Routes (all JSON, ``application/json; charset=utf-8``):

===========================  ======  ===========================================
``/v1/calls``                POST    start a call -> 201 + ``Location``
``/v1/calls``                GET     ``?user=&state=&limit=`` -> ``{"calls": [...]}``
``/v1/calls/{id}``           GET     the call resource
``/v1/calls/{id}``           DELETE  cancel / hang up -> the call resource
``/v1/registrations``        GET     ``?user=`` -> ``{"registrations": [...]}``
``/v1/events``               GET     Server-Sent Events (:mod:`sipdial.api.sse`), if enabled
``/v1/upstream``             GET     admin: sipdial's registration at [upstream]; 404 if none
``/healthz``                 GET     ``api.health()``, no authentication
``/metrics``                 GET     Prometheus text format (:mod:`sipdial.metrics`), [metrics]
``.../call-init.php``        GET     LocaPhone: ``?user=&to=`` [&cidnum=][&clir=1], from+prv ignored
``.../remote_call.htm``      GET     pbxnsip: ``?user=&dest=`` [&auth=id:password][&connect=]
===========================  ======  ===========================================

Errors are always ``{"error": {"code": ..., "message": ...}}``, and bad input is always a 4xx:
JSON that is not UTF-8, not JSON or nested past the parser's limit is 400 ``invalid_json``; a
query value that is not UTF-8 once %-decoded 400 ``invalid_query``; a ``to`` that is no
number, local user or SIP URI, or holds control characters or lone surrogates, 422
``invalid_destination`` (:func:`normalise_destination`). Messages quote the request escaped.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import importlib.metadata
import ipaddress
import json
import logging
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from io import BytesIO
from typing import Any, BinaryIO, Final, Protocol
from urllib.parse import quote, unquote_to_bytes

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from sipdial.api import schema
from sipdial.api.camara import (
    CAMARA_PATH,
    camara_error,
    camara_view,
    parse_create,
    valid_correlator,
)
from sipdial.api.links import MAX_TOKEN_LENGTH, Link, Links
from sipdial.api.pages import (
    PAGE_HEADERS,
    PAGE_HEADERS_APP,
    Lang,
    dial_confirm_page,
    error_page,
    language,
    link_page,
    placed_page,
    sign_in_page,
    static_file,
)
from sipdial.api.schema import Auth, DocumentedPath, Operation, Param, Reply, openapi_document
from sipdial.api.service import ApiError, CallApi, MetricsPort, OtherWorkers, WorkerReply
from sipdial.api.session import COOKIE, Session, Sessions, cookie_value
from sipdial.api.sse import EventSource, EventStream
from sipdial.calls import CallState, Mode, escape_user
from sipdial.config import MetricsConfig, Network
from sipdial.contacts import PhonebookError, entries_of, number_key
from sipdial.events import parse_cursor
from sipdial.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from sipdial.metrics import merge as merge_metrics
from sipdial.numbers import NumberPlan, check_e164
from sipdial.reactor_types import exc_info
from sipdial.sip import SipError, SipURI, parse_uri
from sipdial.store import MAX_METADATA_BYTES, ContactBook, Metadata, iso_time
from sipdial.vocabulary import Direction

__all__ = ["MAX_BODY_BYTES", "ApiParts", "ApiSite", "build_site", "normalise_destination"]

#: Largest request body accepted; larger bodies are answered with 413.
MAX_BODY_BYTES: Final = 64 * 1024

_LIMIT_DEFAULT: Final = 50
_LIMIT_MAX: Final = 500
_REALM: Final = "sipdial"
_JSON_CONTENT_TYPE: Final = b"application/json; charset=utf-8"

log = logging.getLogger("sipdial.api")


# --------------------------------------------------------------------------- validation


# Separators people and CRMs put into phone numbers: "+49 (30) 123-456", "030/123.456".
_VISUAL_SEPARATORS: Final = str.maketrans("", "", " \t\u00a0-./()")
_NUMBER: Final = re.compile(r"\+?[0-9]{1,32}")
# RFC 3261 §19.1 in spirit, not in full: scheme, optional userinfo, host (name, IPv4 or
# [IPv6]), optional port and parameters. The engine parses it properly.
_SIP_URI: Final = re.compile(
    r"(?P<scheme>sips?):"
    r"(?:[^\s@<>\"]+@)?"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?"
    r"(?:;[^\s<>\"]*)?",
    re.IGNORECASE,
)
_USER: Final = re.compile(r"[A-Za-z0-9._~+-]{1,64}")
_CALL_ID: Final = r"[A-Za-z0-9._~-]{1,128}"
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BODY_FIELDS: Final = frozenset(schema.CALL_REQUEST["properties"])


def normalise_destination(value: str) -> str | None:
    """Return the dialable form of ``value`` or None if it is not a number or SIP URI.

    Numbers keep an optional leading ``+`` and lose human formatting: ``"+49 (30) 123-456"``
    -> ``"+4930123456"``; the trunk-prefix notation ``"+49 (0)30 123456"`` drops the
    ``(0)``; ``tel:``, ``callto:`` and ``phone:`` (CRMs' links) are stripped. Extensions
    (``"201"``) are numbers too. ``sip:``/``sips:``
    URIs are rebuilt by sipdial's URI parser: lower-case scheme and host, the user part
    escaped per RFC 3261 §25.1 (``"sip:jürgen#1@x"`` -> ``"sip:j%C3%BCrgen%231@x"``; ``;`` and
    ``?`` in it too), without password, ``?headers`` and ``;method=`` (a Request-URI carries
    none of them, RFC 3261 §19.1.5). Text with control characters or lone surrogates, also
    %-escaped in a URI's user part, is never a destination.
    """
    try:
        return _destination(value)
    except _NotADestination:
        return None


class _NotADestination(ValueError):
    """Why a ``to`` is no destination (the message follows the field name)."""


def _destination(value: str) -> str:
    """:func:`normalise_destination`, raising :class:`_NotADestination` with the reason."""
    text = value.strip()
    problem = _text_problem(text)
    if problem is not None:
        raise _NotADestination(f"{problem}: {_shown(text)}")
    if len(text) > 256:
        raise _NotADestination("must be at most 256 characters")
    if _SIP_URI.fullmatch(text) is not None:
        return _canonical_uri(text)
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() in ("tel", "callto", "phone"):  # CRMs' links (seed 002)
        text = rest.removeprefix("//")  # (a tel: ;ext= or ;phone-context= is refused)
    if text.startswith("+"):
        text = text.replace("(0)", "")
    text = text.translate(_VISUAL_SEPARATORS)
    if _NUMBER.fullmatch(text) is None:
        raise _NotADestination("must be a phone number or SIP URI")
    return text


# A "%" that does not start an escaped triplet, and what else the user part may not hold raw
_NOT_USER_CHAR: Final = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-_.!~*'()&=+$,;?/%]")


def _canonical_uri(text: str) -> str:
    """A SIP URI that matched :data:`_SIP_URI`, as sipdial will dial it."""
    scheme, _, rest = text.partition(":")
    if "@" in rest:
        userinfo, _, hostpart = rest.partition("@")
        user, colon, password = userinfo.partition(":")
        # characters the user part may not carry raw (non-ASCII letters, "#", a stray "%")
        # are escaped as UTF-8 first, so that the URI parses
        user = _NOT_USER_CHAR.sub(lambda m: quote(m.group(), safe=""), user)
        rest = f"{user}{colon}{password}@{hostpart}"
    try:
        uri = parse_uri(f"{scheme}:{rest}")
    except SipError as exc:
        raise _NotADestination(f"not a SIP URI: {exc}") from None
    if not isinstance(uri, SipURI):
        raise _NotADestination("must be a phone number or SIP URI")
    user_text = uri.unquote_user()
    if user_text is not None:
        problem = _text_problem(user_text)
        if problem is not None:
            raise _NotADestination(f"the user part {problem} once %-decoded: {_shown(text)}")
    params = {k: v for k, v in uri.params.items() if k != "method"}
    escaped = None if user_text is None else escape_user(user_text)
    return str(SipURI(uri.scheme, escaped, None, uri.host, uri.port, params, {}))


def _text_problem(text: str) -> str | None:
    """Why ``text`` cannot be carried (None if it can): a lone surrogate (valid JSON, but
    no Unicode text: it cannot be encoded as UTF-8) or a control character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ("is not well-formed Unicode text (a lone surrogate, or %-escapes that are "
                "not UTF-8)")
    if _UNPRINTABLE.search(text):
        return "contains a control character"
    return None


def _field_name(name: str) -> str:
    """A field name from the request for an error message: as given if it is plain."""
    return name if _PLAIN_NAME.fullmatch(name) else _shown(name)


_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def _shown(text: str) -> str:
    """``text`` quoted for an error message: control characters and surrogates escaped,
    at most 60 characters."""
    return ascii(text) if len(text) <= 60 else ascii(text[:60])[:-1] + "...'"


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def _valid_user(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{name}: must be a string")
    if not _USER.fullmatch(value):
        raise _invalid(f"{name}: must be 1-64 characters of A-Z a-z 0-9 . _ ~ + -")
    return value


def _valid_destination(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{name}: must be a string")
    try:
        return _destination(value)
    except _NotADestination as exc:
        raise ApiError(422, "invalid_destination", f"{name}: {exc}") from None


def _valid_text(name: str, value: object, *, limit: int = 256) -> str | None:
    """An optional free-text field: well-formed Unicode, printable, 1-``limit`` characters."""
    if value is None:
        return None
    if (not isinstance(value, str) or not 0 < len(value) <= limit
            or _text_problem(value) is not None):
        raise _invalid(f"{name}: must be a non-empty string of at most {limit} printable "
                       "characters")
    return value


_FLAGS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_MODES: Final = {m.value: m for m in Mode}
_STATES: Final = {s.value: s for s in CallState}
_DIRECTIONS: Final = {d.value: d for d in Direction}


def _valid_mode(value: object) -> Mode | None:
    if value is None:
        return None
    if isinstance(value, str) and value in _MODES:
        return _MODES[value]
    raise _invalid("mode: must be " + " or ".join(f'"{m}"' for m in _MODES))


def _valid_flag(payload: dict[str, object], name: str) -> bool | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, bool):
        raise _invalid(f"{name}: must be true or false")
    return value


@dataclass(frozen=True, slots=True)
class _CallRequest:
    """A validated request to start a call (from POST or a compatibility URL)."""

    user: str
    to: str
    device: str | None = None
    auto_answer: bool | None = None
    mode: Mode | None = None
    confirm: bool | None = None  #: "press 1" before dialling (None: user/config default)
    caller_id: str | None = None  #: number shown to the target in bridge mode
    clir: bool | None = None  #: hide the caller's identity from the target
    metadata: Metadata | None = None  #: the CRM's correlation data (a small JSON object)
    refuse_if_busy: bool | None = None  #: 409 user_busy while the user is on a c2d call
    headers: tuple[tuple[str, str], ...] = ()  #: for the INVITEs ([calls] extra_headers)
    first_leg: str | None = None  #: ``"device": "tel:+49..."``: an external number first


def _valid_metadata(value: object) -> Metadata | None:
    """A JSON object of at most MAX_METADATA_BYTES as compact JSON (UTF-8), or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("metadata: must be a JSON object")
    try:  # NaN and Infinity parse (Python's json) but are no JSON for the CRM reading it
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise _invalid("metadata: NaN and Infinity are not JSON numbers") from None
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # "\ud800": a lone surrogate, no text
        raise _invalid("metadata: text that is not well-formed Unicode") from None
    if size > MAX_METADATA_BYTES:
        raise _invalid(f"metadata: {size} bytes as JSON, at most {MAX_METADATA_BYTES}")
    return value


def _valid_headers(value: object) -> tuple[tuple[str, str], ...]:
    """``{"X-CRM-Id": "4711"}``: names and values strings (which names: the engine says)."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _invalid("headers: must be a JSON object of header name -> text")
    return tuple(value.items())


def _call_request_from_json(payload: object) -> _CallRequest:
    if not isinstance(payload, dict):
        raise _invalid("body: must be a JSON object")
    unknown = sorted(set(payload) - _BODY_FIELDS)
    if unknown:
        raise _invalid(f"{_field_name(unknown[0])}: unknown field")
    if "user" not in payload:
        raise _invalid("user: is required")
    user = _valid_user("user", payload["user"])
    if "to" not in payload:
        raise _invalid("to: is required")
    to = _valid_destination("to", payload["to"])
    device = _valid_text("device", payload.get("device"))
    first_leg = None
    if device is not None and device.lower().startswith("tel:"):
        # an external number rung first instead of the user's phones (bridge mode)
        first_leg, device = _valid_destination("device", device), None
    auto_answer = _valid_flag(payload, "auto_answer")
    mode = _valid_mode(payload.get("mode"))
    caller_id = payload.get("caller_id")
    if caller_id is not None and (
        not isinstance(caller_id, str) or re.fullmatch(r"\+?[0-9]{1,20}", caller_id) is None
    ):
        raise _invalid('caller_id: must be a number (digits with an optional leading "+")')
    return _CallRequest(user=user, to=to, device=device, auto_answer=auto_answer, mode=mode,
                        confirm=_valid_flag(payload, "confirm"), caller_id=caller_id,
                        clir=_valid_flag(payload, "clir"),
                        metadata=_valid_metadata(payload.get("metadata")),
                        refuse_if_busy=_valid_flag(payload, "refuse_if_busy"),
                        headers=_valid_headers(payload.get("headers")), first_leg=first_leg)


def _parse_json(body: bytes) -> object:
    """The body as JSON, or a 400: not UTF-8, not JSON, or nested deeper than the parser's
    recursion limit (``[[[[...]]]]`` of 64 KiB is valid JSON and a RecursionError)."""
    try:
        return json.loads(body.decode("utf-8-sig"))
    except RecursionError:
        raise ApiError(400, "invalid_json", "request body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None


class _Query:
    """A parsed query string.

    ``+`` means space in ``application/x-www-form-urlencoded``, but CRM URL templates put
    ``to=+4930123456`` into links unencoded; :meth:`number` therefore keeps a *leading*
    ``+`` literally (a leading space would be meaningless anyway).
    """

    def __init__(self, raw: bytes) -> None:
        self._raw: dict[str, list[str]] = {}
        text = raw.decode("latin-1")
        for pair in text.split("&"):
            if not pair:
                continue
            key, _, value = pair.partition("=")
            # a name that is not UTF-8 names no parameter sipdial reads: ignored like others
            self._raw.setdefault(_unquote(key, errors="replace"), []).append(value)

    def _one(self, name: str) -> str | None:
        values = self._raw.get(name)
        if values is None:
            return None
        if len(values) > 1:
            raise _invalid(f"{name}: must be given once")
        return values[0]

    def text(self, name: str) -> str | None:
        raw = self._one(name)
        return None if raw is None else _unquote_value(name, raw)

    def number(self, name: str) -> str | None:
        raw = self._one(name)
        if raw is None:
            return None
        # a "+" that starts the number, also after a link's scheme (tel:+49..., callto:+49)
        return _unquote_value(name, _LEADING_PLUS.sub("%2B", raw))

    def time(self, name: str) -> float | None:
        """An RFC 3339 time with its offset (``2026-12-03T00:00:00Z``) as unix time."""
        text = self.text(name)
        if text is None:
            return None
        # an offset's "+" arrives as a space unless the client encoded it (%2B)
        text = _OFFSET_AS_SPACE.sub(r"+\1", text)
        try:
            when = datetime.fromisoformat(text) if len(text) <= 40 else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise _invalid(f"{name}: must be a time like 2026-12-03T08:00:00Z (with offset)")
        return when.timestamp()

    def required(self, name: str, *, number: bool = False) -> str:
        value = self.number(name) if number else self.text(name)
        if value is None or value == "":
            raise _invalid(f"{name}: is required")
        return value


_OFFSET_AS_SPACE: Final = re.compile(r" (\d\d(?::?\d\d)?)$")
_LEADING_PLUS: Final = re.compile(r"^\+|(?<=^tel:)\+|(?<=^callto:)\+|(?<=^phone:)\+|"
                                  r"(?<=^callto://)\+", re.IGNORECASE)


def _unquote(value: str, errors: str = "strict") -> str:
    """``application/x-www-form-urlencoded`` decoding of ``value`` (the query decoded as
    latin-1, i.e. its bytes): ``+`` is a space, %-escapes and raw bytes are UTF-8."""
    data = unquote_to_bytes(value.replace("+", " ").encode("latin-1"))
    return data.decode("utf-8", errors)


def _unquote_value(name: str, raw: str) -> str:
    try:
        return _unquote(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_query",
                       f"{name}: is not UTF-8 text once %-decoded") from None


# ------------------------------------------------------------------------ authentication


@dataclass(frozen=True, slots=True)
class _Principal:
    """Who is asking: a user, or an administrator (``user is None``)."""

    user: str | None
    #: how it proved who it is, for messages: "token" or "credentials" (SIP user's password)
    proof: str = "token"
    #: an administrator user's own id (``[[users]] admin``, signed in on the page): whose
    #: phone their own dialling rings and whose their new contacts are
    acting: str | None = None

    def may_act_for(self, user: object) -> bool:
        return self.user is None or self.user == user


_ADMIN: Final = _Principal(user=None)


_PROOF_HEX: Final = 32  #: hex digits of a token's SHA-256 a session keeps as its proof


class _Tokens:
    """Bearer tokens -> principals, compared in constant time.

    Every configured token is compared (no early exit), and digests of equal length are
    compared so neither the position of a match nor a token's length leaks through timing.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._entries = [
            (hashlib.sha256(token.encode()).digest(), owner)
            for token, owner in tokens.items()
            if token
        ]
        #: (a session's token proof, owner): read by every session request, so a set — the
        #: proof comes from a cookie whose HMAC was checked, no timing to hide here
        self._proofs = {(d.hex()[:_PROOF_HEX], o) for d, o in self._entries}

    def has(self, digest_hex: str, user: str | None) -> bool:
        """Whether a token whose SHA-256 starts with ``digest_hex`` (a :meth:`proof`) is
        still configured for ``user`` (None: an administrator's)."""
        return (digest_hex, user or "*") in self._proofs

    @staticmethod
    def proof(token: str) -> str:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:_PROOF_HEX]

    def lookup(self, token: str) -> _Principal | None:
        presented = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for digest, owner in self._entries:
            if hmac.compare_digest(digest, presented):
                found = owner
        if found is None:
            return None
        return _ADMIN if found == "*" else _Principal(user=found)


def _unauthorized(message: str, *, basic: bool = False, invalid: bool = False) -> ApiError:
    bearer = f'Bearer realm="{_REALM}"' + (', error="invalid_token"' if invalid else "")
    challenges = [bearer] + ([f'Basic realm="{_REALM}", charset="UTF-8"'] if basic else [])
    return _HttpError(401, "unauthorized", message, [("WWW-Authenticate", c) for c in challenges])


def _forbidden(principal: _Principal, user: str) -> ApiError:
    return ApiError(403, "forbidden", f"these {principal.proof} may not act for user {user}"
                    if principal.proof == "credentials"
                    else f"this {principal.proof} may not act for user {user}")


def _strip_domain(user: str) -> str:
    """``"201@pbx.example.com"`` -> ``"201"`` (pbxnsip user and auth names carry domains)."""
    return user.partition("@")[0]


class _HttpError(ApiError):
    """An :class:`ApiError` with extra response headers (challenges, Allow)."""

    def __init__(
        self, status: int, code: str, message: str, headers: list[tuple[str, str]]
    ) -> None:
        super().__init__(status, code, message)
        self.headers = headers


# ------------------------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class _Incoming:
    """The parts of an HTTP request the router looks at."""

    method: str
    path: str
    query: bytes = b""
    authorization: str | None = None
    body: bytes = b""
    body_too_large: bool = False
    last_event_id: str | None = None  #: the SSE ``Last-Event-ID`` header
    correlator: str | None = None  #: CAMARA's ``x-correlator`` header
    cookie: str | None = None  #: the session cookie's value (the web page)
    csrf: str | None = None  #: the ``X-CSRF-Token`` header
    fetch_site: str | None = None  #: ``Sec-Fetch-Site``: "cross-site" is refused for sessions
    secure: bool = False  #: the request came over TLS (the cookie gets Secure)
    client: str = ""  #: the client's address (host), for the password-guessing limits
    received: float = 0.0  #: when it was read (the resource's monotonic clock)
    accept: str = ""  #: the Accept header: "text/html" in it asks for pages (links, /dial)
    content_type: str = ""  #: the Content-Type header, lower case
    origin: str | None = None  #: the ``Origin`` header (browsers send it with POST)
    host: str | None = None  #: the ``Host`` header
    forwarded_host: str | None = None  #: ``X-Forwarded-Host`` (a proxy that rewrote Host)
    accept_language: bytes = b""  #: the ``Accept-Language`` header (its first 500 bytes)

    @property
    def language(self) -> Lang:
        """The language of the pages a browser is shown (read only for those pages)."""
        return language(self.accept_language.decode("latin-1"))


@dataclass(frozen=True, slots=True)
class _OpenEventStream:
    """The body of a reply to ``GET /v1/events``: stream instead of sending JSON."""

    user: str | None  #: only this user's calls; None = every call (admin)
    after: int | tuple[int, ...] | None  #: Last-Event-ID to resume after (a cursor: workers)
    #: whether the credentials that opened it still hold (asked at every heartbeat)
    allowed: Callable[[], bool] | None = None


@dataclass(frozen=True, slots=True)
class _Text:
    """A reply body that is not JSON (``/metrics``)."""

    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: object
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _MetricsAccess:
    """``GET /metrics``: the metrics and who may read them (:class:`MetricsConfig`)."""

    port: MetricsPort
    token: str | None = field(default=None, repr=False)  #: [metrics] token
    #: no credentials needed ([metrics] allow_from is set, and checked before)
    open: bool = False
    #: what workers show each other when asking for their metrics (derived from the
    #: workers' shared secret); None: no workers
    internal_token: str | None = field(default=None, repr=False)


_Handler = Callable[["_Router", _Incoming, "re.Match[str]"], "Deferred[_Reply]"]


@dataclass(frozen=True, slots=True)
class _Method:
    """One method of a route: what answers it and what the OpenAPI document says of it."""

    handler: _Handler
    doc: Operation


@dataclass(frozen=True, slots=True)
class _Route:
    pattern: re.Pattern[str]
    methods: Mapping[str, _Method]
    template: str  #: the path as the OpenAPI document names it
    #: HEAD is answered like GET; not on compatibility URLs, where GET starts a call.
    head: bool = True
    scope: str = "api"  #: whose ``allow_from`` applies (see _SCOPE_KEYS)
    path_params: tuple[Param, ...] = ()

    def allow(self) -> str:
        methods = set(self.methods) | ({"HEAD"} if self.head and "GET" in self.methods else set())
        return ", ".join(sorted(methods))


_SCOPE_KEYS: Final = {"api": "[http] allow_from",
                      "call_init": "[http] call_init_allow_from",
                      "remote_call": "[http] remote_call_allow_from",
                      "metrics": "[metrics] allow_from"}


def _from_allowed(client: str, networks: Sequence[Network]) -> bool:
    """Whether the client's address is in one of ``networks`` (an IPv4-mapped IPv6 address
    counts as its IPv4 address; no address at all is never allowed)."""
    try:
        address = ipaddress.ip_address(client.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _session_headers(request: _Incoming, cookie_name: str) -> dict[str, str]:
    """What another worker needs to take the same web session: its cookie, CSRF token and
    where the request came from (sessions are valid at every worker: a shared key). Not
    the Origin: this worker checked it, the other sees a request from here."""
    if request.authorization is not None or request.cookie is None:
        return {}
    headers = {"Cookie": f"{cookie_name}={request.cookie}"}
    if request.csrf is not None:
        headers["X-CSRF-Token"] = request.csrf
    if request.fetch_site is not None:
        headers["Sec-Fetch-Site"] = request.fetch_site
    return headers


def _same_origin(request: _Incoming) -> None:
    """A browser's ``Origin`` (sent with every POST, PUT, DELETE) must name this server:
    the ``Host`` it asked, or the ``X-Forwarded-Host`` of a proxy that rewrote it (a page
    of another site can set neither). Without an Origin (not a browser, or an old one)
    Sec-Fetch-Site and the CSRF token decide."""
    if request.origin is None:
        return
    origin = request.origin.strip()
    _scheme, sep, authority = origin.partition("://")
    hosts = {h.strip().lower() for h in (request.host, request.forwarded_host) if h}
    if not sep or authority.lower() not in {h.split(",")[0].strip() for h in hosts}:
        raise ApiError(403, "cross_site", "requests from other sites are refused (Origin "
                                          f"{_shown(origin)})")


def _full_book(failure: Failure) -> Failure:
    if isinstance(failure.value, ValueError):
        raise ApiError(422, "phonebook_full", str(failure.value))
    return failure


def _camara_reply(reply: _Reply, request: _Incoming) -> _Reply:
    """A reply on a CAMARA path: errors as CAMARA's ``{status, code, message}``, the
    request's ``x-correlator`` echoed (when it is one)."""
    body = reply.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        found = _CAMARA_PATHS.match(request.path)
        body = camara_error(reply.status, str(error.get("code", "")),
                            str(error.get("message", "")),
                            found.group("version") if found is not None else "v0.1rc1")
    headers = list(reply.headers)
    try:
        correlator = valid_correlator(request.correlator)
    except ApiError:
        correlator = None
    if correlator is not None:
        headers.append(("x-correlator", correlator))
    return _Reply(int(body["status"]) if isinstance(body, dict) and "status" in body
                  and isinstance(body.get("status"), int) else reply.status, body, headers)


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _target(request: _Incoming) -> str:
    """The request's path and query, as another worker is asked it."""
    if not request.query:
        return request.path
    return request.path + "?" + request.query.decode("latin-1")


def _from_worker(reply: WorkerReply) -> _Reply:
    if reply.status == 204:  # CAMARA's terminateCall: nothing to parse
        return _Reply(204, _Text("application/json", b""), list(reply.headers))
    try:
        body = json.loads(reply.body)
    except ValueError:
        log.error("another worker answered %d with a body that is not JSON", reply.status)
        return _Reply(502, _error_body("bad_worker_reply", "a worker answered nonsense"))
    return _Reply(reply.status, body, list(reply.headers))


def _worker_unavailable(failure: Failure, worker: int) -> _Reply:
    log.warning("worker %d could not be reached: %s", worker, failure.getErrorMessage())
    return _Reply(503, _error_body(
        "worker_unavailable",
        f"the worker process that answers this (worker {worker}) is restarting: try again"),
        [("Retry-After", "1")])


def _call_page(calls: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """``{"calls": [...], "next": ...}`` of calls newest first: the first ``limit`` and the
    others of the last one's millisecond; ``next`` is that millisecond (``before=`` for the
    next page) when there may be more, else null. Each worker's list is such a page too."""
    page = calls[:limit]
    if len(calls) < limit or not page:
        return {"calls": page, "next": None}
    last = page[-1].get("created_at")
    page.extend(c for c in calls[limit:] if c.get("created_at") == last)
    return {"calls": page, "next": last}


def _listed(reply: WorkerReply, name: str) -> list[dict[str, Any]] | None:
    """The list ``name`` in another worker's 200 answer (``{"calls": [...]}``); None for
    anything else."""
    if reply.status != 200:
        return None
    try:
        body = json.loads(reply.body)
    except ValueError:
        return None
    items = body.get(name) if isinstance(body, dict) else None
    if not isinstance(items, list):
        return None
    return [item for item in items if isinstance(item, dict)]


_COUNTS: Final = ("delivered", "failed_attempts", "given_up", "queued")


def _merged_deliveries(lists: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every worker's delivery status by target in one: counts summed, the latest times
    (ISO-8601 strings compare in time order) and that error."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for statuses in lists:
        for status in statuses:
            key = (str(status.get("webhook")), str(status.get("target")))
            into = merged.get(key)
            if into is None:
                merged[key] = dict(status)
                continue
            for count in _COUNTS:
                mine, theirs = into.get(count), status.get(count)
                if isinstance(mine, int) and isinstance(theirs, int):
                    into[count] = mine + theirs
            if str(status.get("last_delivered_at") or "") > str(
                    into.get("last_delivered_at") or ""):
                into["last_delivered_at"] = status.get("last_delivered_at")
            if str(status.get("last_error_at") or "") > str(into.get("last_error_at") or ""):
                into["last_error_at"] = status.get("last_error_at")
                into["last_error"] = status.get("last_error")
    return list(merged.values())


@dataclass(frozen=True, slots=True)
class ApiParts:
    """What the API answers with besides the call engine and the reloadable settings: the
    same for a worker's public site and the private one the other workers ask (a session
    or a link forwarded there must find what it found here)."""

    #: ``check_password(user, password, client address)``: a SIP user's credentials under
    #: the password-guessing limits (pbxnsip's ``auth=``, HTTP Basic, the page's sign-in);
    #: None: bearer tokens only
    check_password: Callable[[str, str, str], bool] | None = None
    links: Links | None = None  #: ``POST /v1/links`` and ``/c/<token>`` (sipdial.api.links)
    sessions: Sessions | None = None  #: the web page's sign-in (None: no page sessions)
    contact_book: ContactBook | None = None  #: the users' phonebooks (``/v1/contacts``)
    #: how numbers complete, now (``[numbers]`` is reloadable)
    number_plan: Callable[[], NumberPlan] = NumberPlan
    #: a user's SIP password now (a session ends when it changes)
    password_of: Callable[[str], str | None] | None = None
    #: whether a user is an administrator on the web page now (``[[users]] admin``)
    is_admin: Callable[[str], bool] | None = None


class _Router:
    """Maps an :class:`_Incoming` request to a :class:`_Reply` (possibly via a Deferred)."""

    def __init__(
        self,
        api: CallApi,
        tokens: Mapping[str, str],
        parts: ApiParts,
        events: bool = False,
        workers: OtherWorkers | None = None,
        allow_from: Mapping[str, Sequence[Network] | None] | None = None,
        metrics: _MetricsAccess | None = None,
        clock: Callable[[], float] = time.monotonic,
        camara_sinks: Sequence[str] = (),
    ) -> None:
        self._api = api
        self._password_of = parts.password_of
        self._is_admin = parts.is_admin or (lambda _user: False)
        self._sessions = parts.sessions
        self._book = parts.contact_book
        self._number_plan = parts.number_plan
        self._links = parts.links
        #: URL prefixes a user's token may name as a CAMARA sink ([camara] sinks)
        self._camara_sinks = tuple(camara_sinks)
        self._metrics = metrics
        self._clock = clock
        #: by route scope ("api", "call_init", "remote_call"): who may ask (None: anyone)
        self._allow_from = dict(allow_from or {})
        self._tokens = _Tokens(tokens)
        self._check_password = parts.check_password
        self._events = events
        self._workers = workers

    def reconfigure(self, tokens: Mapping[str, str],
                    allow_from: Mapping[str, Sequence[Network] | None],
                    metrics: _MetricsAccess | None, camara_sinks: Sequence[str] = ()) -> None:
        """A configuration reload: these tokens and networks from the next request on."""
        self._camara_sinks = tuple(camara_sinks)
        self._tokens = _Tokens(tokens)
        self._allow_from = dict(allow_from)
        self._metrics = metrics

    def handle(self, request: _Incoming) -> Deferred[_Reply]:
        """Always fires with a reply; errors become JSON error replies."""
        d = maybeDeferred(self._dispatch, request)
        d.addErrback(self._error_reply, request)
        if _CAMARA_PATHS.match(request.path):
            d.addCallback(_camara_reply, request)
        return d

    def _dispatch(self, request: _Incoming) -> Deferred[_Reply]:
        for route in _ROUTES:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            allowed = self._allow_from.get(route.scope)
            if allowed is not None and not _from_allowed(request.client, allowed):
                # before anything else, credentials above all: a guesser from elsewhere
                # gets no answer that depends on them
                raise ApiError(403, "forbidden_source",
                               f"requests from {_loggable(request.client) or 'here'} are not "
                               f"accepted here ({_SCOPE_KEYS[route.scope]})")
            method = request.method
            if method == "HEAD" and route.head:
                method = "GET"
            entry = route.methods.get(method)
            if entry is None:
                raise _HttpError(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed here; allowed: {route.allow()}",
                    [("Allow", route.allow())],
                )
            if request.body_too_large and method == "POST":  # only POSTs have bodies here
                raise ApiError(
                    413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes"
                )
            return entry.handler(self, request, match)
        raise ApiError(404, "not_found", f"no such resource: {_loggable(request.path)}")

    def _error_reply(self, failure: Failure, request: _Incoming) -> _Reply:
        error = failure.value
        if isinstance(error, ApiError) and 400 <= error.status <= 599:
            headers = error.headers
            return _Reply(error.status, _error_body(error.code, error.message), headers)
        log.error("unexpected error handling %s %s", request.method, _loggable(request.path),
                  exc_info=exc_info(failure))
        return _Reply(500, _error_body("internal", "internal server error"))

    # ---------------------------------------------------------------- authentication

    def _authenticate(self, request: _Incoming, *, basic: bool = False,
                      session: bool = False) -> _Principal:
        """Bearer (or Basic) credentials; with ``session``, also the web page's session
        cookie. Only the JSON API the page uses takes the cookie: a GET that places a call
        (a compatibility URL, /dial) must never be placed by a cookie a browser sends
        along with an <img> of another page."""
        if session and request.authorization is None and request.cookie is not None \
                and self._sessions is not None:
            return self._session_principal(request, self._sessions)
        if request.authorization is None:
            raise _unauthorized("missing credentials: auth=user:password, HTTP Basic or a "
                                "Bearer token" if basic else "missing bearer token", basic=basic)
        scheme, _, credentials = request.authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            principal = self._tokens.lookup(credentials)
            if principal is None:
                raise _unauthorized("unknown bearer token", basic=basic, invalid=True)
            return principal
        if scheme.lower() == "basic" and basic:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise _unauthorized("malformed basic credentials", basic=True) from None
            return self._sip_password(decoded, basic=True, client=request.client)
        raise _unauthorized("expected an Authorization: Bearer token", basic=basic)

    @property
    def cookie_name(self) -> str:
        """The session cookie's name (the resource reads it from each request)."""
        return self._sessions.cookie_name if self._sessions is not None else COOKIE

    def _session_principal(self, request: _Incoming, sessions: Sessions) -> _Principal:
        """A signed-in browser: its session, and for anything that changes something its
        CSRF token, never from another site."""
        assert request.cookie is not None
        session = sessions.check(request.cookie)
        if session is None or not self._still_valid(session, sessions):
            raise _unauthorized("the session has expired: sign in again")
        if request.fetch_site not in (None, "same-origin", "none"):
            raise ApiError(403, "cross_site", "requests from other sites are refused")
        if request.method not in ("GET", "HEAD"):
            _same_origin(request)
            if not sessions.csrf_ok(session, request.csrf):
                raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token")
        if self._admin(session) and session.user is not None:  # an administrator user
            return _Principal(user=None, proof="session", acting=session.user)
        return _Principal(user=session.user, proof="session")

    def _still_valid(self, session: Session, sessions: Sessions) -> bool:
        """The credentials the session was made with still hold (a reload may have removed
        the token or the user, or changed the password)."""
        if session.proof.startswith("token:"):
            return self._tokens.has(session.proof[6:], session.user)
        if session.user is None or not self._api.known_user(session.user):
            return False
        password = self._password_of(session.user) if self._password_of else None
        return password is not None and hmac.compare_digest(
            session.proof, sessions.password_proof(session.user, password))

    def _sip_password(self, user_password: str, *, basic: bool, client: str) -> _Principal:
        """Check ``"201[@domain]:password"`` against the SIP user's password.

        ``check_password(user, password, client)`` applies the password-guessing limits
        (:mod:`sipdial.guard`): while ``client`` or the user is locked out it says no without
        checking, and the answer is this same 401 a wrong password gets.
        """
        name, colon, password = user_password.partition(":")
        user = _strip_domain(name)
        if (
            not colon
            or not _USER.fullmatch(user)
            or self._check_password is None
            or not self._check_password(user, password, client)
        ):
            raise _unauthorized("wrong user name or password", basic=basic)
        return _Principal(user=user, proof="credentials")

    @staticmethod
    def _limit_to(principal: _Principal, user: str | None) -> str | None:
        """The user filter a principal may use: its own user unless it is an admin."""
        if principal.user is None:
            return user
        if user is not None and user != principal.user:
            raise _forbidden(principal, user)
        return principal.user

    # ---------------------------------------------------------------------- handlers

    def _create_call(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        principal = self._authenticate(request, session=True)
        call = _call_request_from_json(_parse_json(request.body))
        return self._start_call(request, principal, call)

    def _start_call(self, request: _Incoming, principal: _Principal,
                    call: _CallRequest) -> Deferred[_Reply]:
        if not principal.may_act_for(call.user):
            raise _forbidden(principal, call.user)
        if not self._api.known_user(call.user):
            raise ApiError(404, "unknown_user", f"no user {call.user}")
        d = self._api.create_call(
            user=call.user,
            to=call.to,
            device=call.device,
            auto_answer=call.auto_answer,
            mode=call.mode,
            confirm=call.confirm,
            caller_id=call.caller_id,
            clir=call.clir,
            metadata=call.metadata,
            refuse_if_busy=call.refuse_if_busy,
            headers=call.headers,
            first_leg=call.first_leg,
        )
        # the call exists now and the phone's INVITE is with the transport (the 201 waits
        # for the store): the "accepted" setup time, counted once the call is confirmed
        accepted = self._clock() - request.received

        def created(resource: dict[str, Any]) -> _Reply:
            if self._metrics is not None:
                self._metrics.port.call_accepted(accepted)
            location = "/v1/calls/" + quote(str(resource["id"]), safe="")
            return _Reply(201, resource, [("Location", location)])

        return d.addCallback(created)

    def _get_call(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        forwarded = self._at_owner(request, "GET", match.group("call_id"), session=True)
        if forwarded is not None:
            return forwarded
        principal = self._authenticate(request, session=True)
        d = self._owned_call(principal, match.group("call_id"))
        return d.addCallback(lambda resource: _Reply(200, resource))

    def _delete_call(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        call_id = match.group("call_id")
        forwarded = self._at_owner(request, "DELETE", call_id, session=True)
        if forwarded is not None:
            return forwarded
        principal = self._authenticate(request, session=True)
        d = self._owned_call(principal, call_id)
        d.addCallback(lambda _resource: self._api.hangup_call(call_id))
        return d.addCallback(lambda resource: _Reply(200, resource))

    def _at_owner(self, request: _Incoming, method: str, call_id: str,
                  session: bool = False) -> Deferred[_Reply] | None:
        """Another worker's call: that worker answers. The request is authenticated here
        first (the same tokens and users everywhere): a request without valid credentials
        costs no other worker anything; the owner checks them again, and the call's user."""
        workers = self._workers
        owner = workers.owner_of(call_id) if workers is not None else None
        if workers is None or owner is None:
            return None
        self._authenticate(request, session=session)
        d = workers.request(owner, method, _target(request), request.authorization,
                            _session_headers(request, self.cookie_name))
        return d.addCallbacks(_from_worker, _worker_unavailable, errbackArgs=(owner,))

    def _owned_call(self, principal: _Principal, call_id: str) -> Deferred[dict[str, Any]]:
        def check(resource: dict[str, Any] | None) -> dict[str, Any]:
            if resource is None:
                raise ApiError(404, "not_found", f"no call {call_id}")
            if not principal.may_act_for(resource.get("user")):
                raise ApiError(403, "forbidden", f"call {call_id} belongs to another user")
            return resource

        return self._api.get_call(call_id).addCallback(check)

    def _list_calls(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        principal = self._authenticate(request, session=True)
        query = _Query(request.query)
        user = query.text("user")
        if user is not None:
            _valid_user("user", user)
        state_text = query.text("state")
        state = None
        if state_text is not None:
            if state_text not in _STATES:
                raise _invalid("state: must be one of " + ", ".join(_STATES))
            state = _STATES[state_text]
        limit_text = query.text("limit")
        limit = _LIMIT_DEFAULT
        if limit_text is not None:
            limit = int(limit_text) if limit_text.isascii() and limit_text.isdigit() else 0
            if not 1 <= limit <= _LIMIT_MAX:
                raise _invalid(f"limit: must be an integer from 1 to {_LIMIT_MAX}")
        direction_text = query.text("direction")
        direction = None
        if direction_text is not None:
            if direction_text not in _DIRECTIONS:
                raise _invalid("direction: must be inbound or outbound")
            direction = _DIRECTIONS[direction_text]
        missed_text = query.text("missed")
        if missed_text is not None and missed_text.lower() not in _FLAGS:
            raise _invalid("missed: must be true or false")
        missed = missed_text is not None and _FLAGS[missed_text.lower()]
        since, before = query.time("since"), query.time("before")
        d = self._api.list_calls(user=self._limit_to(principal, user), state=state, limit=limit,
                                 direction=direction, missed=missed, since=since, before=before)
        if self._workers is None or not self._workers.others():
            return d.addCallback(lambda calls: _Reply(200, _call_page(calls, limit)))
        return self._list_everywhere(request, d, self._workers, limit)

    def _list_everywhere(self, request: _Incoming, here: Deferred[list[dict[str, Any]]],
                         workers: OtherWorkers, limit: int) -> Deferred[_Reply]:
        """This worker's calls and every other worker's, newest first, ``limit`` in all.
        A worker that cannot answer (restarting) is named in ``unavailable_workers``."""
        others = list(workers.others())
        asked: list[Deferred[Any]] = [here] + [
            workers.request(w, "GET", _target(request), request.authorization,
                            _session_headers(request, self.cookie_name)) for w in others]

        def merge(results: list[tuple[bool, Any]]) -> _Reply:
            ok, local = results[0]
            if not ok:
                return _Reply(500, _error_body("internal", "internal server error"))
            calls: list[dict[str, Any]] = list(local)
            unavailable: list[int] = []
            for worker, (ok, answer) in zip(others, results[1:], strict=True):
                listed = _listed(answer, "calls") if ok else None
                if listed is None:
                    unavailable.append(worker)
                else:
                    calls.extend(listed)
            calls.sort(key=lambda c: (str(c.get("created_at", "")), str(c.get("id", ""))),
                       reverse=True)
            body = _call_page(calls, limit)
            if unavailable:
                log.warning("GET /v1/calls: worker(s) %s did not answer: listed without them",
                            unavailable)
                body["unavailable_workers"] = unavailable
            return _Reply(200, body)

        return DeferredList(asked, consumeErrors=True).addCallback(merge)

    def _list_registrations(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        principal = self._authenticate(request, session=True)
        user = _Query(request.query).text("user")
        if user is not None:
            _valid_user("user", user)
        registrations = self._api.list_registrations(self._limit_to(principal, user))
        return succeed(_Reply(200, {"registrations": registrations}))

    def _event_stream(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``GET /v1/events[?user=][&last_event_id=]``; ``Last-Event-ID`` wins over the query."""
        if not self._events:
            raise ApiError(404, "not_found", f"no such resource: {_loggable(request.path)}")
        principal = self._authenticate(request, session=True)
        query = _Query(request.query)
        user = query.text("user")
        if user is not None:
            _valid_user("user", user)
        after_text = request.last_event_id
        name = "Last-Event-ID"
        if after_text is None:
            after_text, name = query.text("last_event_id"), "last_event_id"
        after: int | tuple[int, ...] | None = None
        if after_text is not None and after_text.strip() != "":
            after_text = after_text.strip()
            if after_text.isascii() and after_text.isdigit() and len(after_text) <= 18:
                after = int(after_text)
            elif (cursor := parse_cursor(after_text, after_text.count(".") + 1)) is not None:
                # every worker's position (sipdial.events.merged); one of another number of
                # workers (a restart with more or fewer) is resumed from its lowest entry
                after = cursor
            else:
                raise _invalid(f"{name}: must be an event id (a non-negative integer) or "
                               "a cursor of them joined by '.'")
        def allowed() -> bool:
            try:
                return self._authenticate(request, session=True) == principal
            except ApiError:
                return False

        stream = _OpenEventStream(user=self._limit_to(principal, user), after=after,
                                  allowed=allowed)
        return succeed(_Reply(200, stream))

    def _metrics_text(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``GET /metrics``: this process's metrics; with workers every worker's, each
        sample labelled with its worker (one that does not answer is left out, and named
        in ``sipdial_metrics_unavailable_workers``)."""
        access = self._metrics
        if access is None:
            raise ApiError(404, "not_found", f"no such resource: {_loggable(request.path)}")
        self._metrics_principal(request, access)
        here = access.port.exposition()
        workers = self._workers
        if workers is None or not workers.others() or access.internal_token is None:
            return succeed(_Reply(200, _Text(METRICS_CONTENT_TYPE, here)))
        others = list(workers.others())
        asked = [workers.request(w, "GET", "/metrics", "Bearer " + access.internal_token)
                 for w in others]
        index = workers.index()

        def merged(results: list[tuple[bool, Any]]) -> _Reply:
            texts = {index: here.decode("utf-8")}
            missing: list[int] = []
            for worker, (ok, answer) in zip(others, results, strict=True):
                if ok and answer.status == 200:
                    texts[worker] = answer.body.decode("utf-8", "replace")
                else:
                    missing.append(worker)
            try:
                data = merge_metrics(texts)
            except ValueError:
                log.exception("GET /metrics: a worker's metrics did not parse")
                data, missing = merge_metrics({index: texts[index]}), others
            if missing:
                log.warning("GET /metrics: worker(s) %s did not answer", missing)
            gauge = ("# HELP sipdial_metrics_unavailable_workers Workers whose metrics are "
                     "missing from this scrape\n# TYPE sipdial_metrics_unavailable_workers "
                     f"gauge\nsipdial_metrics_unavailable_workers {len(missing)}.0\n")
            return _Reply(200, _Text(METRICS_CONTENT_TYPE, data + gauge.encode()))

        return DeferredList(asked, consumeErrors=True).addCallback(merged)

    def _metrics_principal(self, request: _Incoming, access: _MetricsAccess) -> None:
        """The [metrics] token, an admin token, a worker's internal token, or nothing where
        ``allow_from`` alone guards the scrape."""
        if access.open and request.authorization is None:
            return
        if request.authorization is not None:
            scheme, _, given = request.authorization.strip().partition(" ")
            given = given.strip()
            if scheme.lower() == "bearer" and given:
                for token in (access.token, access.internal_token):
                    if token is not None and hmac.compare_digest(given.encode(),
                                                                 token.encode()):
                        return
        principal = self._authenticate(request)
        if principal.user is not None:
            raise ApiError(403, "forbidden", "only the [metrics] token or an administrator "
                                             "token may read the metrics")

    # ------------------------------------------------------------ links and /dial

    def _require_links(self, request: _Incoming) -> Links:
        if self._links is None:
            raise ApiError(404, "not_configured", "call links are not configured ([links])")
        return self._links

    def _create_link(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``POST /v1/links {"user", "to", "ttl"?}`` -> 201 ``{token, path, url, ...}``."""
        links = self._require_links(request)
        principal = self._authenticate(request)
        payload = _parse_json(request.body)
        if not isinstance(payload, dict):
            raise _invalid("body: must be a JSON object")
        unknown = sorted(set(payload) - set(schema.LINK_REQUEST["properties"]))
        if unknown:
            raise _invalid(f"{_field_name(unknown[0])}: unknown field")
        user = _valid_user("user", payload.get("user"))
        to = _valid_destination("to", payload.get("to"))
        ttl = payload.get("ttl", links.default_ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 60 <= ttl <= links.max_ttl:
            raise _invalid(f"ttl: must be whole seconds from 60 to {links.max_ttl}")
        if not principal.may_act_for(user):
            raise _forbidden(principal, user)
        if not self._api.known_user(user):
            raise ApiError(404, "unknown_user", f"no user {user}")
        token, link = links.issue(user, to, ttl)
        path = "/c/" + token
        return succeed(_Reply(201, {
            "token": token, "path": path,
            "url": None if links.base_url is None else links.base_url + path,
            "user": link.user, "to": link.to, "expires_at": iso_time(link.expires_at),
        }, [("Location", path)]))

    def _open_link(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``GET /c/<token>``: what the link does (a page with a button; with ``[links]
        one_click`` the call); ``POST``: the call, once. The link's own worker answers."""
        links = self._require_links(request)
        try:
            link = links.check(match.group("token"))  # forged or expired: no worker asked
        except ApiError as exc:
            if "text/html" not in request.accept:
                raise
            reply = _Reply(exc.status, _error_body(exc.code, exc.message))
            return succeed(_as_page(reply, error_page(exc.message, request.language)))
        place = request.method == "POST" or links.one_click
        owner = self._link_owner(link.nonce)
        d: Deferred[_Reply]
        if owner is not None and self._workers is not None:
            asked = self._workers.request(owner, request.method, request.path, None)
            d = asked.addCallbacks(_from_worker, _worker_unavailable, errbackArgs=(owner,))
        else:
            d = maybeDeferred(self._link_here, request, link, place)
            d.addErrback(self._error_reply, request)
        if "text/html" in request.accept:
            d.addCallback(_link_page, link, request.language)
        return d

    def _link_owner(self, nonce: str) -> int | None:
        """The other worker that answers for a link (None: this one). A link's nonce names
        its issuing worker; one issued before the number of workers changed (a worker index
        no longer there, or a single process's random prefix) goes to a worker chosen by its
        hash: every worker agrees, so it is still used once."""
        workers = self._workers
        if workers is None or not workers.others():
            return None
        count = len(workers.others()) + 1
        try:
            index = int(nonce[:2], 16)
        except ValueError:
            index = count
        if index >= count:
            index = zlib.crc32(nonce.encode("utf-8", "replace")) % count
        return None if index == workers.index() else index

    def _link_here(self, request: _Incoming, link: Link, place: bool) -> Deferred[_Reply]:
        links = self._require_links(request)
        if links.used(link):
            raise ApiError(410, "link_used", "this link has been used: it places one call")
        if not place:
            return succeed(_Reply(200, {"user": link.user, "to": link.to,
                                        "expires_at": iso_time(link.expires_at),
                                        "used": False}))
        links.reserve(link)  # a second POST meanwhile is 410, not a second call
        d = maybeDeferred(self._start_call, request, _Principal(user=link.user, proof="link"),
                          _CallRequest(user=link.user, to=link.to))

        def placed(reply: _Reply) -> _Reply:
            links.commit(link)
            return reply

        def refused(failure: Failure) -> Failure:
            links.release(link)  # not placed (not registered, overloaded): usable again
            return failure

        return d.addCallbacks(placed, refused)

    def _dial(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``GET /dial?to=...[&user=]``, for CRMs that can only open a URL: a Bearer token
        (header, or ``token=``) or ``auth=user:password`` (the SIP account). Not HTTP Basic:
        a browser keeps Basic credentials, and any web page could then place calls with an
        ``<img src=".../dial?to=...">``."""
        query = _Query(request.query)
        token, auth = query.text("token"), query.text("auth")
        if request.authorization is None and token is None and auth is None \
                and self._sessions is not None and "text/html" in request.accept:
            return self._dial_in_browser(request, self._sessions)
        if request.authorization is None and token is not None:
            principal = self._tokens.lookup(token)
            if principal is None:
                raise _unauthorized("unknown token", invalid=True)
        elif request.authorization is None and auth is not None:
            principal = self._sip_password(auth, basic=False, client=request.client)
        else:
            principal = self._authenticate(request)
        user = query.text("user") or principal.user
        if user is None:
            raise _invalid("user: is required with an administrator token")
        call = _CallRequest(user=_valid_user("user", _strip_domain(user)),
                            to=_valid_destination("to", query.required("to", number=True)))
        d = self._start_call(request, principal, call)
        if "text/html" in request.accept:
            d.addErrback(self._error_reply, request)
            d.addCallback(_dial_page, request.language)
        return d

    def _dial_post(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``POST /dial``: the confirmation page's form (the session and its CSRF token)."""
        return self._dial_in_browser(request, self._require_sessions())

    def _dial_in_browser(self, request: _Incoming, sessions: Sessions) -> Deferred[_Reply]:
        """``/dial?to=`` opened by the browser (its ``tel:`` handler): GET asks on a page,
        its form POSTs back with the session's CSRF token and places the call. Without a
        session: a page that signs in first."""
        if request.method == "POST":
            form = _Query(request.body)
            to = form.required("to", number=True)
            request = replace(request, csrf=form.text("csrf"))
        else:
            to = _Query(request.query).required("to", number=True)
        destination = _valid_destination("to", to)
        session = sessions.check(request.cookie) if request.cookie else None
        if session is None and request.method != "POST":
            # (a tel: link clicked on another site: no Strict cookie comes along) the page
            # itself, signed in or after signing in, asks and dials
            return succeed(_Reply(303, _Text("text/plain; charset=utf-8", b""),
                                  [("Location", "/#dial=" + quote(destination, safe=""))]))
        if session is None:
            return succeed(_as_page(_Reply(401, {}),
                                    sign_in_page(destination, request.language)))
        if request.method != "POST":
            return succeed(_as_page(_Reply(200, {}), dial_confirm_page(
                destination, sessions.csrf(session), request.language)))
        try:
            principal = self._session_principal(request, sessions)
            user = principal.user or principal.acting  # an administrator user: own phone
            if user is None:
                raise _invalid("an administrator's session dials on the page, for a user")
        except ApiError as exc:  # a person reads this: a page, not JSON
            return succeed(_as_page(_Reply(exc.status, _error_body(exc.code, exc.message)),
                                    error_page(exc.message, request.language)))
        d = self._start_call(request, principal, _CallRequest(user=user, to=destination))
        d.addErrback(self._error_reply, request)
        return d.addCallback(_dial_page, request.language)

    # ------------------------------------------------------------ CAMARA ClickToDial

    def _camara_create(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``createCall``: see :mod:`sipdial.api.camara`."""
        valid_correlator(request.correlator)
        principal = self._authenticate(request)
        call = parse_create(_parse_json(request.body), check_e164, time.time())
        if call.sink is not None and (principal.user is not None or self._camara_sinks) \
                and not any(call.sink.startswith(p) for p in self._camara_sinks):
            # (an admin token may name any sink only while [camara] sinks is not set)
            raise ApiError(403, "PERMISSION_DENIED", "sink: not under [camara] sinks")
        local = self._api.user_by_number(call.caller)
        if local is not None:  # the caller is a user: their phones ring
            if not principal.may_act_for(local):
                raise ApiError(403, "INVALID_TOKEN_CONTEXT",
                               "caller is not consistent with access token")
            user, first_leg = local, None
        elif principal.user is not None:  # rung first through a route, for the user
            user, first_leg = principal.user, call.caller
        else:
            raise ApiError(422, "CALLER_NOT_AVAILABLE",
                           "the caller is no user's number: an external caller is rung on "
                           "behalf of a user (use that user's token)")
        # bridge mode: a REFERred call leaves sipdial's view once transferred, and CAMARA
        # reports until the end (disconnected, callDuration) and terminates on DELETE
        d = self._api.create_call(
            user=user, to=call.callee, device=None, auto_answer=None, mode=Mode.BRIDGE,
            first_leg=first_leg, caller_number=call.caller,
            sink=(call.sink, call.sink_token) if call.sink is not None else None)
        return d.addCallback(lambda resource: _Reply(201, camara_view(resource, call.caller)))

    def _camara_call(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``getCall`` and ``terminateCall``; another worker's call is answered there."""
        valid_correlator(request.correlator)
        call_id = match.group("call_id")
        if re.fullmatch(_CALL_ID, call_id) is None:
            raise ApiError(400, "INVALID_ARGUMENT", "callId: 1-128 of A-Z a-z 0-9 . _ ~ -")
        forwarded = self._at_owner(request, request.method, call_id)
        if forwarded is not None:
            return forwarded
        principal = self._authenticate(request)
        d = self._owned_call(principal, call_id)
        if request.method == "GET":
            return d.addCallback(lambda resource: _Reply(200, self._camara_view(resource)))

        def terminate(resource: dict[str, Any]) -> Deferred[_Reply]:
            if resource.get("state") == CallState.ENDED.value:
                raise ApiError(409, "CONFLICT", f"call {call_id} has already ended")
            hung_up = self._api.hangup_call(call_id)
            return hung_up.addCallback(lambda _r: _Reply(204, _Text("application/json", b"")))

        return d.addCallback(terminate)

    def _camara_recording(self, request: _Incoming,
                          match: re.Match[str]) -> Deferred[_Reply]:
        valid_correlator(request.correlator)
        if re.fullmatch(_CALL_ID, match.group("call_id")) is None:
            raise ApiError(400, "INVALID_ARGUMENT", "callId: 1-128 of A-Z a-z 0-9 . _ ~ -")
        principal = self._authenticate(request)
        d = self._owned_call(principal, match.group("call_id"))

        def none(_resource: dict[str, Any]) -> _Reply:
            raise ApiError(404, "NOT_FOUND", "no recording: sipdial does not record calls")

        return d.addCallback(none)

    def _camara_view(self, resource: dict[str, Any]) -> dict[str, Any]:
        caller = resource.get("caller") or self._api.user_number(str(resource.get("user")))
        return camara_view(resource, caller)

    # ------------------------------------------------------------ the web page

    def _sign_in(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``POST /v1/session``: the SIP account's id and password, or an ``[api]`` token."""
        sessions = self._require_sessions()
        if request.fetch_site not in (None, "same-origin", "none"):
            raise ApiError(403, "cross_site", "requests from other sites are refused")
        _same_origin(request)
        # a form of another site cannot send JSON (that needs CORS, which sipdial never
        # grants): no signing a browser into someone else's account (login CSRF)
        if request.content_type.partition(";")[0].strip() != "application/json":
            raise ApiError(415, "unsupported_media_type",
                           "Content-Type: must be application/json")
        payload = _parse_json(request.body)
        if not isinstance(payload, dict):
            raise _invalid("body: must be a JSON object")
        token = payload.get("token")
        if isinstance(token, str) and token:
            principal = self._tokens.lookup(token)
            if principal is None:
                raise _unauthorized("unknown token", invalid=True)
            proof = _Tokens.proof(token)
        else:
            user, password = payload.get("user"), payload.get("password")
            if not isinstance(user, str) or not isinstance(password, str):
                raise _invalid("user and password (or token): required")
            principal = self._sip_password(f"{user}:{password}", basic=False,
                                           client=request.client)
            assert principal.user is not None
            proof = sessions.password_proof(principal.user, password)
        value, session = sessions.issue(principal.user, proof)
        cookie = sessions.set_cookie(value, tls=request.secure)
        return succeed(_Reply(201, {"user": principal.user, "admin": self._admin(session),
                                    "csrf": sessions.csrf(session),
                                    "expires_at": iso_time(session.expires_at)},
                              [("Set-Cookie", cookie)]))

    def _admin(self, session: Session) -> bool:
        """An admin token's session, or a ``[[users]] admin`` account's signed in with its
        password (not with a token of that user: a CRM's user token stays a user's)."""
        if session.user is None:
            return True
        return session.proof.startswith("pw:") and self._is_admin(session.user)

    def _who(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``GET /v1/session``: the signed-in user and the CSRF token (the page reloaded)."""
        sessions = self._require_sessions()
        session = sessions.check(request.cookie) if request.cookie else None
        if session is None or not self._still_valid(session, sessions):
            raise _unauthorized("not signed in")
        return succeed(_Reply(200, {"user": session.user, "admin": self._admin(session),
                                    "csrf": sessions.csrf(session),
                                    "expires_at": iso_time(session.expires_at)}))

    def _sign_out(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        cookie = self._require_sessions().clear_cookie()
        return succeed(_Reply(200, {"signed_out": True}, [("Set-Cookie", cookie)]))

    # ------------------------------------------------------------ the phonebook

    def _require_book(self) -> ContactBook:
        if self._book is None:
            raise ApiError(404, "not_found", "no phonebook here")
        return self._book

    def _contact_owner(self, principal: _Principal, wanted: object) -> str:
        """Whose contact a new one is: a user's own; an administrator's ``owner`` (a user
        id, default "*": everyone's)."""
        if principal.user is not None:
            if wanted not in (None, principal.user):
                raise _forbidden(principal, str(wanted))
            return principal.user
        if wanted is None and principal.acting is not None:
            return principal.acting  # an administrator user's own, unless they say "*"
        if wanted is None or wanted == "*":
            return "*"
        return _valid_user("owner", wanted)

    def _contact_fields(self, payload: object) -> tuple[str, list[str], list[str], str | None]:
        if not isinstance(payload, dict):
            raise _invalid("body: must be a JSON object")
        unknown = sorted(set(payload) - {"name", "numbers", "url", "owner"})
        if unknown:
            raise _invalid(f"{_field_name(unknown[0])}: unknown field")
        name = _valid_text("name", payload.get("name"), limit=200)
        if name is None:
            raise _invalid("name: is required")
        numbers = payload.get("numbers")
        if not isinstance(numbers, list) or not 1 <= len(numbers) <= 10:
            raise _invalid("numbers: 1 to 10 numbers")
        keys = []
        for number in numbers:
            text = _valid_text("numbers", number, limit=64)
            key = number_key(text or "", self._number_plan())
            if key is None:
                raise ApiError(422, "invalid_number", f"numbers: {_shown(str(number))} is "
                                                      "no phone number")
            keys.append(key)
        url = payload.get("url")
        if url is not None and (not isinstance(url, str) or len(url) > 2048
                                or re.fullmatch(r"https?://\S+", url) is None):
            raise _invalid("url: must be an http(s) URL")
        return name, [str(n) for n in numbers], keys, url

    def _list_contacts(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        book = self._require_book()
        principal = self._authenticate(request, session=True)
        query = _Query(request.query)
        text = query.text("q") or ""
        if len(text) > 64:
            raise _invalid("q: at most 64 characters")
        limit_text, offset_text = query.text("limit"), query.text("offset")
        for text_value in (limit_text, offset_text):
            if text_value is not None and not (text_value.isascii() and text_value.isdigit()
                                               and len(text_value) <= 7):
                raise _invalid(f"limit: 1 to {_LIMIT_MAX}; offset: 0 to 1000000")
        limit = int(limit_text) if limit_text else _LIMIT_DEFAULT
        offset = int(offset_text) if offset_text else 0
        if not 1 <= limit <= _LIMIT_MAX or offset > 10**6:
            raise _invalid(f"limit: 1 to {_LIMIT_MAX}; offset: 0 to 1000000")
        owner = principal.user if principal.user is not None else query.text("owner")
        d = book.search(owner, text, limit, offset)
        return d.addCallback(lambda found: _Reply(200, {
            "contacts": [c.to_json() for c in found]}))

    def _add_contact(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        book = self._require_book()
        principal = self._authenticate(request, session=True)
        payload = _parse_json(request.body)
        name, numbers, keys, url = self._contact_fields(payload)
        owner = self._contact_owner(principal, payload.get("owner")
                                    if isinstance(payload, dict) else None)
        d = book.add(owner, [(name, numbers, keys, url)])
        d.addErrback(_full_book)
        return d.addCallback(lambda ids: _Reply(201, {"id": ids[0], "owner": owner,
                                                      "name": name, "numbers": numbers,
                                                      "url": url}))

    def _import_contacts(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``POST /v1/contacts/import``: the body is a CSV (header row) or vCard file."""
        book = self._require_book()
        principal = self._authenticate(request, session=True)
        owner = self._contact_owner(principal, _Query(request.query).text("owner"))
        try:
            entries = entries_of(request.body.decode("utf-8-sig"), "the file")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_file", "the file is not UTF-8 text") from None
        except PhonebookError as exc:
            raise ApiError(422, "invalid_file", str(exc)) from None
        rows = []
        plan = self._number_plan()
        for contact, numbers in entries:
            keyed = [(n, k) for n in numbers if (k := number_key(n, plan)) is not None]
            if keyed:
                rows.append((contact.name, [n for n, _ in keyed][:10],
                             [k for _, k in keyed][:10], contact.url))
        d = book.add(owner, rows)
        d.addErrback(_full_book)
        return d.addCallback(lambda ids: _Reply(201, {"imported": len(ids),
                                                      "skipped": len(entries) - len(ids)}))

    def _change_contact(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        book = self._require_book()
        principal = self._authenticate(request, session=True)
        contact_id = int(match.group("contact_id"))
        if request.method == "DELETE":
            d = book.delete(contact_id, principal.user)
            body: dict[str, object] = {"id": contact_id, "deleted": True}
        else:
            name, numbers, keys, url = self._contact_fields(_parse_json(request.body))
            d = book.update(contact_id, principal.user, name, numbers, keys, url)
            body = {"id": contact_id, "name": name, "numbers": numbers, "url": url}

        def done(found: bool) -> _Reply:
            if not found:
                raise ApiError(404, "not_found", f"no contact {contact_id}")
            return _Reply(200, body)

        return d.addCallback(done)

    def _require_sessions(self) -> Sessions:
        if self._sessions is None:
            raise ApiError(404, "not_found", "no web sessions here")
        return self._sessions

    def _page(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """``GET /`` and ``/static/<name>``: the web page's files (in the package)."""
        name = match.groupdict().get("name") or "index.html"
        found = static_file(name)
        if found is None:
            raise ApiError(404, "not_found", f"no such file: {_loggable(name)}")
        content_type, data = found
        return succeed(_Reply(200, _Text(content_type, data), list(PAGE_HEADERS_APP)))

    def _openapi(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        return succeed(_Reply(200, _openapi_text()))

    def _health(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        return succeed(_Reply(200, self._api.health()))

    def _upstream(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """sipdial's own registration at the ``[upstream]`` registrar (administrators)."""
        principal = self._authenticate(request)
        if principal.user is not None:
            raise ApiError(403, "forbidden", "only an administrator token may read this")
        primary = self._workers.primary() if self._workers is not None else None
        if self._workers is not None and primary is not None:  # worker 0 registers there
            d = self._workers.request(primary, "GET", _target(request), request.authorization)
            return d.addCallbacks(_from_worker, _worker_unavailable, errbackArgs=(primary,))
        upstream = self._api.upstream_status()
        if upstream is None:
            raise ApiError(404, "not_configured", "no [upstream] registrar is configured")
        return succeed(_Reply(200, upstream))

    def _webhooks(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """How webhook deliveries went, by target, summed over the workers (administrators;
        the page's admin view)."""
        principal = self._authenticate(request, session=True)
        if principal.user is not None:
            raise ApiError(403, "forbidden", "only an administrator may read this")
        here = self._api.webhook_status()
        workers = self._workers
        others = list(workers.others()) if workers is not None else []
        if workers is None or not others:
            return succeed(_Reply(200, {"webhooks": here}))
        asked = [workers.request(w, "GET", _target(request), request.authorization,
                                 _session_headers(request, self.cookie_name)) for w in others]

        def merge(results: list[tuple[bool, Any]]) -> _Reply:
            lists = [here]
            unavailable: list[int] = []
            for worker, (ok, answer) in zip(others, results, strict=True):
                theirs = _listed(answer, "webhooks") if ok else None
                if theirs is None:
                    unavailable.append(worker)
                else:
                    lists.append(theirs)
            body: dict[str, Any] = {"webhooks": _merged_deliveries(lists)}
            if unavailable:
                body["unavailable_workers"] = unavailable
            return _Reply(200, body)

        return DeferredList(asked, consumeErrors=True).addCallback(merge)

    def _locaphone_call_init(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """LocaPhone ``call-init.php?user=&to=[&cidnum=][&clir=1]``; ``from`` and ``prv`` are
        accepted and ignored. ``cidnum`` is the number shown to the target and ``clir=1``
        hides it, both only meaningful in bridge mode (the engine's default mode applies)."""
        principal = self._authenticate(request)
        query = _Query(request.query)
        cidnum = query.text("cidnum")
        if cidnum is not None and re.fullmatch(r"\+?[0-9]{1,20}", cidnum) is None:
            raise _invalid("cidnum: must be a number")
        clir = query.text("clir")
        call = _CallRequest(
            user=_valid_user("user", query.required("user")),
            to=_valid_destination("to", query.required("to", number=True)),
            caller_id=cidnum,
            clir=None if clir is None else clir in ("1", "true", "yes"),
        )
        return self._start_call(request, principal, call)

    def _pbxnsip_remote_call(self, request: _Incoming, match: re.Match[str]) -> Deferred[_Reply]:
        """pbxnsip ``remote_call.htm?user=&dest=[&auth=id:password][&connect=true]``.

        Authenticated by a Bearer token, by ``auth`` (the SIP user's own credentials, like
        pbxnsip) or by HTTP Basic with those credentials (pbxnsip's challenge for links
        without ``auth``). pbxnsip always asks the user to press 1 first; ``connect=true``
        skips that confirmation (``confirm: false``).
        """
        query = _Query(request.query)
        auth = query.text("auth")
        if request.authorization is None and auth is not None:
            principal = self._sip_password(auth, basic=True, client=request.client)
        else:
            principal = self._authenticate(request, basic=True)
        connect = query.text("connect")
        if connect is not None and connect.lower() not in _FLAGS:
            raise _invalid("connect: must be true or false")
        call = _CallRequest(
            user=_valid_user("user", _strip_domain(query.required("user"))),
            to=_valid_destination("dest", query.required("dest", number=True)),
            confirm=True if connect is None else not _FLAGS[connect.lower()],
        )
        return self._start_call(request, principal, call)


_CALL_ERRORS: Final = (400, 401, 403, 404, 409, 413, 422, 429, 503)
_USER_SCHEMA: Final = {"type": "string", "pattern": schema.USER_PATTERN}
_USER_PARAM: Final = Param("user", _USER_SCHEMA, "only this user's (a user token: its own)")
_CALL_ID_PARAM: Final = Param("call_id", {"type": "string",
                                          "pattern": schema.CALL_ID_PATTERN})
_CREATED: Final = Reply(201, "the call is placed: its resource (it rings the user's phone "
                        "first)", "Call", headers=("Location",),
                        links=(("GetCall", "getCall", "call_id", "$response.body#/id"),
                               ("HangUpCall", "hangUpCall", "call_id", "$response.body#/id")))
_COMPAT: Final = "compatibility"
_CAMARA_PATHS: Final = re.compile(CAMARA_PATH)
_CAMARA: Final = "CAMARA ClickToDial"
_CAMARA_ID: Final = Param("call_id", {"type": "string", "pattern": schema.CALL_ID_PATTERN})
_LINK_ERRORS: Final = (403, 404, 409, 410, 413, 422, 429, 502, 503)

_ROUTES: Final[tuple[_Route, ...]] = (
    _Route(
        re.compile("/v1/calls"),
        {"GET": _Method(_Router._list_calls, Operation(
            "listCalls", "The latest calls, newest first",
            (Reply(200, "the calls", "CallList"),), (400, 401, 403, 422),
            params=(_USER_PARAM,
                    Param("state", {"type": "string", "enum": list(_STATES)}),
                    Param("direction", {"type": "string", "enum": list(_DIRECTIONS)},
                          "outbound (click-to-dial) or inbound (from [[trunks]])"),
                    Param("limit", {"type": "integer", "minimum": 1,
                                    "maximum": _LIMIT_MAX},
                          f"at most this many (default {_LIMIT_DEFAULT}), and the other "
                          "calls of the last one's millisecond"),
                    Param("missed", {"type": "string", "enum": list(_FLAGS)},
                          "true: missed calls only (click-to-dial calls the user's phone "
                          "rang out for, inbound calls never answered)"),
                    Param("since", {"type": "string", "format": "date-time"},
                          "calls created at or after this time (RFC 3339, with offset)"),
                    Param("before", {"type": "string", "format": "date-time"},
                          "calls created before this time: the previous page's next")),
            auth=Auth.BEARER_OR_SESSION, tags=("calls",))),
         "POST": _Method(_Router._create_call, Operation(
             "createCall", "Start a click-to-dial call", (_CREATED,), _CALL_ERRORS,
             body="CallRequest", auth=Auth.BEARER_OR_SESSION, tags=("calls",)))},
        "/v1/calls",
    ),
    _Route(
        re.compile(f"/v1/calls/(?P<call_id>{_CALL_ID})"),
        {"GET": _Method(_Router._get_call, Operation(
            "getCall", "One call with its events", (Reply(200, "the call", "Call"),),
            (401, 403, 404, 502, 503), auth=Auth.BEARER_OR_SESSION, tags=("calls",))),
         "DELETE": _Method(_Router._delete_call, Operation(
             "hangUpCall", "Cancel or hang up the call at any stage (cause cancelled)",
             (Reply(200, "the call as it is now", "Call"),), (401, 403, 404, 502, 503),
             auth=Auth.BEARER_OR_SESSION, tags=("calls",)))},
        "/v1/calls/{call_id}",
        path_params=(_CALL_ID_PARAM,),
    ),
    _Route(re.compile("/v1/registrations"), {"GET": _Method(
        _Router._list_registrations, Operation(
            "listRegistrations", "Registered devices",
            (Reply(200, "the registered contacts", "RegistrationList"),),
            (400, 401, 403, 422), params=(_USER_PARAM,), auth=Auth.BEARER_OR_SESSION,
            tags=("registrations",)))},
        "/v1/registrations"),
    _Route(re.compile("/v1/events"), {"GET": _Method(_Router._event_stream, Operation(
        "streamEvents", "Server-Sent Events of call state changes (docs/events.md)",
        (Reply(200, "an endless event stream", content_type="text/event-stream"),),
        (400, 401, 403, 404, 422),
        params=(_USER_PARAM,
                Param("last_event_id", {"type": "string"},
                      "resume after this event id or cursor (the Last-Event-ID header "
                      "wins)")),
        auth=Auth.BEARER_OR_SESSION, tags=("events",)))}, "/v1/events", head=False),
    _Route(re.compile("/healthz"), {"GET": _Method(_Router._health, Operation(
        "health", "Liveness and a few counts", (Reply(200, "running", "Health"),), (403,),
        auth=Auth.NONE, tags=("operations",)))}, "/healthz"),
    _Route(re.compile("/metrics"), {"GET": _Method(_Router._metrics_text, Operation(
        "metrics", "Prometheus metrics ([metrics] token or an admin token)",
        (Reply(200, "the text exposition format 0.0.4",
               content_type="text/plain; version=0.0.4; charset=utf-8"),),
        (401, 403, 404), tags=("operations",)))}, "/metrics", scope="metrics"),
    _Route(re.compile("/openapi.json"), {"GET": _Method(_Router._openapi, Operation(
        "openapi", "This document", (Reply(200, "OpenAPI 3.1"),), (403,), auth=Auth.NONE,
        tags=("operations",)))}, "/openapi.json"),
    _Route(re.compile("/v1/links"), {"POST": _Method(_Router._create_link, Operation(
        "createLink", "A signed single-use link that places a call ([links])",
        (Reply(201, "the link: open its path (or url) to place the call", "Link",
               headers=("Location",)),),
        (400, 401, 403, 404, 413, 422), body="LinkRequest", tags=("links",)))},
        "/v1/links"),
    _Route(re.compile(f"/c/(?P<token>[A-Za-z0-9_.-]{{1,{MAX_TOKEN_LENGTH}}})"), {
        "GET": _Method(_Router._open_link, Operation(
            "openLink", "What the link does (a page with a button for browsers); with "
            "[links] one_click the call itself",
            (Reply(200, "the link, not used yet", "LinkInfo"), _CREATED), _LINK_ERRORS,
            auth=Auth.NONE, tags=("links",))),
        "POST": _Method(_Router._open_link, Operation(
            "useLink", "Place the link's call (once)", (_CREATED,), _LINK_ERRORS,
            auth=Auth.NONE, tags=("links",)))},
        "/c/{token}", head=False,
        path_params=(Param("token", {"type": "string",
                                     "pattern": f"^[A-Za-z0-9_.-]{{1,{MAX_TOKEN_LENGTH}}}$"}),)),
    _Route(re.compile("/dial"), {"POST": _Method(_Router._dial_post, Operation(
        "dialConfirmed", "The browser's confirmation of GET /dial (session, form with the "
        "CSRF token)", (_CREATED,), _CALL_ERRORS, auth=Auth.NONE, tags=("web",))),
        "GET": _Method(_Router._dial, Operation(
        "dial", "Place a call by opening a URL: /dial?to=tel:+49... (CRM URL templates)",
        (_CREATED,), _CALL_ERRORS,
        params=(Param("to", {"type": "string"}, "the number, tel:/callto: link or URI",
                      required=True),
                Param("user", _USER_SCHEMA, "whose phone rings (default: the token's or "
                                            "account's user)"),
                Param("token", {"type": "string"}, "an [api] token, for URL templates that "
                                                   "cannot send headers"),
                Param("auth", {"type": "string"}, "user:password of the SIP account")),
        tags=(_COMPAT,)))}, "/dial", head=False),
    _Route(re.compile(CAMARA_PATH), {"POST": _Method(_Router._camara_create, Operation(
        "camaraCreateCall", "CAMARA createCall (0.1.0-rc.1; also /v0.1/)",
        (Reply(201, "the call", "CamaraCall", headers=("x-correlator",)),),
        (400, 401, 403, 409, 413, 422, 429, 503), body="CamaraCreateCall",
        tags=(_CAMARA,), error_schema="CamaraError"))},
        "/click-to-dial/v0.1rc1/calls", path_params=()),
    _Route(re.compile(CAMARA_PATH + "/(?P<call_id>[^/]*)"), {
        "GET": _Method(_Router._camara_call, Operation(
            "camaraGetCall", "CAMARA getCall", (Reply(200, "the call", "CamaraCall"),),
            (400, 401, 403, 404, 502, 503), tags=(_CAMARA,), error_schema="CamaraError")),
        "DELETE": _Method(_Router._camara_call, Operation(
            "camaraTerminateCall", "CAMARA terminateCall",
            (Reply(204, "terminated", content_type="application/json"),),
            (400, 401, 403, 404, 409, 502, 503), tags=(_CAMARA,),
            error_schema="CamaraError"))},
        "/click-to-dial/v0.1rc1/calls/{call_id}", head=False, path_params=(_CAMARA_ID,)),
    _Route(re.compile(CAMARA_PATH + "/(?P<call_id>[^/]*)/recording"), {
        "GET": _Method(_Router._camara_recording, Operation(
            "camaraGetRecording", "CAMARA getRecording: recording is not offered (404)",
            (Reply(200, "never: no recordings"),), (400, 401, 403, 404),
            tags=(_CAMARA,), error_schema="CamaraError"))},
        "/click-to-dial/v0.1rc1/calls/{call_id}/recording", head=False,
        path_params=(_CAMARA_ID,)),
    _Route(re.compile("/v1/contacts"), {
        "GET": _Method(_Router._list_contacts, Operation(
            "listContacts", "The phonebook: the user's and everyone's contacts",
            (Reply(200, "contacts", "ContactList"),), (400, 401, 403, 404, 422),
            params=(Param("q", {"type": "string", "maxLength": 64}, "in the name or a number"),
                    Param("limit", {"type": "integer", "minimum": 1, "maximum": _LIMIT_MAX}),
                    Param("offset", {"type": "integer", "minimum": 0, "maximum": 1000000}),
                    Param("owner", {"type": "string"}, "admin: a user's, * everyone's")),
            auth=Auth.BEARER_OR_SESSION, tags=("phonebook",))),
        "POST": _Method(_Router._add_contact, Operation(
            "addContact", "Add a contact", (Reply(201, "added", "Contact"),),
            (400, 401, 403, 404, 413, 422), body="ContactRequest",
            auth=Auth.BEARER_OR_SESSION, tags=("phonebook",)))},
        "/v1/contacts"),
    _Route(re.compile("/v1/contacts/import"), {"POST": _Method(
        _Router._import_contacts, Operation(
            "importContacts", "Import a CSV (header row: name, number columns, url) or "
            "vCard file (the request body)", (Reply(201, "how many", "ContactImport"),),
            (400, 401, 403, 404, 413, 422), auth=Auth.BEARER_OR_SESSION,
            tags=("phonebook",)))}, "/v1/contacts/import"),
    _Route(re.compile("/v1/contacts/(?P<contact_id>[0-9]{1,12})"), {
        "PUT": _Method(_Router._change_contact, Operation(
            "changeContact", "Change a contact", (Reply(200, "changed", "Contact"),),
            (400, 401, 403, 404, 413, 422), body="ContactRequest",
            auth=Auth.BEARER_OR_SESSION, tags=("phonebook",))),
        "DELETE": _Method(_Router._change_contact, Operation(
            "deleteContact", "Delete a contact", (Reply(200, "deleted"),),
            (401, 403, 404), auth=Auth.BEARER_OR_SESSION, tags=("phonebook",)))},
        "/v1/contacts/{contact_id}",
        path_params=(Param("contact_id", {"type": "string", "pattern": "^[0-9]{1,12}$"}),)),
    _Route(re.compile("/v1/session"), {
        "POST": _Method(_Router._sign_in, Operation(
            "signIn", "Sign a browser in (the SIP account, or an [api] token): sets the "
            "session cookie", (Reply(201, "signed in", "Session", headers=("Set-Cookie",)),),
            (400, 401, 403, 404, 413, 415, 422), body="SignIn", auth=Auth.NONE,
            tags=("web",))),
        "GET": _Method(_Router._who, Operation(
            "session", "Who is signed in, and the CSRF token",
            (Reply(200, "the session", "Session"),), (401, 403, 404), auth=Auth.NONE,
            tags=("web",))),
        "DELETE": _Method(_Router._sign_out, Operation(
            "signOut", "Sign out (clears the cookie)", (Reply(200, "signed out"),),
            (403, 404), auth=Auth.NONE, tags=("web",)))}, "/v1/session"),
    _Route(re.compile("/"), {"GET": _Method(_Router._page, Operation(
        "page", "The web page", (Reply(200, "HTML", content_type="text/html"),), (403,),
        auth=Auth.NONE, tags=("web",)))}, "/"),
    _Route(re.compile("/static/(?P<name>[A-Za-z0-9_.-]{1,64})"), {"GET": _Method(
        _Router._page, Operation(
            "staticFile", "The web page's scripts and styles",
            (Reply(200, "a file", content_type="text/plain"),), (403, 404), auth=Auth.NONE,
            tags=("web",)))}, "/static/{name}",
        path_params=(Param("name", {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}),)),
    _Route(re.compile("/v1/webhooks"), {"GET": _Method(_Router._webhooks, Operation(
        "webhookStatus", "How webhook deliveries went since start, by target (administrators)",
        (Reply(200, "by target, summed over the workers", "WebhookStatusList"),),
        (401, 403), auth=Auth.BEARER_OR_SESSION, tags=("operations",)))}, "/v1/webhooks"),
    _Route(re.compile("/v1/upstream"), {"GET": _Method(_Router._upstream, Operation(
        "upstream", "sipdial's own registration at [upstream] (admin token)",
        (Reply(200, "the registration", "Upstream"),), (401, 403, 404, 502, 503),
        tags=("operations",)))}, "/v1/upstream"),
    # The replaced systems served these below a prefix (LocaPhone: /locaphone/prov/);
    # any prefix is accepted so that existing links keep working after a DNS change.
    _Route(
        re.compile(r"(?:/[^?#]*)?/call-init\.php"),
        {"GET": _Method(_Router._locaphone_call_init, Operation(
            "locaphoneCallInit", "LocaPhone's call-init URL (any path prefix)",
            (_CREATED,), _CALL_ERRORS,
            params=(Param("user", _USER_SCHEMA, required=True),
                    Param("to", {"type": "string"}, "the number", required=True),
                    Param("cidnum", {"type": "string", "pattern": r"^\+?[0-9]{1,20}$"},
                          "number shown to the target"),
                    Param("clir", {"type": "string"}, "1, true or yes: hide it"),
                    Param("from", {"type": "string"}, "ignored"),
                    Param("prv", {"type": "string"}, "ignored")),
            tags=(_COMPAT,)))},
        "/call-init.php",
        head=False,
        scope="call_init",
    ),
    _Route(
        re.compile(r"(?:/[^?#]*)?/remote_call\.htm"),
        {"GET": _Method(_Router._pbxnsip_remote_call, Operation(
            "pbxnsipRemoteCall", "pbxnsip's remote_call link (any path prefix)",
            (_CREATED,), _CALL_ERRORS,
            params=(Param("user", {"type": "string"}, "the user id, optionally @domain",
                          required=True),
                    Param("dest", {"type": "string"}, "the number", required=True),
                    Param("auth", {"type": "string"}, "user:password of the SIP account"),
                    Param("connect", {"type": "string", "enum": list(_FLAGS)},
                          "true: no press 1")),
            auth=Auth.BEARER_OR_BASIC, tags=(_COMPAT,)))},
        "/remote_call.htm",
        head=False,
        scope="remote_call",
    ),
)


_HTML: Final = "text/html; charset=utf-8"


def _as_page(reply: _Reply, content: bytes) -> _Reply:
    return _Reply(reply.status, _Text(_HTML, content), [*reply.headers, *PAGE_HEADERS])


def _error_message(reply: _Reply) -> str | None:
    body = reply.body
    if reply.status >= 400 and isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message", ""))
    return None


def _link_page(reply: _Reply, link: Link, lang: Lang) -> _Reply:
    """A browser's view of ``/c/<token>``'s answer (JSON for everyone else)."""
    message = _error_message(reply)
    if message is not None:
        return _as_page(reply, error_page(message, lang))
    if reply.status == 200:
        return _as_page(reply, link_page(link.user, link.to, iso_time(link.expires_at), lang))
    return _as_page(reply, placed_page(link.user, link.to, lang))


def _dial_page(reply: _Reply, lang: Lang) -> _Reply:
    message = _error_message(reply)
    if message is not None or not isinstance(reply.body, dict):
        return _as_page(reply, error_page(message or "the call could not be placed", lang))
    return _as_page(reply, placed_page(str(reply.body.get("user")), str(reply.body.get("to")),
                                       lang))


def _openapi_document() -> dict[str, Any]:
    """``GET /openapi.json``: made from :data:`_ROUTES` (:mod:`sipdial.api.schema`)."""
    return openapi_document(
        (DocumentedPath(r.template, {m: e.doc for m, e in r.methods.items()}, r.path_params)
         for r in _ROUTES), version=_version())


@functools.cache
def _openapi_text() -> _Text:
    return _Text("application/json; charset=utf-8", json.dumps(_openapi_document()).encode())


def _version() -> str:
    try:
        return importlib.metadata.version("sipdial")
    except importlib.metadata.PackageNotFoundError:
        return "0"


# ---------------------------------------------------------------------- Twisted adapter


class _LimitedRequest(server.Request):
    """Keeps at most :data:`MAX_BODY_BYTES` of the body in memory and flags the rest."""

    body_too_large = False
    _body_length = 0

    def gotLength(self, length: int | None) -> None:
        self._body = BytesIO()
        self.content = self._body
        if length is not None and length > MAX_BODY_BYTES:
            self.body_too_large = True

    def handleContentChunk(self, data: bytes) -> None:
        self._body_length += len(data)
        if self._body_length > MAX_BODY_BYTES:
            self.body_too_large = True
        if not self.body_too_large:
            self._body.write(data)


class _TwistedRequest(Protocol):
    """The part of ``twisted.web.server.Request`` used here (Twisted leaves it untyped)."""

    uri: bytes
    method: bytes
    content: BinaryIO | None
    responseHeaders: Headers

    def getHeader(self, key: bytes) -> bytes | None: ...
    def setResponseCode(self, code: int) -> None: ...
    def setHeader(self, name: bytes, value: bytes) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def notifyFinish(self) -> Deferred[None]: ...
    def getClientAddress(self) -> object: ...


def _incoming(request: _TwistedRequest, received: float = 0.0,
              cookie_name: str = COOKIE) -> _Incoming:
    uri: bytes = request.uri
    path, _, query = uri.partition(b"?")
    authorization = request.getHeader(b"authorization")
    last_event_id = request.getHeader(b"last-event-id")
    correlator = request.getHeader(b"x-correlator")
    too_large = bool(getattr(request, "body_too_large", False))
    body = b"" if too_large or request.content is None else request.content.read()
    return _Incoming(
        method=request.method.decode("ascii", "replace").upper(),
        path=path.decode("latin-1"),
        query=query,
        authorization=None if authorization is None else authorization.decode("latin-1"),
        body=body,
        body_too_large=too_large,
        last_event_id=None if last_event_id is None else last_event_id.decode("latin-1"),
        correlator=None if correlator is None else correlator.decode("latin-1"),
        cookie=cookie_value((request.getHeader(b"cookie") or b"").decode("latin-1"),
                            cookie_name),
        csrf=_header(request, b"x-csrf-token"),
        fetch_site=_header(request, b"sec-fetch-site"),
        secure=bool(getattr(request, "isSecure", lambda: False)()),
        client=_client_host(request),
        received=received,
        accept=(request.getHeader(b"accept") or b"").decode("latin-1"),
        content_type=(request.getHeader(b"content-type") or b"").decode("latin-1").lower(),
        origin=_header(request, b"origin"),
        host=_header(request, b"host"),
        forwarded_host=_forwarded_host(request),
        accept_language=(request.getHeader(b"accept-language") or b"")[:500],
    )


def _forwarded_host(request: _TwistedRequest) -> str | None:
    """The host a proxy in front was asked for: ``X-Forwarded-Host``, else the first
    ``host=`` of RFC 7239 ``Forwarded``."""
    forwarded = _header(request, b"x-forwarded-host")
    if forwarded is not None:
        return forwarded
    standard = _header(request, b"forwarded")
    if standard is None:
        return None
    for pair in standard.split(",")[0].split(";"):
        name, _, value = pair.strip().partition("=")
        if name.lower() == "host":
            return value.strip().strip('"') or None
    return None


def _header(request: _TwistedRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def _client_host(request: _TwistedRequest) -> str:
    """The peer's IP address ("" if the transport has none, e.g. a UNIX socket)."""
    address = request.getClientAddress()
    return str(getattr(address, "host", ""))


def _encode(reply: _Reply) -> tuple[_Reply, bytes]:
    """Serialise; a body that is not JSON-able (an engine bug) becomes a logged 500.

    A lone surrogate in a string (an error message quoting the request, a call stored before
    the API refused such text) goes out as its JSON escape ``\\ud800``, as
    ``ensure_ascii=True`` would write it: the reply is still sent, never a 500."""
    try:
        text = json.dumps(reply.body, ensure_ascii=False)
        return reply, text.encode("utf-8", "backslashreplace") + b"\n"
    except (TypeError, ValueError):
        log.exception("cannot serialise reply with status %d", reply.status)
        fallback = _Reply(500, _error_body("internal", "internal server error"))
        return fallback, json.dumps(fallback.body).encode("utf-8") + b"\n"


def _loggable(path: str) -> str:
    """``path`` for a log line: at most 200 characters, control characters escaped; a call
    link's token cut to its first characters (the token is a credential)."""
    if path.startswith("/c/") and len(path) > 19:
        path = path[:19] + "..."
    if len(path) > 200:
        path = path[:200] + "..."
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", path)


class _Resource(Resource):
    """Copies the request in, the reply out, and logs one INFO line per request on
    ``sipdial.api``: ``GET /v1/calls/abc 200 1.3 ms`` (milliseconds from receipt until the
    response is written; for ``/v1/events`` until the stream opens).

    The line never has the query string (pbxnsip's ``remote_call.htm?auth=201:secret`` carries
    a password), headers or bodies. ``clock`` is a monotonic clock in seconds.
    """

    isLeaf = True

    def __init__(
        self,
        router: _Router,
        events: EventStream | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: MetricsPort | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._router = router
        self._events = events
        self._clock = clock
        self.metrics = metrics

    def render(self, request: _TwistedRequest) -> int:
        received = self._clock()
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        incoming = _incoming(request, received, self._router.cookie_name)
        d = self._router.handle(incoming)
        d.addCallback(self._respond_or_stream, request, gone, incoming, received)
        d.addErrback(
            lambda f: log.error("failed to write the response", exc_info=exc_info(f))
        )
        return server.NOT_DONE_YET

    def _access(self, incoming: _Incoming, received: float, status: int, note: str = "") -> None:
        elapsed = (self._clock() - received) * 1000.0
        if self.metrics is not None:
            self.metrics.http_request(incoming.method, status)
        log.info("%s %s %d %.1f ms%s", incoming.method, _loggable(incoming.path), status, elapsed,
                 note)

    def _respond_or_stream(
        self,
        reply: _Reply,
        request: _TwistedRequest,
        gone: list[Failure],
        incoming: _Incoming,
        received: float,
    ) -> None:
        if gone:  # the client went away while the engine was working: nobody to tell
            self._access(incoming, received, reply.status, " (not sent: the client went away)")
            return
        if isinstance(reply.body, _OpenEventStream):
            if self._events is not None:
                stream = reply.body
                self._access(incoming, received, reply.status, " (event stream opened)")
                # the real request also has the producer methods sse needs
                self._events.open(
                    request, user=stream.user, after=stream.after,  # type: ignore[arg-type]
                    allowed=stream.allowed)
            return
        if isinstance(reply.body, _Text):
            payload, content_type = reply.body.data, reply.body.content_type.encode("ascii")
        else:
            reply, payload = _encode(reply)
            content_type = _JSON_CONTENT_TYPE
        request.setResponseCode(reply.status)
        if reply.status != 204:  # RFC 9110 §8.6: a 204 has no Content-Length (no body)
            request.setHeader(b"Content-Type", content_type)
            request.setHeader(b"Content-Length", str(len(payload)).encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in reply.headers:
            request.responseHeaders.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        # logged before the bytes go out: the line is there when the client has its answer
        self._access(incoming, received, reply.status)
        request.write(payload)
        request.finish()


class ApiSite(server.Site):
    """The API's ``Site``: without Twisted's access log (:class:`_Resource` logs each request
    itself; Twisted's line would carry the query string, and with it pbxnsip's ``auth=``
    password), and reconfigurable (a reload: :meth:`reconfigure`)."""

    def __init__(self, router: _Router, resource: _Resource, *, reactor: Any,
                 internal_token: str | None) -> None:
        super().__init__(resource, requestFactory=_LimitedRequest,  # type: ignore[no-untyped-call]
                         parsePOSTFormSubmission=False, reactor=reactor)
        self.displayTracebacks = False
        self._router = router
        self._metrics_port = resource.metrics
        self._internal_token = internal_token

    def reconfigure(self, tokens: Mapping[str, str],
                    allow_from: Mapping[str, Sequence[Network] | None],
                    metrics_config: MetricsConfig | None = None,
                    camara_sinks: Sequence[str] = ()) -> None:
        """New ``[api]`` tokens, ``allow_from`` networks and ``[metrics]`` settings, from
        the next request on (requests in progress finish under the old ones)."""
        allow, access = _access(allow_from, self._metrics_port, metrics_config,
                                self._internal_token)
        self._router.reconfigure(tokens, allow, access, camara_sinks)

    def log(self, request: object) -> None:
        pass


def _access(allow_from: Mapping[str, Sequence[Network] | None] | None,
            metrics: MetricsPort | None, metrics_config: MetricsConfig | None,
            internal_token: str | None,
            ) -> tuple[dict[str, Sequence[Network] | None], _MetricsAccess | None]:
    """The router's networks by scope and its ``/metrics`` access."""
    allow = dict(allow_from or {})
    if metrics is None:
        return allow, None
    settings = metrics_config or MetricsConfig()
    allow["metrics"] = settings.allow_from
    return allow, _MetricsAccess(metrics, settings.token, settings.open, internal_token)


def build_site(
    api: CallApi,
    tokens: Mapping[str, str],
    *,
    reactor: Any = None,
    parts: ApiParts | None = None,
    events: EventSource | None = None,
    workers: OtherWorkers | None = None,
    allow_from: Mapping[str, Sequence[Network] | None] | None = None,
    metrics: MetricsPort | None = None,
    metrics_config: MetricsConfig | None = None,
    internal_token: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    camara_sinks: Sequence[str] = (),
) -> ApiSite:
    """The HTTP API as a Twisted ``Site``; listen on it with ``reactor.listenTCP``.

    ``tokens`` maps a bearer token to the user id it may act for, or to ``"*"`` for an
    administrator. ``parts``: what else it answers with (:class:`ApiParts`: passwords,
    links, the page's sessions, the phonebooks); none: bearer tokens and calls only.
    ``reactor`` (an ``IReactorTime``) drives the HTTP connection timeouts.
    ``events`` (the :class:`~sipdial.events.hub.EventHub`) enables ``GET /v1/events``.
    ``workers``: the other worker processes (``sipdial serve --workers``), which answer for
    their own calls; None: this process has every call. ``allow_from``: by scope
    (``"api"``, ``"call_init"``, ``"remote_call"``), the networks that may ask there (403
    ``forbidden_source`` for the others, before any credential check); None: anyone.
    ``metrics``: serve ``GET /metrics`` (guarded as ``metrics_config`` says; ``allow_from``
    of it is the ``"metrics"`` scope); ``internal_token``: what workers asking each other
    for their metrics show (the private sites accept it). ``camara_sinks``: the URL
    prefixes a user's token may name as a CAMARA sink (reloadable, like the tokens).
    """
    stream: EventStream | None = None
    if events is not None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        stream = EventStream(events, reactor)
    allow, access = _access(allow_from, metrics, metrics_config, internal_token)
    router = _Router(api, tokens, parts or ApiParts(), events=stream is not None,
                     workers=workers, allow_from=allow, metrics=access, clock=clock,
                     camara_sinks=camara_sinks)
    return ApiSite(router, _Resource(router, stream, clock, metrics), reactor=reactor,
                   internal_token=internal_token)
