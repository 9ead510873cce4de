"""Where a dialled destination goes: a local user's devices, a ``[[routes]]`` gateway, or a
SIP URI's own host.

:func:`parse_destination` takes apart what the API accepted (``+4930123456``, ``201``,
``sip:bob@example.com``) once, with :mod:`sipdial.sip.uri`; :class:`Router` answers where it
goes at a given moment. Both are sans-IO.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from sipdial.registrar import Binding
from sipdial.sip import (
    URI,
    Peer,
    ResolveError,
    SipError,
    SipURI,
    Step,
    is_ip_literal,
    parse_uri,
    peer_for_uri,
    plan,
)

if TYPE_CHECKING:
    from sipdial.config import RouteConfig

__all__ = [
    "Destination",
    "NoRoute",
    "NumericResolver",
    "OnResolved",
    "Resolver",
    "Router",
    "Target",
    "Unavailable",
    "callee_uri",
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
    """One place to send an INVITE for a destination: a device (``peer``: where its
    REGISTER came from) or a route's / URI's address (``peer`` None: resolved by RFC 3263
    when the INVITE goes out)."""

    uri: URI
    peer: Peer | None
    credentials: tuple[str, str] | None = None  # for the gateway's 401/407
    label: str = "target"


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
    URI that does not parse or has no user part. A ``sip:`` URI whose host is one of
    ``local_hosts`` (sipdial's domain and addresses) means its user part, like a number."""
    if ":" not in to or to.startswith("+"):
        return Destination(to)
    try:
        uri = parse_uri(to)
    except SipError as exc:
        raise ValueError(f"not a SIP URI: {exc}") from None
    if not isinstance(uri, SipURI):
        raise ValueError(f"not a sip:, sips: or tel: URI: {to!r}")
    user = uri.unquote_user()
    if not user:
        raise ValueError(f"no user part in {to!r}")
    if uri.scheme == "tel" or uri.host.lower() in local_hosts:
        return Destination(user)
    # a Request-URI carries no headers and no method (RFC 3261 §19.1.5, table 1): an API
    # client's "?Subject=..." or ";method=..." does not reach the target's INVITE
    params = {k: v for k, v in uri.params.items() if k != "method"}
    return Destination(user, SipURI(uri.scheme, uri.user, None, uri.host, uri.port, params, {}))


class Router:
    """Routes destinations: every registered device of a local user (forked), else a SIP
    URI's own host, else the first ``[[routes]]`` entry whose pattern matches."""

    def __init__(self, users: Collection[str], routes: Sequence[RouteConfig],
                 devices: Callable[[str, float], list[Binding]],
                 local_hosts: Collection[str]) -> None:
        self._users = users
        self._routes = routes
        self._devices = devices
        self.local_hosts = frozenset(h.lower() for h in local_hosts)

    def destination(self, to: str) -> Destination:
        return parse_destination(to, self.local_hosts)

    def is_local_user(self, destination: Destination) -> bool:
        return destination.uri is None and destination.number in self._users

    def route(self, destination: Destination, now: float) -> list[Target] | Unavailable | NoRoute:
        number = destination.number
        if self.is_local_user(destination):
            bindings = self._devices(number, now)
            if not bindings:
                return Unavailable(number)
            return [Target(parse_uri(b.contact), b.peer, None, b.device) for b in bindings]
        if destination.uri is not None:
            return [Target(destination.uri, _literal_peer(destination.uri), None, "uri")]
        route = self._route_for(number)
        if route is None:
            return NoRoute(number)
        try:
            # the number goes into the template escaped: whatever a phone put in its
            # Request-URI ("%40evil.example", "%0D%0A") cannot change the route's host or
            # reach a header
            uri = parse_uri(route.target_uri(quote(number, safe=_USER_SAFE)))
        except SipError:
            return NoRoute(number)
        creds = (route.username, route.password) \
            if route.username and route.password is not None else None
        return [Target(uri, _literal_peer(uri), creds, "route")]

    def routable(self, destination: Destination) -> bool:
        """Whether ``destination`` has somewhere to go (ignoring registrations)."""
        return (self.is_local_user(destination) or destination.uri is not None
                or self._route_for(destination.number) is not None)

    def _route_for(self, number: str) -> RouteConfig | None:
        """The first ``[[routes]]`` entry matching ``number``."""
        return next((r for r in self._routes if r.match.search(number)), None)


def user_uri(user: str, host: str) -> SipURI:
    """``sip:user@host`` with the user part escaped (RFC 3261 §25.1)."""
    return SipURI("sip", quote(user, safe=_USER_SAFE), None, host.strip("[]"), None, {}, {})


_USER_SAFE = "-_.!~*'()&=+$,;?/"  # unreserved and user-unreserved: not escaped


def callee_uri(target: Target, number: str, domain: str) -> SipURI:
    """The To of an INVITE to ``target`` for ``number``: the route's or URI's own address
    (without its parameters), else the number at our domain (a device's Contact is
    private and means nothing to anyone else)."""
    uri = target.uri
    if isinstance(uri, SipURI) and uri.user is not None and uri.unquote_user() == number:
        return SipURI(uri.scheme, uri.user, None, uri.host, uri.port, {}, {})
    return user_uri(number, domain)


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

