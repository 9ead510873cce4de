"""DnsResolver against a real DNS server on 127.0.0.1: twisted.names' DNSServerFactory serving
an in-memory zone over UDP, and a UDP socket that never answers for the timeouts.

Every test gets a fresh (not installed) reactor and drives it with ``iterate()`` as
tests/integration/test_media_transport.py does: each wait returns as soon as the awaited
callback has run, and is bounded by ``WAIT``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, protocol
from twisted.names import authority, dns, server

from sipdial.sip.peer import Peer
from sipdial.sip.rfc3263 import ResolveError
from sipdial.sip.uri import SipURI
from sipdial.transport.dns import DnsResolver
from tests.integration.reactor_helpers import WAIT, pump

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"

Result = list[Peer] | ResolveError






class Zone(authority.FileAuthority):
    """An in-memory authoritative zone that records every question it is asked.

    Names under ``servfail.`` make the server answer SERVFAIL."""

    def __init__(self, origin: str, records: dict[str, list[Any]]) -> None:
        self._origin = origin.encode()
        self._initial = records
        self.asked: list[tuple[str, str]] = []
        super().__init__(origin)

    def loadFile(self, filename: Any) -> None:
        soa = dns.Record_SOA(
            mname=b"ns." + self._origin, rname=b"hostmaster." + self._origin, serial=1,
            refresh=60, retry=60, expire=60, minimum=60, ttl=60,
        )
        self.soa = (self._origin, soa)
        self.records = {name.encode(): list(recs) for name, recs in self._initial.items()}
        self.records.setdefault(self._origin, []).append(soa)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Any:
        self.asked.append((dns.QUERY_TYPES.get(type, str(type)), name.decode()))
        if name.startswith(b"servfail."):
            return defer.fail(RuntimeError("broken zone"))  # the server answers SERVFAIL
        return super()._lookup(name, cls, type, timeout)


def zone_records() -> dict[str, list[Any]]:
    return {
        # NAPTR -> SRV -> A/AAAA; the SIPS record is for TLS, which is not supported here
        "naptr.test": [
            dns.Record_NAPTR(20, 10, b"s", b"SIP+D2U", b"", b"_sip._udp.naptr.test", ttl=300),
            dns.Record_NAPTR(10, 10, b"s", b"SIP+D2T", b"", b"_sip._tcp.naptr.test", ttl=300),
            dns.Record_NAPTR(5, 10, b"s", b"SIPS+D2T", b"", b"_sips._tcp.naptr.test", ttl=300),
        ],
        "_sip._tcp.naptr.test": [
            dns.Record_SRV(20, 0, 5071, b"pbx2.naptr.test", ttl=300),
            dns.Record_SRV(10, 0, 5070, b"pbx1.naptr.test", ttl=300),
        ],
        "_sip._udp.naptr.test": [dns.Record_SRV(10, 0, 5060, b"pbx1.naptr.test", ttl=300)],
        "_sips._tcp.naptr.test": [dns.Record_SRV(10, 0, 5061, b"pbx1.naptr.test", ttl=300)],
        "pbx1.naptr.test": [
            dns.Record_A("192.0.2.1", ttl=300),
            dns.Record_AAAA("2001:db8::1", ttl=300),
        ],
        "pbx2.naptr.test": [dns.Record_A("192.0.2.2", ttl=300)],
        # SRV only, under a name that has no records itself (the server says NXDOMAIN)
        "_sip._udp.srv.test": [dns.Record_SRV(0, 0, 5080, b"host.srv.test", ttl=300)],
        "host.srv.test": [dns.Record_A("192.0.2.3", ttl=300)],
        # A only, AAAA only
        "a.test": [dns.Record_A("192.0.2.4", ttl=300)],
        "v6.test": [dns.Record_AAAA("2001:db8::6", ttl=300)],
        # not to be cached
        "ttl0.test": [dns.Record_A("192.0.2.9", ttl=0)],
        # an SRV target that only the hosts file knows
        "_sip._udp.hosted.test": [dns.Record_SRV(0, 0, 5062, b"pbx.lan", ttl=300)],
    }


@pytest.fixture
def zone() -> Zone:
    return Zone("test", zone_records())


@pytest.fixture
def dns_server(reactor: Any, zone: Zone) -> tuple[str, int]:
    factory = server.DNSServerFactory(authorities=[zone])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory, reactor=reactor), interface=HOST)
    return HOST, port.getHost().port


@pytest.fixture
def hosts_file(tmp_path: Path) -> str:
    path = tmp_path / "hosts"
    path.write_text("# test hosts\n192.0.2.77 pbx.lan pbx\n")
    return str(path)


@pytest.fixture
def resolver(reactor: Any, dns_server: tuple[str, int], hosts_file: str) -> DnsResolver:
    return DnsResolver(reactor, servers=[dns_server], hosts_file=hosts_file, timeout=WAIT)


def resolve(reactor: Any, resolver: DnsResolver, uri: str, transport: str = "udp") -> Result:
    """Resolve and wait for the one callback."""
    results: list[Result] = []
    resolver.resolve(SipURI.parse(uri), transport, results.append)
    pump(reactor, lambda: bool(results), f"the resolution of {uri}")
    assert len(results) == 1
    return results[0]


# --- against the DNS server ------------------------------------------------------------------


def test_naptr_srv_a_chain(reactor: Any, resolver: DnsResolver, zone: Zone) -> None:
    result = resolve(reactor, resolver, "sip:+4930123@naptr.test")
    assert result == [
        Peer("tcp", "192.0.2.1", 5070),
        Peer("tcp", "2001:db8::1", 5070),
        Peer("tcp", "192.0.2.2", 5071),
        Peer("udp", "192.0.2.1", 5060),
        Peer("udp", "2001:db8::1", 5060),
    ]
    assert zone.asked[0] == ("NAPTR", "naptr.test")
    assert sorted(zone.asked[1:3]) == [
        ("SRV", "_sip._tcp.naptr.test"), ("SRV", "_sip._udp.naptr.test"),
    ]
    assert ("SRV", "_sips._tcp.naptr.test") not in zone.asked  # TLS is not supported
    assert sorted(zone.asked[3:]) == [
        ("A", "pbx1.naptr.test"), ("A", "pbx2.naptr.test"),
        ("AAAA", "pbx1.naptr.test"), ("AAAA", "pbx2.naptr.test"),
    ]


def test_srv_only(reactor: Any, resolver: DnsResolver, zone: Zone) -> None:
    assert resolve(reactor, resolver, "sip:bob@srv.test") == [Peer("udp", "192.0.2.3", 5080)]
    assert ("SRV", "_sip._udp.srv.test") in zone.asked


def test_explicit_transport_asks_only_its_srv_name(
    reactor: Any, resolver: DnsResolver, zone: Zone
) -> None:
    result = resolve(reactor, resolver, "sip:bob@naptr.test;transport=tcp")
    assert result == [
        Peer("tcp", "192.0.2.1", 5070),
        Peer("tcp", "2001:db8::1", 5070),
        Peer("tcp", "192.0.2.2", 5071),
    ]
    assert ("NAPTR", "naptr.test") not in zone.asked
    assert zone.asked[0] == ("SRV", "_sip._tcp.naptr.test")


def test_a_only(reactor: Any, resolver: DnsResolver, zone: Zone) -> None:
    assert resolve(reactor, resolver, "sip:bob@a.test") == [Peer("udp", "192.0.2.4", 5060)]
    assert zone.asked[0] == ("NAPTR", "a.test")
    assert {("A", "a.test"), ("AAAA", "a.test")} <= set(zone.asked)


def test_explicit_port_asks_only_for_addresses(
    reactor: Any, resolver: DnsResolver, zone: Zone
) -> None:
    result = resolve(reactor, resolver, "sip:bob@a.test:5099;transport=tcp")
    assert result == [Peer("tcp", "192.0.2.4", 5099)]
    assert sorted(zone.asked) == [("A", "a.test"), ("AAAA", "a.test")]


def test_aaaa(reactor: Any, resolver: DnsResolver) -> None:
    assert resolve(reactor, resolver, "sip:bob@v6.test", "tcp") == [
        Peer("tcp", "2001:db8::6", 5060)
    ]


def test_nxdomain_gives_the_error_message(reactor: Any, resolver: DnsResolver) -> None:
    result = resolve(reactor, resolver, "sip:+4930123@nope.test")
    assert isinstance(result, ResolveError)
    assert result.message == "cannot resolve nope.test: no such host (NXDOMAIN)"


def test_servfail_gives_the_error_message(reactor: Any, resolver: DnsResolver) -> None:
    result = resolve(reactor, resolver, "sip:x@servfail.test:5060")
    assert isinstance(result, ResolveError)
    assert result.message.startswith("cannot resolve servfail.test: ")
    assert "DNS server failure (SERVFAIL)" in result.message


def test_name_from_the_hosts_file_needs_no_dns(
    reactor: Any, resolver: DnsResolver, zone: Zone
) -> None:
    results: list[Result] = []
    resolver.resolve(SipURI.parse("sip:x@PBX.lan;transport=tcp"), "udp", results.append)
    assert results == [[Peer("tcp", "192.0.2.77", 5060)]]  # synchronously
    assert zone.asked == []


def test_srv_target_from_the_hosts_file(reactor: Any, resolver: DnsResolver, zone: Zone) -> None:
    assert resolve(reactor, resolver, "sip:x@hosted.test;transport=udp") == [
        Peer("udp", "192.0.2.77", 5062)
    ]
    assert ("A", "pbx.lan") not in zone.asked  # answered from the hosts file


def test_second_resolution_comes_from_the_cache(
    reactor: Any, resolver: DnsResolver, zone: Zone
) -> None:
    first = resolve(reactor, resolver, "sip:a@naptr.test")
    asked = list(zone.asked)
    results: list[Result] = []
    resolver.resolve(SipURI.parse("sip:b@naptr.test"), "udp", results.append)
    assert len(results) == 1  # synchronously: every answer was cached
    assert results[0] == first
    assert zone.asked == asked
    # negative answers too: NAPTR NODATA and the SRV NXDOMAINs of a.test
    resolve(reactor, resolver, "sip:bob@a.test")
    asked = list(zone.asked)
    results.clear()
    resolver.resolve(SipURI.parse("sip:bob@a.test"), "udp", results.append)
    assert results == [[Peer("udp", "192.0.2.4", 5060)]] and zone.asked == asked


def test_concurrent_resolutions_share_the_queries(
    reactor: Any, resolver: DnsResolver, zone: Zone
) -> None:
    results: list[Result] = []
    for i in range(50):
        resolver.resolve(SipURI.parse(f"sip:{i}@naptr.test"), "udp", results.append)
    pump(reactor, lambda: len(results) >= 50, "50 resolutions")
    assert len(results) == 50 and all(r == results[0] for r in results)
    assert isinstance(results[0], list) and len(results[0]) == 5
    assert len(zone.asked) == len(set(zone.asked)) == 7  # NAPTR, 2 SRV, 2 x (A, AAAA)


def test_zero_ttl_is_not_cached(reactor: Any, resolver: DnsResolver, zone: Zone) -> None:
    for _ in range(2):
        assert resolve(reactor, resolver, "sip:x@ttl0.test:5060") == [
            Peer("udp", "192.0.2.9", 5060)
        ]
    assert zone.asked.count(("A", "ttl0.test")) == 2


# --- a server that never answers ---------------------------------------------------------------


class Silent(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received += 1


def test_timeout_when_the_server_does_not_answer(reactor: Any, hosts_file: str) -> None:
    silent = Silent()
    port = reactor.listenUDP(0, silent, interface=HOST)
    resolver = DnsResolver(
        reactor, servers=[(HOST, port.getHost().port)], hosts_file=hosts_file, timeout=0.4
    )
    results: list[Result] = []
    started = time.monotonic()
    resolver.resolve(SipURI.parse("sip:x@slow.test"), "udp", results.append)
    assert results == []
    pump(reactor, lambda: bool(results), "the timeout")
    elapsed = time.monotonic() - started
    (result,) = results
    assert isinstance(result, ResolveError)
    assert result.message.startswith("cannot resolve slow.test: ")
    assert "timed out" in result.message
    assert 0.35 <= elapsed < 2.0
    assert silent.received >= 1
    # the DNS client's own retry timers run out later: still exactly one callback
    pump(reactor, lambda: not reactor.getDelayedCalls(), "the DNS client's timers")
    assert len(results) == 1


# --- no DNS at all -----------------------------------------------------------------------------


class Forbidden:
    """A resolver that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"DNS used: {name}")


class Raising:
    """A resolver whose every lookup raises."""

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self, name: str, timeout: Any = None) -> Any:
        self.calls += 1
        raise RuntimeError("resolver bug")

    lookupNamingAuthorityPointer = lookupService = lookupAddress = lookupIPV6Address = _fail


def test_numeric_hosts_are_answered_synchronously_without_dns(
    reactor: Any, hosts_file: str
) -> None:
    resolver = DnsResolver(
        reactor, resolver=Forbidden(), hosts_file=hosts_file,
        supported=("udp", "tcp", "tls"),
    )
    results: list[Result] = []
    resolver.resolve(SipURI.parse("sip:x@192.0.2.1"), "udp", results.append)
    resolver.resolve(SipURI.parse("sips:x@[2001:db8::1]:5071"), "udp", results.append)
    resolver.resolve(SipURI.parse("sip:x@a.test;maddr=192.0.2.5"), "tcp", results.append)
    assert results == [
        [Peer("udp", "192.0.2.1", 5060)],
        [Peer("tls", "2001:db8::1", 5071)],
        [Peer("tcp", "192.0.2.5", 5060)],
    ]
    assert reactor.getDelayedCalls() == []


def test_plan_errors_are_answered_synchronously(reactor: Any, hosts_file: str) -> None:
    resolver = DnsResolver(reactor, resolver=Forbidden(), hosts_file=hosts_file)
    results: list[Result] = []
    resolver.resolve(SipURI.parse("tel:+4930123"), "udp", results.append)
    resolver.resolve(SipURI.parse("sip:x@example.com;transport=sctp"), "udp", results.append)
    assert [r.reason for r in results if isinstance(r, ResolveError)] == [
        "not a sip: or sips: URI",
        "transport sctp is not supported",
    ]


def test_a_raising_resolver_still_calls_back_once(reactor: Any, hosts_file: str) -> None:
    raising = Raising()
    resolver = DnsResolver(reactor, resolver=raising, hosts_file=hosts_file)
    results: list[Result] = []
    resolver.resolve(SipURI.parse("sip:x@broken.test"), "udp", results.append)
    assert len(results) == 1  # every lookup failed at once
    result = results[0]
    assert isinstance(result, ResolveError)
    assert result.message == "cannot resolve broken.test: NAPTR broken.test: DNS error"
    assert raising.calls == 5  # NAPTR, SRV udp and tcp, A, AAAA
    assert reactor.getDelayedCalls() == []  # no deadline left behind


def test_an_exception_in_on_done_is_not_propagated(reactor: Any, hosts_file: str) -> None:
    resolver = DnsResolver(reactor, resolver=Forbidden(), hosts_file=hosts_file)
    calls: list[Result] = []

    def on_done(result: Result) -> None:
        calls.append(result)
        raise ValueError("caller bug")

    resolver.resolve(SipURI.parse("sip:x@192.0.2.1"), "udp", on_done)
    assert calls == [[Peer("udp", "192.0.2.1", 5060)]]
