"""A call a registered user places through sipdial, relayed to its destination (B2BUA).

The caller leg is the phone's INVITE to sipdial (after a REFER, or dialled by hand); the
destination legs are sipdial's INVITEs to a local user's devices (forked) or a ``[[routes]]``
URI. SDP passes through untouched, so media flows phone ↔ destination directly. Provisional
and final responses are relayed destination → caller, BYE and CANCEL are propagated, and other
in-dialog requests (re-INVITE, UPDATE, INFO) are relayed to the other leg with their
responses relayed back.

When the call is the referred call of a click-to-dial REFER, that call follows it
(:class:`~sipdial.calls.bridging.TargetListener`): calling, ringing, answered, failed, hung up.

The whole behaviour is :data:`RELAY_TABLE`.
"""

from __future__ import annotations

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
    Cancelled,
    HungUp,
    LegEvent,
    PeerRequest,
    PeerResponse,
    Progress,
    UasLeg,
)
from sipdial.calls.routing import Resolver, Target
from sipdial.sip import NameAddr, Peer, ServerTransaction, TimerHeap
from sipdial.ua import UserAgent

__all__ = ["RELAY_TABLE", "RelayedCall"]

# Final responses relayed to the caller as they are; anything else becomes 480/502.
_RELAYED = frozenset({404, 408, 480, 484, 486, 487, 488, 600, 603, 604, 606})

S, In, A = BridgeState, BridgeInput, BridgeAction
_ = ()

RELAY_TABLE: BridgeTable = {
    (S.CALLING, In.START): (S.CALLING, (A.START_FORKS, A.START_TIMER, A.REPORT)),
    (S.CALLING, In.TARGET_PROGRESS): (S.CALLING, (A.PASS_PROGRESS, A.REPORT)),
    (S.CALLING, In.TARGET_EARLY_MEDIA): (S.CALLING, (A.PASS_PROGRESS, A.REPORT)),
    (S.CALLING, In.TARGET_ANSWERED): (S.CONNECTED, (A.STOP_TIMER, A.TAKE_TARGET,
                                                   A.ANSWER_CALLER, A.REPORT)),
    (S.CALLING, In.TARGET_LEG_FAILED): (S.CALLING, (A.CHECK_FORKS,)),
    (S.CALLING, In.TARGET_FAILED): (S.ENDED, (A.REJECT_CALLER, A.REPORT)),
    (S.CALLING, In.NO_ANSWER): (S.ENDED, (A.CANCEL_FORKS, A.REJECT_CALLER_480, A.REPORT)),
    (S.CALLING, In.CALLER_CANCELLED): (S.ENDED, (A.CANCEL_FORKS, A.REPORT)),
    (S.CALLING, In.CALLER_REQUEST): (S.CALLING, (A.REFUSE_REQUEST,)),
    (S.CONNECTED, In.CALLER_HUNG_UP): (S.ENDED, (A.RELEASE_FORKS, A.REPORT)),
    (S.CONNECTED, In.TARGET_HUNG_UP): (S.ENDED, (A.RELEASE_CALLER, A.REPORT)),
    (S.CONNECTED, In.CALLER_REQUEST): (S.CONNECTED, (A.RELAY_TO_TARGET,)),
    (S.CONNECTED, In.TARGET_REQUEST): (S.CONNECTED, (A.RELAY_TO_CALLER,)),
    **{(s, In.RELEASE): (S.ENDED, (A.RELEASE_CALLER, A.RELEASE_FORKS))
       for s in (S.CALLING, S.CONNECTED)},
    # in any state
    **{(s, In.RESPONSE): (s, (A.RELAY_RESPONSE,)) for s in (S.CALLING, S.CONNECTED, S.ENDED)},
    **{(s, In.ACK): (s, (A.RELAY_ACK,)) for s in (S.CALLING, S.CONNECTED, S.ENDED)},
    **{(s, In.STRAY_REQUEST): (s, (A.REFUSE_REQUEST,)) for s in (S.CALLING, S.CONNECTED)},
    # a fork answering after another one (or after the end): hang it up
    **{(s, In.TARGET_ANSWERED): (s, (A.HANG_UP_LATE_TARGET,)) for s in (S.CONNECTED, S.ENDED)},
    # the losing forks' 487s, a 1xx crossing the 2xx: nothing to do
    **{(S.CONNECTED, i): (S.CONNECTED, _) for i in (In.TARGET_PROGRESS, In.TARGET_EARLY_MEDIA,
                                                    In.TARGET_LEG_FAILED)},
}


class RelayedCall(Bridge):
    table = RELAY_TABLE

    def __init__(self, ua: UserAgent, timers: TimerHeap, txn: ServerTransaction, source: Peer,
                 *, targets: list[Target], caller: NameAddr, callee: NameAddr,
                 answer_timeout: float, listener: TargetListener | None, label: str,
                 resolver: Resolver, on_end: Callable[[RelayedCall], None]) -> None:
        invite = txn.request
        super().__init__(ua, timers, targets=targets, caller=caller, callee=callee,
                         offer=invite.body, content_type=invite.headers.get("Content-Type"),
                         extra=None, answer_timeout=answer_timeout, listener=listener,
                         label=label, resolver=resolver)
        self.a = UasLeg(ua, self, txn, source, label=label)
        self._on_end = on_end

    @property
    def caller_leg(self) -> UasLeg:
        return self.a

    def _ended(self, now: float) -> None:
        self._on_end(self)

    def _caller_event(self, event: LegEvent, now: float) -> None:
        match event:
            case Cancelled():
                self.fire(BridgeInput.CALLER_CANCELLED, now, None, no_payload)
            case HungUp():
                self.fire(BridgeInput.CALLER_HUNG_UP, now, None, no_payload)
            case PeerRequest():
                self.fire(BridgeInput.CALLER_REQUEST, now, event, self._with_request)
            case PeerResponse():
                self.fire(BridgeInput.RESPONSE, now, event, self._with_response)
            case Acked():
                self.fire(BridgeInput.ACK, now, event, self._with_ack)

    def _release_caller(self, now: float) -> None:
        self.a.release(now, 487)

    def _plain(self, action: BridgeAction, inp: BridgeInput, now: float) -> bool:
        if action is BridgeAction.REJECT_CALLER_480:
            self.a.reject(480, now, "No Answer")
            return True
        return super()._plain(action, inp, now)

    def _with_progress(self, action: BridgeAction, inp: BridgeInput, event: Progress,
                       now: float) -> bool:
        if action is BridgeAction.PASS_PROGRESS:
            response = event.response
            self.a.progress(response.status, now, body=response.body,
                            content_type=response.headers.get("Content-Type"))
            return True
        return super()._with_progress(action, inp, event, now)

    def _with_answer(self, action: BridgeAction, inp: BridgeInput, event: Answered,
                     now: float) -> bool:
        if action is BridgeAction.ANSWER_CALLER:
            response = event.response
            self.a.answer(now, body=response.body,
                          content_type=response.headers.get("Content-Type"))
            if not self.a.invite.body:  # the caller's ACK brings the answer to the target
                self.relay.expect_answer(self.a, event.leg)
            return True
        return super()._with_answer(action, inp, event, now)

    def _with_outcome(self, action: BridgeAction, inp: BridgeInput, outcome: Outcome,
                      now: float) -> bool:
        if action is BridgeAction.REJECT_CALLER and outcome.code is not None:
            status = outcome.code
            self.a.reject(status if status in _RELAYED else (480 if status < 500 else 502),
                          now)
            return True
        return super()._with_outcome(action, inp, outcome, now)
