"""REFER mode: sipdial's first dialog with the user's phone once the REFER is out.

The REFER's Refer-To points back at sipdial, so the phone's INVITE to the target normally
arrives here and is relayed (:mod:`sipdial.calls.b2bua`): the target's progress is then seen
first-hand. The REFER's implicit subscription (RFC 3515) is the fallback when the phone sends
its INVITE elsewhere, and it says when sipdial's own dialog with the phone is no longer needed.
This object owns that dialog from the REFER on; its whole behaviour is :data:`TRANSFER_TABLE`:

* the REFER answered 2xx, or a first NOTIFY: the phone accepted the transfer;
* the referred INVITE reached sipdial (``RELAYED*``): NOTIFY progress is no news any more;
* the final NOTIFY: the transfer's outcome is known, sipdial BYEs its dialog with the phone;
* the call connected: the REFER subscription shares the dialog (RFC 5057), so the phone may
  still send its final NOTIFY — sipdial waits ``NOTIFY_GRACE`` seconds for it, then BYEs.
"""

from __future__ import annotations

import logging
import re
from typing import TypeAlias

from sipdial.calls.bridging import TargetListener, weak_listener
from sipdial.calls.legs import (
    Acked,
    Broken,
    HungUp,
    LegEvent,
    PeerRequest,
    PeerResponse,
    UacLeg,
)
from sipdial.calls.phone import PhoneSession
from sipdial.calls.states import Input, target_failure_input
from sipdial.sip import ClientTransaction, Symbol, TimerHandle, TimerHeap

__all__ = ["NOTIFY_GRACE", "TRANSFER_TABLE", "Transfer", "TransferState"]

log = logging.getLogger("sipdial.calls")

_SIPFRAG = re.compile(rb"^SIP/2\.0\s+(\d{3})")
NOTIFY_GRACE = 4.0  # seconds to wait for the final NOTIFY once the target answered


class TransferState(Symbol):
    REFERRING = "REFER sent, not accepted yet"
    ACCEPTED = "the phone accepted (2xx to REFER, or a NOTIFY)"
    RELAYED = "the referred INVITE reached sipdial, the REFER not accepted yet"
    RELAYED_ACCEPTED = "the referred INVITE reached sipdial, the REFER accepted"
    PHONE_LEFT = "the phone left its first dialog after accepting; its INVITE is awaited"
    LINGERING = "connected: waiting for the final NOTIFY before the BYE"
    SUCCESS_REPORTED = ("a 2xx NOTIFY came before the referred INVITE that must pass through "
                        "sipdial: wait NOTIFY_GRACE for it")
    DONE = "the phone's first dialog is released (or the phone left it)"
    FAILED = "the REFER failed; the call ends"


class TransferInput(Symbol):
    REFER_ACCEPTED = "2xx to the REFER"
    REFER_REFUSED = "3xx-6xx to the REFER"
    REFER_TIMEOUT = "no outcome within calls.refer_timeout"
    NOTIFY_PROGRESS = "NOTIFY with a 1xx sipfrag"
    NOTIFY_FINAL = "NOTIFY with a final sipfrag"
    NOTIFY_SUCCESS_FIRST = ("NOTIFY with a 2xx sipfrag while the referred INVITE, sent to "
                            "sipdial, has not arrived (some phones report success early)")
    NOTIFY_ENDED = "NOTIFY ending the subscription early (1xx, terminated)"
    REFERRED_CALL = "the phone's INVITE to the target reached sipdial"
    PHONE_HUNG_UP = "the phone ended its first dialog"
    CALL_CONNECTED = "the call reached the target"
    GRACE_OVER = "NOTIFY_GRACE passed"
    RELEASE = "the call is over"


class TransferAction(Symbol):
    STOP_TIMER = "stop the REFER / grace timer"
    START_GRACE = "wait NOTIFY_GRACE for the final NOTIFY"
    HOLD_DIALOG = "the REFER subscription lives: keep the dialog for NOTIFYs after a BYE"
    RELEASE_PHONE = "BYE sipdial's dialog with the phone (and forget it: RFC 5057 usages)"
    REPORT_REFER_FAILED = "the call ends as refer_failed"
    REPORT_HUNG_UP = "the call ends as user_hung_up"
    REPORT_NOTIFY = "NOTIFY is the only news of the target: tell the call"
    REPORT_OUTSIDE = "the phone reached the target without sipdial: connected, then completed"


T, TI, TA = TransferState, TransferInput, TransferAction
TransferRow: TypeAlias = tuple[TransferState, tuple[TransferAction, ...]]
_ = ()
_WAITING = (T.REFERRING, T.ACCEPTED)
_RELAYED = (T.RELAYED, T.RELAYED_ACCEPTED)
_SETTLED = (T.LINGERING, T.DONE, T.FAILED)

TRANSFER_TABLE: dict[tuple[TransferState, TransferInput], TransferRow] = {
    **{(s, TI.REFER_ACCEPTED): (T.ACCEPTED, (TA.HOLD_DIALOG,)) for s in _WAITING},
    **{(s, TI.REFER_REFUSED): (T.FAILED, (TA.STOP_TIMER, TA.REPORT_REFER_FAILED))
       for s in _WAITING},
    (T.REFERRING, TI.PHONE_HUNG_UP): (T.DONE, (TA.STOP_TIMER, TA.REPORT_HUNG_UP)),
    **{(s, TI.REFER_TIMEOUT): (T.FAILED, (TA.REPORT_REFER_FAILED,)) for s in _WAITING},
    **{(s, TI.NOTIFY_PROGRESS): (T.ACCEPTED, (TA.HOLD_DIALOG, TA.REPORT_NOTIFY))
       for s in _WAITING},
    **{(s, TI.NOTIFY_FINAL): (T.DONE, (TA.STOP_TIMER, TA.RELEASE_PHONE, TA.REPORT_NOTIFY))
       for s in _WAITING},
    **{(s, TI.NOTIFY_ENDED): (T.ACCEPTED, (TA.REPORT_NOTIFY,)) for s in _WAITING},
    (T.REFERRING, TI.REFERRED_CALL): (T.RELAYED, (TA.STOP_TIMER,)),
    (T.ACCEPTED, TI.REFERRED_CALL): (T.RELAYED_ACCEPTED, (TA.STOP_TIMER,)),
    (T.ACCEPTED, TI.PHONE_HUNG_UP): (T.PHONE_LEFT, _),  # it may leave once it accepted
    # it hung up its first dialog; the subscription (and its NOTIFYs) may go on (RFC 5057)
    (T.PHONE_LEFT, TI.REFERRED_CALL): (T.DONE, (TA.STOP_TIMER,)),
    (T.PHONE_LEFT, TI.REFER_TIMEOUT): (T.FAILED, (TA.RELEASE_PHONE, TA.REPORT_REFER_FAILED)),
    (T.PHONE_LEFT, TI.REFER_REFUSED): (T.FAILED, (TA.STOP_TIMER, TA.RELEASE_PHONE,
                                                  TA.REPORT_REFER_FAILED)),
    (T.PHONE_LEFT, TI.NOTIFY_PROGRESS): (T.PHONE_LEFT, (TA.REPORT_NOTIFY,)),
    (T.PHONE_LEFT, TI.NOTIFY_ENDED): (T.PHONE_LEFT, (TA.RELEASE_PHONE, TA.REPORT_NOTIFY)),
    (T.PHONE_LEFT, TI.NOTIFY_FINAL): (T.DONE, (TA.STOP_TIMER, TA.RELEASE_PHONE,
                                               TA.REPORT_NOTIFY)),
    **{(T.PHONE_LEFT, i): (T.PHONE_LEFT, _) for i in (TI.REFER_ACCEPTED, TI.PHONE_HUNG_UP)},
    # the referred call goes through sipdial: NOTIFYs only tell when to let the phone go
    **{(s, i): (T.RELAYED_ACCEPTED, (TA.HOLD_DIALOG,)) for s in _RELAYED
       for i in (TI.REFER_ACCEPTED, TI.NOTIFY_PROGRESS)},
    **{(s, TI.NOTIFY_ENDED): (T.DONE, (TA.RELEASE_PHONE,)) for s in _RELAYED},
    **{(s, TI.NOTIFY_FINAL): (T.DONE, (TA.RELEASE_PHONE,)) for s in _RELAYED},
    **{(s, TI.PHONE_HUNG_UP): (T.DONE, _) for s in _RELAYED},
    (T.RELAYED, TI.CALL_CONNECTED): (T.DONE, (TA.RELEASE_PHONE,)),  # it never accepted
    (T.RELAYED_ACCEPTED, TI.CALL_CONNECTED): (T.LINGERING, (TA.START_GRACE,)),
    **{(s, TI.REFER_REFUSED): (T.DONE, (TA.RELEASE_PHONE,)) for s in _RELAYED},
    # a 2xx NOTIFY before the referred INVITE: wait for the INVITE a little (a phone may
    # report success before its call is up); none came: it called the target elsewhere
    **{(s, TI.NOTIFY_SUCCESS_FIRST): (T.SUCCESS_REPORTED, (TA.STOP_TIMER, TA.START_GRACE))
       for s in (*_WAITING, T.PHONE_LEFT)},
    (T.SUCCESS_REPORTED, TI.REFERRED_CALL): (T.RELAYED, (TA.STOP_TIMER,)),
    (T.SUCCESS_REPORTED, TI.GRACE_OVER): (T.DONE, (TA.RELEASE_PHONE, TA.REPORT_OUTSIDE)),
    **{(T.SUCCESS_REPORTED, i): (T.SUCCESS_REPORTED, _)
       for i in (TI.REFER_ACCEPTED, TI.REFER_REFUSED, TI.NOTIFY_PROGRESS, TI.NOTIFY_ENDED,
                 TI.NOTIFY_FINAL, TI.NOTIFY_SUCCESS_FIRST, TI.PHONE_HUNG_UP)},
    (T.LINGERING, TI.NOTIFY_FINAL): (T.DONE, (TA.STOP_TIMER, TA.RELEASE_PHONE)),
    (T.LINGERING, TI.GRACE_OVER): (T.DONE, (TA.RELEASE_PHONE,)),
    (T.LINGERING, TI.PHONE_HUNG_UP): (T.DONE, (TA.STOP_TIMER,)),
    **{(T.LINGERING, i): (T.LINGERING, _)
       for i in (TI.REFER_ACCEPTED, TI.NOTIFY_PROGRESS, TI.NOTIFY_ENDED)},
    # the call is over: let the phone go
    **{(s, TI.RELEASE): (T.DONE, (TA.STOP_TIMER, TA.RELEASE_PHONE))
       for s in (*_WAITING, *_RELAYED, T.PHONE_LEFT, T.LINGERING, T.SUCCESS_REPORTED,
                 T.FAILED)},
    # settled: news changes nothing
    **{(T.DONE, i): (T.DONE, _) for i in TransferInput},
    **{(T.FAILED, i): (T.FAILED, _) for i in TransferInput if i is not TI.RELEASE},
}


class Transfer:
    """The phone's first dialog in REFER mode, from the REFER on."""

    @property
    def listener(self) -> TargetListener:
        listener = self._listener()
        assert listener is not None  # a transfer always has its call
        return listener

    def __init__(self, phone: UacLeg, session: PhoneSession, timers: TimerHeap,
                 listener: TargetListener, *, refer_to: str, referred_by: str,
                 timeout: float, label: str, referred_here: bool = True) -> None:
        """``referred_here``: the Refer-To names sipdial (standalone), so the phone's INVITE
        to the target comes through sipdial; False in PBX mode (only NOTIFYs tell)."""
        self.phone = phone
        phone.hand_to(self)
        self.session = session
        self.timers = timers
        self._listener = weak_listener(listener)  # the call holds us: no cycle back
        self.refer_to = refer_to
        self.referred_by = referred_by
        self.timeout = timeout
        self.label = label
        self.referred_here = referred_here
        self.state = TransferState.REFERRING
        self.refer_txn: ClientTransaction | None = None
        self._timer: TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Transfer {self.label} {self.state.name}>"

    @property
    def awaiting_referred_call(self) -> bool:
        return self.state in (*_WAITING, TransferState.PHONE_LEFT,
                              TransferState.SUCCESS_REPORTED)

    # ------------------------------------------------------------ commands

    def start(self, now: float) -> None:
        self.refer_txn = self.phone.request("REFER", now, extra=[
            ("Refer-To", f"<{self.refer_to}>"), ("Referred-By", self.referred_by)])
        self._timer = self.timers.schedule(now + self.timeout, self._refer_timeout)

    def referred_call(self, now: float) -> None:
        self.fire(TransferInput.REFERRED_CALL, now)

    def call_connected(self, now: float) -> None:
        self.fire(TransferInput.CALL_CONNECTED, now)

    def release(self, now: float) -> None:
        self.fire(TransferInput.RELEASE, now)

    # ------------------------------------------------------------ the table

    def fire(self, inp: TransferInput, now: float, code: int | None = None,
             detail: str | None = None) -> None:
        row = TRANSFER_TABLE.get((self.state, inp))
        if row is None:
            self._broken(f"{inp.name} in {self.state.name}", now)
            return
        self.state, actions = row
        try:
            for action in actions:
                self._do(action, inp, now, code, detail)
        except Exception:
            log.exception("%r: %s failed", self, inp.name)
            self._broken(f"{inp.name} (an action raised)", now)

    def _broken(self, what: str, now: float) -> None:
        """A bug: one log line, the phone let go, the call told it failed."""
        log.error("%r cannot take %s: ending it", self, what)
        self.state = TransferState.FAILED
        self._stop_timer()
        try:
            self.phone.release(now)
        except Exception:
            log.exception("%r: could not release the phone", self)
        self.listener.target_event(Input.FAILED, now, None, f"internal error ({what})")

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _do(self, action: TransferAction, inp: TransferInput, now: float,
            code: int | None, detail: str | None) -> None:
        match action:
            case TransferAction.STOP_TIMER:
                self._stop_timer()
            case TransferAction.START_GRACE:
                self._timer = self.timers.schedule(
                    now + NOTIFY_GRACE, lambda t: self.fire(TransferInput.GRACE_OVER, t))
            case TransferAction.HOLD_DIALOG:
                self.phone.hold_dialog()
            case TransferAction.RELEASE_PHONE:
                self.phone.release(now)
                self.phone.forget_dialog()
            case TransferAction.REPORT_REFER_FAILED:
                if inp is TransferInput.REFER_TIMEOUT:
                    detail = "the transfer did not complete in time"
                self.listener.target_event(Input.REFER_FAILED, now, code, detail)
            case TransferAction.REPORT_HUNG_UP:
                self.listener.target_event(Input.PHONE_HUNG_UP, now, None,
                                           "phone hung up before the transfer")
            case TransferAction.REPORT_NOTIFY:
                assert code is not None
                self._report_notify(code, now)
            case TransferAction.REPORT_OUTSIDE:
                self._report_notify(200, now)

    def _report_notify(self, code: int, now: float) -> None:
        listener = self.listener
        if code < 180:
            listener.target_event(Input.TARGET_CALLING, now, code, "NOTIFY")
        elif code < 200:
            listener.target_event(Input.TARGET_RINGING, now, code, "NOTIFY")
        elif code < 300:
            listener.target_event(Input.TARGET_ANSWERED, now, code, "NOTIFY")
            # The phone reached the target without passing through sipdial, so its hang-up
            # will never be seen here: the click-to-dial job is complete.
            listener.target_event(Input.TARGET_HUNG_UP, now, None,
                                  "transferred outside sipdial; end not observed")
        else:
            listener.target_event(target_failure_input(code), now, code, "NOTIFY")

    def _refer_timeout(self, now: float) -> None:
        self._timer = None
        self.fire(TransferInput.REFER_TIMEOUT, now)

    # ------------------------------------------------------------ the phone's events

    def leg_event(self, event: LegEvent, now: float) -> None:
        match event:
            case Broken(detail=detail):
                self._broken(detail, now)
            case HungUp():
                self.fire(TransferInput.PHONE_HUNG_UP, now)
            case PeerResponse(txn=txn, response=response) if txn is self.refer_txn:
                if response.status >= 300:
                    self.fire(TransferInput.REFER_REFUSED, now, response.status,
                              f"REFER {response.reason}")
                elif response.status >= 200:
                    self.fire(TransferInput.REFER_ACCEPTED, now, response.status)
            case PeerRequest(request=request) if request.method == "NOTIFY":
                self.session.answer(event, now)
                self._notify(event, now)
            case PeerRequest():
                self.session.answer(event, now)  # key presses after the prompt mean nothing
            case PeerResponse() | Acked():
                pass

    def _notify(self, event: PeerRequest, now: float) -> None:
        request = event.request
        if not (request.headers.get("Event") or "").strip().lower().startswith("refer"):
            return
        match = _SIPFRAG.match(request.body.lstrip())
        if match is None:
            return
        code = int(match.group(1))
        terminated = (request.headers.get("Subscription-State") or "").strip().lower()
        if (200 <= code < 300 and self.referred_here
                and self.state in (*_WAITING, TransferState.PHONE_LEFT)):
            self.fire(TransferInput.NOTIFY_SUCCESS_FIRST, now, code)
        elif code >= 200:
            self.fire(TransferInput.NOTIFY_FINAL, now, code)
        elif terminated.startswith("terminated"):
            self.fire(TransferInput.NOTIFY_ENDED, now, code)
        else:
            self.fire(TransferInput.NOTIFY_PROGRESS, now, code)
