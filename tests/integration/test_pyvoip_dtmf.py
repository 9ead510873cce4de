"""DTMF with pyVoIP 1.6.8 as the user's phone: the in-band path of the "press 1" confirmation.

pyVoIP 1.6.8 can RECEIVE RFC 2833/4733 telephone-events (``RTPClient.parse_telephone_event``)
but cannot SEND them (checked in :func:`test_pyvoip_cannot_send_rfc2833`): ``VoIPCall`` has no
DTMF-sending method, and ``RTPClient.trans`` puts every packet on ``self.preference``, the first
*audio* codec of the answer, with ``encode_packet`` refusing anything but PCMU/PCMA. So here it
is the in-band DTMF sender: after it answers, the test writes a generated DTMF "1" (697 + 1209
Hz) into its RTP stream with ``VoIPCall.write_audio`` (8-bit unsigned linear PCM, 8 kHz; pyVoIP
cuts it into 160-byte = 20 ms packets and encodes PCMU).

sipdial's limit, found here: ``MediaManager.set_remote`` (sipdial/media/transport.py) runs the
in-band detector ONLY when the phone's SDP answer has no telephone-event. pyVoIP copies every
payload type it knows from sipdial's offer (``m=audio P RTP/AVP 0 8 101`` with ``a=rtpmap:101
telephone-event/8000``) into its answer although it can never send PT 101, so sipdial listens
for RFC 4733 only and ignores the key press heard in the audio: the call ends
``not_confirmed``. The same digit IS detected ("DTMF 1 (inband)") when pyVoIP's answer leaves
telephone-event out (its ``gen_answer`` wrapped to drop it, as a phone configured for in-band
DTMF would answer).

Finally pyVoIP's own RFC 2833 parser is used as an independent reference for the telephone-event
packets baresip sends (sipdial sends none of its own: it only receives DTMF).
"""

from __future__ import annotations

import inspect
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from sipdial.media.dtmf import Rfc4733Receiver
from tests.integration.audio_helpers import dtmf_samples, to_u8, wait_until
from tests.integration.c2d_helpers import (
    make_sipdial,
    place_call,
    responses,
    sipdial_trace,
    states,
)
from tests.peers.baresip import Baresip
from tests.peers.ports import LOOPBACK
from tests.peers.sipp import Sipp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

pyvoip_phone = pytest.importorskip("tests.peers.pyvoip_phone")
PyVoIPPhone = pyvoip_phone.PyVoIPPhone

from pyVoIP import RTP  # noqa: E402  (after the harness: pyVoIP.VoIP must be imported first)
from pyVoIP.VoIP import VoIPCall  # noqa: E402

NUMBER = "5"  # short prompt


def _key_press(digit: str = "1") -> bytes:
    """200 ms of silence, a 150 ms key press, 300 ms of silence, as pyVoIP's write_audio takes
    it: 8-bit unsigned linear PCM at 8 kHz."""
    return to_u8([0.0] * 1600 + dtmf_samples(digit, 0.15) + [0.0] * 2400)


def _without_telephone_event(phone: Any) -> None:
    """Make pyVoIP answer like a phone set up for in-band DTMF: no telephone-event in its SDP."""
    sip = phone.phone.sip
    original = sip.gen_answer

    def gen_answer(request: Any, sess_id: str, ms: dict[int, dict[int, Any]],
                   sendtype: Any) -> str:
        audio_only = {port: {pt: kind for pt, kind in pts.items()
                             if kind is not RTP.PayloadType.EVENT}
                      for port, pts in ms.items()}
        return str(original(request, sess_id, audio_only, sendtype))

    sip.gen_answer = gen_answer


def _pyvoip_answer(sd: Any) -> str:
    """pyVoIP's 200 OK to sipdial's INVITE (its SDP answer), from sipdial's trace. The log is
    read from sipdial's stdout by a thread of the test harness: wait until it has the line."""
    answers = wait_until(lambda: [m for m in responses(sipdial_trace(sd), "INVITE", "in")
                                  if m.status == 200 and "pyVoIP" in m.text], 5,
                         "pyVoIP's 200 OK in sipdial's trace")
    return str(answers[0].text)


def _left_the_prompt(sd: Any, call_id: str) -> dict[str, Any] | None:
    status, call = sd.api("GET", f"/v1/calls/{call_id}")
    assert status == 200, call
    return None if call["state"] == "awaiting_confirmation" else dict(call)


def _confirm_by_inband_1(tmp_path: Path, *, strip_event: bool) -> dict[str, Any]:
    """pyVoIP answers a confirm call and "presses" 1 in-band; the call as it left
    awaiting_confirmation (then cancelled, if it went on)."""
    timeout = 2.0
    with make_sipdial(tmp_path, confirm_timeout=timeout) as sd:
        phone = PyVoIPPhone(sd.sip_port("udp"), "201", "secret201")
        if strip_event:
            _without_telephone_event(phone)
        phone.start()
        try:
            call = place_call(sd, to=NUMBER, confirm=True)
            phone.wait_for("answered", timeout=10)
            sd.wait_state(call["id"], "awaiting_confirmation", timeout=10)
            answer = _pyvoip_answer(sd)
            assert "m=audio " in answer and "a=rtpmap:0 PCMU/8000" in answer, answer
            assert ("telephone-event" in answer) is not strip_event, answer
            voip_call: VoIPCall = phone._call(None)
            voip_call.write_audio(_key_press("1"))
            left = wait_until(lambda: _left_the_prompt(sd, call["id"]), 3.5 + timeout + 5,
                              "the call to leave awaiting_confirmation")
            if left["state"] != "ended":
                status, body = sd.api("DELETE", f"/v1/calls/{call['id']}")
                assert status == 200, body
            return dict(left)
        finally:
            phone.stop()


def test_pyvoip_cannot_send_rfc2833() -> None:
    # the only DTMF API of a call is for received digits (the RFC 2833 parser's callback)
    assert {n for n in dir(VoIPCall) if "dtmf" in n.lower()} <= \
        {"dtmfCallback", "dtmf_callback", "getDTMF", "get_dtmf"}
    # every packet goes out with the preferred AUDIO codec's payload type ...
    assert "self.preference" in inspect.getsource(RTP.RTPClient.trans)
    client = RTP.RTPClient({0: RTP.PayloadType.PCMU, 101: RTP.PayloadType.EVENT},
                           LOOPBACK, 0, LOOPBACK, 9, RTP.TransmitType.SENDRECV)
    assert client.preference is RTP.PayloadType.PCMU
    # ... and nothing else can be encoded
    client.preference = RTP.PayloadType.EVENT
    with pytest.raises(RTP.RTPParseError):
        client.encode_packet(b"\x80" * 160)


def test_pyvoip_inband_1_confirms(tmp_path: Path) -> None:
    final = _confirm_by_inband_1(tmp_path, strip_event=False)
    # pyVoIP accepts telephone-event in SDP yet sends tones in the audio: sipdial keeps
    # listening in-band until a phone actually sends RFC 4733
    assert final["cause"] != "not_confirmed", final
    assert "calling_target" in states(final), final
    calling = next(e for e in final["events"] if e["state"] == "calling_target")
    assert calling["detail"] == "DTMF 1 (inband)", final


def test_pyvoip_inband_1_confirms_when_its_answer_has_no_telephone_event(
        tmp_path: Path) -> None:
    confirmed = _confirm_by_inband_1(tmp_path, strip_event=True)
    event = next(e for e in confirmed["events"] if e["state"] == "calling_target")
    assert event["detail"] == "DTMF 1 (inband)", confirmed
    before = [e["state"] for e in confirmed["events"]]
    assert before[before.index("calling_target") - 1] == "awaiting_confirmation", confirmed


def test_pyvoip_parser_reads_baresip_rfc4733_like_sipdial(tmp_path: Path) -> None:
    """baresip bridged (3PCC) to a destination whose SDP names the test's socket: after the
    re-INVITE its RTP, and the telephone-events of ``sndcode``, come here. pyVoIP's RTPMessage
    + parse_telephone_event and sipdial's Rfc4733Receiver read the same digits."""
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind((LOOPBACK, 0))
    rtp.settimeout(0.2)
    with rtp, Sipp.uas(tmp_path, "uas_answer_rtpport.xml", timeout=25, duration_ms=200,
                       extra_args=("-set", "rtpport", str(rtp.getsockname()[1]))) as dest, \
            make_sipdial(tmp_path, dest.port) as sd:
        dest.start()
        with Baresip(tmp_path, user="201", password="secret201",
                     registrar=f"{LOOPBACK}:{sd.sip_port('udp')}", outbound=False) as phone:
            phone.wait_registered()
            sd.wait_registered("201")
            call = place_call(sd, mode="bridge")
            sd.wait_state(call["id"], "connected", timeout=15)
            rtp.recvfrom(2048)  # the phone's audio arrives: the re-INVITE is done
            phone.send_dtmf("58#")

            by_pyvoip: list[str] = []
            client = RTP.RTPClient({0: RTP.PayloadType.PCMU, 101: RTP.PayloadType.EVENT},
                                   LOOPBACK, 0, LOOPBACK, 9, RTP.TransmitType.SENDRECV,
                                   dtmf=by_pyvoip.append)
            receiver = Rfc4733Receiver()
            by_sipdial: list[str] = []
            deadline = time.monotonic() + 10
            while len(by_sipdial) < 3 and time.monotonic() < deadline:
                try:
                    data, _ = rtp.recvfrom(2048)
                except TimeoutError:
                    continue
                message = RTP.RTPMessage(data, client.assoc)
                if message.payload_type is not RTP.PayloadType.EVENT:
                    continue
                client.parse_packet(data)  # -> parse_telephone_event -> by_pyvoip
                digit = receiver.feed(message.payload, message.timestamp)
                if digit is not None:
                    by_sipdial.append(digit)
            assert by_sipdial == ["5", "8", "#"], by_sipdial
            wait_until(lambda: len(by_pyvoip) >= 3, 2, "pyVoIP's parser")
            assert by_pyvoip == ["5", "8", "#"], by_pyvoip
            phone.hangup()
            assert dest.wait(15) == 0, dest.report()
