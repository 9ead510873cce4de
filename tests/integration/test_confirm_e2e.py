"""The "to connect to <number>, press 1" confirmation with a real phone (baresip 1.0).

sipdial rings the phone, which auto-answers; sipdial plays the prompt on its own RTP and waits
for a digit (RFC 4733 from baresip's ``sndcode``). The table (``sipdial/calls/states.py``):
``1`` -> ``calling_target`` (REFER sent / destination INVITEd); any other digit replays the
prompt once (no event is recorded for it: the state does not change) and a second wrong
digit ends the call ``not_confirmed``; no digit within the prompt's length plus
``[calls] confirm_timeout`` -> ``not_confirmed``; the phone hanging up -> ``user_hung_up``.
What the phone heard is checked on baresip's ``dec`` recording.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sipdial.media.g711 import ulaw_to_pcm
from sipdial.media.prompt import PromptLibrary
from tests.integration.audio_helpers import (
    RATE,
    audible_share,
    best_correlation,
    envelope,
    read_pcm,
    recording,
    wait_recorded,
)
from tests.integration.c2d_helpers import (
    ROUTE_MATCH,
    TARGET,
    events_of,
    final_event,
    place_call,
    requests,
    responses,
    sipdial_trace,
    sipp_trace,
    states,
    user,
)
from tests.peers.baresip import Baresip
from tests.peers.ports import LOOPBACK
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SHORT = "5"  # a short number: a short prompt ("to connect to 5, press 1", ~3 s)
NOWHERE = 9  # discard port: a route that must never be used
_PROMPTS: PromptLibrary | None = None


def _prompts() -> PromptLibrary:
    global _PROMPTS
    if _PROMPTS is None:
        _PROMPTS = PromptLibrary.load()
    return _PROMPTS


def _prompt_seconds(number: str, language: str = "en") -> float:
    return len(_prompts().confirm_prompt(number, language, 0)) * 0.020


def _sipdial(tmp_path: Path, dest_port: int = NOWHERE, *, language: str | None = None,
             **calls: object) -> Sipdial:
    alice = user("201")
    if language:
        alice["language"] = language
    return Sipdial(tmp_path, users=[alice],
                   routes=[{"match": ROUTE_MATCH, "uri": f"sip:{{number}}@{LOOPBACK}:{dest_port}"}],
                   calls=dict(calls) or None)


def _phone(tmp_path: Path, sd: Sipdial) -> Baresip:
    return Baresip(tmp_path, user="201", password="secret201",
                   registrar=f"{LOOPBACK}:{sd.sip_port('udp')}", outbound=False)


def _prompted_call(sd: Sipdial, phone: Baresip, *, to: str = TARGET,
                   mode: str = "refer") -> dict[str, Any]:
    """Place a call with confirmation; return it once the phone hears the prompt."""
    phone.wait_registered()
    sd.wait_registered("201")
    call = place_call(sd, to=to, mode=mode, confirm=True)
    phone.wait_event("CALL_ESTABLISHED", timeout=10)
    sd.wait_state(call["id"], "awaiting_confirmation", timeout=10)
    wait_recorded(phone, 0.6, 10)  # the prompt's RTP reaches the phone
    return call


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _seconds(start: str, end: str) -> float:
    return (_at(end) - _at(start)).total_seconds()


def _head(call: dict[str, Any]) -> list[str]:
    st = states(call)
    return [s for i, s in enumerate(st) if not (i == 1 and s == "user_ringing")]


def _phone_msgs(sd: Sipdial, phone: Baresip, method: str, direction: str = "out") -> list[Any]:
    return [m for m in requests(sipdial_trace(sd), method, direction)
            if m.peer.endswith(f":{phone.sip_port}")]


def _speech(phone: Baresip) -> Any:
    return read_pcm(recording(phone))


def _assert_refused_quietly(sd: Sipdial, phone: Baresip, dest_port: int = NOWHERE) -> None:
    """Nothing was dialled: no REFER to the phone, no INVITE to the route."""
    assert _phone_msgs(sd, phone, "REFER") == []
    assert [m for m in requests(sipdial_trace(sd), "INVITE", "out")
            if m.peer.endswith(f":{dest_port}")] == []


# ===================================================================== not confirmed

@pytest.mark.parametrize("mode", ["refer", "bridge"])
def test_no_digit_in_time_is_not_confirmed(tmp_path: Path, mode: str) -> None:
    timeout = 1.5
    with _sipdial(tmp_path, confirm_timeout=timeout) as sd, _phone(tmp_path, sd) as phone:
        call = _prompted_call(sd, phone, to=SHORT, mode=mode)
        closed = phone.wait_event("CALL_CLOSED", timeout=_prompt_seconds(SHORT) + timeout + 10)
        assert closed.get("param"), closed  # sipdial's BYE
        final = sd.wait_state(call["id"], "ended", timeout=5)
        assert final["cause"] == "not_confirmed", final
        assert _head(final) == ["calling_user", "user_answered", "awaiting_confirmation",
                                "ended"], final
        end = final_event(final)
        assert end["sip_code"] is None and end["detail"] == "no digit pressed", final
        # the whole prompt, then confirm_timeout
        waited = _seconds(events_of(final, "awaiting_confirmation")[0]["time"], end["time"])
        assert _prompt_seconds(SHORT) + timeout - 0.2 <= waited <= \
            _prompt_seconds(SHORT) + timeout + 1.5, waited
        assert len(_phone_msgs(sd, phone, "BYE")) == 1
        _assert_refused_quietly(sd, phone)
        heard = _speech(phone)
        assert audible_share(heard[: int(_prompt_seconds(SHORT) * RATE)]) > 0.4  # the prompt


def test_wrong_digit_twice_is_not_confirmed(tmp_path: Path) -> None:
    with _sipdial(tmp_path) as sd, _phone(tmp_path, sd) as phone:  # confirm_timeout 15 s
        call = _prompted_call(sd, phone)
        phone.send_dtmf("5")
        phone.send_dtmf("5")
        phone.wait_event("CALL_CLOSED", timeout=10)
        final = sd.wait_state(call["id"], "ended", timeout=5)
        assert final["cause"] == "not_confirmed", final
        # the first 5 replayed the prompt: no state change, but an event of its own
        assert _head(final) == ["calling_user", "user_answered", "awaiting_confirmation",
                                "awaiting_confirmation", "ended"], final
        assert events_of(final, "awaiting_confirmation")[1]["detail"] == "DTMF 5 (rfc4733)"
        assert final_event(final)["detail"] == "DTMF 5 (rfc4733)", final
        # ended by the digits, long before prompt + confirm_timeout
        assert _seconds(events_of(final, "awaiting_confirmation")[0]["time"],
                        final["ended_at"]) < 8, final
        assert len(_phone_msgs(sd, phone, "BYE")) == 1
        _assert_refused_quietly(sd, phone)


def test_one_wrong_digit_replays_the_prompt_and_restarts_the_wait(tmp_path: Path) -> None:
    """After a wrong digit the prompt starts again and the timeout counts from the replay."""
    timeout = 1.0
    prompt = _prompt_seconds(SHORT)
    with _sipdial(tmp_path, confirm_timeout=timeout) as sd, _phone(tmp_path, sd) as phone:
        call = _prompted_call(sd, phone, to=SHORT)
        wait_recorded(phone, 1.5, 10)  # half-way through the first prompt
        pressed = datetime.now(UTC)
        phone.send_dtmf("5")
        phone.wait_event("CALL_CLOSED", timeout=prompt + timeout + 10)
        final = sd.wait_state(call["id"], "ended", timeout=5)
        assert final["cause"] == "not_confirmed", final
        assert final_event(final)["detail"] == "no digit pressed", final
        first = _at(events_of(final, "awaiting_confirmation")[0]["time"])
        ended = _at(final["ended_at"])
        # without the replay it would have ended at first + prompt + timeout
        assert (ended - pressed).total_seconds() >= prompt + timeout - 0.3, (pressed, final)
        assert (ended - first).total_seconds() >= prompt + timeout + 1.0, final
        # and the phone heard speech for about two prompts, not one
        heard = _speech(phone)
        assert audible_share(heard) * len(heard) / RATE > 1.3 * audible_share(
            heard[: int(prompt * RATE)]) * prompt


# ===================================================================== confirmed

@pytest.mark.parametrize("mode", ["refer", "bridge"])
def test_wrong_digit_then_1_proceeds(tmp_path: Path, mode: str) -> None:
    with Sipp.uas(tmp_path, "uas_noanswer.xml", timeout=20) as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _prompted_call(sd, phone, mode=mode)
            phone.send_dtmf("5")
            phone.send_dtmf("1")
            confirmed = sd.wait_state(call["id"], "calling_target", timeout=10)
            event = events_of(confirmed, "calling_target")[0]
            assert event["detail"] == "DTMF 1 (rfc4733)", confirmed
            assert _head(confirmed)[:5] == ["calling_user", "user_answered",
                                            "awaiting_confirmation", "awaiting_confirmation",
                                            "calling_target"]
            sd.wait_state(call["id"], "target_ringing", timeout=10)
            if mode == "refer":
                (refer,) = _phone_msgs(sd, phone, "REFER")
                assert TARGET in (refer.header("Refer-To") or ""), refer.text
                # the phone dialled the Refer-To through sipdial, which INVITEd the target
                assert _phone_msgs(sd, phone, "INVITE", "in")
            else:
                assert _phone_msgs(sd, phone, "REFER") == []
            status, body = sd.api("DELETE", f"/v1/calls/{call['id']}")
            assert status == 200 and body["cause"] == "cancelled", body
            assert dest.wait(15) == 0, dest.report()  # the ringing target got its CANCEL
        trace = sipp_trace(dest)
        (invite,) = requests(trace, "INVITE", "in")
        assert TARGET in invite.first_line
        assert len(requests(trace, "CANCEL", "in")) == 1


def test_refer_mode_with_confirmation_completes(tmp_path: Path) -> None:
    with Sipp.uas(tmp_path, "uas_answer_then_bye.xml", timeout=25, duration_ms=1500) as dest, \
            _sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with _phone(tmp_path, sd) as phone:
            call = _prompted_call(sd, phone, mode="refer")
            phone.send_dtmf("1")
            sd.wait_state(call["id"], "connected", timeout=15)
            assert dest.wait(15) == 0, dest.report()  # talked, hung up, its BYE got 200
            final = sd.wait_state(call["id"], "ended", timeout=10)
            assert final["cause"] == "completed", final
            assert _head(final) == ["calling_user", "user_answered", "awaiting_confirmation",
                                    "calling_target", "target_ringing", "connected",
                                    "ended"], final
            assert events_of(final, "calling_target")[0]["detail"] == "DTMF 1 (rfc4733)"
            assert events_of(final, "connected")[0]["sip_code"] == 200
            # the phone: the click-to-dial call, then its transfer call; both closed
            phone.wait_event("CALL_CLOSED", timeout=10)
            phone.wait_event("CALL_CLOSED", timeout=10)
            trace = sipdial_trace(sd)
            (refer,) = _phone_msgs(sd, phone, "REFER")
            assert f"x-c2d={call['id']}" in (refer.header("Refer-To") or ""), refer.text
            assert 202 in [m.status for m in responses(trace, "REFER", "in")]
            # the transfer call was challenged (407) and then routed to the destination
            assert 407 in [m.status for m in responses(trace, "INVITE", "out")
                           if m.peer.endswith(f":{phone.sip_port}")]
        assert [m.status for m in responses(sipp_trace(dest), "INVITE", "out")] == \
            [100, 180, 200]


# ===================================================================== hang-up, language

@pytest.mark.parametrize("mode", ["refer", "bridge"])
def test_phone_hangs_up_during_the_prompt(tmp_path: Path, mode: str) -> None:
    with _sipdial(tmp_path) as sd, _phone(tmp_path, sd) as phone:
        call = _prompted_call(sd, phone, mode=mode)
        phone.hangup()
        phone.wait_event("CALL_CLOSED", timeout=10)
        final = sd.wait_state(call["id"], "ended", timeout=10)
        assert final["cause"] == "user_hung_up", final
        assert _head(final) == ["calling_user", "user_answered", "awaiting_confirmation",
                                "ended"], final
        assert final_event(final)["detail"] == "phone hung up during the prompt", final
        assert len(_phone_msgs(sd, phone, "BYE", "in")) == 1
        assert 200 in [m.status for m in responses(sipdial_trace(sd), "BYE", "out")]
        assert _phone_msgs(sd, phone, "BYE") == []  # nothing left to hang up
        _assert_refused_quietly(sd, phone)


def _prompt_envelope(number: str, language: str) -> list[float]:
    pcm: list[int] = []
    for frame in _prompts().confirm_prompt(number, language, 0):
        pcm.extend(ulaw_to_pcm(frame))
    return envelope(pcm)


def test_german_prompt_is_played(tmp_path: Path) -> None:
    """User 201 has ``language = "de"``: the phone hears the German clips. Checked by the
    loudness envelope (20 ms RMS) of the recording, which follows the German prompt far more
    closely than the English one."""
    number = "+4930123"  # a possible number (checked since [numbers]): still short to hear
    seconds = _prompt_seconds(number, "de")
    with _sipdial(tmp_path, language="de") as sd, _phone(tmp_path, sd) as phone:
        call = _prompted_call(sd, phone, to=number)
        # (baresip records what it decodes: the recording stops growing with the prompt)
        wait_recorded(phone, seconds - 0.2, seconds + 10)
        status, body = sd.api("DELETE", f"/v1/calls/{call['id']}")
        assert status == 200 and body["cause"] == "cancelled", body
        phone.wait_event("CALL_CLOSED", timeout=10)
        heard = _speech(phone)
    assert audible_share(heard[: int(seconds * RATE)]) > 0.4, "the prompt is not silent"
    got = envelope(heard)
    german = _prompt_envelope(number, "de")
    english = _prompt_envelope(number, "en")
    n = min(len(german), len(english)) - 25  # the same length for both, within the recording
    de = best_correlation(got, german[:n], max_lag=50)
    en = best_correlation(got, english[:n], max_lag=50)
    assert de > 0.95 and de > en + 0.3, (de, en)
