"""Regression tests for findings of the code review (see the session note)."""

from __future__ import annotations

import re

from sipdial.sip.message import Request
from tests.unit.simnet import sdp_answer
from tests.unit.test_clicktodial_flow import Flow


def _o_line(body: bytes) -> tuple[str, int]:
    match = re.search(rb"^o=\S+ (\d+) (\d+) ", body, re.MULTILINE)
    assert match is not None, body
    return match.group(1).decode(), int(match.group(2))


def test_invite_without_from_tag_is_refused_at_once() -> None:
    flow = Flow()
    phone = flow.phone
    bad = phone.request("INVITE", "sip:+4930@127.0.0.1", call_id_value="x1", from_tag="t",
                        to_value="<sip:+4930@127.0.0.1>", cseq_number=1)
    bad.headers.set("From", "<sip:201@127.0.0.1>")  # no tag
    phone.send(bad)
    assert phone.take_response(400).reason == "Missing From tag or Contact"


def test_phone_reinvites_get_answers_from_one_sdp_session_with_rising_versions() -> None:
    flow = Flow()
    flow.to_refer()
    assert flow.dialog is not None and flow.answered is not None
    sessions = []
    for _ in range(2):  # e.g. hold, then resume, before the phone acts on the REFER
        flow.answered.send(flow.dialog.request(
            "INVITE", body=sdp_answer(), content_type="application/sdp"))
        ok = flow.answered.take_response(200)
        sessions.append(_o_line(ok.body))
    offer_session = _o_line(flow.invite().body)
    assert sessions[0][0] == sessions[1][0] == offer_session[0]
    assert offer_session[1] < sessions[0][1] < sessions[1][1]


def test_update_without_offer_is_answered_without_sdp() -> None:
    flow = Flow()
    flow.to_refer()
    assert flow.dialog is not None and flow.answered is not None
    update: Request = flow.dialog.request("UPDATE", extra=[("Session-Expires", "1800")])
    flow.answered.send(update)
    ok = flow.answered.take_response(200)
    assert ok.body == b""


def test_offerless_reinvite_is_relayed_with_the_answer_in_the_ack() -> None:
    """RFC 3264 §4: the 2xx carries the offer, the caller's ACK the answer; the B2BUA must
    hold its own ACK to the other side until it has that answer."""
    flow = Flow()
    flow.to_connected()
    assert flow.answered is not None
    reinvite = flow.bridge_request("INVITE", cseq_number=3)
    assert reinvite.body == b""
    flow.answered.send(reinvite)
    flow.answered.take_response(100)
    relayed = flow.target.take_request("INVITE")
    assert relayed.body == b""
    flow.target.reply(relayed, 200, body=sdp_answer("10.7.7.7", 50002))
    assert not any(b.startswith(b"ACK") for b in flow.net.sent_to(flow.target.peer))
    ok = flow.answered.take_response(200)
    assert b"50002" in ok.body  # the offer reached the phone
    ack = flow.bridge_request("ACK", cseq_number=3)
    ack.headers.add("Content-Type", "application/sdp")
    ack.body = sdp_answer("192.168.1.10", 30004)
    flow.answered.send(ack)
    target_ack = flow.target.take_request("ACK")
    assert b"30004" in target_ack.body  # the answer reached the target


def test_2xx_to_a_relayed_reinvite_refreshes_the_remote_target() -> None:
    """RFC 3261 §12.2.1.2: a 2xx to a re-INVITE may carry a new Contact; later requests in
    the dialog go there."""
    flow = Flow()
    flow.to_connected()
    assert flow.answered is not None
    reinvite = flow.bridge_request("INVITE", cseq_number=3)
    reinvite.headers.add("Content-Type", "application/sdp")
    reinvite.body = sdp_answer("192.168.1.10", 30006)
    flow.answered.send(reinvite)
    flow.answered.take_response(100)
    relayed = flow.target.take_request("INVITE")
    flow.target.reply(relayed, 200, body=sdp_answer("10.7.7.7", 50002), contact=False,
                      headers=[("Contact", "<sip:moved@10.9.9.9:5099>")])
    flow.target.take_request("ACK")
    flow.answered.take_response(200)
    flow.answered.send(flow.bridge_request("BYE", cseq_number=4))
    flow.answered.take_response(200)
    bye = flow.target.take_request("BYE")
    assert str(bye.uri) == "sip:moved@10.9.9.9:5099"
