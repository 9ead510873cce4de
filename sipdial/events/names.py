"""Which live events a call's state change produces: one table, no I/O.

A CRM maps these names to its call log (German CTI: Wählt, Klingelt, Verbunden, Aufgelegt,
Verpasst). The engine records a :class:`~sipdial.store.models.CallEvent` whenever the call
enters a new state; :func:`events_for` turns ``(previous state, new state)`` into 0, 1 or 2
events:

=========================  ==================  ======  ================================
state entered              event               leg     German CTI
=========================  ==================  ======  ================================
``calling_user``           ``call.dialing``    user    Wählt (the user's phone)
``user_ringing``           ``call.ringing``    user    Klingelt (the user's phone)
``user_answered``          ``call.answered``   user    (the user picked up)
``awaiting_confirmation``  ``call.answered``   user    only if not after user_answered
``calling_target``         ``call.dialing``    target  Wählt
``target_ringing``         ``call.ringing``    target  Klingelt
``connected``              ``call.connected``  null    Verbunden
``ended``                  ``call.ended``      null    Aufgelegt; ``missed``: Verpasst
=========================  ==================  ======  ================================

Decisions:

* ``call.dialing`` and ``call.ringing`` come once per leg, told apart by ``"leg"``: a CRM that
  logs only the far end filters on ``"leg": "target"``.
* Leaving ``awaiting_confirmation`` (the user pressed 1) for any state but ``ended`` first
  emits ``call.confirmed``, then that state's own event: ``awaiting_confirmation ->
  calling_target`` gives ``call.confirmed`` followed by ``call.dialing`` (leg target), so a
  target-leg ``call.dialing`` exists whether or not the call asked for confirmation.
* Entering a state whose event equals the previous state's (a second 180, re-entering a
  state) emits nothing: one event per change a CRM would show.
* ``call.ended`` carries the cause; ``missed`` is true exactly for ``user_no_answer`` (the
  user's phone rang out).
* A state this table does not know emits nothing (events never break a call).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from sipdial.vocabulary import CallState, Cause

__all__ = ["EVENTS_BY_STATE", "INBOUND_EVENTS_BY_STATE", "EventName", "EventSpec", "events_for",
           "is_missed"]


class EventName(enum.StrEnum):
    """The names webhooks (``X-Sipdial-Event``) and SSE (``event:``) use."""

    DIALING = "call.dialing"
    RINGING = "call.ringing"
    ANSWERED = "call.answered"
    CONFIRMED = "call.confirmed"
    CONNECTED = "call.connected"
    ENDED = "call.ended"
    #: an inbound call (from a ``[[trunks]]`` entry) rings the user: the CRM's popup
    INCOMING = "call.incoming"
    #: not a call's: a password-guessing lockout (:mod:`sipdial.guard`), published by
    #: :meth:`~sipdial.events.EventHub.publish_notice` to admin streams and the webhooks
    #: that name it
    AUTH_LOCKED_OUT = "auth.locked_out"


Leg = Literal["user", "target"]


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event to publish for a state change."""

    name: EventName
    leg: Leg | None = None  #: which side of the call: the user's phone or the target


N = EventName
St = CallState

#: state entered -> the event it produces (see the module docstring); the keys are the
#: CallState values (str), as records and the store carry them
EVENTS_BY_STATE: Final[dict[str, EventSpec]] = {
    St.CALLING_USER: EventSpec(N.DIALING, "user"),
    St.USER_RINGING: EventSpec(N.RINGING, "user"),
    St.USER_ANSWERED: EventSpec(N.ANSWERED, "user"),
    St.AWAITING_CONFIRMATION: EventSpec(N.ANSWERED, "user"),
    St.CALLING_TARGET: EventSpec(N.DIALING, "target"),
    St.TARGET_RINGING: EventSpec(N.RINGING, "target"),
    St.CONNECTED: EventSpec(N.CONNECTED),
    St.ENDED: EventSpec(N.ENDED),
}

#: an inbound call's events (Klingelt / Verbunden / Aufgelegt or Verpasst in a CTI log):
#: ``call.incoming`` when the user's phones are rung (the caller, the contact), then
#: ``call.ringing``, ``call.answered`` when the user picks up, ``call.ended`` (``missed``
#: unless it was answered)
INBOUND_EVENTS_BY_STATE: Final[dict[str, EventSpec]] = {
    St.CALLING_USER: EventSpec(N.INCOMING, "user"),
    St.USER_RINGING: EventSpec(N.RINGING, "user"),
    St.CONNECTED: EventSpec(N.ANSWERED, "user"),
    St.ENDED: EventSpec(N.ENDED),
}

_CONFIRMED: Final = EventSpec(N.CONFIRMED)


def events_for(previous: str | None, state: str,
               direction: str = "outbound") -> tuple[EventSpec, ...]:
    """The events of a call entering ``state`` from ``previous`` (None: a new call)."""
    table = INBOUND_EVENTS_BY_STATE if direction == "inbound" else EVENTS_BY_STATE
    spec = table.get(state)
    if spec is None:
        return ()
    if previous is not None and table.get(previous) == spec:
        return ()
    if previous == St.AWAITING_CONFIRMATION and state != St.ENDED:
        return (_CONFIRMED, spec)
    return (spec,)


def is_missed(cause: str | None, direction: str = "outbound", answered: bool = False) -> bool:
    """Whether a call that ended with ``cause`` is a missed call: a click-to-dial call the
    user's phone rang out for; an inbound call the user did not answer (``answered``: it
    was connected at some point)."""
    if direction == "inbound":
        return not answered
    return cause == Cause.USER_NO_ANSWER
