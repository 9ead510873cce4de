"""Call legs: one INVITE dialog each, as seen from sipdial.

A :class:`UacLeg` is an INVITE sipdial sends (to a user's device, or to a destination); a
:class:`UasLeg` is an INVITE sipdial receives (a phone dialling through sipdial). Legs do the
SIP bookkeeping — ACK, CANCEL, BYE, 487, dialog registration — and report what happened to
their owner through one method, ``leg_event(leg, LegEvent, message, now)``. The owner (a call
flow) decides what it means; the legs know nothing of click-to-dial.
"""

from __future__ import annotations

import enum
import os
from typing import TYPE_CHECKING, Protocol, cast

from sipdial.sip.auth import (
    AuthError,
    Challenge,
    answer_challenge,
    parse_challenges,
    preferred_challenge,
)
from sipdial.sip.dialog import Dialog
from sipdial.sip.headers import Headers
from sipdial.sip.message import Request, Response, cseq, make_response
from sipdial.sip.peer import Peer
from sipdial.sip.timers import TimerHandle
from sipdial.sip.transaction import ClientTransaction, ServerTransaction
from sipdial.sip.uri import URI, NameAddr

if TYPE_CHECKING:
    from sipdial.ua import UserAgent


# RFC 3326: tells devices that lost the race not to log a missed call
ANSWERED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


class LegEvent(enum.Enum):
    PROGRESS = "progress"  # 1xx on our INVITE (UAC)
    ANSWERED = "answered"  # 2xx on our INVITE (UAC)
    FAILED = "failed"  # final non-2xx / timeout on our INVITE (UAC); message may be None
    ACKED = "acked"  # the ACK to our 2xx (UAS)
    CANCELLED = "cancelled"  # the caller CANCELled (UAS; 487 already sent)
    ENDED = "ended"  # remote BYE (200 already sent), or ACK never came
    REQUEST = "request"  # another in-dialog request: the owner must respond
    RESPONSE = "response"  # response to an in-dialog request the owner sent


class LegState(enum.Enum):
    CALLING = "calling"
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


class Owner(Protocol):
    def leg_event(self, leg: UacLeg | UasLeg, event: LegEvent,
                  message: Request | Response | None, now: float,
                  txn: ClientTransaction | ServerTransaction | None = None) -> None: ...


class _Leg:
    """What both kinds of leg do once a dialog exists: in-dialog requests both ways, BYE."""

    ua: UserAgent
    owner: Owner
    state: LegState
    dialog: Dialog | None
    offer_txn: ClientTransaction | None = None  # an offerless re-INVITE's 2xx, ACK pending

    @property
    def contact(self) -> str:
        """Our Contact towards this leg's peer."""
        raise NotImplementedError

    @property
    def _me(self) -> UacLeg | UasLeg:
        return cast("UacLeg | UasLeg", self)

    # the ua.Handler interface, implemented by both subclasses
    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        raise NotImplementedError

    def on_txn_timeout(self, txn: ClientTransaction, now: float, status: int = 408) -> None:
        raise NotImplementedError

    def on_dialog_request(self, dialog: Dialog, request: Request,
                          txn: ServerTransaction | None, now: float) -> None:
        raise NotImplementedError

    def on_cancel(self, txn: ServerTransaction, now: float) -> None:
        raise NotImplementedError

    def on_ack_timeout(self, txn: ServerTransaction, now: float) -> None:
        raise NotImplementedError

    def bye(self, now: float) -> None:
        if self.state is LegState.CONFIRMED and self.dialog is not None:
            self._stop_timers()
            self.state = LegState.ENDED
            self.ua.send_in_dialog(self.dialog, self.dialog.create_request("BYE"), self, now)
            self.ua.drop_dialog(self.dialog)

    def request(self, method: str, now: float, *, body: bytes = b"",
                content_type: str | None = None,
                extra: list[tuple[str, str]] | None = None) -> ClientTransaction | None:
        """Send an in-dialog request; None when there is no confirmed dialog."""
        if self.dialog is None or self.state is not LegState.CONFIRMED:
            return None
        request = self.dialog.create_request(method, body=body, content_type=content_type,
                                             extra=extra)
        return self.ua.send_in_dialog(self.dialog, request, self, now)

    def _dialog_response(self, txn: ClientTransaction, response: Response,
                         now: float) -> None:
        """A response to an in-dialog request we sent; ACKs a re-INVITE's 2xx (§13.2.2.4).
        An offerless re-INVITE's 2xx carries the offer: its ACK must carry the answer, so it
        waits for :meth:`ack_offer` (the relay brings the answer from the other side)."""
        if (self.dialog is not None and txn.method in ("INVITE", "UPDATE")
                and 200 <= response.status < 300):
            self.dialog.refresh_from_response(response)  # §12.2.1.2 target refresh
        if (self.dialog is not None and txn.method == "INVITE"
                and 200 <= response.status < 300 and txn.ack_2xx is None):
            if response.body and not txn.request.body:
                self.offer_txn = txn
            else:
                ack = self.dialog.create_ack(cseq(txn.request).number)
                self.ua.endpoint.send_ack(txn, ack, self.dialog.peer)
        if txn.method not in ("BYE", "CANCEL"):
            self.owner.leg_event(self._me, LegEvent.RESPONSE, response, now, txn)

    def ack_offer(self, body: bytes, content_type: str | None) -> None:
        """Send the ACK (with the SDP answer) for the 2xx of an offerless re-INVITE."""
        txn, self.offer_txn = self.offer_txn, None
        if txn is None or self.dialog is None:
            return
        ack = self.dialog.create_ack(cseq(txn.request).number, body=body,
                                     content_type=content_type if body else None)
        self.ua.endpoint.send_ack(txn, ack, self.dialog.peer)

    def _dialog_timeout(self, txn: ClientTransaction, now: float, status: int = 408) -> None:
        if txn.method not in ("BYE", "CANCEL"):
            self.owner.leg_event(self._me, LegEvent.RESPONSE,
                                 make_response(txn.request, status), now, txn)

    def _stop_timers(self) -> None:
        """Timers a leg may own (UacLeg: the RFC 4028 refresh)."""

    def _dialog_request(self, dialog: Dialog, request: Request, txn: ServerTransaction,
                        now: float) -> None:
        """BYE ends the leg (answered 200 here); anything else goes to the owner."""
        if request.method == "BYE":
            self.ua.endpoint.reply(txn, 200, now)
            self._stop_timers()
            self.state = LegState.ENDED
            self.ua.drop_dialog(dialog)
            self.owner.leg_event(self._me, LegEvent.ENDED, request, now, txn)
            return
        self.owner.leg_event(self._me, LegEvent.REQUEST, request, now, txn)


class UacLeg(_Leg):
    """An INVITE sent by sipdial."""

    def __init__(self, ua: UserAgent, owner: Owner, *, uri: URI, peer: Peer,
                 from_party: NameAddr, to_party: NameAddr, body: bytes = b"",
                 content_type: str | None = None,
                 extra: list[tuple[str, str]] | None = None, label: str = "",
                 credentials: tuple[str, str] | None = None) -> None:
        self.ua = ua
        self.owner = owner
        self.uri = uri
        self.peer = peer
        self.label = label
        self.state = LegState.CALLING
        self.call_id = ua.new_call_id()
        from_tagged = NameAddr(from_party.uri, from_party.display_name,
                               {**from_party.params, "tag": ua.new_tag()})
        self.from_party = from_tagged
        self.to_party = to_party
        self.body = body
        self.content_type = content_type
        self.extra = extra or []
        self.dialog: Dialog | None = None
        self.invite_txn: ClientTransaction | None = None
        self.final_status: int | None = None
        self.cancelled = False
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
    def contact(self) -> str:
        return self.ua.endpoint.contact(self.peer)

    # ------------------------------------------------------------ commands

    def start(self, now: float) -> None:
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.from_party))
        headers.add("To", str(self.to_party))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self._cseq} INVITE")
        if self._authorization is not None:
            headers.add(*self._authorization)
        headers.add("Contact", self.ua.endpoint.contact(self.peer))
        headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY, INFO, UPDATE")
        for name, value in self.extra:
            headers.add(name, value)
        if self.content_type is not None:
            headers.add("Content-Type", self.content_type)
        request = Request("INVITE", self.uri, headers, self.body)
        self.invite_txn = self.ua.send(request, self.peer, self, now)

    def cancel(self, now: float, reason: str | None = None) -> None:
        """CANCEL while ringing; a 2xx that crosses the CANCEL is ACKed and BYEd.
        ``reason`` is an RFC 3326 Reason header value for the CANCEL."""
        if self.state in (LegState.CALLING, LegState.EARLY) and self.invite_txn is not None:
            self.cancelled = True
            self.ua.endpoint.cancel(self.invite_txn, now, reason)

    def release(self, now: float) -> None:
        if self.state is LegState.CONFIRMED:
            self.bye(now)
        else:
            self.cancel(now)

    # ------------------------------------------------------------ SIP events

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        if txn is not self.invite_txn:
            if txn is self._refresh_txn and response.status >= 200:
                self._refresh_txn = None
                if response.status in (408, 481):  # RFC 4028 §10: the session is gone
                    self.bye(now)
                    self.owner.leg_event(self, LegEvent.ENDED, None, now)
                return
            self._dialog_response(txn, response, now)
            return
        status = response.status
        if status < 200:
            if self.state is LegState.CALLING and status > 100:
                self.state = LegState.EARLY
            if status > 100 and not self.cancelled:
                self.owner.leg_event(self, LegEvent.PROGRESS, response, now)
            return
        if status < 300:
            self._answered(txn, response, now)
            return
        if status in (401, 407) and self._retry_with_credentials(response, now):
            return
        if self.state is not LegState.ENDED:
            self.state = LegState.ENDED
            self.final_status = status
            self.owner.leg_event(self, LegEvent.FAILED, response, now)

    def _retry_with_credentials(self, response: Response, now: float) -> bool:
        """RFC 3261 §22.2: answer an upstream's challenge once, same Call-ID and tags."""
        if self.credentials is None or self._authorization is not None or self.cancelled:
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
                                 method="INVITE", uri=str(self.uri),
                                 cnonce=os.urandom(8).hex())
        name = "Proxy-Authorization" if response.status == 407 else "Authorization"
        self._authorization = (name, creds.to_header())
        self._cseq += 1
        self.state = LegState.CALLING
        self.start(now)
        return True

    def _answered(self, txn: ClientTransaction, response: Response, now: float) -> None:
        dialog = Dialog.from_uac(txn.request, response, self.peer,
                                 self.ua.endpoint.contact(self.peer))
        ack = dialog.create_ack(self._cseq)
        second = self.dialog is not None  # another fork's 2xx: keep the first dialog's ACK
        self.ua.endpoint.send_ack(txn, ack, self.peer, remember=not second)
        if second or self.cancelled or self.state is LegState.ENDED:
            # a second 2xx (forked downstream) or a 2xx crossing our CANCEL: hang it up
            bye = dialog.create_request("BYE")
            self.ua.send_in_dialog(dialog, bye, self, now)
            if self.dialog is None:
                self.state = LegState.ENDED
                self.final_status = 487
                self.owner.leg_event(self, LegEvent.FAILED, None, now)
            return
        self.dialog = dialog
        self.answer = response
        self.final_status = response.status
        self.state = LegState.CONFIRMED
        self.ua.add_dialog(dialog, self)
        self._session_timer(response, now)
        self.owner.leg_event(self, LegEvent.ANSWERED, response, now)

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
        self._refresh = self.ua.timers.schedule(now + interval / 2, self._send_refresh)

    def _stop_timers(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None

    def _send_refresh(self, now: float) -> None:
        self._refresh = None
        if self.state is not LegState.CONFIRMED or self._refresh_interval is None:
            return
        self._refresh_txn = self.request("UPDATE", now, extra=[
            ("Session-Expires", f"{self._refresh_interval};refresher=uac"),
            ("Supported", "timer")])
        self._refresh = self.ua.timers.schedule(now + self._refresh_interval / 2,
                                                self._send_refresh)

    def on_txn_timeout(self, txn: ClientTransaction, now: float, status: int = 408) -> None:
        """No final response (408, timer B/F) or no transport to the peer (503)."""
        if txn is self.invite_txn:
            if self.state in (LegState.CALLING, LegState.EARLY):
                self.state = LegState.ENDED
                self.final_status = status
                self.owner.leg_event(self, LegEvent.FAILED, None, now)
            return
        self._dialog_timeout(txn, now, status)

    def on_dialog_request(self, dialog: Dialog, request: Request,
                          txn: ServerTransaction | None, now: float) -> None:
        if txn is None:  # an ACK: to a 2xx we relayed for the peer's re-INVITE
            self.owner.leg_event(self, LegEvent.ACKED, request, now)
            return
        self._dialog_request(dialog, request, txn, now)

    def on_cancel(self, txn: ServerTransaction, now: float) -> None:
        if not txn.answered:
            self.ua.endpoint.reply(txn, 487, now)

    def on_ack_timeout(self, txn: ServerTransaction, now: float) -> None:
        pass


class UasLeg(_Leg):
    """An INVITE received by sipdial."""

    def __init__(self, ua: UserAgent, owner: Owner, txn: ServerTransaction, source: Peer,
                 label: str = "") -> None:
        self.ua = ua
        self.owner = owner
        self.txn = txn
        self.source = source
        self.label = label
        self.invite = txn.request
        self.local_tag = ua.new_tag()
        self.state = LegState.CALLING
        self.dialog: Dialog | None = None
        txn.context = self

    def __repr__(self) -> str:
        return f"<UasLeg {self.label} {self.state.value}>"

    @property
    def contact(self) -> str:
        return self.ua.endpoint.contact(self.source)

    def progress(self, status: int, now: float, *, body: bytes = b"",
                 content_type: str | None = None) -> None:
        if self.state not in (LegState.CALLING, LegState.EARLY):
            return
        self.state = LegState.EARLY
        self._respond(status, now, body, content_type)

    def answer(self, now: float, *, body: bytes = b"", content_type: str | None = None) -> None:
        if self.state not in (LegState.CALLING, LegState.EARLY):
            return
        self.dialog = Dialog.from_uas(self.invite, self.local_tag, self.source, self.contact)
        self.ua.add_dialog(self.dialog, self)
        self.state = LegState.CONFIRMED
        self._respond(200, now, body, content_type)

    def reject(self, status: int, now: float, reason: str | None = None) -> None:
        if self.state not in (LegState.CALLING, LegState.EARLY):
            return
        self.state = LegState.ENDED
        response = make_response(self.invite, status, reason, to_tag=self.local_tag)
        self.ua.endpoint.respond(self.txn, response, now)

    def release(self, now: float, status: int = 480) -> None:
        if self.state is LegState.CONFIRMED:
            self.bye(now)
        else:
            self.reject(status, now)

    def _respond(self, status: int, now: float, body: bytes, content_type: str | None) -> None:
        response = make_response(self.invite, status, to_tag=self.local_tag)
        if status != 100:
            response.headers.add("Contact", self.contact)
        if body:
            response.headers.add("Content-Type", content_type or "application/sdp")
            response.body = body
        self.ua.endpoint.respond(self.txn, response, now)

    # ------------------------------------------------------------ SIP events

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        self._dialog_response(txn, response, now)

    def on_txn_timeout(self, txn: ClientTransaction, now: float, status: int = 408) -> None:
        self._dialog_timeout(txn, now, status)

    def on_dialog_request(self, dialog: Dialog, request: Request,
                          txn: ServerTransaction | None, now: float) -> None:
        if txn is None:
            if request.method == "ACK":
                self.owner.leg_event(self, LegEvent.ACKED, request, now)
            return
        self._dialog_request(dialog, request, txn, now)

    def on_cancel(self, txn: ServerTransaction, now: float) -> None:
        if self.state in (LegState.CALLING, LegState.EARLY):
            self.reject(487, now)
            self.owner.leg_event(self, LegEvent.CANCELLED, None, now)

    def on_ack_timeout(self, txn: ServerTransaction, now: float) -> None:
        if self.state is LegState.CONFIRMED:
            self.bye(now)
            self.owner.leg_event(self, LegEvent.ENDED, None, now)


class Relay:
    """Relays in-dialog requests (re-INVITE, UPDATE, INFO …) from one leg to the other and
    their final responses back: what keeps a B2BUA transparent after the call is up."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self._pending: dict[ClientTransaction, tuple[ServerTransaction, _Leg]] = {}
        # leg whose ACK carries the SDP answer -> the leg waiting for it (offerless re-INVITE)
        self._answers: dict[_Leg, _Leg] = {}

    def forward(self, request: Request, txn: ServerTransaction, came_on: _Leg, to: _Leg,
                now: float) -> None:
        out = to.request(request.method, now, body=request.body,
                         content_type=request.headers.get("Content-Type"))
        if out is None:  # the other side has no dialog (yet, or any more)
            self.ua.endpoint.reply(txn, 491 if request.method == "INVITE" else 481, now)
            return
        self._pending[out] = (txn, came_on)
        if request.method == "INVITE" and not request.body:
            self._answers[came_on] = to

    def response(self, txn: ClientTransaction | ServerTransaction | None,
                 message: Request | Response | None, now: float) -> bool:
        """Relay a final response back; True if ``txn`` was one we relayed."""
        if not isinstance(txn, ClientTransaction) or not isinstance(message, Response):
            return False
        if txn not in self._pending:
            return False
        if message.status < 200:
            return True
        server_txn, came_on = self._pending.pop(txn)
        if message.status >= 300:
            self._answers.pop(came_on, None)
        if server_txn.answered:
            return True
        response = make_response(server_txn.request, message.status, message.reason)
        if message.body:
            response.headers.add("Content-Type",
                                 message.headers.get("Content-Type") or "application/sdp")
            response.body = message.body
        if server_txn.method == "INVITE" and message.status < 300:
            response.headers.add("Contact", came_on.contact)
        self.ua.endpoint.respond(server_txn, response, now)
        return True

    def ack(self, came_on: _Leg, ack: Request) -> None:
        """The ACK of a 2xx we relayed: for an offerless re-INVITE it carries the SDP answer,
        which the other side's deferred ACK must carry (RFC 3264 §4, RFC 3261 §13.2.2.4)."""
        waiting = self._answers.pop(came_on, None)
        if waiting is not None:
            waiting.ack_offer(ack.body, ack.headers.get("Content-Type"))


# ---------------------------------------------------------------------------- forking


def take_answer(forks: list[UacLeg], leg: UacLeg, winner: UacLeg | None, now: float) -> bool:
    """``leg`` answered a forked call: True if it is the first (the other forks are then
    CANCELled, RFC 3326 reason "completed elsewhere"); a late answer is hung up at once."""
    if winner is not None:
        leg.bye(now)
        return False
    for other in forks:
        if other is not leg:
            other.cancel(now, reason=ANSWERED_ELSEWHERE)
    return True


def fork_failure(forks: list[UacLeg], leg: UacLeg, now: float) -> int | None:
    """``leg`` failed: the status of the whole forked call once it has failed, None while
    another fork may still answer. A 6xx decides for every fork at once and CANCELs the
    rest (RFC 3261 §16.7 step 5); otherwise a 6xx, then 486, then the first failure wins
    (step 6). Forks sipdial itself cancelled do not count."""
    if (leg.final_status or 0) >= 600:
        for other in forks:
            if other is not leg:
                other.cancel(now)
        return leg.final_status
    if any(f.state is not LegState.ENDED for f in forks):
        return None
    statuses = [f.final_status or 500 for f in forks if not f.cancelled]
    if not statuses:
        return None
    return next((s for s in statuses if s >= 600), None) \
        or next((s for s in statuses if s == 486), None) or statuses[0]
