"""A registering softphone made of pyVoIP 1.6.8, for tests that need a second,
independent SIP stack (UDP only, PCMU only).

pyVoIP quirks handled or worth knowing:

* ``pyVoIP.VoIP`` must be imported before ``pyVoIP.SIP`` (circular import).
* It binds its own SIP UDP port (``sipPort``; a free one is picked here) and
  sends *every* request and response to the configured server:port, never to
  Via/Contact: it only works behind a proxy/registrar such as sipdial.
* ``start()`` registers synchronously (``register_timeout``, default 30 s; set
  to ``timeout`` here) and on failure retries in background timers and finally
  gives up (status FAILED); :meth:`PyVoIPPhone.start` raises instead.
* Digest auth ignores ``qop`` (answers RFC 2069 style), MD5 only.
* An incoming INVITE gets 180 at once; the call callback runs in a Timer
  thread 1 s later, so auto-answer happens ~1 s after the INVITE.
* A CANCEL is acknowledged with 200 but no 487 is sent for the INVITE.
* RTP ports are picked at random from ``rtpPortLow..rtpPortHigh`` without
  checking they are free; a small block of free ports is passed here.
* The ``From`` display name that pyVoIP parses keeps a stray quote, so the
  name is re-parsed from the raw header here.
"""

from __future__ import annotations

import math
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pyVoIP.VoIP  # noqa: F401  - must precede pyVoIP.SIP (circular import)
from pyVoIP.VoIP import CallState, InvalidStateError, PhoneStatus, VoIPCall, VoIPPhone

from tests.peers.ports import LOOPBACK, free_port, free_port_block

_DISPLAY_RE = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<')


class PyVoIPError(RuntimeError):
    pass


@dataclass
class PhoneEvent:
    """What happened to the phone; ``kind`` is incoming/answered/bye/cancel."""

    kind: str
    call_id: str
    display_name: str = ""
    from_user: str | None = None
    from_uri: str = ""
    to_user: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


def display_name_of(raw_from: str) -> str:
    """Display name of a From/To header value ('"Ann B" <sip:..>' -> 'Ann B')."""
    m = _DISPLAY_RE.match(raw_from)
    if not m:
        return ""
    quoted, token = m.groups()
    if quoted is not None:
        return re.sub(r"\\(.)", r"\1", quoted)
    return (token or "").strip()


class _RecordingPhone(VoIPPhone):
    """VoIPPhone that reports BYE and CANCEL to its owner."""

    owner: PyVoIPPhone

    def callback(self, request: Any) -> None:
        method = getattr(request, "method", None)
        if method == "CANCEL":
            self.owner._record("cancel", request)
        super().callback(request)

    def _callback_MSG_Bye(self, request: Any) -> None:
        super()._callback_MSG_Bye(request)
        self.owner._record("bye", request)


class PyVoIPPhone:
    """Registers ``user``/``password`` at ``server_port`` on 127.0.0.1 and answers.

    >>> phone = PyVoIPPhone(5060, "202", "secret202").start()    # doctest: +SKIP
    >>> ev = phone.wait_for("incoming", timeout=10)               # doctest: +SKIP
    >>> ev.display_name                                           # doctest: +SKIP
    'Call: +49 30 1234'
    >>> phone.stop()                                              # doctest: +SKIP

    ``incoming`` is a :class:`queue.Queue` of :class:`PhoneEvent` (kinds
    ``incoming``, ``answered``, ``bye``, ``cancel``); :meth:`wait_for` skips
    events of other kinds (they stay in :attr:`history`).
    """

    def __init__(
        self,
        server_port: int,
        user: str,
        password: str,
        *,
        server: str = LOOPBACK,
        auto_answer: bool = True,
        sip_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        expires: int = 120,
        timeout: float = 5.0,
    ) -> None:
        self.server = server
        self.server_port = server_port
        self.user = user
        self.auto_answer = auto_answer
        self.sip_port = sip_port if sip_port is not None else free_port("udp")
        if rtp_ports is None:
            low = free_port_block(8, ("udp",))
            rtp_ports = (low, low + 7)
        self.rtp_ports = rtp_ports
        self.timeout = timeout
        self.incoming: queue.Queue[PhoneEvent] = queue.Queue()
        self.history: list[PhoneEvent] = []
        self.calls: dict[str, VoIPCall] = {}
        self._lock = threading.Lock()
        self.phone = _RecordingPhone(
            server,
            server_port,
            user,
            password,
            myIP=LOOPBACK,
            callCallback=self._on_call,
            sipPort=self.sip_port,
            rtpPortLow=rtp_ports[0],
            rtpPortHigh=rtp_ports[1],
        )
        self.phone.owner = self
        self.phone.sip.register_timeout = max(1, math.ceil(timeout))
        self.phone.sip.default_expires = expires

    # -------------------------------------------------------------- control
    def start(self) -> PyVoIPPhone:
        """Register (blocking, bounded by ``timeout``); raises if it fails."""
        try:
            self.phone.start()
        except Exception as exc:
            self.stop()
            raise PyVoIPError(f"pyVoIP {self.user}: could not start: {exc!r}") from exc
        if self.phone.get_status() != PhoneStatus.REGISTERED:
            status = self.phone.get_status()
            self.stop()
            raise PyVoIPError(
                f"pyVoIP {self.user}: not registered at {self.server}:{self.server_port} "
                f"(status {status.value})"
            )
        return self

    @property
    def registered(self) -> bool:
        return bool(self.phone.get_status() == PhoneStatus.REGISTERED)

    def stop(self) -> None:
        """Hang up, de-register (bounded by ``timeout``) and close sockets."""
        self.phone.sip.register_timeout = max(1, min(math.ceil(self.timeout), 2))
        try:
            self.phone.stop()
        except Exception:  # already stopped, socket gone, server gone ...
            self.phone.sip._close_sockets()

    def __enter__(self) -> PyVoIPPhone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- calls
    def _on_call(self, call: VoIPCall) -> None:
        """pyVoIP's call callback (its own Timer thread, ~1 s after the INVITE)."""
        call_id = str(call.call_id)
        with self._lock:
            self.calls[call_id] = call
        self._record("incoming", call.request)
        if self.auto_answer and call.state == CallState.RINGING:
            try:
                call.answer()
            except InvalidStateError:
                return  # cancelled meanwhile
            self._record("answered", call.request)

    def answer(self, call_id: str | None = None) -> None:
        call = self._call(call_id)
        call.answer()
        self._record("answered", call.request)

    def hangup(self, call_id: str | None = None) -> None:
        self._call(call_id).hangup()

    def _call(self, call_id: str | None) -> VoIPCall:
        with self._lock:
            if call_id is None:
                if not self.calls:
                    raise PyVoIPError("no call")
                return list(self.calls.values())[-1]
            return self.calls[call_id]

    def _record(self, kind: str, request: Any) -> None:
        headers = dict(getattr(request, "headers", {}) or {})
        frm = headers.get("From") or {}
        to = headers.get("To") or {}
        ev = PhoneEvent(
            kind=kind,
            call_id=str(headers.get("Call-ID", "")),
            display_name=display_name_of(str(frm.get("raw", ""))),
            from_user=frm.get("number"),
            from_uri=str(frm.get("address", "")),
            to_user=to.get("number"),
            headers=headers,
        )
        self.history.append(ev)
        self.incoming.put(ev)

    def wait_for(self, kind: str = "incoming", timeout: float = 10.0) -> PhoneEvent:
        """Next queued event of ``kind`` (others are dropped from the queue)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                ev = self.incoming.get(timeout=remaining)
            except queue.Empty:
                break
            if ev.kind == kind:
                return ev
        seen = [e.kind for e in self.history]
        raise TimeoutError(f"pyVoIP {self.user}: no {kind!r} within {timeout}s; seen {seen}")
