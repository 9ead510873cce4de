"""Issue 7 §5a: a malformed peer must not leave a call half up, and §4: what loss breaks.

The whole sans-IO stack (SimNet: real Endpoint, UserAgent, calls, digest) with scripted
phones and a fake clock; no sockets. The first test is the issue's exact scenario: an
authenticated INVITE from a phone with ``Record-Route: a``, relayed to a target that answers.
Before the fix the target was ACKed, the caller never got a final response, and the caller's
INVITE transaction stayed in memory.
"""

from __future__ import annotations

import pytest

from sipdial.sip import Dialog, Request, Response
from tests.unit.simnet import Phone, SimNet, ack_for, first_via, sdp_answer
from tests.unit.test_clicktodial_flow import Flow

URI = "sip:+4930123@127.0.0.1"


def _net() -> tuple[SimNet, Phone, Phone]:
    net = SimNet()
    phone = Phone(net, port=5070)
    assert phone.register().status == 200
    target = Phone(net, "+4930123", None, port=5080, contact_host="127.0.0.1", user_agent=None)
    net.clear()
    return net, phone, target


def _dial(phone: Phone, extra: list[tuple[str, str]], call_id: str = "mal@phone") -> Request:
    """The phone dials the target through sipdial: INVITE, 407, ACK, INVITE with digest
    (``extra`` headers on that second, authenticated INVITE)."""
    first = phone.request("INVITE", URI, call_id_value=call_id, from_tag="mf",
                          to_value=f"<{URI}>", cseq_number=1,
                          body=sdp_answer(), content_type="application/sdp")
    phone.send(first)
    challenge = phone.take_response(407)
    phone.send(ack_for(first, challenge, first_via(first)))
    auth = phone.authorization(challenge, "INVITE", URI, proxy=True)
    second = phone.request("INVITE", URI, call_id_value=call_id, from_tag="mf",
                           to_value=f"<{URI}>", cseq_number=2,
                           extra=[*extra, ("Proxy-Authorization", auth)],
                           body=sdp_answer(), content_type="application/sdp")
    phone.send(second)
    return second


def _nothing_left(net: SimNet) -> None:
    """After every timer has run: no call, dialog or transaction is kept."""
    net.advance(70.0)
    assert net.inbound.relayed == set()
    assert net.ua.dialogs == {}
    assert net.endpoint.txns.server == {}
    assert net.endpoint.txns.client == {}


def _finals(phone: Phone) -> list[Response]:
    return [m for m in phone.received() if isinstance(m, Response) and m.status >= 200]


# ----------------------------------------------------------------- requests: 400 on arrival


@pytest.mark.parametrize("value", [
    "a",  # the exact header
    "<sip:proxy.example;lr>, <nonsense>",
    '"unterminated <sip:proxy.example;lr>',
])
def test_an_invite_whose_dialog_cannot_be_built_is_refused_400_when_it_arrives(
        value: str) -> None:
    """(The Contact is checked by the parser already: a request with a bad one gets 400 from
    the endpoint, a response with one is dropped.)"""
    net, phone, target = _net()
    _dial(phone, [("Record-Route", value)])
    (final,) = _finals(phone)
    assert final.status == 400 and final.reason.startswith("bad Record-Route"), final.reason
    assert target.nothing(), target.pending()  # nobody was rung
    _nothing_left(net)


def test_an_unauthenticated_invite_with_a_bad_record_route_gets_400_not_a_challenge() -> None:
    net, phone, _target = _net()
    phone.send(phone.request("INVITE", URI, call_id_value="rr0@phone", from_tag="r0",
                             to_value=f"<{URI}>", cseq_number=1,
                             extra=[("Record-Route", "a")]))
    assert [r.status for r in _finals(phone)] == [400]
    _nothing_left(net)


def test_a_target_2xx_after_a_caller_bug_is_acked_and_byed_and_the_caller_gets_500(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception inside a call's handling ends the call on every leg: here building the
    caller's dialog fails when the target answers (the path the issue's header took)."""
    net, phone, target = _net()
    _dial(phone, [])
    invite = target.take_request("INVITE")
    target.reply(invite, 180, to_tag="tg")

    def broken(*args: object, **kwargs: object) -> Dialog:
        raise RuntimeError("a bug building the caller's dialog")

    monkeypatch.setattr(Dialog, "from_uas", broken)
    target.reply(invite, 200, to_tag="tg", body=sdp_answer("10.7.7.7", 40000))
    assert [m.method for m in target.received() if isinstance(m, Request)] == ["ACK", "BYE"]
    finals = _finals(phone)
    assert [r.status for r in finals] == [500]
    _nothing_left(net)


# ----------------------------------------------------------------- responses: ACK, then BYE


@pytest.mark.parametrize("value", ["a", "<sip:p1.example;lr>, <nonsense>"])
def test_a_target_2xx_whose_dialog_cannot_be_built_is_acked_then_byed(value: str) -> None:
    net, phone, target = _net()
    _dial(phone, [])
    invite = target.take_request("INVITE")
    target.reply(invite, 200, to_tag="tg", body=sdp_answer("10.7.7.7", 40000),
                 headers=[("Record-Route", value)])
    sent = [m for m in target.received() if isinstance(m, Request)]
    assert [m.method for m in sent] == ["ACK", "BYE"]
    assert all(m.headers.get("Call-ID") == invite.headers.get("Call-ID") for m in sent)
    (final,) = _finals(phone)
    assert final.status == 502  # the caller is told the far end failed
    _nothing_left(net)


def test_click_to_dial_target_with_unusable_2xx_ends_target_failed_and_byes() -> None:
    flow = Flow()
    flow.to_refer()
    flow.accept_refer()
    flow.referred_invite()
    invite = flow.target_gets_invite()
    flow.target.reply(invite, 200, to_tag="tg", body=sdp_answer("10.7.7.7", 40000),
                      headers=[("Record-Route", "a")])
    assert [m.method for m in flow.target.received() if isinstance(m, Request)] == [
        "ACK", "BYE"]
    assert flow.cause == "target_failed", flow.states()
