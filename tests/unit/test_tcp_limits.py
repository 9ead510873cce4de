"""SIP-TCP limits without sockets (MemoryReactorClock + StringTransport): a message must
arrive whole within a deadline of its first byte, partial bytes do not keep a connection
alive, one source IP holds a bounded number of connections, the budget derived from
``nofile`` caps them all, and every connection deadline shares the driver's one timer."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from sipdial.sip import Endpoint, Peer, StreamFramer, TimerHeap
from sipdial.transport import SipDriver, TcpLimits, tcp_budget
from sipdial.transport.driver import _Progress

LIMITS = TcpLimits(message_timeout=5.0, idle_timeout=600.0, max_per_source=3,
                   max_connections=10)


def options(n: int) -> bytes:
    return (
        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKlim{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=t{n}\r\n"
        "To: <sip:127.0.0.1>\r\n"
        f"Call-ID: lim{n}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Received(list[str]):
    """The transaction user: the Call-ID of every request delivered."""

    def __call__(self, event: Any, now: float) -> None:
        self.append(event.request.headers.get("Call-ID"))


def driver(limits: TcpLimits = LIMITS) -> tuple[SipDriver, MemoryReactorClock, Any]:
    reactor = MemoryReactorClock()
    timers = TimerHeap()
    d = SipDriver(reactor, Endpoint(timers), timers, Received(), tcp=limits)
    d.listen("tcp", "127.0.0.1", 5060)
    return d, reactor, reactor.tcpServers[0][1]


def connect(factory: Any, port: int, host: str = "127.0.0.1") -> tuple[Any, StringTransport]:
    addr = IPv4Address("TCP", host, port)
    proto = factory.buildProtocol(addr)
    assert proto is not None, f"connection from {host}:{port} refused"
    transport = StringTransport(peerAddress=addr)
    proto.makeConnection(transport)
    return proto, transport


def closed(transport: StringTransport) -> bool:
    return bool(transport.disconnecting or getattr(transport, "disconnected", False))


def test_slowloris_is_closed_at_the_message_deadline_although_bytes_keep_coming() -> None:
    _d, reactor, factory = driver()
    proto, transport = connect(factory, 40000)
    message = options(1)
    for i in range(4):  # one byte a second: each used to reset the idle timer
        reactor.advance(1.0)
        proto.dataReceived(message[i:i + 1])
    assert not closed(transport)
    reactor.advance(1.1)  # 5.1 s after the accept, the first message still unfinished
    assert closed(transport)


def test_a_connection_that_sends_nothing_is_closed_after_the_message_timeout() -> None:
    _d, reactor, factory = driver()
    _proto, transport = connect(factory, 40001)
    reactor.advance(4.9)
    assert not closed(transport)
    reactor.advance(0.2)
    assert closed(transport)


def test_complete_messages_keep_the_connection_until_the_idle_timeout() -> None:
    d, reactor, factory = driver()
    proto, transport = connect(factory, 40002)
    proto.dataReceived(options(2))
    assert d.tu == ["lim2"]
    reactor.advance(300)
    assert not closed(transport)  # the message deadline no longer applies
    proto.dataReceived(b"\r\n\r\n")  # RFC 5626 keep-alive: activity
    reactor.advance(599)
    assert not closed(transport)
    reactor.advance(2)
    assert closed(transport)


def test_each_message_has_its_own_deadline_from_its_first_byte() -> None:
    d, reactor, factory = driver()
    proto, transport = connect(factory, 40003)
    second = options(4)
    # one segment: a whole message and the start of the next one
    proto.dataReceived(options(3) + second[:10])
    reactor.advance(3)
    proto.dataReceived(second[10:20])
    reactor.advance(1.9)
    proto.dataReceived(second[20:])  # 4.9 s after its first byte: in time
    assert d.tu == ["lim3", "lim4"]
    reactor.advance(100)
    assert not closed(transport)
    proto.dataReceived(b"\r\n" + options(5)[:30])  # a third message begins at t=104.9
    reactor.advance(4.9)
    assert not closed(transport)
    reactor.advance(0.2)
    assert closed(transport)


def test_a_body_that_never_comes_is_a_message_not_finished() -> None:
    _d, reactor, factory = driver()
    proto, transport = connect(factory, 40004)
    proto.dataReceived(options(6))
    reactor.advance(50)
    head = options(7).replace(b"Content-Length: 0", b"Content-Length: 100")
    proto.dataReceived(head + b"x" * 10)  # headers complete, body 10 of 100 bytes
    reactor.advance(4)
    proto.dataReceived(b"y")
    reactor.advance(1.1)
    assert closed(transport)


def test_connections_over_the_per_source_limit_are_refused_at_accept() -> None:
    d, _reactor, factory = driver()
    conns = [connect(factory, 41000 + i) for i in range(3)]
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 41010)) is None
    connect(factory, 41011, host="127.0.0.2")  # another source is not affected
    proto, _transport = conns[0]
    proto.connectionLost(None)
    connect(factory, 41012)  # a slot freed
    assert d.tcp_connections() == 4


def test_connections_beyond_the_budget_are_refused_whatever_the_source() -> None:
    d, _reactor, factory = driver(TcpLimits(max_per_source=100, max_connections=5))
    for i in range(5):
        connect(factory, 42000 + i, host=f"10.0.0.{i + 1}")
    assert factory.buildProtocol(IPv4Address("TCP", "10.0.1.1", 42010)) is None
    assert d.tcp_connections() == 5


def test_no_outgoing_connection_beyond_the_budget() -> None:
    d, reactor, factory = driver(TcpLimits(max_per_source=100, max_connections=1))
    connect(factory, 43000)
    d._send(Peer("tcp", "127.0.0.9", 5060), options(8))
    assert reactor.tcpClients == []  # no connect() for it
    assert d.tcp_connections() == 1


def test_every_connection_deadline_shares_the_drivers_one_reactor_timer() -> None:
    _d, reactor, factory = driver(TcpLimits(max_per_source=1000, max_connections=1000))
    transports = [connect(factory, 44000 + i)[1] for i in range(200)]
    reactor.advance(0)  # the driver's wake-up
    assert len(reactor.getDelayedCalls()) == 1
    reactor.advance(5.1)
    assert all(closed(t) for t in transports)


@pytest.mark.parametrize(("nofile", "reserve", "cap", "budget"), [
    (1024, 256, 10_000, 768),  # the common default: 256 descriptors stay free
    (256, 200, 10_000, 56),
    (1_048_576, 256, 10_000, 10_000),  # the configured cap
    (100, 256, 10_000, 8),  # a reserve larger than the limit still leaves a few
])
def test_the_budget_leaves_the_reserve_to_everything_else(
        nofile: int, reserve: int, cap: int, budget: int) -> None:
    assert tcp_budget(cap, reserve, nofile) == budget


def test_progress_counts_the_unfinished_message_across_any_segmentation() -> None:
    rng = random.Random(7)
    for _ in range(200):
        parts = []
        for n in range(rng.randint(1, 4)):
            parts.append(rng.choice([b"", b"\r\n", b"\r\n\r\n"]))
            parts.append(options(n))
        stream = b"".join(parts) + options(99)[: rng.randint(0, 40)]
        framer, progress = StreamFramer(), _Progress()
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 120)
            chunk = stream[pos:pos + step]
            pos += len(chunk)
            progress.update(chunk, framer.feed(chunk))
        unfinished = stream.rsplit(b"Content-Length: 0\r\n\r\n", 1)[1].lstrip(b"\r\n")
        assert progress.held == len(unfinished), stream
