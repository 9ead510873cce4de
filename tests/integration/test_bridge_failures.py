"""Bridge mode (3PCC): every way the destination side can end, reached with real peers.

sipdial rings the user's phone (baresip 1.0, auto answer), then INVITEs the destination (a SIPp
UAS behind ``[[routes]]``, or nothing at all) with the phone's SDP. Each test checks the cause,
the event list with its SIP codes, what the peers saw (SIPp exit code and message trace,
baresip's events) and, where sipdial plays something, what the phone HEARD: baresip's ``dec``
recording is analysed for the ringback/busy tone (425 Hz) and the failure SIT (950/1400/1800
Hz). The phone's own microphone is a 1000 Hz tone so that SIPp's RTP echo is never mistaken
for a 425 Hz tone.

What the table gives (``target_failure_input`` in ``sipdial/calls/states.py``): 486/600 ->
``target_busy`` (busy tone); 408/480/487 -> ``target_no_answer`` (failure tone) — which
includes sipdial's own Timer B and transport errors, both reported as 408; anything else,
e.g. 603 Decline or 503 -> ``target_failed`` (failure tone).
"""

from __future__ import annotations

import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sipdial.calls.bridge import TONE_SECONDS
from sipdial.media.g711 import pcm_to_ulaw
from sipdial.media.rtp import PCMU, RtpSender
from tests.integration.audio_helpers import (
    RATE,
    audible_share,
    read_pcm,
    recording,
    to_s16,
    tone_samples,
    tone_share,
    wait_until,
)
from tests.integration.c2d_helpers import (
    ROUTE_MATCH,
    events_of,
    final_event,
    place_call,
    requests,
    responses,
    scenario_variant,
    sipdial_trace,
    sipp_trace,
    states,
    user,
)
from tests.peers.baresip import Baresip, write_tone_wav
from tests.peers.ports import LOOPBACK, free_port_both
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MIC_HZ = 1000  # what the phone "says" (and SIPp echoes back once bridged)
SIT_HZ = (950, 1400, 1800)
HEAD = ["calling_user", "user_answered", "calling_target"]  # user_ringing may sit in between


def _sipdial(tmp_path: Path, port: int, *, transport: str = "udp",
             sip: dict[str, Any] | None = None, **calls: object) -> Sipdial:
    params = ";transport=tcp" if transport == "tcp" else ""
    return Sipdial(tmp_path, users=[user("201")],
                   routes=[{"match": ROUTE_MATCH,
                            "uri": f"sip:{{number}}@{LOOPBACK}:{port}{params}"}],
                   calls=dict(calls) or None, sip=sip)


def _phone(tmp_path: Path, sd: Sipdial) -> Baresip:
    wav = write_tone_wav(tmp_path / "mic-1000hz.wav", 120, freq=MIC_HZ)
    return Baresip(tmp_path, user="201", password="secret201",
                   registrar=f"{LOOPBACK}:{sd.sip_port('udp')}", outbound=False, wav=wav)


def _bridge_call(sd: Sipdial, phone: Baresip) -> dict[str, Any]:
    phone.wait_registered()
    sd.wait_registered("201")
    call = place_call(sd, mode="bridge")
    phone.wait_event("CALL_ESTABLISHED", timeout=10)  # sipdial's call to the phone
    return call


def _without_user_ringing(call: dict[str, Any]) -> list[str]:
    st = states(call)
    return [s for i, s in enumerate(st) if not (i == 1 and s == "user_ringing")]


def _ended_then_closed(sd: Sipdial, phone: Baresip, call_id: str,
                       timeout: float = 20.0) -> tuple[dict[str, Any], float]:
    """The ended call, and how long after it was seen ended the phone saw its BYE."""
    final = sd.wait_state(call_id, "ended", timeout=timeout)
    seen = time.monotonic()
    closed = phone.wait_event("CALL_CLOSED", timeout=TONE_SECONDS + 10)
    return final, float(closed["_t"]) - seen


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _heard(phone: Baresip) -> Any:
    return read_pcm(recording(phone))


def _to_dest(sd: Sipdial, port: int, method: str = "INVITE") -> list[Any]:
    return [m for m in requests(sipdial_trace(sd), method, "out") if m.peer.endswith(f":{port}")]


def _to_phone(sd: Sipdial, phone: Baresip, method: str) -> list[Any]:
    return [m for m in requests(sipdial_trace(sd), method, "out")
            if m.peer.endswith(f":{phone.sip_port}")]


def _assert_failure_tone_before_bye(phone: Baresip, delay: float) -> None:
    """The phone stayed up ~TONE_SECONDS after the end, hearing the SIT, not a 425 Hz tone."""
    assert TONE_SECONDS - 0.6 <= delay <= TONE_SECONDS + 1.5, delay
    tail = _heard(phone)[-int((TONE_SECONDS - 0.4) * RATE):]
    for hz in SIT_HZ:
        assert tone_share(tail, hz) >= 0.08, (hz, tone_share(tail, hz))
    assert tone_share(tail, 425) == 0.0


# ===================================================================== busy / rejected / failed

def test_target_busy_phone_hears_the_busy_tone_before_the_bye(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_busy.xml", timeout=20) as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _bridge_call(sd, phone)
            final, delay = _ended_then_closed(sd, phone, call["id"])
            assert dest.wait(15) == 0, dest.report()
            assert final["cause"] == "target_busy", final
            assert final["mode"] == "bridge"
            assert _without_user_ringing(final) == [*HEAD, "ended"], final
            assert events_of(final, "user_answered")[0]["sip_code"] == 200
            assert final_event(final)["sip_code"] == 486, final
            assert final_event(final)["detail"] == "Busy Here", final
            # sipdial kept the phone up for the busy tone, then hung up (the BYE)
            assert TONE_SECONDS - 0.6 <= delay <= TONE_SECONDS + 1.5, delay
            assert len(_to_phone(sd, phone, "BYE")) == 1
            heard = _heard(phone)
            tail = heard[-int((TONE_SECONDS - 0.4) * RATE):]
            # German busy tone: 425 Hz, 0.48 s on / 0.48 s off
            assert 0.3 <= tone_share(tail, 425) <= 0.7, tone_share(tail, 425)
            assert 0.3 <= audible_share(tail) <= 0.7, audible_share(tail)
            assert tone_share(tail, 950) == 0.0  # not the failure SIT
        trace = sipp_trace(dest)
        (invite,) = requests(trace, "INVITE", "in")
        # the destination was offered the phone's media (3PCC), with the user's identity
        assert f"m=audio {_phone_rtp_port(sd, phone)}" in invite.text, invite.text
        assert "201" in (invite.header("P-Asserted-Identity") or ""), invite.text
        assert [m.status for m in responses(trace, "INVITE", "out")] == [100, 486]
        assert len(requests(trace, "ACK", "in")) == 1
        assert not requests(trace, "CANCEL", "in") and not requests(trace, "BYE", "in")


def _phone_rtp_port(sd: Sipdial, phone: Baresip) -> int:
    """The RTP port in baresip's answer to sipdial's INVITE."""
    answers = [m for m in responses(sipdial_trace(sd), "INVITE", "in")
               if m.peer.endswith(f":{phone.sip_port}") and m.status == 200]
    body = answers[0].text
    line = next(x for x in body.splitlines() if x.startswith("m=audio "))
    return int(line.split()[1])


@pytest.mark.parametrize(("code", "reason"), [(603, "Decline"), (503, "Service Unavailable")])
def test_target_rejects_is_target_failed_with_the_failure_tone(
        tmp_path: Path, code: int, reason: str) -> None:
    """603 Decline is not 'busy' in the table: target_failure_input(603) -> target_failed."""
    scenario = scenario_variant(tmp_path, "dest_unavailable_503.xml", {
        "SIP/2.0 503 Service Unavailable": f"SIP/2.0 {code} {reason}"})
    with Sipp.uas(tmp_path, scenario, timeout=20) as dest, _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _bridge_call(sd, phone)
            final, delay = _ended_then_closed(sd, phone, call["id"])
            assert dest.wait(15) == 0, dest.report()
            assert final["cause"] == "target_failed", final
            assert _without_user_ringing(final) == [*HEAD, "ended"], final
            assert final_event(final)["sip_code"] == code, final
            assert final_event(final)["detail"] == reason, final
            _assert_failure_tone_before_bye(phone, delay)
        trace = sipp_trace(dest)
        assert [m.status for m in responses(trace, "INVITE", "out")] == [100, code]
        assert len(requests(trace, "ACK", "in")) == 1


# ===================================================================== nobody answers / unreachable

def test_target_no_answer_cancels_the_destination(tmp_path: Path) -> None:
    ring = 2.5
    with Sipp.uas(tmp_path, "uas_noanswer.xml", timeout=20) as dest, \
            _sipdial(tmp_path, dest.port, target_answer_timeout=ring) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _bridge_call(sd, phone)
            sd.wait_state(call["id"], "target_ringing", timeout=10)
            final, delay = _ended_then_closed(sd, phone, call["id"])
            assert dest.wait(15) == 0, dest.report()  # CANCEL -> 200, 487 -> ACK
            assert final["cause"] == "target_no_answer", final
            assert _without_user_ringing(final) == [*HEAD, "target_ringing", "ended"], final
            assert events_of(final, "target_ringing")[0]["sip_code"] == 180
            assert final_event(final)["sip_code"] == 408, final
            assert "no answer" in final_event(final)["detail"], final
            _assert_failure_tone_before_bye(phone, delay)
            # while it rang the phone heard sipdial's ringback (425 Hz, 1 s on, 4 s off)
            heard = _heard(phone)
            ringing = heard[: -int(TONE_SECONDS * RATE)]
            assert 0.7 <= tone_share(ringing, 425) * len(ringing) / RATE <= 1.3
        trace = sipp_trace(dest)
        assert len(requests(trace, "CANCEL", "in")) == 1
        assert [m.status for m in responses(trace, "INVITE", "out")] == [100, 180, 487]
        assert [m.status for m in responses(trace, "CANCEL", "out")] == [200]


def test_target_unreachable_udp_is_timer_b_408(tmp_path: Path) -> None:
    """Nothing listens at the route's UDP port: no response ever (Linux reports no ICMP error
    on an unconnected UDP socket), so Timer B (64*T1) ends the INVITE transaction with a local
    408, which the table maps to target_no_answer (RFC 3261 §8.1.3.1: a timeout is a 408)."""
    t1 = 0.1
    closed_port = free_port_both()
    with _sipdial(tmp_path, closed_port, sip={"t1": t1, "t2": 0.4}) as sd, \
            _phone(tmp_path, sd) as phone:
        call = _bridge_call(sd, phone)
        started = time.monotonic()
        final, delay = _ended_then_closed(sd, phone, call["id"], timeout=64 * t1 + 10)
        assert time.monotonic() - started >= 64 * t1 - 1.0
        assert final["cause"] == "target_no_answer", final
        assert _without_user_ringing(final) == [*HEAD, "ended"], final
        assert final_event(final)["sip_code"] == 408, final
        assert final_event(final)["detail"] == "timeout", final
        _assert_failure_tone_before_bye(phone, delay)
        invites = _to_dest(sd, closed_port)
        # Timer A retransmissions (T1, 2T1, 4T1 ...) until Timer B: 7 with T1 = 0.1 s
        assert 5 <= len(invites) <= 8, len(invites)
        assert len({m.header("Via") for m in invites}) == 1  # one transaction
        assert not _to_dest(sd, closed_port, "CANCEL")


def test_target_unreachable_tcp_refused_is_503_target_failed(tmp_path: Path) -> None:
    closed_port = free_port_both()
    with _sipdial(tmp_path, closed_port, transport="tcp") as sd, \
            _phone(tmp_path, sd) as phone:
        call = _bridge_call(sd, phone)
        final, delay = _ended_then_closed(sd, phone, call["id"], timeout=15)
        assert final["cause"] in ("target_failed", "target_no_answer"), final
        assert delay >= TONE_SECONDS - 0.6  # the failure tone was played
        assert len(_to_dest(sd, closed_port)) == 1  # (traced; the connect was refused)
        # the transport error ends it at once, not Timer B 32 s later
        assert _seconds(final["created_at"], final["ended_at"]) < 5, final
        assert (final_event(final)["sip_code"], final["cause"]) == (503, "target_failed"), final


# ===================================================================== hang-ups while it rings

def test_user_hangs_up_while_the_target_rings(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_noanswer.xml", timeout=20) as dest, \
            _sipdial(tmp_path, dest.port, target_answer_timeout=30.0) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _bridge_call(sd, phone)
            sd.wait_state(call["id"], "target_ringing", timeout=10)
            phone.hangup()
            phone.wait_event("CALL_CLOSED", timeout=10)
            assert dest.wait(15) == 0, dest.report()  # CANCEL -> 200 + 487 -> ACK
            final = sd.wait_state(call["id"], "ended", timeout=10)
            assert final["cause"] == "user_hung_up", final
            assert _without_user_ringing(final) == [*HEAD, "target_ringing", "ended"], final
            assert final_event(final)["sip_code"] is None
            assert final_event(final)["detail"] == "phone hung up", final
            trace = sipdial_trace(sd)
            # the phone's BYE was answered, and sipdial sent none of its own
            byes_in = [m for m in requests(trace, "BYE", "in")
                       if m.peer.endswith(f":{phone.sip_port}")]
            assert len(byes_in) == 1
            assert 200 in [m.status for m in responses(trace, "BYE", "out")
                           if m.peer.endswith(f":{phone.sip_port}")]
            assert _to_phone(sd, phone, "BYE") == []
        dtrace = sipp_trace(dest)
        assert len(requests(dtrace, "CANCEL", "in")) == 1
        assert [m.status for m in responses(dtrace, "INVITE", "out")] == [100, 180, 487]


def test_delete_while_the_target_rings_releases_both_legs(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_noanswer.xml", timeout=20) as dest, \
            _sipdial(tmp_path, dest.port, target_answer_timeout=30.0) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _bridge_call(sd, phone)
            sd.wait_state(call["id"], "target_ringing", timeout=10)
            deleted = time.monotonic()
            status, body = sd.api("DELETE", f"/v1/calls/{call['id']}")
            assert status == 200, body
            assert body["state"] == "ended" and body["cause"] == "cancelled", body
            closed = phone.wait_event("CALL_CLOSED", timeout=10)
            # no tone for a cancelled call: the phone is hung up at once
            assert float(closed["_t"]) - deleted < 1.5, closed
            assert dest.wait(15) == 0, dest.report()
            final = sd.wait_state(call["id"], "ended", timeout=10)
            assert final["cause"] == "cancelled", final
            assert _without_user_ringing(final) == [*HEAD, "target_ringing", "ended"], final
            assert "API" in final_event(final)["detail"], final
            assert len(_to_phone(sd, phone, "BYE")) == 1
        dtrace = sipp_trace(dest)
        assert len(requests(dtrace, "CANCEL", "in")) == 1
        assert [m.status for m in responses(dtrace, "INVITE", "out")] == [100, 180, 487]
        assert not requests(dtrace, "BYE", "in")


# ===================================================================== answered

def test_target_hangs_up_first_is_completed(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_answer_then_bye.xml", timeout=20, duration_ms=1500) as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _bridge_call(sd, phone)
            sd.wait_state(call["id"], "connected", timeout=15)
            closed = phone.wait_event("CALL_CLOSED", timeout=15)  # the BYE passed on
            assert closed.get("param"), closed
            assert dest.wait(15) == 0, dest.report()  # its BYE got 200
            final = sd.wait_state(call["id"], "ended", timeout=10)
            assert final["cause"] == "completed", final
            assert _without_user_ringing(final) == [*HEAD, "target_ringing", "connected",
                                                    "ended"], final
            assert events_of(final, "target_ringing")[0]["sip_code"] == 180
            assert events_of(final, "connected")[0]["sip_code"] == 200
            assert final_event(final)["detail"] == "target hung up", final
            # 3PCC: the phone was re-INVITEd with the destination's media address
            reinvites = [m for m in _to_phone(sd, phone, "INVITE")
                         if "tag=" in (m.header("To") or "")]
            assert len(reinvites) == 1, reinvites
            assert f"m=audio {dest.media_port} " in reinvites[0].text, reinvites[0].text
            assert len(_to_phone(sd, phone, "BYE")) == 1
        dtrace = sipp_trace(dest)
        assert [m.status for m in responses(dtrace, "BYE", "in")] == [200]
        assert not requests(dtrace, "BYE", "in")


def test_ringback_heard_while_the_target_rings_without_sdp(tmp_path: Path) -> None:
    """180 without SDP: sipdial plays the ringback tone (425 Hz, 1 s on / 4 s off) to the phone
    until the 200; then the phone's media goes to the destination (SIPp echoes the 1000 Hz)."""
    with Sipp.uas(tmp_path, "uas_answer.xml", timeout=20, duration_ms=3000) as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _bridge_call(sd, phone)
            sd.wait_state(call["id"], "target_ringing", timeout=10)
            sd.wait_state(call["id"], "connected", timeout=10)
            # wait until the echo of the phone's own tone comes back from the destination
            wait_until(lambda: tone_share(_heard(phone)[-RATE // 2:], MIC_HZ) > 0.5, 10,
                       "the destination's echo of the phone's 1000 Hz")
            phone.hangup()
            phone.wait_event("CALL_CLOSED", timeout=10)
            assert dest.wait(15) == 0, dest.report()
            final = sd.wait_state(call["id"], "ended", timeout=10)
            assert final["cause"] == "completed", final
            assert "connected" in states(final)
        heard = _heard(phone)
        ringback = tone_share(heard, 425) * len(heard) / RATE
        assert 0.7 <= ringback <= 1.3, ringback  # one 1 s burst in the 3 s of ringing
        first = next(i for i in range(0, len(heard), 320)
                     if tone_share(heard[i:i + 320], 425) > 0.5)
        assert tone_share(heard[:first], MIC_HZ) == 0.0  # ringback before the echo
        assert [m.status for m in responses(sipp_trace(dest), "INVITE", "out")] == \
            [100, 180, 200]


def test_early_media_183_with_sdp_no_local_ringback(tmp_path: Path) -> None:
    """183 with SDP: the destination's early media goes straight to the phone (it was offered
    the phone's SDP) and sipdial plays no ringback. The test plays the destination's 'early
    media' (a 600 Hz tone) from the RTP port the 183 names."""
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind((LOOPBACK, 0))
    rtp.settimeout(5)
    with rtp, Sipp.uas(tmp_path, "dest_early_media_183.xml", timeout=20, duration_ms=2500,
                       extra_args=("-set", "rtpport", str(rtp.getsockname()[1]))) as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _bridge_call(sd, phone)
            ringing = sd.wait_state(call["id"], "target_ringing", timeout=10)
            assert events_of(ringing, "target_ringing")[0]["sip_code"] == 183
            # the INVITE to the destination carries the phone's own RTP address
            (invite,) = _to_dest(sd, dest.port)
            phone_rtp = (LOOPBACK, _phone_rtp_port(sd, phone))
            assert f"m=audio {phone_rtp[1]} " in invite.text, invite.text
            sender = RtpSender(PCMU)
            tone = to_s16(tone_samples(600, 1.6))
            for i in range(0, len(tone) - 159, 160):  # paced like a real RTP stream
                rtp.sendto(sender.packet(pcm_to_ulaw(tone[i:i + 160])), phone_rtp)
                time.sleep(0.02)
            sd.wait_state(call["id"], "connected", timeout=10)
            data, _ = rtp.recvfrom(2048)  # after the re-INVITE the phone talks to us
            assert data[1] & 0x7F in (0, 8), data[:2]
            phone.hangup()
            phone.wait_event("CALL_CLOSED", timeout=10)
            assert dest.wait(15) == 0, dest.report()
            final = sd.wait_state(call["id"], "ended", timeout=10)
            assert final["cause"] == "completed", final
        heard = _heard(phone)
        assert tone_share(heard, 600) * len(heard) / RATE >= 1.0  # the early media was heard
        assert tone_share(heard, 425) == 0.0  # and no local ringback at all
