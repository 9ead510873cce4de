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
The whole behaviour is :data:`THIRD_PARTY_TABLE`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sipdial.calls.bridging import (
    Bridge,
    BridgeAction,
    BridgeInput,
    BridgeState,
    BridgeTable,
    Outcome,
    TargetListener,
    no_payload,
)
from sipdial.calls.legs import (
    Acked,
    Answered,
    HungUp,
    LegEvent,
    LegState,
    PeerRequest,
    PeerResponse,
    UacLeg,
)
from sipdial.calls.media import CallMedia, Tone
from sipdial.calls.routing import Resolver, Target
from sipdial.media import digit_from_info
from sipdial.sip import ClientTransaction, NameAddr, Response, TimerHeap, sdp
from sipdial.ua import UserAgent

__all__ = ["THIRD_PARTY_TABLE", "TONE_SECONDS", "ThirdPartyBridge"]

TONE_SECONDS = 3.0
#: the random part of a 491 retry's delay (RFC 3261 §14.1), shared by every bridge
_GLARE_RNG = random.Random()
GLARE_MIN, GLARE_MAX = 2.1, 4.0  # RFC 3261 §14.1: the Call-ID's owner waits 2.1-4 s
_RELAYED_METHODS = frozenset({"INVITE", "UPDATE", "INFO", "MESSAGE", "OPTIONS"})

S, In, A = BridgeState, BridgeInput, BridgeAction
_ = ()
_RINGING = (S.CALLING, S.RINGBACK, S.EARLY_MEDIA)
_UP = (S.CONNECTING, S.CONNECTED)
_LIVE = (*_RINGING, *_UP)

THIRD_PARTY_TABLE: BridgeTable = {
    (S.CALLING, In.START): (S.CALLING, (A.START_FORKS, A.START_TIMER, A.REPORT)),
    # ringing: the phone hears ringback, or the destination's early media
    (S.CALLING, In.TARGET_PROGRESS): (S.RINGBACK, (A.PLAY_RINGBACK, A.REPORT)),
    (S.EARLY_MEDIA, In.TARGET_PROGRESS): (S.RINGBACK, (A.PLAY_RINGBACK, A.REPORT)),
    (S.RINGBACK, In.TARGET_PROGRESS): (S.RINGBACK, (A.REPORT,)),
    **{(s, In.TARGET_EARLY_MEDIA): (S.EARLY_MEDIA, (A.STOP_TONE, A.REPORT)) for s in _RINGING},
    **{(s, In.TARGET_ANSWERED): (S.CONNECTING, (A.STOP_TIMER, A.TAKE_TARGET, A.STOP_TONE,
                                               A.REINVITE_PHONE, A.REPORT)) for s in _RINGING},
    **{(s, In.TARGET_LEG_FAILED): (s, (A.CHECK_FORKS,)) for s in _RINGING},
    # failures are reported; the call then releases the bridge (with a tone)
    **{(s, In.TARGET_FAILED): (s, (A.STOP_TIMER, A.REPORT)) for s in _RINGING},
    **{(s, In.NO_ANSWER): (s, (A.CANCEL_FORKS, A.REPORT)) for s in _RINGING},
    **{(s, In.CALLER_REQUEST): (s, (A.ANSWER_LOCAL_REQUEST,)) for s in (*_RINGING, S.ENDING)},
    **{(s, In.CALLER_LOCAL_REQUEST): (s, (A.ANSWER_LOCAL_REQUEST,))
       for s in (*_RINGING, *_UP, S.ENDING)},
    # answered: the phone's re-INVITE moves its media to the destination
    (S.CONNECTING, In.PHONE_TOOK_MEDIA): (S.CONNECTED, (A.CLOSE_MEDIA,)),
    (S.CONNECTING, In.PHONE_REFUSED_MEDIA): (S.CONNECTING, (A.REPORT,)),
    (S.CONNECTING, In.PHONE_GLARE): (S.CONNECTING, (A.REINVITE_LATER,)),
    (S.CONNECTING, In.REINVITE_DUE): (S.CONNECTING, (A.REINVITE_PHONE,)),
    **{(s, In.REINVITE_DUE): (s, _) for s in (S.ENDING, S.ENDED)},
    **{(s, In.CALLER_REQUEST): (s, (A.RELAY_TO_TARGET,)) for s in _UP},
    **{(s, In.TARGET_REQUEST): (s, (A.RELAY_TO_CALLER,)) for s in _UP},
    **{(s, In.TARGET_HUNG_UP): (s, (A.REPORT,)) for s in _UP},
    # the end
    **{(s, In.CALLER_HUNG_UP): (s, (A.REPORT,)) for s in _LIVE},
    **{(s, In.RELEASE): (S.ENDED, (A.STOP_TIMER, A.RELEASE_FORKS, A.RELEASE_CALLER))
       for s in _LIVE},
    **{(s, In.RELEASE_WITH_TONE): (S.ENDING, (A.STOP_TIMER, A.RELEASE_FORKS, A.PLAY_TONE))
       for s in _LIVE},
    (S.ENDING, In.TONE_DONE): (S.ENDED, (A.RELEASE_CALLER,)),
    (S.ENDING, In.CALLER_HUNG_UP): (S.ENDED, (A.RELEASE_CALLER,)),
    (S.ENDING, In.RELEASE): (S.ENDED, (A.STOP_TIMER, A.RELEASE_CALLER)),  # no time for a tone
    (S.ENDING, In.RELEASE_WITH_TONE): (S.ENDING, _),
    # in any state
    **{(s, In.RESPONSE): (s, (A.RELAY_RESPONSE,)) for s in (*_LIVE, S.ENDING, S.ENDED)},
    **{(s, In.ACK): (s, (A.RELAY_ACK,)) for s in (*_LIVE, S.ENDING, S.ENDED)},
    **{(s, In.STRAY_REQUEST): (s, (A.REFUSE_REQUEST,)) for s in _LIVE},
    **{(s, In.TARGET_ANSWERED): (s, (A.HANG_UP_LATE_TARGET,))
       for s in (*_UP, S.ENDING, S.ENDED)},
    # the losing forks' 487s, a 1xx crossing the 2xx, requests while the tone plays
    **{(s, i): (s, _) for s in (*_UP, S.ENDING)
       for i in (In.TARGET_PROGRESS, In.TARGET_EARLY_MEDIA, In.TARGET_LEG_FAILED)},
    (S.ENDING, In.TARGET_REQUEST): (S.ENDING, (A.REFUSE_REQUEST,)),
}


class ThirdPartyBridge(Bridge):
    table = THIRD_PARTY_TABLE

    def __init__(self, ua: UserAgent, timers: TimerHeap, phone: UacLeg, media: CallMedia,
                 *, targets: list[Target], caller: NameAddr, callee: NameAddr,
                 extra: list[tuple[str, str]], answer_timeout: float,
                 listener: TargetListener, label: str, resolver: Resolver,
                 on_end: Callable[[ThirdPartyBridge], None]) -> None:
        offer = phone.answer.body if phone.answer is not None else b""
        super().__init__(ua, timers, targets=targets, caller=caller, callee=callee,
                         offer=offer, content_type=sdp.CONTENT_TYPE, extra=extra,
                         answer_timeout=answer_timeout, listener=listener, label=label,
                         resolver=resolver)
        self.phone = phone
        phone.hand_to(self)
        self.media = media
        self.reinvite: ClientTransaction | None = None
        self._on_end = on_end
        self.rng = _GLARE_RNG  # one for all bridges: a Random is ~2.5 KB per held call

    def _ended(self, now: float) -> None:
        self._on_end(self)

    @property
    def caller_leg(self) -> UacLeg:
        return self.phone

    def _caller_event(self, event: LegEvent, now: float) -> None:
        match event:
            case HungUp():
                self.fire(BridgeInput.CALLER_HUNG_UP, now, Outcome(detail="phone hung up"),
                          self._with_outcome)
            case PeerRequest(request=request):
                self.fire(BridgeInput.CALLER_REQUEST if request.method in _RELAYED_METHODS
                          else BridgeInput.CALLER_LOCAL_REQUEST, now, event,
                          self._with_request)
            case PeerResponse(txn=txn, response=response) if txn is self.reinvite:
                if response.status >= 200:
                    self.reinvite = None
                    status = response.status
                    self.fire(BridgeInput.PHONE_TOOK_MEDIA if status < 300
                              else BridgeInput.PHONE_GLARE if status == 491
                              else BridgeInput.PHONE_REFUSED_MEDIA, now,
                              Outcome(status), self._with_outcome)
            case PeerResponse():
                self.fire(BridgeInput.RESPONSE, now, event, self._with_response)
            case Acked():
                self.fire(BridgeInput.ACK, now, event, self._with_ack)

    def _release_caller(self, now: float) -> None:
        self.phone.release(now)
        self.media.close()

    def _plain(self, action: BridgeAction, inp: BridgeInput, now: float) -> bool:
        match action:
            case BridgeAction.REINVITE_PHONE if self.b is not None and self.b.answer:
                self._reinvite_phone(self.b.answer, now)  # the retry after a 491
            case BridgeAction.REINVITE_LATER:
                delay = GLARE_MIN + self.rng.random() * (GLARE_MAX - GLARE_MIN)
                self._timer = self.timers.schedule(now + delay, self._reinvite_due)
            case BridgeAction.PLAY_RINGBACK:
                self.media.play_tone(Tone.RINGBACK)
            case BridgeAction.STOP_TONE:
                self.media.stop_playing()
            case BridgeAction.CLOSE_MEDIA:
                self.media.close()  # media now flows phone <-> destination
            case _:
                return super()._plain(action, inp, now)
        return True

    def _with_answer(self, action: BridgeAction, inp: BridgeInput, event: Answered,
                     now: float) -> bool:
        if action is BridgeAction.REINVITE_PHONE:
            self._reinvite_phone(event.response, now)
            return True
        return super()._with_answer(action, inp, event, now)

    def _reinvite_phone(self, answer: Response, now: float) -> None:
        """Move the phone's media to the destination: re-INVITE it with the destination's
        SDP (the destination's answer to the phone's own offer)."""
        self.reinvite = self.phone.request(
            "INVITE", now, body=answer.body,
            content_type=answer.headers.get("Content-Type") or sdp.CONTENT_TYPE)

    def _with_outcome(self, action: BridgeAction, inp: BridgeInput, outcome: Outcome,
                      now: float) -> bool:
        if action is BridgeAction.PLAY_TONE:
            if outcome.tone is not None and self.phone.state is LegState.CONFIRMED \
                    and self.media.play_tone(outcome.tone, loop=True):
                self._timer = self.timers.schedule(now + TONE_SECONDS, self._tone_done)
            else:
                self.fire(BridgeInput.TONE_DONE, now, None, no_payload)
            return True
        return super()._with_outcome(action, inp, outcome, now)

    def _reinvite_due(self, now: float) -> None:
        self._timer = None
        self.fire(BridgeInput.REINVITE_DUE, now, None, no_payload)

    def _tone_done(self, now: float) -> None:
        self._timer = None
        self.fire(BridgeInput.TONE_DONE, now, None, no_payload)

    def _with_request(self, action: BridgeAction, inp: BridgeInput, event: PeerRequest,
                      now: float) -> bool:
        if action is BridgeAction.ANSWER_LOCAL_REQUEST:
            request = event.request
            if request.method == "INFO" and digit_from_info(
                    request.headers.get("Content-Type"), request.body) is not None:
                self.ua.endpoint.reply(event.txn, 200, now)  # key presses while ringing
            else:
                self.ua.endpoint.reply(event.txn, 491 if request.method == "INVITE"
                                       else 501, now)
            return True
        return super()._with_request(action, inp, event, now)
