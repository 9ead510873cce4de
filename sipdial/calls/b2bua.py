"""A call a registered user places through sipdial, bridged to its destination (B2BUA).

The A leg is the phone's INVITE to sipdial (after a REFER, or dialled by hand); the B leg is
sipdial's INVITE to the destination (a local user's device or a ``[[routes]]`` URI). SDP passes
through untouched, so media flows phone ↔ destination directly. Provisional and final
responses are relayed B → A, BYE and CANCEL are propagated, and other in-dialog requests
(re-INVITE, UPDATE, INFO) are relayed to the other leg with their responses relayed back.

When the call was started by a click-to-dial REFER, the linked :class:`ClickToDial` is told
about the target's progress (calling, ringing, answered, failed, hung up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipdial.calls.legs import (
    LegEvent,
    Relay,
    UacLeg,
    UasLeg,
    fork_failure,
    take_answer,
)
from sipdial.calls.states import Input, target_failure_input
from sipdial.sip.message import Request, Response
from sipdial.sip.peer import Peer
from sipdial.sip.timers import TimerHandle
from sipdial.sip.transaction import ClientTransaction, ServerTransaction
from sipdial.sip.uri import URI, NameAddr

if TYPE_CHECKING:
    from sipdial.calls.clicktodial import ClickToDial
    from sipdial.calls.engine import CallEngine

# Final responses relayed to the caller as they are; anything else becomes 480/500 class.
_RELAYED = frozenset({404, 408, 480, 484, 486, 487, 488, 600, 603, 604, 606})


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send the B leg: a device of a local user, or a route's URI."""

    uri: URI
    peer: Peer
    credentials: tuple[str, str] | None = None  # for the route's 401/407
    label: str = "target"


class BridgedCall:
    def __init__(self, engine: CallEngine, a: UasLeg, *, targets: list[Target],
                 caller: NameAddr, callee: NameAddr, c2d: ClickToDial | None) -> None:
        self.engine = engine
        self.a = a
        a.owner = self
        self.c2d = c2d
        body = a.invite.body
        ctype = a.invite.headers.get("Content-Type") if body else None
        # A local user with several devices is forked: first answer wins (like the user leg).
        self.forks = [
            UacLeg(engine.ua, self, uri=t.uri, peer=t.peer, from_party=caller,
                   to_party=callee, body=body, content_type=ctype, label=t.label,
                   credentials=t.credentials)
            for t in targets
        ]
        self.b: UacLeg | None = None  # the fork that answered
        self._relay = Relay(engine.ua)
        self._timer: TimerHandle | None = None
        self.started_at = 0.0
        self.done = False

    def start(self, now: float) -> None:
        self.started_at = now
        for leg in self.forks:
            leg.start(now)
        self._notify(Input.TARGET_CALLING, now)
        timeout = self.engine.config.calls.target_answer_timeout
        self._timer = self.engine.timers.schedule(now + timeout, self._no_answer)

    def release(self, now: float) -> None:
        """Tear down both sides (API cancel, or the click-to-dial call ended)."""
        self._finish()
        self.a.release(now, 487)
        for leg in self.forks:
            leg.release(now)

    def _finish(self) -> None:
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.engine.bridge_ended(self)

    def _notify(self, inp: Input, now: float, code: int | None = None,
                detail: str | None = None) -> None:
        if self.c2d is not None:
            self.c2d.target_event(inp, now, code, detail)

    def _no_answer(self, now: float) -> None:
        self._timer = None
        if self.b is None and not self.done:
            for leg in self.forks:
                leg.cancel(now)
            self.a.reject(480, now, "No Answer")
            self._finish()
            self._notify(Input.TARGET_NO_ANSWER, now, 408, "no answer from the target")

    # ------------------------------------------------------------ leg events

    def leg_event(self, leg: UacLeg | UasLeg, event: LegEvent,
                  message: Request | Response | None, now: float,
                  txn: ClientTransaction | ServerTransaction | None = None) -> None:
        if isinstance(leg, UacLeg):
            self._b_event(leg, event, message, now, txn)
        else:
            self._a_event(event, message, now, txn)

    def _b_event(self, leg: UacLeg, event: LegEvent, message: Request | Response | None,
                 now: float, txn: ClientTransaction | ServerTransaction | None) -> None:
        match event:
            case LegEvent.PROGRESS:
                assert isinstance(message, Response)
                if self.b is not None or self.done:
                    return
                self.a.progress(message.status, now, body=message.body,
                                content_type=message.headers.get("Content-Type"))
                if message.status in (180, 183):
                    self._notify(Input.TARGET_RINGING, now, message.status)
            case LegEvent.ANSWERED:
                assert isinstance(message, Response)
                if self.done:
                    leg.bye(now)  # the caller gave up meanwhile
                    return
                if not take_answer(self.forks, leg, self.b, now):
                    return
                self.b = leg
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self.a.answer(now, body=message.body,
                              content_type=message.headers.get("Content-Type"))
                self._notify(Input.TARGET_ANSWERED, now, message.status)
            case LegEvent.FAILED:
                if self.done or self.b is not None:
                    return
                status = fork_failure(self.forks, leg, now)
                if status is None:
                    return  # other devices still ringing
                relay = status if status in _RELAYED else (480 if status < 500 else 502)
                self.a.reject(relay, now)
                self._finish()
                self._notify(target_failure_input(status), now, status,
                             message.reason if isinstance(message, Response) else "timeout")
            case LegEvent.ENDED:
                if leg is not self.b:
                    return
                self.a.release(now)
                self._finish()
                self._notify(Input.HANGUP, now, detail="target hung up")
            case LegEvent.ACKED:
                assert isinstance(message, Request)
                self._relay.ack(leg, message)
            case LegEvent.REQUEST:
                assert isinstance(message, Request) and isinstance(txn, ServerTransaction)
                self._relay.forward(message, txn, leg, self.a, now)
            case LegEvent.RESPONSE:
                self._relay.response(txn, message, now)

    def _a_event(self, event: LegEvent, message: Request | Response | None, now: float,
                 txn: ClientTransaction | ServerTransaction | None) -> None:
        match event:
            case LegEvent.CANCELLED:
                for leg in self.forks:
                    leg.cancel(now)
                self._finish()
                self._notify(Input.USER_HUNG_UP, now, detail="caller cancelled")
            case LegEvent.ENDED:
                for leg in self.forks:
                    leg.release(now)
                self._finish()
                self._notify(Input.HANGUP, now, detail="caller hung up")
            case LegEvent.REQUEST:
                assert isinstance(message, Request) and isinstance(txn, ServerTransaction)
                if self.b is None:
                    self.engine.ua.endpoint.reply(txn, 491 if message.method == "INVITE"
                                                  else 481, now)
                    return
                self._relay.forward(message, txn, self.a, self.b, now)
            case LegEvent.RESPONSE:
                self._relay.response(txn, message, now)
            case LegEvent.ACKED:
                assert isinstance(message, Request)
                self._relay.ack(self.a, message)
