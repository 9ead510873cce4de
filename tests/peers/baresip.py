"""Drive a real baresip 1.0 (Debian ``baresip-core``) as a SIP phone on loopback.

baresip runs headless: audio comes from a generated WAV (``aufile``), is played
into a null ``aubridge`` device, and both directions are dumped to WAV files by
``sndfile``.  It is controlled over ``ctrl_tcp``: netstring-framed JSON
commands, answered with ``{"response": true, "ok": ..., "data": ..., "token": ...}``;
UA events arrive on the same socket as ``{"event": true, "type": ..., ...}``.

baresip 1.0 facts this module relies on (verified against the Debian binary):

* ``net_interface 127.0.0.1`` (an address works, ``lo`` does not) keeps SDP and
  Contact on loopback; ``sip_listen`` also binds TCP ``port + 1`` for TLS.
* account addr-params: ``answermode=auto|manual|early``, ``regint=0`` disables
  registration, ``auth_pass=``, ``auth_user=``, ``outbound="sip:host:port;transport=x"``.
* ``aufile`` hangs the call up when the WAV ends ("menu: audio error (0,end of
  file)"), so the generated WAV is long (``audio_seconds``); a short one makes
  baresip hang up on its own after that many seconds.
* ctrl_tcp only sends events while a client is connected; events that happen
  before :meth:`Baresip.start` has connected are lost (see ``wait_registered``).
* call-scoped commands (``sndcode``, ``hold``...) exist only while a call is up.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pytest

from tests.peers.ports import LOOPBACK, free_port, free_port_block

Event = dict[str, Any]
#: "tls" needs ``extra_config={"sip_certificate": cert+key PEM, "sip_cafile": CA PEM}``
Transport = Literal["udp", "tcp", "tls"]

MODULE_DIR = Path("/usr/lib/baresip/modules")
#: Modules loaded (all shipped by Debian's baresip-core 1.0).
MODULES = ("g711.so", "aufile.so", "aubridge.so", "sndfile.so")
APP_MODULES = ("menu.so", "ctrl_tcp.so")

# Events baresip 1.0 emits via ctrl_tcp (observed): REGISTERING, REGISTER_OK,
# REGISTER_FAIL, CALL_INCOMING (answermode=manual only), CALL_RINGING (remote 180),
# CALL_PROGRESS (183 / early media), CALL_LOCAL_SDP, CALL_REMOTE_SDP,
# CALL_ESTABLISHED, CALL_RTPESTAB, CALL_DTMF_START, CALL_DTMF_END, CALL_TRANSFER,
# CALL_CLOSED (param = reason, "Connection reset by peer" for a remote BYE).


class BaresipError(RuntimeError):
    """baresip failed to start, or a ctrl_tcp command failed."""


def baresip_binary() -> str:
    """Path of the baresip binary, or skip the calling test."""
    path = shutil.which("baresip")
    if path is None or not MODULE_DIR.is_dir():
        pytest.skip("baresip not installed (Debian baresip-core)")
    return path


def write_tone_wav(path: Path, seconds: float, freq: int = 440, rate: int = 8000) -> Path:
    """Write a mono S16LE tone (what ``aufile`` needs for G.711: 8 kHz, 1 ch)."""
    # One second holds an integral number of periods, so whole seconds repeat cleanly.
    one_second = b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(rate)
    )
    whole, frac = divmod(max(seconds, 0.02), 1.0)
    data = one_second * int(whole) + one_second[: int(frac * rate) * 2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def account_line(
    *,
    user: str,
    domain: str,
    transport: Transport = "udp",
    password: str | None = None,
    auth_user: str | None = None,
    display_name: str | None = None,
    auto_answer: bool = True,
    regint: int = 0,
    outbound: str | None = None,
    extra_params: tuple[str, ...] = (),
) -> str:
    """One baresip 1.0 ``accounts`` line, e.g.

    ``<sip:201@127.0.0.1:5060>;auth_pass=secret201;``
    ``outbound="sip:127.0.0.1:5060;transport=udp";answermode=auto;regint=60;``
    ``audio_codecs=pcmu,pcma``
    """
    name = f'"{display_name}" ' if display_name else ""
    # baresip appends the AOR's transport param to every dialled URI (even when
    # the URI has one), so only TCP and TLS accounts carry it.
    uri_params = f";transport={transport}" if transport in ("tcp", "tls") else ""
    parts = [f"{name}<sip:{user}@{domain}{uri_params}>"]
    if auth_user:
        parts.append(f"auth_user={auth_user}")
    if password is not None:
        parts.append(f"auth_pass={password}")
    if outbound:
        parts.append(f'outbound="{outbound}"')
    parts.append(f"answermode={'auto' if auto_answer else 'manual'}")
    parts.append(f"regint={regint}")
    parts.append("audio_codecs=pcmu,pcma")
    parts.extend(extra_params)
    return ";".join(parts)


class Baresip:
    """A headless baresip phone with one account, controlled over ctrl_tcp.

    >>> with Baresip(tmp_path, user="201", password="secret201",
    ...              registrar="127.0.0.1:5060") as phone:   # doctest: +SKIP
    ...     phone.wait_registered()
    ...     phone.dial("sip:300@127.0.0.1:5060")
    ...     phone.wait_event("CALL_ESTABLISHED")
    ...     phone.hangup()
    ...     phone.wait_event("CALL_CLOSED")

    Without ``registrar`` (or with ``register=False``) the account does not
    register (``regint=0``); reach it directly at :attr:`uri`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        user: str = "201",
        password: str | None = None,
        registrar: str | None = None,
        transport: Transport = "udp",
        auto_answer: bool = True,
        register: bool = True,
        expires: int = 60,
        display_name: str | None = None,
        auth_user: str | None = None,
        outbound: bool = True,
        audio_seconds: float = 300.0,
        wav: Path | None = None,
        extra_account_params: tuple[str, ...] = (),
        extra_config: dict[str, str] | None = None,
        name: str | None = None,
        max_lifetime: int = 600,
        start_timeout: float = 10.0,
    ) -> None:
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"transport must be 'udp', 'tcp' or 'tls', not {transport!r}")
        self.binary = baresip_binary()
        self.name = name or f"baresip-{user}"
        self.dir = Path(workdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.transport: Transport = transport
        self.registrar = registrar
        self.register = bool(register and registrar)
        self.start_timeout = start_timeout
        self.max_lifetime = max_lifetime

        # baresip binds SIP on UDP+TCP sip_port and TLS on TCP sip_port + 1.
        self.sip_port = free_port_block(2)
        self.ctrl_port = free_port("tcp")
        self.record_dir = self.dir / "recordings"
        self.record_dir.mkdir(exist_ok=True)
        self.wav = wav or write_tone_wav(self.dir / "source.wav", audio_seconds)
        self.log_path = self.dir / "baresip.log"

        domain = registrar or LOOPBACK
        self.aor = f"sip:{user}@{domain}"
        self.account = account_line(
            user=user,
            domain=domain,
            transport=transport,
            password=password,
            auth_user=auth_user,
            display_name=display_name,
            auto_answer=auto_answer,
            regint=expires if self.register else 0,
            outbound=(f"sip:{registrar};transport={transport}" if registrar and outbound else None),
            extra_params=extra_account_params,
        )
        self.config: dict[str, str] = {
            "poll_method": "epoll",
            "sip_listen": f"{LOOPBACK}:{self.sip_port}",
            "net_interface": LOOPBACK,
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_player": "aubridge,nil",
            "audio_alert": "aubridge,nil",
            "audio_source": f"aufile,{self.wav}",
            "module_path": str(MODULE_DIR),
            "ctrl_tcp_listen": f"{LOOPBACK}:{self.ctrl_port}",
            "snd_path": str(self.record_dir),
            "statmode_default": "off",
            "menu_bell": "no",
        }
        self.config.update(extra_config or {})

        self.events: list[Event] = []
        self._consumed: set[int] = set()
        self._responses: dict[str, Event] = {}
        self._tokens = itertools.count(1)
        self._rx = b""
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._log_lock = threading.Lock()
        self._log_chunks: list[str] = []

    # ------------------------------------------------------------------ setup
    @property
    def uri(self) -> str:
        """Where this phone can be called directly (no registrar involved)."""
        if self.transport == "tls":  # TLS listens on sip_port + 1
            return f"sip:{self.user}@{LOOPBACK}:{self.sip_port + 1};transport=tls"
        params = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{self.user}@{LOOPBACK}:{self.sip_port}{params}"

    def _write_files(self) -> None:
        lines = ["# generated by tests/peers/baresip.py"]
        lines += [f"{k}\t\t{v}" for k, v in self.config.items()]
        lines += [f"module\t\t\t{m}" for m in MODULES]
        lines += ["module_tmp\t\taccount.so"]
        lines += [f"module_app\t\t{m}" for m in APP_MODULES]
        (self.dir / "config").write_text("\n".join(lines) + "\n")
        (self.dir / "accounts").write_text(self.account + "\n")
        (self.dir / "contacts").write_text("")

    def start(self) -> Baresip:
        if self._proc is not None:
            raise BaresipError("already started")
        self._write_files()
        self._proc = subprocess.Popen(
            [self.binary, "-f", str(self.dir), "-t", str(self.max_lifetime)],
            cwd=self.dir,  # a crash dumps core here, not in the checkout
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._log_thread = threading.Thread(
            target=self._pump_log, name=f"{self.name}-log", daemon=True
        )
        self._log_thread.start()
        try:
            # _pump_log sets _ready on "baresip is ready." and also on exit.
            if not self._ready.wait(self.start_timeout) or self._proc.poll() is not None:
                raise BaresipError(f"{self.name} did not start:\n{self.log_text()}")
            self._sock = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=5.0)
            self.command("reginfo", check=True)  # proves ctrl_tcp answers
        except BaseException:
            self.stop()
            raise
        return self

    def _pump_log(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with open(self.log_path, "ab") as log:
            for raw in iter(self._proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace")
                with self._log_lock:
                    self._log_chunks.append(line)
                if "baresip is ready." in line:
                    self._ready.set()
        self._ready.set()  # process exited: unblock start()

    def log_text(self) -> str:
        """Everything baresip printed so far (stdout + stderr)."""
        with self._log_lock:
            return "".join(self._log_chunks)

    # ------------------------------------------------------------- ctrl_tcp
    def _send(self, obj: dict[str, str]) -> None:
        if self._sock is None:
            raise BaresipError(f"{self.name}: not connected")
        body = json.dumps(obj).encode()
        self._sock.sendall(b"%d:%s," % (len(body), body))

    def _read_one(self, deadline: float) -> Event | None:
        """Read one netstring message; None when the deadline passes."""
        assert self._sock is not None
        while True:
            head, colon, rest = self._rx.partition(b":")
            if colon:
                if not head.isdigit():
                    raise BaresipError(f"{self.name}: bad netstring {self._rx[:40]!r}")
                n = int(head)
                if len(rest) >= n + 1:
                    body, self._rx = rest[:n], rest[n + 1 :]
                    msg: Event = json.loads(body)
                    if msg.get("event"):
                        msg["_t"] = time.monotonic()
                        self.events.append(msg)
                    return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                rc = self._proc.poll() if self._proc else None
                raise BaresipError(
                    f"{self.name}: ctrl_tcp connection closed (baresip exit code {rc})\n"
                    f"{self.log_text()}"
                )
            self._rx += chunk

    def command(
        self, cmd: str, params: str = "", timeout: float = 5.0, check: bool = False
    ) -> Event:
        """Run a baresip command (as typed after "/" in its UI); returns the response.

        The response looks like ``{"response": True, "ok": True, "data": "...",
        "token": "..."}``.  With ``check=True`` a response with ok=false raises.
        """
        token = f"t{next(self._tokens)}"
        msg = {"command": cmd, "token": token}
        if params:
            msg["params"] = params
        self._send(msg)
        deadline = time.monotonic() + timeout
        while token not in self._responses:
            got = self._read_one(deadline)
            if got is None:
                raise BaresipError(f"{self.name}: no response to {cmd!r} within {timeout}s")
            if got.get("response"):
                self._responses[str(got.get("token"))] = got
        resp = self._responses.pop(token)
        if check and not resp.get("ok"):
            raise BaresipError(f"{self.name}: {cmd} {params!r} failed: {resp.get('data')!r}")
        return resp

    def _match(
        self, types: tuple[str, ...], predicate: Callable[[Event], bool] | None
    ) -> Event | None:
        for i, ev in enumerate(self.events):
            if i in self._consumed or ev.get("type") not in types:
                continue
            if predicate is None or predicate(ev):
                self._consumed.add(i)
                return ev
        return None

    def wait_event(
        self,
        type: str | tuple[str, ...],
        timeout: float = 10.0,
        predicate: Callable[[Event], bool] | None = None,
    ) -> Event:
        """Return the oldest not-yet-returned event of ``type`` (one of, if a tuple).

        Events that arrived earlier (e.g. during :meth:`dial`) count; each event
        is returned at most once, so waiting twice for CALL_CLOSED needs two.
        """
        types = (type,) if isinstance(type, str) else tuple(type)
        deadline = time.monotonic() + timeout
        while True:
            ev = self._match(types, predicate)
            if ev is not None:
                return ev
            if self._read_one(deadline) is None:
                seen = [e.get("type") for e in self.events]
                raise TimeoutError(
                    f"{self.name}: no {'/'.join(types)} event within {timeout}s; "
                    f"events so far: {seen}\n--- baresip log ---\n{self.log_text()}"
                )

    def drain(self, timeout: float = 0.0) -> list[Event]:
        """Read whatever events arrive within ``timeout`` (0: just what is buffered)."""
        before = len(self.events)
        deadline = time.monotonic() + timeout
        while self._read_one(deadline) is not None:
            pass
        return self.events[before:]

    def event_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]

    # ------------------------------------------------------------ shortcuts
    def wait_registered(self, timeout: float = 10.0) -> Event:
        """Wait until the account is registered; raises on REGISTER_FAIL.

        The first REGISTER may complete before ctrl_tcp is connected (its event
        is then lost), so ``reginfo`` is consulted once before waiting.
        """
        if not self.register:
            raise BaresipError(f"{self.name}: account does not register")
        ev = self._match(("REGISTER_OK", "REGISTER_FAIL"), None)
        if ev is None:
            info = str(self.command("reginfo").get("data", ""))
            if "\x1b[32mOK" in info:  # green "OK" in the UA list
                return {
                    "event": True,
                    "type": "REGISTER_OK",
                    "class": "register",
                    "accountaor": self.aor,
                    "param": "registered before ctrl_tcp connected (from reginfo)",
                }
            if "\x1b[31mERR" in info:  # red "ERR": failed, its event was lost
                raise BaresipError(f"{self.name}: registration failed: {info}\n{self.log_text()}")
            ev = self.wait_event(("REGISTER_OK", "REGISTER_FAIL"), timeout)
        if ev.get("type") == "REGISTER_FAIL":
            raise BaresipError(f"{self.name}: registration failed: {ev}\n{self.log_text()}")
        return ev

    def dial(self, uri: str) -> Event:
        """Call ``uri``; progress arrives as CALL_RINGING / CALL_ESTABLISHED / CALL_CLOSED."""
        if self.transport in ("tcp", "tls"):
            # baresip appends ";transport=tcp|tls" itself; avoid a doubled parameter.
            uri = re.sub(r";transport=\w+", "", uri)
        return self.command("dial", uri, check=True)

    def hangup(self) -> Event:
        return self.command("hangup", check=True)

    def accept(self) -> Event:
        return self.command("accept", check=True)

    def send_dtmf(self, digits: str) -> Event:
        """Send DTMF (RFC 4733 telephone-events) on the current call, one digit at a time."""
        resp: Event = {}
        for digit in digits:
            resp = self.command("sndcode", digit, check=True)
        return resp

    def recordings(self, kind: Literal["dec", "enc"] = "dec") -> list[Path]:
        """WAV dumps by sndfile: ``dec`` is what baresip heard, ``enc`` what it sent."""
        return sorted(self.record_dir.glob(f"dump-*-{kind}.wav"))

    # ------------------------------------------------------------- shutdown
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 3.0) -> int | None:
        """``quit``; if baresip is still running after ``timeout``, SIGKILL.

        ``quit`` hangs up and un-registers first, which can take up to SIP
        timer F (32 s) when the registrar is already gone.  (SIGTERM is no
        better: the first one acts like ``quit`` and a second one makes 1.0
        segfault in module teardown.)  Returns the exit code: 0 for a clean
        quit, -9 when it had to be killed.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None and self._sock is not None:
            try:
                self._send({"command": "quit", "token": "quit"})
            except OSError:
                pass
        if self._sock is not None:
            try:
                # Read what is there so baresip is never blocked on a full socket.
                self.drain(0.0)
            except (OSError, BaresipError):
                pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._log_thread is not None:
            self._log_thread.join(timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Baresip {self.name} sip={self.sip_port} ctrl={self.ctrl_port}>"
