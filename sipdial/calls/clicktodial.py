"""The click-to-dial call: ring the user's device(s), optionally ask "press 1", then REFER the
phone to the target (refer mode, :mod:`sipdial.calls.transfer`) or call the target and
bridge it (bridge mode, 3PCC in :mod:`sipdial.calls.bridge`).

Every state change goes through :meth:`ClickToDial.fire`, which looks the input up in
:data:`sipdial.calls.states.TRANSITIONS` and runs the row's actions. The methods below only
translate SIP happenings into table inputs and carry the actions out; what the call does
next is in the table. Inputs fired while a row runs (by an action, or by a leg or bridge it
drives) wait until the row is done.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipdial.calls.autoanswer import AutoAnswerRule, auto_answer_headers
from sipdial.calls.bridge import ThirdPartyBridge
from sipdial.calls.bridging import Bridge, Forks
from sipdial.calls.legs import (
    Acked,
    Answered,
    Broken,
    Failed,
    HungUp,
    LegEvent,
    PeerRequest,
    PeerResponse,
    Progress,
    UacLeg,
)
from sipdial.calls.media import CallMedia, DigitSource, Tone
from sipdial.calls.phone import PhoneSession
from sipdial.calls.routing import (
    Destination,
    NoRoute,
    Pbx,
    Resolver,
    Router,
    Target,
    Unavailable,
    callee_uri,
    user_uri,
)
from sipdial.calls.states import (
    Action,
    CallState,
    Cause,
    IllegalTransition,
    Input,
    Mode,
    Phase,
    transition,
    user_failure_input,
)
from sipdial.calls.transfer import Transfer
from sipdial.registrar import Binding
from sipdial.sip import NameAddr, Peer, TimerHandle, TimerHeap, family, parse_uri, sdp
from sipdial.store import CallEvent, CallRecord
from sipdial.ua import UserAgent

if TYPE_CHECKING:
    from sipdial.config import CallsConfig, UserConfig

__all__ = ["C2D_PARAM", "CallEnv", "ClickToDial", "Options"]

log = logging.getLogger("sipdial.calls")

C2D_PARAM = "x-c2d"  # Refer-To parameter naming the click-to-dial call a referred INVITE is for

#: tone the phone hears before the BYE when the bridge fails, by cause
_TONES = {Cause.TARGET_BUSY: Tone.BUSY, Cause.TARGET_NO_ANSWER: Tone.FAILURE,
          Cause.TARGET_UNAVAILABLE: Tone.FAILURE, Cause.TARGET_FAILED: Tone.FAILURE}


@dataclass(frozen=True, slots=True)
class CallEnv:
    """What every call of a :class:`~sipdial.calls.CallService` shares."""

    ua: UserAgent
    timers: TimerHeap
    config: CallsConfig
    domain: str
    router: Router
    resolver: Resolver  #: RFC 3263, for routes and URIs whose host is a name
    auto_answer_rules: tuple[AutoAnswerRule, ...]
    #: where REFER-mode offers point the phone's audio (received and dropped), per family
    rtp_sinks: dict[int, tuple[str, int]]
    #: persist and publish a state change; tell the service the call is over
    on_change: Callable[[CallRecord, CallEvent], None]
    on_end: Callable[[ClickToDial], None]
    #: bridge-mode bridges not ended yet (one may outlive its call while a tone plays)
    bridges: set[ThirdPartyBridge]

    def sink_for(self, peer: Peer) -> tuple[str, int]:
        return self.rtp_sinks.get(family(peer.host)) or next(iter(self.rtp_sinks.values()))


@dataclass(frozen=True, slots=True)
class Options:
    """How this call is made (the request's choices, the user's and the config's defaults)."""

    mode: Mode
    auto_answer: bool
    confirm: bool
    language: str
    caller_id: str | None
    clir: bool
    #: the request's own headers on the user's INVITEs and the target's (allow-listed)
    headers: tuple[tuple[str, str], ...] = ()


class ClickToDial:
    def __init__(self, env: CallEnv, record: CallRecord, user: UserConfig,
                 destination: Destination, bindings: list[Binding], options: Options,
                 media: CallMedia | None, session_id: int,
                 first_leg: list[Target] | None = None) -> None:
        """``first_leg``: an external number's route targets, rung instead of the user's
        devices (bridge mode)."""
        self.env = env
        self.first_leg = first_leg
        self.record = record
        self.user = user
        self.destination = destination
        self.bindings = bindings
        self.options = options
        self.media = media  # sipdial's own RTP: the prompt, tones, DTMF (None: not needed)
        self.phase = Phase(CallState(record.state))
        self.forks = Forks([])
        self.user_leg: UacLeg | None = None
        self.session: PhoneSession | None = None
        self._session_id = session_id
        self.transfer: Transfer | None = None  # refer mode, from the REFER on
        self.bridge: ThirdPartyBridge | None = None  # bridge mode, from the target's INVITE on
        self.relayed: Bridge | None = None  # refer mode: the phone's referred call, relayed
        self._timer: TimerHandle | None = None
        self._queue: deque[tuple[Input, int | None, str | None, UacLeg | None]] = deque()
        self._firing = False

    def __repr__(self) -> str:
        return f"<ClickToDial {self.id} {self.phase.name}>"

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def state(self) -> CallState:
        return self.phase.state

    @property
    def ended(self) -> bool:
        return self.phase is Phase.ENDED

    @property
    def awaiting_referred_call(self) -> bool:
        """REFER mode: the phone has been REFERred and its INVITE has not arrived yet."""
        return self.transfer is not None and self.transfer.awaiting_referred_call

    # ------------------------------------------------------------ the table

    def fire(self, inp: Input, now: float, sip_code: int | None = None,
             detail: str | None = None, leg: UacLeg | None = None) -> None:
        """Run ``inp`` through the table (after the row being run, if any). ``leg``: the
        device the input is about."""
        if self._firing:
            self._queue.append((inp, sip_code, detail, leg))
            return
        self._firing = True
        try:
            self._step(inp, sip_code, detail, leg, now)
            while self._queue:
                self._step(*self._queue.popleft(), now)
        finally:
            self._firing = False

    def _step(self, inp: Input, sip_code: int | None, detail: str | None,
              leg: UacLeg | None, now: float) -> None:
        try:
            row = transition(self.phase, inp)
        except IllegalTransition as exc:
            log.error("call %s: %s: ending it as failed", self.id, exc)
            inp, sip_code, detail = Input.FAILED, None, f"internal error: {exc}"
            row = transition(self.phase, inp)
        if row is None:
            return  # late input after the end
        next_phase, cause, actions = row
        changed = next_phase is not self.phase
        self.phase = next_phase
        if changed:
            self._record(next_phase.state, cause, now, sip_code, detail)
        try:
            for action in actions:
                self._do(action, now, leg)
        except Exception:
            log.exception("call %s: action failed in %s: ending it as failed", self.id,
                          next_phase.name)
            if next_phase is not Phase.ENDED:
                self._queue.clear()
                self._queue.append((Input.FAILED, None, "internal error", None))
        finally:
            if next_phase is Phase.ENDED and changed:
                self._stop_timer()
                self.env.on_end(self)

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
        if log.isEnabledFor(logging.INFO):
            log.info("call %s user %s: %s%s%s%s", rec.id, rec.user, state.value,
                     f" cause={cause.value}" if cause is not None else "",
                     f" sip={sip_code}" if sip_code is not None else "",
                     f" ({detail})" if detail and detail != (cause and cause.value) else "")
        self.env.on_change(rec, event)

    def _do(self, action: Action, now: float, leg: UacLeg | None) -> None:
        match action:
            case Action.STOP_TIMER:
                self._stop_timer()
            case Action.TAKE_DEVICE:
                assert leg is not None
                self.user_leg = leg
                self.record.device = leg.label
                self.forks.cancel_others(leg, now)
                self.session = PhoneSession(
                    self.env.ua, self._session_id,
                    self.media.address if self.media is not None else None,
                    self.env.sink_for(leg.peer))
            case Action.HANG_UP_DEVICE:
                assert leg is not None
                leg.hang_up(now)  # a second device answered too late
            case Action.CHECK_DEVICES:
                assert leg is not None
                status = self.forks.failure(leg, now)
                if status is not None:
                    self.fire(user_failure_input(status), now, status, leg.label)
            case Action.USE_PHONE_MEDIA:
                self._use_phone_media(now)
            case Action.DECIDE_CONFIRMATION:
                self.fire(Input.ASK_CONFIRMATION if self.options.confirm
                          else Input.NO_CONFIRMATION, now)
            case Action.PLAY_PROMPT:
                self._play_prompt(now)
            case Action.STOP_PROMPT:
                if self.media is not None:
                    self.media.stop_playing()
            case Action.CONNECT_TARGET:
                if self.options.mode is Mode.BRIDGE:
                    self._start_bridge(now)
                else:
                    self._start_transfer(now)
            case Action.TARGET_CONNECTED:
                if self.transfer is not None:
                    self.transfer.call_connected(now)
                    if self.media is not None:  # the prompt is long over: free the port
                        self.media.close()
            case Action.RELEASE_ALL:
                self._release_all(now)

    # ------------------------------------------------------------ start

    @property
    def _domain(self) -> str:
        """The domain of the URIs the call's parties are shown with: the PBX's in PBX mode."""
        pbx = self.env.router.pbx
        return pbx.domain if pbx is not None else self.env.domain

    def start(self, now: float) -> None:
        env = self.env
        number = self.destination.number
        caller = NameAddr(user_uri(number, self._domain), self.record.to)
        callee = NameAddr(user_uri(self.user.id, self._domain), self.user.name or None)
        pbx = env.router.pbx
        if self.first_leg is not None:
            self.forks = Forks([self._external_leg(t, caller) for t in self.first_leg])
            self.forks.start(now)
            self._set_timer(now + env.config.user_answer_timeout, self._user_timeout)
            return
        if pbx is not None:
            self.forks = Forks([self._pbx_leg(pbx, caller, callee)])
            self.forks.start(now)
            self._set_timer(now + env.config.user_answer_timeout, self._user_timeout)
            return
        media_at = self.media.address if self.media is not None else None
        legs = []
        for binding in self.bindings:
            extra = [("P-Asserted-Identity", str(caller)), *self.options.headers]
            if self.options.auto_answer:
                extra += auto_answer_headers(binding.user_agent,
                                             local_uri=str(user_uri("sipdial", env.domain)),
                                             rules=env.auto_answer_rules)
            offer = sdp.audio_offer(*(media_at or env.sink_for(binding.peer)),
                                    session_id=self._session_id)
            # RFC 3327: through the device's Path (to its first hop) when it registered
            # through proxies, else to where its REGISTER came from
            legs.append(UacLeg(env.ua, self, uri=parse_uri(binding.contact),
                               peer=binding.next_hop, from_party=caller, to_party=callee,
                               body=offer, content_type=sdp.CONTENT_TYPE, extra=extra,
                               label=binding.device, route=binding.path))
        self.forks = Forks(legs)
        self.forks.start(now)
        self._set_timer(now + env.config.user_answer_timeout, self._user_timeout)

    def _external_leg(self, target: Target, caller: NameAddr) -> UacLeg:
        """An external number rung first (a mobile through a route): like a target, with
        the route's credentials and the identity the target leg gets (the user's number or
        ``caller_id``; a carrier refuses a number sipdial does not hold), the number to be
        called in the display name."""
        env = self.env
        media_at = self.media.address if self.media is not None else None
        assert media_at is not None  # bridge mode: sipdial's own RTP
        offer = sdp.audio_offer(*media_at, session_id=self._session_id)
        number = self.record.caller or ""
        user = self.user
        shown = self.options.caller_id or user.number or user.id
        identity = NameAddr(user_uri(shown, self._domain), self.destination.number)
        extra = [("P-Asserted-Identity", str(identity)), *self.options.headers]
        caller = identity
        if self.options.clir:
            caller = NameAddr(user_uri("anonymous", "anonymous.invalid"), "Anonymous")
            extra.append(("Privacy", "id"))
        return UacLeg(env.ua, self, uri=target.uri, peer=target.peer, from_party=caller,
                      to_party=NameAddr(callee_uri(target, number, self._domain)), body=offer,
                      content_type=sdp.CONTENT_TYPE, extra=extra, label=target.label,
                      credentials=target.credentials, resolver=env.resolver,
                      route=target.route)

    def _pbx_leg(self, pbx: Pbx, caller: NameAddr, callee: NameAddr) -> UacLeg:
        """PBX mode: one INVITE to ``sip:USER@PBX`` through the PBX, which forks it to the
        user's devices; the same caller ID and auto-answer headers as to a device of ours
        (the User-Agent is unknown: the generic ones), the PBX's challenge answered once with
        sipdial's account."""
        env = self.env
        target = pbx.target(self.user.id, label="pbx")
        extra = [("P-Asserted-Identity", str(caller)), *self.options.headers]
        if self.options.auto_answer:
            extra += auto_answer_headers(None, local_uri=str(user_uri("sipdial", env.domain)),
                                         rules=env.auto_answer_rules)
        media_at = self.media.address if self.media is not None else None
        if media_at is None:  # REFER mode: the phone's audio goes to the sink, dropped
            media_at = env.sink_for(target.peer) if target.peer is not None \
                else next(iter(env.rtp_sinks.values()))
        offer = sdp.audio_offer(*media_at, session_id=self._session_id)
        return UacLeg(env.ua, self, uri=target.uri, peer=target.peer,
                      from_party=pbx.from_party(caller),
                      to_party=callee, body=offer, content_type=sdp.CONTENT_TYPE, extra=extra,
                      label=target.label, credentials=target.credentials,
                      resolver=env.resolver, route=target.route)

    # ------------------------------------------------------------ commands

    def hang_up(self, now: float) -> None:
        """DELETE /v1/calls/{id}: cancel or hang up at any stage."""
        self.fire(Input.CANCEL, now, detail="cancelled by API")

    def shut_down(self, now: float) -> None:
        """sipdial is stopping: release every leg, the call ends as interrupted."""
        self.fire(Input.SHUTDOWN, now, detail="sipdial stopped")

    def referred_call(self, relayed: Bridge, now: float) -> None:
        """The phone's INVITE to the target reached sipdial (refer mode) and is relayed by
        ``relayed``, which reports the target's progress from now on."""
        self.relayed = relayed
        if self.transfer is not None:
            self.transfer.referred_call(now)

    def target_event(self, inp: Input, now: float, code: int | None = None,
                     detail: str | None = None) -> None:
        """The target's progress, from the bridge, the relayed referred call or NOTIFY."""
        self.fire(inp, now, code, detail)

    # ------------------------------------------------------------ timers

    def _set_timer(self, deadline: float, callback: Callable[[float], None]) -> None:
        self._stop_timer()
        self._timer = self.env.timers.schedule(deadline, callback)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _user_timeout(self, now: float) -> None:
        self._timer = None
        self.fire(Input.USER_NO_ANSWER, now, detail="no answer within "
                  f"{self.env.config.user_answer_timeout:g} s")

    def _confirm_timeout(self, now: float) -> None:
        self._timer = None
        self.fire(Input.CONFIRM_TIMEOUT, now, detail="no digit pressed")

    # ------------------------------------------------------------ actions

    def _release_all(self, now: float) -> None:
        """Every part of the call lets go; one that fails does not keep the others up."""
        cause = Cause(self.record.cause) if self.record.cause else None
        steps: list[Callable[[], None]] = []
        if self.bridge is not None:
            # the phone hears a busy/failure tone, then the BYE (the bridge owns it now)
            bridge = self.bridge
            tone = _TONES.get(cause) if cause is not None else None
            steps.append(lambda: bridge.release(now, tone))
            steps.append(lambda: self.forks.release(now, keep=self.user_leg))
        else:
            if self.relayed is not None:
                relayed = self.relayed
                steps.append(lambda: relayed.release(now))
            if self.transfer is not None:
                transfer = self.transfer
                steps.append(lambda: transfer.release(now))
            steps.append(lambda: self.forks.release(now))
            if self.media is not None:
                steps.append(self.media.close)
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("call %s: releasing a part failed", self.id)

    def _use_phone_media(self, now: float) -> None:
        """Point our RTP at the phone's, in the codec it chose (RFC 3264 answer). The call
        fails when it needs sipdial's media and the answer gives it none it can use."""
        leg = self.user_leg
        if self.media is None or leg is None:
            return
        info = sdp.parse_answer(leg.answer.body) if leg.answer is not None else None
        if info is None:
            self.fire(Input.FAILED, now, leg.final_status,
                      "the phone's answer has no PCMU/PCMA audio for sipdial")
            return
        self.media.point_at(info)

    def _play_prompt(self, now: float) -> None:
        assert self.media is not None  # the service opens media for every confirmed call
        seconds = self.media.play_prompt(self.destination.number, self.options.language)
        self._set_timer(now + seconds + self.env.config.confirm_timeout, self._confirm_timeout)

    def digit(self, digit: str, now: float, how: str) -> None:
        """A key press: SIP INFO here, RFC 4733 or in-band from sipdial's RTP."""
        self.fire(Input.DIGIT_ONE if digit == "1" else Input.OTHER_DIGIT, now,
                  detail=f"DTMF {digit} ({how})")

    def _start_bridge(self, now: float) -> None:
        env = self.env
        phone = self.user_leg
        assert phone is not None and self.media is not None
        routed = env.router.route(self.destination, now)
        if not isinstance(routed, list):
            self._unroutable(routed, now)
            return
        user = self.user
        shown = self.options.caller_id or user.number or user.id
        identity = NameAddr(user_uri(shown, self._domain), user.name or None)
        extra = [("P-Asserted-Identity", str(identity)), *self.options.headers]
        caller = identity
        if self.options.clir:
            # RFC 3323/3325: anonymous From, the real identity only for trusted hops
            caller = NameAddr(user_uri("anonymous", "anonymous.invalid"), "Anonymous")
            extra.append(("Privacy", "id"))
        elif env.router.pbx is not None:
            caller = env.router.pbx.from_party(identity)
        self.bridge = ThirdPartyBridge(
            env.ua, env.timers, phone, self.media, targets=routed, caller=caller,
            callee=NameAddr(callee_uri(routed[0], self.destination.number, self._domain)),
            extra=extra,
            answer_timeout=env.config.target_answer_timeout, listener=self,
            label=f"{self.id} {user.id}->{self.destination.number}", resolver=env.resolver,
            on_end=env.bridges.discard)
        env.bridges.add(self.bridge)
        self.bridge.start(now)

    def _unroutable(self, routed: NoRoute | Unavailable, now: float) -> None:
        if isinstance(routed, Unavailable):
            self.fire(Input.TARGET_UNAVAILABLE, now, 480,
                      f"{routed.user} has no registered device")
        else:
            self.fire(Input.TARGET_FAILED, now, 404, "no route to the target")

    def _start_transfer(self, now: float) -> None:
        env = self.env
        phone = self.user_leg
        assert phone is not None and self.session is not None
        self.transfer = Transfer(
            phone, self.session, env.timers, self,
            refer_to=self._refer_to(phone.peer),
            referred_by=f"<{user_uri(self.user.id, self._domain)}>",
            timeout=env.config.refer_timeout, label=self.id,
            referred_here=env.router.pbx is None)
        self.transfer.start(now)

    def _refer_to(self, phone: Peer) -> str:
        """Refer-To: the target at sipdial, reachable over the transport the phone uses,
        tagged with the call's id (the referred INVITE is matched back by it). PBX mode:
        the target at the PBX, which routes the phone's INVITE (sipdial never sees it; the
        REFER's NOTIFYs tell the outcome)."""
        env = self.env
        if env.router.pbx is not None:
            return str(env.router.pbx.uri(self.destination.number))
        _host, port = env.ua.endpoint.local_for(phone)
        params: dict[str, str | None] = {}
        if phone.transport != "udp":
            params["transport"] = phone.transport
        params[C2D_PARAM] = self.id
        uri = user_uri(self.destination.number, env.domain)
        uri.port = None if port == 5060 and phone.transport == "udp" else port
        uri.params = params
        return str(uri)

    # ------------------------------------------------------------ leg events -> inputs

    def leg_event(self, event: LegEvent, now: float) -> None:
        match event:
            case Progress(response=response):
                if response.status in (180, 183):
                    self.fire(Input.USER_RINGING, now, response.status, event.leg.label)
            case Answered(leg=leg, response=response):
                self.fire(Input.USER_ANSWERED, now, response.status, leg.label, leg)
            case Failed(leg=leg, status=status):
                self.fire(Input.DEVICE_FAILED, now, status, leg.label, leg)
            case Broken(detail=detail):
                self.fire(Input.FAILED, now, None, detail)
            case HungUp(leg=leg) if leg is self.user_leg:
                self.fire(Input.PHONE_HUNG_UP, now, detail="phone hung up during the prompt")
            case PeerRequest(leg=leg) if leg is self.user_leg and self.session is not None:
                digit = self.session.answer(event, now)
                if digit is not None:
                    self.digit(digit, now, DigitSource.INFO)
            case PeerRequest(txn=txn):
                self.env.ua.endpoint.reply(txn, 481, now)
            case HungUp() | PeerResponse() | Acked():
                pass
