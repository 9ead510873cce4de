"""The simulated phones of the load-test harness (issue 9 §1): one process, many SIP devices.

    .venv/bin/python -m loadtest.farm --sipdial 127.0.0.1:5060 --users 1-200 [--devices 1]
        [--password-template 'pw-{user}-load'] [--port 0] [--ready-file F] [--events F]
        [--reject-share 0] [--no-answer-share 0] [--answer-delay MS] [--seed 0]
        [--max-seconds 600] [--register-rate 500] [--dtmf-after MS] [--drop-refer-params]

Every device ``d`` (1..K) of every user ``u`` REGISTERs ``<sip:u-d{d}@127.0.0.1:PORT>`` at
sipdial (digest, 401 answered once) from ONE UDP socket, then behaves like a phone:

* a new INVITE from sipdial: 180 (To tag), then 200 with an SDP answer (the device's own
  bound RTP socket, which discards what it receives) retransmitted until the ACK (T1 doubling
  to T2, given up after 64*T1); or 486, or 180 only (then CANCEL -> 200 + 487), chosen by a
  hash of the seed and the INVITE's From user (the dialled number; the Call-ID if it has
  none), so every device of a forked call decides alike (``--reject-share``,
  ``--no-answer-share``, ``--seed``);
* a re-INVITE in the dialog (bridge mode): 200 with the SDP answer, ACK absorbed;
* a REFER in the dialog: 202, NOTIFY "100 Trying", then the referred call: a new dialog
  INVITE to the Refer-To URI (headers stripped; ``--drop-refer-params``: its parameters too)
  sent to ``--sipdial``, 407 answered once with
  Proxy-Authorization, 2xx ACKed, and a final NOTIFY (``terminated;reason=noresource``) with
  the outcome's status line;
* BYE, CANCEL, OPTIONS, INFO: 200 (BYE/CANCEL of nothing known: 481); anything else: 501.

Requests the farm sends are retransmitted (Timer A/E, RFC 3261 §17.1); a request from sipdial
seen again (same Via branch and method) gets the last response again, without a new event.

Structure (STYLE.md §1): :class:`FarmCore` is sans-IO, ``receive(data, addr, now)``,
``timers.run_due(now)`` and ``drain()`` -> ``[(bytes, addr, source_port)]`` (``source_port``
0 = the SIP socket, else the RTP socket of that port); :func:`run` is the Twisted adapter
(one SIP socket, one RTP socket per device, one reactor timer for the whole heap).

Events (``--events``, JSON lines, ``"t"`` = wall clock) are buffered and written in chunks of
:data:`EVENT_CHUNK` lines and at exit. At exit one JSON line goes to stdout:
``{"cpu_s", "messages_in", "messages_out", "retransmissions", "calls", ...}``.

Not done: registrations are not refreshed (Expires 3600 against ``--max-seconds`` <= 600 by
default); TCP/TLS; authentication of anything but REGISTER and the referred INVITE.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import re
import resource
import signal
import socket
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeAlias, cast

from twisted.internet.protocol import DatagramProtocol

from sipdial.sip import (
    AuthError,
    ParseError,
    Request,
    Response,
    SipURI,
    TimerHeap,
    answer_challenge,
    call_id,
    cseq,
    parse_challenges,
    parse_message,
    parse_name_addr_list,
    preferred_challenge,
    sdp,
    to_tag,
)
from sipdial.sip.message import peek_from, peek_top_via

__all__ = ["EVENT_CHUNK", "FarmConfig", "FarmCore", "FarmStats", "main", "parse_users", "run"]

LOCAL_HOST = "127.0.0.1"
EVENT_CHUNK = 4096  #: event lines buffered before one write to the events file
Addr: TypeAlias = tuple[str, int]
#: what to send: bytes, destination, source (0 = the SIP socket, else that RTP port)
Datagram: TypeAlias = tuple[bytes, Addr, int]


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True, slots=True)
class FarmConfig:
    """What the farm does; every field maps to a command-line option."""

    sipdial: Addr  #: sipdial's SIP UDP address: every request the farm sends goes there
    users: tuple[str, ...]  #: user ids ("1", "2", ...)
    devices: int = 1  #: devices per user (distinct Contacts, one socket)
    password_template: str = "pw-{user}-load"
    domain: str = ""  #: host of the users' AORs and of the REGISTER Request-URI ("" = sipdial's)
    reject_share: float = 0.0  #: INVITEs answered 486
    no_answer_share: float = 0.0  #: INVITEs answered 180 only
    answer_delay: float = 0.0  #: seconds between 180 and 200
    seed: int = 0
    register_rate: float = 500.0  #: REGISTERs per second at start
    expires: int = 3600  #: registration lifetime asked for
    dtmf_after: float | None = None  #: seconds after the ACK to send RFC 4733 "1" (None: never)
    #: the audio address every device's SDP names (loadtest.rtp_probe); None: its own socket
    media_to: Addr | None = None
    #: the referred INVITE goes to the Refer-To URI without its parameters (x-c2d and the
    #: like), as some phones send it: sipdial must match it by user and number
    drop_refer_params: bool = False
    t1: float = 0.5
    t2: float = 4.0

    @property
    def aor_host(self) -> str:
        return self.domain or self.sipdial[0]


@dataclass(slots=True)
class FarmStats:
    """Counters printed at exit (datagrams on the SIP socket; RTP counted apart)."""

    messages_in: int = 0
    messages_out: int = 0
    retransmissions: int = 0  #: our requests resent + responses resent for duplicates
    duplicates_in: int = 0  #: requests from sipdial seen again (answered from the cache)
    calls: int = 0  #: new INVITE dialogs from sipdial (a forked call counts per device)
    referred: int = 0  #: referred INVITEs placed
    registered: int = 0
    register_failed: int = 0
    timeouts: int = 0
    parse_errors: int = 0
    unmatched: int = 0  #: responses and ACKs that matched nothing
    rtp_out: int = 0


# ------------------------------------------------------------------ state


@dataclass(slots=True, eq=False)
class Device:
    """One registered device: user ``user``, Contact ``<sip:{user}-d{index}@127.0.0.1:PORT>``."""

    user: str
    index: int
    rtp_port: int
    password: str
    contact_user: str = ""
    reg_call_id: str = ""
    reg_cseq: int = 0
    reg_authed: bool = False
    rtp_seq: int = 0
    ssrc: int = 0


@dataclass(slots=True, eq=False)
class Dialog:
    """A dialog with sipdial: one it opened with an INVITE (``parent`` None), or a referred
    call the farm placed (``parent`` is the first dialog's Call-ID)."""

    device: Device
    call_id: str
    local_tag: str
    local_uri: str  #: our URI as in the INVITE's To/From, without tag
    remote: str  #: sipdial's From/To value with its tag
    remote_target: str  #: sipdial's Contact URI (Request-URI of our requests)
    from_user: str = ""
    parent: str | None = None
    cseq: int = 0  #: our last CSeq in this dialog
    ended: bool = False
    #: INVITEs answered 2xx whose ACK is awaited, by CSeq number (a re-INVITE may come
    #: before the first ACK, lost, is retransmitted)
    unacked: dict[int, ServerTxn] = field(default_factory=dict)
    offer: bytes = b""  #: sipdial's SDP offer (for the DTMF target)
    notify_queue: list[tuple[str, str]] = field(default_factory=list)
    notify_busy: bool = False
    dtmf_timestamp: int = 0


@dataclass(slots=True, eq=False)
class ServerTxn:
    """A request from sipdial and what we answered (resent when it comes again)."""

    key: tuple[str, str]
    addr: Addr
    head: str  #: Via/From/To(with our tag)/Call-ID/CSeq lines for responses
    last: bytes = b""
    status: int = 0
    final_at: float = 0.0
    interval: float = 0.0
    acked: bool = False
    dialog: Dialog | None = None
    initial: bool = False  #: the INVITE that opened the dialog (not a re-INVITE)
    cseq: int = 0  #: the request's CSeq number (an ACK for a 2xx is matched by it)


ResponseHandler: TypeAlias = Callable[[Response, float], None]
TimeoutHandler: TypeAlias = Callable[[float], None]


@dataclass(slots=True, eq=False)
class ClientTxn:
    """A request the farm sent: retransmitted (Timer A/E) until answered or 64*T1."""

    branch: str
    method: str
    data: bytes
    started: float
    interval: float
    on_response: ResponseHandler
    on_timeout: TimeoutHandler
    proceeding: bool = False
    done: bool = False
    ack: bytes = b""  #: for an INVITE answered finally: the ACK, resent for a retransmission


@dataclass(slots=True, eq=False)
class Referred:
    """The referred call a REFER asked for, while its INVITE is out."""

    device: Device
    parent: Dialog
    call_id: str
    from_tag: str
    uri: str  #: Request-URI (the Refer-To URI without headers)
    to_value: str
    referred_by: str | None
    cseq: int = 0
    authed: bool = False


# ------------------------------------------------------------------ the core


_TE_RTPMAP = re.compile(rb"^a=rtpmap:(\d+) telephone-event/8000", re.MULTILINE | re.I)
_AUDIO_FORMATS = re.compile(rb"^m=audio \d+ [A-Z/]+((?: \d+)*)", re.MULTILINE)


class FarmCore:
    """The devices' SIP behaviour without I/O: ``receive(data, addr, now)``, ``start(now)``,
    ``timers`` (run ``timers.run_due(now)`` at ``timers.next_deadline()``), ``drain()``.

    ``now`` is the wall clock (``time.time()``, as Twisted's ``reactor.seconds()``): it is
    also the events' ``"t"``. ``rtp_ports`` has one port per device in the order of
    :meth:`device_order`. ``on_ready(registered, failed)`` is called once, when every
    REGISTER has a final answer (or timed out).
    """

    def __init__(self, config: FarmConfig, local_port: int, rtp_ports: Sequence[int], *,
                 on_ready: Callable[[int, int], None] | None = None) -> None:
        self.config = config
        self.port = local_port
        self.timers = TimerHeap()
        self.stats = FarmStats()
        self._out: list[Datagram] = []
        self._events: list[str] = []
        self._on_ready = on_ready
        self._ready_sent = False
        self._t1 = config.t1
        self._t2 = config.t2
        self._t64 = 64 * config.t1
        self._via_prefix = f"Via: SIP/2.0/UDP {LOCAL_HOST}:{local_port};rport;branch=z9hG4bK"
        self._ids = 0
        self._tag_base = f"{os.getpid():x}{local_port:x}"
        self._reject_cut = config.reject_share
        self._noanswer_cut = config.reject_share + config.no_answer_share
        self._seed = str(config.seed).encode()
        order = self.device_order(config)
        if len(rtp_ports) != len(order):
            raise ValueError(f"{len(order)} devices but {len(rtp_ports)} RTP ports")
        self.devices: list[Device] = []
        self._by_contact: dict[str, Device] = {}
        for (user, index), rtp in zip(order, rtp_ports, strict=True):
            device = Device(user, index, rtp, config.password_template.format(user=user))
            device.contact_user = f"{user}-d{index}"
            device.reg_call_id = f"reg-{device.contact_user}-{self._tag_base}"
            device.ssrc = zlib.crc32(device.contact_user.encode()) or 1
            self.devices.append(device)
            self._by_contact[device.contact_user] = device
        self._server: dict[tuple[str, str], ServerTxn] = {}
        self._client: dict[str, ClientTxn] = {}
        self._dialogs: dict[tuple[str, str], Dialog] = {}
        self._pending_registers = len(self.devices)

    @staticmethod
    def device_order(config: FarmConfig) -> list[tuple[str, int]]:
        """(user, device index) of every device, in the order RTP ports are given."""
        return [(user, d) for user in config.users for d in range(1, config.devices + 1)]

    # ------------------------------------------------------------ adapter interface

    def drain(self) -> list[Datagram]:
        """What to send now: ``(data, address, source_port)``; 0 = the SIP socket."""
        out = self._out
        self._out = []
        return out

    def drain_events(self) -> list[str]:
        """Event lines (JSON, no newline) since the last call."""
        events = self._events
        self._events = []
        return events

    def pending_events(self) -> int:
        return len(self._events)

    def start(self, now: float) -> None:
        """Schedule the REGISTERs at ``register_rate`` per second from ``now``."""
        rate = self.config.register_rate
        if not self.devices:
            self._check_ready()
            return
        for i, device in enumerate(self.devices):
            self.timers.schedule(now + i / rate, functools.partial(self._register, device))

    def contact(self, device: Device) -> str:
        return f"<sip:{device.contact_user}@{LOCAL_HOST}:{self.port}>"

    # ------------------------------------------------------------ helpers

    def _id(self) -> str:
        self._ids += 1
        return f"{self._tag_base}x{self._ids}"

    def _event(self, now: float, ev: str, **fields: Any) -> None:
        fields = {"t": round(now, 6), "ev": ev, **fields}
        self._events.append(json.dumps(fields, separators=(",", ":")))

    def _send(self, data: bytes, addr: Addr | None = None, source: int = 0) -> None:
        self._out.append((data, addr or self.config.sipdial, source))
        if source == 0:
            self.stats.messages_out += 1
        else:
            self.stats.rtp_out += 1

    def _resend(self, data: bytes, addr: Addr | None = None) -> None:
        self.stats.retransmissions += 1
        self._send(data, addr)

    def _share(self, value: str) -> float:
        """A number in [0, 1) fixed by ``value`` and the seed."""
        # blake2b, not crc32: CRC is linear, so numbers differing in one digit got
        # correlated shares (every odd number busy)
        digest = hashlib.blake2b(value.encode(), digest_size=8, key=self._seed).digest()
        return int.from_bytes(digest, "big") / 18446744073709551616.0

    # ------------------------------------------------------------ receive

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """A datagram on the SIP socket. Never raises for bad input."""
        self.stats.messages_in += 1
        if not data.strip(b"\r\n"):
            return  # keep-alive
        try:
            message = parse_message(data)
        except ParseError:
            self.stats.parse_errors += 1
            return
        try:
            if isinstance(message, Response):
                self._response(message, now)
            else:
                self._request(message, addr, now)
        except (ParseError, AuthError, ValueError, KeyError):
            self.stats.parse_errors += 1

    # ------------------------------------------------------------ client transactions

    def _client_send(self, method: str, branch: str, data: bytes, now: float,
                     on_response: ResponseHandler, on_timeout: TimeoutHandler) -> ClientTxn:
        txn = ClientTxn(branch, method, data, now, self._t1, on_response, on_timeout)
        self._client[branch] = txn
        self._send(data)
        self.timers.schedule(now + self._t1, lambda t: self._client_timer(txn, t))
        return txn

    def _client_timer(self, txn: ClientTxn, now: float) -> None:
        if txn.done:
            return
        if now - txn.started >= self._t64 - 1e-9:  # Timer B / F
            txn.done = True
            self._client.pop(txn.branch, None)
            self.stats.timeouts += 1
            txn.on_timeout(now)
            return
        if txn.method == "INVITE":
            if txn.proceeding:
                # Timer A stops with a provisional response; wake at Timer B's time only to
                # notice a final answer that never comes (sipdial's own timeouts send one)
                return
            txn.interval *= 2  # Timer A: no cap
        else:
            txn.interval = self._t2 if txn.proceeding else min(2 * txn.interval, self._t2)
        self._resend(txn.data)
        deadline = min(now + txn.interval, txn.started + self._t64)
        self.timers.schedule(deadline, lambda t: self._client_timer(txn, t))

    def _response(self, response: Response, now: float) -> None:
        branch = peek_top_via(response).branch or ""
        txn = self._client.get(branch)
        if txn is None or cseq(response).method != txn.method:
            self.stats.unmatched += 1
            return
        status = response.status
        if txn.done:  # a retransmitted final response: ACK it again (INVITE)
            if status >= 200 and txn.ack:
                self._resend(txn.ack)
            return
        if status < 200:
            txn.proceeding = True
            return
        txn.done = True
        # linger for the final response's retransmissions (Timer D / K), then forget
        self.timers.schedule(now + self._t64, lambda t: self._forget_client(txn))
        txn.on_response(response, now)

    def _forget_client(self, txn: ClientTxn) -> None:
        if self._client.get(txn.branch) is txn:
            del self._client[txn.branch]

    # ------------------------------------------------------------ REGISTER

    def _register(self, device: Device, now: float, authorization: str | None = None) -> None:
        device.reg_cseq += 1
        branch = self._id()
        host = self.config.aor_host
        aor = f"<sip:{device.user}@{host}>"
        lines = [
            f"REGISTER sip:{host} SIP/2.0",
            f"{self._via_prefix}{branch}",
            "Max-Forwards: 70",
            f"From: {aor};tag=r{device.contact_user}",
            f"To: {aor}",
            f"Call-ID: {device.reg_call_id}",
            f"CSeq: {device.reg_cseq} REGISTER",
            f"Contact: {self.contact(device)}",
            f"Expires: {self.config.expires}",
            "User-Agent: sipdial-loadtest-farm",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
        self._client_send("REGISTER", "z9hG4bK" + branch, data, now,
                           lambda r, t: self._register_answered(device, r, t),
                           lambda t: self._register_timeout(device, t))

    def _register_answered(self, device: Device, response: Response, now: float) -> None:
        status = response.status
        if status in (401, 407) and not device.reg_authed:
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            credentials = self._answer(response, header, device, "REGISTER",
                                       f"sip:{self.config.aor_host}")
            if credentials is not None:
                device.reg_authed = True
                self._register(device, now, credentials)
                return
        if 200 <= status < 300:
            self.stats.registered += 1
            self._event(now, "registered", user=device.user, device=device.index)
        else:
            self.stats.register_failed += 1
            self._event(now, "register_failed", user=device.user, device=device.index,
                        status=status)
        self._register_done()

    def _register_timeout(self, device: Device, now: float) -> None:
        self.stats.register_failed += 1
        self._event(now, "timeout", method="REGISTER", user=device.user, device=device.index)
        self._event(now, "register_failed", user=device.user, device=device.index,
                    status=408)
        self._register_done()

    def _register_done(self) -> None:
        self._pending_registers -= 1
        self._check_ready()

    def _check_ready(self) -> None:
        if self._pending_registers <= 0 and not self._ready_sent:
            self._ready_sent = True
            if self._on_ready is not None:
                self._on_ready(self.stats.registered, self.stats.register_failed)

    def _answer(self, response: Response, header: str, device: Device, method: str,
                uri: str) -> str | None:
        """The Authorization value for a 401/407 (None: no usable Digest challenge)."""
        challenges = [c for value in response.headers.get_all(header)
                      for c in parse_challenges(value)]
        challenge = preferred_challenge(challenges)
        if challenge is None:
            return None
        credentials = answer_challenge(challenge, username=device.user,
                                       password=device.password, method=method, uri=uri,
                                       cnonce=self._id(), nc=1)
        return credentials.to_header()

    # ------------------------------------------------------------ requests from sipdial

    def _request(self, request: Request, addr: Addr, now: float) -> None:
        method = request.method
        branch = peek_top_via(request).branch or f"{call_id(request)}/{cseq(request).number}"
        if method == "ACK":
            self._ack(request, branch, now)
            return
        key = (branch, method)
        txn = self._server.get(key)
        if txn is not None:  # a retransmission: the last response again, no event
            self.stats.duplicates_in += 1
            if txn.last:
                self._resend(txn.last, txn.addr)
            return
        tag = to_tag(request)
        if method == "CANCEL":
            self._cancel(request, branch, addr, now)
            return
        if tag is None:
            if method == "INVITE":
                self._invite(request, key, addr, now)
            elif method == "OPTIONS":
                self._reply_once(request, key, addr, now, 200, "OK", tag=self._id())
            else:
                self._reply_once(request, key, addr, now, 501, "Not Implemented",
                                 tag=self._id())
            return
        dialog = self._dialogs.get((call_id(request), tag))
        if dialog is None or dialog.ended:
            self._reply_once(request, key, addr, now, 481, "Call/Transaction Does Not Exist")
            return
        if method == "INVITE":
            self._reinvite(request, key, addr, dialog, now)
        elif method == "BYE":
            self._reply_once(request, key, addr, now, 200, "OK")
            self._end_dialog(dialog)
            self._event(now, "bye", call_id=dialog.call_id, user=dialog.device.user,
                        device=dialog.device.index)
        elif method == "REFER":
            self._refer(request, key, addr, dialog, now)
        elif method in ("INFO", "OPTIONS", "NOTIFY", "UPDATE"):
            self._reply_once(request, key, addr, now, 200, "OK")
        else:
            self._reply_once(request, key, addr, now, 501, "Not Implemented")

    def _head(self, request: Request, tag: str | None) -> str:
        """The header lines every response to ``request`` copies (RFC 3261 §8.2.6)."""
        h = request.headers
        to_value = h.get("To") or ""
        if tag is not None and to_tag(request) is None:
            to_value = f"{to_value};tag={tag}"
        vias = "".join(f"Via: {v}\r\n" for v in h.get_all("Via"))
        return (f"{vias}From: {h.get('From')}\r\nTo: {to_value}\r\n"
                f"Call-ID: {h.get('Call-ID')}\r\nCSeq: {h.get('CSeq')}\r\n")

    @staticmethod
    def _build(txn: ServerTxn, status: int, reason: str, extra: str = "",
               body: bytes = b"") -> bytes:
        return (f"SIP/2.0 {status} {reason}\r\n{txn.head}{extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def _reply_once(self, request: Request, key: tuple[str, str], addr: Addr, now: float,
                    status: int, reason: str, *, tag: str | None = None,
                    extra: str = "") -> ServerTxn:
        """A non-INVITE request answered finally; remembered 64*T1 for retransmissions."""
        txn = ServerTxn(key, addr, self._head(request, tag))
        txn.status = status
        txn.last = self._build(txn, status, reason, extra)
        self._server[key] = txn
        self._send(txn.last, addr)
        self.timers.schedule(now + self._t64, lambda t: self._forget_server(txn))
        return txn

    def _forget_server(self, txn: ServerTxn) -> None:
        if self._server.get(txn.key) is txn:
            del self._server[txn.key]

    # ------------------------------------------------------------ INVITE (UAS)

    def _invite(self, request: Request, key: tuple[str, str], addr: Addr, now: float) -> None:
        uri = request.uri
        device = self._by_contact.get(uri.user or "") if isinstance(uri, SipURI) else None
        if device is None:
            txn = ServerTxn(key, addr, self._head(request, self._id()))
            self._server[key] = txn
            self._final(txn, 404, "Not Found", now)
            return
        cid = call_id(request)
        caller = peek_from(request)
        from_uri = caller.uri
        from_user = (from_uri.unquote_user() if isinstance(from_uri, SipURI) else None) or ""
        contacts = parse_name_addr_list(request.headers.get("Contact") or "")
        local_tag = self._id()
        dialog = Dialog(device, cid, local_tag, request.headers.get("To") or "",
                        request.headers.get("From") or "",
                        str(contacts[0].uri) if contacts else str(from_uri),
                        from_user=from_user, offer=request.body)
        txn = ServerTxn(key, addr, self._head(request, local_tag), dialog=dialog, initial=True,
                        cseq=cseq(request).number)
        self._server[key] = txn
        self._dialogs[(cid, local_tag)] = dialog
        self.stats.calls += 1
        self._event(now, "invite", user=device.user, device=device.index, call_id=cid,
                    from_user=from_user, retrans=False)
        txn.status = 180
        txn.last = self._build(txn, 180, "Ringing", f"Contact: {self.contact(device)}\r\n")
        self._send(txn.last, addr)
        # by the dialled number (unique per POST in the harness) so that every device of a
        # forked call decides alike (sipdial gives each fork branch its own Call-ID)
        share = self._share(from_user or cid)
        if share < self._reject_cut:
            self._final(txn, 486, "Busy Here", now)
            self._end_dialog(dialog)
            self._event(now, "rejected", status=486, call_id=cid, user=device.user,
                        device=device.index)
        elif share < self._noanswer_cut:
            pass  # ring until sipdial CANCELs
        elif self.config.answer_delay > 0:
            self.timers.schedule(now + self.config.answer_delay,
                                 lambda t: self._answer_invite(txn, request, t))
        else:
            self._answer_invite(txn, request, now)

    def _answer_invite(self, txn: ServerTxn, request: Request, now: float) -> None:
        dialog = txn.dialog
        if dialog is None or dialog.ended or txn.status >= 200:
            return  # CANCELled or BYEd meanwhile
        device = dialog.device
        body = self._sdp(device, request.body)
        extra = (f"Contact: {self.contact(device)}\r\nContent-Type: application/sdp\r\n")
        self._final(txn, 200, "OK", now, extra, body)
        dialog.unacked[txn.cseq] = txn
        self._event(now, "answered", call_id=dialog.call_id, user=device.user,
                    device=device.index)

    def _reinvite(self, request: Request, key: tuple[str, str], addr: Addr, dialog: Dialog,
                  now: float) -> None:
        txn = ServerTxn(key, addr, self._head(request, None), dialog=dialog,
                        cseq=cseq(request).number)
        self._server[key] = txn
        device = dialog.device
        body = self._sdp(device, request.body)
        extra = f"Contact: {self.contact(device)}\r\nContent-Type: application/sdp\r\n"
        self._final(txn, 200, "OK", now, extra, body)
        dialog.unacked[txn.cseq] = txn
        self._event(now, "reinvite", call_id=dialog.call_id, user=device.user,
                    device=device.index)

    def _final(self, txn: ServerTxn, status: int, reason: str, now: float, extra: str = "",
               body: bytes = b"") -> None:
        """A final response to an INVITE: retransmitted (T1 doubling to T2) until the ACK,
        at most 64*T1 (RFC 3261 §13.3.1.4 for 2xx, Timer G/H otherwise)."""
        txn.status = status
        txn.last = self._build(txn, status, reason, extra, body)
        txn.final_at = now
        txn.interval = self._t1
        self._send(txn.last, txn.addr)
        self.timers.schedule(now + self._t1, lambda t: self._final_timer(txn, t))

    def _final_timer(self, txn: ServerTxn, now: float) -> None:
        if txn.acked:
            return
        dialog = txn.dialog
        if now - txn.final_at >= self._t64 - 1e-9:
            self._forget_server(txn)
            if txn.status < 300 and dialog is not None and not dialog.ended:
                self.stats.timeouts += 1
                self._event(now, "timeout", method="ACK", call_id=dialog.call_id,
                            user=dialog.device.user, device=dialog.device.index)
            return
        if txn.status < 300 and dialog is not None and dialog.ended:
            self.timers.schedule(txn.final_at + self._t64, lambda t: self._forget_server(txn))
            return  # BYE came (our 2xx was received): no more retransmissions
        self._resend(txn.last, txn.addr)
        txn.interval = min(2 * txn.interval, self._t2)
        deadline = min(now + txn.interval, txn.final_at + self._t64)
        self.timers.schedule(deadline, lambda t: self._final_timer(txn, t))

    def _ack(self, request: Request, branch: str, now: float) -> None:
        txn = self._server.get((branch, "INVITE"))
        if txn is not None and txn.status >= 300:  # ACK of a non-2xx: same transaction
            if not txn.acked:
                txn.acked = True
                self.timers.schedule(now + self._t64, lambda t: self._forget_server(txn))
            return
        tag = to_tag(request)
        dialog = self._dialogs.get((call_id(request), tag or ""))
        unacked = dialog.unacked.pop(cseq(request).number, None) if dialog is not None else None
        if dialog is None or unacked is None:
            self.stats.unmatched += 1
            return
        unacked.acked = True
        self.timers.schedule(unacked.final_at + self._t64,
                             lambda t: self._forget_server(unacked))
        if unacked.initial:
            self._event(now, "acked", call_id=dialog.call_id, user=dialog.device.user,
                        device=dialog.device.index)
            if self.config.dtmf_after is not None:
                self.timers.schedule(now + self.config.dtmf_after,
                                     lambda t: self._dtmf(dialog, 0, t))

    def _cancel(self, request: Request, branch: str, addr: Addr, now: float) -> None:
        invite = self._server.get((branch, "INVITE"))
        key = (branch, "CANCEL")
        if invite is None:
            self._reply_once(request, key, addr, now, 481, "Call/Transaction Does Not Exist")
            return
        self._reply_once(request, key, addr, now, 200, "OK")
        if invite.status >= 200:
            return  # answered already: the CANCEL changes nothing
        self._final(invite, 487, "Request Terminated", now)
        dialog = invite.dialog
        if dialog is not None:
            self._end_dialog(dialog)
            self._event(now, "cancelled", call_id=dialog.call_id, user=dialog.device.user,
                        device=dialog.device.index)

    def _end_dialog(self, dialog: Dialog) -> None:
        dialog.ended = True
        self._dialogs.pop((dialog.call_id, dialog.local_tag), None)

    # ------------------------------------------------------------ SDP

    def _sdp(self, device: Device, offer: bytes) -> bytes:
        """An answer to ``offer`` (or an offer of our own if it is empty): the device's RTP
        port on 127.0.0.1, PCMU/PCMA and telephone-event as offered."""
        formats = [b"0", b"8"]
        event_pt = b"101"
        if offer:
            m = _AUDIO_FORMATS.search(offer)
            offered = m.group(1).split() if m else []
            common = [f for f in offered if f in (b"0", b"8")]
            formats = common or formats
            te = _TE_RTPMAP.search(offer)
            event_pt = te.group(1) if te else b""
        fmt = " ".join(f.decode() for f in formats)
        host, port = self.config.media_to or (LOCAL_HOST, device.rtp_port)
        lines = [
            "v=0",
            f"o=farm {device.rtp_port} 1 IN IP4 {host}",
            "s=farm",
            f"c=IN IP4 {host}",
            "t=0 0",
            f"m=audio {port} RTP/AVP {fmt}{' ' + event_pt.decode() if event_pt else ''}",
        ]
        names = {"0": "PCMU", "8": "PCMA"}
        lines += [f"a=rtpmap:{f} {names[f]}/8000" for f in fmt.split()]
        if event_pt:
            lines += [f"a=rtpmap:{event_pt.decode()} telephone-event/8000",
                      f"a=fmtp:{event_pt.decode()} 0-16"]
        lines += ["a=ptime:20", f"a={sdp.answer_direction(offer) if offer else 'sendrecv'}"]
        return ("\r\n".join(lines) + "\r\n").encode()

    # ------------------------------------------------------------ REFER and the referred call

    def _refer(self, request: Request, key: tuple[str, str], addr: Addr, dialog: Dialog,
               now: float) -> None:
        device = dialog.device
        refer_to = request.headers.get("Refer-To")
        targets = parse_name_addr_list(refer_to) if refer_to else []
        target = targets[0].uri if targets else None
        if not isinstance(target, SipURI):
            self._reply_once(request, key, addr, now, 400, "Bad Refer-To")
            return
        self._reply_once(request, key, addr, now, 202, "Accepted",
                         extra=f"Contact: {self.contact(device)}\r\n")
        self._event(now, "refer", refer_to=refer_to, call_id=dialog.call_id,
                    user=device.user, device=device.index)
        self._notify(dialog, "SIP/2.0 100 Trying", "active;expires=60", now)
        uri = target.copy(params={}, headers={}) if self.config.drop_refer_params \
            else target.copy(headers={})
        to_uri = target.copy(params={}, headers={})
        referred = Referred(device, dialog, f"ref-{self._id()}", self._id(), str(uri),
                            f"<{to_uri}>", request.headers.get("Referred-By"))
        self.stats.referred += 1
        self._event(now, "referred_invite", call_id=referred.call_id, parent=dialog.call_id,
                    user=device.user, device=device.index)
        self._referred_invite(referred, now, None)

    def _referred_invite(self, referred: Referred, now: float,
                         authorization: str | None) -> None:
        """Send (or, with ``authorization`` = a whole header line, resend) the INVITE."""
        referred.cseq += 1
        device = referred.device
        branch = "z9hG4bK" + self._id()
        body = self._sdp(device, b"")
        lines = [
            f"INVITE {referred.uri} SIP/2.0",
            f"{self._via_prefix}{branch[7:]}",
            "Max-Forwards: 70",
            f"From: <sip:{device.user}@{self.config.aor_host}>;tag={referred.from_tag}",
            f"To: {referred.to_value}",
            f"Call-ID: {referred.call_id}",
            f"CSeq: {referred.cseq} INVITE",
            f"Contact: {self.contact(device)}",
            "User-Agent: sipdial-loadtest-farm",
            "Content-Type: application/sdp",
        ]
        if referred.referred_by:
            lines.append(f"Referred-By: {referred.referred_by}")
        if authorization:
            lines.append(authorization)
        data = ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        self._client_send("INVITE", branch, data, now,
                          lambda r, t: self._referred_answered(referred, branch, r, t),
                          lambda t: self._referred_timeout(referred, t))

    def _referred_answered(self, referred: Referred, branch: str, response: Response,
                           now: float) -> None:
        txn = self._client.get(branch)
        status = response.status
        device = referred.device
        if status >= 300:
            ack = self._ack_bytes(referred, f"{self._via_prefix}{branch[7:]}", referred.uri,
                                  response.headers.get("To") or referred.to_value)
            if txn is not None:
                txn.ack = ack
            self._send(ack)
            if status in (401, 407) and not referred.authed:
                header = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
                credentials = self._answer(response, header, device, "INVITE", referred.uri)
                if credentials is not None:
                    referred.authed = True
                    name = "Proxy-Authorization" if status == 407 else "Authorization"
                    self._referred_invite(referred, now, f"{name}: {credentials}")
                    return
            self._event(now, "referred_failed", status=status, call_id=referred.call_id,
                        parent=referred.parent.call_id, user=device.user, device=device.index)
            self._notify(referred.parent, f"SIP/2.0 {status} {response.reason}",
                         "terminated;reason=noresource", now)
            return
        # 2xx: the referred dialog is established; ACK to the 200's Contact via sipdial
        contacts = parse_name_addr_list(response.headers.get("Contact") or "")
        target = str(contacts[0].uri) if contacts else referred.uri
        remote = response.headers.get("To") or referred.to_value
        ack = self._ack_bytes(referred, f"{self._via_prefix}{self._id()}", target, remote)
        if txn is not None:
            txn.ack = ack
        self._send(ack)
        dialog = Dialog(device, referred.call_id, referred.from_tag,
                        f"<sip:{device.user}@{self.config.aor_host}>", remote, target,
                        parent=referred.parent.call_id, cseq=referred.cseq)
        self._dialogs[(referred.call_id, referred.from_tag)] = dialog
        self._event(now, "referred_connected", status=status, call_id=referred.call_id,
                    parent=referred.parent.call_id, user=device.user, device=device.index)
        self._notify(referred.parent, f"SIP/2.0 {status} {response.reason}",
                     "terminated;reason=noresource", now)

    def _ack_bytes(self, referred: Referred, via: str, uri: str, to_value: str) -> bytes:
        device = referred.device
        lines = [
            f"ACK {uri} SIP/2.0",
            via,
            "Max-Forwards: 70",
            f"From: <sip:{device.user}@{self.config.aor_host}>;tag={referred.from_tag}",
            f"To: {to_value}",
            f"Call-ID: {referred.call_id}",
            f"CSeq: {referred.cseq} ACK",
        ]
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def _referred_timeout(self, referred: Referred, now: float) -> None:
        device = referred.device
        self._event(now, "timeout", method="INVITE", call_id=referred.call_id,
                    user=device.user, device=device.index)
        self._event(now, "referred_failed", status=408, call_id=referred.call_id,
                    parent=referred.parent.call_id, user=device.user, device=device.index)
        self._notify(referred.parent, "SIP/2.0 408 Request Timeout",
                     "terminated;reason=noresource", now)

    # ------------------------------------------------------------ NOTIFY (one at a time)

    def _notify(self, dialog: Dialog, frag: str, state: str, now: float) -> None:
        dialog.notify_queue.append((frag, state))
        if not dialog.notify_busy:
            self._next_notify(dialog, now)

    def _next_notify(self, dialog: Dialog, now: float) -> None:
        if not dialog.notify_queue or dialog.ended:
            dialog.notify_busy = False
            dialog.notify_queue.clear()
            return
        frag, state = dialog.notify_queue.pop(0)
        dialog.notify_busy = True
        dialog.cseq += 1
        branch = "z9hG4bK" + self._id()
        body = (frag + "\r\n").encode()
        lines = [
            f"NOTIFY {dialog.remote_target} SIP/2.0",
            f"{self._via_prefix}{branch[7:]}",
            "Max-Forwards: 70",
            f"From: {dialog.local_uri};tag={dialog.local_tag}",
            f"To: {dialog.remote}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {dialog.cseq} NOTIFY",
            f"Contact: {self.contact(dialog.device)}",
            "Event: refer",
            f"Subscription-State: {state}",
            "Content-Type: message/sipfrag;version=2.0",
        ]
        data = ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        self._client_send("NOTIFY", branch, data, now,
                          lambda r, t: self._next_notify(dialog, t),
                          lambda t: self._notify_timeout(dialog, t))

    def _notify_timeout(self, dialog: Dialog, now: float) -> None:
        self._event(now, "timeout", method="NOTIFY", call_id=dialog.call_id,
                    user=dialog.device.user, device=dialog.device.index)
        self._next_notify(dialog, now)

    # ------------------------------------------------------------ DTMF (RFC 4733)

    def _dtmf(self, dialog: Dialog, packet: int, now: float) -> None:
        """Packet ``packet`` (0..2) of telephone-event "1", 20 ms apart, end bit on the last,
        to the RTP address of sipdial's offer, from the device's RTP socket."""
        if dialog.ended:
            return
        answer = sdp.parse_answer(dialog.offer) if dialog.offer else None
        if answer is None or answer.event_payload_type is None:
            if packet == 0:
                self._event(now, "dtmf_skipped", call_id=dialog.call_id,
                            user=dialog.device.user, device=dialog.device.index)
            return
        device = dialog.device
        if packet == 0:
            device.rtp_seq = (device.rtp_seq + 1) & 0xFFFF
        seq = (device.rtp_seq + packet) & 0xFFFF
        if packet == 0:
            dialog.dtmf_timestamp = int(now * 8000) & 0xFFFFFFFF
        timestamp = dialog.dtmf_timestamp
        end = packet == 2
        marker = 0x80 if packet == 0 else 0
        header = struct.pack("!BBHII", 0x80, marker | answer.event_payload_type, seq,
                             timestamp, device.ssrc)
        payload = struct.pack("!BBH", 1, (0x80 if end else 0) | 10, 160 * (packet + 1))
        self._send(header + payload, (answer.host, answer.port), device.rtp_port)
        if end:
            device.rtp_seq = seq
            self._event(now, "dtmf", digit="1", call_id=dialog.call_id, user=device.user,
                        device=device.index)
        else:
            self.timers.schedule(now + 0.02, lambda t: self._dtmf(dialog, packet + 1, t))




# ------------------------------------------------------------------ Twisted adapter


class _UdpPort(Protocol):
    """What the farm uses of ``twisted.internet.udp.Port`` (zope interfaces do not type)."""

    def write(self, datagram: bytes, addr: Any = None) -> None: ...

    def getHost(self) -> Any: ...

    def getHandle(self) -> socket.socket: ...


class _DelayedCall(Protocol):
    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class _Reactor(Protocol):
    """The parts of Twisted's reactor the farm uses (``IReactorTime``, ``IReactorUDP``)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: object,
                  **kw: object) -> _DelayedCall: ...

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> _UdpPort: ...

    def stop(self) -> None: ...

    def run(self) -> None: ...


class _SipSocket(DatagramProtocol):
    def __init__(self, runner: FarmRunner) -> None:
        self.runner = runner

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.runner.datagram(datagram, addr)


class _RtpSink(DatagramProtocol):
    """A device's RTP socket: what arrives is discarded."""

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        pass


class FarmRunner:
    """Binds the sockets, feeds :class:`FarmCore`, keeps ONE reactor timer armed for the
    core's earliest deadline, writes the events file in chunks and the ready file once."""

    def __init__(self, reactor: _Reactor, config: FarmConfig, *, port: int = 0,
                 ready_file: Path | None = None, events_file: Path | None = None) -> None:
        self.reactor = reactor
        self.config = config
        self.ready_file = ready_file
        self._events_fh: IO[str] | None = (events_file.open("w", encoding="utf-8")
                                            if events_file is not None else None)
        self.sip = reactor.listenUDP(port, _SipSocket(self), interface=LOCAL_HOST,
                                     maxPacketSize=65535)
        _big_buffers(self.sip)
        self.port: int = self.sip.getHost().port
        self.rtp: dict[int, _UdpPort] = {}
        ports = []
        for _ in FarmCore.device_order(config):
            listening = reactor.listenUDP(0, _RtpSink(), interface=LOCAL_HOST)
            rtp_port: int = listening.getHost().port
            self.rtp[rtp_port] = listening
            ports.append(rtp_port)
        self.core = FarmCore(config, self.port, ports, on_ready=self._ready)
        self._call: _DelayedCall | None = None
        self._call_at = 0.0

    def start(self) -> None:
        self.core.start(self.reactor.seconds())
        self._flush()

    def datagram(self, data: bytes, addr: Addr) -> None:
        self.core.receive(data, addr, self.reactor.seconds())
        self._flush()

    def _fire(self) -> None:
        self._call = None
        self.core.timers.run_due(self.reactor.seconds())
        self._flush()

    def _flush(self) -> None:
        core = self.core
        for data, addr, source in core.drain():
            sock = self.sip if source == 0 else self.rtp.get(source)
            if sock is None:
                continue
            try:
                sock.write(data, addr)
            except OSError:
                pass  # a full socket buffer or an unreachable port: UDP loses it
        if core.pending_events() >= EVENT_CHUNK:
            self._write_events()
        deadline = core.timers.next_deadline()
        if deadline is None:
            return
        call = self._call
        if call is not None:
            if self._call_at <= deadline:
                return
            call.cancel()
        self._call_at = deadline
        self._call = self.reactor.callLater(max(0.0, deadline - self.reactor.seconds()),
                                            self._fire)

    def _write_events(self) -> None:
        lines = self.core.drain_events()
        if lines and self._events_fh is not None:
            self._events_fh.write("\n".join(lines) + "\n")

    def _ready(self, registered: int, failed: int) -> None:
        if self.ready_file is None:
            return
        tmp = self.ready_file.with_name(self.ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"port": self.port, "registered": registered,
                                   "failed": failed}))
        tmp.replace(self.ready_file)  # the harness never reads half a file

    def finish(self) -> dict[str, Any]:
        """Flush the events, close everything; the exit statistics."""
        self._write_events()
        if self._events_fh is not None:
            self._events_fh.close()
            self._events_fh = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                **dataclasses.asdict(self.core.stats)}


def _big_buffers(port: _UdpPort) -> None:
    """4 MiB socket buffers (capped by net.core.[rw]mem_max): a burst of sipdial's answers
    must not be dropped by the kernel before the farm reads them."""
    try:
        sock = port.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    except OSError:
        pass


# ------------------------------------------------------------------ command line


def parse_users(text: str) -> tuple[str, ...]:
    """``"1-200"`` -> ("1", ..., "200"); ``"7"`` -> ("7",); ``"1-3,10"`` also works."""
    users: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, sep, last = part.partition("-")
        if sep:
            lo, hi = int(first), int(last)
            if hi < lo:
                raise ValueError(f"empty user range {part!r}")
            users.extend(str(n) for n in range(lo, hi + 1))
        else:
            users.append(str(int(part)))
    if not users:
        raise ValueError("no users")
    return tuple(users)


def _address(text: str) -> Addr:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"HOST:PORT expected, got {text!r}")
    return host.strip("[]"), int(port)


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a share is between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.farm",
                                 description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sipdial", type=_address, required=True,
                    help="sipdial's SIP UDP address HOST:PORT")
    ap.add_argument("--users", required=True, help="FIRST-LAST, e.g. 1-200")
    ap.add_argument("--devices", type=int, default=1, help="devices per user (1)")
    ap.add_argument("--password-template", default="pw-{user}-load")
    ap.add_argument("--domain", default="",
                    help="host of the AORs and REGISTER Request-URI (default: sipdial's host)")
    ap.add_argument("--port", type=int, default=0, help="local UDP port (0: any)")
    ap.add_argument("--ready-file", type=Path, default=None)
    ap.add_argument("--events", type=Path, default=None, help="JSON-lines event log")
    ap.add_argument("--reject-share", type=_share, default=0.0)
    ap.add_argument("--no-answer-share", type=_share, default=0.0)
    ap.add_argument("--answer-delay", type=float, default=0.0, metavar="MS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--register-rate", type=float, default=500.0)
    ap.add_argument("--dtmf-after", type=float, default=None, metavar="MS",
                    help="send RFC 4733 '1' this many ms after the ACK (default: never)")
    ap.add_argument("--media-to", type=_address, default=None, metavar="HOST:PORT",
                    help="the audio address every device's SDP names (loadtest.rtp_probe)")
    ap.add_argument("--drop-refer-params", action="store_true",
                    help="the referred INVITE without the Refer-To URI's parameters")
    args = ap.parse_args(argv)
    try:
        users = parse_users(args.users)
    except ValueError as exc:
        ap.error(f"--users: {exc}")
    if args.devices < 1 or args.register_rate <= 0 or args.max_seconds <= 0:
        ap.error("--devices, --register-rate and --max-seconds must be positive")
    if args.reject_share + args.no_answer_share > 1.0:
        ap.error("--reject-share + --no-answer-share is more than 1")
    config = FarmConfig(
        sipdial=args.sipdial, users=users, devices=args.devices,
        password_template=args.password_template, domain=args.domain,
        reject_share=args.reject_share, no_answer_share=args.no_answer_share,
        answer_delay=args.answer_delay / 1000.0, seed=args.seed,
        register_rate=args.register_rate,
        dtmf_after=None if args.dtmf_after is None else args.dtmf_after / 1000.0,
        media_to=args.media_to, drop_refer_params=args.drop_refer_params)
    stats = run(config, port=args.port, ready_file=args.ready_file, events_file=args.events,
                max_seconds=args.max_seconds)
    print(json.dumps(stats), flush=True)
    return 0


def run(config: FarmConfig, *, port: int = 0, ready_file: Path | None = None,
        events_file: Path | None = None, max_seconds: float = 600.0) -> dict[str, Any]:
    """Run the farm on the global reactor until ``max_seconds``, SIGTERM or SIGINT."""
    from twisted.internet import reactor as global_reactor

    reactor = cast(_Reactor, global_reactor)
    runner = FarmRunner(reactor, config, port=port, ready_file=ready_file,
                        events_file=events_file)
    reactor.callLater(0, runner.start)
    reactor.callLater(max_seconds, reactor.stop)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    reactor.run()  # installs SIGINT/SIGTERM handlers that stop it
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
