"""Every way a click-to-dial call can end, reached against real peers on 127.0.0.1.

The user's phone is either baresip 1.0 (auto or manual answer mode) or a SIPp "phone"
(:class:`~tests.integration.c2d_helpers.SippPhone`: registers with digest, then a UAS
scenario answers sipdial's INVITE as scripted). The destination behind ``[[routes]]`` is a
SIPp UAS. For each cause the test checks the final ``cause``, the event list with its SIP
codes, and what the peers saw (SIPp exit code and message trace, baresip events).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.c2d_helpers import (
    TARGET,
    SippPhone,
    events_of,
    final_event,
    make_sipdial,
    place_call,
    requests,
    responses,
    scenario_variant,
    sipdial_trace,
    sipp_trace,
    states,
    user,
)
from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RINGING_START = (["calling_user", "user_ringing"], ["calling_user"])


def _baresip(tmp_path: Path, sd: Sipdial, *, auto_answer: bool = True,
             name: str | None = None) -> Baresip:
    return Baresip(tmp_path, user="201", password="secret201",
                   registrar=f"127.0.0.1:{sd.sip_port('udp')}", auto_answer=auto_answer,
                   outbound=False, name=name)


def _ended(sd: Sipdial, call_id: str, timeout: float = 20.0) -> dict[str, Any]:
    final = sd.wait_state(call_id, "ended", timeout=timeout)
    assert final["state"] == "ended" and final["ended_at"] is not None, final
    return final


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


# ===================================================================== the user's side

@pytest.mark.parametrize(("scenario", "code", "cause", "ringing"), [
    ("uas_busy.xml", 486, "user_busy", False),
    ("phone_reject_603.xml", 603, "user_rejected", True),
])
def test_phone_refuses_the_call(tmp_path: Path, scenario: str, code: int, cause: str,
                                ringing: bool) -> None:
    with make_sipdial(tmp_path) as sd, SippPhone(tmp_path, sd) as phone:
        phone.register()
        uas = phone.scenario(scenario, timeout=15).start()
        call = place_call(sd)
        final = _ended(sd, call["id"])
        assert final["cause"] == cause, final
        expected = ["calling_user", "user_ringing", "ended"] if ringing else \
            ["calling_user", "ended"]
        assert states(final) == expected, final
        assert final_event(final)["sip_code"] == code, final
        if ringing:
            assert events_of(final, "user_ringing")[0]["sip_code"] == 180
        assert final["device"] is None  # nobody answered
        assert uas.wait(15) == 0, uas.report()
        trace = sipp_trace(uas)
        invites = requests(trace, "INVITE", "in")
        assert len(invites) == 1
        # the phone is shown the target as the caller
        assert TARGET in (invites[0].header("From") or ""), invites[0].text
        assert [m.status for m in responses(trace, "INVITE", "out")][-1] == code
        (ack,) = requests(trace, "ACK", "in")  # sipdial ACKs the final response ...
        # ... in the INVITE's transaction (§17.1.1.3: same branch), with the phone's To tag
        assert (ack.header("Via") or "").split("branch=")[1] == \
            (invites[0].header("Via") or "").split("branch=")[1], ack.text
        assert "tag=" in (ack.header("To") or ""), ack.text
        assert not requests(trace, "CANCEL", "in")


def test_baresip_user_rejects_is_user_busy(tmp_path: Path) -> None:
    """baresip's 'hangup' on a ringing call answers 486 Busy Here: cause user_busy."""
    with make_sipdial(tmp_path) as sd, _baresip(tmp_path, sd, auto_answer=False) as phone:
        phone.wait_registered()
        sd.wait_registered("201")
        call = place_call(sd)
        incoming = phone.wait_event("CALL_INCOMING", timeout=10)
        assert TARGET in str(incoming.get("peeruri", "")), incoming
        sd.wait_state(call["id"], "user_ringing", timeout=10)
        phone.hangup()
        phone.wait_event("CALL_CLOSED", timeout=10)
        final = _ended(sd, call["id"])
        assert final["cause"] == "user_busy", final
        assert states(final) == ["calling_user", "user_ringing", "ended"], final
        assert final_event(final)["sip_code"] == 486, final
        sent = responses(sipdial_trace(sd), "INVITE", "in")
        assert [m.status for m in sent if m.status and m.status >= 200] == [486]


@pytest.mark.parametrize("phone_kind", ["sipp", "baresip"])
def test_user_no_answer_cancels_the_phone(tmp_path: Path, phone_kind: str) -> None:
    timeout = 1.5
    with make_sipdial(tmp_path, user_answer_timeout=timeout) as sd:
        if phone_kind == "sipp":
            with SippPhone(tmp_path, sd) as phone:
                phone.register()
                uas = phone.scenario("uas_noanswer.xml", timeout=15).start()
                call = place_call(sd)
                final = _ended(sd, call["id"])
                assert uas.wait(15) == 0, uas.report()
                trace = sipp_trace(uas)
                assert len(requests(trace, "CANCEL", "in")) == 1, uas.report()
                assert [m.status for m in responses(trace, "INVITE", "out")] == [100, 180, 487]
                assert requests(trace, "ACK", "in")  # the 487 was ACKed
        else:
            with _baresip(tmp_path, sd, auto_answer=False) as bphone:
                bphone.wait_registered()
                sd.wait_registered("201")
                call = place_call(sd)
                bphone.wait_event("CALL_INCOMING", timeout=10)
                closed = bphone.wait_event("CALL_CLOSED", timeout=10)
                final = _ended(sd, call["id"])
                assert "CALL_ESTABLISHED" not in bphone.event_types()
                # baresip reports the CANCEL as the close reason
                assert closed.get("param"), closed
                assert requests(sipdial_trace(sd), "CANCEL", "out")
        assert final["cause"] == "user_no_answer", final
        assert states(final) == ["calling_user", "user_ringing", "ended"], final
        assert final_event(final)["sip_code"] is None
        assert "no answer within" in final_event(final)["detail"]
        # the phone rang for the configured time, not shorter
        assert _seconds(final["created_at"], final["ended_at"]) >= timeout - 0.05, final


def test_user_hangs_up_before_accepting_the_refer(tmp_path: Path) -> None:
    with make_sipdial(tmp_path, refer_timeout=20.0) as sd, SippPhone(tmp_path, sd) as phone:
        phone.register()
        uas = phone.scenario("phone_answer_bye_before_refer.xml", timeout=15).start()
        call = place_call(sd)
        final = _ended(sd, call["id"])
        assert uas.wait(15) == 0, uas.report()
        assert final["cause"] == "user_hung_up", final
        assert states(final) == ["calling_user", "user_ringing", "user_answered", "ended"]
        assert events_of(final, "user_answered")[0]["sip_code"] == 200
        assert final["device"] == phone.contact
        trace = sipp_trace(uas)
        refer = requests(trace, "REFER", "in")[0]
        refer_to = refer.header("Refer-To") or ""
        assert TARGET in refer_to and f"x-c2d={call['id']}" in refer_to, refer.text
        # the phone's BYE was answered 200 and sipdial sent no BYE of its own
        assert [m.status for m in responses(trace, "BYE", "in")] == [200]
        assert not requests(trace, "BYE", "in")


def _refer_reply(tmp_path: Path, code: int, reason: str) -> Path:
    return scenario_variant(tmp_path, "phone_answer_refer_reply.xml",
                            {"SIP/2.0 405 Method Not Allowed": f"SIP/2.0 {code} {reason}"})


@pytest.mark.parametrize(("code", "reason"), [(405, "Method Not Allowed"), (603, "Decline")])
def test_phone_refuses_the_refer(tmp_path: Path, code: int, reason: str) -> None:
    with make_sipdial(tmp_path) as sd, SippPhone(tmp_path, sd) as phone:
        phone.register()
        uas = phone.scenario(_refer_reply(tmp_path, code, reason), timeout=15).start()
        call = place_call(sd)
        final = _ended(sd, call["id"])
        assert uas.wait(15) == 0, uas.report()  # includes: sipdial BYEd the phone
        assert final["cause"] == "refer_failed", final
        assert states(final) == ["calling_user", "user_ringing", "user_answered", "ended"]
        assert final_event(final)["sip_code"] == code, final
        assert reason in final_event(final)["detail"]
        trace = sipp_trace(uas)
        assert len(requests(trace, "REFER", "in")) == 1
        assert len(requests(trace, "BYE", "in")) == 1


def test_phone_accepts_the_refer_but_never_dials(tmp_path: Path) -> None:
    refer_timeout = 1.5
    with make_sipdial(tmp_path, refer_timeout=refer_timeout) as sd, \
            SippPhone(tmp_path, sd) as phone:
        phone.register()
        uas = phone.scenario(_refer_reply(tmp_path, 202, "Accepted"), timeout=15).start()
        call = place_call(sd)
        final = _ended(sd, call["id"])
        assert uas.wait(15) == 0, uas.report()
        assert final["cause"] == "refer_failed", final
        assert states(final) == ["calling_user", "user_ringing", "user_answered", "ended"]
        assert final_event(final)["sip_code"] is None
        assert final_event(final)["detail"]  # free text, e.g. "... did not complete in time"
        trace = sipp_trace(uas)
        assert [m.status for m in responses(trace, "REFER", "out")] == [202]
        assert len(requests(trace, "BYE", "in")) == 1


# ===================================================================== the target's side

@pytest.mark.parametrize(("scenario", "code", "cause"), [
    ("uas_busy.xml", 486, "target_busy"),
    ("dest_unavailable_503.xml", 503, "target_failed"),
])
def test_destination_refuses(tmp_path: Path, scenario: str, code: int, cause: str) -> None:
    with Sipp.uas(tmp_path, scenario, timeout=20) as dest, make_sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _baresip(tmp_path, sd) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            call = place_call(sd)
            phone.wait_event("CALL_ESTABLISHED", timeout=10)  # the click-to-dial leg
            final = _ended(sd, call["id"])
            assert dest.wait(15) == 0, dest.report()
            assert final["cause"] == cause, final
            st = states(final)
            assert st[:3] in (["calling_user", "user_ringing", "user_answered"],) or \
                st[:2] == ["calling_user", "user_answered"], st
            assert "calling_target" in st and "connected" not in st, st
            assert final_event(final)["sip_code"] == code, final
            # the phone saw its transfer call fail and sipdial hang up the first call
            phone.wait_event("CALL_CLOSED", timeout=10)
            phone.wait_event("CALL_CLOSED", timeout=10)
            trace = sipdial_trace(sd)
            to_dest = [m for m in requests(trace, "INVITE", "out")
                       if m.peer.endswith(f":{dest.port}")]
            assert len(to_dest) == 1 and TARGET in to_dest[0].first_line
            phone_port = f":{phone.sip_port}"
            relayed = [m.status for m in responses(trace, "INVITE", "out")
                       if m.peer.endswith(phone_port) and (m.status or 0) >= 300
                       and m.status != 407]  # 407: the digest challenge
            assert relayed == [486 if code == 486 else 502], relayed


def test_target_no_answer_cancels_the_destination(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_noanswer.xml", timeout=20) as dest, \
            make_sipdial(tmp_path, dest.port, target_answer_timeout=2.0) as sd:
        dest.start()
        with _baresip(tmp_path, sd) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            call = place_call(sd)
            sd.wait_state(call["id"], "target_ringing", timeout=10)
            final = _ended(sd, call["id"])
            assert dest.wait(15) == 0, dest.report()
            assert final["cause"] == "target_no_answer", final
            st = states(final)
            assert "calling_target" in st and "target_ringing" in st and "connected" not in st
            assert events_of(final, "target_ringing")[0]["sip_code"] == 180
            assert final_event(final)["sip_code"] == 408, final
            trace = sipp_trace(dest)
            assert len(requests(trace, "CANCEL", "in")) == 1
            assert [m.status for m in responses(trace, "INVITE", "out")] == [100, 180, 487]
            phone.wait_event("CALL_CLOSED", timeout=10)


def test_destination_hangs_up_first_is_completed(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_answer_then_bye.xml", timeout=20, duration_ms=1500) as dest, \
            make_sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _baresip(tmp_path, sd) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            call = place_call(sd)
            sd.wait_state(call["id"], "connected", timeout=15)
            assert dest.wait(15) == 0, dest.report()  # its BYE got 200
            final = _ended(sd, call["id"])
            assert final["cause"] == "completed", final
            st = states(final)
            assert st[-2:] == ["connected", "ended"], st
            assert "target" in final_event(final)["detail"], final  # who hung up
            assert events_of(final, "connected")[0]["sip_code"] == 200
            # sipdial passed the hang-up on to the phone
            closed = phone.wait_event("CALL_CLOSED", timeout=10)
            assert closed, closed
            phone_port = f":{phone.sip_port}"
            byes = [m for m in requests(sipdial_trace(sd), "BYE", "out")
                    if m.peer.endswith(phone_port)]
            assert byes, "sipdial must BYE the phone's bridged call"


def test_user_hangs_up_while_the_target_rings(tmp_path: Path) -> None:
    """The phone accepted the REFER and dialled; its user gives up before the target answers
    (baresip CANCELs its transfer call): cause user_hung_up, the target gets a CANCEL."""
    with Sipp.uas(tmp_path, "uas_noanswer.xml", timeout=20) as dest, \
            make_sipdial(tmp_path, dest.port, target_answer_timeout=30.0) as sd:
        dest.start()
        with _baresip(tmp_path, sd) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            call = place_call(sd)
            sd.wait_state(call["id"], "target_ringing", timeout=10)
            phone.wait_event("CALL_RINGING", timeout=10)  # the transfer call rings
            phone.hangup()
            assert dest.wait(15) == 0, dest.report()  # CANCEL -> 200 + 487 -> ACK
            final = _ended(sd, call["id"])
            assert final["cause"] == "user_hung_up", final
            st = states(final)
            assert st[-3:] == ["calling_target", "target_ringing", "ended"], st
            assert "cancel" in final_event(final)["detail"], final
            assert len(requests(sipp_trace(dest), "CANCEL", "in")) == 1
            phone_port = f":{phone.sip_port}"
            trace = sipdial_trace(sd)
            assert [m for m in requests(trace, "CANCEL", "in") if m.peer.endswith(phone_port)]
            assert 487 in [m.status for m in responses(trace, "INVITE", "out")
                           if m.peer.endswith(phone_port)]


# ===================================================================== cancelling; the API

@pytest.mark.parametrize("trigger", ["api_delete", "ring_timeout"])
def test_answer_crossing_the_cancel_is_acked_and_hung_up(tmp_path: Path, trigger: str) -> None:
    """The phone's 200 crosses sipdial's CANCEL: sipdial ACKs it and sends BYE at once, and
    the call keeps the cause it ended with (no resurrection as user_answered)."""
    ring = 30.0 if trigger == "api_delete" else 1.5
    with make_sipdial(tmp_path, user_answer_timeout=ring) as sd, \
            SippPhone(tmp_path, sd) as phone:
        phone.register()
        uas = phone.scenario("phone_answer_crossing_cancel.xml", timeout=15).start()
        call = place_call(sd)
        sd.wait_state(call["id"], "user_ringing", timeout=10)
        if trigger == "api_delete":
            status, body = sd.api("DELETE", f"/v1/calls/{call['id']}")
            assert status == 200 and body["cause"] == "cancelled", body
        assert uas.wait(15) == 0, uas.report()  # CANCEL, 200 -> ACK, BYE -> 200
        final = _ended(sd, call["id"])
        cause = "cancelled" if trigger == "api_delete" else "user_no_answer"
        assert final["cause"] == cause, final
        assert states(final) == ["calling_user", "user_ringing", "ended"], final
        assert final["device"] is None
        trace = sipp_trace(uas)
        assert [m.method for m in trace if m.direction == "in"] == \
            ["INVITE", "CANCEL", "ACK", "BYE"], [m.first_line for m in trace]
        assert not requests(trace, "REFER", "in")



def test_delete_while_the_phone_rings_cancels_it(tmp_path: Path) -> None:
    with make_sipdial(tmp_path, user_answer_timeout=30.0) as sd, \
            SippPhone(tmp_path, sd) as phone:
        phone.register()
        uas = phone.scenario("uas_noanswer.xml", timeout=15).start()
        call = place_call(sd)
        sd.wait_state(call["id"], "user_ringing", timeout=10)
        status, body = sd.api("DELETE", f"/v1/calls/{call['id']}")
        assert status == 200, body
        assert body["state"] == "ended" and body["cause"] == "cancelled", body
        assert uas.wait(15) == 0, uas.report()
        final = _ended(sd, call["id"])
        assert final["cause"] == "cancelled"
        assert states(final) == ["calling_user", "user_ringing", "ended"]
        assert "API" in final_event(final)["detail"], final
        trace = sipp_trace(uas)
        assert len(requests(trace, "CANCEL", "in")) == 1
        assert [m.status for m in responses(trace, "INVITE", "out")][-1] == 487


def test_delete_when_connected_hangs_up_both_legs(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_answer.xml", timeout=20) as dest, \
            make_sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _baresip(tmp_path, sd) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            call = place_call(sd)
            sd.wait_state(call["id"], "connected", timeout=15)
            status, body = sd.api("DELETE", f"/v1/calls/{call['id']}")
            assert status == 200, body
            assert body["state"] == "ended" and body["cause"] == "cancelled", body
            assert dest.wait(15) == 0, dest.report()  # got a BYE, answered 200
            final = _ended(sd, call["id"])
            assert states(final)[-2:] == ["connected", "ended"], final
            assert len(requests(sipp_trace(dest), "BYE", "in")) == 1
            closed = phone.wait_event("CALL_CLOSED", timeout=10)
            assert closed
            phone_port = f":{phone.sip_port}"
            trace = sipdial_trace(sd)
            byes = [m for m in requests(trace, "BYE", "out") if m.peer.endswith(phone_port)]
            assert byes, "the phone's leg must get a BYE"
            answered = [m for m in responses(trace, "BYE", "in")
                        if m.peer.endswith(phone_port) and m.status == 200]
            assert answered


def test_user_not_registered_is_409_at_once(tmp_path: Path) -> None:
    with make_sipdial(tmp_path, users=[user("201"), user("202")]) as sd:
        status, body = sd.api("POST", "/v1/calls", {"user": "202", "to": TARGET})
        assert status == 409, body
        assert body["error"]["code"] == "user_not_registered", body
        assert "202" in body["error"]["message"]
        status, calls = sd.api("GET", "/v1/calls?user=202")
        assert status == 200
        listed = calls.get("calls", calls) if isinstance(calls, dict) else calls
        assert listed == [], calls
        assert not requests(sipdial_trace(sd), "INVITE", "out")
