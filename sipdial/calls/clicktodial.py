"""The click-to-dial flow: ring the user's device(s), optionally ask "press 1", then REFER
the phone to the target (refer mode) or call the target and bridge it (bridge mode, 3PCC in
:mod:`sipdial.calls.bridge`).

Every state change goes through :meth:`ClickToDial.fire`, which looks the input up in
:data:`sipdial.calls.states.TRANSITIONS` and runs the row's actions. The methods below only
translate SIP happenings into table inputs; what the call does next is in the table.

The REFER's Refer-To points back at sipdial (the phone's next INVITE is authenticated and
bridged by :mod:`sipdial.calls.b2bua`), so the target's ringing, answer and hang-up are seen
first-hand; the NOTIFY sipfrag progress (RFC 3515) is the fallback when the phone sends its
INVITE elsewhere, and tells when to drop sipdial's own dialog with the phone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sipdial.calls.bridge import ThirdPartyBridge
from sipdial.calls.legs import ANSWERED_ELSEWHERE, LegEvent, UacLeg, UasLeg, fork_failure
from sipdial.calls.states import (
    Action,
    CallState,
    Cause,
    Input,
    target_failure_input,
    transition,
    user_failure_input,
)
from sipdial.media.dtmf import digit_from_info
from sipdial.sip import sdp
from sipdial.sip.message import Request, Response
from sipdial.sip.timers import TimerHandle
from sipdial.sip.transaction import ClientTransaction, ServerTransaction
from sipdial.sip.uri import NameAddr, SipURI, parse_uri
from sipdial.store.models import CallEvent, CallRecord

if TYPE_CHECKING:
    from sipdial.calls.b2bua import BridgedCall
    from sipdial.calls.engine import CallEngine
    from sipdial.registrar import Binding

_SIPFRAG = re.compile(rb"^SIP/2\.0\s+(\d{3})")
_RINGING_STATES = (CallState.CALLING_USER, CallState.USER_RINGING)
_TARGET_PHASE = (CallState.USER_ANSWERED, CallState.CALLING_TARGET, CallState.TARGET_RINGING)
NOTIFY_GRACE = 4.0  # seconds to wait for the final NOTIFY once the target answered
# inputs that keep the state but belong in the call's history
_LOGGED_SELF_LOOPS = frozenset({Input.WRONG_DIGIT})


class ClickToDial:
    def __init__(self, engine: CallEngine, record: CallRecord, bindings: list[Binding],
                 auto_answer: bool, *, confirm: bool = False, language: str = "en",
                 caller_id: str | None = None, clir: bool = False) -> None:
        self.engine = engine
        self.record = record
        self.bindings = bindings
        self.auto_answer = auto_answer and len(bindings) == 1
        self.mode = record.mode
        self.confirm = confirm
        self.language = language
        self.caller_id = caller_id
        self.clir = clir
        # sipdial's own RTP for this call: the prompt, tones, in-band/RFC 4733 DTMF
        self.has_media = (confirm or self.mode == "bridge") and engine.media is not None
        self.payload_type = 0  # PCMU until the phone's answer says otherwise
        self.wrong_digits = 0
        self.sdp_session = engine.session_id()  # our o= line towards the phone
        self.sdp_version = 1
        self.media_at: tuple[str, int] | None = None
        self.state = CallState(record.state)
        self.forks: list[UacLeg] = []
        self.user_leg: UacLeg | None = None
        self.bridge: BridgedCall | ThirdPartyBridge | None = None
        self.refer_txn: ClientTransaction | None = None
        self.refer_accepted = False
        self.transfer_done = False  # the final NOTIFY arrived (RFC 3515 §2.4.5)
        self._timer: TimerHandle | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    # ------------------------------------------------------------ the table

    def fire(self, inp: Input, now: float, sip_code: int | None = None,
             detail: str | None = None) -> None:
        row = transition(self.state, inp)
        if row is None:
            return  # late input after the end
        next_state, cause, actions = row
        changed = next_state is not self.state
        self.state = next_state
        if changed or inp in _LOGGED_SELF_LOOPS:
            self._record(next_state, cause, now, sip_code, detail)
        try:
            for action in actions:
                self._do(action, now)
        finally:
            if next_state is CallState.ENDED:  # even if releasing a leg failed
                self._cancel_timer()
                self.engine.call_ended(self)

    def _record(self, state: CallState, cause: Cause | None, now: float,
                sip_code: int | None, detail: str | None) -> None:
        rec = self.record
        rec.state = state.value
        if cause is not None:
            rec.cause = cause.value
            rec.ended_at = now
            detail = detail or cause.value
        event = CallEvent(state.value, now, sip_code, detail)
        rec.events.append(event)
        self.engine.persist(rec, event)

    def _do(self, action: Action, now: float) -> None:
        match action:
            case Action.CANCEL_OTHER_DEVICES:
                for leg in self.forks:
                    if leg is not self.user_leg:
                        leg.cancel(now, reason=ANSWERED_ELSEWHERE)
            case Action.PLAY_PROMPT | Action.REPLAY_PROMPT:
                self._play_prompt(now)
            case Action.CONNECT_TARGET:
                if self.mode == "bridge":
                    self._start_bridge(now)
                else:
                    self._send_refer(now)
            case Action.RELEASE_USER:
                if self.mode != "refer":
                    return  # the bridge keeps the phone leg: that is the call
                # The REFER subscription shares the dialog (RFC 5057): let the phone send its
                # final NOTIFY before the BYE, but not wait for it forever.
                if self.transfer_done or not self.refer_accepted:
                    self._release_user(now)
                else:
                    self._set_timer(now + NOTIFY_GRACE, self._release_user)
            case Action.RELEASE_ALL:
                self._release_all(now)

    # ------------------------------------------------------------ start

    def start(self, now: float) -> None:
        engine = self.engine
        target_user = self.record.to.removeprefix("sip:").split("@", 1)[0]
        caller = NameAddr(SipURI("sip", target_user, None, engine.domain, None, {}, {}),
                          self.record.to)
        user = engine.users[self.record.user]
        callee = NameAddr(SipURI("sip", user.id, None, engine.domain, None, {}, {}),
                          user.name or None)
        media_at = self.media_at
        for binding in self.bindings:
            extra = [("P-Asserted-Identity", str(caller))]
            if self.auto_answer:
                extra += engine.auto_answer_headers(binding.user_agent)
            offer = sdp.audio_offer(*(media_at or engine.media_address(binding.peer)),
                                    session_id=self.sdp_session)
            leg = UacLeg(engine.ua, self, uri=parse_uri(binding.contact), peer=binding.peer,
                         from_party=caller, to_party=callee, body=offer,
                         content_type=sdp.CONTENT_TYPE, extra=extra, label=binding.device)
            self.forks.append(leg)
            leg.start(now)
        self._set_timer(now + engine.config.calls.user_answer_timeout, self._user_timeout)

    def open_media(self) -> None:
        """Bind this call's RTP port (before anything is sent or stored): raises
        :class:`~sipdial.media.transport.MediaPortsExhausted` when none is free."""
        if self.has_media and self.engine.media is not None:
            self.media_at = self.engine.media.open(self, self._media_digit)

    # ------------------------------------------------------------ commands

    def hang_up(self, now: float) -> None:
        """DELETE /v1/calls/{id}: cancel or hang up at any stage."""
        self.fire(Input.CANCEL, now, detail="cancelled by API")

    def shut_down(self, now: float) -> None:
        """sipdial is stopping: release every leg, the call ends as interrupted."""
        self.fire(Input.SHUTDOWN, now, detail="sipdial stopped")

    # ------------------------------------------------------------ timers

    def _set_timer(self, deadline: float, callback: object) -> None:
        self._cancel_timer()
        self._timer = self.engine.timers.schedule(deadline, callback)  # type: ignore[arg-type]

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _user_timeout(self, now: float) -> None:
        self._timer = None
        if self.state in _RINGING_STATES:
            self.fire(Input.USER_NO_ANSWER, now, detail="no answer within "
                      f"{self.engine.config.calls.user_answer_timeout:g} s")

    def _release_all(self, now: float) -> None:
        media = self.engine.media
        if isinstance(self.bridge, ThirdPartyBridge):
            tone = {"target_busy": "busy", "target_no_answer": "failure",
                    "target_failed": "failure"}.get(self.record.cause or "")
            self.bridge.release(now, tone)  # hangs up the phone, after the tone if any
            for leg in self.forks:
                if leg is not self.user_leg:
                    leg.release(now)
            return
        for leg in self.forks:
            leg.release(now)
        if self.bridge is not None:
            self.bridge.release(now)
        if media is not None and self.has_media:
            media.close(self)

    # ------------------------------------------------------------ media and digits

    def tone_frames(self, kind: str) -> Sequence[bytes]:
        assert self.engine.prompts is not None
        return self.engine.prompts.tone(kind, self.payload_type)  # type: ignore[arg-type]

    def _play_prompt(self, now: float) -> None:
        media, prompts = self.engine.media, self.engine.prompts
        if media is None or prompts is None:
            # no media: confirmation is impossible; never dial without it
            self._soon(Input.NOT_CONFIRMED, now, detail="no media for the prompt")
            return
        frames = prompts.confirm_prompt(self.record.to, self.language, self.payload_type)
        media.play(self, frames)
        timeout = len(frames) * 0.020 + self.engine.config.calls.confirm_timeout
        self._set_timer(now + timeout, self._confirm_timeout)

    def _confirm_timeout(self, now: float) -> None:
        self._timer = None
        if self.state is CallState.AWAITING_CONFIRMATION:
            self.fire(Input.NOT_CONFIRMED, now, detail="no digit pressed")

    def _media_digit(self, key: object, digit: str, how: str) -> None:
        """A digit from sipdial's RTP (RFC 4733 or in-band): outside the SIP pump."""
        self.digit(digit, self.engine.clock(), how)
        self.engine.kick()

    def digit(self, digit: str, now: float, how: str) -> None:
        if self.state is not CallState.AWAITING_CONFIRMATION:
            return
        if digit == "1":
            if self.engine.media is not None:
                self.engine.media.stop_playing(self)
            self.fire(Input.CONFIRMED, now, detail=f"DTMF 1 ({how})")
            return
        self.wrong_digits += 1
        inp = Input.WRONG_DIGIT if self.wrong_digits == 1 else Input.NOT_CONFIRMED
        self.fire(inp, now, detail=f"DTMF {digit} ({how})")

    def _soon(self, inp: Input, now: float, code: int | None = None,
              detail: str | None = None) -> None:
        """Fire ``inp`` right after the current transition (never from inside one)."""
        self.engine.timers.schedule(now, lambda t: self.fire(inp, t, code, detail))

    def _answer_media(self, leg: UacLeg) -> bool:
        """Point our RTP at the phone's, in the codec it chose (RFC 3264 answer). False when
        sipdial needs media for this call and the answer gives it none it can use."""
        media = self.engine.media
        if not self.has_media or media is None:
            return True
        info = sdp.parse_answer(leg.answer.body) if leg.answer is not None else None
        if info is None:
            return False
        self.payload_type = info.payload_type
        media.set_remote(self, info.host, info.port, info.payload_type, info.event_payload_type)
        return True

    # ------------------------------------------------------------ bridge mode

    def _start_bridge(self, now: float) -> None:
        engine = self.engine
        assert self.user_leg is not None
        number = self.record.to.removeprefix("sip:").split("@", 1)[0]
        targets = engine.route(number, now)
        if not isinstance(targets, list):
            code = 404 if targets is None else targets
            self._soon(target_failure_input(code), now, code, "no route to the target")
            return
        user = engine.users[self.record.user]
        shown = self.caller_id or user.number or user.id
        identity = NameAddr(SipURI("sip", shown, None, engine.domain, None, {}, {}),
                            user.name or None)
        extra = [("P-Asserted-Identity", str(identity))]
        caller = identity
        if self.clir:
            # RFC 3323/3325: anonymous From, the real identity only for trusted hops
            caller = NameAddr(SipURI("sip", "anonymous", None, "anonymous.invalid", None, {},
                                     {}), "Anonymous")
            extra.append(("Privacy", "id"))
        callee = NameAddr(SipURI("sip", number, None, engine.domain, None, {}, {}))
        bridge = ThirdPartyBridge(engine, self, self.user_leg, targets=targets, caller=caller,
                                  callee=callee, extra=extra)
        self.bridge = bridge
        bridge.start(now)

    def _release_user(self, now: float) -> None:
        if self.user_leg is not None:
            self.user_leg.release(now)

    def _refer_timeout(self, now: float) -> None:
        self._timer = None
        if self.bridge is None and self.state in _TARGET_PHASE:
            self.fire(Input.REFER_FAILED, now, detail="the transfer did not complete in time")

    # ------------------------------------------------------------ REFER

    def _send_refer(self, now: float) -> None:
        leg = self.user_leg
        assert leg is not None
        engine = self.engine
        refer_to = engine.refer_target(self.record.to, leg.peer, self.id)
        referred_by = f"<sip:{self.record.user}@{engine.domain}>"
        self.refer_txn = leg.request("REFER", now, extra=[
            ("Refer-To", f"<{refer_to}>"), ("Referred-By", referred_by)])
        self._set_timer(now + engine.config.calls.refer_timeout, self._refer_timeout)

    # ------------------------------------------------------------ leg events

    def leg_event(self, leg: UacLeg | UasLeg, event: LegEvent,
                  message: Request | Response | None, now: float,
                  txn: ClientTransaction | ServerTransaction | None = None) -> None:
        assert isinstance(leg, UacLeg)
        code = message.status if isinstance(message, Response) else None
        match event:
            case LegEvent.PROGRESS:
                if self.state in _RINGING_STATES and code in (180, 183):
                    self.fire(Input.USER_RINGING, now, code, leg.label)
            case LegEvent.ANSWERED:
                if self.user_leg is None and self.state in _RINGING_STATES:
                    self.user_leg = leg
                    self.record.device = leg.label
                    self.record.auto_answer = self.auto_answer
                    self.fire(Input.USER_ANSWERED, now, code, leg.label)
                    if not self._answer_media(leg):
                        self.fire(Input.FAILED, now, code,
                                  "the phone's answer has no PCMU/PCMA audio for sipdial")
                        return
                    self.fire(Input.ASK_CONFIRMATION if self.confirm
                              else Input.NO_CONFIRMATION, now)
                else:
                    leg.bye(now)  # a second device answered too late
            case LegEvent.FAILED:
                self._device_failed(leg, now)
            case LegEvent.ENDED:
                self._user_leg_ended(leg, now)
            case LegEvent.REQUEST:
                assert isinstance(message, Request) and isinstance(txn, ServerTransaction)
                self._in_dialog_request(leg, message, txn, now)
            case LegEvent.RESPONSE:
                assert isinstance(message, Response)
                if txn is self.refer_txn:
                    self._refer_response(message, now)

    def _device_failed(self, leg: UacLeg, now: float) -> None:
        if self.state not in _RINGING_STATES or leg is self.user_leg:
            return
        status = fork_failure(self.forks, leg, now)
        if status is not None:
            self.fire(user_failure_input(status), now, status, leg.label)

    def _user_leg_ended(self, leg: UacLeg, now: float) -> None:
        if leg is not self.user_leg:
            return
        if self.state is CallState.AWAITING_CONFIRMATION:
            self.fire(Input.USER_HUNG_UP, now, detail="phone hung up during the prompt")
        elif self.state is CallState.USER_ANSWERED and not self.refer_accepted:
            self.fire(Input.USER_HUNG_UP, now, detail="phone hung up before the transfer")
        # after the REFER was accepted the phone may leave its first dialog at any time

    def _in_dialog_request(self, leg: UacLeg, request: Request, txn: ServerTransaction,
                           now: float) -> None:
        ua = self.engine.ua
        if request.method == "NOTIFY":
            ua.endpoint.reply(txn, 200, now)
            self._notify(request, now)
        elif request.method == "UPDATE" and not request.body:
            ua.endpoint.reply(txn, 200, now)  # e.g. a session refresh: no offer, no answer
        elif request.method in ("INVITE", "UPDATE"):
            # e.g. the phone holds its first call before it transfers: answer in kind
            self.sdp_version += 1  # RFC 3264 §8: same o= session, version one higher
            offer = sdp.audio_offer(*(self.media_at or self.engine.media_address(leg.peer)),
                                    session_id=self.sdp_session, version=self.sdp_version,
                                    direction=sdp.answer_direction(request.body))
            ua.endpoint.reply(txn, 200, now, to_tag=None, headers=[
                ("Contact", ua.endpoint.contact(leg.peer)),
                ("Content-Type", sdp.CONTENT_TYPE)], body=offer)
        elif request.method == "INFO":
            ua.endpoint.reply(txn, 200, now)
            digit = digit_from_info(request.headers.get("Content-Type"), request.body)
            if digit is not None:
                self.digit(digit, now, "info")
        elif request.method == "OPTIONS":
            ua.endpoint.reply(txn, 200, now)
        else:
            ua.endpoint.reply(txn, 501, now)

    def _refer_response(self, response: Response, now: float) -> None:
        if response.status < 200:
            return
        if response.status < 300:
            self.refer_accepted = True
            return
        self.fire(Input.REFER_FAILED, now, response.status, f"REFER {response.reason}")

    def _notify(self, request: Request, now: float) -> None:
        if self.refer_txn is None:
            return  # no REFER of ours: not our subscription (e.g. during the prompt)
        if not (request.headers.get("Event") or "").strip().lower().startswith("refer"):
            return
        match = _SIPFRAG.match(request.body.lstrip())
        if match is None:
            return
        code = int(match.group(1))
        self.refer_accepted = True
        terminated = (request.headers.get("Subscription-State") or "").strip().lower()
        if code >= 200 or terminated.startswith("terminated"):
            # the transfer's outcome is known: sipdial's own dialog with the phone is done
            self.transfer_done = True
            if self.state is not CallState.USER_ANSWERED or code >= 200:
                self._release_user(now)
        if self.bridge is not None:
            return  # the bridged leg reports the target first-hand
        if code < 180:
            self.fire(Input.TARGET_CALLING, now, code, "NOTIFY")
        elif code < 200:
            self.fire(Input.TARGET_RINGING, now, code, "NOTIFY")
        elif code < 300:
            self.fire(Input.TARGET_ANSWERED, now, code, "NOTIFY")
            # The phone reached the target without passing through sipdial, so its hang-up
            # will never be seen here: the click-to-dial job is complete.
            self.fire(Input.HANGUP, now, None, "transferred outside sipdial; end not observed")
        else:
            self.fire(target_failure_input(code), now, code, "NOTIFY")

    # ------------------------------------------------------------ the referred call

    def attach(self, bridge: BridgedCall) -> None:
        self.bridge = bridge
        if self.state is not CallState.CONNECTED:
            self._cancel_timer()  # the target's progress now comes from the bridged call

    def target_event(self, inp: Input, now: float, code: int | None = None,
                     detail: str | None = None) -> None:
        """Called by the bridged (referred) call."""
        if inp is Input.USER_HUNG_UP and self.state is CallState.CONNECTED:
            inp = Input.HANGUP
        if inp is Input.HANGUP and self.state is not CallState.CONNECTED:
            inp = Input.USER_HUNG_UP
        self.fire(inp, now, code, detail)
