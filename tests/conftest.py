"""Shared fixtures.  Peer factories start real SIP peers (tests/peers) and stop
every one of them at teardown, pass or fail."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp


@pytest.fixture
def baresip_factory(tmp_path: Path) -> Iterator[Callable[..., Baresip]]:
    """``make(**kw)`` -> a started :class:`Baresip` (kw as for its constructor)."""
    started: list[Baresip] = []

    def make(**kw: Any) -> Baresip:
        phone = Baresip(tmp_path, **kw)
        started.append(phone)
        return phone.start()

    yield make
    for phone in reversed(started):
        phone.stop()


@pytest.fixture
def sipp_factory(tmp_path: Path) -> Iterator[Callable[..., Sipp]]:
    """``make(scenario, **kw)`` -> a not yet started :class:`Sipp`; ``remote=`` makes a UAC."""
    made: list[Sipp] = []

    def make(scenario: str, **kw: Any) -> Sipp:
        sipp = Sipp(tmp_path, scenario, **kw)
        made.append(sipp)
        return sipp

    yield make
    for sipp in reversed(made):
        sipp.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On CI (``CI=true``) a skipped test fails: a skip proves nothing, and CI must have
    every binary and privilege a test needs (.ci/run installs them)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, which must run every test: {reason}"
