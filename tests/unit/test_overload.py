"""Overload control: a late reactor makes the API refuse new calls (503) instead of
accepting calls it cannot serve."""

from __future__ import annotations

from twisted.internet.task import Clock

from sipdial.api.service import ApiError
from sipdial.app import LagMonitor
from tests.unit.test_clicktodial_flow import Flow


def test_lag_monitor_sees_a_late_reactor_and_recovers() -> None:
    clock = Clock()
    lag = LagMonitor(clock, interval=0.1, limit=0.25)
    for _ in range(10):
        clock.advance(0.1)
    assert not lag.overloaded()
    clock.advance(1.0)  # one heartbeat ran a second late: the reactor was blocked
    assert lag.overloaded()
    for _ in range(30):
        clock.advance(0.1)
    assert not lag.overloaded()
    lag.stop()
    assert clock.getDelayedCalls() == []


def test_engine_refuses_calls_while_overloaded() -> None:
    flow = Flow()
    flow.net.is_overloaded = True
    errors: list[object] = []
    flow.net.api.create_call(user="201", to="+4930123456", device=None, auto_answer=None,
                             mode=None).addErrback(lambda f: errors.append(f.value))
    (error,) = errors
    assert isinstance(error, ApiError) and (error.status, error.code) == (503, "overloaded")
    assert flow.phone.nothing()  # nothing was sent


def test_a_call_past_max_duration_is_hung_up_by_the_sweep() -> None:
    flow = Flow()
    flow.to_connected()
    core = flow.net.core
    assert core.sweep(flow.net.now + 60) == 0
    flow.net.advance(core.config.calls.max_duration + 1)
    assert core.sweep(flow.net.now) == 1  # the call (it releases its relayed call)
    assert flow.cause == "cancelled"
    assert flow.net_record.events[-1].detail == "maximum call duration reached"
    assert core.calls.calls == {} and core.inbound.relayed == set()
    flow.target.take_request("BYE")
