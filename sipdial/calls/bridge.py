"""Bridge mode: sipdial calls the destination itself and joins it to the user's phone (3PCC).

The phone leg already exists (sipdial INVITEd it with its own SDP, played the prompt). The
flow, after RFC 3725, chosen for the phone leg that is already up:

1. INVITE the destination with the phone's SDP (its answer to our offer) as the offer. The
   destination's media, early or final, goes straight to the phone's RTP address.
2. While it rings the phone hears the destination's early media when the destination sends
   183 with SDP, else a ringback tone that sipdial plays on the phone leg.
3. On 200: ACK the destination at once, then re-INVITE the phone with the destination's SDP, so
   the phone sends its media to the destination instead of to sipdial. sipdial leaves the
   media path and stays in the signalling path (BYE, CANCEL, in-dialog requests relayed).

Why not RFC 3725 flow I (INVITE without SDP)? Many trunks reject an offer-less INVITE or
answer it with SDP they then refuse to change, and an offer-less INVITE gets no early media,
so the phone could not hear announcements such as "the number is not in service". Sending
the phone's SDP costs one re-INVITE of the phone, which desk phones handle well, and the
destination never sees sipdial's media address.

On failure the phone hears a short busy or failure tone (``TONE_SECONDS``) before the BYE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipdial.calls.b2bua import Target
from sipdial.calls.legs import (
    LegEvent,
    LegState,
    Relay,
    UacLeg,
    UasLeg,
    fork_failure,
    take_answer,
)
from sipdial.calls.states import Input, target_failure_input
from sipdial.media.dtmf import digit_from_info
from sipdial.sip import sdp
from sipdial.sip.message import Request, Response
from sipdial.sip.timers import TimerHandle
from sipdial.sip.transaction import ClientTransaction, ServerTransaction
from sipdial.sip.uri import NameAddr

if TYPE_CHECKING:
    from sipdial.calls.clicktodial import ClickToDial
    from sipdial.calls.engine import CallEngine

TONE_SECONDS = 3.0
_RELAYED_METHODS = frozenset({"INVITE", "UPDATE", "INFO", "MESSAGE", "OPTIONS"})


class ThirdPartyBridge:
    def __init__(self, engine: CallEngine, c2d: ClickToDial, phone: UacLeg, *,
                 targets: list[Target], caller: NameAddr, callee: NameAddr,
                 extra: list[tuple[str, str]]) -> None:
        self.engine = engine
        self.c2d = c2d
        self.phone = phone
        phone.owner = self
        offer = phone.answer.body if phone.answer is not None else b""
        self.forks = [
            UacLeg(engine.ua, self, uri=t.uri, peer=t.peer, from_party=caller,
                   to_party=callee, body=offer,
                   content_type=sdp.CONTENT_TYPE if offer else None, extra=extra,
                   label=t.label, credentials=t.credentials)
            for t in targets
        ]
        self.b: UacLeg | None = None
        self.reinvite: ClientTransaction | None = None
        self._relay = Relay(engine.ua)
        self._timer: TimerHandle | None = None
        self._ringback = False
        self.done = False

    # ------------------------------------------------------------ commands

    def start(self, now: float) -> None:
        for leg in self.forks:
            leg.start(now)
        self.c2d.target_event(Input.TARGET_CALLING, now)
        timeout = self.engine.config.calls.target_answer_timeout
        self._timer = self.engine.timers.schedule(now + timeout, self._no_answer)

    def release(self, now: float, tone: str | None = None) -> None:
        """End both sides; with ``tone`` the phone hears it before the BYE."""
        if self.done:
            return
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for leg in self.forks:
            leg.release(now)
        media = self.engine.media
        if tone and media is not None and self.phone.state is LegState.CONFIRMED:
            media.play(self.c2d, self.c2d.tone_frames(tone), loop=True)
            self.engine.timers.schedule(now + TONE_SECONDS, self._hang_up_phone)
        else:
            self._hang_up_phone(now)

    def _hang_up_phone(self, now: float) -> None:
        self.phone.release(now)
        if self.engine.media is not None:
            self.engine.media.close(self.c2d)

    def _no_answer(self, now: float) -> None:
        self._timer = None
        if self.b is None and not self.done:
            for leg in self.forks:
                leg.cancel(now)
            self.c2d.target_event(Input.TARGET_NO_ANSWER, now, 408, "no answer from the target")

    # ------------------------------------------------------------ events

    def leg_event(self, leg: UacLeg | UasLeg, event: LegEvent,
                  message: Request | Response | None, now: float,
                  txn: ClientTransaction | ServerTransaction | None = None) -> None:
        if leg is self.phone:
            self._phone_event(event, message, now, txn)
        elif isinstance(leg, UacLeg):
            self._target_event(leg, event, message, now, txn)

    def _phone_event(self, event: LegEvent, message: Request | Response | None, now: float,
                     txn: ClientTransaction | ServerTransaction | None) -> None:
        match event:
            case LegEvent.ENDED:
                self.c2d.target_event(Input.USER_HUNG_UP, now, detail="phone hung up")
            case LegEvent.ACKED:
                assert isinstance(message, Request)
                self._relay.ack(self.phone, message)
            case LegEvent.REQUEST:
                assert isinstance(message, Request) and isinstance(txn, ServerTransaction)
                if self.b is not None and message.method in _RELAYED_METHODS:
                    self._relay.forward(message, txn, self.phone, self.b, now)
                elif message.method == "INFO" and digit_from_info(
                        message.headers.get("Content-Type"), message.body) is not None:
                    self.engine.ua.endpoint.reply(txn, 200, now)  # key presses while ringing
                else:
                    self.engine.ua.endpoint.reply(
                        txn, 491 if message.method == "INVITE" else 501, now)
            case LegEvent.RESPONSE:
                if txn is self.reinvite and isinstance(message, Response):
                    self._reinvite_answered(message, now)
                else:
                    self._relay.response(txn, message, now)

    def _reinvite_answered(self, response: Response, now: float) -> None:
        if response.status < 200:
            return
        self.reinvite = None
        if response.status < 300:
            if self.engine.media is not None:
                self.engine.media.close(self.c2d)  # media now flows phone <-> destination
            return
        # the phone refused the destination's media: nothing sensible can be heard
        self.c2d.target_event(Input.FAILED, now, response.status,
                              "phone refused the re-INVITE to the destination")

    def _target_event(self, leg: UacLeg, event: LegEvent, message: Request | Response | None,
                      now: float, txn: ClientTransaction | ServerTransaction | None) -> None:
        media = self.engine.media
        match event:
            case LegEvent.PROGRESS:
                assert isinstance(message, Response)
                if self.b is not None or self.done:
                    return
                if message.body and media is not None:
                    media.stop_playing(self.c2d)  # early media reaches the phone directly
                    self._ringback = False
                elif not self._ringback and media is not None:
                    media.play(self.c2d, self.c2d.tone_frames("ringback"), loop=True)
                    self._ringback = True
                if message.status in (180, 183):
                    self.c2d.target_event(Input.TARGET_RINGING, now, message.status)
            case LegEvent.ANSWERED:
                assert isinstance(message, Response)
                if self.done:
                    leg.bye(now)
                    return
                if not take_answer(self.forks, leg, self.b, now):
                    return
                self.b = leg
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if media is not None:
                    media.stop_playing(self.c2d)
                self.reinvite = self.phone.request(
                    "INVITE", now, body=message.body,
                    content_type=message.headers.get("Content-Type") or sdp.CONTENT_TYPE)
                self.c2d.target_event(Input.TARGET_ANSWERED, now, message.status)
            case LegEvent.FAILED:
                if self.done or self.b is not None:
                    return
                status = fork_failure(self.forks, leg, now)
                if status is None:
                    return
                self.c2d.target_event(target_failure_input(status), now, status,
                                      message.reason if isinstance(message, Response)
                                      else "timeout")
            case LegEvent.ENDED:
                if leg is self.b:
                    self.c2d.target_event(Input.HANGUP, now, detail="target hung up")
            case LegEvent.ACKED:
                assert isinstance(message, Request)
                self._relay.ack(leg, message)
            case LegEvent.REQUEST:
                assert isinstance(message, Request) and isinstance(txn, ServerTransaction)
                self._relay.forward(message, txn, leg, self.phone, now)
            case LegEvent.RESPONSE:
                self._relay.response(txn, message, now)
