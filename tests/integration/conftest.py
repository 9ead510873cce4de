"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.selectreactor import SelectReactor


@pytest.fixture
def reactor() -> Iterator[Any]:
    r: Any = SelectReactor()
    yield r
    for port in list(r.getReaders()):  # anything a test left open
        if hasattr(port, "stopListening"):
            port.stopListening()
    r.iterate(0)  # UDP ports close at the next iteration
