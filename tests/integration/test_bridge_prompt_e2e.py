"""Issue 3 end to end with real peers: baresip hears the "press 1" prompt, presses 1 (RFC 4733
via ctrl_tcp sndcode) and is bridged (3PCC) to a SIPp destination; after the re-INVITE the
phone's RTP goes to the destination's address, not to sipdial's."""

from __future__ import annotations

import array
import socket
import time
import wave
from pathlib import Path

import pytest

from tests.peers.baresip import Baresip
from tests.peers.sipp import Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

TARGET = "+4930123456"
USERS = [{"id": "201", "password": "secret201", "name": "Alice"}]


def _rms(path: Path, start_s: float, seconds: float) -> float:
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        wav.setpos(min(int(start_s * rate), wav.getnframes()))
        raw = wav.readframes(int(seconds * rate))
        width = wav.getsampwidth()
    samples = array.array("h", raw) if width == 2 else array.array("h")
    if not samples:
        return 0.0
    return (sum(s * s for s in samples) / len(samples)) ** 0.5


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_prompt_dtmf_1_and_bridge_with_media_to_the_destination(tmp_path: Path) -> None:
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.settimeout(10)
    rtp_port = rtp.getsockname()[1]
    with rtp, Sipp.uas(tmp_path, "uas_answer_rtpport.xml", duration_ms=500,
                       extra_args=("-set", "rtpport", str(rtp_port))) as dest, \
            Sipdial(tmp_path, users=USERS,
                    routes=[{"match": "^\\+?[0-9]+$",
                             "uri": f"sip:{{number}}@127.0.0.1:{dest.port}"}]) as sd:
        dest.start()
        registrar = f"127.0.0.1:{sd.sip_port('udp')}"
        with Baresip(tmp_path, user="201", password="secret201", registrar=registrar,
                     outbound=False) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            status, call = sd.api("POST", "/v1/calls", {
                "user": "201", "to": TARGET, "mode": "bridge", "confirm": True})
            assert status == 201, call
            phone.wait_event("CALL_ESTABLISHED", timeout=15)
            sd.wait_state(call["id"], "awaiting_confirmation", timeout=10)
            # let the prompt play for a while: the recording grows as baresip hears it
            _wait_for(lambda: any(p.stat().st_size > 8000 * 2 * 2 for p in phone.recordings()),
                      15, "two seconds of prompt audio in baresip's recording")
            assert dest.returncode is None and sd.api(
                "GET", f"/v1/calls/{call['id']}")[1]["state"] == "awaiting_confirmation"
            phone.send_dtmf("1")
            sd.wait_state(call["id"], "calling_target", timeout=10)
            connected = sd.wait_state(call["id"], "connected", timeout=15)
            assert connected["mode"] == "bridge"
            # after the re-INVITE the phone's RTP goes to the destination's address (sipdial
            # itself never sends RTP to the destination, so this can only be the phone)
            data, _source = rtp.recvfrom(2048)
            assert data[0] >> 6 == 2 and (data[1] & 0x7F) in (0, 8), data[:2]
            packets = 1
            while packets < 10:
                rtp.recvfrom(2048)
                packets += 1
            phone.hangup()
            assert dest.wait(15) == 0, dest.report()
            final = sd.wait_state(call["id"], "ended", timeout=15)
            assert final["cause"] == "completed", final
            states = [e["state"] for e in final["events"]]
            assert states[:2] == ["calling_user", "user_answered"] or \
                states[:3] == ["calling_user", "user_ringing", "user_answered"], states
            assert "awaiting_confirmation" in states and "connected" in states
            detail = next(e["detail"] for e in final["events"] if e["state"] == "calling_target")
            assert detail.startswith("DTMF 1"), final["events"]
        recording = max(phone.recordings(), key=lambda p: p.stat().st_size)
        # the prompt is speech: far louder than silence/comfort noise in its first seconds
        assert _rms(recording, 0.2, 1.5) > 300, recording
    invite = dest.messages()
    assert "201" in invite.split("P-Asserted-Identity", 1)[1].split("\n", 1)[0]
