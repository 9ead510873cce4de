"""Where a dialled destination goes: a local user's devices, a ``[[routes]]`` gateway, or a
SIP URI's own host.

:func:`parse_destination` takes apart what the API accepted (``+4930123456``, ``201``,
``sip:bob@example.com``) once, with :mod:`sipdial.sip.uri`; :class:`Router` answers where it
goes at a given moment. Both are sans-IO.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from sipdial.config import FromUser
from sipdial.numbers import NumberPlan, complete, for_route
from sipdial.registrar import Binding
from sipdial.sip import (
    URI,
    NameAddr,
    Peer,
    ResolveError,
    SipError,
    SipURI,
    Step,
    is_ip_literal,
    parse_uri,
    peer_for_uri,
    plan,
    route_request,
)

if TYPE_CHECKING:
    from sipdial.config import RouteConfig, UpstreamConfig

__all__ = [
    "Destination",
    "NoRoute",
    "NumericResolver",
    "OnResolved",
    "Pbx",
    "Resolver",
    "Router",
    "Target",
    "Unavailable",
    "callee_uri",
    "escape_user",
    "local_hosts",
    "parse_destination",
    "user_uri",
]


@dataclass(frozen=True, slots=True)
class Destination:
    """What a click-to-dial call dials, parsed once.

    ``number`` is what routes match, the prompt speaks and the user's phone shows (a number,
    an extension, or a SIP URI's user part); ``uri`` is set for a ``sip:``/``sips:``
    destination outside sipdial's own domain, which is called at its own host.
    """

    number: str
    uri: SipURI | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send an INVITE for a destination: a device (``peer``: its first Path
    hop, else where its REGISTER came from) or a route's / URI's address (``peer`` None:
    resolved by RFC 3263 when the INVITE goes out). With a ``route`` (the device's Path, an
    outbound proxy), ``peer`` is that route's first hop."""

    uri: URI
    peer: Peer | None
    credentials: tuple[str, str] | None = None  # for the gateway's 401/407
    label: str = "target"
    route: tuple[NameAddr, ...] = ()  #: preloaded route set (RFC 3327 Path, outbound proxy)


@dataclass(frozen=True, slots=True)
class Pbx:
    """PBX mode (``[upstream]``): the office PBX/registrar the users' phones register at.

    sipdial reaches everyone through it: the user as ``sip:USER@DOMAIN`` (the PBX forks to
    the user's devices), the target as ``sip:NUMBER@DOMAIN`` (the PBX routes it), both
    INVITEs answering the PBX's 401/407 with sipdial's account ``credentials``. When the
    domain is the registrar's own host, the URIs keep the registrar's port and transport
    (the PBX is then reached by the Request-URI alone); otherwise the registrar is the
    INVITE's preloaded Route (an outbound proxy, RFC 3261 §8.1.2).
    """

    registrar: SipURI  #: where sipdial registers (``[upstream] registrar``)
    domain: str  #: the users' and targets' domain at the PBX (``[upstream] domain``)
    credentials: tuple[str, str]  #: sipdial's account (username, password)
    #: ``[upstream] outbound_proxy`` (else ``[sip] outbound_proxy``): the first hop of
    #: every INVITE to the PBX
    proxy: tuple[NameAddr, ...] = ()
    #: ``[upstream] from_user = "account"``: the From of every INVITE to the PBX is
    #: sipdial's account (the shown party only its display name and P-Asserted-Identity)
    from_account: bool = False

    @classmethod
    def from_config(cls, upstream: UpstreamConfig) -> Pbx:
        registrar = parse_uri(upstream.registrar)
        if not isinstance(registrar, SipURI) or registrar.scheme == "tel":
            raise ValueError(f"the registrar is no sip:/sips: URI: {upstream.registrar}")
        return cls(registrar, upstream.domain.strip("[]"),
                   (upstream.username, upstream.password),
                   _proxy_route(upstream.outbound_proxy),
                   upstream.from_user is FromUser.ACCOUNT)

    def from_party(self, shown: NameAddr) -> NameAddr:
        """The From of an INVITE to the PBX that shows ``shown`` (its URI: P-Asserted-Identity):
        ``shown`` itself, or with ``from_account`` sipdial's account URI with ``shown``'s
        display name (its number when it has none)."""
        if not self.from_account:
            return shown
        user = shown.uri.user if isinstance(shown.uri, SipURI) else None
        return NameAddr(user_uri(self.credentials[0], self.domain),
                        shown.display_name or user or None)

    @property
    def _at_registrar(self) -> bool:
        return self.domain.lower() == self.registrar.host.strip("[]").lower()

    def uri(self, number: str) -> SipURI:
        """``sip:NUMBER@DOMAIN`` (with the registrar's port and transport when the domain
        is the registrar's host): what the PBX routes."""
        reg = self.registrar
        if not self._at_registrar:
            return user_uri(number, self.domain)
        params = {k: v for k, v in reg.params.items() if k == "transport"}
        return SipURI(reg.scheme, escape_user(number), None, reg.host.strip("[]"), reg.port,
                      params, {})

    @property
    def route(self) -> tuple[NameAddr, ...]:
        """The preloaded route to the PBX: the outbound proxy if any, then the registrar
        unless the URIs name it already."""
        if self._at_registrar:
            return self.proxy
        return (*self.proxy, registrar_route(self.registrar))

    def target(self, number: str, label: str = "pbx") -> Target:
        """Where an INVITE for ``number`` goes in PBX mode."""
        return _via(self.uri(number), self.credentials, label, self.route)


def registrar_route(registrar: SipURI) -> NameAddr:
    """A registrar URI as a loose route (``;lr``) toward it."""
    return NameAddr(SipURI(registrar.scheme, None, None, registrar.host.strip("[]"),
                           registrar.port, {**registrar.params, "lr": None}, {}))


#: on_done(peers or the error, now)
OnResolved = Callable[[list[Peer] | ResolveError, float], None]


class Resolver(Protocol):
    """RFC 3263: where requests for a SIP URI go (:class:`sipdial.transport.DnsResolver`,
    adapted with the clock). ``on_done`` is called exactly once, maybe before ``resolve``
    returns; the peers are in the order to try them (RFC 3263 §4.3 fail-over)."""

    def resolve(self, uri: SipURI, default_transport: str, on_done: OnResolved) -> None: ...


class NumericResolver:
    """A resolver for IP literals only (no DNS): what the unit tests and benchmarks use."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def resolve(self, uri: SipURI, default_transport: str, on_done: OnResolved) -> None:
        found = plan(uri, default_transport)
        if isinstance(found, ResolveError):
            on_done(found, self._clock())
        elif found.step is not Step.NUMERIC:
            on_done(ResolveError(found.target, "no DNS resolver configured"), self._clock())
        else:
            on_done(found.address_peers([found.target]), self._clock())


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A local user without a registered device (480)."""

    user: str


@dataclass(frozen=True, slots=True)
class NoRoute:
    """No local user, route or URI host for the destination."""

    number: str


def parse_destination(to: str, local_hosts: Collection[str]) -> Destination:
    """``to`` as the API accepted it -> :class:`Destination`. Raises ``ValueError`` for a
    URI that does not parse or has no user part, and for text that no header may carry:
    control characters (also %-escaped ones), text that is not well-formed Unicode (a lone
    surrogate, %-escapes that are not UTF-8) and a number that is not printable ASCII.
    A ``sip:`` URI whose host is one of ``local_hosts`` (sipdial's domain and addresses)
    means its user part, like a number.

    The destination's URI is rebuilt, never pasted: its user part is escaped again with
    :func:`escape_user` (so ``;``/``?`` in it cannot read as parameters or headers), and it
    loses its password, headers and ``method`` parameter (RFC 3261 §19.1.5, table 1: a
    Request-URI carries none of them).
    """
    _check_text("the destination", to)
    if ":" not in to or to.startswith("+"):
        if not _PRINTABLE_ASCII.fullmatch(to):
            raise ValueError(f"a number or extension is printable ASCII without spaces, "
                             f"not {_shown(to)}")
        return Destination(to)
    try:
        uri = parse_uri(to)
    except SipError as exc:
        raise ValueError(f"not a SIP URI: {exc}") from None
    if not isinstance(uri, SipURI):
        raise ValueError(f"not a sip:, sips: or tel: URI: {_shown(to)}")
    user = uri.unquote_user()
    if not user:
        raise ValueError(f"no user part in {_shown(to)}")
    _check_text("the user part", user)
    if uri.scheme == "tel" or uri.host.lower() in local_hosts:
        return Destination(user)
    params = {k: v for k, v in uri.params.items() if k != "method"}
    return Destination(user, SipURI(uri.scheme, escape_user(user), None, uri.host, uri.port,
                                    params, {}))


# C0 controls, DEL and C1 controls: meaningless in a destination, dangerous in a header
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PRINTABLE_ASCII = re.compile(r"[!-~]+")


def _check_text(what: str, text: str) -> None:
    """Raise ``ValueError`` unless ``text`` is well-formed Unicode without control
    characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not well-formed Unicode text (a lone surrogate, or "
                         f"%-escapes that are not UTF-8): {_shown(text)}") from None
    if _CONTROL.search(text):
        raise ValueError(f"{what} contains a control character: {_shown(text)}")


def _shown(text: str) -> str:
    """``text`` for a message: quoted, control characters and surrogates escaped, at most
    80 characters."""
    return ascii(text[:80]) if len(text) <= 80 else ascii(text[:80])[:-1] + "...'"


class Router:
    """Routes destinations: every registered device of a local user (forked), else a SIP
    URI's own host, else the first ``[[routes]]`` entry whose pattern matches. In PBX mode
    (``pbx``) a local user, and a number no ``[[routes]]`` entry matches, go to the PBX."""

    def __init__(self, users: Collection[str], routes: Sequence[RouteConfig],
                 devices: Callable[[str, float], list[Binding]],
                 local_hosts: Collection[str], outbound_proxy: str | None = None,
                 pbx: Pbx | None = None, numbers: NumberPlan | None = None) -> None:
        self._users = users  # a live view: a reload changes who is local
        #: ``[numbers]``: numbers completed to E.164 (sipdial.numbers)
        self.numbers = numbers or NumberPlan()
        #: PBX mode: users and every number no ``[[routes]]`` entry matches go to the PBX
        self.pbx = pbx
        self._routes = routes
        #: ``[sip] outbound_proxy`` for routes and URI destinations (validated by the config)
        self._proxy = _proxy_route(outbound_proxy)
        self._devices = devices
        self.local_hosts = frozenset(h.lower() for h in local_hosts)

    def reconfigure(self, routes: Sequence[RouteConfig], numbers: NumberPlan) -> None:
        """A configuration reload: these routes and this number plan from now on."""
        self._routes = routes
        self.numbers = numbers

    def destination(self, to: str, numbers: NumberPlan | None = None) -> Destination:
        """``to`` parsed; a number completed to E.164 by ``numbers`` (the user's own plan),
        else ``[numbers]`` (a local user stays that user). ``ValueError``,
        :class:`~sipdial.numbers.InvalidNumber` (a subclass) for a number that cannot be
        one."""
        destination = parse_destination(to, self.local_hosts)
        if destination.uri is not None:
            return destination
        number = complete(destination.number, numbers or self.numbers,
                          self._users.__contains__)
        return destination if number == destination.number else Destination(number)

    def is_local_user(self, destination: Destination) -> bool:
        return destination.uri is None and destination.number in self._users

    def route(self, destination: Destination, now: float) -> list[Target] | Unavailable | NoRoute:
        number = destination.number
        if self.pbx is not None and self.is_local_user(destination):
            return [self.pbx.target(number)]
        if self.is_local_user(destination):
            bindings = self._devices(number, now)
            if not bindings:
                return Unavailable(number)
            return [Target(parse_uri(b.contact), b.next_hop, None, b.device, b.path)
                    for b in bindings]
        if destination.uri is not None:
            return [_via(destination.uri, None, "uri", self._proxy)]
        route = self._route_for(number)
        if route is None:
            return NoRoute(number) if self.pbx is None else [self.pbx.target(number)]
        try:
            # the number goes into the template escaped: whatever a phone put in its
            # Request-URI ("%40evil.example", "%0D%0A") cannot change the route's host or
            # reach a header
            dialled = for_route(number, route.format, self.numbers)
            uri = parse_uri(route.target_uri(escape_user(dialled)))
        except SipError:
            return NoRoute(number)
        creds = (route.username, route.password) \
            if route.username and route.password is not None else None
        proxy = _proxy_route(route.outbound_proxy) if route.outbound_proxy else self._proxy
        return [_via(uri, creds, "route", proxy)]

    def routable(self, destination: Destination) -> bool:
        """Whether ``destination`` has somewhere to go (ignoring registrations)."""
        return (self.is_local_user(destination) or destination.uri is not None
                or self.pbx is not None or self._route_for(destination.number) is not None)

    def _route_for(self, number: str) -> RouteConfig | None:
        """The first ``[[routes]]`` entry matching ``number``."""
        return next((r for r in self._routes if r.match.search(number)), None)


def user_uri(user: str, host: str) -> SipURI:
    """``sip:user@host`` with the user part escaped (:func:`escape_user`)."""
    return SipURI("sip", escape_user(user), None, host.strip("[]"), None, {}, {})


def escape_user(user: str) -> str:
    """``user`` (unescaped text) as the user part of a SIP URI (RFC 3261 §25.1).

    ``user = 1*( unreserved / escaped / user-unreserved )``: unreserved characters and the
    user-unreserved ``& = + $ , /`` stay as they are; everything else is %-escaped as UTF-8,
    ``;`` and ``?`` too, although ``user-unreserved`` allows them: a number that carries
    ``;x=1`` or ``?Replaces=...`` must not read as URI parameters or headers to a phone or
    gateway whose parser is less careful. Text that came from %-escapes that are not UTF-8
    (``%FF``, kept by :meth:`SipURI.unquote_user` as a surrogate escape) is escaped back to
    the same bytes; this never raises.
    """
    try:
        data = user.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate: its bytes, escaped (still never a delimiter)
        data = user.encode("utf-8", "surrogatepass")
    return quote(data, safe=_USER_SAFE)


#: unreserved marks and the user-unreserved characters that are never read as delimiters
_USER_SAFE = "-_.!~*'()&=+$,/"


def callee_uri(target: Target, number: str, domain: str) -> SipURI:
    """The To of an INVITE to ``target`` for ``number``: the route's or URI's own address
    (without its parameters), else the number at our domain (a device's Contact is
    private and means nothing to anyone else)."""
    uri = target.uri
    if isinstance(uri, SipURI) and uri.user is not None and uri.unquote_user() == number:
        return SipURI(uri.scheme, uri.user, None, uri.host, uri.port, {}, {})
    return user_uri(number, domain)


def _proxy_route(proxy: str | None) -> tuple[NameAddr, ...]:
    """An outbound proxy URI as a one-hop preloaded route set."""
    return (NameAddr(parse_uri(proxy)),) if proxy else ()


def _via(uri: URI, creds: tuple[str, str] | None, label: str,
         route: tuple[NameAddr, ...]) -> Target:
    """A route's or URI's target, through ``route`` (an outbound proxy) when given: the
    INVITE goes to the proxy (resolved when a name), the URI stays the Request-URI (loose)
    or becomes the last Route (strict, §16.12.1)."""
    return Target(uri, _literal_peer(route_request(uri, route).next_hop), creds, label, route)


def _literal_peer(uri: URI) -> Peer | None:
    """The peer of a URI whose host is an IP literal (no lookup needed), else None."""
    if not isinstance(uri, SipURI) or uri.scheme == "tel":
        return None
    if not is_ip_literal(uri.params.get("maddr") or uri.host):
        return None
    return peer_for_uri(uri)


def local_hosts(domain: str, listen_hosts: Sequence[str]) -> frozenset[str]:
    """sipdial's own names: the domain and every concrete listening address."""
    hosts = {domain.lower().strip("[]")}
    for host in listen_hosts:
        try:
            if not ipaddress.ip_address(host).is_unspecified:
                hosts.add(host)
        except ValueError:
            hosts.add(host.lower())
    return frozenset(hosts)

