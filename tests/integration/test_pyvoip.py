"""A pyVoIP 1.6.8 softphone as user 201's device: a second, independent SIP stack.

pyVoIP registers with digest but answers the challenge RFC 2069 style (no qop/nc/cnonce even
though sipdial offers qop=auth); sipdial accepts that. It is rung by click-to-dial and answers
(PCMU). What happens next, observed and asserted here: pyVoIP 1.6.8 has no REFER support at
all — its SIP.parse_message drops any request other than INVITE/BYE/ACK/CANCEL ("TODO: Add
400 Error on non processable request") — so it neither answers the in-dialog REFER (no 202,
no 4xx/5xx: sipdial retransmits it) nor dials the Refer-To target. The call therefore ends
with cause ``refer_failed`` when ``refer_timeout`` expires, and sipdial hangs the phone up.
(pyVoIP cannot place the referred call anyway: its INVITE only handles a 401, not sipdial's
407, and it returns as soon as it sees the 100 Trying.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.c2d_helpers import (
    TARGET,
    final_event,
    make_sipdial,
    place_call,
    registrations,
    requests,
    responses,
    sipdial_trace,
    states,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

pyvoip_phone = pytest.importorskip("tests.peers.pyvoip_phone")
PyVoIPPhone = pyvoip_phone.PyVoIPPhone


def test_pyvoip_registers_with_rfc2069_digest(tmp_path: Path) -> None:
    with make_sipdial(tmp_path) as sd:
        phone = PyVoIPPhone(sd.sip_port("udp"), "201", "secret201").start()
        try:
            assert phone.registered
            (reg,) = registrations(sd, "201")
            assert reg["user_agent"] == "pyVoIP 1.6.8", reg
            assert reg["transport"] == "udp"
            assert reg["source"] == f"127.0.0.1:{phone.sip_port}", reg
            assert reg["contact"].startswith(f"sip:201@127.0.0.1:{phone.sip_port}"), reg
            # the accepted REGISTER carried a digest response without qop
            trace = sipdial_trace(sd)
            ok = [m for m in responses(trace, "REGISTER", "out") if m.status == 200]
            assert ok
            authorized = [m for m in requests(trace, "REGISTER", "in")
                          if m.header("Authorization")]
            assert authorized, "pyVoIP must have answered the 401"
            auth = authorized[0].header("Authorization") or ""
            assert auth.startswith("Digest ") and "response=" in auth, auth
            assert "qop" not in auth and "cnonce" not in auth, auth
        finally:
            phone.stop()


def test_pyvoip_answers_then_the_refer_goes_unanswered(tmp_path: Path) -> None:
    refer_timeout = 3.0
    with make_sipdial(tmp_path, refer_timeout=refer_timeout) as sd:
        phone = PyVoIPPhone(sd.sip_port("udp"), "201", "secret201").start()
        try:
            call = place_call(sd)
            incoming = phone.wait_for("incoming", timeout=10)
            # caller ID on the phone = the number being dialled
            assert incoming.from_user == TARGET, incoming
            assert incoming.to_user == "201"
            phone.wait_for("answered", timeout=10)
            answered = sd.wait_state(call["id"], "user_answered", timeout=10)
            ev = next(e for e in answered["events"] if e["state"] == "user_answered")
            assert ev["sip_code"] == 200

            final = sd.wait_state(call["id"], "ended", timeout=refer_timeout + 10)
            assert final["cause"] == "refer_failed", final
            assert states(final) == ["calling_user", "user_ringing", "user_answered", "ended"]
            assert final_event(final)["detail"]  # free text, e.g. "... did not complete in time"
            assert final_event(final)["sip_code"] is None
            assert final["device"] is not None

            # sipdial hung the phone up
            bye = phone.wait_for("bye", timeout=10)
            assert bye.call_id == incoming.call_id

            trace = sipdial_trace(sd)
            refers = requests(trace, "REFER", "out")
            assert refers, "sipdial must have sent the REFER"
            refer_to = refers[0].header("Refer-To") or ""
            assert f"x-c2d={call['id']}" in refer_to and TARGET in refer_to, refer_to
            # pyVoIP never answered it: only retransmissions, no response of any kind
            assert len(refers) >= 2, [m.first_line for m in trace]
            assert responses(trace, "REFER", "in") == []
            # nor did it dial the Refer-To target
            assert [m for m in requests(trace, "INVITE", "in")] == []
        finally:
            phone.stop()


def test_pyvoip_not_answering_is_cancelled(tmp_path: Path) -> None:
    with make_sipdial(tmp_path, user_answer_timeout=3.0) as sd:
        phone = PyVoIPPhone(sd.sip_port("udp"), "201", "secret201", auto_answer=False).start()
        try:
            call = place_call(sd)
            incoming = phone.wait_for("incoming", timeout=10)
            final = sd.wait_state(call["id"], "ended", timeout=15)
            assert final["cause"] == "user_no_answer", final
            assert states(final) == ["calling_user", "user_ringing", "ended"]
            # (pyVoIP reports the call ~1 s after the INVITE, so under load the CANCEL may be
            # recorded first: look in the history, not the queue)
            cancels = wait_until(lambda: [e for e in phone.history if e.kind == "cancel"] or None,
                                 10, "pyVoIP to see the CANCEL")
            assert cancels[0].call_id == incoming.call_id
            assert requests(sipdial_trace(sd), "CANCEL", "out")
        finally:
            phone.stop()
