"""RFC 3261 §17 transactions (plus RFC 6026 "Accepted" states), sans-IO.

The :class:`TransactionLayer` is fed parsed messages with the time they arrived and returns
typed events for the transaction user (TU). Bytes to send are appended to ``outbox`` as
``(Peer, bytes)``; the transport adapter drains it. Timers A-M live in one shared
:class:`~sipdial.sip.timers.TimerHeap`, so the process needs one reactor timer in all.

Every transaction kind is one table ``(state, input) -> (next state, actions)``: a reader sees
each machine on one screen (STYLE.md §2, h2 ``_transitions``). An input that is missing from a
table is a bug and raises :class:`IllegalTransition`; inputs that the RFC says to discard are
listed explicitly with no actions.

Beyond §17 this layer also does the two jobs the RFC gives the "TU core" for 2xx responses to
INVITE, because they are pure retransmission bookkeeping:

* UAS: the 2xx is retransmitted (T1 doubling to T2) until the ACK arrives or 64*T1 passes
  (§13.3.1.4); the ACK is matched by Call-ID and CSeq number.
* UAC: the ACK the TU sent for a 2xx is re-sent for every retransmitted 2xx (§13.2.2.4).
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from sipdial.sip.headers import Headers, Via
from sipdial.sip.message import (
    Message,
    Request,
    Response,
    call_id,
    cseq,
    make_response,
    peek_top_via,
    to_tag,
)
from sipdial.sip.peer import Peer
from sipdial.sip.symbols import Symbol
from sipdial.sip.timers import TimerHandle, TimerHeap

MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 timer base values in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class IllegalTransition(RuntimeError):
    """An input arrived in a state whose table has no entry for it (a bug, not bad input)."""


class State(Symbol):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class In(Symbol):
    """Inputs to the transaction machines."""

    R1XX = "1xx"
    R2XX = "2xx"
    R2XX_FORK = "2xx with a new To tag"  # RFC 6026 §8.4: another dialog, for the TU
    R3XX_6XX = "3xx-6xx"
    REQUEST_RETRANSMIT = "request retransmission"
    ACK = "ack"
    TU_1XX = "tu 1xx"
    TU_2XX = "tu 2xx"
    TU_3XX_6XX = "tu 3xx-6xx"
    TIMER_A = "timer A"  # INVITE request retransmit
    TIMER_B = "timer B"  # INVITE transaction timeout
    TIMER_D = "timer D"  # wait for response retransmits
    TIMER_E = "timer E"  # non-INVITE request retransmit
    TIMER_F = "timer F"  # non-INVITE transaction timeout
    TIMER_G = "timer G"  # INVITE response retransmit
    TIMER_H = "timer H"  # wait for ACK
    TIMER_I = "timer I"  # wait for ACK retransmits
    TIMER_J = "timer J"  # wait for non-INVITE request retransmits
    TIMER_K = "timer K"  # wait for non-INVITE response retransmits
    TIMER_L = "timer L"  # RFC 6026: accepted INVITE server
    TIMER_M = "timer M"  # RFC 6026: accepted INVITE client
    #: §9.1: a CANCELled INVITE still without a final response 64*T1 after the CANCEL is
    #: given up (RFC 3261 gives a UAC no other timer in Proceeding)
    TIMER_CANCEL = "timer after CANCEL"
    TRANSPORT_ERROR = "transport error"


class Do(Symbol):
    """Side effects; run in the order listed."""

    PASS_TO_TU = "pass response/request to TU"
    SEND_ACK = "send ACK for non-2xx"
    RESEND_ACK_2XX = "re-send the TU's ACK for a 2xx"
    RETRANSMIT = "retransmit the request"
    RESEND_RESPONSE = "re-send last response"
    SEND_RESPONSE = "send the TU's response"
    BACKOFF_A = "restart timer A doubled"
    BACKOFF_E = "restart timer E min(2E, T2)"
    E_AT_T2 = "restart timer E at T2"
    BACKOFF_G = "restart timer G min(2G, T2)"
    STOP_RETRANSMIT = "stop request retransmission"
    START_D = "start timer D"
    START_G_H = "start timers G and H"
    START_I = "start timer I"
    START_J = "start timer J"
    START_K = "start timer K"
    START_L = "start timer L (+2xx retransmission)"
    START_M = "start timer M"
    TIMEOUT = "report timeout to TU"
    REPORT_TRANSPORT_ERROR = "report transport error to TU"


S = State
Table: TypeAlias = dict[tuple[State, In], tuple[State, tuple[Do, ...]]]
_ = ()  # no action: the RFC says to discard this input here

# RFC 3261 §17.1.1 Figure 5, with RFC 6026 §7.2 Accepted state.
INVITE_CLIENT: Table = {
    (S.CALLING, In.TIMER_A): (S.CALLING, (Do.RETRANSMIT, Do.BACKOFF_A)),
    (S.CALLING, In.TIMER_B): (S.TERMINATED, (Do.TIMEOUT,)),
    (S.CALLING, In.R1XX): (S.PROCEEDING, (Do.STOP_RETRANSMIT, Do.PASS_TO_TU)),
    (S.CALLING, In.R2XX): (S.ACCEPTED, (Do.STOP_RETRANSMIT, Do.PASS_TO_TU, Do.START_M)),
    (S.CALLING, In.R3XX_6XX): (S.COMPLETED,
                               (Do.STOP_RETRANSMIT, Do.PASS_TO_TU, Do.SEND_ACK, Do.START_D)),
    (S.CALLING, In.TRANSPORT_ERROR): (S.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (S.PROCEEDING, In.TIMER_A): (S.PROCEEDING, _),
    (S.PROCEEDING, In.TIMER_B): (S.PROCEEDING, _),
    (S.PROCEEDING, In.R1XX): (S.PROCEEDING, (Do.PASS_TO_TU,)),
    (S.PROCEEDING, In.R2XX): (S.ACCEPTED, (Do.PASS_TO_TU, Do.START_M)),
    (S.PROCEEDING, In.R3XX_6XX): (S.COMPLETED, (Do.PASS_TO_TU, Do.SEND_ACK, Do.START_D)),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (S.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (S.PROCEEDING, In.TIMER_CANCEL): (S.TERMINATED, (Do.TIMEOUT,)),
    (S.COMPLETED, In.R1XX): (S.COMPLETED, _),
    (S.COMPLETED, In.R2XX): (S.COMPLETED, _),
    (S.COMPLETED, In.R3XX_6XX): (S.COMPLETED, (Do.SEND_ACK,)),
    (S.COMPLETED, In.TIMER_CANCEL): (S.COMPLETED, _),
    (S.COMPLETED, In.R2XX_FORK): (S.COMPLETED, _),
    (S.COMPLETED, In.TIMER_A): (S.COMPLETED, _),
    (S.COMPLETED, In.TIMER_B): (S.COMPLETED, _),
    (S.COMPLETED, In.TIMER_D): (S.TERMINATED, _),
    (S.COMPLETED, In.TRANSPORT_ERROR): (S.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (S.ACCEPTED, In.R1XX): (S.ACCEPTED, _),
    (S.ACCEPTED, In.R2XX): (S.ACCEPTED, (Do.RESEND_ACK_2XX,)),
    (S.ACCEPTED, In.R2XX_FORK): (S.ACCEPTED, (Do.PASS_TO_TU,)),
    (S.ACCEPTED, In.R3XX_6XX): (S.ACCEPTED, _),
    (S.ACCEPTED, In.TIMER_A): (S.ACCEPTED, _),
    (S.ACCEPTED, In.TIMER_B): (S.ACCEPTED, _),
    (S.ACCEPTED, In.TIMER_M): (S.TERMINATED, _),
    (S.ACCEPTED, In.TIMER_CANCEL): (S.ACCEPTED, _),
    (S.ACCEPTED, In.TRANSPORT_ERROR): (S.ACCEPTED, _),
}

# RFC 3261 §17.1.2 Figure 6.
NON_INVITE_CLIENT: Table = {
    (S.TRYING, In.TIMER_E): (S.TRYING, (Do.RETRANSMIT, Do.BACKOFF_E)),
    (S.TRYING, In.TIMER_F): (S.TERMINATED, (Do.TIMEOUT,)),
    (S.TRYING, In.R1XX): (S.PROCEEDING, (Do.PASS_TO_TU,)),
    (S.TRYING, In.R2XX): (S.COMPLETED, (Do.STOP_RETRANSMIT, Do.PASS_TO_TU, Do.START_K)),
    (S.TRYING, In.R3XX_6XX): (S.COMPLETED, (Do.STOP_RETRANSMIT, Do.PASS_TO_TU, Do.START_K)),
    (S.TRYING, In.TRANSPORT_ERROR): (S.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (S.PROCEEDING, In.TIMER_E): (S.PROCEEDING, (Do.RETRANSMIT, Do.E_AT_T2)),
    (S.PROCEEDING, In.TIMER_F): (S.TERMINATED, (Do.TIMEOUT,)),
    (S.PROCEEDING, In.R1XX): (S.PROCEEDING, (Do.PASS_TO_TU,)),
    (S.PROCEEDING, In.R2XX): (S.COMPLETED, (Do.STOP_RETRANSMIT, Do.PASS_TO_TU, Do.START_K)),
    (S.PROCEEDING, In.R3XX_6XX): (S.COMPLETED, (Do.STOP_RETRANSMIT, Do.PASS_TO_TU, Do.START_K)),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (S.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, In.R1XX): (S.COMPLETED, _),
    (S.COMPLETED, In.R2XX): (S.COMPLETED, _),
    (S.COMPLETED, In.R3XX_6XX): (S.COMPLETED, _),
    (S.COMPLETED, In.TIMER_E): (S.COMPLETED, _),
    (S.COMPLETED, In.TIMER_F): (S.COMPLETED, _),
    (S.COMPLETED, In.TIMER_K): (S.TERMINATED, _),
    (S.COMPLETED, In.TRANSPORT_ERROR): (S.COMPLETED, _),
}

# RFC 3261 §17.2.1 Figure 7, with RFC 6026 §7.1 Accepted state.
INVITE_SERVER: Table = {
    (S.PROCEEDING, In.REQUEST_RETRANSMIT): (S.PROCEEDING, (Do.RESEND_RESPONSE,)),
    (S.PROCEEDING, In.TU_1XX): (S.PROCEEDING, (Do.SEND_RESPONSE,)),
    (S.PROCEEDING, In.TU_2XX): (S.ACCEPTED, (Do.SEND_RESPONSE, Do.START_L)),
    (S.PROCEEDING, In.TU_3XX_6XX): (S.COMPLETED, (Do.SEND_RESPONSE, Do.START_G_H)),
    (S.PROCEEDING, In.ACK): (S.PROCEEDING, _),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (S.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, In.REQUEST_RETRANSMIT): (S.COMPLETED, (Do.RESEND_RESPONSE,)),
    (S.COMPLETED, In.TIMER_G): (S.COMPLETED, (Do.RESEND_RESPONSE, Do.BACKOFF_G)),
    (S.COMPLETED, In.TIMER_H): (S.TERMINATED, (Do.TIMEOUT,)),
    (S.COMPLETED, In.ACK): (S.CONFIRMED, (Do.START_I,)),
    (S.COMPLETED, In.TRANSPORT_ERROR): (S.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (S.CONFIRMED, In.REQUEST_RETRANSMIT): (S.CONFIRMED, _),
    (S.CONFIRMED, In.ACK): (S.CONFIRMED, _),
    (S.CONFIRMED, In.TIMER_G): (S.CONFIRMED, _),
    (S.CONFIRMED, In.TIMER_H): (S.CONFIRMED, _),
    (S.CONFIRMED, In.TIMER_I): (S.TERMINATED, _),
    (S.CONFIRMED, In.TRANSPORT_ERROR): (S.CONFIRMED, _),
    # RFC 6026: retransmitted INVITEs are absorbed; the TU core re-sends the 2xx.
    (S.ACCEPTED, In.REQUEST_RETRANSMIT): (S.ACCEPTED, _),
    (S.ACCEPTED, In.TU_2XX): (S.ACCEPTED, (Do.SEND_RESPONSE,)),
    (S.ACCEPTED, In.TIMER_G): (S.ACCEPTED, (Do.RESEND_RESPONSE, Do.BACKOFF_G)),
    (S.ACCEPTED, In.ACK): (S.ACCEPTED, (Do.PASS_TO_TU,)),
    (S.ACCEPTED, In.TIMER_L): (S.TERMINATED, (Do.TIMEOUT,)),
    (S.ACCEPTED, In.TRANSPORT_ERROR): (S.ACCEPTED, _),
}

# RFC 3261 §17.2.2 Figure 8.
NON_INVITE_SERVER: Table = {
    (S.TRYING, In.REQUEST_RETRANSMIT): (S.TRYING, _),
    (S.TRYING, In.TU_1XX): (S.PROCEEDING, (Do.SEND_RESPONSE,)),
    (S.TRYING, In.TU_2XX): (S.COMPLETED, (Do.SEND_RESPONSE, Do.START_J)),
    (S.TRYING, In.TU_3XX_6XX): (S.COMPLETED, (Do.SEND_RESPONSE, Do.START_J)),
    (S.TRYING, In.TRANSPORT_ERROR): (S.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (S.PROCEEDING, In.REQUEST_RETRANSMIT): (S.PROCEEDING, (Do.RESEND_RESPONSE,)),
    (S.PROCEEDING, In.TU_1XX): (S.PROCEEDING, (Do.SEND_RESPONSE,)),
    (S.PROCEEDING, In.TU_2XX): (S.COMPLETED, (Do.SEND_RESPONSE, Do.START_J)),
    (S.PROCEEDING, In.TU_3XX_6XX): (S.COMPLETED, (Do.SEND_RESPONSE, Do.START_J)),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (S.TERMINATED, (Do.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, In.REQUEST_RETRANSMIT): (S.COMPLETED, (Do.RESEND_RESPONSE,)),
    (S.COMPLETED, In.TIMER_J): (S.TERMINATED, _),
    (S.COMPLETED, In.TRANSPORT_ERROR): (S.TERMINATED, _),
}


#: States in which a transaction only absorbs retransmissions and waits for a timer.
_LINGER = frozenset((S.COMPLETED, S.CONFIRMED, S.ACCEPTED))


def _classify_response(status: int) -> In:
    if status < 200:
        return In.R1XX
    if status < 300:
        return In.R2XX
    return In.R3XX_6XX


def _classify_tu_response(status: int) -> In:
    if status < 200:
        return In.TU_1XX
    if status < 300:
        return In.TU_2XX
    return In.TU_3XX_6XX


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU. ``txn`` is None for an ACK to a 2xx (no transaction)."""

    request: Request
    txn: ServerTransaction | None
    source: Peer


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL matched a pending INVITE (already answered 200); the TU should send 487."""

    invite_txn: ServerTransaction
    cancel: Request


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: Response
    txn: ClientTransaction


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B/F (client: no final response) or H/L (server: no ACK)."""

    txn: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class TransportError:
    txn: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """A 2xx to INVITE was never ACKed within 64*T1 (§13.3.1.4): the TU should send BYE."""

    txn: ServerTransaction


#: The events a transaction reports to its owner (:class:`TransactionOwner`).
OwnerEvent: TypeAlias = (
    ResponseReceived | TransactionTimeout | TransportError | CancelReceived | AckTimeout
)


class TransactionOwner(Protocol):
    """What a transaction belongs to (a call leg): the TU passes it every event about the
    transaction — its responses, its timeout or transport failure, a CANCEL of it, a 2xx
    that was never ACKed."""

    def transaction_event(self, event: OwnerEvent, now: float) -> None: ...


Event: TypeAlias = (
    RequestReceived
    | CancelReceived
    | ResponseReceived
    | TransactionTimeout
    | TransportError
    | AckTimeout
)


# --------------------------------------------------------------------------- transactions


class _Txn:
    __slots__ = ("_method", "_owner", "_owner_ref", "_request", "_timers", "key", "layer",
                 "peer", "state", "table")

    def __init__(self, layer: TransactionLayer, key: tuple[str, ...], peer: Peer,
                 state: State, table: Table, request: Request) -> None:
        self.layer = layer
        self._request: Request | None = request
        self._method = request.method
        self.key = key
        self.peer = peer
        self.state = state
        self.table = table
        self._timers: dict[In, TimerHandle] = {}
        self._owner: TransactionOwner | None = None
        self._owner_ref: weakref.ref[TransactionOwner] | None = None

    @property
    def reliable(self) -> bool:
        return self.peer.reliable

    @property
    def method(self) -> str:
        return self._method

    @property
    def request(self) -> Request:
        """The request. A transaction that lingers after its final response for
        retransmissions only (see :meth:`TransactionLayer._slim`) no longer holds it."""
        request = self._request
        if request is None:
            raise RuntimeError(f"{self!r} no longer holds its request")
        return request

    @property
    def owner(self) -> TransactionOwner | None:
        """For the TU: what this transaction belongs to. Held weakly once the transaction
        only lingers for retransmissions (then None when nothing else holds it)."""
        if self._owner_ref is not None:
            return self._owner_ref()
        return self._owner

    @owner.setter
    def owner(self, value: TransactionOwner | None) -> None:
        self._owner = value
        self._owner_ref = None

    def _weaken_owner(self) -> None:
        owner = self._owner
        if owner is not None:
            try:
                self._owner_ref = weakref.ref(owner)
            except TypeError:  # not weak-referenceable: keep it
                return
            self._owner = None

    def _start_timer(self, which: In, delay: float, now: float) -> None:
        old = self._timers.get(which)
        if old is not None:
            old.cancel()
        txn: ClientTransaction | ServerTransaction = self  # type: ignore[assignment]
        layer = self.layer

        def fire(t: float) -> None:
            layer._fire(txn, which, t)

        self._timers[which] = layer.timers.schedule(now + delay, fire)

    def _stop_timer(self, which: In) -> None:
        handle = self._timers.pop(which, None)
        if handle is not None:
            handle.cancel()

    def _stop_all_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


class ClientTransaction(_Txn):
    __slots__ = ("ack_2xx", "cancel_pending", "cancel_reason", "cancelled", "dialog_tag",
                 "interval", "request_bytes")

    def __init__(self, layer: TransactionLayer, key: tuple[str, ...], peer: Peer,
                 request: Request, invite: bool) -> None:
        super().__init__(layer, key, peer, S.CALLING if invite else S.TRYING,
                         INVITE_CLIENT if invite else NON_INVITE_CLIENT, request)
        self.request_bytes = request.to_bytes()
        self.interval = layer.config.t1
        self.ack_2xx: bytes | None = None
        self.dialog_tag: str | None = None  # To tag of the first 2xx
        self.cancel_pending = False
        self.cancel_reason: str | None = None
        self.cancelled = False

    @property
    def branch(self) -> str:
        return self.key[0]

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.method} {self.branch} {self.state.value}>"


class ServerTransaction(_Txn):
    __slots__ = ("ack_key", "interval", "last_response", "last_response_bytes", "last_status")

    def __init__(self, layer: TransactionLayer, key: tuple[str, ...], peer: Peer,
                 request: Request) -> None:
        invite = request.method == "INVITE"
        super().__init__(layer, key, peer, S.PROCEEDING if invite else S.TRYING,
                         INVITE_SERVER if invite else NON_INVITE_SERVER, request)
        self.interval = layer.config.t1
        self.last_response: Response | None = None  # dropped once lingering (bytes kept)
        self.last_response_bytes: bytes | None = None
        self.last_status: int | None = None
        # (Call-ID, CSeq number): matches the ACK for a 2xx (INVITE only)
        self.ack_key: tuple[str, int] | None = None
        if invite:
            self.ack_key = (call_id(request), cseq(request).number)

    @property
    def answered(self) -> bool:
        """A final response has been sent."""
        return self.last_status is not None and self.last_status >= 200

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.method} {self.key} {self.state.value}>"


# --------------------------------------------------------------------------- the layer


class TransactionLayer:
    """All client and server transactions of one SIP endpoint, keyed for O(1) matching."""

    def __init__(self, timers: TimerHeap, config: TimerConfig | None = None,
                 branch_prefix: str | None = None) -> None:
        self.timers = timers
        self.config = config or TimerConfig()
        self.outbox: list[tuple[Peer, bytes]] = []
        self.events: list[Event] = []
        self.client: dict[tuple[str, ...], ClientTransaction] = {}
        self.server: dict[tuple[str, ...], ServerTransaction] = {}
        # 2xx-to-INVITE server transactions waiting for their ACK, by (Call-ID, CSeq number)
        self._awaiting_ack: dict[tuple[str, int], ServerTransaction] = {}
        self._prefix = branch_prefix or os.urandom(6).hex()
        self._counter = itertools.count(1)
        #: messages sent again (requests re-sent by timers A/E, responses re-sent by timer G
        #: or for a retransmitted request), for /metrics
        self.retransmissions = 0
        # Transactions that entered a state where they only wait for retransmissions/timers:
        # slimmed (see _slim) at the second drain_events() after that, when the TU has
        # handled every event that was queued with the transition.
        self._linger_new: list[ClientTransaction | ServerTransaction] = []
        self._linger_ready: list[ClientTransaction | ServerTransaction] = []
        #: client transactions ended since the last drain / before it: the TU has seen their
        #: last event once the next drain comes, then their request is dropped
        self._ended_new: list[ClientTransaction] = []
        self._ended_ready: list[ClientTransaction] = []
        # New INVITE server transactions and when they arrived, handed to the TU: at the
        # second drain_events() after that (the TU has handled the request) those it has not
        # answered get their 100 Trying (see _send_trying).
        self._trying_new: list[tuple[ServerTransaction, float]] = []
        self._trying_ready: list[tuple[ServerTransaction, float]] = []
        self.on_terminated: Callable[[ClientTransaction | ServerTransaction], None] | None = None

    # ---------------------------------------------------------------- identifiers

    def new_branch(self) -> str:
        return f"{MAGIC_COOKIE}{self._prefix}{next(self._counter):x}"

    # ---------------------------------------------------------------- client side

    def send_request(self, request: Request, peer: Peer, now: float) -> ClientTransaction:
        """Start a client transaction. The request's top Via must carry a fresh branch
        (use :meth:`new_branch`); ACK is not sent through here (see :meth:`send_ack`)."""
        if request.method == "ACK":
            raise ValueError("ACK has no client transaction; use send_ack()")
        branch = peek_top_via(request).branch or ""
        key = (branch, request.method)
        txn = ClientTransaction(self, key, peer, request, request.method == "INVITE")
        self.client[key] = txn
        self.outbox.append((peer, txn.request_bytes))
        t1 = self.config.t1
        if txn.method == "INVITE":
            if not peer.reliable:
                txn._start_timer(In.TIMER_A, t1, now)
            txn._start_timer(In.TIMER_B, 64 * t1, now)
        else:
            if not peer.reliable:
                txn._start_timer(In.TIMER_E, t1, now)
            txn._start_timer(In.TIMER_F, 64 * t1, now)
        return txn

    def send_ack(self, invite_txn: ClientTransaction, ack: Request, peer: Peer) -> None:
        """Send the TU's ACK for a 2xx and remember it for 2xx retransmissions."""
        data = ack.to_bytes()
        invite_txn.ack_2xx = data
        self.outbox.append((peer, data))

    def send_stateless(self, message: Message, peer: Peer) -> None:
        self.outbox.append((peer, message.to_bytes()))

    def abandon(self, txn: ClientTransaction) -> None:
        """The TU gives up on an INVITE client transaction without a final response: its
        dialog was ended by BYE. RFC 3261 gives a UAC no timer in Proceeding, so one answered
        only 1xx would otherwise live until shutdown. Nothing more is sent; a late response
        is a stray (§17.1.3)."""
        if txn.state in (S.CALLING, S.PROCEEDING):
            txn.state = S.TERMINATED
            self._terminate(txn)

    def cancel(self, invite_txn: ClientTransaction, now: float,
               reason: str | None = None) -> ClientTransaction | None:
        """§9.1: CANCEL a pending INVITE. Sent once a provisional response has arrived;
        before that it is held and sent on the first 1xx. Returns the CANCEL transaction
        when sent now."""
        if invite_txn.method != "INVITE" or invite_txn.cancelled:
            return None
        if invite_txn.state is S.CALLING:
            invite_txn.cancel_pending = True
            invite_txn.cancel_reason = reason
            invite_txn.cancelled = True
            return None
        if invite_txn.state is not S.PROCEEDING:
            return None
        invite_txn.cancelled = True
        return self._send_cancel(invite_txn, now, reason)

    def _send_cancel(self, invite_txn: ClientTransaction, now: float,
                     reason: str | None = None) -> ClientTransaction:
        inv = invite_txn.request
        headers = Headers()
        headers.add("Via", inv.headers.get_all("Via")[0])
        for route in inv.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            value = inv.headers.get(name)
            if value is not None:
                headers.add(name, value)
        headers.add("CSeq", f"{cseq(inv).number} CANCEL")
        if reason:
            headers.add("Reason", reason)
        cancel = Request("CANCEL", inv.uri, headers)
        txn = self.send_request(cancel, invite_txn.peer, now)
        invite_txn._start_timer(In.TIMER_CANCEL, 64 * self.config.t1, now)
        txn.owner = invite_txn.owner
        return txn

    # ---------------------------------------------------------------- server side

    def respond_stateless(self, txn: ServerTransaction, response: Response) -> None:
        """Send a final response once and forget the transaction (RFC 3261 §8.2.7 style).

        For challenges to unauthenticated requests: over UDP a stateful 401/407 is
        retransmitted until ACKed, ~11 datagrams for one spoofed request (an amplifier).
        A real client that loses it retransmits its request and is challenged again."""
        txn.last_status = response.status
        self.outbox.append((txn.peer, response.to_bytes()))
        txn.state = S.TERMINATED
        self._terminate(txn)

    def respond(self, txn: ServerTransaction, response: Response, now: float) -> None:
        """Send the TU's response through its server transaction."""
        inp = _classify_tu_response(response.status)
        txn.last_response = response
        txn.last_status = response.status
        txn.last_response_bytes = response.to_bytes()
        self._apply(txn, inp, now, response)

    # ---------------------------------------------------------------- input

    def receive(self, message: Message, source: Peer, now: float) -> None:
        """Match a parsed message to its transaction; events go to ``self.events``."""
        if isinstance(message, Response):
            self._receive_response(message, now)
        else:
            self._receive_request(message, source, now)

    def _receive_response(self, response: Response, now: float) -> None:
        via = peek_top_via(response)
        key = (via.branch or "", cseq(response).method)
        txn = self.client.get(key)
        if txn is None:
            return  # stray response: §17.1.3 says discard (after the transport layer)
        inp = _classify_response(response.status)
        if inp is In.R2XX and txn.method == "INVITE":
            tag = to_tag(response)
            if txn.dialog_tag is None:
                txn.dialog_tag = tag
            elif tag != txn.dialog_tag:
                inp = In.R2XX_FORK
        if inp is In.R1XX and txn.cancel_pending and txn.state is S.CALLING:
            txn.cancel_pending = False
            self._apply(txn, inp, now, response)
            self._send_cancel(txn, now, txn.cancel_reason)
            return
        self._apply(txn, inp, now, response)

    def _server_key(self, request: Request, via: Via) -> tuple[str, ...]:
        method = "INVITE" if request.method == "ACK" else request.method
        branch = via.branch
        if branch and branch.startswith(MAGIC_COOKIE):
            port = via.port or 5060
            return (branch, f"{via.host}:{port}", method)
        # RFC 2543 peers: §17.2.3 fallback matching on the dialog-identifying fields.
        to_value = request.headers.get("To") or ""
        from_value = request.headers.get("From") or ""
        return ("2543", call_id(request), from_value, to_value if method != "INVITE" else "",
                str(cseq(request).number), str(via), method)

    def _receive_request(self, request: Request, source: Peer, now: float) -> None:
        via = peek_top_via(request)
        key = self._server_key(request, via)
        txn = self.server.get(key)
        if request.method == "ACK":
            if txn is not None and txn.state is not S.ACCEPTED:
                self._apply(txn, In.ACK, now, request)
                return
            # ACK for a 2xx: its own transaction-less request (§17.1.1.3); stop our 2xx
            # retransmissions and hand it to the TU.
            waiting = self._awaiting_ack.pop((call_id(request), cseq(request).number), None)
            if waiting is not None:
                waiting._stop_timer(In.TIMER_G)
            self.events.append(RequestReceived(request, None, source))
            return
        if txn is not None:
            self._apply(txn, In.REQUEST_RETRANSMIT, now, request)
            return
        if request.method == "CANCEL":
            self._receive_cancel(request, key, source, now)
            return
        txn = ServerTransaction(self, key, source, request)
        self.server[key] = txn
        self.events.append(RequestReceived(request, txn, source))
        if request.method == "INVITE":
            self._trying_new.append((txn, now))

    def _receive_cancel(self, cancel: Request, key: tuple[str, ...], source: Peer,
                        now: float) -> None:
        txn = ServerTransaction(self, key, source, cancel)
        self.server[key] = txn
        invite_key = (*key[:-1], "INVITE")
        invite = self.server.get(invite_key)
        if invite is None or invite.state is S.TERMINATED:
            # nothing to cancel: a retransmission gets the same 481, nothing lingers (§8.2.7)
            self.respond_stateless(txn, make_response(cancel, 481))
            return
        self.respond(txn, make_response(cancel, 200), now)
        if not invite.answered:
            self.events.append(CancelReceived(invite, cancel))

    def transport_error(self, peer: Peer, now: float) -> None:
        """The transport could not deliver to ``peer`` (ICMP / connection refused or lost)."""
        for txn in [t for t in self.client.values() if t.peer == peer]:
            self._apply(txn, In.TRANSPORT_ERROR, now, None)
        for stxn in [t for t in self.server.values() if t.peer == peer]:
            self._apply(stxn, In.TRANSPORT_ERROR, now, None)

    # ---------------------------------------------------------------- the machine

    def _fire(self, txn: ClientTransaction | ServerTransaction, which: In, now: float) -> None:
        txn._timers.pop(which, None)
        if which is In.TIMER_G and isinstance(txn, ServerTransaction) and txn.state is S.ACCEPTED:
            if txn.ack_key not in self._awaiting_ack:
                return  # ACK arrived meanwhile
        self._apply(txn, which, now, None)

    def _apply(self, txn: ClientTransaction | ServerTransaction, inp: In, now: float,
               message: Message | None) -> None:
        if txn.state is S.TERMINATED:
            return
        try:
            next_state, actions = txn.table[(txn.state, inp)]
        except KeyError:
            raise IllegalTransition(f"{txn!r}: no transition for {inp.value}") from None
        prev_state, txn.state = txn.state, next_state
        for action in actions:
            self._do(txn, action, now, message)
        if next_state is S.TERMINATED:
            self._terminate(txn)
        elif next_state is not prev_state and next_state in _LINGER:
            self._linger_new.append(txn)

    def _do(self, txn: ClientTransaction | ServerTransaction, action: Do, now: float,
            message: Message | None) -> None:
        cfg = self.config
        match action:
            case Do.PASS_TO_TU:
                if isinstance(txn, ClientTransaction):
                    assert isinstance(message, Response)
                    self.events.append(ResponseReceived(message, txn))
                else:
                    assert isinstance(message, Request)
                    self.events.append(RequestReceived(message, None, txn.peer))
            case Do.RETRANSMIT:
                assert isinstance(txn, ClientTransaction)
                self.retransmissions += 1
                self.outbox.append((txn.peer, txn.request_bytes))
            case Do.BACKOFF_A:
                assert isinstance(txn, ClientTransaction)
                txn.interval *= 2
                txn._start_timer(In.TIMER_A, txn.interval, now)
            case Do.BACKOFF_E:
                assert isinstance(txn, ClientTransaction)
                txn.interval = min(2 * txn.interval, cfg.t2)
                txn._start_timer(In.TIMER_E, txn.interval, now)
            case Do.E_AT_T2:
                txn._start_timer(In.TIMER_E, cfg.t2, now)
            case Do.STOP_RETRANSMIT:
                txn._stop_timer(In.TIMER_A)
                txn._stop_timer(In.TIMER_E)
            case Do.SEND_ACK:
                assert isinstance(txn, ClientTransaction) and isinstance(message, Response)
                self.outbox.append((txn.peer, _ack_for_non_2xx(txn.request, message)))
            case Do.RESEND_ACK_2XX:
                assert isinstance(txn, ClientTransaction)
                if txn.ack_2xx is not None:
                    self.outbox.append((txn.peer, txn.ack_2xx))
            case Do.START_D:
                txn._start_timer(In.TIMER_D, 0.0 if txn.reliable else 32.0, now)
            case Do.START_K:
                txn._start_timer(In.TIMER_K, 0.0 if txn.reliable else cfg.t4, now)
            case Do.START_M:
                txn._start_timer(In.TIMER_M, 64 * cfg.t1, now)
            case Do.SEND_RESPONSE | Do.RESEND_RESPONSE:
                assert isinstance(txn, ServerTransaction)
                if action is Do.RESEND_RESPONSE:
                    self.retransmissions += 1
                if txn.last_response_bytes is not None:
                    self.outbox.append((txn.peer, txn.last_response_bytes))
            case Do.START_G_H:
                assert isinstance(txn, ServerTransaction)
                if not txn.reliable:
                    txn.interval = cfg.t1
                    txn._start_timer(In.TIMER_G, cfg.t1, now)
                txn._start_timer(In.TIMER_H, 64 * cfg.t1, now)
            case Do.BACKOFF_G:
                assert isinstance(txn, ServerTransaction)
                txn.interval = min(2 * txn.interval, cfg.t2)
                txn._start_timer(In.TIMER_G, txn.interval, now)
            case Do.START_I:
                txn._stop_timer(In.TIMER_G)
                txn._start_timer(In.TIMER_I, 0.0 if txn.reliable else cfg.t4, now)
            case Do.START_J:
                txn._start_timer(In.TIMER_J, 0.0 if txn.reliable else 64 * cfg.t1, now)
            case Do.START_L:
                assert isinstance(txn, ServerTransaction)
                assert txn.ack_key is not None
                self._awaiting_ack[txn.ack_key] = txn
                if not txn.reliable:
                    txn.interval = cfg.t1
                    txn._start_timer(In.TIMER_G, cfg.t1, now)
                txn._start_timer(In.TIMER_L, 64 * cfg.t1, now)
            case Do.TIMEOUT:
                if isinstance(txn, ServerTransaction) and txn.method == "INVITE" and (
                    self._awaiting_ack.pop(txn.ack_key, None) is not None  # type: ignore[arg-type]
                ):
                    self.events.append(AckTimeout(txn))
                elif isinstance(txn, ServerTransaction) and txn.state is S.TERMINATED and (
                    txn.last_status is not None and txn.last_status < 300
                ):
                    pass  # accepted and ACKed: timer L is only the end of absorption
                else:
                    self.events.append(TransactionTimeout(txn))
            case Do.REPORT_TRANSPORT_ERROR:
                self.events.append(TransportError(txn))

    def _terminate(self, txn: ClientTransaction | ServerTransaction) -> None:
        txn._stop_all_timers()
        if isinstance(txn, ClientTransaction):
            self.client.pop(txn.key, None)
            self._ended_new.append(txn)
        else:
            self.server.pop(txn.key, None)
            if txn.method == "INVITE":
                self._awaiting_ack.pop(txn.ack_key, None)  # type: ignore[arg-type]
        if self.on_terminated is not None:
            self.on_terminated(txn)

    def drain_events(self) -> list[Event]:
        """The TU's events, in order. The TU must handle them before the next call (the
        transport adapters' pump loops do): lingering transactions are slimmed then."""
        if self._trying_ready:
            self._send_trying(self._trying_ready)
        self._trying_ready, self._trying_new = self._trying_new, []
        if self._linger_ready:
            for txn in self._linger_ready:
                self._slim(txn)
        self._linger_ready, self._linger_new = self._linger_new, []
        for txn in self._ended_ready:
            # nothing reaches a terminated client transaction any more and the TU has seen
            # its last event (a timeout's, say, may read the request): its TU (a leg of a
            # held call) may keep the object, not the parsed request and bytes (~5 KB)
            txn._request = None
            txn.request_bytes = b""
        self._ended_ready, self._ended_new = self._ended_new, []
        events, self.events = self.events, []
        return events

    def _send_trying(self, handled: list[tuple[ServerTransaction, float]]) -> None:
        """§17.2.1: a 100 Trying for each new INVITE the TU has seen but not answered.

        The RFC lets the server skip the 100 when the TU answers within 200 ms; the TU's own
        handling of the request is that window here. A request the TU answered at once gets
        no 100 before its answer — above all a challenge (401/407), which is sent statelessly
        (:meth:`respond_stateless`): with no 100 the client's Timer A keeps retransmitting
        the INVITE and each copy is challenged again, so a lost challenge costs one
        retransmission, not the call (a 100 would have stopped those retransmissions)."""
        for txn, arrived in handled:
            if txn.last_status is None and txn.state is S.PROCEEDING:
                self.respond(txn, make_response(txn.request, 100), arrived)

    @staticmethod
    def _slim(txn: ClientTransaction | ServerTransaction) -> None:
        """Keep only what retransmissions, matching and the remaining timers need.

        The owner is held weakly from now on (a call that has ended can be freed;
        a late fork 2xx or AckTimeout still reaches a live one). Parsed messages go where no
        TU event or TU response can use them any more: a server transaction's last
        response (its bytes and status stay), its request unless it is an accepted INVITE
        (the TU may still send a 2xx on it), a completed non-INVITE client's request.
        """
        state = txn.state
        if state is S.TERMINATED:
            return
        txn._weaken_owner()
        if isinstance(txn, ServerTransaction):
            txn.last_response = None
            if state is not S.ACCEPTED:
                txn._request = None
        elif state is S.COMPLETED and txn._method != "INVITE":
            txn._request = None
            txn.request_bytes = b""

    def drain_outbox(self) -> list[tuple[Peer, bytes]]:
        out, self.outbox = self.outbox, []
        return out


def _ack_for_non_2xx(invite: Request, response: Response) -> bytes:
    """§17.1.1.3: ACK in the same transaction as the INVITE."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    for name, source in (("From", invite), ("To", response), ("Call-ID", invite)):
        value = source.headers.get(name)
        if value is not None:
            headers.add(name, value)
    headers.add("CSeq", f"{cseq(invite).number} ACK")
    return Request("ACK", invite.uri, headers).to_bytes()
