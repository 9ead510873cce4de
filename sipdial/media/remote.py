"""sipdial's RTP in a process of its own: the SIP process's side (a Twisted adapter).

Why a process: every stream's packet leaves from ONE 20 ms tick (:mod:`.player`). In the SIP
process that tick waits behind whatever the reactor is doing — a burst of SIP messages, a
young-generation collection with tens of thousands of live calls (20-80 ms) — and a late tick
sends two packets at once: with 1,000 prompts the send-interval jitter p99 was 22.5 ms
(loadtest/RESULTS.md). A thread would not help: it needs the GIL the SIP reactor holds. The
media process holds almost no objects, does nothing but the tick and the incoming RTP, and
wakes on time.

How: the SIP process still binds each call's UDP port (``open`` must answer at once: the port
goes into the SDP it is building, and ``[media]`` port exhaustion must be an immediate
refusal), then passes the socket over a Unix stream (``SCM_RIGHTS``) to the media process,
which reads and writes it; the SIP process keeps its copy until the media process has closed
its own (the port stays ours until both let go). Commands go down as JSON lines; key
presses come back. If the media process dies it is started again and told every open call
and its remote address again (a prompt that was playing is not resumed; digits keep working).

Wire format, one JSON array per line, parent -> child: ``["open", key, family, serial]``
(with one descriptor), ``["remote", key, host, port, pt, event_pt]``, ``["prompt", key,
number, language]``, ``["tone", key, tone, loop]``, ``["stop", key]``, ``["close", key, serial]``;
child -> parent: ``["digit", key, digit, how]``, ``["closed", serial]`` (only then does the
SIP process close its own copy: a descriptor still queued for sending must stay open, and
its number must not be reused by the next call's socket meanwhile).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.python.failure import Failure

from sipdial.media.ports import PortRange
from sipdial.media.rtp import PCMA, PCMU, check_remote

log = logging.getLogger("sipdial.media")

OnDigit = Callable[[str, str, str], None]  #: on_digit(key, digit, "rfc4733" | "inband")
RESTART_DELAY = 1.0  #: seconds before a media process that died is started again
MAX_DELAY = 30.0  #: ... doubled each time it dies within STABLE seconds of its start
STABLE = 30.0


class _Open:
    __slots__ = ("family", "on_digit", "remote", "serial", "sock")

    def __init__(self, sock: socket.socket, on_digit: OnDigit, serial: int) -> None:
        self.sock = sock
        self.serial = serial  # names this socket in "open" and in the child's "closed"
        self.family = int(sock.family)
        self.on_digit = on_digit
        self.remote: tuple[str, int, int, int | None] | None = None


class _Link(protocol.Protocol):
    """The SIP process's end of the control stream."""

    def __init__(self, owner: MediaProcess) -> None:
        self.owner = owner
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            self.owner._received(line)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.owner._lost(self, reason)


class MediaProcess:
    """A :class:`sipdial.calls.MediaPort` whose RTP is sent and received by a child process
    (``python -m sipdial.media.process``); same contract as :class:`.MediaManager`."""

    def __init__(self, reactor: Any, host: str, port_min: int, port_max: int,
                 prompt_file: str | None = None, *, name: str = "media") -> None:
        self.name = name  #: how its log lines are marked ("w1 media")
        self._ports = PortRange(port_min, port_max)  # ValueError for a bad range
        self.reactor = reactor
        self.host = host
        self._prompt_file = prompt_file
        info = socket.getaddrinfo(host, 0, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
        self._family, self._sockaddr = info[0][0], info[0][4]  # a numeric host: one answer
        self._calls: dict[str, _Open] = {}
        # closed here, still to be closed by the media process: our copy of the socket stays
        # open until it says "closed" (the descriptor may not even have been sent yet)
        self._closing: dict[int, socket.socket] = {}
        self._serial = 0
        self._link: _Link | None = None
        self._transport: Any = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._started_at = 0.0
        self._delay = RESTART_DELAY  # doubled while it keeps dying young, up to MAX_DELAY
        self.restarts = 0  #: how often the media process had to be started again

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the media process (the calls opened meanwhile are sent to it once it runs)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = [sys.executable, "-m", "sipdial.media.process", "--fd", str(theirs.fileno()),
                    "--host", self.host, "--name", self.name]
            if self._prompt_file is not None:
                argv += ["--prompt-file", self._prompt_file]
            self._process = subprocess.Popen(argv, pass_fds=[theirs.fileno()],
                                             stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._started_at = self.reactor.seconds()
        ours.setblocking(False)
        link = _Link(self)
        self._link = link
        self._transport = self.reactor.adoptStreamConnection(
            ours.fileno(), socket.AF_UNIX, OneProtocol(link))
        ours.close()  # adopted: Twisted holds its own duplicate
        for key, call in self._calls.items():  # a restart: tell it everything again
            self._send_open(key, call)
            if call.remote is not None:
                self._send(["remote", key, *call.remote])

    def stop(self) -> None:
        """Close every call and end the media process (waits for it, at most 2 s)."""
        self._stopping = True
        for key in list(self._calls):
            self.close(key)
        if self._transport is not None:
            self._transport.loseConnection()
        process, self._process = self._process, None
        self._close_pending()
        if process is not None:
            # it would exit at the stream's end too, but that needs this reactor to run
            process.terminate()
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def calls(self) -> int:
        """Number of open RTP ports."""
        return len(self._calls)

    # -- the MediaPort ---------------------------------------------------------------------------

    def open(self, key: str, on_digit: OnDigit) -> tuple[str, int]:
        """Bind an RTP port for ``key`` here and hand it to the media process; (host, port)
        for our SDP. :class:`MediaPortsExhausted` when the range has no free even port,
        ``ValueError`` if ``key`` is open already."""
        if key in self._calls:
            raise ValueError(f"media already open for {key!r}")
        sock = self._bind()
        self._serial += 1
        call = _Open(sock, on_digit, self._serial)
        self._calls[key] = call
        self._send_open(key, call)
        return self.host, int(sock.getsockname()[1])

    def set_remote(self, key: str, host: str, port: int, payload_type: int,
                   event_pt: int | None) -> None:
        """As :meth:`.MediaManager.set_remote` (``ValueError`` for a PT other than PCMU/PCMA,
        ``KeyError`` for a key not open)."""
        if payload_type not in (PCMU, PCMA):
            raise ValueError(f"sipdial plays PCMU/PCMA only, not PT {payload_type}")
        call = self._calls[key]
        check_remote(host, port, self._family == socket.AF_INET6)
        call.remote = (host, port, payload_type, event_pt)
        self._send(["remote", key, host, port, payload_type, event_pt])

    def play_prompt(self, key: str, number: str, language: str) -> None:
        self._check_remote(key)
        self._send(["prompt", key, number, language])

    def play_tone(self, key: str, tone: str, *, loop: bool) -> None:
        self._check_remote(key)
        self._send(["tone", key, str(tone), loop])

    def stop_playing(self, key: str) -> None:
        if key in self._calls:
            self._send(["stop", key])

    def close(self, key: str) -> None:
        """Release ``key``'s port (unknown keys are ignored): the media process closes its
        copy, then this process its own (the port is free once both have)."""
        call = self._calls.pop(key, None)
        if call is None:
            return
        if self._transport is None:
            call.sock.close()  # no media process holds a copy now
            return
        self._closing[call.serial] = call.sock
        self._send(["close", key, call.serial])

    # -- internals -------------------------------------------------------------------------------

    def _check_remote(self, key: str) -> None:
        if self._calls[key].remote is None:
            raise ValueError(f"no remote RTP address for {key!r} yet (set_remote first)")

    def _bind(self) -> socket.socket:
        host, _, *rest = self._sockaddr
        for port in self._ports.candidates():
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port, *rest))
            except OSError:
                sock.close()
                if port == 0:
                    raise
                continue
            sock.setblocking(False)
            return sock
        raise self._ports.exhausted()

    def _send_open(self, key: str, call: _Open) -> None:
        if self._transport is None:
            return  # told when the media process is (re)started
        self._transport.sendFileDescriptor(call.sock.fileno())
        self._send(["open", key, call.family, call.serial])

    def _send(self, message: list[Any]) -> None:
        if self._transport is None:
            return  # between a crash and the restart: the restart re-sends open and remote
        self._transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def _received(self, line: bytes) -> None:
        try:
            op, *args = json.loads(line)
            if op == "digit":
                key, digit, how = args
                call = self._calls.get(key)
                if call is not None:
                    try:
                        call.on_digit(key, digit, how)
                    except Exception:  # the call's bug: not a reason to drop the stream
                        log.exception("digit %r for %r: the handler failed", digit, key)
            elif op == "closed":
                sock = self._closing.pop(int(args[0]), None)
                if sock is not None:
                    sock.close()
            else:
                raise ValueError(op)
        except (ValueError, TypeError):
            log.error("media process sent %r", line[:200])

    def _lost(self, link: _Link, reason: Failure) -> None:
        if link is not self._link:
            return
        self._link = self._transport = None
        self._close_pending()  # the process that held the other copies is gone
        process, self._process = self._process, None
        if self._stopping:
            return
        code = process.poll() if process is not None else None
        if self.reactor.seconds() - self._started_at > STABLE:
            self._delay = RESTART_DELAY
        log.error("the media process (pid %s) went away (exit %s: %s); starting it again in "
                  "%.0f s; prompts playing meanwhile are not resumed",
                  process.pid if process is not None else "?", code,
                  reason.getErrorMessage(), self._delay)
        if process is not None and code is None:
            self.reactor.callLater(self._delay, _reap, process)
        self.restarts += 1
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        self.reactor.callLater(self._delay, self._restart)
        self._delay = min(MAX_DELAY, self._delay * 2)

    def _close_pending(self) -> None:
        closing, self._closing = self._closing, {}
        for sock in closing.values():
            sock.close()

    def _restart(self) -> None:
        if self._stopping or self._link is not None:
            return
        try:
            self.start()
        except Exception:  # EMFILE, ENOMEM, ...: calls get no audio; keep trying
            log.exception("the media process could not be started; trying again in %.0f s",
                          self._delay)
            self._schedule_restart()


def _reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


class OneProtocol(protocol.Factory):
    """The factory of an adopted connection: it has exactly one protocol, made already."""

    def __init__(self, built: protocol.Protocol) -> None:
        self._built = built

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self._built
