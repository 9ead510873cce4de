
"""The click-to-dial call as one state table (STYLE.md §2).

``TRANSITIONS[(phase, input)] = (next phase, cause, actions)``. A call ends exactly when it
reaches ``ended``, and the cause says why. Actions are abstract: what ``CONNECT_TARGET`` does
depends on the mode (REFER: send the phone a REFER; bridge: INVITE the target), so the same
table serves both flows.

:class:`Phase` is the table's state: the public :class:`CallState` (what the API, events and
the store show) plus the one distinction the API does not name, the second playing of the
"press 1" prompt. ``phase.state`` gives the public state.

An input missing from the table is a bug, not bad input: the call logs one line and ends at
once as ``failed`` (:class:`IllegalTransition`). After ``ended`` every input is dropped: late
SIP events (a 487 after our CANCEL, a BYE crossing ours) are expected there.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

from sipdial.sip import Symbol
from sipdial.vocabulary import CallState, Cause, Mode

__all__ = [
    "TRANSITIONS",
    "Action",
    "CallState",
    "Cause",
    "IllegalTransition",
    "Input",
    "Mode",
    "Phase",
    "target_failure_input",
    "transition",
    "user_failure_input",
]


class Phase(Symbol):
    """The table's states: the public states, plus the prompt's second playing."""

    CALLING_USER = CallState.CALLING_USER
    USER_RINGING = CallState.USER_RINGING
    USER_ANSWERED = CallState.USER_ANSWERED
    AWAITING_CONFIRMATION = CallState.AWAITING_CONFIRMATION
    CONFIRMING_AGAIN = "awaiting_confirmation (prompt replayed after a wrong digit)"
    CALLING_TARGET = CallState.CALLING_TARGET
    TARGET_RINGING = CallState.TARGET_RINGING
    CONNECTED = CallState.CONNECTED
    ENDED = CallState.ENDED

    @property
    def state(self) -> CallState:
        """The public state of this phase."""
        return _PUBLIC[self]


_PUBLIC = {p: p.value if isinstance(p.value, CallState) else CallState.AWAITING_CONFIRMATION
           for p in Phase}


class Input(enum.StrEnum):
    # the user's device(s)
    USER_RINGING = "user ringing"  # 180/183 from a device
    USER_ANSWERED = "user answered"  # 200 from a device (after the first: hung up)
    DEVICE_FAILED = "device failed"  # one device failed (others may still ring)
    USER_BUSY = "user busy"  # every device failed, 486/600 chosen
    USER_REJECTED = "user rejected"  # 603 (declined)
    USER_NO_ANSWER = "user no answer"  # ring timeout, or 408/480
    USER_FAILED = "user failed"  # any other failure reaching the user
    PHONE_HUNG_UP = "phone hung up"  # the user's phone (or its referred call) ended its side
    # the "press 1" confirmation
    ASK_CONFIRMATION = "ask confirmation"  # the call wants "press 1" before dialling
    NO_CONFIRMATION = "no confirmation"  # ... or not
    DIGIT_ONE = "digit 1"
    OTHER_DIGIT = "other digit"  # the prompt is replayed once, then the call ends
    CONFIRM_TIMEOUT = "confirm timeout"  # no digit in time
    # the target
    REFER_FAILED = "refer failed"  # REFER refused, or the transfer never happened
    TARGET_CALLING = "target calling"  # the INVITE to the target is out
    TARGET_RINGING = "target ringing"
    TARGET_ANSWERED = "target answered"
    TARGET_BUSY = "target busy"
    TARGET_NO_ANSWER = "target no answer"
    TARGET_UNAVAILABLE = "target unavailable"
    TARGET_FAILED = "target failed"
    TARGET_HUNG_UP = "target hung up"  # (or: transferred elsewhere, end not observable)
    # commands
    CANCEL = "cancel"  # DELETE /v1/calls/{id}, or the maximum duration passed
    SHUTDOWN = "shutdown"  # sipdial is stopping
    FAILED = "failed"  # internal error


class Action(Symbol):
    STOP_TIMER = "stop the ring / prompt timer"
    TAKE_DEVICE = "keep the answering device; CANCEL the others"
    HANG_UP_DEVICE = "hang up a device that answered too late"
    CHECK_DEVICES = "once every device failed, fire the failure RFC 3261 §16.7 chooses"
    USE_PHONE_MEDIA = "point sipdial's RTP at the phone's answer (fail without G.711)"
    DECIDE_CONFIRMATION = "fire ASK_CONFIRMATION or NO_CONFIRMATION as configured"
    PLAY_PROMPT = "play 'to connect to <number>, press 1' and wait for a digit"
    STOP_PROMPT = "stop the prompt"
    CONNECT_TARGET = "REFER the phone to the target (refer) / INVITE the target (bridge)"
    TARGET_CONNECTED = "refer: end sipdial's own dialog with the phone once the transfer is done"
    RELEASE_ALL = "CANCEL or BYE every leg still up (bridge: after a busy/failure tone)"


St, Ph, In, C, A = CallState, Phase, Input, Cause, Action
Row: TypeAlias = tuple[Phase, Cause | None, tuple[Action, ...]]
_ = ()
_END = (A.STOP_TIMER, A.RELEASE_ALL)

# Groups of phases, used only to write the rows below compactly.
_RINGING_USER = (Ph.CALLING_USER, Ph.USER_RINGING)
_CONFIRMING = (Ph.AWAITING_CONFIRMATION, Ph.CONFIRMING_AGAIN)
_TARGET_PHASE = (Ph.USER_ANSWERED, Ph.CALLING_TARGET, Ph.TARGET_RINGING)
_ANSWERED = (*_CONFIRMING, *_TARGET_PHASE, Ph.CONNECTED)
_LIVE = (*_RINGING_USER, *_ANSWERED)
_TARGET_FAILURES = {In.REFER_FAILED: C.REFER_FAILED, In.TARGET_BUSY: C.TARGET_BUSY,
                    In.TARGET_NO_ANSWER: C.TARGET_NO_ANSWER,
                    In.TARGET_UNAVAILABLE: C.TARGET_UNAVAILABLE,
                    In.TARGET_FAILED: C.TARGET_FAILED}
_USER_FAILURES = {In.USER_BUSY: C.USER_BUSY, In.USER_REJECTED: C.USER_REJECTED,
                  In.USER_NO_ANSWER: C.USER_NO_ANSWER, In.USER_FAILED: C.FAILED}

TRANSITIONS: dict[tuple[Phase, Input], Row] = {
    # --- ringing the user's phone(s)
    (Ph.CALLING_USER, In.USER_RINGING): (Ph.USER_RINGING, None, _),
    (Ph.USER_RINGING, In.USER_RINGING): (Ph.USER_RINGING, None, _),
    **{(p, In.USER_ANSWERED): (Ph.USER_ANSWERED, None,
                               (A.STOP_TIMER, A.TAKE_DEVICE, A.USE_PHONE_MEDIA,
                                A.DECIDE_CONFIRMATION)) for p in _RINGING_USER},
    **{(p, In.DEVICE_FAILED): (p, None, (A.CHECK_DEVICES,)) for p in _RINGING_USER},
    **{(p, i): (Ph.ENDED, c, _END) for p in _RINGING_USER for i, c in _USER_FAILURES.items()},
    # a local extension without a device: nobody is rung for a call that cannot connect
    (Ph.CALLING_USER, In.TARGET_UNAVAILABLE): (Ph.ENDED, C.TARGET_UNAVAILABLE, _END),
    # --- the "press 1" confirmation (pbxnsip's abuse protection), or straight on
    (Ph.USER_ANSWERED, In.NO_CONFIRMATION): (Ph.USER_ANSWERED, None, (A.CONNECT_TARGET,)),
    (Ph.USER_ANSWERED, In.ASK_CONFIRMATION): (Ph.AWAITING_CONFIRMATION, None,
                                              (A.PLAY_PROMPT,)),
    (Ph.AWAITING_CONFIRMATION, In.OTHER_DIGIT): (Ph.CONFIRMING_AGAIN, None, (A.PLAY_PROMPT,)),
    (Ph.CONFIRMING_AGAIN, In.OTHER_DIGIT): (Ph.ENDED, C.NOT_CONFIRMED, _END),
    **{(p, In.DIGIT_ONE): (Ph.CALLING_TARGET, None,
                           (A.STOP_TIMER, A.STOP_PROMPT, A.CONNECT_TARGET)) for p in _CONFIRMING},
    **{(p, In.CONFIRM_TIMEOUT): (Ph.ENDED, C.NOT_CONFIRMED, _END) for p in _CONFIRMING},
    **{(p, In.PHONE_HUNG_UP): (Ph.ENDED, C.USER_HUNG_UP, _END) for p in _CONFIRMING},
    # --- reaching the target (REFER: the phone dials it through sipdial; bridge: we do)
    (Ph.USER_ANSWERED, In.TARGET_CALLING): (Ph.CALLING_TARGET, None, _),
    (Ph.CALLING_TARGET, In.TARGET_CALLING): (Ph.CALLING_TARGET, None, _),
    (Ph.TARGET_RINGING, In.TARGET_CALLING): (Ph.TARGET_RINGING, None, _),
    **{(p, In.TARGET_RINGING): (Ph.TARGET_RINGING, None, _) for p in _TARGET_PHASE},
    **{(p, In.TARGET_ANSWERED): (Ph.CONNECTED, None, (A.TARGET_CONNECTED,))
       for p in _TARGET_PHASE},
    **{(p, In.PHONE_HUNG_UP): (Ph.ENDED, C.USER_HUNG_UP, _END) for p in _TARGET_PHASE},
    **{(p, i): (Ph.ENDED, c, _END) for p in _TARGET_PHASE for i, c in _TARGET_FAILURES.items()},
    # --- talking
    (Ph.CONNECTED, In.TARGET_ANSWERED): (Ph.CONNECTED, None, _),  # NOTIFY 200 after the fact
    (Ph.CONNECTED, In.PHONE_HUNG_UP): (Ph.ENDED, C.COMPLETED, _END),
    (Ph.CONNECTED, In.TARGET_HUNG_UP): (Ph.ENDED, C.COMPLETED, _END),
    # --- what may arrive in any live phase and changes nothing
    **{(p, In.USER_ANSWERED): (p, None, (A.HANG_UP_DEVICE,)) for p in _ANSWERED},
    **{(p, In.DEVICE_FAILED): (p, None, _) for p in _ANSWERED},  # a CANCELled device's 487
    **{(p, i): (p, None, _) for p in _LIVE if p not in _CONFIRMING
       for i in (In.DIGIT_ONE, In.OTHER_DIGIT)},  # key presses outside the prompt
    # --- from anywhere alive
    **{(p, In.CANCEL): (Ph.ENDED, C.CANCELLED, _END) for p in _LIVE},
    **{(p, In.FAILED): (Ph.ENDED, C.FAILED, _END) for p in _LIVE},
    **{(p, In.SHUTDOWN): (Ph.ENDED, C.INTERRUPTED, _END) for p in _LIVE},
}


class IllegalTransition(RuntimeError):
    pass


def transition(phase: Phase, inp: Input) -> Row | None:
    """The row for ``inp`` in ``phase``; None for late input after the call ended."""
    row = TRANSITIONS.get((phase, inp))
    if row is not None:
        return row
    if phase is Ph.ENDED:
        return None
    raise IllegalTransition(f"a call in phase {phase.name} cannot take input {inp.name}")


# SIP final status of the user's device(s) -> input (RFC 3261 §21; RFC 3326 causes)
def user_failure_input(status: int) -> Input:
    if status in (486, 600):
        return In.USER_BUSY
    if status in (603, 607, 608):
        return In.USER_REJECTED
    if status in (408, 480, 487):
        return In.USER_NO_ANSWER
    return In.USER_FAILED


def target_failure_input(status: int) -> Input:
    if status in (486, 600):
        return In.TARGET_BUSY
    if status in (408, 480, 487):
        return In.TARGET_NO_ANSWER
    return In.TARGET_FAILED
