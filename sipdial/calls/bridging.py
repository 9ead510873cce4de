"""What the two bridges share: the target's forks, the in-dialog relay, the table runner.

sipdial joins two legs in two ways, each one table in its own module:

* :class:`~sipdial.calls.b2bua.RelayedCall` — a phone's own INVITE (the referred call of a
  REFER, or dialled by hand) relayed to its destination as a B2BUA;
* :class:`~sipdial.calls.bridge.ThirdPartyBridge` — bridge mode: the phone leg sipdial
  created, joined to the destination sipdial calls (3PCC, RFC 3725).

Both ring the destination's forks (a local user's devices, or one route), let the first answer
win, relay in-dialog requests between the two sides once connected, and report the
destination's progress to the click-to-dial call that follows them (:class:`TargetListener`)
as inputs of the call table. :class:`Bridge` holds that; the subclasses hold a table each.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeAlias, TypeVar

from sipdial.calls.legs import (
    ANSWERED_ELSEWHERE,
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
    UasLeg,
)
from sipdial.calls.media import Tone
from sipdial.calls.routing import Resolver, Target
from sipdial.calls.states import Input, target_failure_input
from sipdial.sip import (
    ClientTransaction,
    NameAddr,
    ServerTransaction,
    Symbol,
    TimerHandle,
    TimerHeap,
    make_response,
)
from sipdial.ua import UserAgent

log = logging.getLogger("sipdial.calls")


class TargetListener(Protocol):
    """The click-to-dial call a bridge reports the destination's progress to."""

    def target_event(self, inp: Input, now: float, code: int | None = None,
                     detail: str | None = None) -> None: ...


class _ListenerGone:
    """Stands in for a :class:`TargetListener` that no longer exists (its call ended)."""

    def target_event(self, inp: Input, now: float, code: int | None = None,
                     detail: str | None = None) -> None:
        log.debug("%s after its call was gone", inp.name)


LISTENER_GONE = _ListenerGone()


def weak_listener(listener: TargetListener | None
                  ) -> Callable[[], TargetListener | None]:
    """A weak reference to a click-to-dial call from what it owns (a bridge, a transfer):
    the call holds them, so a strong reference back made a cycle. Called: the listener,
    :data:`LISTENER_GONE` once it is gone, None when there was none."""
    if listener is None:
        return lambda: None
    ref = weakref.ref(listener)

    def get() -> TargetListener:
        alive = ref()
        return LISTENER_GONE if alive is None else alive

    return get


# ---------------------------------------------------------------------------- forks


class Forks:
    """The destination's legs, rung in parallel (one, or every device of a local user)."""

    def __init__(self, legs: Sequence[UacLeg]) -> None:
        self.legs = list(legs)

    def start(self, now: float) -> None:
        for leg in self.legs:
            leg.start(now)

    def cancel_others(self, winner: UacLeg, now: float) -> None:
        """``winner`` answered first: CANCEL the rest (RFC 3326 "completed elsewhere")."""
        for leg in self.legs:
            if leg is not winner:
                leg.cancel(now, reason=ANSWERED_ELSEWHERE)

    def cancel(self, now: float) -> None:
        for leg in self.legs:
            leg.cancel(now)

    def release(self, now: float, keep: UacLeg | None = None) -> None:
        for leg in self.legs:
            if leg is not keep:
                leg.release(now)

    def failure(self, leg: UacLeg, now: float) -> int | None:
        """``leg`` failed: the status of the whole forked call once it has failed, None
        while another fork may still answer. A 6xx decides for every fork at once and
        CANCELs the rest (RFC 3261 §16.7 step 5); otherwise a 6xx, then 486, then the first
        failure wins (step 6). Forks sipdial itself cancelled do not count."""
        if (leg.final_status or 0) >= 600:
            for other in self.legs:
                if other is not leg:
                    other.cancel(now)
            return leg.final_status
        if any(not f.state.over for f in self.legs):
            return None
        statuses = [f.final_status or 500 for f in self.legs if not f.cancelled]
        if not statuses:
            return None
        return next((s for s in statuses if s >= 600), None) \
            or next((s for s in statuses if s == 486), None) or statuses[0]


# ---------------------------------------------------------------------------- relay


def no_dialog_status(method: str) -> int:
    """What to answer a request the other side cannot take now: a re-INVITE 491 (an offer
    is pending or the other side is not up yet: retry, RFC 3261 §14.2), anything else 481."""
    return 491 if method == "INVITE" else 481


class Relay:
    """Relays in-dialog requests (re-INVITE, UPDATE, INFO …) from one leg to the other and
    their final responses back: what keeps a B2BUA transparent after the call is up."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self._pending: dict[ClientTransaction, tuple[ServerTransaction, UacLeg | UasLeg]] = {}
        # leg whose ACK carries the SDP answer -> the leg waiting for it (offerless re-INVITE)
        self._answers: dict[UacLeg | UasLeg, UacLeg | UasLeg] = {}

    def forward(self, event: PeerRequest, to: UacLeg | UasLeg, now: float) -> None:
        request, came_on = event.request, event.leg
        out = to.request(request.method, now, body=request.body,
                         content_type=request.headers.get("Content-Type"))
        if out is None:  # the other side has no dialog (yet, or any more)
            self.ua.endpoint.reply(event.txn, no_dialog_status(request.method), now)
            return
        self._pending[out] = (event.txn, came_on)
        if request.method == "INVITE" and not request.body:
            self._answers[came_on] = to

    def response(self, event: PeerResponse, now: float) -> None:
        """Relay a final response back (responses to requests we did not relay: ignored)."""
        message, txn = event.response, event.txn
        if txn not in self._pending or message.status < 200:
            return
        server_txn, came_on = self._pending.pop(txn)
        if message.status >= 300:
            self._answers.pop(came_on, None)
        if server_txn.answered:
            return
        response = make_response(server_txn.request, message.status, message.reason)
        if message.body:
            response.headers.add("Content-Type",
                                 message.headers.get("Content-Type") or "application/sdp")
            response.body = message.body
        if server_txn.method == "INVITE" and message.status < 300:
            response.headers.add("Contact", came_on.contact)
        self.ua.endpoint.respond(server_txn, response, now)

    def expect_answer(self, acked_on: UacLeg | UasLeg, waiting: UacLeg | UasLeg) -> None:
        """The ACK of ``acked_on``'s 2xx will carry the SDP answer ``waiting`` owes its peer
        (an INVITE without offer, relayed: the 2xx carried the offer)."""
        self._answers[acked_on] = waiting

    def ack(self, event: Acked) -> None:
        """The ACK of a 2xx we relayed: for an offerless re-INVITE it carries the SDP answer,
        which the other side's deferred ACK must carry (RFC 3264 §4, RFC 3261 §13.2.2.4)."""
        waiting = self._answers.pop(event.leg, None)
        if waiting is not None:
            waiting.ack_offer(event.ack.body, event.ack.headers.get("Content-Type"))


# ---------------------------------------------------------------------------- the tables' words


class BridgeState(Symbol):
    CALLING = "calling"  # the destination's INVITE(s) are out, nobody answered
    RINGBACK = "ringback"  # 3PCC: ... and the phone hears sipdial's ringback tone
    EARLY_MEDIA = "early media"  # 3PCC: ... and the phone hears the destination's early media
    CONNECTING = "connecting"  # 3PCC: the destination answered; the phone's re-INVITE is out
    CONNECTED = "connected"  # both sides up, media flows phone <-> destination
    ENDING = "ending"  # 3PCC: the phone hears a busy/failure tone before its BYE
    ENDED = "ended"


class BridgeInput(Symbol):
    START = "start"
    TARGET_PROGRESS = "1xx from the destination"
    TARGET_EARLY_MEDIA = "1xx with SDP from the destination"
    TARGET_ANSWERED = "2xx from a destination fork"
    TARGET_LEG_FAILED = "one destination fork failed"
    TARGET_FAILED = "every destination fork failed"
    NO_ANSWER = "no answer within calls.target_answer_timeout"
    TARGET_HUNG_UP = "the destination ended the call"
    CALLER_CANCELLED = "the caller CANCELled (relay)"
    CALLER_HUNG_UP = "the caller / phone ended the call"
    CALLER_REQUEST = "in-dialog request from the caller / phone"
    CALLER_LOCAL_REQUEST = "3PCC: a request from the phone that is never relayed"
    TARGET_REQUEST = "in-dialog request from the destination"
    STRAY_REQUEST = "in-dialog request from a fork that lost"
    RESPONSE = "response to a request we relayed or sent"
    ACK = "ACK of a relayed 2xx"
    PHONE_TOOK_MEDIA = "3PCC: 2xx to the phone's re-INVITE"
    PHONE_REFUSED_MEDIA = "3PCC: the phone refused the re-INVITE"
    PHONE_GLARE = "3PCC: the phone answered the re-INVITE 491 (its own was under way)"
    REINVITE_DUE = "3PCC: time to send the re-INVITE again (RFC 3261 §14.1)"
    RELEASE = "end both sides now"
    RELEASE_WITH_TONE = "3PCC: end both sides, the phone after a tone"
    TONE_DONE = "3PCC: the tone has played"


class BridgeAction(Symbol):
    START_FORKS = "INVITE the destination (every fork)"
    START_TIMER = "start the no-answer timer"
    STOP_TIMER = "stop the no-answer timer"
    REPORT = "tell the click-to-dial call (see _REPORTED)"
    PASS_PROGRESS = "relay: send the caller the destination's 1xx"
    PLAY_RINGBACK = "3PCC: play a ringback tone to the phone"
    STOP_TONE = "3PCC: stop playing to the phone"
    TAKE_TARGET = "keep the fork that answered, CANCEL the others"
    HANG_UP_LATE_TARGET = "BYE a fork that answered too late"
    ANSWER_CALLER = "relay: answer the caller with the destination's SDP"
    REINVITE_PHONE = "3PCC: re-INVITE the phone with the destination's SDP"
    REINVITE_LATER = "3PCC: after a 491, re-INVITE again in 2.1-4 s (we own the Call-ID)"
    CLOSE_MEDIA = "3PCC: release sipdial's RTP (media flows directly now)"
    CHECK_FORKS = "once every fork failed, fire TARGET_FAILED with the chosen status"
    CANCEL_FORKS = "CANCEL every fork"
    REJECT_CALLER = "relay: answer the caller with the destination's failure"
    REJECT_CALLER_480 = "relay: answer the caller 480 No Answer"
    RELEASE_CALLER = "end the caller's / phone's side (487 or BYE)"
    RELEASE_FORKS = "CANCEL or BYE every fork"
    PLAY_TONE = "3PCC: play the busy/failure tone, then fire TONE_DONE"
    REFUSE_REQUEST = "answer an in-dialog request that has nowhere to go"
    ANSWER_LOCAL_REQUEST = "3PCC: answer the phone's request here (DTMF INFO 200, 491, 501)"
    RELAY_TO_TARGET = "relay the request to the destination"
    RELAY_TO_CALLER = "relay the request to the caller / phone"
    RELAY_RESPONSE = "relay a final response back"
    RELAY_ACK = "pass an ACK's SDP answer on"


BridgeRow: TypeAlias = tuple[BridgeState, tuple[BridgeAction, ...]]
BridgeTable: TypeAlias = dict[tuple[BridgeState, BridgeInput], BridgeRow]

#: what the call following a bridge hears, per bridge input (REPORT)
_REPORTED: dict[BridgeInput, tuple[Input, str | None]] = {
    BridgeInput.START: (Input.TARGET_CALLING, None),
    BridgeInput.TARGET_PROGRESS: (Input.TARGET_RINGING, None),
    BridgeInput.TARGET_EARLY_MEDIA: (Input.TARGET_RINGING, None),
    BridgeInput.TARGET_ANSWERED: (Input.TARGET_ANSWERED, None),
    BridgeInput.NO_ANSWER: (Input.TARGET_NO_ANSWER, "no answer from the target"),
    BridgeInput.TARGET_HUNG_UP: (Input.TARGET_HUNG_UP, "target hung up"),
    BridgeInput.CALLER_CANCELLED: (Input.PHONE_HUNG_UP, "caller cancelled"),
    BridgeInput.CALLER_HUNG_UP: (Input.PHONE_HUNG_UP, "caller hung up"),
    BridgeInput.PHONE_REFUSED_MEDIA: (Input.FAILED,
                                      "phone refused the re-INVITE to the destination"),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decided input's SIP status and text (the forks' failure, a timeout, a tone)."""

    code: int | None = None
    detail: str | None = None
    tone: Tone | None = None


P = TypeVar("P")
#: runs the actions that need an input's payload; False: not one of those
Executor = Callable[[BridgeAction, BridgeInput, P, float], bool]


# ---------------------------------------------------------------------------- the runner


class Bridge:
    """Forks to the destination, a relay, a no-answer timer and the table runner.

    Each input comes with its payload (the leg event or :class:`Outcome` behind it) and the
    executor for that payload's type; the table says which actions run, the executor runs
    those that need the payload, :meth:`_plain` the others. Subclasses add their own
    actions to the executors they override.
    """

    table: ClassVar[BridgeTable]

    @property
    def listener(self) -> TargetListener | None:
        """The call this bridge reports to (held weakly), None for a call of its own."""
        return self._listener()

    def __init__(self, ua: UserAgent, timers: TimerHeap, *, targets: list[Target],
                 caller: NameAddr, callee: NameAddr, offer: bytes, content_type: str | None,
                 extra: list[tuple[str, str]] | None, answer_timeout: float,
                 listener: TargetListener | None, label: str, resolver: Resolver) -> None:
        self.ua = ua
        self.timers = timers
        self._listener = weak_listener(listener)
        self.label = label
        self.answer_timeout = answer_timeout
        self.forks = Forks([
            UacLeg(ua, self, uri=t.uri, peer=t.peer, from_party=caller, to_party=callee,
                   body=offer, content_type=content_type if offer else None, extra=extra,
                   label=t.label, credentials=t.credentials, resolver=resolver,
                   route=t.route)
            for t in targets
        ])
        self.b: UacLeg | None = None  # the fork that answered (data; the state says if any)
        self.relay = Relay(ua)
        self.state = BridgeState.CALLING
        self.started_at = 0.0
        self._timer: TimerHandle | None = None
        self._queue: deque[Callable[[], None]] = deque()
        self._firing = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} {self.state.name}>"

    @property
    def caller_leg(self) -> UacLeg | UasLeg:
        raise NotImplementedError

    # ------------------------------------------------------------ commands

    def start(self, now: float) -> None:
        self.started_at = now
        self.fire(BridgeInput.START, now, None, no_payload)

    def release(self, now: float, tone: Tone | None = None) -> None:
        """End both sides; with ``tone`` (3PCC) the phone hears it before the BYE."""
        if tone is None:
            self.fire(BridgeInput.RELEASE, now, None, no_payload)
        else:
            self.fire(BridgeInput.RELEASE_WITH_TONE, now, Outcome(tone=tone),
                      self._with_outcome)

    @property
    def ended(self) -> bool:
        return self.state is BridgeState.ENDED

    # ------------------------------------------------------------ the table runner

    def fire(self, inp: BridgeInput, now: float, payload: P, execute: Executor[P]) -> None:
        """Run ``inp`` through the table; inputs fired while a row runs wait their turn."""
        if self._firing:
            self._queue.append(lambda: self._step(inp, now, payload, execute))
            return
        self._firing = True
        try:
            self._step(inp, now, payload, execute)
            while self._queue:
                self._queue.popleft()()
        finally:
            self._firing = False

    def _step(self, inp: BridgeInput, now: float, payload: P, execute: Executor[P]) -> None:
        row = self.table.get((self.state, inp))
        if row is None:
            if self.state is BridgeState.ENDED:
                return  # late input: the legs are released
            self._illegal(f"{inp.name} in {self.state.name}", now)
            return
        self.state, actions = row
        try:
            for action in actions:
                if not execute(action, inp, payload, now) \
                        and not self._plain(action, inp, now):
                    self._illegal(f"{action.name} for {inp.name}", now)
                    return
        except Exception:
            log.exception("%r: %s failed", self, inp.name)
            self._illegal(f"{inp.name} (an action raised)", now)
            return
        if self.state is BridgeState.ENDED:
            self._stop_timer()
            if self.listener is None:  # a call of its own (dialled by hand): say how it ended
                log.info("relayed call %s ended: %s", self.label, inp.value)
            self._ended(now)

    def _illegal(self, what: str, now: float) -> None:
        """A bug: one log line, both sides released, the call told it failed."""
        log.error("%r cannot take %s: ending it", self, what)
        self.state = BridgeState.ENDED
        self._stop_timer()
        for release in (self.forks.release, self._release_caller):
            try:
                release(now)
            except Exception:
                log.exception("%r: releasing failed", self)
        self._report(Input.FAILED, now, None, f"internal error ({what})")
        self._ended(now)

    def _ended(self, now: float) -> None:
        """The bridge is over (the owner forgets it)."""

    def _release_caller(self, now: float) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ actions

    def _plain(self, action: BridgeAction, inp: BridgeInput, now: float) -> bool:
        """The actions that need no payload."""
        match action:
            case BridgeAction.START_FORKS:
                self.forks.start(now)
            case BridgeAction.START_TIMER:
                self._timer = self.timers.schedule(now + self.answer_timeout, self._no_answer)
            case BridgeAction.STOP_TIMER:
                self._stop_timer()
            case BridgeAction.CANCEL_FORKS:
                self.forks.cancel(now)
            case BridgeAction.RELEASE_FORKS:
                self.forks.release(now)
            case BridgeAction.RELEASE_CALLER:
                self._release_caller(now)
            case BridgeAction.REPORT:
                reported, detail = _REPORTED[inp]
                self._report(reported, now, None, detail)
            case _:
                return False
        return True

    def _with_progress(self, action: BridgeAction, inp: BridgeInput, event: Progress,
                       now: float) -> bool:
        if action is not BridgeAction.REPORT:
            return False
        code = event.response.status
        if code in (180, 183):  # other provisionals (181, 182 ...) do not mean ringing
            self._report(_REPORTED[inp][0], now, code, None)
        return True

    def _with_answer(self, action: BridgeAction, inp: BridgeInput, event: Answered,
                     now: float) -> bool:
        match action:
            case BridgeAction.REPORT:
                self._report(_REPORTED[inp][0], now, event.response.status, None)
            case BridgeAction.TAKE_TARGET:
                self.b = event.leg
                self.forks.cancel_others(event.leg, now)
            case BridgeAction.HANG_UP_LATE_TARGET:
                event.leg.hang_up(now)
            case _:
                return False
        return True

    def _with_failed(self, action: BridgeAction, inp: BridgeInput, event: Failed,
                     now: float) -> bool:
        if action is not BridgeAction.CHECK_FORKS:
            return False
        status = self.forks.failure(event.leg, now)
        if status is not None:
            self.fire(BridgeInput.TARGET_FAILED, now, Outcome(status, event.reason),
                      self._with_outcome)
        return True

    def _with_outcome(self, action: BridgeAction, inp: BridgeInput, outcome: Outcome,
                      now: float) -> bool:
        if action is not BridgeAction.REPORT:
            return False
        if inp is BridgeInput.TARGET_FAILED and outcome.code is not None:
            self._report(target_failure_input(outcome.code), now, outcome.code, outcome.detail)
        else:
            reported, detail = _REPORTED[inp]
            self._report(reported, now, outcome.code, outcome.detail or detail)
        return True

    def _with_request(self, action: BridgeAction, inp: BridgeInput, event: PeerRequest,
                      now: float) -> bool:
        match action:
            case BridgeAction.RELAY_TO_TARGET if self.b is not None:
                self.relay.forward(event, self.b, now)
            case BridgeAction.RELAY_TO_CALLER:
                self.relay.forward(event, self.caller_leg, now)
            case BridgeAction.REFUSE_REQUEST:
                self.ua.endpoint.reply(event.txn, no_dialog_status(event.request.method), now)
            case _:
                return False
        return True

    def _with_response(self, action: BridgeAction, inp: BridgeInput, event: PeerResponse,
                       now: float) -> bool:
        if action is not BridgeAction.RELAY_RESPONSE:
            return False
        self.relay.response(event, now)
        return True

    def _with_ack(self, action: BridgeAction, inp: BridgeInput, event: Acked,
                  now: float) -> bool:
        if action is not BridgeAction.RELAY_ACK:
            return False
        self.relay.ack(event)
        return True

    def _report(self, inp: Input, now: float, code: int | None, detail: str | None) -> None:
        if self.listener is not None:
            self.listener.target_event(inp, now, code, detail)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _no_answer(self, now: float) -> None:
        self._timer = None
        self.fire(BridgeInput.NO_ANSWER, now, Outcome(408, "no answer from the target"),
                  self._with_outcome)

    # ------------------------------------------------------------ leg events -> inputs

    def leg_event(self, event: LegEvent, now: float) -> None:
        if isinstance(event, Broken):
            self._illegal(f"{event.leg!r}: {event.detail}", now)
            return
        if event.leg is self.caller_leg:
            self._caller_event(event, now)
            return
        match event:
            case Progress(response=response):
                self.fire(BridgeInput.TARGET_EARLY_MEDIA if response.body
                          else BridgeInput.TARGET_PROGRESS, now, event, self._with_progress)
            case Answered():
                self.fire(BridgeInput.TARGET_ANSWERED, now, event, self._with_answer)
            case Failed():
                self.fire(BridgeInput.TARGET_LEG_FAILED, now, event, self._with_failed)
            case HungUp(leg=leg) if leg is self.b:
                self.fire(BridgeInput.TARGET_HUNG_UP, now, None, no_payload)
            case PeerRequest(leg=leg):
                self.fire(BridgeInput.TARGET_REQUEST if leg is self.b
                          else BridgeInput.STRAY_REQUEST, now, event, self._with_request)
            case PeerResponse():
                self.fire(BridgeInput.RESPONSE, now, event, self._with_response)
            case Acked():
                self.fire(BridgeInput.ACK, now, event, self._with_ack)

    def _caller_event(self, event: LegEvent, now: float) -> None:
        raise NotImplementedError


def no_payload(action: BridgeAction, inp: BridgeInput, payload: None, now: float) -> bool:
    return False
