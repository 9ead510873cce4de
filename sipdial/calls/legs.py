"""Call legs: one INVITE dialog each, as seen from sipdial — two state tables.

A :class:`UacLeg` is an INVITE sipdial sends (to a user's device, or to a destination); a
:class:`UasLeg` is an INVITE sipdial receives (a phone dialling through sipdial). Legs do the
SIP bookkeeping — ACK, CANCEL, BYE, 487, digest retry, RFC 4028 refresh, dialog registration —
and report what happened to their owner as typed events (:data:`LegEvent`). The owner (a call
flow) decides what it means; the legs know nothing of click-to-dial.

Each kind of leg is one table, ``(LegState, LegInput) -> (next LegState, actions)``
(:data:`UAC_TABLE`, :data:`UAS_TABLE`). SIP happenings and the owner's commands are both
inputs. An input missing from a table is a bug: the leg logs one line, releases itself and
tells its owner it failed, so no call waits for a leg that will never report again.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar

from sipdial.sip import (
    URI,
    AckTimeout,
    AuthError,
    CancelReceived,
    Challenge,
    ClientTransaction,
    Dialog,
    Headers,
    NameAddr,
    OwnerEvent,
    ParseError,
    Peer,
    Request,
    ResolveError,
    Response,
    ResponseReceived,
    ServerTransaction,
    SipURI,
    Symbol,
    TimerHandle,
    TransactionTimeout,
    TransportError,
    answer_challenge,
    check_dialog_headers,
    cseq,
    make_response,
    parse_challenges,
    preferred_challenge,
    route_request,
)
from sipdial.ua import ALLOW, DialogAck, DialogEvent, DialogRequest, UserAgent

if TYPE_CHECKING:
    from sipdial.calls.routing import Resolver

log = logging.getLogger("sipdial.calls")

# RFC 3326: tells devices that lost the race not to log a missed call
ANSWERED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'
#: a leg's INVITE allows what the UA does, but REGISTER (sipdial is no registrar for peers)
LEG_ALLOW = ", ".join(m.strip() for m in ALLOW.split(",") if m.strip() != "REGISTER")


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Progress:
    """A provisional response (101-199) to our INVITE."""

    leg: UacLeg
    response: Response


@dataclass(frozen=True, slots=True)
class Answered:
    """A 2xx to our INVITE: the dialog is up (and ACKed)."""

    leg: UacLeg
    response: Response


@dataclass(frozen=True, slots=True)
class Failed:
    """Our INVITE failed: a final non-2xx (``response``), no answer or no transport
    (``response`` None, ``status`` 408/503), or a 2xx crossing our CANCEL (487)."""

    leg: UacLeg
    status: int
    response: Response | None
    detail: str | None = None  #: why, when no response says it (e.g. "cannot resolve ...")

    @property
    def reason(self) -> str:
        if self.detail is not None:
            return self.detail
        if self.response is not None:
            return self.response.reason
        # no response: 408 is a timeout, anything else (503) the transport failed (connection
        # refused, a TLS handshake refused: its reason is in the log line of the transport)
        return "timeout" if self.status == 408 else "transport error"


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The caller CANCELled the INVITE sipdial received (487 already sent)."""

    leg: UasLeg


@dataclass(frozen=True, slots=True)
class HungUp:
    """The dialog is over without us asking: a BYE (200 already sent), no ACK for our 2xx,
    or the session expired (RFC 4028)."""

    leg: UacLeg | UasLeg
    detail: str


@dataclass(frozen=True, slots=True)
class Broken:
    """A bug in the leg (an input its table lacks, an action that raised): the leg has
    released itself; the owner should end the call as failed."""

    leg: UacLeg | UasLeg
    detail: str


@dataclass(frozen=True, slots=True)
class Acked:
    """The ACK of a 2xx we sent in the dialog (for a relayed re-INVITE: it may carry SDP)."""

    leg: UacLeg | UasLeg
    ack: Request


@dataclass(frozen=True, slots=True)
class PeerRequest:
    """Another in-dialog request from the peer: the owner must answer ``txn``."""

    leg: UacLeg | UasLeg
    request: Request
    txn: ServerTransaction


@dataclass(frozen=True, slots=True)
class PeerResponse:
    """A response to an in-dialog request the owner sent through :meth:`Leg.request`."""

    leg: UacLeg | UasLeg
    response: Response
    txn: ClientTransaction


LegEvent: TypeAlias = (
    Progress | Answered | Failed | Cancelled | HungUp | Broken | Acked | PeerRequest
    | PeerResponse
)


class LegListener(Protocol):
    """What owns legs: a call flow."""

    def leg_event(self, event: LegEvent, now: float) -> None: ...


def _sdp_only(response: Response) -> Response:
    """``response`` with its status, Content-Type and body only."""
    headers = Headers()
    content_type = response.headers.get("Content-Type")
    if content_type is not None:
        headers.add("Content-Type", content_type)
    return Response(response.status, response.reason, headers, response.body)


class _Gone:
    """Stands in for a leg's owner that no longer exists: its call ended and nothing holds
    it any more. What the leg still has to say (the answer to its last BYE, a late
    retransmission) interests nobody, but a request from the peer still gets its answer: a
    NOTIFY 200 (the phone's REFER subscription ending, as the transfer answered it while it
    lived; unanswered, baresip waited 32 s before it would quit), anything else 481."""

    def leg_event(self, event: LegEvent, now: float) -> None:
        log.debug("%r: after its call was gone", event)
        if isinstance(event, PeerRequest) and not event.txn.answered:
            status = 200 if event.request.method == "NOTIFY" else 481
            event.leg.ua.endpoint.reply(event.txn, status, now)


GONE = _Gone()


# ---------------------------------------------------------------------------- the tables


class LegState(Symbol):
    RESOLVING = "resolving"  # UAC: looking up where the INVITE goes (RFC 3263)
    CALLING = "calling"  # INVITE sent (UAC) / received (UAS), no provisional yet
    EARLY = "early"  # a provisional went out (UAS) / came in (UAC)
    CANCELLING = "cancelling"  # UAC: our CANCEL is out, the final response not in yet
    CONFIRMED = "confirmed"  # 2xx: the dialog is up
    FAILED = "failed"  # final non-2xx or timeout; never confirmed
    CANCELLED = "cancelled"  # ended by a CANCEL (ours for UAC, the caller's for UAS)
    ENDED = "ended"  # the dialog was up and is over

    @property
    def over(self) -> bool:
        return self in _OVER


_OVER = frozenset({LegState.FAILED, LegState.CANCELLED, LegState.ENDED})


class LegInput(Symbol):
    # from the resolver
    RESOLVED = "the destination's addresses"
    UNRESOLVABLE = "the destination's name does not resolve"
    NEXT_TARGET = "no answer, no transport or 503, and another address to try (RFC 3263 §4.3)"
    # from the wire
    PROVISIONAL = "101-199 to our INVITE"
    SUCCESS = "2xx to our INVITE"
    BAD_ANSWER = "2xx to our INVITE whose Contact or Record-Route does not parse"
    CHALLENGE = "401/407 we hold credentials for and have not answered yet"
    FAILURE = "final 3xx-6xx to our INVITE"
    TIMEOUT = "no final response / no transport"
    REMOTE_CANCEL = "CANCEL of the INVITE we received"
    REMOTE_BYE = "BYE"
    ACK = "ACK of a 2xx we sent"
    ACK_TIMEOUT = "no ACK for our 2xx"
    REQUEST = "other in-dialog request"
    RESPONSE = "response to an in-dialog request of ours"
    SESSION_GONE = "RFC 4028 refresh answered 408/481"
    REFRESH_DUE = "RFC 4028: time to refresh the session"
    # from the owner
    PROGRESS = "send a provisional"
    ANSWER = "send 2xx"
    REJECT = "send a final non-2xx"
    CANCEL = "CANCEL our INVITE"
    HANG_UP = "BYE"
    RELEASE = "end the leg whatever its state (CANCEL, reject or BYE)"


class LegAction(Symbol):
    USE_PEERS = "keep the resolved addresses, the first one to try"
    NEXT_PEER = "take the next resolved address"
    SEND_INVITE = "send the INVITE (a new transaction)"
    REPORT_PROGRESS = "tell the owner: Progress"
    ACCEPT_ANSWER = "ACK the 2xx, keep the dialog, start RFC 4028 refreshes, tell: Answered"
    REFUSE_ANSWER = "ACK a 2xx we no longer want (another fork's, or after CANCEL), BYE it"
    REPORT_BAD_ANSWER = "tell the owner: Failed 502 (the 2xx could not make a dialog)"
    RETRY_AUTHORIZED = "send the INVITE again with credentials (RFC 3261 §22.2)"
    REPORT_FAILED = "tell the owner: Failed"
    REPORT_CANCELLED_487 = "tell the owner: Failed with 487 (our CANCEL won)"
    SEND_CANCEL = "send CANCEL"
    SEND_BYE = "stop timers, send BYE, forget the dialog"
    ANSWER_BYE = "answer the BYE 200, stop timers, forget the dialog"
    REPORT_HUNG_UP = "tell the owner: HungUp"
    SEND_REFRESH = "send the RFC 4028 UPDATE and schedule the next one"
    ANSWER_487 = "answer a CANCELled request 487"
    SEND_PROVISIONAL = "send the owner's provisional"
    SEND_2XX = "create the dialog, send 2xx"
    SEND_FINAL = "send the owner's final non-2xx"
    REPORT_CANCELLED = "tell the owner: Cancelled"
    PASS_ACK = "tell the owner: Acked"
    PASS_REQUEST = "tell the owner: PeerRequest"
    PASS_RESPONSE = "tell the owner: PeerResponse"


Ls, Li, La = LegState, LegInput, LegAction
LegRow: TypeAlias = tuple[LegState, tuple[LegAction, ...]]
_ = ()
_RINGING = (Ls.CALLING, Ls.EARLY)
_ALL = tuple(LegState)

UAC_TABLE: dict[tuple[LegState, LegInput], LegRow] = {
    (Ls.RESOLVING, Li.RESOLVED): (Ls.CALLING, (La.USE_PEERS, La.SEND_INVITE)),
    (Ls.RESOLVING, Li.UNRESOLVABLE): (Ls.FAILED, (La.REPORT_FAILED,)),
    **{(Ls.RESOLVING, i): (Ls.CANCELLED, (La.REPORT_CANCELLED_487,))
       for i in (Li.CANCEL, Li.RELEASE)},
    **{(Ls.RESOLVING, i): (Ls.RESOLVING, _) for i in (Li.HANG_UP, Li.REFRESH_DUE)},
    **{(s, i): (s, _) for s in _OVER for i in (Li.RESOLVED, Li.UNRESOLVABLE, Li.NEXT_TARGET)},
    (Ls.CALLING, Li.NEXT_TARGET): (Ls.CALLING, (La.NEXT_PEER, La.SEND_INVITE)),
    (Ls.EARLY, Li.NEXT_TARGET): (Ls.FAILED, (La.REPORT_FAILED,)),
    (Ls.CANCELLING, Li.NEXT_TARGET): (Ls.CANCELLED, (La.REPORT_FAILED,)),
    (Ls.CALLING, Li.PROVISIONAL): (Ls.EARLY, (La.REPORT_PROGRESS,)),
    (Ls.EARLY, Li.PROVISIONAL): (Ls.EARLY, (La.REPORT_PROGRESS,)),
    **{(s, Li.SUCCESS): (Ls.CONFIRMED, (La.ACCEPT_ANSWER,)) for s in _RINGING},
    # §13.2.2.4: a 2xx is ACKed even when its dialog is unusable; then it is hung up
    **{(s, Li.BAD_ANSWER): (Ls.FAILED, (La.REFUSE_ANSWER, La.REPORT_BAD_ANSWER))
       for s in _RINGING},
    **{(s, Li.CHALLENGE): (Ls.CALLING, (La.RETRY_AUTHORIZED,)) for s in _RINGING},
    **{(s, Li.FAILURE): (Ls.FAILED, (La.REPORT_FAILED,)) for s in _RINGING},
    **{(s, Li.TIMEOUT): (Ls.FAILED, (La.REPORT_FAILED,)) for s in _RINGING},
    **{(s, Li.CANCEL): (Ls.CANCELLING, (La.SEND_CANCEL,)) for s in _RINGING},
    **{(s, Li.RELEASE): (Ls.CANCELLING, (La.SEND_CANCEL,)) for s in _RINGING},
    # our CANCEL is out: whatever comes back ends the leg as cancelled
    (Ls.CANCELLING, Li.PROVISIONAL): (Ls.CANCELLING, _),
    (Ls.CANCELLING, Li.SUCCESS): (Ls.CANCELLED, (La.REFUSE_ANSWER, La.REPORT_CANCELLED_487)),
    (Ls.CANCELLING, Li.BAD_ANSWER): (Ls.CANCELLED,
                                     (La.REFUSE_ANSWER, La.REPORT_CANCELLED_487)),
    (Ls.CANCELLING, Li.CHALLENGE): (Ls.CANCELLED, (La.REPORT_FAILED,)),
    (Ls.CANCELLING, Li.FAILURE): (Ls.CANCELLED, (La.REPORT_FAILED,)),
    (Ls.CANCELLING, Li.TIMEOUT): (Ls.CANCELLED, (La.REPORT_FAILED,)),
    # the dialog is up
    (Ls.CONFIRMED, Li.HANG_UP): (Ls.ENDED, (La.SEND_BYE,)),
    (Ls.CONFIRMED, Li.RELEASE): (Ls.ENDED, (La.SEND_BYE,)),
    (Ls.CONFIRMED, Li.REMOTE_BYE): (Ls.ENDED, (La.ANSWER_BYE, La.REPORT_HUNG_UP)),
    (Ls.CONFIRMED, Li.SESSION_GONE): (Ls.ENDED, (La.SEND_BYE, La.REPORT_HUNG_UP)),
    (Ls.CONFIRMED, Li.REFRESH_DUE): (Ls.CONFIRMED, (La.SEND_REFRESH,)),
    (Ls.CONFIRMED, Li.ACK): (Ls.CONFIRMED, (La.PASS_ACK,)),
    (Ls.CONFIRMED, Li.REQUEST): (Ls.CONFIRMED, (La.PASS_REQUEST,)),
    # BYE'd, but a subscription in the dialog lives on (hold_dialog): its NOTIFYs (RFC 5057)
    (Ls.ENDED, Li.REQUEST): (Ls.ENDED, (La.PASS_REQUEST,)),
    (Ls.ENDED, Li.REMOTE_BYE): (Ls.ENDED, (La.ANSWER_BYE,)),
    # in any state
    **{(s, Li.RESPONSE): (s, (La.PASS_RESPONSE,)) for s in _ALL},
    **{(s, Li.REMOTE_CANCEL): (s, (La.ANSWER_487,)) for s in _ALL},  # of a peer's re-INVITE
    **{(s, Li.ACK_TIMEOUT): (s, _) for s in _ALL},  # our 2xx to its re-INVITE: its loss
    # a 2xx after the leg is settled (another fork's dialog, or too late): ACK and BYE it
    **{(s, i): (s, (La.REFUSE_ANSWER,)) for s in (Ls.CONFIRMED, *_OVER)
       for i in (Li.SUCCESS, Li.BAD_ANSWER)},
    # late or moot: nothing to do
    **{(s, i): (s, _) for s in (Ls.CONFIRMED, *_OVER)
       for i in (Li.PROVISIONAL, Li.FAILURE, Li.TIMEOUT, Li.CHALLENGE, Li.CANCEL)},
    **{(s, i): (s, _) for s in (Ls.CANCELLING, *_OVER)
       for i in (Li.CANCEL, Li.RELEASE, Li.HANG_UP, Li.REFRESH_DUE, Li.SESSION_GONE)},
    **{(s, i): (s, _) for s in _RINGING for i in (Li.HANG_UP, Li.REFRESH_DUE)},
}

UAS_TABLE: dict[tuple[LegState, LegInput], LegRow] = {
    **{(s, Li.PROGRESS): (Ls.EARLY, (La.SEND_PROVISIONAL,)) for s in _RINGING},
    **{(s, Li.ANSWER): (Ls.CONFIRMED, (La.SEND_2XX,)) for s in _RINGING},
    **{(s, Li.REJECT): (Ls.FAILED, (La.SEND_FINAL,)) for s in _RINGING},
    **{(s, Li.RELEASE): (Ls.FAILED, (La.SEND_FINAL,)) for s in _RINGING},
    **{(s, Li.REMOTE_CANCEL): (Ls.CANCELLED, (La.ANSWER_487, La.REPORT_CANCELLED))
       for s in _RINGING},
    (Ls.CONFIRMED, Li.HANG_UP): (Ls.ENDED, (La.SEND_BYE,)),
    (Ls.CONFIRMED, Li.RELEASE): (Ls.ENDED, (La.SEND_BYE,)),
    (Ls.CONFIRMED, Li.REMOTE_BYE): (Ls.ENDED, (La.ANSWER_BYE, La.REPORT_HUNG_UP)),
    (Ls.CONFIRMED, Li.ACK_TIMEOUT): (Ls.ENDED, (La.SEND_BYE, La.REPORT_HUNG_UP)),
    (Ls.CONFIRMED, Li.ACK): (Ls.CONFIRMED, (La.PASS_ACK,)),
    (Ls.CONFIRMED, Li.REQUEST): (Ls.CONFIRMED, (La.PASS_REQUEST,)),
    (Ls.CONFIRMED, Li.REMOTE_CANCEL): (Ls.CONFIRMED, _),  # of a re-INVITE: its answer comes
    **{(s, Li.RESPONSE): (s, (La.PASS_RESPONSE,)) for s in _ALL},
    # late or moot: nothing to do
    **{(s, i): (s, _) for s in (Ls.CONFIRMED, *_OVER)
       for i in (Li.PROGRESS, Li.ANSWER, Li.REJECT)},
    **{(s, i): (s, _) for s in _OVER
       for i in (Li.RELEASE, Li.HANG_UP, Li.REMOTE_CANCEL, Li.ACK, Li.ACK_TIMEOUT)},
    **{(s, Li.HANG_UP): (s, _) for s in _RINGING},
    **{(s, Li.ACK_TIMEOUT): (s, _) for s in _RINGING},
}


class IllegalLegInput(RuntimeError):
    pass


# ---------------------------------------------------------------------------- the legs


@dataclass(frozen=True, slots=True)
class Reply:
    """What the owner asks a UAS leg to send."""

    status: int
    reason: str | None = None
    body: bytes = b""
    content_type: str | None = None


P = TypeVar("P")
#: an executor runs the actions that need an input's payload; False: not one of those
Executor = Callable[[LegAction, P, float], bool]


class _Leg:
    """What both kinds of leg share: the table runner, in-dialog requests, offerless
    re-INVITE ACKs.

    An input comes with its payload (the response, request or reply behind it) and the
    executor for that kind of payload: the table says which actions run, the executor runs
    those that need the payload, :meth:`_plain` the rest. An action the table names for an
    input whose executor cannot run it is a bug, like a missing row.
    """

    table: dict[tuple[LegState, LegInput], LegRow]
    ua: UserAgent
    #: the owner, held weakly: a call and its legs point at each other, and as strong
    #: references that made every ended call a reference cycle (~200 objects) that only the
    #: cyclic garbage collector could free, in pauses of seconds under load. The owner's
    #: registry (the call service, the inbound router, the bridges set) holds it while it
    #: runs; its legs, dialogs and transactions then go by reference counting
    _owner_ref: weakref.ref[LegListener]
    state: LegState
    dialog: Dialog | None
    label: str
    offer_txn: ClientTransaction | None = None  # an offerless re-INVITE's 2xx, ACK pending
    #: our re-INVITEs in this dialog: abandoned when we BYE it (see _send_bye)
    _reinvites: tuple[ClientTransaction, ...] = ()
    _held = False  # another usage (a subscription) keeps the dialog after the INVITE ends

    @property
    def contact(self) -> str:
        """Our Contact towards this leg's peer."""
        raise NotImplementedError

    @property
    def owner(self) -> LegListener:
        owner = self._owner_ref()
        return GONE if owner is None else owner

    @owner.setter
    def owner(self, owner: LegListener) -> None:
        self._owner_ref = weakref.ref(owner)

    def hand_to(self, owner: LegListener) -> None:
        """A new owner takes the leg over (the flow that continues the call)."""
        self.owner = owner

    # ------------------------------------------------------------ the table runner

    def _fire(self, inp: LegInput, now: float, payload: P, execute: Executor[P]) -> None:
        row = self.table.get((self.state, inp))
        if row is None:
            self._illegal(f"{inp.name} in {self.state.name}", now)
            return
        previous, (self.state, actions) = self.state, row
        try:
            for action in actions:
                if not execute(action, payload, now) and not self._plain(action, now):
                    self.state = previous
                    self._illegal(f"{action.name} for {inp.name}", now)
                    return
        except Exception:
            log.exception("%r: %s failed", self, inp.name)
            # the row's state was not reached: release from the state the leg was in (what
            # was sent meanwhile, a 2xx say, is read from the dialog and transactions)
            self.state = previous
            self._illegal(f"{inp.name} (an action raised)", now)

    def _fire_plain(self, inp: LegInput, now: float) -> None:
        self._fire(inp, now, None, _nothing)

    def _illegal(self, what: str, now: float) -> None:
        """A bug: log one line, release the leg as best we can and tell the owner, whose
        call then ends as failed."""
        log.error("%r cannot take %s: releasing it", self, what)
        if self.state.over:
            return  # nothing left to release; the owner was told when it ended
        up = self.dialog is not None
        self.state = LegState.ENDED if up else LegState.FAILED
        for release in (self._send_bye, self._abort):  # BYE a dialog; CANCEL / 500 the rest
            try:
                release(now)
            except Exception:
                log.exception("%r: could not release it", self)
        self.owner.leg_event(Broken(self._me(), f"internal error: {what}"), now)

    def _abort(self, now: float) -> None:
        """Give up an INVITE that is still unanswered (ours: CANCEL; the caller's: 500);
        nothing when it is answered."""
        raise NotImplementedError

    def _me(self) -> UacLeg | UasLeg:
        raise NotImplementedError

    def _plain(self, action: LegAction, now: float) -> bool:
        """Actions that need no payload."""
        match action:
            case LegAction.SEND_BYE:
                self._send_bye(now)
            case _:
                return False
        return True

    # ------------------------------------------------------------ SIP events in

    def transaction_event(self, event: OwnerEvent, now: float) -> None:
        """The UA's events about our transactions (the leg is their owner)."""
        match event:
            case CancelReceived():
                self._fire(LegInput.REMOTE_CANCEL, now, event, self._with_cancel)
            case AckTimeout():
                self._fire(LegInput.ACK_TIMEOUT, now, "no ACK", self._with_detail)
            case _:
                self._client_event(event, now)

    def _client_event(self, event: ResponseReceived | TransactionTimeout | TransportError,
                      now: float) -> None:
        """A response or timeout of an in-dialog request of ours (UAC legs add their
        INVITE)."""
        self._dialog_response(event, now)

    def dialog_event(self, event: DialogEvent, now: float) -> None:
        """A request inside our dialog."""
        match event:
            case DialogAck():
                self._fire(LegInput.ACK, now, event, self._with_ack)
            case DialogRequest(request=request) if request.method == "BYE":
                self._fire(LegInput.REMOTE_BYE, now, event, self._with_request)
            case DialogRequest():
                self._fire(LegInput.REQUEST, now, event, self._with_request)

    def _dialog_response(self, event: ResponseReceived | TransactionTimeout | TransportError,
                         now: float) -> None:
        """A response to an in-dialog request we sent; ACKs a re-INVITE's 2xx (§13.2.2.4).
        An offerless re-INVITE's 2xx carries the offer: its ACK must carry the answer, so it
        waits for :meth:`ack_offer` (the relay brings the answer from the other side)."""
        txn = event.txn
        if not isinstance(txn, ClientTransaction) or txn.method in ("BYE", "CANCEL"):
            return
        response = event.response if isinstance(event, ResponseReceived) \
            else make_response(txn.request, _status_of(event))
        dialog = self.dialog
        if dialog is not None and txn.method in ("INVITE", "UPDATE") \
                and 200 <= response.status < 300:
            dialog.refresh_from_response(response)  # §12.2.1.2 target refresh
            if txn.method == "INVITE" and txn.ack_2xx is None:
                if response.body and not txn.request.body:
                    self.offer_txn = txn
                else:
                    ack = dialog.create_ack(cseq(txn.request).number)
                    self.ua.endpoint.send_ack(txn, ack, dialog.peer)
        self._fire(LegInput.RESPONSE, now, ResponseReceived(response, txn), self._with_result)

    # ------------------------------------------------------------ executors (both kinds)

    def _with_request(self, action: LegAction, event: DialogRequest, now: float) -> bool:
        match action:
            case LegAction.ANSWER_BYE:
                self.ua.endpoint.reply(event.txn, 200, now)
                self._stop_timers()
                self._drop_dialog(event.dialog)
            case LegAction.REPORT_HUNG_UP:
                self.owner.leg_event(HungUp(self._me(), "BYE"), now)
            case LegAction.PASS_REQUEST:
                self.owner.leg_event(PeerRequest(self._me(), event.request, event.txn), now)
            case _:
                return False
        return True

    def _with_ack(self, action: LegAction, event: DialogAck, now: float) -> bool:
        if action is not LegAction.PASS_ACK:
            return False
        self.owner.leg_event(Acked(self._me(), event.ack), now)
        return True

    def _with_result(self, action: LegAction, event: ResponseReceived, now: float) -> bool:
        if action is not LegAction.PASS_RESPONSE:
            return False
        self.owner.leg_event(PeerResponse(self._me(), event.response, event.txn), now)
        return True

    def _with_detail(self, action: LegAction, detail: str, now: float) -> bool:
        if action is not LegAction.REPORT_HUNG_UP:
            return False
        self.owner.leg_event(HungUp(self._me(), detail), now)
        return True

    def _with_cancel(self, action: LegAction, event: CancelReceived, now: float) -> bool:
        raise NotImplementedError

    # ------------------------------------------------------------ commands (both kinds)

    def release(self, now: float) -> None:
        """End the leg whatever its state: CANCEL, reject (480) or BYE."""
        raise NotImplementedError

    def hang_up(self, now: float) -> None:
        """BYE, if the dialog is up."""
        self._fire_plain(LegInput.HANG_UP, now)

    def request(self, method: str, now: float, *, body: bytes = b"",
                content_type: str | None = None,
                extra: list[tuple[str, str]] | None = None) -> ClientTransaction | None:
        """Send an in-dialog request; None when there is no confirmed dialog."""
        if self.dialog is None or self.state is not LegState.CONFIRMED:
            return None
        request = self.dialog.create_request(method, body=body, content_type=content_type,
                                             extra=extra)
        txn = self.ua.send_in_dialog(self.dialog, request, self, now)
        if method == "INVITE":
            self._reinvites = (*self._reinvites, txn)
        return txn

    def ack_offer(self, body: bytes, content_type: str | None) -> None:
        """Send the ACK (with the SDP answer) for the 2xx of an offerless re-INVITE."""
        txn, self.offer_txn = self.offer_txn, None
        if txn is None or self.dialog is None:
            return
        ack = self.dialog.create_ack(cseq(txn.request).number, body=body,
                                     content_type=content_type if body else None)
        self.ua.endpoint.send_ack(txn, ack, self.dialog.peer)

    # ------------------------------------------------------------ shared actions

    def _send_bye(self, now: float) -> None:
        self._stop_timers()
        txns = self.ua.endpoint.txns
        for txn in self._reinvites:  # the dialog ends: no final response will matter now
            txns.abandon(txn)
        self._reinvites = ()
        if self.dialog is not None:
            self.ua.send_in_dialog(self.dialog, self.dialog.create_request("BYE"), self, now)
            self._drop_dialog(self.dialog)

    def _drop_dialog(self, dialog: Dialog) -> None:
        """The INVITE usage is over; the dialog goes too unless another usage holds it."""
        if not self._held:
            self.ua.drop_dialog(dialog)

    def hold_dialog(self) -> None:
        """A subscription lives in this dialog (a REFER's): after a BYE its NOTIFYs still
        belong here (RFC 5057 §5). :meth:`forget_dialog` ends that."""
        self._held = True

    def forget_dialog(self) -> None:
        self._held = False
        if self.dialog is not None and self.state.over:
            self.ua.drop_dialog(self.dialog)

    def _stop_timers(self) -> None:
        """Timers a leg may own (UacLeg: the RFC 4028 refresh)."""


def _nothing(action: LegAction, payload: None, now: float) -> bool:
    return False


def _status_of(event: ResponseReceived | TransactionTimeout | TransportError) -> int:
    """The response's status; §8.1.3.1: no answer counts as 408, no transport as 503."""
    if isinstance(event, ResponseReceived):
        return event.response.status
    return 503 if isinstance(event, TransportError) else 408


class UacLeg(_Leg):
    """An INVITE sent by sipdial."""

    table = UAC_TABLE

    def __init__(self, ua: UserAgent, owner: LegListener, *, uri: URI, peer: Peer | None,
                 from_party: NameAddr, to_party: NameAddr, body: bytes = b"",
                 content_type: str | None = None,
                 extra: list[tuple[str, str]] | None = None, label: str = "",
                 credentials: tuple[str, str] | None = None,
                 resolver: Resolver | None = None,
                 route: Sequence[NameAddr] = ()) -> None:
        self.ua = ua
        self.owner = owner
        self.uri = uri
        #: the preloaded route set (RFC 3327 Path of the device, an outbound proxy): the
        #: INVITE carries it as Route headers and goes to its first hop (§12.2.1.1 rules,
        #: strict routers included); ``peer``, when given, is that first hop's address
        self.route = tuple(route)
        self._routed = route_request(uri, self.route)
        self._peer = peer  # None until resolved (a route's or URI's host)
        self._alternates: list[Peer] = []  # further addresses to try (RFC 3263 §4.3)
        self.resolver = resolver
        self.label = label
        self.state = LegState.CALLING
        self.call_id = ua.new_call_id()
        self.from_party = NameAddr(from_party.uri, from_party.display_name,
                                   {**from_party.params, "tag": ua.new_tag()})
        self.to_party = to_party
        self.body = body
        self.content_type = content_type
        self.extra = extra or []
        self.dialog: Dialog | None = None
        self.invite_txn: ClientTransaction | None = None
        self.final_status: int | None = None
        self.answer: Response | None = None
        self.credentials = credentials  # (username, password) for an upstream's 401/407
        self._refresh: TimerHandle | None = None  # RFC 4028, when we are the refresher
        self._refresh_interval: int | None = None
        self._refresh_txn: ClientTransaction | None = None
        self._cseq = 1
        self._authorization: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"<UacLeg {self.label} {self.uri} {self.state.value}>"

    @property
    def peer(self) -> Peer:
        """Where the INVITE went (known once resolved)."""
        if self._peer is None:
            raise IllegalLegInput(f"{self!r} has no address yet")
        return self._peer

    @property
    def contact(self) -> str:
        return self.ua.endpoint.contact(self.peer, secure=_is_sips(self.uri))

    @property
    def cancelled(self) -> bool:
        """sipdial CANCELled this leg (it does not count as the callee's answer)."""
        return self.state in (LegState.CANCELLING, LegState.CANCELLED)

    def _me(self) -> UacLeg:
        return self

    # ------------------------------------------------------------ commands

    def start(self, now: float) -> None:
        """Send the INVITE; first resolve the destination's host if it is a name."""
        if self._peer is not None:
            self._send_invite(now)
            return
        self.state = LegState.RESOLVING
        uri = self._routed.next_hop  # the first route's host, else the URI's
        if self.resolver is None or not isinstance(uri, SipURI):
            self._resolved(ResolveError(str(uri), "no resolver for this URI"), now)
            return
        self.resolver.resolve(uri, "udp", self._resolved)

    def _resolved(self, result: list[Peer] | ResolveError, now: float) -> None:
        if isinstance(result, ResolveError):
            log.info("%r: %s", self, result.message)
            self._fire(LegInput.UNRESOLVABLE, now, result, self._with_resolution)
        else:
            self._fire(LegInput.RESOLVED, now, result, self._with_resolution)

    def _send_invite(self, now: float) -> None:
        headers = Headers()
        for route in self._routed.routes:
            headers.add("Route", str(route))
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.from_party))
        headers.add("To", str(self.to_party))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self._cseq} INVITE")
        if self._authorization is not None:
            headers.add(*self._authorization)
        headers.add("Contact", self.contact)
        headers.add("Allow", LEG_ALLOW)
        for name, value in self.extra:
            headers.add(name, value)
        if self.content_type is not None:
            headers.add("Content-Type", self.content_type)
        request = Request("INVITE", self._routed.request_uri, headers, self.body)
        self.invite_txn = self.ua.send(request, self.peer, self, now)

    def _with_resolution(self, action: LegAction, result: list[Peer] | ResolveError,
                         now: float) -> bool:
        match action:
            case LegAction.USE_PEERS if not isinstance(result, ResolveError):
                self._peer, *self._alternates = result
            case LegAction.REPORT_FAILED if isinstance(result, ResolveError):
                self.final_status = 503
                self.owner.leg_event(Failed(self, 503, None, result.message), now)
            case _:
                return False
        return True

    def cancel(self, now: float, reason: str | None = None) -> None:
        """CANCEL while ringing; a 2xx that crosses the CANCEL is ACKed and BYEd.
        ``reason`` is an RFC 3326 Reason header value for the CANCEL."""
        self._fire(LegInput.CANCEL, now, reason, self._with_reason)

    def release(self, now: float) -> None:
        self._fire(LegInput.RELEASE, now, None, self._with_reason)

    # ------------------------------------------------------------ SIP events

    def _client_event(self, event: ResponseReceived | TransactionTimeout | TransportError,
                      now: float) -> None:
        txn = event.txn
        status = _status_of(event)
        if txn is not self.invite_txn:
            if txn is self._refresh_txn:
                if status >= 200:
                    self._refresh_txn = None
                    if status in (408, 481):  # RFC 4028 §10: the session is gone
                        self._fire(LegInput.SESSION_GONE, now, "session expired",
                                   self._with_detail)
                return
            self._dialog_response(event, now)
            return
        if not isinstance(event, ResponseReceived):
            self._fire(LegInput.NEXT_TARGET if self._alternates else LegInput.TIMEOUT, now,
                       status, self._with_status)
            return
        response = event.response
        if status < 200:
            if status > 100:
                self._fire(LegInput.PROVISIONAL, now, response, self._with_response)
        elif status < 300:
            try:
                check_dialog_headers(response)
            except ParseError as exc:
                log.warning("%r: a %d whose dialog cannot be made (%s): ACK and BYE it",
                            self, status, exc)
                self._fire(LegInput.BAD_ANSWER, now, response, self._with_response)
                return
            self._fire(LegInput.SUCCESS, now, response, self._with_response)
        elif status in (401, 407) and self._may_answer_challenge():
            self._fire(LegInput.CHALLENGE, now, response, self._with_response)
        elif status == 503 and self._alternates:
            self._fire(LegInput.NEXT_TARGET, now, status, self._with_status)
        else:
            self._fire(LegInput.FAILURE, now, response, self._with_response)

    def _may_answer_challenge(self) -> bool:
        return self.credentials is not None and self._authorization is None

    # ------------------------------------------------------------ executors

    def _with_response(self, action: LegAction, response: Response, now: float) -> bool:
        """The final or provisional response to our INVITE."""
        match action:
            case LegAction.REPORT_PROGRESS:
                self.owner.leg_event(Progress(self, response), now)
            case LegAction.ACCEPT_ANSWER:
                self._accept(response, now)
            case LegAction.REFUSE_ANSWER:
                if self.invite_txn is None:
                    raise IllegalLegInput("a 2xx without our INVITE")
                self._refuse(response, self.invite_txn, now)
            case LegAction.RETRY_AUTHORIZED:
                if not self._retry_with_credentials(response, now):
                    self.state = LegState.FAILED
                    self._report_failed(response.status, response, now)
            case LegAction.REPORT_FAILED:
                self._report_failed(response.status, response, now)
            case LegAction.REPORT_BAD_ANSWER:
                self.final_status = 502
                self.owner.leg_event(Failed(self, 502, None, "unusable 2xx from the target "
                                            "(bad Contact or Record-Route)"), now)
            case _:
                return False
        return True

    def _with_status(self, action: LegAction, status: int, now: float) -> bool:
        """No response to our INVITE at all (408) or no way to send it (503)."""
        if action is not LegAction.REPORT_FAILED:
            return False
        self._report_failed(status, None, now)
        return True

    def _with_reason(self, action: LegAction, reason: str | None, now: float) -> bool:
        if action is not LegAction.SEND_CANCEL:
            return False
        if self.invite_txn is not None:
            self.ua.endpoint.cancel(self.invite_txn, now, reason)
        return True

    def _with_cancel(self, action: LegAction, event: CancelReceived, now: float) -> bool:
        if action is not LegAction.ANSWER_487:
            return False
        if not event.invite_txn.answered:  # the peer CANCELled its re-INVITE
            self.ua.endpoint.reply(event.invite_txn, 487, now)
        return True

    def _plain(self, action: LegAction, now: float) -> bool:
        match action:
            case LegAction.SEND_INVITE:
                try:
                    self._send_invite(now)
                except (LookupError, ValueError) as exc:  # e.g. no listener for its transport
                    log.warning("%r: cannot send the INVITE: %s", self, exc)
                    # a transport error: the next address if there is one (RFC 3263 §4.3)
                    self._fire(LegInput.NEXT_TARGET if self._alternates else LegInput.TIMEOUT,
                               now, 503, self._with_status)
            case LegAction.NEXT_PEER:
                self._peer = self._alternates.pop(0)
                self._cseq += 1
                self._authorization = None  # the next server has nonces of its own
            case LegAction.REPORT_CANCELLED_487:
                self._report_failed(487, None, now)
            case LegAction.SEND_REFRESH:
                self._send_refresh(now)
            case _:
                return super()._plain(action, now)
        return True

    def _report_failed(self, status: int, response: Response | None, now: float) -> None:
        self.final_status = status
        self.owner.leg_event(Failed(self, status, response), now)

    def _abort(self, now: float) -> None:
        txn = self.invite_txn
        if self.dialog is not None or txn is None:
            return  # up (BYE'd) or never sent
        self.final_status = 500
        if self.answer is not None and txn.ack_2xx is None:
            self._refuse(self.answer, txn, now)  # a 2xx came: ACK and BYE it
        else:
            self.ua.endpoint.cancel(txn, now, None)

    def _accept(self, response: Response, now: float) -> None:
        txn = self.invite_txn
        if txn is None:
            raise IllegalLegInput("a 2xx without our INVITE")
        self.answer = response  # first: if what follows raises, _abort ACKs and BYEs it
        dialog = Dialog.from_uac(txn.request, response, self.peer,
                                 self.contact)
        self.dialog = dialog
        self.final_status = response.status
        self.ua.add_dialog(dialog, self)
        if response.body and not txn.request.body:
            # our INVITE had no offer, so the 2xx carries it: the ACK must carry the answer,
            # which the owner brings (from the other side) through ack_offer
            self.offer_txn = txn
        else:
            # to the dialog's first hop (its route set's first route), not where the INVITE
            # went: a proxy that Record-Routes sees the ACK (§12.2.1.1, §13.2.2.4)
            self.ua.endpoint.send_ack(txn, dialog.create_ack(self._cseq), dialog.peer)
        self._session_timer(response, now)
        self.owner.leg_event(Answered(self, response), now)
        if self.offer_txn is None and self.answer is response:
            # ACKed and made a dialog: from now on only its SDP is read (re-offers, a retry
            # after 491). A held call kept two parsed 2xx (~5 KB each) for nothing else
            self.answer = _sdp_only(response)

    def _refuse(self, response: Response, txn: ClientTransaction, now: float) -> None:
        """A 2xx we do not want: a second dialog (forked downstream), one crossing our
        CANCEL, or one to an INVITE we replaced. ACK it (re-sent for its retransmissions
        only if it is our first dialog's) and hang it up."""
        dialog = Dialog.from_uac(txn.request, response, self.peer,
                                 self.contact, lenient=True)
        first = self.dialog is None and txn is self.invite_txn
        self.ua.endpoint.send_ack(txn, dialog.create_ack(cseq(txn.request).number),
                                  dialog.peer, remember=first)
        self.ua.send_in_dialog(dialog, dialog.create_request("BYE"), self, now)

    def _retry_with_credentials(self, response: Response, now: float) -> bool:
        """RFC 3261 §22.2: answer an upstream's challenge once, same Call-ID and tags."""
        if self.credentials is None:
            return False
        header = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
        challenges: list[Challenge] = []
        for value in response.headers.get_all(header):
            try:
                challenges.extend(parse_challenges(value))
            except AuthError:
                continue
        challenge = preferred_challenge(challenges)
        if challenge is None:
            return False
        username, password = self.credentials
        creds = answer_challenge(challenge, username=username, password=password,
                                 method="INVITE", uri=str(self._routed.request_uri),
                                 cnonce=os.urandom(8).hex())
        name = "Proxy-Authorization" if response.status == 407 else "Authorization"
        self._authorization = (name, creds.to_header())
        self._cseq += 1
        self._send_invite(now)
        return True

    # ------------------------------------------------------------ RFC 4028 session timers

    def _session_timer(self, response: Response, now: float) -> None:
        """If the answerer made sipdial the refresher (``Session-Expires: N;refresher=uac``),
        refresh the session with UPDATE every N/2 s (§7.4, §10). Otherwise the peer refreshes
        and its UPDATE/re-INVITE is simply answered or relayed like any in-dialog request."""
        value = response.headers.get("Session-Expires")
        if not value:
            return
        interval_text, _, params = value.partition(";")
        try:
            interval = int(interval_text.strip())
        except ValueError:
            return
        if "refresher=uac" not in params.replace(" ", "").lower() or interval < 90:
            return
        interval = min(interval, 7200)  # a peer cannot pin the call in memory for days
        self._refresh_interval = interval
        self._refresh = self.ua.timers.schedule(now + interval / 2, self._refresh_due)

    def _refresh_due(self, now: float) -> None:
        self._refresh = None
        self._fire_plain(LegInput.REFRESH_DUE, now)

    def _stop_timers(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None

    def _send_refresh(self, now: float) -> None:
        if self._refresh_interval is None:
            return
        self._refresh_txn = self.request("UPDATE", now, extra=[
            ("Session-Expires", f"{self._refresh_interval};refresher=uac"),
            ("Supported", "timer")])
        self._refresh = self.ua.timers.schedule(now + self._refresh_interval / 2,
                                                self._refresh_due)


class UasLeg(_Leg):
    """An INVITE received by sipdial."""

    table = UAS_TABLE

    def __init__(self, ua: UserAgent, owner: LegListener, txn: ServerTransaction,
                 source: Peer, label: str = "") -> None:
        self.ua = ua
        self.owner = owner
        self.txn = txn
        self.source = source
        self.label = label
        self.invite = txn.request
        self.local_tag = ua.new_tag()
        self.state = LegState.CALLING
        self.dialog: Dialog | None = None
        txn.owner = self

    def __repr__(self) -> str:
        return f"<UasLeg {self.label} {self.state.value}>"

    @property
    def contact(self) -> str:
        return self.ua.endpoint.contact(self.source, secure=_is_sips(self.invite.uri))

    def _me(self) -> UasLeg:
        return self

    # ------------------------------------------------------------ commands

    def progress(self, status: int, now: float, *, body: bytes = b"",
                 content_type: str | None = None) -> None:
        self._fire(LegInput.PROGRESS, now, Reply(status, None, body, content_type),
                   self._with_reply)

    def answer(self, now: float, *, body: bytes = b"", content_type: str | None = None) -> None:
        self._fire(LegInput.ANSWER, now, Reply(200, None, body, content_type), self._with_reply)

    def reject(self, status: int, now: float, reason: str | None = None) -> None:
        self._fire(LegInput.REJECT, now, Reply(status, reason), self._with_reply)

    def release(self, now: float, status: int = 480) -> None:
        self._fire(LegInput.RELEASE, now, Reply(status), self._with_reply)

    # ------------------------------------------------------------ executors

    def _with_reply(self, action: LegAction, reply: Reply, now: float) -> bool:
        match action:
            case LegAction.SEND_PROVISIONAL | LegAction.SEND_FINAL:
                self._respond(reply, now)
            case LegAction.SEND_2XX:
                self.dialog = Dialog.from_uas(self.invite, self.local_tag, self.source,
                                              self.contact)
                self.ua.add_dialog(self.dialog, self)
                self._respond(reply, now)
            case _:
                return False
        return True

    def _with_cancel(self, action: LegAction, event: CancelReceived, now: float) -> bool:
        match action:
            case LegAction.ANSWER_487:
                if not self.txn.answered:
                    self._respond(Reply(487), now)
            case LegAction.REPORT_CANCELLED:
                self.owner.leg_event(Cancelled(self), now)
            case _:
                return False
        return True

    def _abort(self, now: float) -> None:
        if not self.txn.answered:
            self._respond(Reply(500), now)

    def _respond(self, reply: Reply, now: float) -> None:
        response = make_response(self.invite, reply.status, reply.reason, to_tag=self.local_tag)
        if 100 < reply.status < 300:
            # §12.1.1: a response that creates a dialog (18x with our tag, 2xx) carries the
            # INVITE's Record-Route, in order, so the caller's route set matches ours
            for value in self.invite.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", value)
            response.headers.add("Contact", self.contact)
        if reply.body:
            response.headers.add("Content-Type", reply.content_type or "application/sdp")
            response.body = reply.body
        self.ua.endpoint.respond(self.txn, response, now)


def _is_sips(uri: URI) -> bool:
    return isinstance(uri, SipURI) and uri.scheme == "sips"
