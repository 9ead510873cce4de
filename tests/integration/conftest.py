"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.selectreactor import SelectReactor

from tests.integration.reactor_helpers import Phone


@pytest.fixture
def reactor() -> Iterator[Any]:
    r: Any = SelectReactor()
    yield r
    for port in list(r.getReaders()):  # anything a test left open
        if hasattr(port, "stopListening"):
            port.stopListening()
    r.iterate(0)  # UDP ports close at the next iteration


@pytest.fixture
def phone(reactor: Any) -> Iterator[tuple[Phone, int]]:
    p = Phone()
    port = reactor.listenUDP(0, p, interface="127.0.0.1")
    yield p, port.getHost().port
    port.stopListening()
