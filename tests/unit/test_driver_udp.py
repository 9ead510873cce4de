"""SipDriver's UDP send path: Twisted's Port.write checks each new destination, later
datagrams to it go straight to the socket, and any socket error takes Port.write's path."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import error
from twisted.internet.task import Clock

from sipdial.sip.endpoint import Endpoint
from sipdial.sip.peer import Peer
from sipdial.sip.timers import TimerHeap
from sipdial.sip.transaction import TimerConfig
from sipdial.transport.driver import SipDriver


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.fail: OSError | None = None

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        if self.fail is not None:
            raise self.fail
        self.sent.append((data, addr))
        return len(data)


class FakePort:
    """Port.write's contract: IP literals only, EMSGSIZE as MessageLengthError."""

    def __init__(self) -> None:
        self.socket = FakeSocket()
        self.writes: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            socket.inet_pton(socket.AF_INET, addr[0])
        except OSError:
            raise error.InvalidAddressError(addr[0], "not an IP address") from None
        self.writes.append((data, addr))
        if self.socket.fail is not None:
            raise error.MessageLengthError("message too long")


def driver() -> tuple[SipDriver, FakePort]:
    timers = TimerHeap()
    d = SipDriver(Clock(), Endpoint(timers, TimerConfig()), timers)
    port = FakePort()
    d._udp[4] = port
    return d, port


def test_first_datagram_goes_through_port_write_then_straight_to_the_socket() -> None:
    d, port = driver()
    peer = Peer("udp", "192.0.2.7", 5060)
    d._send(peer, b"one")
    d._send(peer, b"two")
    d._send(peer, b"three")
    assert port.writes == [(b"one", ("192.0.2.7", 5060))]
    assert port.socket.sent == [(b"two", ("192.0.2.7", 5060)), (b"three", ("192.0.2.7", 5060))]


def test_a_host_name_is_refused_every_time() -> None:
    d, port = driver()
    peer = Peer("udp", "pbx.example.com", 5060)
    for _ in range(2):
        with pytest.raises(error.InvalidAddressError):
            d._send(peer, b"x")
    assert port.writes == [] and port.socket.sent == []


def test_a_socket_error_takes_port_writes_path() -> None:
    d, port = driver()
    peer = Peer("udp", "192.0.2.7", 5060)
    d._send(peer, b"one")
    port.socket.fail = OSError(90, "Message too long")
    with pytest.raises(error.MessageLengthError):
        d._send(peer, b"big")
    assert port.writes == [(b"one", ("192.0.2.7", 5060)), (b"big", ("192.0.2.7", 5060))]


def test_a_port_without_a_socket_always_uses_write() -> None:
    d, port = driver()
    bare: Any = type("Bare", (), {"writes": [], "write": lambda self, data, addr:
                                  self.writes.append((data, addr))})()
    d._udp[4] = bare
    peer = Peer("udp", "192.0.2.7", 5060)
    d._send(peer, b"a")
    d._send(peer, b"b")
    assert bare.writes == [(b"a", ("192.0.2.7", 5060)), (b"b", ("192.0.2.7", 5060))]
    assert port.socket.sent == []
