"""Forking: a user with several registered devices gets all of them rung at once.

The first device to answer wins; sipdial CANCELs the others, and it never asks a device to
answer by itself (Answer-Mode / Call-Info answer-after / Alert-Info auto-answer) when more than
one device rings, because then every device would pick up. With a single device and
``auto_answer = true`` those headers are sent.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.c2d_helpers import (
    TARGET,
    SipMsg,
    SippPhone,
    events_of,
    make_sipdial,
    place_call,
    requests,
    responses,
    sipdial_trace,
    sipp_trace,
    states,
    user,
)
from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _baresip(tmp_path: Path, sd: Sipdial, name: str, *, auto_answer: bool = False) -> Baresip:
    return Baresip(tmp_path, user="201", password="secret201",
                   registrar=f"127.0.0.1:{sd.sip_port('udp')}", auto_answer=auto_answer,
                   outbound=False, name=name)


def _auto_answer_headers(invite: SipMsg) -> list[str]:
    """Every header of ``invite`` that asks the phone to answer by itself."""
    found = [f"Answer-Mode: {v}" for v in invite.headers("Answer-Mode")]
    found += [f"Priv-Answer-Mode: {v}" for v in invite.headers("Priv-Answer-Mode")]
    found += [f"Call-Info: {v}" for v in invite.headers("Call-Info") if "answer-after" in v]
    found += [f"Alert-Info: {v}" for v in invite.headers("Alert-Info")
              if "autoanswer" in v.replace("-", "").lower() or "auto answer" in v.lower()
              or "intercom" in v.lower()]
    return found


def test_two_baresip_devices_first_to_answer_wins(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_answer.xml", timeout=25) as dest, \
            make_sipdial(tmp_path, dest.port) as sd, \
            _baresip(tmp_path, sd, "desk") as desk, _baresip(tmp_path, sd, "soft") as soft:
        dest.start()
        desk.wait_registered()
        soft.wait_registered()
        regs = sd.wait_registered("201", count=2)
        assert len({r["contact"] for r in regs}) == 2, regs

        call = place_call(sd)
        assert call["auto_answer"] is False
        assert call["events"][0]["detail"] == "2 device(s)"
        # both devices ring, showing the target as the caller
        for phone in (desk, soft):
            incoming = phone.wait_event("CALL_INCOMING", timeout=10)
            assert TARGET in str(incoming.get("peeruri", "")), incoming
        sd.wait_state(call["id"], "user_ringing", timeout=10)

        soft.accept()
        soft.wait_event("CALL_ESTABLISHED", timeout=10)
        # the loser is CANCELled: its ringing call closes without being answered
        desk.wait_event("CALL_CLOSED", timeout=10)
        assert "CALL_ESTABLISHED" not in desk.event_types()

        sd.wait_state(call["id"], "connected", timeout=15)
        soft.wait_event("CALL_ESTABLISHED", timeout=10)  # the transferred call
        soft.hangup()
        assert dest.wait(15) == 0, dest.report()
        final = sd.wait_state(call["id"], "ended", timeout=15)
        assert final["cause"] == "completed", final
        st = states(final)
        assert st[:3] == ["calling_user", "user_ringing", "user_answered"], st
        assert st[-2:] == ["connected", "ended"], st
        assert f":{soft.sip_port}" in final["device"], final
        assert events_of(final, "user_answered")[0]["detail"] == final["device"]

        trace = sipdial_trace(sd)
        desk_port, soft_port = f":{desk.sip_port}", f":{soft.sip_port}"
        invites = [m for m in requests(trace, "INVITE", "out")
                   if m.peer.endswith((desk_port, soft_port))]
        assert len(invites) == 2
        assert all(not _auto_answer_headers(m) for m in invites), invites
        cancels = requests(trace, "CANCEL", "out")
        assert [c.peer.endswith(desk_port) for c in cancels] == [True], cancels
        desk_finals = [m.status for m in responses(trace, "INVITE", "in")
                       if m.peer.endswith(desk_port) and (m.status or 0) >= 200]
        assert desk_finals == [487], desk_finals


def test_fork_sends_no_auto_answer_headers_even_if_configured(tmp_path: Path) -> None:
    """user 201 has auto_answer = true, but two devices ring: nobody is asked to pick up."""
    users = [user("201", auto_answer=True), user("202")]
    with Sipp.uas(tmp_path, "uas_noanswer.xml", timeout=25) as dest, \
            make_sipdial(tmp_path, dest.port, users=users) as sd, \
            SippPhone(tmp_path, sd) as sipp_phone, _baresip(tmp_path, sd, "desk") as desk:
        dest.start()
        desk.wait_registered()
        sipp_phone.register()
        sd.wait_registered("201", count=2)
        uas = sipp_phone.scenario("uas_noanswer.xml", timeout=20).start()

        call = place_call(sd)
        assert call["auto_answer"] is False, call
        desk.wait_event("CALL_INCOMING", timeout=10)
        sd.wait_state(call["id"], "user_ringing", timeout=10)
        desk.accept()
        sd.wait_state(call["id"], "user_answered", timeout=10)
        # the SIPp device got CANCEL (its scenario: 200 to the CANCEL, 487, ACK)
        assert uas.wait(15) == 0, uas.report()
        trace = sipp_trace(uas)
        assert len(requests(trace, "CANCEL", "in")) == 1
        invite = requests(trace, "INVITE", "in")[0]
        assert _auto_answer_headers(invite) == [], invite.text
        assert TARGET in (invite.header("From") or "")
        # ... and neither did baresip's INVITE carry any
        desk_invite = next(m for m in requests(sipdial_trace(sd), "INVITE", "out")
                       if m.peer.endswith(f":{desk.sip_port}"))
        assert _auto_answer_headers(desk_invite) == [], desk_invite.text
        # the winner was transferred; cancel while the destination rings
        sd.wait_state(call["id"], "target_ringing", timeout=10)
        status, body = sd.api("DELETE", f"/v1/calls/{call['id']}")
        assert status == 200 and body["cause"] == "cancelled", body
        assert dest.wait(15) == 0, dest.report()  # got CANCEL, sent 487
        assert len(requests(sipp_trace(dest), "CANCEL", "in")) == 1
        desk.wait_event("CALL_CLOSED", timeout=10)


@pytest.mark.parametrize("configured", [True, False])
def test_single_device_gets_auto_answer_headers_when_configured(tmp_path: Path,
                                                                 configured: bool) -> None:
    users = [user("201", auto_answer=configured), user("202")]
    with make_sipdial(tmp_path, users=users) as sd, SippPhone(tmp_path, sd) as phone:
        reg = phone.register()
        assert reg["user_agent"] == "SIPp-phone"
        uas = phone.scenario("uas_busy.xml", timeout=15).start()
        call = place_call(sd)
        assert call["auto_answer"] is configured, call
        final = sd.wait_state(call["id"], "ended", timeout=15)
        assert final["cause"] == "user_busy", final
        assert uas.wait(15) == 0, uas.report()
        invite = requests(sipp_trace(uas), "INVITE", "in")[0]
        found = _auto_answer_headers(invite)
        if configured:
            # unknown User-Agent: the generic set plus RFC 5373 Answer-Mode
            assert invite.header("Answer-Mode") == "Auto", invite.text
            assert any("answer-after=0" in v for v in invite.headers("Call-Info")), invite.text
            assert any("info=alert-autoanswer" in v for v in invite.headers("Alert-Info"))
        else:
            assert found == [], invite.text


def test_api_can_force_auto_answer_off_for_a_single_device(tmp_path: Path) -> None:
    users = [user("201", auto_answer=True), user("202")]
    with make_sipdial(tmp_path, users=users) as sd, SippPhone(tmp_path, sd) as phone:
        phone.register()
        uas = phone.scenario("uas_busy.xml", timeout=15).start()
        call = place_call(sd, auto_answer=False)
        assert call["auto_answer"] is False, call
        sd.wait_state(call["id"], "ended", timeout=15)
        assert uas.wait(15) == 0, uas.report()
        invite = requests(sipp_trace(uas), "INVITE", "in")[0]
        assert _auto_answer_headers(invite) == [], invite.text


def test_loser_answering_as_it_is_cancelled_is_hung_up(tmp_path: Path) -> None:
    """Both devices pick up at once: baresip wins, the SIPp device's 200 crosses its CANCEL
    and is ACKed and BYEd; the call goes on with the winner and completes."""
    with Sipp.uas(tmp_path, "uas_answer.xml", timeout=25) as dest, \
            make_sipdial(tmp_path, dest.port) as sd, \
            SippPhone(tmp_path, sd) as loser, _baresip(tmp_path, sd, "desk") as desk:
        dest.start()
        desk.wait_registered()
        loser.register()
        sd.wait_registered("201", count=2)
        uas = loser.scenario("phone_answer_crossing_cancel.xml", timeout=20).start()
        call = place_call(sd)
        desk.wait_event("CALL_INCOMING", timeout=10)
        sd.wait_state(call["id"], "user_ringing", timeout=10)
        desk.accept()
        assert uas.wait(15) == 0, uas.report()
        assert [m.method for m in sipp_trace(uas) if m.direction == "in"] == \
            ["INVITE", "CANCEL", "ACK", "BYE"]
        sd.wait_state(call["id"], "connected", timeout=15)
        desk.wait_event("CALL_ESTABLISHED", timeout=10)
        desk.wait_event("CALL_ESTABLISHED", timeout=10)  # the transferred call
        desk.hangup()
        assert dest.wait(15) == 0, dest.report()
        final = sd.wait_state(call["id"], "ended", timeout=15)
        assert final["cause"] == "completed", final
        assert f":{desk.sip_port}" in final["device"], final
        assert len(events_of(final, "user_answered")) == 1, final
        # only the winner was REFERred
        refers = requests(sipdial_trace(sd), "REFER", "out")
        assert [m.peer.endswith(f":{desk.sip_port}") for m in refers] == [True]


def test_decline_on_one_device_rejects_the_whole_fork(tmp_path: Path) -> None:
    ring = 8.0
    with make_sipdial(tmp_path, user_answer_timeout=ring) as sd, \
            SippPhone(tmp_path, sd) as decliner, _baresip(tmp_path, sd, "desk") as desk:
        desk.wait_registered()
        decliner.register()
        sd.wait_registered("201", count=2)
        uas = decliner.scenario("phone_reject_603.xml", timeout=15).start()
        call = place_call(sd)
        desk.wait_event("CALL_INCOMING", timeout=10)
        assert uas.wait(10) == 0, uas.report()  # it declined: 603, ACK
        final = sd.wait_state(call["id"], "ended", timeout=ring + 5)
        # observed: ("user_no_answer", None) after the full ring time
        assert (final["cause"], final["events"][-1]["sip_code"]) == ("user_rejected", 603), \
            final
        # the other device stopped ringing because of the decline, not the ring timeout
        assert (datetime.fromisoformat(final["ended_at"])
                - datetime.fromisoformat(final["created_at"])).total_seconds() < ring / 2
        desk.wait_event("CALL_CLOSED", timeout=5)
        assert requests(sipdial_trace(sd), "CANCEL", "out")


def test_device_parameter_rings_only_that_device(tmp_path: Path) -> None:
    """Two devices registered, the API names one (by its contact): only it is rung, and as
    it is the only one, auto-answer is requested (user 201 has auto_answer = true)."""
    users = [user("201", auto_answer=True), user("202")]
    with make_sipdial(tmp_path, users=users) as sd, SippPhone(tmp_path, sd) as chosen, \
            _baresip(tmp_path, sd, "desk") as desk:
        desk.wait_registered()
        chosen.register()
        sd.wait_registered("201", count=2)
        uas = chosen.scenario("uas_busy.xml", timeout=15).start()
        call = place_call(sd, device=chosen.contact)
        assert call["auto_answer"] is True, call
        assert call["events"][0]["detail"] == "1 device(s)"
        final = sd.wait_state(call["id"], "ended", timeout=15)
        assert final["cause"] == "user_busy", final
        assert uas.wait(15) == 0, uas.report()
        invite = requests(sipp_trace(uas), "INVITE", "in")[0]
        assert invite.header("Answer-Mode") == "Auto", invite.text
        # the other device was never rung
        assert [m.peer for m in requests(sipdial_trace(sd), "INVITE", "out")] == \
            [f"udp:127.0.0.1:{chosen.port}"]
        desk.drain(0.2)
        assert "CALL_INCOMING" not in desk.event_types()
