"""Waiting on a private select reactor that the test iterates itself (no reactor thread, no
sleeps): for adapters that take an injected reactor (media, DNS). The ``reactor`` fixture is
in ``tests/integration/conftest.py``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol

WAIT = 5.0  # seconds, upper bound of every wait


def pump(reactor: Any, done: Callable[[], bool], what: str, step: float = 0.02) -> None:
    """Run ``reactor`` until ``done()``; fail after :data:`WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        reactor.iterate(step)


class Phone(protocol.DatagramProtocol):
    """The remote end: collects the RTP it receives and sends RTP to sipdial."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        transport: Any = self.transport
        transport.write(data, addr)
