"""Inbound calls for CTI (issue 10 §3): a call from a ``[[trunks]]`` entry to a user's
number rings that user's phones, and the CRM hears about it.

:class:`IncomingCall` follows the :class:`~sipdial.calls.b2bua.RelayedCall` that carries
the call to the user's devices (it is that relay's listener) and keeps the call's record:
direction ``inbound``, ``caller`` (E.164 where it parses), ``contact`` (the phonebook's or
the CRM lookup's name). Its states and why it ended are one table, :data:`INBOUND_TABLE`:

==========================  ===============  ====================================
what the relay reports      before answer    after answer
==========================  ===============  ====================================
the phones ring (18x)       user_ringing     (nothing)
a phone answers             connected        (nothing)
the caller hangs up         ended:           ended: completed
                            caller_cancelled
a phone hangs up            (nothing)        ended: completed
nobody answers in time      ended:           (nothing)
(or 408/480/487)            user_no_answer
busy (486/600)              ended: user_busy (nothing)
every phone refuses         ended: by code
otherwise                   (603/607/608 user_rejected, else failed)
an internal error           ended: failed    ended: failed
sipdial ends it (API, max   ended: cancelled ended: cancelled
duration) / stops           / interrupted    / interrupted
==========================  ===============  ====================================

The first state (``calling_user``: the phones are being rung) gives ``call.incoming``.
That event waits for the contact lookup, at most ``[contacts] lookup_timeout``; the call
does not, and the events after it queue behind it in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from sipdial.calls.states import CallState, Cause, Input
from sipdial.sip import TimerHandle, TimerHeap
from sipdial.store import CallEvent, CallRecord

if TYPE_CHECKING:
    from sipdial.calls.b2bua import RelayedCall
    from sipdial.contacts import Contact, ContactLookup

__all__ = ["INBOUND_TABLE", "CallLog", "IncomingCall"]

log = logging.getLogger("sipdial.calls")

St = CallState

#: (answered yet?, what the relay reported) -> (state entered, cause; None: from the code)
INBOUND_TABLE: Final[dict[tuple[bool, Input], tuple[CallState, Cause | None]]] = {
    (False, Input.TARGET_RINGING): (St.USER_RINGING, None),
    (False, Input.TARGET_ANSWERED): (St.CONNECTED, None),
    (False, Input.PHONE_HUNG_UP): (St.ENDED, Cause.CALLER_CANCELLED),
    (False, Input.TARGET_NO_ANSWER): (St.ENDED, Cause.USER_NO_ANSWER),
    (False, Input.TARGET_BUSY): (St.ENDED, Cause.USER_BUSY),
    (False, Input.TARGET_FAILED): (St.ENDED, None),
    (False, Input.FAILED): (St.ENDED, Cause.FAILED),
    (True, Input.PHONE_HUNG_UP): (St.ENDED, Cause.COMPLETED),
    (True, Input.TARGET_HUNG_UP): (St.ENDED, Cause.COMPLETED),
    (True, Input.FAILED): (St.ENDED, Cause.FAILED),
    # sipdial ends it: DELETE /v1/calls/{id}, calls.max_duration, a stop
    (False, Input.CANCEL): (St.ENDED, Cause.CANCELLED),
    (True, Input.CANCEL): (St.ENDED, Cause.CANCELLED),
    (False, Input.SHUTDOWN): (St.ENDED, Cause.INTERRUPTED),
    (True, Input.SHUTDOWN): (St.ENDED, Cause.INTERRUPTED),
}

#: the cause of a failure the relay reports as TARGET_FAILED, by its SIP code
_BY_CODE: Final = {603: Cause.USER_REJECTED, 607: Cause.USER_REJECTED,
                   608: Cause.USER_REJECTED}


class CallLog(Protocol):
    """Where an inbound call's changes go (:class:`~sipdial.calls.CallService`)."""

    def record_change(self, record: CallRecord, event: CallEvent) -> None:
        """Store the record and its new event."""

    def save_record(self, record: CallRecord) -> None:
        """Store the record (its contact arrived)."""

    def publish_change(self, record: CallRecord, event: CallEvent) -> None:
        """Tell the CRMs (events) and the metrics."""


class IncomingCall:
    """One inbound call's record and events (see the module docstring)."""

    def __init__(self, record: CallRecord, *, timers: TimerHeap, log_to: CallLog,
                 on_end: Callable[[IncomingCall], None],
                 contacts: ContactLookup | None, lookup_timeout: float, now: float,
                 trunk: str = "") -> None:
        self.record = record
        self.trunk = trunk  #: the [[trunks]] entry it came from (its name)
        self.relay: RelayedCall | None = None
        self._timers = timers
        self._log = log_to
        self._on_end = on_end
        self._held: list[CallEvent] | None = [] if contacts is not None else None
        self._timer: TimerHandle | None = None
        self._enter(St.CALLING_USER, now, None, "ringing the user's phones")
        if contacts is not None and record.caller is not None:
            self._timer = timers.schedule(now + lookup_timeout, self._lookup_late)
            contacts.lookup(record.caller, self._contact, record.user)
        else:
            self._release_held()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def answered(self) -> bool:
        return self.record.state == St.CONNECTED

    # ------------------------------------------------------------ the relay's listener

    def target_event(self, inp: Input, now: float, code: int | None = None,
                     detail: str | None = None) -> None:
        if self.record.state == St.ENDED:
            return
        row = INBOUND_TABLE.get((self.answered, inp))
        if row is None:  # TARGET_CALLING (recorded at the start), a 18x after the answer
            log.debug("inbound call %s: %s ignored in %s", self.id, inp.name,
                      self.record.state)
            return
        state, cause = row
        if state == self.record.state:
            return
        if state == St.ENDED and cause is None:
            cause = _BY_CODE.get(code or 0, Cause.FAILED)
        self._enter(state, now, code, detail, cause)

    def ended_without_relay(self, now: float, code: int, cause: Cause, detail: str) -> None:
        """Nobody could be rung (no registered device): over before it began."""
        self._enter(St.ENDED, now, code, detail, cause)

    def end(self, inp: Input, now: float, detail: str) -> None:
        """sipdial ends the call (``Input.CANCEL``: the API or ``max_duration``;
        ``Input.SHUTDOWN``: stopping): both sides released, the record closed."""
        if self.record.state == St.ENDED:
            return
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.release(now)  # (a release reports nothing: the call is told here)
        self.target_event(inp, now, None, detail)

    # ------------------------------------------------------------ the contact

    def _contact(self, contact: Contact | None) -> None:
        if self._held is None:  # too late for call.incoming: it went without
            return
        if contact is not None:
            self.record.contact = contact.to_json()
        self._release_held()

    def _lookup_late(self, now: float) -> None:
        self._timer = None
        if self._held is not None:
            log.info("call %s: contact lookup for %s took longer than allowed; "
                     "call.incoming without it", self.id, self.record.caller)
            self._release_held()

    def _release_held(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held or [], None
        if self.record.contact is not None:
            self._log.save_record(self.record)
        for event in held:
            self._log.publish_change(self.record, event)
        if self.record.state == St.ENDED:
            self._on_end(self)

    # ------------------------------------------------------------ states

    def _enter(self, state: CallState, now: float, code: int | None, detail: str | None,
               cause: Cause | None = None) -> None:
        record = self.record
        record.state = state.value
        if state == St.ENDED:
            record.cause = (cause or Cause.FAILED).value
            record.ended_at = now
        event = CallEvent(state.value, now, code, detail)
        record.events.append(event)
        log.info("inbound call %s from %s to user %s: %s%s", record.id, record.caller,
                 record.user, state.value, f" cause={record.cause}" if state == St.ENDED else "")
        self._log.record_change(record, event)
        if self._held is not None:
            self._held.append(event)  # published with the contact
            return
        self._log.publish_change(record, event)
        if state == St.ENDED:
            self._on_end(self)
