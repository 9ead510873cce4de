"""sipdial configuration: one TOML file, validated once at start into frozen dataclasses.

Every problem is reported as a :class:`ConfigError` whose message names the offending key by
its full dotted path, with array indexes (``users[1].id: duplicate user id "201"``). Unknown
keys are errors too, with a did-you-mean suggestion, so a typo never silently falls back to a
default.

Only this module reads the file; the rest of sipdial receives a :class:`Config`.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, TypeVar

from sipdial.numbers import NumberFormat, NumberPlan
from sipdial.sip import SipError, SipURI, parse_uri
from sipdial.vocabulary import Mode

__all__ = [
    "ApiConfig",
    "AuthConfig",
    "CallsConfig",
    "Config",
    "ConfigError",
    "ContactsConfig",
    "FromUser",
    "HttpConfig",
    "LinksConfig",
    "ListenAddr",
    "MetricsConfig",
    "RouteConfig",
    "SipConfig",
    "StoreConfig",
    "TlsConfig",
    "TrunkConfig",
    "UpstreamConfig",
    "UserConfig",
    "load_config",
    "parse_config",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration is unusable. ``str(error)`` is a one-line message naming the key."""


# --------------------------------------------------------------------------------------------
# The validated configuration
# --------------------------------------------------------------------------------------------

TRANSPORTS: Final = ("udp", "tcp", "tls")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``[sip.tls]``: SIP over TLS (RFC 3261 §26, RFC 5630). ``certificate`` and ``key`` (PEM
    files) are required by a ``tls:`` listener; ``ca`` (PEM, one or more certificates) is
    what outgoing TLS trusts, and what a phone's own certificate is checked against (RFC
    5923 connection reuse); without it the system's trust store. Outgoing connections check
    the server's certificate and its host name (RFC 5922) unless ``verify = false``."""

    certificate: str | None = None  #: PEM certificate (chain) sipdial presents
    key: str | None = None  #: PEM private key of ``certificate``
    ca: str | None = None  #: PEM CA certificate(s) trusted; None: the system's
    verify: bool = True  #: check peers' certificates and host names (off only explicitly)


@dataclass(frozen=True, slots=True)
class ListenAddr:
    """One SIP listening socket (``sip.listen`` entry)."""

    transport: str  #: "udp" | "tcp"
    host: str  #: IP literal or host name; IPv6 without brackets
    port: int  #: 0-65535; 0 means an ephemeral port (tests)


@dataclass(frozen=True, slots=True)
class SipConfig:
    """``[sip]``: listening sockets, identity and RFC 3261 timer values."""

    listen: tuple[ListenAddr, ...]
    domain: str
    realm: str = ""  #: digest realm; empty means "same as domain" (filled in on construction)
    user_agent: str = "sipdial/0.1"
    t1: float = 0.5  #: RFC 3261 T1, RTT estimate (s)
    t2: float = 4.0  #: RFC 3261 T2, maximum retransmit interval for non-INVITE (s)
    t4: float = 5.0  #: RFC 3261 T4, maximum time a message stays in the network (s)
    max_registration_expires: int = 3600
    min_registration_expires: int = 60
    default_registration_expires: int = 3600
    #: digest algorithms offered, one challenge each, in this order (RFC 8760 §2.4). MD5 only
    #: by default: phones such as baresip 1.0 fail the whole authentication when any
    #: challenge names an algorithm they lack, instead of skipping it. Set
    #: ["SHA-256", "MD5"] when every device handles multiple challenges.
    digest_algorithms: tuple[str, ...] = ("MD5",)
    #: SIP-over-TCP limits (README "Resource limits"): a message must arrive whole within
    #: tcp_message_timeout s of its first byte (a new connection's first one, of the accept)
    tcp_message_timeout: float = 5.0
    #: s without a complete message before a TCP connection closes; 0: max_registration_expires
    #: + 60 (a registered phone keeps its connection)
    tcp_idle_timeout: float = 0.0
    tcp_max_per_source: int = 64  #: TCP connections one source IP may hold
    #: SIP-TCP connections in all, at most; never more than the open-file limit minus
    #: tcp_fd_reserve (descriptors kept for the HTTP API, RTP, the store, webhooks)
    tcp_max_connections: int = 10_000
    tcp_fd_reserve: int = 256
    #: a preloaded Route for requests outside a dialog to routes and URI destinations
    #: (RFC 3261 §8.1.2), e.g. "sip:proxy.example.com;lr"; no ";lr": a strict router
    #: (§16.12.1). Registered devices are reached by their Path or registration instead.
    outbound_proxy: str | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)  #: ``[sip.tls]``

    def __post_init__(self) -> None:
        if not self.realm:
            object.__setattr__(self, "realm", self.domain)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``[http]``: where the HTTP API listens, and who may use it."""

    host: str  #: IPv6 without brackets
    port: int
    #: the networks the API (``/v1/...``, ``/healthz``) answers; None: every address.
    #: Others get 403 before any credential is looked at (LocaPhone's GS_CALL_INIT_FROM_NET)
    allow_from: tuple[Network, ...] | None = None
    #: the same for LocaPhone's ``call-init.php`` and pbxnsip's ``remote_call.htm``
    #: (None: as ``allow_from``)
    call_init_allow_from: tuple[Network, ...] | None = None
    remote_call_allow_from: tuple[Network, ...] | None = None
    #: the web page is reached over https through a proxy that ends TLS: its session
    #: cookie is Secure and ``__Host-`` (over sipdial's own TLS it is Secure anyway)
    secure_cookies: bool = False


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: who may scrape ``GET /metrics``.

    With ``token``: that bearer token (or an admin API token). Without one: an admin API
    token, or nothing at all from an address in a ``[metrics] allow_from`` of its own.
    ``allow_from`` (default: ``[http] allow_from``) refuses (403) every other address before
    credentials are looked at."""

    token: str | None = field(default=None, repr=False)
    allow_from: tuple[Network, ...] | None = None
    #: no credentials needed from ``allow_from`` (it is [metrics]' own and there is no token)
    open: bool = False


@dataclass(frozen=True, slots=True)
class TrunkConfig:
    """One ``[[trunks]]`` entry: a carrier or PBX whose INVITEs to a user's number are
    relayed to that user's phones without a digest challenge."""

    name: str
    #: trusted by source address: INVITEs from these networks
    allow_from: tuple[Network, ...] = ()
    #: over these transports only (UDP source addresses can be forged: prefer tcp/tls)
    transports: tuple[str, ...] = ("udp", "tcp", "tls")
    #: calls from this trunk in progress at once; more get 503
    max_concurrent: int = 100
    #: the number called (as the trunk sends it, or E.164) -> the user whose phones ring;
    #: the users' own ``number`` counts too
    dids: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContactsConfig:
    """``[contacts]``: who is calling — a phonebook file sipdial loads and/or a CRM lookup."""

    phonebook: str | None = None  #: a CSV (name, number[, url]) or vCard file
    #: "https://crm/lookup?number={e164}": JSON {"name", "url"} (404/empty: nobody)
    lookup_url: str | None = None
    #: seconds call.incoming waits for the lookup at most (the call itself never waits)
    lookup_timeout: float = 0.5
    cache_ttl: float = 600.0  #: seconds an answer of the lookup is reused


@dataclass(frozen=True, slots=True)
class LinksConfig:
    """``[links]``: signed single-use call links (``POST /v1/links``, ``/c/<token>``)."""

    secret: str = field(repr=False)  #: the HMAC key (at least 32 characters)
    max_ttl: int = 7 * 86400  #: the longest lifetime a link may be given (s)
    default_ttl: int = 86400  #: a link's lifetime when the request names none (s)
    one_click: bool = False  #: GET /c/<token> places the call (no confirmation page)
    base_url: str | None = None  #: "https://sipdial.example.com": absolute link URLs


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: call log and registration persistence."""

    url: str  #: "sqlite:///relative.db", "sqlite:////abs/path.db" or "sqlite:///:memory:"

    @property
    def sqlite_path(self) -> str:
        """The file name for :mod:`sqlite3` (relative paths are relative to the current dir)."""
        if not self.url.startswith(_SQLITE_PREFIX):
            raise ValueError(f"not a sqlite URL: {self.url!r}")
        return self.url[len(_SQLITE_PREFIX) :]


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """``[api]``: bearer tokens of the HTTP API."""

    #: token -> user id allowed to act through it, or "*" for every user (admin)
    tokens: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True, slots=True)
class UserConfig:
    """One ``[[users]]`` entry: a SIP account whose phone sipdial rings first."""

    id: str  #: SIP user name (REGISTER / digest user), also the API's user id
    #: digest password; None only with ``[upstream]`` (PBX mode: the PBX authenticates the
    #: user's phones, which cannot then register at or call through sipdial)
    password: str | None = field(repr=False)
    name: str = ""  #: display name shown on the user's phone
    auto_answer: bool = False  #: ask the phone to answer the first leg by itself
    number: str | None = None  #: the user's external caller-ID number
    confirm: bool | None = None  #: play "press 1" before dialling (None: [calls] confirm)
    language: str | None = None  #: prompt language "en" | "de" (None: [calls] language)
    clir: bool = False  #: hide this user's number from targets (Privacy: id)
    #: a user with a click-to-dial call in progress: rung anyway (False) or refused with
    #: 409 user_busy (True); a request's ``refuse_if_busy`` wins
    refuse_if_busy: bool = False
    #: ``[[users]] numbers = {...}``: ``[numbers]`` with this user's keys overriding (None:
    #: ``[numbers]`` as it is)
    numbers: NumberPlan | None = None
    #: signed in on the web page with the SIP password, acts as an administrator (every
    #: user's calls, registrations, webhook status); the API's tokens are unchanged
    admin: bool = False


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One ``[[routes]]`` entry: where calls to numbers matching ``match`` go."""

    match: re.Pattern[str]  #: regex for the dialled number; anchor it (``^...$``) yourself
    uri: str  #: target template, contains "{number}", starts with sip: or sips:
    username: str | None = None  #: digest credentials towards the gateway, if it challenges
    password: str | None = field(default=None, repr=False)
    outbound_proxy: str | None = None  #: this route's own (else ``[sip] outbound_proxy``)
    #: the number in the URI: E.164, national or as dialled from here (sipdial.numbers)
    format: NumberFormat = NumberFormat.E164

    def target_uri(self, number: str) -> str:
        """The request URI for ``number`` (``{number}`` substituted)."""
        return self.uri.replace("{number}", number)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """One ``[[policy]]`` entry: what its users may dial, and how much (toll-fraud limits).

    Every entry that names the caller (or ``"*"``) applies: a destination matching any
    ``deny`` is refused, and where ``allow`` is given one of its patterns must match. The
    caps count the calls of each user (``per = "user"``) or of everyone the entry names
    together (``per = "all"``)."""

    users: tuple[str, ...] = ("*",)  #: user ids, "*" for every user
    allow: tuple[re.Pattern[str], ...] = ()  #: patterns on the E.164 destination
    deny: tuple[re.Pattern[str], ...] = ()
    max_concurrent: int | None = None  #: calls in progress at once
    max_per_minute: int | None = None  #: calls started in any 60 s
    max_per_hour: int | None = None  #: calls started in any 3600 s
    per: str = "user"  #: "user" or "all"

    def applies_to(self, user: str) -> bool:
        return "*" in self.users or user in self.users


@dataclass(frozen=True, slots=True)
class CallsConfig:
    """``[calls]``: click-to-dial behaviour and limits."""

    default_mode: Mode = Mode.REFER
    user_answer_timeout: float = 30.0  #: ring time on the user's phone (cause user_no_answer)
    target_answer_timeout: float = 60.0  #: ring time on the target
    refer_timeout: float = 32.0  #: how long to wait for the outcome of the REFER
    max_concurrent: int = 2000  #: calls in progress at once; more are refused
    max_duration: float = 14400.0  #: a call still up after this many seconds is hung up
    confirm: bool = False  #: play "to connect to ..., press 1" and wait for DTMF 1 first
    confirm_timeout: float = 15.0  #: seconds to wait for a digit (cause not_confirmed)
    language: str = "en"  #: prompt language, "en" or "de"
    #: header names a request may set on the call's INVITEs (``"headers"``: X-CRM-Id, ...):
    #: lower case -> the spelling configured (written as configured); none by default
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    #: the external numbers that may be rung first instead of the user's phones
    #: (``"device": "tel:..."``, CAMARA's external caller); none by default
    first_leg_allow: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """``[media]``: sipdial's own RTP (prompts, tones, DTMF) in bridge mode and for confirmation."""

    host: str | None = None  #: address for RTP and in SDP (None: the first SIP listen host)
    port_min: int = 0  #: RTP port range; 0/0 = any free port for each call
    port_max: int = 0
    prompt_file: str | None = None  #: custom confirmation prompt, any format PyAV decodes
    #: send and receive RTP in a process of its own (sipdial.media.remote: the 20 ms tick
    #: keeps time while the SIP process is busy); false: in the SIP process
    process: bool = True


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One ``[[webhooks]]`` entry: where call events are POSTed."""

    url: str  #: http:// or https:// URL
    secret: str = field(repr=False)  #: HMAC-SHA256 key for X-Sipdial-Signature
    events: tuple[str, ...] = ("*",)  #: event names ("call.ringing", ...) or "*" for all


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``[auth]``: limits on password guessing (:mod:`sipdial.guard`) and weak passwords."""

    backoff_after: int = 5  #: failed attempts (per source / account) before back-off starts
    backoff_base: float = 1.0  #: first back-off (s), doubled for each further failure
    backoff_max: float = 60.0  #: longest back-off (s)
    lockout_after: int = 10  #: the failed attempt that locks the source / account out
    lockout_time: float = 900.0  #: how long a lockout lasts (s)
    forget_after: float = 3600.0  #: a source / account with no failure for this long is clean
    trust_time: float = 86400.0  #: a source that logged in as an account stays exempt (s)
    max_tracked: int = 100_000  #: counters (and trusted pairs) kept at most
    min_password_length: int = 8  #: shorter SIP passwords are refused at start
    allow_weak_passwords: bool = False  #: accept short or digits-only SIP passwords


class FromUser(enum.StrEnum):
    """``[upstream] from_user``: whose user part the From of INVITEs to the PBX carries."""

    #: the party shown: the target's number on the user's phone, the user's on the target's
    TARGET = "target"
    #: sipdial's account (the shown party stays the display name and P-Asserted-Identity):
    #: for PBXs that tie the From to the credentials (Asterisk's identify_by=username)
    ACCOUNT = "account"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """``[upstream]``: sipdial registers itself at an office registrar/PBX as a SIP account
    (:mod:`sipdial.upstream`). Absent: standalone mode, nothing is registered anywhere."""

    registrar: str  #: where REGISTERs go: a sip:/sips: URI (RFC 3263: SRV fail-over)
    username: str  #: the account's user name (AOR user part and digest user name)
    password: str = field(repr=False)  #: the account's digest password
    domain: str  #: the AOR's domain and the REGISTER's Request-URI (default: registrar host)
    expires: int = 3600  #: registration lifetime asked for (s); refreshed at half of it
    retry_base: float = 30.0  #: first wait after a failed registration (s), then doubled
    retry_max: float = 1800.0  #: longest wait between attempts (s) (RFC 5626 §4.5)
    #: a proxy every request to the PBX goes through (REGISTER and PBX-mode INVITEs): this
    #: key, else ``[sip] outbound_proxy``; None: straight to the registrar
    outbound_proxy: str | None = None
    from_user: FromUser = FromUser.TARGET


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    sip: SipConfig
    http: HttpConfig
    store: StoreConfig
    api: ApiConfig
    users: Mapping[str, UserConfig]  #: by user id, in file order
    routes: tuple[RouteConfig, ...] = ()  #: first match wins
    calls: CallsConfig = field(default_factory=CallsConfig)
    #: raw ``[[auto_answer]]`` tables (vendor, match, headers); only their types are checked here
    auto_answer: tuple[dict[str, object], ...] = ()
    media: MediaConfig = field(default_factory=MediaConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    auth: AuthConfig = field(default_factory=AuthConfig)
    upstream: UpstreamConfig | None = None  #: None: standalone (no [upstream] section)
    numbers: NumberPlan = field(default_factory=NumberPlan)  #: ``[numbers]`` (none: as given)
    policy: tuple[PolicyConfig, ...] = ()  #: ``[[policy]]``, every entry that applies counts
    metrics: MetricsConfig = field(default_factory=MetricsConfig)  #: ``[metrics]``
    links: LinksConfig | None = None  #: ``[links]``; None: no call links
    trunks: tuple[TrunkConfig, ...] = ()  #: ``[[trunks]]``: where inbound calls come from
    #: ``[camara] sinks``: URL prefixes a user's token may name as a CloudEvents sink
    camara_sinks: tuple[str, ...] = ()
    contacts: ContactsConfig = field(default_factory=ContactsConfig)  #: ``[contacts]``
    source: str = "<string>"  #: file the configuration came from


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the TOML file at ``path``."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f'cannot read config file "{source}": {exc.strerror or exc}') from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f'config file "{source}" is not UTF-8: {exc}') from exc
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate TOML ``text``; ``source`` is only recorded (and used in TOML syntax errors)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc

    root = _Table(raw, "", "")
    sip = _parse_sip(root.table("sip"))
    http = _parse_http(root.table("http"))
    store = _parse_store(root.table("store"))
    user_numbers: dict[str, dict[str, str]] = {}
    users = _parse_users(root.array_of_tables("users"), user_numbers)
    api = _parse_api(root.table("api"), users)
    routes = tuple(_parse_route(t) for t in root.array_of_tables("routes"))
    calls = _parse_calls(root.table("calls", required=False))
    auto_answer = tuple(_parse_auto_answer(t) for t in root.array_of_tables("auto_answer"))
    media = _parse_media(root.table("media", required=False))
    webhooks = tuple(_parse_webhook(t) for t in root.array_of_tables("webhooks"))
    auth = _parse_auth(root.table("auth", required=False))
    policy = tuple(_parse_policy(t, users) for t in root.array_of_tables("policy"))
    metrics = _parse_metrics(root.table("metrics", required=False), api, http)
    links = _parse_links(root.table("links")) if "links" in raw else None
    trunks = tuple(_parse_trunk(t, users) for t in root.array_of_tables("trunks"))
    if trunks and "upstream" in raw:
        raise ConfigError("trunks: not with [upstream] (PBX mode): the PBX delivers inbound "
                          "calls to the phones itself (relaying them would loop back to it)")
    contacts = _parse_contacts(root.table("contacts", required=False))
    camara = root.table("camara", required=False)
    camara_sinks = tuple(camara.strings("sinks")) if "sinks" in camara.raw else ()
    for i, prefix in enumerate(camara_sinks):
        if not re.fullmatch(r"https?://[^\s/?#@]+/(\S*/)?", prefix):
            raise ConfigError(f'{camara.path("sinks")}[{i}]: expected "https://host/path/" '
                              f'(ending in "/"), got "{prefix}"')
    number_values = _number_values(root.table("numbers", required=False))
    numbers = _plan(number_values, "numbers")
    users = _with_user_plans(users, number_values, user_numbers)
    upstream = _parse_upstream(root.table("upstream"), sip.outbound_proxy) \
        if "upstream" in raw else None
    if upstream is None:
        _require_passwords(users)
    return Config(
        camara_sinks=camara_sinks,
        trunks=trunks,
        contacts=contacts,
        links=links,
        metrics=metrics,
        policy=policy,
        numbers=numbers,
        auth=auth,
        upstream=upstream,
        media=media,
        webhooks=webhooks,
        sip=sip,
        http=http,
        store=store,
        api=api,
        users=users,
        routes=routes,
        calls=calls,
        auto_answer=auto_answer,
        source=source,
    )


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

_SQLITE_PREFIX: Final = "sqlite:///"

#: Every key the file may contain, by table ("name[]" for each entry of an array of tables).
_KEYS: Final[dict[str, frozenset[str]]] = {
    "": frozenset({"sip", "http", "store", "api", "users", "routes", "calls", "auto_answer",
                   "media", "webhooks", "auth", "upstream", "numbers", "policy",
                   "metrics", "links", "trunks", "contacts", "camara"}),
    "policy[]": frozenset({"users", "allow", "deny", "max_concurrent", "max_per_minute",
                           "max_per_hour", "per"}),
    "metrics": frozenset({"token", "allow_from"}),
    "links": frozenset({"secret", "max_ttl", "default_ttl", "one_click", "base_url"}),
    "trunks[]": frozenset({"name", "allow_from", "transports", "max_concurrent", "dids"}),
    "camara": frozenset({"sinks"}),
    "contacts": frozenset({"phonebook", "lookup_url", "lookup_timeout", "cache_ttl"}),
    "numbers": frozenset({"country", "area", "base", "outside_line", "international_prefix",
                          "national_prefix"}),
    "upstream": frozenset({"registrar", "username", "password", "domain", "expires",
                           "retry_base", "retry_max", "outbound_proxy", "from_user"}),
    "auth": frozenset({"backoff_after", "backoff_base", "backoff_max", "lockout_after",
                       "lockout_time", "forget_after", "trust_time", "max_tracked",
                       "min_password_length", "allow_weak_passwords"}),
    "media": frozenset({"host", "port_min", "port_max", "prompt_file", "process"}),
    "webhooks[]": frozenset({"url", "secret", "events"}),
    "sip": frozenset(
        {
            "listen",
            "domain",
            "realm",
            "user_agent",
            "t1",
            "t2",
            "t4",
            "max_registration_expires",
            "min_registration_expires",
            "default_registration_expires",
            "digest_algorithms",
            "tcp_message_timeout",
            "tcp_idle_timeout",
            "tcp_max_per_source",
            "tcp_max_connections",
            "tcp_fd_reserve",
            "outbound_proxy",
            "tls",
        }
    ),
    "sip.tls": frozenset({"certificate", "key", "ca", "verify"}),
    "http": frozenset({"listen", "allow_from", "call_init_allow_from",
                       "remote_call_allow_from", "secure_cookies"}),
    "store": frozenset({"url"}),
    "api": frozenset({"tokens"}),
    "users[]": frozenset({"id", "password", "name", "auto_answer", "number", "confirm",
                          "language", "clir", "numbers", "refuse_if_busy", "admin"}),
    "routes[]": frozenset({"match", "uri", "username", "password", "outbound_proxy",
                           "format"}),
    "calls": frozenset(
        {
            "default_mode",
            "user_answer_timeout",
            "target_answer_timeout",
            "refer_timeout",
            "max_concurrent",
            "max_duration",
            "confirm",
            "confirm_timeout",
            "language",
            "extra_headers",
            "first_leg_allow",
        }
    ),
    "auto_answer[]": frozenset({"vendor", "match", "headers"}),
}

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )
_SIP_USER_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
# RFC 1123 host name labels (also accepts IPv4 dotted quads, checked separately)
_HOSTNAME_RE: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
# "udp:HOST:PORT" / "tcp:[v6]:PORT" / "tls:HOST:PORT"; HOST validated separately
_LISTEN_RE: Final = re.compile(
    r"(?P<transport>[A-Za-z]+):(?P<host>\[[^\]]*\]|[^:\[\]]*):(?P<port>\d+)"
)
_HOSTPORT_RE: Final = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*):(?P<port>\d+)")


def _parse_sip(t: _Table) -> SipConfig:
    listen_values = t.strings("listen")
    if not listen_values:
        raise ConfigError(f"{t.path('listen')}: at least one listen address is required")
    listen: list[ListenAddr] = []
    for i, value in enumerate(listen_values):
        key = f"{t.path('listen')}[{i}]"
        addr = _parse_listen(value, key)
        if addr in listen and addr.port != 0:
            raise ConfigError(f'{key}: duplicate listen address "{value}"')
        listen.append(addr)

    domain = t.string("domain")
    if not _valid_host(domain):
        raise ConfigError(f'{t.path("domain")}: not a valid host name or IP address: "{domain}"')
    realm = t.string("realm", default=domain)
    user_agent = t.string("user_agent", default="sipdial/0.1")
    t1 = t.positive_float("t1", 0.5)
    t2 = t.positive_float("t2", 4.0)
    t4 = t.positive_float("t4", 5.0)
    if t2 < t1:
        raise ConfigError(f"{t.path('t2')}: must be >= sip.t1 ({t1}), got {t2}")
    max_exp = t.positive_int("max_registration_expires", 3600)
    min_exp = t.positive_int("min_registration_expires", 60)
    default_exp = t.positive_int("default_registration_expires", 3600)
    if min_exp > max_exp:
        raise ConfigError(
            f"{t.path('min_registration_expires')}: must be <= "
            f"{t.path('max_registration_expires')} ({max_exp}), got {min_exp}"
        )
    if not min_exp <= default_exp <= max_exp:
        raise ConfigError(
            f"{t.path('default_registration_expires')}: must be between "
            f"{t.path('min_registration_expires')} ({min_exp}) and "
            f"{t.path('max_registration_expires')} ({max_exp}), got {default_exp}"
        )
    algorithms: tuple[str, ...] = ("MD5",)
    if "digest_algorithms" in t.raw:
        names = t.strings("digest_algorithms")
        if not names:
            raise ConfigError(f"{t.path('digest_algorithms')}: at least one algorithm is required")
        for i, name in enumerate(names):
            if name.upper() not in ("MD5", "SHA-256"):
                raise ConfigError(
                    f'{t.path("digest_algorithms")}[{i}]: unsupported algorithm "{name}" '
                    '(use "MD5" or "SHA-256")')
        algorithms = tuple(n.upper() for n in names)
    return SipConfig(
        tcp_message_timeout=t.positive_float("tcp_message_timeout", 5.0),
        tcp_idle_timeout=t.positive_float("tcp_idle_timeout", max_exp + 60.0),
        tcp_max_per_source=t.positive_int("tcp_max_per_source", 64),
        tcp_max_connections=t.positive_int("tcp_max_connections", 10_000),
        tcp_fd_reserve=t.positive_int("tcp_fd_reserve", 256),
        tls=_parse_tls(t.table("tls", required=False), listen),
        digest_algorithms=algorithms,
        outbound_proxy=_outbound_proxy(t),
        listen=tuple(listen),
        domain=domain,
        realm=realm,
        user_agent=user_agent,
        t1=t1,
        t2=t2,
        t4=t4,
        max_registration_expires=max_exp,
        min_registration_expires=min_exp,
        default_registration_expires=default_exp,
    )


def _parse_listen(value: str, key: str) -> ListenAddr:
    m = _LISTEN_RE.fullmatch(value)
    if m is None or m["transport"].lower() not in TRANSPORTS:
        raise ConfigError(f'{key}: expected "udp|tcp|tls:HOST:PORT", got "{value}"')
    host = _parse_host(m["host"], key, value)
    return ListenAddr(m["transport"].lower(), host, _parse_port(m["port"], key))


def _parse_tls(t: _Table, listen: list[ListenAddr]) -> TlsConfig:
    """``[sip.tls]``: the files must exist (their contents are checked when sipdial starts,
    by :mod:`sipdial.transport.tls`); a ``tls:`` listener needs a certificate and a key."""
    files: dict[str, str | None] = {}
    for name in ("certificate", "key", "ca"):
        path = t.optional_string(name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f'{t.path(name)}: no such file "{path}"')
        files[name] = path
    if any(a.transport == "tls" for a in listen):
        for name in ("certificate", "key"):
            if files[name] is None:
                raise ConfigError(f"{t.path(name)}: required by the tls: listen address")
    if (files["certificate"] is None) != (files["key"] is None):
        missing, given = ("key", "certificate") if files["key"] is None else ("certificate", "key")
        raise ConfigError(f"{t.path(missing)}: required with {t.path(given)}")
    return TlsConfig(certificate=files["certificate"], key=files["key"], ca=files["ca"],
                     verify=t.boolean("verify", True))


def _parse_http(t: _Table) -> HttpConfig:
    key = t.path("listen")
    value = t.string("listen")
    m = _HOSTPORT_RE.fullmatch(value)
    if m is None:
        raise ConfigError(f'{key}: expected "HOST:PORT" (IPv6 as "[::1]:PORT"), got "{value}"')
    host = _parse_host(m["host"], key, value)
    port = _parse_port(m["port"], key)
    nets = {k: _networks(t, k) for k in ("allow_from", "call_init_allow_from",
                                        "remote_call_allow_from")}
    api = nets["allow_from"]
    return HttpConfig(host, port, api,
                      nets["call_init_allow_from"] if "call_init_allow_from" in t.raw else api,
                      nets["remote_call_allow_from"] if "remote_call_allow_from" in t.raw
                      else api, secure_cookies=t.boolean("secure_cookies", False))


def _networks(t: _Table, key: str) -> tuple[Network, ...] | None:
    if key not in t.raw:
        return None
    out: list[Network] = []
    for i, text in enumerate(t.strings(key)):
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ConfigError(f'{t.path(key)}[{i}]: not an address or CIDR network: "{text}"') \
                from None
    return tuple(out)


def _parse_host(text: str, key: str, value: str) -> str:
    """``text`` is the host part of a listen address: a name, IPv4, or ``[IPv6]``."""
    if text.startswith("["):
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ConfigError(f'{key}: invalid IPv6 address "{inner}" in "{value}"') from None
        return inner
    if not _valid_host(text):
        raise ConfigError(f'{key}: invalid host "{text}" in "{value}"')
    return text


def _valid_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return ":" not in text and _HOSTNAME_RE.fullmatch(text) is not None
    return True


def _parse_port(text: str, key: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} out of range 0-65535")
    return port


def _parse_store(t: _Table) -> StoreConfig:
    url = t.string("url")
    if not url.startswith(_SQLITE_PREFIX) or len(url) == len(_SQLITE_PREFIX):
        raise ConfigError(
            f'{t.path("url")}: expected "sqlite:///relative/path.db", '
            f'"sqlite:////absolute/path.db" or "sqlite:///:memory:", got "{url}"'
        )
    return StoreConfig(url)


def _parse_users(tables: list[_Table],
                 overrides: dict[str, dict[str, str]]) -> Mapping[str, UserConfig]:
    """The users; their ``numbers`` tables go into ``overrides`` (by user id), made plans
    once ``[numbers]`` is known (:func:`_with_user_plans`)."""
    users: dict[str, UserConfig] = {}
    for t in tables:
        uid = t.string("id")
        if _SIP_USER_RE.fullmatch(uid) is None:
            raise ConfigError(f'{t.path("id")}: not a valid SIP user name: "{uid}"')
        if uid in users:
            raise ConfigError(f'{t.path("id")}: duplicate user id "{uid}"')
        password = t.optional_string("password")
        name = t.string("name", default="", allow_empty=True)
        auto_answer = t.boolean("auto_answer", False)
        number = t.optional_string("number")
        if number is not None and re.fullmatch(r"\+?[0-9]+", number) is None:
            raise ConfigError(
                f'{t.path("number")}: expected digits with an optional leading "+", got "{number}"'
            )
        confirm = t.boolean("confirm", False) if "confirm" in t.raw else None
        language = t.optional_string("language")
        if language is not None and language not in LANGUAGES:
            raise ConfigError(f'{t.path("language")}: expected "en" or "de", got "{language}"')
        clir = t.boolean("clir", False)
        refuse_if_busy = t.boolean("refuse_if_busy", False)
        if "numbers" in t.raw:
            own = _Table(t.get("numbers", dict, "a table"), t.path("numbers"), "numbers")
            overrides[uid] = _number_values(own)
        users[uid] = UserConfig(uid, password, name, auto_answer, number, confirm, language,
                                clir, refuse_if_busy, admin=t.boolean("admin", False))
    return MappingProxyType(users)


def _require_passwords(users: Mapping[str, UserConfig]) -> None:
    """Standalone mode: sipdial is the phones' registrar, so every user needs a password
    (the same error as before PBX mode existed; only with ``[upstream]``, where the PBX
    authenticates the phones, may a user have none)."""
    for index, user in enumerate(users.values()):
        if user.password is None:
            raise ConfigError(f"users[{index}].password: required key is missing")


def _parse_api(t: _Table, users: Mapping[str, UserConfig]) -> ApiConfig:
    key = t.path("tokens")
    raw = t.get("tokens", dict, "a table of token = user id")
    if not raw:
        raise ConfigError(f"{key}: at least one token is required")
    tokens: dict[str, str] = {}
    for token, uid in raw.items():
        # the token is the secret: never echo it, name its position instead
        where = f"{key}[{len(tokens)}]"
        if not token.strip():
            raise ConfigError(f"{where}: empty token")
        if not isinstance(uid, str):
            raise ConfigError(f"{where}: expected a user id string, got {_describe(uid)}")
        if uid != "*" and uid not in users:
            raise ConfigError(f'{where}: unknown user "{uid}" (not in [[users]])')
        tokens[token] = uid
    return ApiConfig(MappingProxyType(tokens))


def _parse_metrics(t: _Table, api: ApiConfig, http: HttpConfig) -> MetricsConfig:
    token = t.optional_string("token")
    if token is not None:
        if not token.strip() or len(token) < 16:
            raise ConfigError(f"{t.path('token')}: must be at least 16 characters")
        if token in api.tokens:
            raise ConfigError(f"{t.path('token')}: must differ from every [api] token")
    own = _networks(t, "allow_from")
    return MetricsConfig(token=token, allow_from=own if own is not None else http.allow_from,
                         open=own is not None and token is None)


def _parse_trunk(t: _Table, users: Mapping[str, UserConfig]) -> TrunkConfig:
    name = t.string("name")
    allow_from = _networks(t, "allow_from") or ()
    if not allow_from:
        raise ConfigError(f"{t.path('allow_from')}: required: a trunk is trusted by where its "
                          "INVITEs come from")
    transports = tuple(t.strings("transports")) if "transports" in t.raw \
        else ("udp", "tcp", "tls")
    for i, transport in enumerate(transports):
        if transport not in ("udp", "tcp", "tls"):
            raise ConfigError(f'{t.path("transports")}[{i}]: one of "udp", "tcp", "tls"')
    if any(n.prefixlen == 0 for n in allow_from):
        raise ConfigError(f"{t.path('allow_from')}: 0.0.0.0/0 or ::/0 would let anyone call "
                          "without a password")
    raw = t.get("dids", dict, "a table of number = user id", {})
    dids: dict[str, str] = {}
    for number, uid in raw.items():
        where = f"{t.path('dids')}.{number}"
        if re.fullmatch(r"\+?[0-9]{1,32}", number) is None:
            raise ConfigError(f"{where}: the key must be a number (digits, optional +)")
        if not isinstance(uid, str) or uid not in users:
            raise ConfigError(f"{where}: unknown user {uid!r} (not in [[users]])")
        dids[number] = uid
    return TrunkConfig(name=name, allow_from=allow_from, transports=transports,
                       max_concurrent=t.positive_int("max_concurrent", 100),
                       dids=MappingProxyType(dids))


def _parse_contacts(t: _Table) -> ContactsConfig:
    phonebook = t.optional_string("phonebook")
    if phonebook is not None and not os.path.isfile(phonebook):
        raise ConfigError(f'{t.path("phonebook")}: no such file "{phonebook}"')
    url = t.optional_string("lookup_url")
    if url is not None and (not re.fullmatch(r"https?://\S+", url) or "{e164}" not in url):
        raise ConfigError(f'{t.path("lookup_url")}: expected an http(s) URL with "{{e164}}", '
                          f'got "{url}"')
    return ContactsConfig(phonebook=phonebook, lookup_url=url,
                          lookup_timeout=_at_most(t, "lookup_timeout", 0.5, 5.0),
                          cache_ttl=t.positive_float("cache_ttl", 600.0))


def _at_most(t: _Table, key: str, default: float, limit: float) -> float:
    value = t.positive_float(key, default)
    if value > limit:
        raise ConfigError(f"{t.path(key)}: at most {limit:g} (seconds), got {value:g}")
    return value


def _parse_links(t: _Table) -> LinksConfig:
    secret = t.string("secret")
    if len(secret) < 32:
        raise ConfigError(f"{t.path('secret')}: must be at least 32 characters (it signs the "
                          "links: anyone who knows it can place calls)")
    max_ttl = t.positive_int("max_ttl", 7 * 86400)
    default_ttl = t.positive_int("default_ttl", min(86400, max_ttl))
    if max_ttl < 60:
        raise ConfigError(f"{t.path('max_ttl')}: must be at least 60 (seconds)")
    if not 60 <= default_ttl <= max_ttl:
        raise ConfigError(f"{t.path('default_ttl')}: must be from 60 to max_ttl ({max_ttl})")
    base_url = t.optional_string("base_url")
    if base_url is not None:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", base_url):
            raise ConfigError(f'{t.path("base_url")}: expected "https://host[:port][/path]", '
                              f'got "{base_url}"')
        base_url = base_url.rstrip("/")
    return LinksConfig(secret=secret, max_ttl=max_ttl, default_ttl=default_ttl,
                       one_click=t.boolean("one_click", False), base_url=base_url)


def _parse_route(t: _Table) -> RouteConfig:
    pattern = t.string("match")
    try:
        match = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{t.path('match')}: invalid regular expression: {exc}") from None
    uri = t.string("uri")
    if not uri.startswith(("sip:", "sips:")):
        raise ConfigError(f'{t.path("uri")}: must start with "sip:" or "sips:", got "{uri}"')
    if "{number}" not in uri:
        raise ConfigError(f'{t.path("uri")}: must contain "{{number}}", got "{uri}"')
    username = t.optional_string("username")
    password = t.optional_string("password", allow_empty=True)
    if password is not None and username is None:
        raise ConfigError(f"{t.path('password')}: given without {t.path('username')}")
    form = t.optional_string("format") or NumberFormat.E164.value
    try:
        number_format = NumberFormat(form)
    except ValueError:
        raise ConfigError(f'{t.path("format")}: one of "e164", "national", "dial", '
                          f'not "{form}"') from None
    return RouteConfig(match, uri, username, password, _outbound_proxy(t), number_format)


def _parse_policy(t: _Table, users: Mapping[str, UserConfig]) -> PolicyConfig:
    names = tuple(t.strings("users")) if "users" in t.raw else ("*",)
    for i, name in enumerate(names):
        if name != "*" and name not in users:
            raise ConfigError(f'{t.path("users")}[{i}]: unknown user "{name}"')
    patterns = {key: _regexes(t, key) for key in ("allow", "deny")}
    caps = {key: t.positive_int(key, 1) if key in t.raw else None
            for key in ("max_concurrent", "max_per_minute", "max_per_hour")}
    per = t.string("per", default="user")
    if per not in ("user", "all"):
        raise ConfigError(f'{t.path("per")}: "user" or "all", not "{per}"')
    return PolicyConfig(names, patterns["allow"], patterns["deny"], caps["max_concurrent"],
                        caps["max_per_minute"], caps["max_per_hour"], per)


def _number_values(t: _Table) -> dict[str, str]:
    values: dict[str, str] = {}
    for key in ("country", "area", "base", "international_prefix", "national_prefix",
                "outside_line"):
        value = t.optional_string(key, allow_empty=key == "outside_line")
        if value is not None:
            values[key] = value.strip().lstrip("+") if key == "country" else value.strip()
    return values


def _plan(values: dict[str, str], where: str) -> NumberPlan:
    try:
        return NumberPlan(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _with_user_plans(users: Mapping[str, UserConfig], base: dict[str, str],
                     overrides: dict[str, dict[str, str]]) -> Mapping[str, UserConfig]:
    if not overrides:
        return users
    out = dict(users)
    for index, uid in enumerate(users):
        if uid in overrides:
            plan = _plan({**base, **overrides[uid]}, f"users[{index}].numbers")
            out[uid] = replace(users[uid], numbers=plan)
    return MappingProxyType(out)


def _outbound_proxy(t: _Table) -> str | None:
    """An ``outbound_proxy`` key: a sip:/sips: URI (``<...>`` optional), or None."""
    value = t.optional_string("outbound_proxy")
    if value is None:
        return None
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    try:
        uri = parse_uri(text)
    except SipError as exc:
        raise ConfigError(f'{t.path("outbound_proxy")}: not a SIP URI: "{value}" ({exc})') \
            from None
    if not isinstance(uri, SipURI) or uri.scheme not in ("sip", "sips") or not uri.host:
        raise ConfigError(f'{t.path("outbound_proxy")}: expected a sip: or sips: URI, '
                          f'got "{value}"')
    return str(uri)


def _parse_calls(t: _Table) -> CallsConfig:
    mode = t.string("default_mode", default="refer")
    if mode not in tuple(Mode):
        expected = " or ".join(f'"{m}"' for m in Mode)
        raise ConfigError(f'{t.path("default_mode")}: expected {expected}, got "{mode}"')
    calls = CallsConfig(
        default_mode=Mode(mode),
        user_answer_timeout=t.positive_float("user_answer_timeout", 30.0),
        target_answer_timeout=t.positive_float("target_answer_timeout", 60.0),
        refer_timeout=t.positive_float("refer_timeout", 32.0),
        max_concurrent=t.positive_int("max_concurrent", 2000),
        max_duration=t.positive_float("max_duration", 14400.0),
        confirm=t.boolean("confirm", False),
        confirm_timeout=t.positive_float("confirm_timeout", 15.0),
        language=t.string("language", default="en"),
        extra_headers=_extra_headers(t),
        first_leg_allow=_regexes(t, "first_leg_allow"),
    )
    if calls.language not in LANGUAGES:
        raise ConfigError(f'{t.path("language")}: expected "en" or "de", got "{calls.language}"')
    return calls


#: headers sipdial writes itself or that change routing, dialogs or security: never a
#: request's to set (RFC 3261 §20 and the extensions sipdial uses)
_OWN_HEADERS: Final = frozenset({
    "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "contact", "m", "route",
    "record-route", "max-forwards", "content-length", "l", "content-type", "c",
    "authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate",
    "p-asserted-identity", "privacy", "refer-to", "r", "referred-by", "b", "replaces",
    "require", "supported", "k", "allow", "call-info", "alert-info", "answer-mode",
    "priv-answer-mode", "event", "o", "subscription-state", "expires", "path", "user-agent",
    "session-expires", "x", "min-se", "proxy-require", "identity", "p-preferred-identity",
    "remote-party-id", "diversion", "history-info", "reason", "rack", "rseq",
})
_TOKEN: Final = re.compile(r"[A-Za-z0-9!%*_+`'~.-]+")


def _regexes(t: _Table, key: str) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for i, pattern in enumerate(t.strings(key) if key in t.raw else []):
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"{t.path(key)}[{i}]: invalid regular expression: {exc}") \
                from None
    return tuple(compiled)


def _extra_headers(t: _Table) -> Mapping[str, str]:
    names = t.strings("extra_headers") if "extra_headers" in t.raw else []
    for i, name in enumerate(names):
        if not _TOKEN.fullmatch(name) or name.lower() in _OWN_HEADERS:
            raise ConfigError(f'{t.path("extra_headers")}[{i}]: "{name}" is no header a '
                              "request may set (a token, not one sipdial writes itself)")
    return MappingProxyType({name.lower(): name for name in names})


LANGUAGES: Final = ("en", "de")
EVENT_NAMES: Final = ("call.dialing", "call.ringing", "call.answered", "call.confirmed",
                      "call.connected", "call.ended", "call.incoming", "auth.locked_out")


def _parse_media(t: _Table) -> MediaConfig:
    host = t.optional_string("host")
    if host is not None:
        host = _parse_host(host, t.path("host"), host)
    port_min = t.get("port_min", int, "an integer", 0)
    port_max = t.get("port_max", int, "an integer", 0)
    for key, value in (("port_min", port_min), ("port_max", port_max)):
        if not 0 <= value <= 65535:
            raise ConfigError(f"{t.path(key)}: must be 0-65535, got {value}")
    if (port_min == 0) != (port_max == 0) or port_min > port_max:
        raise ConfigError(f"{t.path('port_max')}: give both port_min <= port_max, or neither")
    prompt_file = t.optional_string("prompt_file")
    return MediaConfig(host, port_min, port_max, prompt_file, t.boolean("process", True))


def _parse_webhook(t: _Table) -> WebhookConfig:
    url = t.string("url")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f'{t.path("url")}: must start with http:// or https://, got "{url}"')
    secret = t.string("secret")
    events: tuple[str, ...] = ("*",)
    if "events" in t.raw:
        names = t.strings("events")
        for i, name in enumerate(names):
            if name != "*" and name not in EVENT_NAMES:
                raise ConfigError(f'{t.path("events")}[{i}]: unknown event "{name}" '
                                  f'(one of {", ".join(EVENT_NAMES)} or "*")')
        events = tuple(names) or ("*",)
    return WebhookConfig(url, secret, events)


def _parse_auth(t: _Table) -> AuthConfig:
    d = AuthConfig()
    backoff_after = t.get("backoff_after", int, "an integer", d.backoff_after)
    if backoff_after < 0:
        raise ConfigError(f"{t.path('backoff_after')}: must be >= 0, got {backoff_after}")
    lockout_after = t.positive_int("lockout_after", d.lockout_after)
    if lockout_after <= backoff_after:
        raise ConfigError(f"{t.path('lockout_after')}: must be > {t.path('backoff_after')} "
                          f"({backoff_after}), got {lockout_after}")
    trust_time = t.get("trust_time", float, "a number", d.trust_time)
    if not math.isfinite(trust_time) or trust_time < 0:
        raise ConfigError(f"{t.path('trust_time')}: must be >= 0, got {trust_time}")
    return AuthConfig(
        backoff_after=backoff_after,
        backoff_base=t.positive_float("backoff_base", d.backoff_base),
        backoff_max=t.positive_float("backoff_max", d.backoff_max),
        lockout_after=lockout_after,
        lockout_time=t.positive_float("lockout_time", d.lockout_time),
        forget_after=t.positive_float("forget_after", d.forget_after),
        trust_time=trust_time,
        max_tracked=t.positive_int("max_tracked", d.max_tracked),
        min_password_length=t.positive_int("min_password_length", d.min_password_length),
        allow_weak_passwords=t.boolean("allow_weak_passwords", d.allow_weak_passwords),
    )


def _parse_upstream(t: _Table, sip_proxy: str | None) -> UpstreamConfig:
    registrar = t.string("registrar")
    try:
        uri = parse_uri(registrar)
    except (SipError, ValueError) as exc:
        raise ConfigError(f'{t.path("registrar")}: not a SIP URI ({exc}): "{registrar}"') from None
    if not isinstance(uri, SipURI) or uri.scheme not in ("sip", "sips"):
        raise ConfigError(f'{t.path("registrar")}: must be a sip: or sips: URI, got "{registrar}"')
    username = t.string("username")
    if not _SIP_USER_RE.fullmatch(username):
        raise ConfigError(f'{t.path("username")}: not a valid SIP user name: "{username}"')
    domain = t.string("domain", default=uri.host.strip("[]"))
    if not _valid_host(domain):
        raise ConfigError(f'{t.path("domain")}: not a host name or IP address: "{domain}"')
    d = UpstreamConfig(registrar, username, "", domain)
    retry_base = t.positive_float("retry_base", d.retry_base)
    retry_max = t.positive_float("retry_max", d.retry_max)
    if retry_max < retry_base:
        raise ConfigError(f"{t.path('retry_max')}: must be >= {t.path('retry_base')} "
                          f"({retry_base}), got {retry_max}")
    return UpstreamConfig(
        registrar=registrar,
        username=username,
        password=t.string("password", allow_empty=True),
        domain=domain,
        expires=t.positive_int("expires", d.expires),
        retry_base=retry_base,
        retry_max=retry_max,
        outbound_proxy=_outbound_proxy(t) or sip_proxy,
        from_user=_from_user(t),
    )


def _from_user(t: _Table) -> FromUser:
    value = t.string("from_user", default=FromUser.TARGET.value)
    if value not in tuple(FromUser):
        expected = " or ".join(f'"{v}"' for v in FromUser)
        raise ConfigError(f'{t.path("from_user")}: expected {expected}, got "{value}"')
    return FromUser(value)


def _parse_auto_answer(t: _Table) -> dict[str, object]:
    """Types only; :func:`sipdial.calls.autoanswer.rules_from_config` checks the rest."""
    vendor = t.string("vendor")
    match = t.string("match")
    try:
        re.compile(match)
    except re.error as exc:
        raise ConfigError(f"{t.path('match')}: invalid regular expression: {exc}") from None
    key = t.path("headers")
    headers: dict[str, object] = t.get("headers", dict, "a table of header name = value")
    if not headers:
        raise ConfigError(f"{key}: at least one header is required")
    for name, value in headers.items():
        if not isinstance(value, str):
            raise ConfigError(f"{key}.{name}: expected a string, got {_describe(value)}")
    return {"vendor": vendor, "match": match, "headers": dict(headers)}


# --------------------------------------------------------------------------------------------
# Typed access to one TOML table; unknown keys are rejected up front
# --------------------------------------------------------------------------------------------

_MISSING: Final = object()


def _describe(value: object) -> str:
    """A wrong value as error messages show it: 'integer 5', 'string "x"', 'an array'."""
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    kind = {int: "integer", float: "float"}.get(type(value), "date/time")
    return f"{kind} {value}"


class _Table:
    """A TOML table at dotted ``path``, whose allowed keys are ``_KEYS[schema]``.

    Unknown keys are rejected on construction, before any missing or mistyped key is reported,
    so a typo reads as ``unknown key "sip.domian" (did you mean "sip.domain"?)`` rather than as
    a missing ``sip.domain``.
    """

    def __init__(self, raw: dict[str, object], prefix: str, schema: str) -> None:
        self.raw = raw
        self.prefix = prefix
        self.schema = schema
        allowed = _KEYS[schema]
        for key in raw:
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
                suggestion = f' (did you mean "{self.path(hint[0])}"?)' if hint else ""
                raise ConfigError(f'unknown key "{self.path(key)}"{suggestion}')

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(self, key: str, kind: type[T], expected: str, default: object = _MISSING) -> T:
        assert key in _KEYS[self.schema], f"{key!r} missing from _KEYS[{self.schema!r}]"
        value = self.raw.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise ConfigError(f"{self.path(key)}: required key is missing")
            return default  # type: ignore[return-value]
        if isinstance(value, bool) and kind is not bool:  # bool is an int subclass
            raise ConfigError(f"{self.path(key)}: expected {expected}, got {_describe(value)}")
        if kind is float and isinstance(value, int):  # "t1 = 1" is a number too
            return float(value)  # type: ignore[return-value]
        if not isinstance(value, kind):
            raise ConfigError(f"{self.path(key)}: expected {expected}, got {_describe(value)}")
        return value

    def string(self, key: str, default: object = _MISSING, *, allow_empty: bool = False) -> str:
        value = self.get(key, str, "a string", default)
        if not value and not allow_empty:
            raise ConfigError(f"{self.path(key)}: must not be empty")
        return value

    def optional_string(self, key: str, *, allow_empty: bool = False) -> str | None:
        if key not in self.raw:
            return None
        return self.string(key, allow_empty=allow_empty)

    def boolean(self, key: str, default: bool) -> bool:
        return self.get(key, bool, "true or false", default)

    def positive_float(self, key: str, default: float) -> float:
        value = self.get(key, float, "a number", default)
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{self.path(key)}: must be > 0, got {value}")
        return value

    def positive_int(self, key: str, default: int) -> int:
        value = self.get(key, int, "an integer", default)
        if value <= 0:
            raise ConfigError(f"{self.path(key)}: must be > 0, got {value}")
        return value

    def strings(self, key: str) -> list[str]:
        values: list[object] = self.get(key, list, "an array of strings")
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise ConfigError(
                    f"{self.path(key)}[{i}]: expected a string, got {_describe(value)}"
                )
        return values  # type: ignore[return-value]

    def table(self, key: str, *, required: bool = True) -> _Table:
        if required and key not in self.raw:
            raise ConfigError(f"[{self.path(key)}]: required section is missing")
        raw: dict[str, object] = self.get(key, dict, "a table", {})
        return _Table(raw, self.path(key), self.path(key))

    def array_of_tables(self, key: str) -> list[_Table]:
        expected = f"an array of tables ([[{self.path(key)}]])"
        values: list[object] = self.get(key, list, expected, [])
        tables: list[_Table] = []
        for i, value in enumerate(values):
            path = f"{self.path(key)}[{i}]"
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a table, got {_describe(value)}")
            tables.append(_Table(value, path, f"{self.path(key)}[]"))
        return tables
