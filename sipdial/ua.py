"""The user-agent core: routes transaction events to the registrar, dialogs and calls.

This is the transaction user (TU) of the endpoint. It answers what needs no call logic
(OPTIONS, 481 for unknown dialogs, 405/501, 416/420/483 sanity checks of §8.2) and hands
everything else to the object that owns it: a dialog's leg, a client transaction's sender,
or the inbound-call handler for new INVITEs.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from typing import Protocol

from sipdial.registrar import Registrar
from sipdial.sip.dialog import Dialog, DialogKey
from sipdial.sip.endpoint import Endpoint
from sipdial.sip.errors import SipError
from sipdial.sip.message import Request, Response, call_id, from_tag, to_tag
from sipdial.sip.peer import Peer
from sipdial.sip.timers import TimerHeap
from sipdial.sip.transaction import (
    AckTimeout,
    CancelReceived,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TransactionTimeout,
    TransportError,
)

log = logging.getLogger("sipdial.ua")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, REFER, NOTIFY, INFO, UPDATE"
SUPPORTED = "replaces, norefersub"
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})
ALLOWED_METHODS = frozenset(m.strip() for m in ALLOW.split(","))
SUPPORTED_EXTENSIONS = frozenset({"replaces", "norefersub"})


class Handler(Protocol):
    """What a call leg implements to receive SIP events."""

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None: ...
    def on_txn_timeout(self, txn: ClientTransaction, now: float,
                       status: int = 408) -> None: ...
    def on_dialog_request(self, dialog: Dialog, request: Request,
                          txn: ServerTransaction | None, now: float) -> None: ...
    def on_cancel(self, txn: ServerTransaction, now: float) -> None: ...
    def on_ack_timeout(self, txn: ServerTransaction, now: float) -> None: ...


InboundHandler = Callable[[Request, ServerTransaction, Peer, float], None]


class UserAgent:
    def __init__(self, endpoint: Endpoint, timers: TimerHeap, registrar: Registrar,
                 domain: str) -> None:
        self.endpoint = endpoint
        self.timers = timers
        self.registrar = registrar
        self.domain = domain
        self.dialogs: dict[DialogKey, Dialog] = {}
        self.inbound: InboundHandler | None = None
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ identifiers

    def new_tag(self) -> str:
        return f"{self._prefix}{next(self._ids):x}"

    def new_call_id(self) -> str:
        return f"{self._prefix}-{next(self._ids):x}-{os.urandom(4).hex()}@sipdial"

    # ------------------------------------------------------------ sending

    def send(self, request: Request, peer: Peer, handler: Handler,
             now: float) -> ClientTransaction:
        return self.endpoint.send_request(request, peer, now, context=handler)

    def send_in_dialog(self, dialog: Dialog, request: Request, handler: Handler,
                       now: float) -> ClientTransaction:
        return self.endpoint.send_request(request, dialog.peer, now, context=handler)

    def add_dialog(self, dialog: Dialog, handler: Handler) -> None:
        dialog.owner = handler
        self.dialogs[dialog.key] = dialog

    def drop_dialog(self, dialog: Dialog) -> None:
        self.dialogs.pop(dialog.key, None)

    # ------------------------------------------------------------ the TU

    def handle(self, event: Event, now: float) -> None:
        match event:
            case ResponseReceived(response=response, txn=txn):
                handler = txn.context
                if handler is not None:
                    handler.on_response(txn, response, now)  # type: ignore[attr-defined]
            case RequestReceived(request=request, txn=None):
                self._ack(request, now)
            case RequestReceived(request=request, txn=txn, source=source):
                assert txn is not None
                try:
                    self._request(request, txn, source, now)
                except SipError as exc:
                    if not txn.answered:
                        self.endpoint.reply(txn, exc.status, now, reason=str(exc)[:60])
                except Exception:
                    # a bug must not leave the transaction unanswered (and alive) forever
                    log.exception("error handling %s from %s", request.method, source)
                    if not txn.answered:
                        self.endpoint.reply(txn, 500, now)
            case CancelReceived(invite_txn=txn):
                if txn.context is not None:
                    txn.context.on_cancel(txn, now)  # type: ignore[attr-defined]
                elif not txn.answered:
                    self.endpoint.reply(txn, 487, now)
            case TransactionTimeout(txn=txn):
                if isinstance(txn, ClientTransaction) and txn.context is not None:
                    txn.context.on_txn_timeout(txn, now)  # type: ignore[attr-defined]
            case TransportError(txn=txn):
                # §8.1.3.1: a transport failure is treated like a 503 (Service Unavailable)
                if isinstance(txn, ClientTransaction) and txn.context is not None:
                    txn.context.on_txn_timeout(txn, now, 503)  # type: ignore[attr-defined]
            case AckTimeout(txn=txn):
                if txn.context is not None:
                    txn.context.on_ack_timeout(txn, now)  # type: ignore[attr-defined]

    def _ack(self, ack: Request, now: float) -> None:
        dialog = self.dialogs.get((call_id(ack), to_tag(ack) or "", from_tag(ack) or ""))
        if dialog is not None and dialog.owner is not None:
            dialog.owner.on_dialog_request(dialog, ack, None, now)  # type: ignore[attr-defined]

    def _request(self, request: Request, txn: ServerTransaction, source: Peer,
                 now: float) -> None:
        method = request.method
        if method not in KNOWN_METHODS:
            self.endpoint.reply(txn, 501, now, headers=[("Allow", ALLOW)])
            return
        if method not in ALLOWED_METHODS:
            self.endpoint.reply(txn, 405, now, headers=[("Allow", ALLOW)])
            return
        scheme = getattr(request.uri, "scheme", "")
        if scheme not in ("sip", "sips", "tel"):
            self.endpoint.reply(txn, 416, now)
            return
        unsupported = [
            tag.strip() for value in request.headers.get_all("Require")
            for tag in value.split(",") if tag.strip().lower() not in SUPPORTED_EXTENSIONS
        ]
        if unsupported and method != "ACK":
            self.endpoint.reply(txn, 420, now, headers=[("Unsupported", ", ".join(unsupported))])
            return
        local_tag = to_tag(request)
        if local_tag:
            dialog = self.dialogs.get((call_id(request), local_tag, from_tag(request) or ""))
            if dialog is None or dialog.owner is None:
                self.endpoint.reply(txn, 481, now)
                return
            dialog.receive_request(request)  # SipError(500) on CSeq disorder
            txn.context = dialog.owner
            dialog.owner.on_dialog_request(dialog, request, txn, now)  # type: ignore[attr-defined]
            return
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
                elif self.inbound is None:
                    self.endpoint.reply(txn, 480, now)
                else:
                    self.inbound(request, txn, source, now)
            case _:
                # BYE, REFER, NOTIFY, INFO, UPDATE outside a dialog
                self.endpoint.reply(txn, 481, now)

