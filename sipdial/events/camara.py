"""CAMARA ClickToDial's view of a call (issue 10 §5): its status and disconnection reason,
and the CloudEvent a sink gets when the status changes. No I/O.

CAMARA states (``click-to-dial.yaml``, 0.1.0-rc.1) from sipdial's, one table each:

======================================  =====================================
sipdial state                           CAMARA status
======================================  =====================================
calling_user, user_ringing,             callingCaller (the caller's phone is
user_answered, awaiting_confirmation    rung, or the caller confirms)
calling_target, target_ringing          callingCallee
connected                               connected
ended (but failed, interrupted)         disconnected (with a reason)
failed or interrupted before connected  failed (no reason: CAMARA gives one
                                        only with disconnected)
======================================  =====================================

Reasons by cause: completed/cancelled -> hangUp; user_busy/user_rejected -> callerBusy;
user_no_answer -> callerNoAnswer; user_hung_up/not_confirmed/caller_cancelled ->
callerAbandon; target_busy -> calleeBusy; target_no_answer -> calleeNoAnswer;
target_unavailable/target_failed/refer_failed -> calleeFailure; failed, interrupted -> other.
"""

from __future__ import annotations

import json
import uuid
from typing import Final

from sipdial.store import CallEvent, CallRecord, iso_time
from sipdial.vocabulary import CallState, Cause

__all__ = ["CLOUDEVENT_TYPE", "camara_status", "cloud_event", "status_changed", "status_of"]

CLOUDEVENT_TYPE: Final = "org.camaraproject.click-to-dial.v0.status-changed"
SOURCE: Final = "sipdial/click-to-dial"

St, C = CallState, Cause

_RUNNING: Final[dict[str, str]] = {
    St.CALLING_USER: "callingCaller",
    St.USER_RINGING: "callingCaller",
    St.USER_ANSWERED: "callingCaller",
    St.AWAITING_CONFIRMATION: "callingCaller",
    St.CALLING_TARGET: "callingCallee",
    St.TARGET_RINGING: "callingCallee",
    St.CONNECTED: "connected",
}

_REASONS: Final[dict[str, str]] = {
    C.COMPLETED: "hangUp", C.CANCELLED: "hangUp",
    C.USER_BUSY: "callerBusy", C.USER_REJECTED: "callerBusy",
    C.USER_NO_ANSWER: "callerNoAnswer",
    C.USER_HUNG_UP: "callerAbandon", C.NOT_CONFIRMED: "callerAbandon",
    C.CALLER_CANCELLED: "callerAbandon",
    C.TARGET_BUSY: "calleeBusy", C.TARGET_NO_ANSWER: "calleeNoAnswer",
    C.TARGET_UNAVAILABLE: "calleeFailure", C.TARGET_FAILED: "calleeFailure",
    C.REFER_FAILED: "calleeFailure",
    C.FAILED: "other", C.INTERRUPTED: "other",
}


def _connected_at(record: CallRecord) -> float | None:
    return next((e.time for e in record.events if e.state == St.CONNECTED), None)


def status_of(state: str, cause: str | None, was_connected: bool) -> tuple[str, str | None]:
    """CAMARA's (status, reason) of a call in ``state`` (see the module docstring)."""
    if state != St.ENDED:
        return _RUNNING.get(state, "initiating"), None
    if not was_connected and cause in (C.FAILED, C.INTERRUPTED, None):
        return "failed", None
    return "disconnected", _REASONS.get(cause or "", "other")


def camara_status(record: CallRecord, upto: CallEvent | None = None
                  ) -> tuple[str, str | None]:
    """(status, reason) of ``record`` now, or as of ``upto`` (one of its events)."""
    state = record.state if upto is None else upto.state
    return status_of(state, record.cause, _connected_at(record) is not None)


def status_changed(record: CallRecord, previous: CallEvent | None, event: CallEvent) -> bool:
    """Whether ``event`` changes the CAMARA status (each change is one CloudEvent)."""
    if previous is None:
        return True
    return camara_status(record, previous)[0] != camara_status(record, event)[0]


def call_duration(record: CallRecord) -> str | None:
    """Whole seconds connected, once disconnected (CAMARA's ``callDuration``)."""
    start = _connected_at(record)
    if start is None or record.ended_at is None:
        return None
    end = record.ended_at
    if record.cause == C.INTERRUPTED and len(record.events) >= 2:
        end = record.events[-2].time  # ended at a restart: not the time sipdial was down
    return str(max(0, int(end - start)))


def cloud_event(record: CallRecord, event: CallEvent) -> str:
    """The CloudEvent (structured mode, JSON) of ``event``, a status change of a CAMARA
    call (``record.caller`` is the caller's number, ``record.to`` the callee's)."""
    status, reason = camara_status(record, event)
    state: dict[str, str] = {"state": status}
    if reason is not None:
        state["reason"] = reason
    data: dict[str, object] = {"callId": record.id, "caller": record.caller or "",
                               "callee": record.to, "status": state,
                               "timestamp": iso_time(event.time)}
    if status == "disconnected":
        data["callDuration"] = call_duration(record) or "0"
    return json.dumps({
        "id": str(uuid.uuid4()),
        "source": SOURCE,
        "specversion": "1.0",
        "type": CLOUDEVENT_TYPE,
        "datacontenttype": "application/json",
        "time": iso_time(event.time),
        "data": data,
    }, separators=(",", ":"))
