"""Bridge mode (3PCC) and the "press 1" confirmation through the real call engine, with
scripted phones, a fake clock and a recording stand-in for sipdial's RTP (MediaManager)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sipdial.sip import sdp
from sipdial.sip.message import Request, cseq, from_
from tests.unit.simnet import sdp_answer
from tests.unit.test_clicktodial_flow import TARGET, Flow

MEDIA_AT = ("127.0.0.1", 42000)


class FakeMedia:
    """Records what the call flow asks of sipdial's RTP."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.on_digit: dict[object, Callable[[object, str, str], None]] = {}
        self.playing: dict[object, tuple[Sequence[bytes], bool]] = {}
        self.remote: dict[object, tuple[str, int, int, int | None]] = {}
        self.closed: list[object] = []

    def open(self, key: object, on_digit: Callable[[object, str, str], None]) -> tuple[str, int]:
        self.on_digit[key] = on_digit
        self.calls.append(("open", key))
        return MEDIA_AT

    def set_remote(self, key: object, host: str, port: int, payload_type: int,
                   event_pt: int | None) -> None:
        self.remote[key] = (host, port, payload_type, event_pt)

    def _play(self, key: object, frames: Sequence[bytes], loop: bool) -> None:
        self.playing[key] = (frames, loop)
        self.calls.append(("play", frames))

    def play_prompt(self, key: object, number: str, language: str) -> None:
        pt = self.remote[key][2]  # KeyError: played before set_remote
        self._play(key, FakePrompts().confirm_prompt(number, language, pt), False)

    def play_tone(self, key: object, tone: str, *, loop: bool) -> None:
        self._play(key, FakePrompts().tone(tone, self.remote[key][2]), loop)

    def stop_playing(self, key: object) -> None:
        self.playing.pop(key, None)
        self.calls.append(("stop", key))

    def close(self, key: object) -> None:
        self.playing.pop(key, None)
        self.closed.append(key)


class FakePrompts:
    def confirm_prompt(self, number: str, language: str, payload_type: int) -> list[bytes]:
        return [f"prompt:{number}:{language}:{payload_type}".encode()] * 100  # 2 s

    def tone(self, kind: str, payload_type: int) -> list[bytes]:
        return [f"tone:{kind}:{payload_type}".encode()]


def media_flow(**create: Any) -> tuple[Flow, FakeMedia]:
    media = FakeMedia()
    flow = Flow(media=media, prompts=FakePrompts())
    flow.create(**create)
    return flow, media


def playing(media: FakeMedia) -> str:
    (frames, _loop), = media.playing.values()
    return frames[0].decode()


# ----------------------------------------------------------------- confirmation


def test_phone_is_offered_sipdials_own_rtp_when_it_must_hear_a_prompt() -> None:
    flow, media = media_flow(confirm=True)
    offer = sdp.media_address(flow.invite().body)
    assert offer == MEDIA_AT
    assert media.calls[0][0] == "open"


def test_prompt_then_dtmf_1_by_info_sends_the_refer() -> None:
    flow, media = media_flow(confirm=True)
    flow.ring()
    flow.answer()
    assert flow.state == "awaiting_confirmation"
    assert playing(media) == f"prompt:{TARGET}:en:0"
    key = next(iter(media.remote))
    assert media.remote[key][:2] == ("192.168.1.10", 30000)  # the phone's answer
    assert flow.answered is not None and flow.answered.nothing()  # no REFER yet
    assert flow.dialog is not None
    info = flow.dialog.request("INFO", body=b"Signal=1\r\nDuration=160\r\n",
                               content_type="application/dtmf-relay")
    flow.answered.send(info)
    flow.answered.take_response(200)
    refer = flow.take_refer()
    assert refer.method == "REFER"
    assert flow.states()[-2:] == ["awaiting_confirmation", "calling_target"]
    assert media.playing == {}


def test_rtp_digit_1_confirms() -> None:
    flow, media = media_flow(confirm=True)
    flow.ring()
    flow.answer()
    key, callback = next(iter(media.on_digit.items()))
    callback(key, "1", "rfc4733")
    flow.take_refer()
    assert flow.state == "calling_target"
    assert flow.net_record.events[-1].detail == "DTMF 1 (rfc4733)"


def test_wrong_digit_replays_once_then_ends_not_confirmed() -> None:
    flow, media = media_flow(confirm=True)
    flow.ring()
    flow.answer()
    key, callback = next(iter(media.on_digit.items()))
    callback(key, "5", "inband")
    assert flow.state == "awaiting_confirmation"
    assert [c for c, _ in media.calls].count("play") == 2  # replayed
    callback(key, "7", "inband")
    assert flow.cause == "not_confirmed"
    assert flow.answered is not None
    flow.answered.take_request("BYE")


def test_no_digit_ends_not_confirmed_after_prompt_plus_timeout() -> None:
    flow, _media = media_flow(confirm=True)
    flow.ring()
    flow.answer()
    flow.net.advance(2.0 + flow.net.config.calls.confirm_timeout - 0.5)
    assert flow.state == "awaiting_confirmation"
    flow.net.advance(1.0)
    assert flow.cause == "not_confirmed"


def test_hang_up_during_prompt_is_user_hung_up() -> None:
    flow, _media = media_flow(confirm=True)
    flow.ring()
    flow.answer()
    assert flow.dialog is not None and flow.answered is not None
    flow.answered.send(flow.dialog.request("BYE"))
    flow.answered.take_response(200)
    assert flow.cause == "user_hung_up"


# ----------------------------------------------------------------- bridge mode


def to_bridge_target(**create: Any) -> tuple[Flow, FakeMedia, Request]:
    flow, media = media_flow(mode="bridge", **create)
    flow.ring()
    flow.answer()
    flow.net.advance(0)
    invite = flow.target_gets_invite()
    return flow, media, invite


def test_bridge_invites_target_with_the_phones_sdp_and_user_identity() -> None:
    flow, _media, invite = to_bridge_target()
    assert invite.body == sdp_answer()  # the phone's own SDP: media will flow directly
    caller = from_(invite)
    assert caller.display_name == "Alice" and getattr(caller.uri, "user", None) == "201"
    assert "201" in (invite.headers.get("P-Asserted-Identity") or "")
    assert flow.state == "calling_target"


def test_bridge_ringback_then_answer_reinvites_phone_to_the_target() -> None:
    flow, media, invite = to_bridge_target()
    flow.target.reply(invite, 180, to_tag="tgt")
    assert flow.state == "target_ringing"
    assert playing(media) == "tone:ringback:0" and next(iter(media.playing.values()))[1]
    flow.target.reply(invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000))
    flow.target.take_request("ACK")
    assert flow.state == "connected"
    assert flow.answered is not None
    reinvite = flow.answered.take_request("INVITE")
    assert sdp.media_address(reinvite.body) == ("10.7.7.7", 50000)
    assert media.playing == {}
    flow.answered.reply(reinvite, 200, body=sdp_answer())
    ack = flow.answered.take_request("ACK")
    assert cseq(ack).number == cseq(reinvite).number
    assert media.closed  # sipdial has left the media path
    # the phone hangs up: the target gets BYE, the call completes
    assert flow.dialog is not None
    flow.answered.send(flow.dialog.request("BYE"))
    flow.answered.take_response(200)
    flow.target.take_request("BYE")
    assert flow.cause == "completed"


def test_bridge_early_media_stops_local_ringback() -> None:
    flow, media, invite = to_bridge_target()
    flow.target.reply(invite, 180, to_tag="tgt")
    assert media.playing
    flow.target.reply(invite, 183, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000))
    assert media.playing == {}
    assert flow.state == "target_ringing"


def test_bridge_target_busy_plays_busy_tone_then_bye() -> None:
    flow, media, invite = to_bridge_target()
    flow.target.reply(invite, 486, to_tag="tgt")
    flow.target.take_request("ACK")
    assert flow.cause == "target_busy"
    assert playing(media) == "tone:busy:0"
    assert flow.answered is not None and flow.answered.nothing()
    flow.net.advance(3.1)
    flow.answered.take_request("BYE")


def test_stopping_sipdial_during_the_busy_tone_byes_the_phone_at_once() -> None:
    """The call has ended (target_busy) but its bridge still plays the tone: a shutdown
    must not leave the phone without its BYE."""
    flow, media, invite = to_bridge_target()
    flow.target.reply(invite, 486, to_tag="tgt")
    flow.target.take_request("ACK")
    assert flow.cause == "target_busy" and playing(media) == "tone:busy:0"
    assert len(flow.net.calls.env.bridges) == 1  # outlives its call while the tone plays
    flow.net.core.shut_down(flow.net.now)
    assert flow.answered is not None
    flow.answered.reply(flow.answered.take_request("BYE"), 200)
    assert not flow.net.calls.env.bridges
    flow.net.advance(3.1)
    assert flow.answered.nothing(), flow.answered.pending()  # the tone's timer is gone too


def test_a_491_to_the_phones_reinvite_is_retried_after_2_to_4_seconds() -> None:
    """RFC 3261 §14.1: glare is not a failure; the Call-ID's owner (sipdial) tries again."""
    flow, _media, invite = to_bridge_target()
    flow.target.reply(invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000))
    flow.target.take_request("ACK")
    assert flow.answered is not None
    first = flow.answered.take_request("INVITE")
    flow.answered.reply(first, 491)
    flow.answered.take_request("ACK")
    assert flow.cause is None and flow.state == "connected"
    flow.net.advance(2.0)
    assert flow.answered.nothing(), flow.answered.pending()  # not before 2.1 s
    flow.net.advance(2.1)
    again, *retransmitted = flow.answered.received()  # timer A may have fired meanwhile
    assert isinstance(again, Request) and again.method == "INVITE"
    assert all(m.to_bytes() == again.to_bytes() for m in retransmitted)
    assert sdp.media_address(again.body) == ("10.7.7.7", 50000)
    assert cseq(again).number > cseq(first).number
    flow.answered.reply(again, 200, body=sdp_answer())
    flow.answered.take_request("ACK")
    assert flow.state == "connected" and flow.cause is None


def test_bridge_target_hangs_up_first() -> None:
    flow, _media, invite = to_bridge_target()
    flow.target.reply(invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000))
    flow.target.take_request("ACK")
    assert flow.answered is not None
    reinvite = flow.answered.take_request("INVITE")
    flow.answered.reply(reinvite, 200, body=sdp_answer())
    flow.answered.take_request("ACK")
    target_ok_to = invite.headers.get("From") or ""
    bye = flow.target.request("BYE", str(from_(invite).uri), call_id_value=invite.headers.get(
        "Call-ID") or "", from_tag="tgt", to_value=target_ok_to, cseq_number=1)
    bye.headers.set("From", f"{invite.headers.get('To')};tag=tgt")
    flow.target.send(bye)
    flow.target.take_response(200)
    flow.answered.take_request("BYE")
    assert flow.cause == "completed"


def test_bridge_clir_sends_anonymous_from_with_privacy() -> None:
    _flow, _media, invite = to_bridge_target(clir=True)
    assert "anonymous" in (invite.headers.get("From") or "").lower()
    assert invite.headers.get("Privacy") == "id"
    assert "201" in (invite.headers.get("P-Asserted-Identity") or "")


def test_bridge_caller_id_from_the_request() -> None:
    _flow, _media, invite = to_bridge_target(caller_id="+4940111222")
    assert getattr(from_(invite).uri, "user", None) == "+4940111222"


def test_bridge_with_confirmation_dials_only_after_1() -> None:
    flow, media = media_flow(mode="bridge", confirm=True)
    flow.ring()
    flow.answer()
    assert flow.state == "awaiting_confirmation"
    assert flow.target.nothing()
    key, callback = next(iter(media.on_digit.items()))
    callback(key, "1", "rfc4733")
    flow.net.advance(0)
    flow.target_gets_invite()
    assert flow.state == "calling_target"


def test_session_timer_refreshes_with_update_when_we_are_the_refresher() -> None:
    flow, _media, invite = to_bridge_target()
    flow.target.reply(invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000),
                      headers=[("Session-Expires", "120;refresher=uac"),
                               ("Require", "timer")])
    flow.target.take_request("ACK")
    assert flow.answered is not None
    reinvite = flow.answered.take_request("INVITE")
    flow.answered.reply(reinvite, 200, body=sdp_answer())
    flow.answered.take_request("ACK")
    flow.net.advance(59.0)
    assert not any(b.startswith(b"UPDATE") for b in flow.net.sent_to(flow.target.peer))
    flow.net.advance(2.0)
    update = flow.target.take_request("UPDATE")
    assert update.headers.get("Session-Expires") == "120;refresher=uac"
    flow.target.reply(update, 200, contact=False)
    flow.net.advance(60.0)
    flow.target.take_request("UPDATE")  # and again, every half interval


def test_no_refresh_when_the_peer_refreshes() -> None:
    flow, _media, invite = to_bridge_target()
    flow.target.reply(invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000),
                      headers=[("Session-Expires", "120;refresher=uas")])
    flow.target.take_request("ACK")
    flow.net.advance(200.0)
    assert not any(b.startswith(b"UPDATE") for b in flow.net.sent_to(flow.target.peer))


def test_a_reinvite_answered_only_180_is_abandoned_when_the_call_ends() -> None:
    """The phone answers sipdial's re-INVITE with 180 and nothing more; the target hangs up.
    sipdial BYEs the phone and gives up that re-INVITE: it must not stay in Proceeding until
    shutdown (RFC 3261 gives a UAC no timer there; seen under 20 % loss with SIPp)."""
    flow, _media, invite = to_bridge_target()
    flow.target.reply(invite, 200, to_tag="tgt", body=sdp_answer("10.7.7.7", 50000))
    flow.target.take_request("ACK")
    assert flow.answered is not None
    reinvite = flow.answered.take_request("INVITE")
    flow.answered.reply(reinvite, 180)
    bye = flow.target.request("BYE", str(from_(invite).uri), call_id_value=invite.headers.get(
        "Call-ID") or "", from_tag="tgt", to_value=invite.headers.get("From") or "",
        cseq_number=1)
    bye.headers.set("From", f"{invite.headers.get('To')};tag=tgt")
    flow.target.send(bye)
    flow.target.take_response(200)
    flow.answered.reply(flow.answered.take_request("BYE"), 200)
    assert flow.state == "ended"
    flow.net.advance(40.0)  # past every lingering transaction's last timer (32 s)
    assert flow.net.endpoint.txns.client == {}
