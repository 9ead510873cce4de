"""SipDriver's TCP side without sockets (MemoryReactorClock + StringTransport): stream
framing, CRLF keep-alive answered, idle connections closed, a cap on connections."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from sipdial.sip.endpoint import Endpoint
from sipdial.sip.timers import TimerHeap
from sipdial.transport import TcpLimits
from sipdial.transport.driver import SipDriver


def driver() -> tuple[SipDriver, MemoryReactorClock, Any]:
    reactor = MemoryReactorClock()
    timers = TimerHeap()
    d = SipDriver(reactor, Endpoint(timers), timers)
    d.listen("tcp", "127.0.0.1", 5060)
    factory = reactor.tcpServers[0][1]
    return d, reactor, factory


def connect(factory: Any, port: int) -> tuple[Any, StringTransport]:
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
    proto.makeConnection(transport)
    return proto, transport


def test_keepalive_is_answered_and_activity_postpones_the_idle_close() -> None:
    d, reactor, factory = driver()
    d.tcp = TcpLimits(idle_timeout=60.0, message_timeout=100.0)
    proto, transport = connect(factory, 40000)
    reactor.advance(50)
    proto.dataReceived(b"\r\n\r\n")  # RFC 5626 ping: a complete message
    assert transport.value() == b"\r\n"  # pong
    reactor.advance(50)
    assert not transport.disconnecting  # 50 s since the last traffic
    reactor.advance(11)
    assert transport.disconnecting


def test_connections_beyond_the_cap_are_refused() -> None:
    d, _reactor, factory = driver()
    d.tcp = TcpLimits(max_connections=2)
    connect(factory, 40001)
    connect(factory, 40002)
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40003)) is None


def test_wildcard_listener_advertises_the_domain_in_via_and_contact() -> None:
    reactor = MemoryReactorClock()
    timers = TimerHeap()
    endpoint = Endpoint(timers)
    d = SipDriver(reactor, endpoint, timers)
    d.listen("tcp", "0.0.0.0", 5060, advertise="sip.example.com")
    (host, _port), = endpoint.local.values()
    assert host == "sip.example.com"


def test_the_docker_example_config_loads() -> None:
    from pathlib import Path

    from sipdial.config import load_config

    config = load_config(Path(__file__).parents[2] / "docker" / "sipdial.toml")
    assert config.media.port_min == 10000 and config.sip.listen[0].host == "0.0.0.0"
