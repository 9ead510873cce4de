"""Twisted adapter for sipdial's own media: RTP sockets, the shared tick, DTMF dispatch.

It runs in the process that uses it (tests, ``[media] process = false``) or in a media
process of its own (:mod:`sipdial.media.process`, where :meth:`MediaManager.adopt` takes the
sockets the SIP process bound).

Glue only: one UDP port per call (symmetric RTP: we send from the port our SDP names), ONE
timer that runs :meth:`Player.tick` while anything plays (every 20 ms / ``phases``, where the
player's grid says) and writes the
packets it returns, and incoming datagrams parsed as RTP and fed to the call's DTMF receiver.
The reactor is injected (``IReactorUDP`` + ``IReactorTime``).

Incoming RTP is latched: the source of the first valid RTP packet after the phone's answer is
where the call's audio goes from then on (behind NAT the SDP names a private address) and
other sources are ignored, except the address the SDP names, which takes the latch back (a
scanner that raced the phone to a predictable port keeps neither the prompt nor the digits
once the phone speaks). Datagrams longer than G.711 of 60 ms are dropped unread.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import error, protocol

from sipdial.media.dtmf import InbandDetector, Rfc4733Receiver
from sipdial.media.g711 import alaw_to_pcm, ulaw_to_pcm
from sipdial.media.player import OnDone, Player
from sipdial.media.ports import PortRange
from sipdial.media.prompt import PromptLibrary
from sipdial.media.rtp import (
    MAX_AUDIO_PAYLOAD,
    MAX_EVENT_PAYLOAD,
    PCMA,
    PCMU,
    RtpSender,
    check_remote,
    parse_rtp,
)

log = logging.getLogger("sipdial.media")

OnDigit = Callable[[str, str, str], None]  #: on_digit(key, digit, "rfc4733" | "inband")
EARLY = 0.0005  #: seconds a tick is asked for before it is due (poll timeouts round up to 1 ms)


class _Rtp(protocol.DatagramProtocol):
    noisy = False  # no "Starting/Stopping protocol" log events for every call's port

    def __init__(self, manager: MediaManager, call: _Call) -> None:
        self.manager = manager
        self.call = call

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.manager._received(self.call, datagram, (addr[0], addr[1]))


class _Call:
    __slots__ = ("inband", "key", "latched", "on_digit", "payload_type", "port", "remote",
                 "rfc4733", "sender", "sendto", "telephone_event")

    def __init__(self, key: str, on_digit: OnDigit) -> None:
        self.key = key
        self.on_digit = on_digit
        self.port: Any = None  # IListeningPort
        self.sendto: Callable[[bytes, tuple[str, int]], int] | None = None  # the port's socket
        self.remote: tuple[str, int] | None = None
        # Symmetric RTP: the address the phone's RTP actually comes from. Behind NAT the SDP
        # names a private address; the source is where it can be reached. Latched to the
        # first valid packet, after which other sources are ignored (no injected digits).
        self.latched: tuple[str, int] | None = None
        self.payload_type = PCMU
        self.telephone_event: int | None = None
        self.sender: RtpSender | None = None
        self.rfc4733: Rfc4733Receiver | None = None
        self.inband: InbandDetector | None = None


class MediaManager:
    """Owns RTP sockets (one per call, from [media] port range or ephemeral), the shared
    timer that drives Player.tick, and incoming-RTP dispatch to DTMF detectors."""

    def __init__(self, reactor: Any, host: str, port_min: int, port_max: int,
                 prompts: PromptLibrary, *, phases: int = 1) -> None:
        self._ports = PortRange(port_min, port_max)  # ValueError for a bad range
        self.reactor = reactor
        self.host = host
        self.prompts = prompts  #: the library callers take frames from
        self.player = Player(phases=phases)  # see Player: ticks of 20 ms / phases
        self._calls: dict[str, _Call] = {}
        self._finished: list[tuple[OnDone, str, float]] = []
        self._wake: Any = None  # the DelayedCall of the next tick, while anything plays

    # -- calls ---------------------------------------------------------------------------------

    def open(self, key: str, on_digit: OnDigit) -> tuple[str, int]:
        """Bind an RTP port for ``key``; returns (host, port) for our SDP. ``on_digit(key,
        digit, how)`` is called for every key press received, ``how`` in {"rfc4733", "inband"}.
        Ports are even, handed out round robin in ``port_min..port_max`` (0/0: an ephemeral
        port). :class:`MediaPortsExhausted` when the range has no free even port, ``ValueError``
        if ``key`` is open already."""
        if key in self._calls:
            raise ValueError(f"media already open for {key!r}")
        call = _Call(key, on_digit)
        call.port = self._bind(_Rtp(self, call))
        call.sendto = call.port.socket.sendto
        self._calls[key] = call
        return self.host, int(call.port.getHost().port)

    def adopt(self, key: str, fd: int, family: int, on_digit: OnDigit) -> None:
        """Like :meth:`open` with a UDP socket bound elsewhere (the SIP worker, which put its
        port in the SDP and passed the descriptor here): the socket is duplicated, ``fd``
        stays the caller's to close. An ``open`` key is closed first (a resent open)."""
        self.close(key)
        call = _Call(key, on_digit)
        call.port = self.reactor.adoptDatagramPort(fd, family, _Rtp(self, call))
        call.sendto = call.port.socket.sendto
        self._calls[key] = call

    def set_remote(self, key: str, host: str, port: int, payload_type: int,
                   event_pt: int | None) -> None:
        """Where to send (from the peer's SDP) and the negotiated PTs: ``payload_type`` PCMU or
        PCMA, ``event_pt`` the peer's telephone-event PT or None (then DTMF is detected in-band
        in the audio). Takes effect for the next :meth:`play`; the RTP stream (SSRC, sequence)
        continues unless the payload type changes. ``ValueError`` for any other payload type,
        or a host that is not an IP address of the port's family, or a port out of range."""
        if payload_type not in (PCMU, PCMA):
            raise ValueError(f"sipdial plays PCMU/PCMA only, not PT {payload_type}")
        call = self._calls[key]
        check_remote(host, port, call.port.socket.family == socket.AF_INET6)
        call.remote = (host, port)
        if call.sender is None or call.sender.payload_type != payload_type:
            call.sender = RtpSender(payload_type)
        if payload_type != call.payload_type or event_pt != call.telephone_event:
            call.rfc4733 = call.inband = None
        call.payload_type = payload_type
        call.telephone_event = event_pt
        if event_pt is not None:
            call.rfc4733 = call.rfc4733 or Rfc4733Receiver()
        # In-band detection runs even when telephone-event was negotiated: some phones (pyVoIP
        # among them) accept it in SDP and still send tones in the audio. It stops at the first
        # RFC 4733 packet. Silence costs ~10 µs a frame, speech ~60 µs (loadtest/bench_dtmf).
        call.inband = call.inband or InbandDetector()

    def play(self, key: str, frames: Sequence[bytes], *, loop: bool = False,
             on_done: OnDone | None = None) -> None:
        """Play ``frames`` (from :attr:`prompts`, in the PT given to :meth:`set_remote`) from
        the next tick on, replacing what ``key`` played. ``on_done(key, now)`` runs after the
        last packet has been written to the socket. ``ValueError`` before :meth:`set_remote`."""
        call = self._calls[key]
        if call.remote is None or call.sender is None:
            raise ValueError(f"no remote RTP address for {key!r} yet (set_remote first)")
        done = None
        if on_done is not None:
            def done(k: str, now: float, cb: OnDone = on_done) -> None:
                self._finished.append((cb, k, now))
        self.player.play(key, call.remote, call.sender, frames, loop=loop, on_done=done)
        if self._wake is None:
            self._wake = self.reactor.callLater(self.player.interval, self._tick)

    def play_prompt(self, key: str, number: str, language: str) -> None:
        """Play "to connect to <number>, press 1" (:meth:`PromptLibrary.confirm_prompt`) in the
        payload type :meth:`set_remote` negotiated."""
        self.play(key, self.prompts.confirm_prompt(number, language, self._pt(key)))

    def play_tone(self, key: str, tone: str, *, loop: bool) -> None:
        """Play a call-progress tone (:meth:`PromptLibrary.tone`); ``ValueError`` if unknown."""
        self.play(key, self.prompts.tone(tone, self._pt(key)), loop=loop)

    def stop_playing(self, key: str) -> None:
        """Stop sending to ``key`` (no ``on_done``); the port stays open for DTMF."""
        self.player.stop(key)

    def close(self, key: str) -> None:
        """Stop playing and release ``key``'s port (the socket closes at the next reactor
        iteration); unknown keys are ignored."""
        self.player.stop(key)
        call = self._calls.pop(key, None)
        if call is not None:
            port, call.port, call.sendto = call.port, None, None
            # the port holds its protocol (_Rtp), which holds the call: without the call's
            # own reference to the port there is no cycle, and all three go by reference
            # counting once Twisted lets go of the closed port (else ~12 objects per call
            # for the cyclic collector, under load in pauses of seconds)
            port.stopListening()

    def stop(self) -> None:
        """Close every call and stop the tick (shutdown)."""
        for key in list(self._calls):
            self.close(key)
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None

    @property
    def calls(self) -> int:
        """Number of open RTP ports."""
        return len(self._calls)

    # -- internals -----------------------------------------------------------------------------

    def _pt(self, key: str) -> int:
        call = self._calls[key]
        if call.sender is None:
            raise ValueError(f"no remote RTP address for {key!r} yet (set_remote first)")
        return call.payload_type

    def _bind(self, rtp: _Rtp) -> Any:
        for port in self._ports.candidates():
            try:
                return self.reactor.listenUDP(port, rtp, interface=self.host)
            except error.CannotListenError:
                if port == 0:
                    raise
        raise self._ports.exhausted()

    def _tick(self) -> None:
        self._wake = None
        try:
            self._send_due()
        except Exception:  # a bug here must not silence every call for good
            log.exception("media tick failed")
        player = self.player
        if self._wake is None and (player.active or self._finished):
            # the next tick where the player's grid says (not a fixed period: after a
            # forgiven lag the grid restarts, and the timer follows it), asked for a little
            # early: the reactor's poll rounds its timeout up to the next millisecond
            due = player.next_due
            now = self.reactor.seconds()
            delay = player.interval if due is None else due - now - min(EARLY, player.interval / 4)
            self._wake = self.reactor.callLater(max(0.0, delay), self._tick)

    def _send_due(self) -> None:
        calls = self._calls
        for key, remote, data in self.player.tick(self.reactor.seconds()):
            call = calls.get(key)
            if call is None or call.sendto is None:
                continue
            try:
                # the socket's own sendto: Port.write checks the address anew for each of
                # the 50 packets per second and stream (a quarter of the tick's time);
                # set_remote made sure it is an IP address and a port
                call.sendto(data, call.latched or remote)
            except OSError as exc:  # e.g. ENETUNREACH, ECONNREFUSED, EAGAIN: drop this one
                log.debug("RTP to %s for %r not sent: %s", remote, key, exc)
            except Exception:  # never the other streams' packets of this tick
                log.exception("RTP to %s for %r not sent", remote, key)
        finished, self._finished = self._finished, []
        for on_done, key, now in finished:
            try:
                on_done(key, now)
            except Exception:
                log.exception("media on_done for %r failed", key)

    def _received(self, call: _Call, datagram: bytes, source: tuple[str, int]) -> None:
        if self._calls.get(call.key) is not call:
            return  # closed meanwhile
        remote = call.remote
        if remote is None:
            return  # nothing is expected before the phone's answer named its address
        if call.latched is not None and source != call.latched and source != remote:
            return
        if len(datagram) > 12 + MAX_AUDIO_PAYLOAD + 64:  # header, CSRCs, extensions
            return
        try:
            packet = parse_rtp(datagram)
        except ValueError:
            return
        if source == remote or call.latched is None:
            # the first valid packet latches (behind NAT the SDP names a private address);
            # the address the SDP names wins it back from whoever raced the phone to it
            call.latched = source
        pt = packet.payload_type
        payload = packet.payload
        if call.rfc4733 is not None and pt == call.telephone_event:
            if len(payload) > MAX_EVENT_PAYLOAD:
                return
            call.inband = None  # the phone speaks RFC 4733: no need to listen for tones
            digits, how = call.rfc4733.feed(payload, packet.timestamp), "rfc4733"
        elif call.inband is not None and pt == call.payload_type:
            if len(payload) > MAX_AUDIO_PAYLOAD:
                return
            decode = ulaw_to_pcm if pt == PCMU else alaw_to_pcm
            digits, how = call.inband.feed(decode(payload)), "inband"
        else:
            return
        for digit in digits or ():
            try:
                call.on_digit(call.key, digit, how)
            except Exception:
                log.exception("digit %r for %r: the handler failed", digit, call.key)
