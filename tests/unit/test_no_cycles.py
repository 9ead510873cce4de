"""A call leaves no reference cycles: its objects go by reference counting.

Under load every object a finished call left in a cycle waited for the cyclic garbage
collector, whose collections of the middle and oldest generations then took seconds (2.4 s
every ~36 s at 216 calls/s, 503 ``overloaded`` meanwhile; RSS 495 MiB instead of 260). The
cycles were the legs' owner, the bridge's and the transfer's listener (the call holds them,
they held the call) and the RTP port (port -> protocol -> call -> port). Here: a whole call,
its transactions' timers run out, then a collection with ``DEBUG_SAVEALL`` must find nothing
of sipdial's.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from twisted.internet.task import Clock

from sipdial.media import MediaManager
from sipdial.sip import call_id
from tests.unit.simnet import sdp_answer
from tests.unit.test_bridge_flow import media_flow
from tests.unit.test_clicktodial_flow import TARGET, Flow


@contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """What the collector had to free from the ``with`` body: type names of sipdial's."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[str] = []
    try:
        yield found
        gc.collect()
        found += sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                         if type(o).__module__.startswith("sipdial")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


def test_a_refer_call_leaves_no_reference_cycles() -> None:
    flow = Flow()
    with cyclic_garbage() as garbage:
        flow.to_refer()
        flow.accept_refer()
        flow.notify("SIP/2.0 100 Trying")
        flow.referred_invite()
        target_invite = flow.target_gets_invite()
        flow.target_rings()
        flow.target_answers()
        flow.phone_acks_bridge()
        flow.notify("SIP/2.0 200 OK", terminated=True)
        flow.phone.reply(flow.phone.take_request("BYE"), 200)
        flow.answered_send(flow.bridge_request("BYE", cseq_number=3))
        flow.phone.take_response(200)
        flow.target.reply(flow.target.take_request("BYE"), 200)
        assert flow.cause == "completed"
        assert target_invite is not None
        flow.net.advance(40)  # every transaction's last timer
    assert garbage == []


def test_a_bridge_call_leaves_no_reference_cycles() -> None:
    flow, _media = media_flow(mode="bridge")
    with cyclic_garbage() as garbage:
        flow.ring()
        flow.answer()
        flow.net.advance(0)
        invite = flow.target_gets_invite()
        flow.target.reply(invite, 180, to_tag="tgt")
        flow.target.reply(invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000))
        flow.target.take_request("ACK")
        assert flow.answered is not None and flow.dialog is not None
        reinvite = flow.answered.take_request("INVITE")
        flow.answered.reply(reinvite, 200, body=sdp_answer())
        flow.answered.take_request("ACK")
        flow.answered.send(flow.dialog.request("BYE"))
        flow.answered.take_response(200)
        flow.target.reply(flow.target.take_request("BYE"), 200)
        assert flow.cause == "completed"
        flow.net.advance(40)
    assert garbage == []


class _Port:
    """Like Twisted's UDP port: it keeps its protocol after stopListening."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.stopped = False
        # what MediaManager takes from a bound port's socket (no real socket here)
        self.socket = type("Socket", (), {"family": socket.AF_INET,
                                          "sendto": lambda self, data, addr: len(data)})()

    def getHost(self) -> Any:
        return type("Address", (), {"port": 40000})()

    def stopListening(self) -> None:
        self.stopped = True


class _Reactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.ports: list[_Port] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> _Port:
        bound = _Port(protocol)
        self.ports.append(bound)
        return bound


def test_a_closed_rtp_port_leaves_no_cycle() -> None:
    reactor = _Reactor()
    manager = MediaManager(reactor, "127.0.0.1", 0, 0, prompts=None)  # type: ignore[arg-type]
    with cyclic_garbage() as garbage:
        manager.open("c1", lambda key, digit, how: None)
        manager.set_remote("c1", "127.0.0.1", 40002, 0, 101)
        manager.close("c1")
        assert reactor.ports[0].stopped
        reactor.ports.clear()  # Twisted lets go of the port once it has closed
    assert garbage == []


def test_a_held_bridge_call_keeps_no_parsed_invite_or_2xx() -> None:
    """A connected call may be held for an hour: its legs keep the 2xx's SDP only, and their
    ended INVITE transactions no request (parsed or bytes). ~36 KB per held bridged call
    were ~17 KB after this (loadtest/bench_held_call.py)."""
    flow, _media = media_flow(mode="bridge")
    flow.ring()
    flow.answer()
    flow.net.advance(0)
    invite = flow.target_gets_invite()
    flow.target.reply(invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000))
    flow.target.take_request("ACK")
    assert flow.answered is not None
    flow.answered.reply(flow.answered.take_request("INVITE"), 200, body=sdp_answer())
    flow.answered.take_request("ACK")
    flow.net.advance(40)  # Timer M and the rest: every transaction has ended
    flow.net.endpoint.drain_events()
    assert flow.state == "connected"
    bridge = flow.net.calls.calls[flow.call_id].bridge
    assert bridge is not None and bridge.b is not None
    for leg in (bridge.phone, bridge.b):
        assert leg.answer is not None and leg.answer.body
        assert [name for name, _ in leg.answer.headers.items()] == ["Content-Type"]
        txn = leg.invite_txn
        assert txn is not None and txn.request_bytes == b""
        with pytest.raises(RuntimeError):
            txn.request  # noqa: B018 (the property raises once the request is dropped)


def test_a_notify_after_the_call_is_gone_is_still_answered() -> None:
    """The owner of a leg is held weakly: once the call has ended and been dropped, the
    phone's last NOTIFY of its REFER subscription (which keeps the first dialog) must still
    get its 200 — baresip (quitting: BYE, CANCEL of its referred INVITE, then that NOTIFY)
    waited 32 s for it before it would exit."""
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.notify("SIP/2.0 100 Trying")
    referred = flow.referred_invite()
    flow.target_gets_invite()
    assert flow.dialog is not None and flow.answered is not None
    flow.answered.send(flow.dialog.request("BYE"))
    flow.answered.take_response(200)
    cancel = flow.phone.request("CANCEL", str(referred.uri), call_id_value=call_id(referred),
                                from_tag="rf-a", to_value=f"<sip:{TARGET}@127.0.0.1>",
                                cseq_number=2, branch=referred.headers.get_all("Via")[0]
                                .split("branch=")[1])
    flow.phone.send(cancel)
    flow.phone.received()
    assert flow.state == "ended"
    assert flow.call_id not in flow.net.calls.calls  # dropped: only weakly held now
    gc.collect()
    ok = flow.notify("SIP/2.0 100 Trying", terminated=True)
    assert ok.status == 200
