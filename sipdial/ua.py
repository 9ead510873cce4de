"""The user-agent core: routes transaction events to the registrar, dialogs and call legs.

This is the transaction user (TU) of the endpoint. It answers what needs no call logic
(OPTIONS, 481 for unknown dialogs, 405/501, 416/420/483 sanity checks of §8.2, REGISTER by
the registrar) and hands everything else to the object that owns it, as typed events:

* events about a transaction go to the transaction's :class:`~sipdial.sip.TransactionOwner`
  (a call leg): its responses, its timeout, a CANCEL of it, a 2xx never ACKed;
* requests inside a dialog go to the dialog's :class:`DialogOwner` as :class:`DialogRequest`
  or :class:`DialogAck`;
* a new INVITE outside any dialog is *returned* from :meth:`UserAgent.handle` as an
  :class:`IncomingInvite`, for whoever routes new calls (:class:`sipdial.calls.InboundRouter`).
  The UA holds no reference to that router: like h11, a lower layer hands events up.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from typing import Protocol

from sipdial.registrar import Registrar
from sipdial.sip import (
    AckTimeout,
    CancelReceived,
    ClientTransaction,
    Dialog,
    DialogKey,
    Endpoint,
    Event,
    Peer,
    Request,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    SipError,
    TransactionOwner,
    TransactionTimeout,
    TransportError,
    call_id,
    check_dialog_headers,
    from_tag,
    to_tag,
)

__all__ = [
    "ALLOW",
    "DialogAck",
    "DialogEvent",
    "DialogOwner",
    "DialogRequest",
    "IncomingInvite",
    "LegOwner",
    "UserAgent",
]

log = logging.getLogger("sipdial.ua")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, REFER, NOTIFY, INFO, UPDATE"
SUPPORTED = "replaces, norefersub"
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})
ALLOWED_METHODS = frozenset(m.strip() for m in ALLOW.split(","))
SUPPORTED_EXTENSIONS = frozenset({"replaces", "norefersub"})
#: RFC 3327: the registrar keeps Path (a REGISTER may require it)
REGISTER_EXTENSIONS = SUPPORTED_EXTENSIONS | {"path"}


@dataclass(frozen=True, slots=True)
class DialogRequest:
    """A request inside a dialog (not an ACK). The owner must answer ``txn``."""

    dialog: Dialog
    request: Request
    txn: ServerTransaction


@dataclass(frozen=True, slots=True)
class DialogAck:
    """The ACK of a 2xx sipdial sent in this dialog (it has no transaction)."""

    dialog: Dialog
    ack: Request


DialogEvent = DialogRequest | DialogAck


class DialogOwner(Protocol):
    """What a dialog belongs to (a call leg)."""

    def dialog_event(self, event: DialogEvent, now: float) -> None: ...


class LegOwner(TransactionOwner, DialogOwner, Protocol):
    """A call leg: owns its transactions and its dialog."""


@dataclass(frozen=True, slots=True)
class IncomingInvite:
    """A new INVITE outside any dialog that passed the UA's checks (§8.2): a call to route.
    Nothing has answered ``txn`` yet: the transaction layer sends 100 Trying once the TU has
    handled the request without answering it (so a challenge goes out without one)."""

    request: Request
    txn: ServerTransaction
    source: Peer


class UserAgent:
    def __init__(self, endpoint: Endpoint, registrar: Registrar, domain: str) -> None:
        self.endpoint = endpoint
        self.timers = endpoint.timers
        self.registrar = registrar
        self.domain = domain
        self.dialogs: dict[DialogKey, tuple[Dialog, LegOwner]] = {}
        self._prefix = endpoint.shard.prefix(8)  # its worker's index first (sip.shard)
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ identifiers

    def new_tag(self) -> str:
        return f"{self._prefix}{next(self._ids):x}"

    def new_call_id(self) -> str:
        return f"{self._prefix}-{next(self._ids):x}-{os.urandom(4).hex()}@sipdial"

    # ------------------------------------------------------------ sending

    def send(self, request: Request, peer: Peer, owner: TransactionOwner,
             now: float) -> ClientTransaction:
        return self.endpoint.send_request(request, peer, now, owner=owner)

    def send_in_dialog(self, dialog: Dialog, request: Request, owner: TransactionOwner,
                       now: float) -> ClientTransaction:
        return self.endpoint.send_request(request, dialog.peer, now, owner=owner)

    def add_dialog(self, dialog: Dialog, owner: LegOwner) -> None:
        self.dialogs[dialog.key] = (dialog, owner)

    def drop_dialog(self, dialog: Dialog) -> None:
        self.dialogs.pop(dialog.key, None)

    # ------------------------------------------------------------ the TU

    def handle(self, event: Event, now: float) -> IncomingInvite | None:
        """One event from the transaction layer; returns a new call for the router, if any."""
        match event:
            case ResponseReceived(txn=txn) | TransactionTimeout(txn=ClientTransaction() as txn) \
                    | TransportError(txn=ClientTransaction() as txn):
                owner = txn.owner
                if owner is not None:
                    owner.transaction_event(event, now)
            case RequestReceived(request=request, txn=None):
                self._ack(request, now)
            case RequestReceived(request=request, txn=ServerTransaction() as txn,
                                 source=source):
                try:
                    return self._request(request, txn, source, now)
                except SipError as exc:
                    if not txn.answered:
                        self.endpoint.reply(txn, exc.status, now, reason=str(exc)[:60])
                except Exception:
                    # a bug must not leave the transaction unanswered (and alive) forever
                    log.exception("error handling %s from %s", request.method, source)
                    if not txn.answered:
                        self.endpoint.reply(txn, 500, now)
            case CancelReceived(invite_txn=txn) | AckTimeout(txn=txn):
                owner = txn.owner
                if owner is not None:
                    owner.transaction_event(event, now)
                elif isinstance(event, CancelReceived) and not txn.answered:
                    self.endpoint.reply(txn, 487, now)
        return None

    def _ack(self, ack: Request, now: float) -> None:
        entry = self.dialogs.get((call_id(ack), to_tag(ack) or "", from_tag(ack) or ""))
        if entry is not None:
            dialog, owner = entry
            owner.dialog_event(DialogAck(dialog, ack), now)

    def _request(self, request: Request, txn: ServerTransaction, source: Peer,
                 now: float) -> IncomingInvite | None:
        method = request.method
        if method not in KNOWN_METHODS:
            self.endpoint.reply(txn, 501, now, headers=[("Allow", ALLOW)])
            return None
        if method not in ALLOWED_METHODS:
            self.endpoint.reply(txn, 405, now, headers=[("Allow", ALLOW)])
            return None
        scheme = getattr(request.uri, "scheme", "")
        if scheme not in ("sip", "sips", "tel"):
            self.endpoint.reply(txn, 416, now)
            return None
        known = REGISTER_EXTENSIONS if method == "REGISTER" else SUPPORTED_EXTENSIONS
        unsupported = [
            tag.strip() for value in request.headers.get_all("Require")
            for tag in value.split(",") if tag.strip().lower() not in known
        ]
        if unsupported and method != "ACK":
            self.endpoint.reply(txn, 420, now, headers=[("Unsupported", ", ".join(unsupported))])
            return None
        local_tag = to_tag(request)
        if local_tag:
            entry = self.dialogs.get((call_id(request), local_tag, from_tag(request) or ""))
            if entry is None:
                self.endpoint.reply(txn, 481, now)
                return None
            dialog, owner = entry
            dialog.receive_request(request)  # SipError(500) on CSeq disorder
            txn.owner = owner  # a CANCEL of a re-INVITE, a missing ACK: the leg hears it
            owner.dialog_event(DialogRequest(dialog, request, txn), now)
            return None
        match method:
            case "REGISTER":
                self.endpoint.respond(txn, self.registrar.handle(request, source, now), now)
            case "OPTIONS":
                self.endpoint.reply(txn, 200, now, headers=[
                    ("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", SUPPORTED)])
            case "INVITE":
                max_forwards = request.headers.get("Max-Forwards")
                if max_forwards is not None and max_forwards.strip() == "0":
                    self.endpoint.reply(txn, 483, now)
                elif not from_tag(request) or "Contact" not in request.headers:
                    # §8.1.1.3 / §8.1.1.8: a dialog cannot be built without them
                    self.endpoint.reply(txn, 400, now, reason="Missing From tag or Contact")
                else:
                    # a Contact or Record-Route that does not parse is refused now (400 with
                    # the reason), not found out when the call is answered (issue 7 §5)
                    check_dialog_headers(request)
                    return IncomingInvite(request, txn, source)
            case _:
                # BYE, REFER, NOTIFY, INFO, UPDATE outside a dialog
                self.endpoint.reply(txn, 481, now)
        return None
