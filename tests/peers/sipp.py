"""Run SIPp (Debian ``sip-tester``) scenarios against loopback.

Each :class:`Sipp` is one foreground ``sipp`` process handling a bounded number
of calls (``-m``) under a global time limit (``-timeout ... -timeout_error``),
with SIP messages traced to a file for failure reports.

Scenarios live in ``tests/peers/scenarios``:

* ``uas_answer.xml``: 100, 180, (pause ``-d``) 200 + PCMU SDP, waits for BYE -> 200.
* ``uas_busy.xml``: 100, 486 Busy Here, ACK.
* ``uas_noanswer.xml``: 100, 180, waits for CANCEL -> 200 + 487, ACK.
* ``uas_answer_then_bye.xml``: answers, after ``-d`` ms sends BYE itself.
* ``uac_invite.xml``: calls ``[service]@remote``, ACKs the 200, BYE after ``-d`` ms.

SIPp exit codes: 0 all calls succeeded, 1 at least one failed (also a global
timeout, as ``-timeout_error`` is passed), 97 stopped by internal command,
99 ended without processing calls, 255/254 fatal (e.g. cannot bind).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import pytest

from tests.peers.ports import LOOPBACK, free_port_block, is_free, reserve_port_both

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
Transport = Literal["udp", "tcp"]
_TRANSPORT_FLAG = {"udp": "u1", "tcp": "t1"}

EXIT_OK = 0
EXIT_FAILED_CALLS = 1


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.skip("sipp not installed (Debian sip-tester)")
    return path


def scenario_path(scenario: str | Path) -> Path:
    p = Path(scenario)
    if not p.is_absolute() and not p.exists():
        p = SCENARIO_DIR / p
    if not p.is_file():
        raise FileNotFoundError(f"SIPp scenario not found: {scenario}")
    return p


def _media_port() -> int:
    """Even RTP port with RTP/RTCP (+ SIPp's video pair) neighbours free on UDP."""
    for _ in range(50):
        base = free_port_block(4, ("udp",))
        if base % 2:
            base += 1
        if all(is_free(base + i, "udp") for i in range(4)):
            return base
    raise RuntimeError("no free even UDP port block for SIPp media")


class Sipp:
    """One SIPp run.  Use :meth:`uas` / :meth:`uac`, then :meth:`start` and :meth:`wait`.

    >>> with Sipp.uas(tmp_path, "uas_answer.xml") as dest:        # doctest: +SKIP
    ...     dest.start()
    ...     ...  # make sipdial call dest.uri
    ...     assert dest.wait(10) == 0, dest.report()
    """

    def __init__(
        self,
        workdir: Path,
        scenario: str | Path,
        *,
        remote: str | None = None,
        port: int | None = None,
        transport: Transport = "udp",
        service: str = "sipp",
        duration_ms: int = 1000,
        calls: int = 1,
        timeout: float = 30.0,
        rtp_echo: bool = True,
        extra_args: Sequence[str] = (),
        name: str | None = None,
        local_ip: str = LOOPBACK,
    ) -> None:
        if transport not in _TRANSPORT_FLAG:
            raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
        self.binary = sipp_binary()
        self.scenario = scenario_path(scenario)
        self.name = name or f"sipp-{self.scenario.stem}"
        self.dir = Path(workdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.remote = remote
        #: the port held bound until start() (see reserve_port_both)
        self._held: list[socket.socket] = []
        if port is None:
            port, self._held = reserve_port_both()
        self.port = port
        self.transport: Transport = transport
        self.service = service
        self.duration_ms = duration_ms
        self.calls = calls
        self.timeout = timeout
        self.media_port = _media_port()
        self.message_file = self.dir / "messages.log"
        self.error_file = self.dir / "errors.log"
        self.stdout_file = self.dir / "stdout.log"
        args = [
            self.binary,
            *([remote] if remote else []),
            "-sf", str(self.scenario),
            "-i", local_ip,
            "-p", str(self.port),
            "-t", _TRANSPORT_FLAG[transport],
            "-mi", local_ip,
            "-mp", str(self.media_port),
            *(["-rtp_echo"] if rtp_echo else []),
            "-s", service,
            "-d", str(duration_ms),
            "-m", str(calls),
            "-l", str(max(calls, 1)),
            "-timeout", f"{max(int(timeout), 1)}s",
            "-timeout_error",
            "-aa",
            "-nostdin",
            "-skip_rlimit",
            "-trace_msg", "-message_file", str(self.message_file),
            "-trace_err", "-error_file", str(self.error_file),
            *extra_args,
        ]  # fmt: skip
        self.args: list[str] = args
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None

    # ---------------------------------------------------------------- makers
    @classmethod
    def uas(
        cls,
        workdir: Path,
        scenario: str | Path = "uas_answer.xml",
        port: int | None = None,
        **kw: object,
    ) -> Sipp:
        """A call destination listening on 127.0.0.1:``port`` (free one if None)."""
        kw.setdefault("service", "dest")
        return cls(workdir, scenario, port=port, **kw)  # type: ignore[arg-type]

    @classmethod
    def uac(
        cls,
        workdir: Path,
        remote: str,
        scenario: str | Path = "uac_invite.xml",
        service: str = "201",
        **kw: object,
    ) -> Sipp:
        """A caller sending to ``remote`` ("127.0.0.1:PORT"), user part ``service``."""
        return cls(workdir, scenario, remote=remote, service=service, **kw)  # type: ignore[arg-type]

    @property
    def uri(self) -> str:
        params = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{self.service}@{LOOPBACK}:{self.port}{params}"

    # -------------------------------------------------------------- running
    def start(self, bind_timeout: float = 5.0) -> Sipp:
        """Start sipp; for a server (no ``remote``) return once its port is bound."""
        if self._proc is not None:
            raise RuntimeError("already started")
        self._stdout = open(self.stdout_file, "wb")  # closed in stop()
        self._release()  # the held port: SIPp binds it next
        self._proc = subprocess.Popen(
            self.args,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.remote is None:
            # No readiness signal exists in sipp's output; poll the bind (bounded).
            deadline = time.monotonic() + bind_timeout
            while is_free(self.port, self.transport):
                if self._proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early:\n{self.report()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not bind {self.port}:\n{self.report()}")
                time.sleep(0.02)
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Wait for sipp to exit (bounded: default its own -timeout plus 10 s)."""
        if self._proc is None:
            raise RuntimeError("not started")
        limit = timeout if timeout is not None else self.timeout + 10
        try:
            return self._proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(
                f"{self.name} still running after {limit}s:\n{self.report()}"
            ) from None

    def run(self, timeout: float | None = None) -> int:
        """start() + wait()."""
        return self.start().wait(timeout)

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def messages(self) -> str:
        """The SIP messages sipp sent and received (-trace_msg)."""
        return self.message_file.read_text(errors="replace") if self.message_file.exists() else ""

    def errors(self) -> str:
        return self.error_file.read_text(errors="replace") if self.error_file.exists() else ""

    def stdout(self) -> str:
        return self.stdout_file.read_text(errors="replace") if self.stdout_file.exists() else ""

    def report(self) -> str:
        """Everything useful for an assertion message."""
        tail = "\n".join(self.stdout().splitlines()[-40:])
        return (
            f"--- {self.name} cmd: {' '.join(self.args)}\n"
            f"--- exit: {self.returncode}\n--- errors:\n{self.errors()}\n"
            f"--- messages:\n{self.messages()}\n--- stdout (tail):\n{tail}"
        )

    def _release(self) -> None:
        for sock in self._held:
            sock.close()
        self._held = []

    def stop(self, timeout: float = 5.0) -> int | None:
        self._release()
        proc = self._proc
        if proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    continue
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        return None if proc is None else proc.returncode

    def __enter__(self) -> Sipp:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Sipp {self.name} port={self.port} rc={self.returncode}>"
