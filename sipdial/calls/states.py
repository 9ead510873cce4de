"""The click-to-dial call as one state table (STYLE.md §2).

``TRANSITIONS[(state, input)] = (next state, cause, actions)``. A call ends exactly when it
reaches ``ended``, and the cause says why. Actions are abstract: what ``CONNECT_TARGET`` does
depends on the mode (REFER: send the phone a REFER; bridge: INVITE the target), so the same
table serves both flows.

An input missing from the table raises :class:`IllegalTransition` — except after ``ended``,
where late SIP events (a 487 after our CANCEL, a BYE crossing ours) are expected and dropped.
"""

from __future__ import annotations

import enum
from typing import TypeAlias


class CallState(enum.StrEnum):
    CALLING_USER = "calling_user"
    USER_RINGING = "user_ringing"
    USER_ANSWERED = "user_answered"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    CALLING_TARGET = "calling_target"
    TARGET_RINGING = "target_ringing"
    CONNECTED = "connected"
    ENDED = "ended"


class Cause(enum.StrEnum):
    COMPLETED = "completed"
    USER_BUSY = "user_busy"
    USER_REJECTED = "user_rejected"
    USER_NO_ANSWER = "user_no_answer"
    USER_HUNG_UP = "user_hung_up"
    NOT_CONFIRMED = "not_confirmed"
    TARGET_BUSY = "target_busy"
    TARGET_NO_ANSWER = "target_no_answer"
    TARGET_FAILED = "target_failed"
    REFER_FAILED = "refer_failed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # sipdial stopped (cleanly, or found at start after a crash)


class Input(enum.StrEnum):
    USER_RINGING = "user ringing"  # 180/183 from a device
    USER_ANSWERED = "user answered"  # 200 from a device
    USER_BUSY = "user busy"  # every device 486/600
    USER_REJECTED = "user rejected"  # 603 (declined)
    USER_NO_ANSWER = "user no answer"  # ring timeout, or 408/480
    USER_FAILED = "user failed"  # any other failure reaching the user
    USER_HUNG_UP = "user hung up"  # the phone ended it before the target answered
    ASK_CONFIRMATION = "ask confirmation"  # the call wants "press 1" before dialling
    NO_CONFIRMATION = "no confirmation"  # ... or not
    WRONG_DIGIT = "wrong digit"  # a digit other than 1: the prompt is replayed once
    CONFIRMED = "confirmed"  # DTMF 1
    NOT_CONFIRMED = "not confirmed"  # no digit in time, or a wrong digit twice
    REFER_FAILED = "refer failed"  # REFER refused, or the transfer never happened
    TARGET_CALLING = "target calling"  # the INVITE to the target is out
    TARGET_RINGING = "target ringing"
    TARGET_ANSWERED = "target answered"
    TARGET_BUSY = "target busy"
    TARGET_NO_ANSWER = "target no answer"
    TARGET_FAILED = "target failed"
    HANGUP = "hangup"  # either party ended the connected call
    CANCEL = "cancel"  # DELETE /v1/calls/{id}
    SHUTDOWN = "shutdown"  # sipdial is stopping
    FAILED = "failed"  # internal error


class Action(enum.Enum):
    CANCEL_OTHER_DEVICES = "CANCEL the devices that did not answer"
    PLAY_PROMPT = "play 'to connect to <number>, press 1' and wait for a digit"
    REPLAY_PROMPT = "play the prompt once more"
    CONNECT_TARGET = "REFER the phone to the target (refer) / INVITE the target (bridge)"
    RELEASE_USER = "end sipdial's own dialog with the phone once the transfer took over"
    RELEASE_ALL = "CANCEL or BYE every leg still up"


St, In, C, A = CallState, Input, Cause, Action
Row: TypeAlias = tuple[CallState, Cause | None, tuple[Action, ...]]
_ = ()

# The states in which the call is alive; used only to write the rows below compactly.
_LIVE = (St.CALLING_USER, St.USER_RINGING, St.USER_ANSWERED, St.AWAITING_CONFIRMATION,
         St.CALLING_TARGET, St.TARGET_RINGING, St.CONNECTED)
_RINGING_USER = (St.CALLING_USER, St.USER_RINGING)
_TARGET_PHASE = (St.USER_ANSWERED, St.CALLING_TARGET, St.TARGET_RINGING)

TRANSITIONS: dict[tuple[CallState, Input], Row] = {
    # --- ringing the user's phone(s)
    (St.CALLING_USER, In.USER_RINGING): (St.USER_RINGING, None, _),
    (St.USER_RINGING, In.USER_RINGING): (St.USER_RINGING, None, _),
    **{(s, In.USER_ANSWERED): (St.USER_ANSWERED, None, (A.CANCEL_OTHER_DEVICES,))
       for s in _RINGING_USER},
    **{(s, In.USER_BUSY): (St.ENDED, C.USER_BUSY, (A.RELEASE_ALL,)) for s in _RINGING_USER},
    **{(s, In.USER_REJECTED): (St.ENDED, C.USER_REJECTED, (A.RELEASE_ALL,)) for s in _RINGING_USER},
    **{(s, In.USER_NO_ANSWER): (St.ENDED, C.USER_NO_ANSWER, (A.RELEASE_ALL,))
       for s in _RINGING_USER},
    **{(s, In.USER_FAILED): (St.ENDED, C.FAILED, (A.RELEASE_ALL,)) for s in _RINGING_USER},
    # --- the "press 1" confirmation (pbxnsip's abuse protection), or straight on
    (St.USER_ANSWERED, In.NO_CONFIRMATION): (St.USER_ANSWERED, None, (A.CONNECT_TARGET,)),
    (St.USER_ANSWERED, In.ASK_CONFIRMATION): (St.AWAITING_CONFIRMATION, None,
                                              (A.PLAY_PROMPT,)),
    (St.AWAITING_CONFIRMATION, In.WRONG_DIGIT): (St.AWAITING_CONFIRMATION, None,
                                                 (A.REPLAY_PROMPT,)),
    (St.AWAITING_CONFIRMATION, In.CONFIRMED): (St.CALLING_TARGET, None, (A.CONNECT_TARGET,)),
    (St.AWAITING_CONFIRMATION, In.NOT_CONFIRMED): (St.ENDED, C.NOT_CONFIRMED,
                                                   (A.RELEASE_ALL,)),
    (St.AWAITING_CONFIRMATION, In.USER_HUNG_UP): (St.ENDED, C.USER_HUNG_UP, (A.RELEASE_ALL,)),
    # --- reaching the target (REFER: the phone dials it through sipdial; bridge: we do)
    (St.USER_ANSWERED, In.TARGET_CALLING): (St.CALLING_TARGET, None, _),
    (St.CALLING_TARGET, In.TARGET_CALLING): (St.CALLING_TARGET, None, _),
    (St.USER_ANSWERED, In.TARGET_RINGING): (St.TARGET_RINGING, None, _),
    (St.CALLING_TARGET, In.TARGET_RINGING): (St.TARGET_RINGING, None, _),
    (St.TARGET_RINGING, In.TARGET_RINGING): (St.TARGET_RINGING, None, _),
    (St.TARGET_RINGING, In.TARGET_CALLING): (St.TARGET_RINGING, None, _),
    **{(s, In.TARGET_ANSWERED): (St.CONNECTED, None, (A.RELEASE_USER,)) for s in _TARGET_PHASE},
    **{(s, In.USER_HUNG_UP): (St.ENDED, C.USER_HUNG_UP, (A.RELEASE_ALL,)) for s in _TARGET_PHASE},
    **{(s, In.REFER_FAILED): (St.ENDED, C.REFER_FAILED, (A.RELEASE_ALL,)) for s in _TARGET_PHASE},
    **{(s, In.TARGET_BUSY): (St.ENDED, C.TARGET_BUSY, (A.RELEASE_ALL,)) for s in _TARGET_PHASE},
    **{(s, In.TARGET_NO_ANSWER): (St.ENDED, C.TARGET_NO_ANSWER, (A.RELEASE_ALL,))
       for s in _TARGET_PHASE},
    **{(s, In.TARGET_FAILED): (St.ENDED, C.TARGET_FAILED, (A.RELEASE_ALL,))
       for s in _TARGET_PHASE},
    # --- talking
    (St.CONNECTED, In.TARGET_ANSWERED): (St.CONNECTED, None, _),
    (St.CONNECTED, In.HANGUP): (St.ENDED, C.COMPLETED, (A.RELEASE_ALL,)),
    # --- from anywhere alive
    **{(s, In.CANCEL): (St.ENDED, C.CANCELLED, (A.RELEASE_ALL,)) for s in _LIVE},
    **{(s, In.FAILED): (St.ENDED, C.FAILED, (A.RELEASE_ALL,)) for s in _LIVE},
    **{(s, In.SHUTDOWN): (St.ENDED, C.INTERRUPTED, (A.RELEASE_ALL,)) for s in _LIVE},
}


class IllegalTransition(RuntimeError):
    pass


def transition(state: CallState, inp: Input) -> Row | None:
    """The row for ``inp`` in ``state``; None for late input after the call ended."""
    row = TRANSITIONS.get((state, inp))
    if row is not None:
        return row
    if state is St.ENDED:
        return None
    raise IllegalTransition(f"call in state {state} cannot take input {inp!r}")


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
