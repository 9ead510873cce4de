"""The words every room uses for a call: its states, why it ended, how it connects.

A leaf module (it imports nothing of sipdial) so that the configuration, the store, the
events and the CLI can use the same enums as the calls room (:mod:`sipdial.calls`, which
re-exports them) without loading it. They are :class:`enum.StrEnum`: a member *is* the string
the API, the database and the events carry.
"""

from __future__ import annotations

import enum

__all__ = ["CallState", "Cause", "Direction", "Mode"]


class CallState(enum.StrEnum):
    """The states of a click-to-dial call, in the order a successful call passes them."""

    CALLING_USER = "calling_user"
    USER_RINGING = "user_ringing"
    USER_ANSWERED = "user_answered"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    CALLING_TARGET = "calling_target"
    TARGET_RINGING = "target_ringing"
    CONNECTED = "connected"
    ENDED = "ended"


class Direction(enum.StrEnum):
    """Who started the call: a CRM through the API (outbound) or someone calling a user
    through a ``[[trunks]]`` entry (inbound)."""

    OUTBOUND = "outbound"
    INBOUND = "inbound"


#: an inbound call's ``mode`` (it is relayed to the user's phones, not REFERred or bridged)
INBOUND_MODE = "inbound"


class Mode(enum.StrEnum):
    """How the user's phone is connected to the target."""

    REFER = "refer"  #: the phone is REFERred to the target (through sipdial)
    BRIDGE = "bridge"  #: sipdial calls the target and joins the two (3PCC)


class Cause(enum.StrEnum):
    COMPLETED = "completed"
    USER_BUSY = "user_busy"
    USER_REJECTED = "user_rejected"
    USER_NO_ANSWER = "user_no_answer"
    USER_HUNG_UP = "user_hung_up"
    NOT_CONFIRMED = "not_confirmed"
    TARGET_BUSY = "target_busy"
    TARGET_NO_ANSWER = "target_no_answer"
    TARGET_UNAVAILABLE = "target_unavailable"  # a local extension with no registered device
    TARGET_FAILED = "target_failed"
    REFER_FAILED = "refer_failed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    CALLER_CANCELLED = "caller_cancelled"  # inbound: the caller gave up before an answer
    INTERRUPTED = "interrupted"  # sipdial stopped (cleanly, or found at start after a crash)
