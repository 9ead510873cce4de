"""Twisted adapter for RFC 3263: resolve a SIP URI to the peers to send to, without blocking.

All decisions (what to look up, the order of NAPTR/SRV records, the fall-back chain, the error
text) are in the sans-IO :mod:`sipdial.sip.rfc3263`; this module sends its queries with
``twisted.names``, caches the answers and calls back::

    resolver = DnsResolver(reactor)                               # resolv.conf, /etc/hosts
    resolver = DnsResolver(reactor, servers=[("10.0.0.53", 53)], timeout=2.0)

    def on_done(result: list[Peer] | ResolveError) -> None:
        if isinstance(result, ResolveError):
            ...                    # result.message: "cannot resolve trunk.example.com: ..."
        else:
            ...                    # result[0] first, the rest for fail-over (RFC 3263 §4.3)

    resolver.resolve(SipURI.parse("sip:+4930123@trunk.example.com"), "udp", on_done)

Contract of :meth:`DnsResolver.resolve`:

- ``on_done`` is called exactly once, with a non-empty ``list[Peer]`` or a
  :class:`~sipdial.sip.rfc3263.ResolveError`; ``resolve`` itself never raises, and an
  exception raised by ``on_done`` is logged, not propagated.
- It is called synchronously, before ``resolve`` returns, when no network lookup is needed:
  a numeric host or ``maddr``, a name in the hosts file, a URI that cannot be resolved at all
  (``tel:``, an unsupported transport), or every answer already cached. Otherwise it is called
  from the reactor, at most ``timeout`` seconds later, with what was found by then (the IPv4
  addresses when only the AAAA query went unanswered; else a "timed out" ResolveError).
- A name found in the hosts file is a local override: its addresses are used with the port and
  transport RFC 3263 gives when there are no SRV records (the URI's, else the default ones),
  and no NAPTR/SRV query is sent, so such a name works without a reachable DNS server. Names
  reached through SRV records are looked up in the hosts file first, too. An edit of the file
  is seen within :data:`HOSTS_TTL` seconds.

Answers are cached per (name, record type) for their TTL (at most ``max_ttl``); NXDOMAIN and
empty answers for the SOA's negative TTL (RFC 2308, at most ``negative_ttl``); timeouts and
server failures not at all. Identical queries in flight are sent once, so 1,000 calls a second
to one trunk cost one set of lookups per TTL. The cache keeps the ``cache_size`` most recently
used entries.
"""

from __future__ import annotations

import logging
import random
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Generic, Protocol, TypeAlias, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.names import client, dns, error, hosts, resolve
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from sipdial.reactor_types import DelayedCall, TimeReactor
from sipdial.sip import (
    Answer,
    DnsFailure,
    NaptrRecord,
    Peer,
    Query,
    RecordType,
    Resolution,
    ResolveError,
    SipURI,
    SrvRecord,
    plan,
)

__all__ = ["HOSTS_TTL", "DnsLookups", "DnsResolver", "OnResolved"]

log = logging.getLogger("sipdial.transport")

#: ``on_done`` of :meth:`DnsResolver.resolve`.
OnResolved: TypeAlias = Callable[[list[Peer] | ResolveError], None]

#: How long a hosts file lookup (found or not) is reused: edits are seen within this time.
HOSTS_TTL = 30.0

_K = TypeVar("_K")
_V = TypeVar("_V")

# (answer, authority, additional) sections: lists of twisted.names.dns.RRHeader
_Sections: TypeAlias = tuple[list[Any], list[Any], list[Any]]


class DnsLookups(Protocol):
    """The part of ``twisted.names``' ``IResolver`` used here (any ``ResolverBase`` fits).

    ``timeout`` is the retransmission schedule of ``client.Resolver`` (seconds per try).
    The Deferreds fire with the (answer, authority, additional) sections, or fail with
    ``twisted.names.error`` exceptions (``DNSNameError`` for NXDOMAIN, ``DomainError`` when
    no resolver had the name, ``TimeoutError`` ...)."""

    def lookupNamingAuthorityPointer(
        self, name: str, timeout: Sequence[float] | None = None
    ) -> Deferred[_Sections]: ...

    def lookupService(
        self, name: str, timeout: Sequence[float] | None = None
    ) -> Deferred[_Sections]: ...

    def lookupAddress(
        self, name: str, timeout: Sequence[float] | None = None
    ) -> Deferred[_Sections]: ...

    def lookupIPV6Address(
        self, name: str, timeout: Sequence[float] | None = None
    ) -> Deferred[_Sections]: ...


def _tls_named(uri: SipURI, on_done: OnResolved) -> OnResolved:
    """``on_done`` with every TLS peer named by ``uri``'s host (RFC 5922 §4: the server's
    certificate is checked against the domain of the URI, not an SRV target or address)."""
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    name = host.rstrip(".").lower()

    def done(result: list[Peer] | ResolveError) -> None:
        if not isinstance(result, ResolveError):
            result = [replace(p, name=name) if p.transport == "tls" else p for p in result]
        on_done(result)

    return done


class DnsResolver:
    """RFC 3263 resolution of SIP URIs over ``twisted.names``, with a TTL cache.

    :param reactor: ``IReactorTime`` (and ``IReactorUDP``/``IReactorTCP`` unless ``resolver``
        is given: the DNS client's sockets live on it).
    :param servers: nameservers as (IP, port); default: those of ``resolv_conf`` (re-read
        when it changes).
    :param hosts_file: consulted before any DNS query (see the module docstring).
    :param resolver: use this instead of building a client from ``servers``/``resolv_conf``
        (tests; or a shared ``twisted.names`` resolver). ``hosts_file`` is still consulted.
    :param supported: transports the caller can send on; others are never chosen.
    :param timeout: seconds until ``on_done`` is called with whatever was found by then.
    :param rng: for the weighted SRV order (tests pass a seeded ``random.Random``).
    """

    def __init__(
        self,
        reactor: TimeReactor,
        *,
        servers: Sequence[tuple[str, int]] | None = None,
        resolv_conf: str = "/etc/resolv.conf",
        hosts_file: str = "/etc/hosts",
        resolver: DnsLookups | None = None,
        supported: Iterable[str] = ("udp", "tcp"),
        timeout: float = 4.0,
        cache_size: int = 1024,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._reactor = reactor
        self._hosts = FilePath(hosts_file)
        self._supported = frozenset(t.lower() for t in supported)
        self._timeout = timeout
        # Each query may use half the time (two tries), so a fall-back step still has time.
        self._query_timeout = (timeout / 4, timeout / 4)
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._rng = rng if rng is not None else random.Random()
        self._cache: _Cache[Query, Answer] = _Cache(cache_size)
        self._hosts_cache: _Cache[str, tuple[str, ...]] = _Cache(cache_size)
        self._inflight: dict[Query, list[Callable[[Answer], None]]] = {}
        self._resolver = resolver if resolver is not None else _default_resolver(
            reactor, servers, resolv_conf, hosts_file
        )

    def resolve(self, uri: SipURI, default_transport: str, on_done: OnResolved) -> None:
        """Resolve ``uri``; ``on_done`` gets the peers in order or a ResolveError, once.

        ``default_transport`` is the transport for a sip: URI without ``;transport`` where
        RFC 3263 says UDP (numeric host, explicit port, no NAPTR/SRV records). TLS peers
        carry the URI's host as :attr:`Peer.name`: what their certificate must match."""
        _Job(self, _tls_named(uri, on_done)).start(uri, default_transport)

    # --- lookups shared by all jobs: cache, in-flight coalescing -----------------------------

    def _hosts_addresses(self, name: str) -> tuple[str, ...]:
        now = self._reactor.seconds()
        found = self._hosts_cache.get(name, now)
        if found is None:
            found = tuple(
                hosts.searchFileForAll(  # type: ignore[no-untyped-call]
                    self._hosts, name.encode("ascii", "replace")
                )
            )
            self._hosts_cache.put(name, found, HOSTS_TTL, now)
        return found

    def _lookup(self, query: Query, on_answer: Callable[[Answer], None]) -> None:
        """``on_answer(answer)`` once: now if cached, else when the (shared) query returns."""
        cached = self._cache.get(query, self._reactor.seconds())
        if cached is not None:
            on_answer(cached)
            return
        waiting = self._inflight.get(query)
        if waiting is not None:
            waiting.append(on_answer)
            return
        self._inflight[query] = [on_answer]
        try:
            d = self._send(query)
        except Exception:
            log.exception("DNS %s: lookup raised", query)
            self._complete(query, DnsFailure.ERROR, 0.0)
            return
        d.addCallbacks(
            self._answered, self._failed, callbackArgs=(query,), errbackArgs=(query,)
        )

    def _send(self, query: Query) -> Deferred[_Sections]:
        r = self._resolver
        lookup = {
            RecordType.NAPTR: r.lookupNamingAuthorityPointer,
            RecordType.SRV: r.lookupService,
            RecordType.A: r.lookupAddress,
            RecordType.AAAA: r.lookupIPV6Address,
        }[query.type]
        return lookup(query.name, timeout=self._query_timeout)

    def _answered(self, sections: _Sections, query: Query) -> None:
        try:
            answer, ttl = _convert(query, sections, self._negative_ttl)
        except Exception:
            log.exception("DNS %s: unreadable answer", query)
            answer, ttl = DnsFailure.ERROR, 0.0
        self._complete(query, answer, min(ttl, self._max_ttl))

    def _failed(self, reason: Failure, query: Query) -> None:
        failure = _classify(reason)
        ttl = 0.0
        if failure is DnsFailure.NXDOMAIN:
            soa_ttl = _negative_ttl_of(reason.value)
            ttl = self._negative_ttl if soa_ttl is None else min(soa_ttl, self._negative_ttl)
        elif failure is DnsFailure.ERROR:
            log.info("DNS %s failed: %s", query, reason.getErrorMessage())
        self._complete(query, failure, ttl)

    def _complete(self, query: Query, answer: Answer, ttl: float) -> None:
        self._cache.put(query, answer, ttl, self._reactor.seconds())
        for on_answer in self._inflight.pop(query, []):
            try:
                on_answer(answer)
            except Exception:
                log.exception("DNS %s: delivering the answer raised", query)


class _Job:
    """One :meth:`DnsResolver.resolve` call: drives a Resolution, calls ``on_done`` once."""

    def __init__(self, owner: DnsResolver, on_done: OnResolved) -> None:
        self._owner = owner
        self._on_done = on_done
        self._target = ""
        self._resolution: Resolution | None = None
        self._timer: DelayedCall | None = None
        self._finished = False
        self._pumping = False

    def start(self, uri: SipURI, default_transport: str) -> None:
        try:
            self._target = uri.host or str(uri)
            p = plan(uri, default_transport, self._owner._supported)
            if isinstance(p, ResolveError):
                self._finish(p)
                return
            self._target = p.target
            resolution = Resolution(p, self._owner._rng)
            if resolution.done:  # numeric host: no DNS, no hosts file
                self._finish(resolution.result())
                return
            local = p.address_peers(self._owner._hosts_addresses(p.target))
            if local:
                self._finish(local)
                return
            self._resolution = resolution
            self._pump()
            if not self._finished:
                self._timer = self._owner._reactor.callLater(self._owner._timeout, self._expire)
        except Exception:
            self._crash()

    def _pump(self) -> None:
        """Send what the resolution asks for; answers may arrive synchronously (cache)."""
        resolution = self._resolution
        if self._pumping or self._finished or resolution is None:
            return
        self._pumping = True
        try:
            while not self._finished:
                asked = resolution.queries()
                if not asked:
                    break
                for query in asked:
                    if self._finished:
                        break
                    self._owner._lookup(query, partial(self._answer, query))
            if not self._finished and resolution.done:
                self._finish(resolution.result())
        except Exception:
            self._crash()
        finally:
            self._pumping = False

    def _answer(self, query: Query, answer: Answer) -> None:
        if self._finished or self._resolution is None:
            return  # after the deadline: nobody waits for it any more
        try:
            self._resolution.receive(query, answer)
        except Exception:
            self._crash()
            return
        self._pump()

    def _expire(self) -> None:
        self._timer = None
        if self._finished or self._resolution is None:
            return
        try:
            self._resolution.give_up()
            self._finish(self._resolution.result())
        except Exception:
            self._crash()

    def _crash(self) -> None:
        log.exception("DNS resolution of %s failed", self._target)
        self._finish(ResolveError(self._target, "internal error (see the log)"))

    def _finish(self, result: list[Peer] | ResolveError) -> None:
        if self._finished:
            return
        self._finished = True
        self._resolution = None
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if isinstance(result, ResolveError):
            log.debug("DNS: %s", result.message)
        else:
            log.debug("DNS: %s -> %s", self._target, ", ".join(map(str, result)))
        try:
            self._on_done(result)
        except Exception:
            log.exception("DNS resolution of %s: on_done raised", self._target)


class _Cache(Generic[_K, _V]):
    """Values by key until their expiry time; the least recently used beyond ``size`` are
    dropped. Time is an argument (``reactor.seconds()``)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[_K, tuple[float, _V]] = OrderedDict()

    def get(self, key: _K, now: float) -> _V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: _K, value: _V, ttl: float, now: float) -> None:
        if self._size <= 0 or ttl <= 0:
            return
        self._entries[key] = (now + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


# --- twisted.names <-> rfc3263 ----------------------------------------------------------------

_DNS_TYPES = {
    RecordType.NAPTR: dns.NAPTR,
    RecordType.SRV: dns.SRV,
    RecordType.A: dns.A,
    RecordType.AAAA: dns.AAAA,
}


def _default_resolver(
    reactor: TimeReactor,
    servers: Sequence[tuple[str, int]] | None,
    resolv_conf: str,
    hosts_file: str,
) -> DnsLookups:
    """hosts file, then the nameservers: ``client.createResolver`` without its cache (ours
    replaces it) and with our reactor (createResolver takes none)."""
    upstream = (
        client.Resolver(servers=list(servers), reactor=reactor)  # type: ignore[no-untyped-call]
        if servers is not None
        else client.Resolver(resolv=resolv_conf, reactor=reactor)  # type: ignore[no-untyped-call]
    )
    local = hosts.Resolver(file=hosts_file, ttl=HOSTS_TTL)  # type: ignore[no-untyped-call]
    return cast(DnsLookups, resolve.ResolverChain([local, upstream]))  # type: ignore[no-untyped-call]


def _text(value: Any) -> str:
    """A Charstr / Name / bytes as str."""
    raw = getattr(value, "string", None)
    if raw is None:
        raw = getattr(value, "name", value)
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)


def _convert(query: Query, sections: _Sections, negative_ttl: float) -> tuple[Answer, float]:
    """The records of the queried type (CNAMEs followed by the server are skipped) and the
    time to cache them: the smallest TTL, or the negative TTL for an empty answer."""
    answers, authority, _additional = sections
    wanted = _DNS_TYPES[query.type]
    rrs = [rr for rr in answers if rr.type == wanted]
    if not rrs:
        soa_ttl = _soa_ttl(authority)
        return (), min(soa_ttl if soa_ttl is not None else negative_ttl, negative_ttl)
    ttl = float(min(rr.ttl for rr in rrs))
    payloads = [rr.payload for rr in rrs]
    if query.type is RecordType.NAPTR:
        naptr = tuple(
            NaptrRecord(
                p.order, p.preference, _text(p.flags), _text(p.service), _text(p.regexp),
                _text(p.replacement),
            )
            for p in payloads
        )
        return naptr, ttl
    if query.type is RecordType.SRV:
        srv = tuple(SrvRecord(p.priority, p.weight, p.port, _text(p.target)) for p in payloads)
        return srv, ttl
    if query.type is RecordType.A:
        return tuple(socket.inet_ntop(socket.AF_INET, p.address) for p in payloads), ttl
    return tuple(socket.inet_ntop(socket.AF_INET6, p.address) for p in payloads), ttl


def _soa_ttl(authority: Iterable[Any]) -> float | None:
    """RFC 2308 §5: a negative answer is cached for min(SOA TTL, SOA MINIMUM)."""
    for rr in authority:
        if rr.type == dns.SOA:
            return float(min(rr.ttl, rr.payload.minimum))
    return None


def _negative_ttl_of(exc: BaseException | None) -> float | None:
    message = exc.args[0] if exc is not None and exc.args else None
    authority = getattr(message, "authority", None)
    return _soa_ttl(authority) if authority is not None else None


def _classify(reason: Failure) -> DnsFailure:
    exc = reason.value
    if isinstance(exc, error.DNSServerError):
        return DnsFailure.SERVFAIL
    if isinstance(exc, error.DNSQueryRefusedError):
        return DnsFailure.REFUSED
    if isinstance(exc, DeferredTimeoutError | TimeoutError):  # incl. DNSQueryTimeoutError
        return DnsFailure.TIMEOUT
    if isinstance(exc, error.DNSFormatError | error.DNSNotImplementedError | error.DNSUnknownError):
        return DnsFailure.ERROR
    # DNSNameError (NXDOMAIN); DomainError: no resolver in the chain has the name
    if isinstance(exc, error.DomainError | error.AuthoritativeDomainError):
        return DnsFailure.NXDOMAIN
    return DnsFailure.ERROR
